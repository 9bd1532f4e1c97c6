/**
 * voicesessions — demo data for local development
 * ===============================================
 * Run by `supabase db reset` (and the first `supabase start`) after the migrations, on an
 * empty database ([db.seed] in supabase/config.toml). It also runs on a plain PostgreSQL that
 * was bootstrapped with src/voicesessions/local/compat.sql and migrated.
 *
 *   company   Acme Sales Academy (with retention settings)
 *   people    manager@acme.test (manager), trainee1@acme.test, trainee2@acme.test (trainees);
 *             every password is "password123"
 *   session   one completed practice call of trainee 1 with an AI buyer, six transcript
 *             segments, the assembled transcript and a row of analytics
 *
 * Ids are fixed so that scripts and tests can refer to them. Everything is schema-qualified;
 * the script runs as the migration owner, so RLS does not apply, but every trigger does.
 */

-- Company ----------------------------------------------------------------------------------

insert into public.companies (
  id, name, audio_retention_days, transcript_retention_days, analysis_retention_days,
  session_retention_days
) values (
  'ac3e0000-0000-4000-8000-000000000001', 'Acme Sales Academy', 90, 365, 730, 730
);

-- Auth users -------------------------------------------------------------------------------
-- GoTrue signs in a user only if the row has instance_id, aud/role 'authenticated', a bcrypt
-- encrypted_password and email_confirmed_at, and it fails on NULL in the token columns
-- ("converting NULL to string is unsupported"), so those are empty strings. The other token
-- columns of auth.users (email_change_token_current, phone_change, ...) default to ''.

insert into auth.users (
  instance_id, id, aud, role, email, encrypted_password, email_confirmed_at,
  raw_app_meta_data, raw_user_meta_data, created_at, updated_at,
  confirmation_token, recovery_token, email_change_token_new, email_change
)
select
  '00000000-0000-0000-0000-000000000000'::uuid,
  u.id,
  'authenticated',
  'authenticated',
  u.email,
  -- bcrypt of 'password123' (cost 10), precomputed: the seed needs no pgcrypto.
  '$2b$10$lBWCzMnOIydvGr973uxd2.tmfZqbsXpEcnWuo.R/LvDvyapyZtFKq',
  now(),
  '{"provider": "email", "providers": ["email"]}'::jsonb,
  jsonb_build_object('display_name', u.display_name),
  now(),
  now(),
  '',
  '',
  '',
  ''
from (values
  ('ac3e0000-0000-4000-8000-000000000010'::uuid, 'manager@acme.test', 'Morgan Manager'),
  ('ac3e0000-0000-4000-8000-000000000011'::uuid, 'trainee1@acme.test', 'Taylor Trainee'),
  ('ac3e0000-0000-4000-8000-000000000012'::uuid, 'trainee2@acme.test', 'Riley Trainee')
) as u (id, email, display_name);

-- One email identity per user: provider_id is the user id, identity_data carries sub/email.
insert into auth.identities (
  id, user_id, provider, provider_id, identity_data, last_sign_in_at, created_at, updated_at
)
select
  u.identity_id,
  u.id,
  'email',
  u.id::text,
  jsonb_build_object(
    'sub', u.id::text, 'email', u.email, 'email_verified', true, 'phone_verified', false
  ),
  now(),
  now(),
  now()
from (values
  ('ac3e0000-0000-4000-8000-000000000020'::uuid,
   'ac3e0000-0000-4000-8000-000000000010'::uuid, 'manager@acme.test'),
  ('ac3e0000-0000-4000-8000-000000000021'::uuid,
   'ac3e0000-0000-4000-8000-000000000011'::uuid, 'trainee1@acme.test'),
  ('ac3e0000-0000-4000-8000-000000000022'::uuid,
   'ac3e0000-0000-4000-8000-000000000012'::uuid, 'trainee2@acme.test')
) as u (identity_id, id, email);

-- Profiles ---------------------------------------------------------------------------------

insert into public.profiles (id, company_id, role, display_name) values
  ('ac3e0000-0000-4000-8000-000000000010', 'ac3e0000-0000-4000-8000-000000000001',
   'manager', 'Morgan Manager'),
  ('ac3e0000-0000-4000-8000-000000000011', 'ac3e0000-0000-4000-8000-000000000001',
   'trainee', 'Taylor Trainee'),
  ('ac3e0000-0000-4000-8000-000000000012', 'ac3e0000-0000-4000-8000-000000000001',
   'trainee', 'Riley Trainee');

-- A completed practice session of trainee 1 ------------------------------------------------
-- The session starts active (company_id and the trainee participant come from the triggers);
-- segments can only be added while it is active (VS002), so they go in first, then the
-- session completes with an ended_at 7m30s after its start, which assembles its transcript.

insert into public.sessions (id, profile_id, title, status, started_at, metadata)
values (
  'ac3e0000-0000-4000-8000-000000000100',
  'ac3e0000-0000-4000-8000-000000000011',
  'Cold call: Northwind Logistics',
  'active',
  date_trunc('second', now()) - interval '1 day',
  '{"demo": true, "scenario": "cold_call"}'
);

insert into public.session_participants (
  id, session_id, kind, speaker_label, display_name, persona
) values (
  'ac3e0000-0000-4000-8000-000000000101',
  'ac3e0000-0000-4000-8000-000000000100',
  'ai_buyer',
  'buyer',
  'Jordan (AI buyer)',
  '{"name": "Jordan", "role": "Head of Operations", "company": "Northwind Logistics",
    "scenario": "cold_call", "difficulty": "medium",
    "objections": ["budget", "existing vendor"]}'
);

insert into public.transcript_segments (
  session_id, seq, speaker, text, start_ms, end_ms, confidence
) values
  ('ac3e0000-0000-4000-8000-000000000100', 0, 'trainee',
   'Hi Jordan, this is Taylor from Acme. Do you have two minutes?', 0, 4200, 0.97),
  ('ac3e0000-0000-4000-8000-000000000100', 1, 'buyer',
   'Two minutes. We already work with a vendor, though.', 4800, 8100, 0.95),
  ('ac3e0000-0000-4000-8000-000000000100', 2, 'trainee',
   'Understood. What would you change about how routes are planned today?', 8900, 13400, 0.96),
  ('ac3e0000-0000-4000-8000-000000000100', 3, 'buyer',
   'Honestly, the re-planning after late pickups eats half a day.', 14000, 18600, 0.93),
  ('ac3e0000-0000-4000-8000-000000000100', 4, 'trainee',
   'That is exactly what we automate. Could we book thirty minutes on Thursday?', 19200, 24100, 0.96),
  ('ac3e0000-0000-4000-8000-000000000100', 5, 'buyer',
   'Send me an invite and some numbers first.', 24700, 27300, 0.94);

update public.sessions
set status = 'completed',
    ended_at = started_at + interval '7 minutes 30 seconds'
where id = 'ac3e0000-0000-4000-8000-000000000100';

-- Completing the session assembled its transcript (content, structured content, word count,
-- confidence, search vector) from the segments above, in the same statement: see
-- private.assemble_transcript in the live-updates migration.

-- It also measured the call (talk ratio, fillers, pace, questions: the conversation_metrics
-- analysis and the session's analytics row). Scores come from an AI provider's analysis,
-- written here as a backend with the service role would (session_date/session_hour are set
-- by the database from started_at).
update public.session_analytics
set overall_score = 74, opening_score = 82, questioning_score = 71,
    objection_handling_score = 68, closing_score = 75,
    skill_scores = '{"rapport": 78, "discovery": 71, "value_articulation": 73, "next_steps": 76}',
    sentiment_score = 0.2500
where session_id = 'ac3e0000-0000-4000-8000-000000000100';
