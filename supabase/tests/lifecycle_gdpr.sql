-- The session lifecycle (VS001 on a forbidden transition) and who may call the GDPR functions.
-- Run with `supabase test db` (or pg_prove): one transaction, rolled back.
begin;
create extension if not exists pgtap with schema extensions;
set local search_path = public, extensions;

select plan(13);

-- The world, as the owner: company A (trainees a1, a2, admin aa), company B (admin ab).
insert into auth.users (id, email, aud, role) values
  ('00000000-0000-4000-a000-0000000000a1', 'a1@example.test', 'authenticated', 'authenticated'),
  ('00000000-0000-4000-a000-0000000000a2', 'a2@example.test', 'authenticated', 'authenticated'),
  ('00000000-0000-4000-a000-0000000000aa', 'aa@example.test', 'authenticated', 'authenticated'),
  ('00000000-0000-4000-b000-0000000000ab', 'ab@example.test', 'authenticated', 'authenticated');
insert into public.companies (id, name) values
  ('00000000-0000-4000-a000-00000000000a', 'Company A'),
  ('00000000-0000-4000-b000-00000000000b', 'Company B');
insert into public.profiles (id, company_id, role, display_name) values
  ('00000000-0000-4000-a000-0000000000a1', '00000000-0000-4000-a000-00000000000a', 'trainee', 'A1'),
  ('00000000-0000-4000-a000-0000000000a2', '00000000-0000-4000-a000-00000000000a', 'trainee', 'A2'),
  ('00000000-0000-4000-a000-0000000000aa', '00000000-0000-4000-a000-00000000000a', 'admin', 'AA'),
  ('00000000-0000-4000-b000-0000000000ab', '00000000-0000-4000-b000-00000000000b', 'admin', 'AB');
insert into public.sessions (id, profile_id, title) values
  ('00000000-0000-4000-a000-000000005a11', '00000000-0000-4000-a000-0000000000a1', 'A1 call'),
  ('00000000-0000-4000-a000-000000005a12', '00000000-0000-4000-a000-0000000000a1', 'A1 other');

-- Trainee A1 drives the lifecycle of their own sessions.
set local role authenticated;
set local request.jwt.claims to '{"sub": "00000000-0000-4000-a000-0000000000a1", "role": "authenticated"}';

select throws_ok(
  $$update public.sessions set status = 'archived' where id = '00000000-0000-4000-a000-000000005a12'$$,
  'VS001', null,
  'active -> archived is refused (VS001)'
);
select lives_ok(
  $$update public.sessions set status = 'completed' where id = '00000000-0000-4000-a000-000000005a11'$$,
  'active -> completed'
);
select throws_ok(
  $$update public.sessions set status = 'active' where id = '00000000-0000-4000-a000-000000005a11'$$,
  'VS001', null,
  'completed -> active is refused (VS001)'
);
select lives_ok(
  $$update public.sessions set status = 'archived' where id = '00000000-0000-4000-a000-000000005a11'$$,
  'completed -> archived'
);

-- GDPR: a trainee cannot erase another user.
select throws_ok(
  $$select public.gdpr_erase_user('00000000-0000-4000-a000-0000000000a2', false, true)$$,
  '42501', null,
  'a trainee cannot erase a colleague'
);

select lives_ok(
  $$select public.gdpr_export_user('00000000-0000-4000-a000-0000000000a1')$$,
  'a trainee exports their own data'
);
select throws_ok(
  $$select public.gdpr_export_user('00000000-0000-4000-a000-0000000000a2')$$,
  '42501', null,
  'a trainee cannot export a colleague''s data'
);

-- Trainee A2, a colleague of A1.
set local request.jwt.claims to '{"sub": "00000000-0000-4000-a000-0000000000a2", "role": "authenticated"}';
select throws_ok(
  $$select public.gdpr_anonymize_session('00000000-0000-4000-a000-000000005a11')$$,
  '42501', null,
  'a colleague cannot anonymize a trainee''s session'
);
select throws_ok(
  $$select public.gdpr_erase_user('00000000-0000-4000-a000-00000000dead', false, true)$$,
  '42501', null,
  'probing an unknown id answers as a refusal, revealing nothing'
);

-- An admin of another company is refused.
set local request.jwt.claims to '{"sub": "00000000-0000-4000-b000-0000000000ab", "role": "authenticated"}';
select throws_ok(
  $$select public.gdpr_erase_user('00000000-0000-4000-a000-0000000000a2', false, true)$$,
  '42501', null,
  'an admin of another company cannot erase a user'
);

select throws_ok(
  $$select public.gdpr_export_user('00000000-0000-4000-a000-0000000000a2')$$,
  '42501', null,
  'an admin of another company cannot export a user''s data'
);

-- The admin of the user's company may (a dry run: it counts, changes nothing).
set local request.jwt.claims to '{"sub": "00000000-0000-4000-a000-0000000000aa", "role": "authenticated"}';
select lives_ok(
  $$select public.gdpr_erase_user('00000000-0000-4000-a000-0000000000a2', false, true)$$,
  'the admin of the user''s company may erase them (dry run)'
);

-- Anonymous: the GDPR functions are not even executable.
set local role anon;
set local request.jwt.claims to '{"role": "anon"}';
select throws_ok(
  $$select public.gdpr_erase_user('00000000-0000-4000-a000-0000000000a2', false, true)$$,
  '42501', null,
  'anon cannot call the GDPR functions'
);

reset role;
select * from finish();
rollback;
