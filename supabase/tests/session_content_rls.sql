-- What hangs off a session: live segments, transcripts, analyses and analytics.
-- Run with `supabase test db` (or pg_prove): one transaction, rolled back.
begin;
create extension if not exists pgtap with schema extensions;
set local search_path = public, extensions;

select plan(12);

-- The world, as the owner: trainees a1 and a2 and manager ma of company A, trainee b1 of B;
-- an active and a completed session for a1, a completed one for b1.
insert into auth.users (id, email, aud, role) values
  ('00000000-0000-4000-a000-0000000000a1', 'a1@example.test', 'authenticated', 'authenticated'),
  ('00000000-0000-4000-a000-0000000000a2', 'a2@example.test', 'authenticated', 'authenticated'),
  ('00000000-0000-4000-a000-0000000000ad', 'ma@example.test', 'authenticated', 'authenticated'),
  ('00000000-0000-4000-b000-0000000000b1', 'b1@example.test', 'authenticated', 'authenticated');
insert into public.companies (id, name) values
  ('00000000-0000-4000-a000-00000000000a', 'Company A'),
  ('00000000-0000-4000-b000-00000000000b', 'Company B');
insert into public.profiles (id, company_id, role, display_name) values
  ('00000000-0000-4000-a000-0000000000a1', '00000000-0000-4000-a000-00000000000a', 'trainee', 'A1'),
  ('00000000-0000-4000-a000-0000000000a2', '00000000-0000-4000-a000-00000000000a', 'trainee', 'A2'),
  ('00000000-0000-4000-a000-0000000000ad', '00000000-0000-4000-a000-00000000000a', 'manager', 'MA'),
  ('00000000-0000-4000-b000-0000000000b1', '00000000-0000-4000-b000-00000000000b', 'trainee', 'B1');
insert into public.sessions (id, profile_id, title, started_at) values
  ('00000000-0000-4000-a000-000000005a11', '00000000-0000-4000-a000-0000000000a1', 'A1 live', now()),
  ('00000000-0000-4000-a000-000000005a12', '00000000-0000-4000-a000-0000000000a1', 'A1 done',
   now() - interval '1 hour'),
  ('00000000-0000-4000-b000-000000005b12', '00000000-0000-4000-b000-0000000000b1', 'B1 done',
   now() - interval '1 hour');
update public.sessions set status = 'completed'
  where id in ('00000000-0000-4000-a000-000000005a12', '00000000-0000-4000-b000-000000005b12');
insert into public.transcripts (session_id, content, word_count) values
  ('00000000-0000-4000-a000-000000005a12', 'hello there', 2),
  ('00000000-0000-4000-b000-000000005b12', 'good morning', 2);
insert into public.session_analytics (session_id, overall_score) values
  ('00000000-0000-4000-a000-000000005a12', 70),
  ('00000000-0000-4000-b000-000000005b12', 80);

-- Trainee A1.
set local role authenticated;
set local request.jwt.claims to '{"sub": "00000000-0000-4000-a000-0000000000a1", "role": "authenticated"}';
select lives_ok(
  $$insert into public.transcript_segments (session_id, seq, speaker, text, start_ms, end_ms)
    values ('00000000-0000-4000-a000-000000005a11', 0, 'trainee', 'hello', 0, 900)$$,
  'a trainee writes segments into their own active session'
);
select throws_ok(
  $$insert into public.transcript_segments (session_id, seq, speaker, text, start_ms, end_ms)
    values ('00000000-0000-4000-a000-000000005a12', 0, 'trainee', 'late', 0, 900)$$,
  'VS002', null,
  'no segment is written into a session that has ended (VS002)'
);
select throws_ok(
  $$update public.transcript_segments set text = 'rewritten'$$,
  '42501', null,
  'a trainee cannot rewrite a segment'
);
select results_eq(
  'select content from public.transcripts',
  array['hello there'::text],
  'a trainee reads the transcripts of their own sessions only'
);
select throws_ok(
  $$insert into public.transcripts (session_id, content)
    values ('00000000-0000-4000-a000-000000005a11', 'forged')$$,
  '42501', null,
  'a trainee cannot write a transcript (the server side does)'
);
select throws_ok(
  $$insert into public.analysis_results (session_id, provider, analysis_type, results)
    values ('00000000-0000-4000-a000-000000005a12', 'self', 'overall', '{"score": 100}')$$,
  '42501', null,
  'a trainee cannot grade their own session'
);
select throws_ok(
  $$update public.session_analytics set overall_score = 100$$,
  '42501', null,
  'a trainee cannot change their analytics'
);
select results_eq(
  'select overall_score::int from public.session_analytics',
  array[70],
  'a trainee reads the analytics of their own sessions only'
);

-- Trainee A2, a colleague: sees nothing of A1's sessions.
set local request.jwt.claims to '{"sub": "00000000-0000-4000-a000-0000000000a2", "role": "authenticated"}';
select is_empty(
  'select session_id from public.transcript_segments',
  'a colleague reads none of a trainee''s segments'
);

-- Manager MA: reads the company's content, not the other company's.
set local request.jwt.claims to '{"sub": "00000000-0000-4000-a000-0000000000ad", "role": "authenticated"}';
select results_eq(
  'select content from public.transcripts',
  array['hello there'::text],
  'a manager reads the transcripts of their company only'
);

-- service_role writes what the server side computes.
set local role service_role;
set local request.jwt.claims to '{"role": "service_role"}';
select lives_ok(
  $$insert into public.analysis_results (session_id, provider, analysis_type, results)
    values ('00000000-0000-4000-a000-000000005a12', 'coach-ai', 'overall', '{"score": 75}')$$,
  'service_role records an analysis'
);

-- Anonymous.
set local role anon;
set local request.jwt.claims to '{"role": "anon"}';
select throws_ok(
  'select count(*) from public.transcripts',
  '42501', null,
  'anon cannot read transcripts'
);

reset role;
select * from finish();
rollback;
