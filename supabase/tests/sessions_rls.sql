-- Sessions and their participants: who may read, create and update them (RLS, grants).
-- Run with `supabase test db` (or pg_prove): one transaction, rolled back.
begin;
create extension if not exists pgtap with schema extensions;
set local search_path = public, extensions;

select plan(12);

-- The world, as the owner: company A (trainees a1, a2, manager ma), company B (trainee b1).
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
insert into public.sessions (id, profile_id, title) values
  ('00000000-0000-4000-a000-000000005a11', '00000000-0000-4000-a000-0000000000a1', 'A1 call'),
  ('00000000-0000-4000-a000-000000005a21', '00000000-0000-4000-a000-0000000000a2', 'A2 call'),
  ('00000000-0000-4000-b000-000000005b11', '00000000-0000-4000-b000-0000000000b1', 'B1 call');

-- Trainee A1, as PostgREST runs a request.
set local role authenticated;
set local request.jwt.claims to '{"sub": "00000000-0000-4000-a000-0000000000a1", "role": "authenticated"}';

select results_eq(
  'select title from public.sessions order by title',
  array['A1 call'::text],
  'a trainee reads only their own sessions'
);
select lives_ok(
  $$insert into public.sessions (id, profile_id, title)
    values ('00000000-0000-4000-a000-000000005a12', '00000000-0000-4000-a000-0000000000a1', 'A1 second')$$,
  'a trainee creates a session of their own'
);
select throws_ok(
  $$insert into public.sessions (profile_id, title)
    values ('00000000-0000-4000-a000-0000000000a2', 'for A2')$$,
  '42501', null,
  'a trainee cannot create a session for a colleague'
);
select is_empty(
  $$update public.sessions set title = 'taken over'
    where id = '00000000-0000-4000-a000-000000005a21' returning id$$,
  'a trainee cannot update a colleague''s session'
);
select lives_ok(
  $$update public.sessions set title = 'A1 call, renamed'
    where id = '00000000-0000-4000-a000-000000005a11'$$,
  'a trainee renames their own session'
);
select throws_ok(
  $$delete from public.sessions where id = '00000000-0000-4000-a000-000000005a11'$$,
  '42501', null,
  'a trainee cannot delete a session (deletion is GDPR''s, not the API''s)'
);
select lives_ok(
  $$insert into public.session_participants (session_id, kind, speaker_label, display_name)
    values ('00000000-0000-4000-a000-000000005a11', 'ai_buyer', 'buyer', 'Alex')$$,
  'a trainee adds a participant to their own session'
);
select throws_ok(
  $$insert into public.session_participants (session_id, kind, speaker_label, display_name)
    values ('00000000-0000-4000-a000-000000005a21', 'ai_buyer', 'buyer', 'Alex')$$,
  '23503', null,  -- as if the session did not exist: a refusal reveals nothing
  'a trainee cannot add a participant to a colleague''s session'
);

-- Manager MA of company A.
set local request.jwt.claims to '{"sub": "00000000-0000-4000-a000-0000000000ad", "role": "authenticated"}';
select results_eq(
  'select count(*)::int from public.sessions',
  array[3],
  'a manager reads every session of their company, and none of another'
);
select is_empty(
  $$update public.sessions set title = 'managed'
    where id = '00000000-0000-4000-a000-000000005a11' returning id$$,
  'a manager cannot update a trainee''s session'
);

-- Trainee B1 of the other company.
set local request.jwt.claims to '{"sub": "00000000-0000-4000-b000-0000000000b1", "role": "authenticated"}';
select results_eq(
  'select title from public.sessions',
  array['B1 call'::text],
  'another company''s trainee reads only their own session'
);

-- Anonymous.
set local role anon;
set local request.jwt.claims to '{"role": "anon"}';
select throws_ok(
  'select count(*) from public.sessions',
  '42501', null,
  'anon cannot read sessions at all'
);

reset role;
select * from finish();
rollback;
