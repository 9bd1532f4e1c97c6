-- Calls imported from hosted platforms (public.import_call, 20261128001500_imports.sql):
-- one session per (company, platform, call id), the service role only.
-- Run with `supabase test db` (or pg_prove): one transaction, rolled back.
begin;
create extension if not exists pgtap with schema extensions;
set local search_path = public, extensions;

select plan(7);

insert into auth.users (id, email, aud, role) values
  ('00000000-0000-4000-a000-0000000000a1', 'a1@example.test', 'authenticated', 'authenticated');
insert into public.companies (id, name) values
  ('00000000-0000-4000-a000-00000000000a', 'Company A');
insert into public.profiles (id, company_id, role, display_name) values
  ('00000000-0000-4000-a000-0000000000a1', '00000000-0000-4000-a000-00000000000a', 'trainee', 'A1');

-- A trainee may not import (no EXECUTE), not even a call of their own.
set local role authenticated;
set local request.jwt.claims to '{"sub": "00000000-0000-4000-a000-0000000000a1", "role": "authenticated"}';
select throws_ok(
  $$select * from public.import_call('retell', 'call_1', '00000000-0000-4000-a000-0000000000a1',
    'Retell call', now() - interval '2 minutes', now() - interval '1 minute')$$,
  '42501', null,
  'a trainee cannot import a call'
);
reset role;

set local role service_role;
set local request.jwt.claims to '{"role": "service_role"}';
select is(
  (select created from public.import_call('retell', 'call_1',
     '00000000-0000-4000-a000-0000000000a1', 'Retell call', now() - interval '2 minutes',
     now() - interval '1 minute',
     '[{"seq": 0, "speaker": "trainee", "text": "Hello", "start_ms": 0, "end_ms": 500}]')),
  true,
  'the service role imports a call'
);
select is(
  (select created from public.import_call('retell', 'call_1',
     '00000000-0000-4000-a000-0000000000a1', 'Retell call', now() - interval '2 minutes',
     now() - interval '1 minute')),
  false,
  'the same call again stores nothing'
);
select is(
  (select count(*)::integer from public.sessions where profile_id = '00000000-0000-4000-a000-0000000000a1'),
  1,
  'one session'
);
select is(
  (select status::text from public.sessions where profile_id = '00000000-0000-4000-a000-0000000000a1'),
  'completed',
  'completed at the call''s end'
);
select is(
  (select count(*)::integer from public.transcript_segments
   where profile_id = '00000000-0000-4000-a000-0000000000a1'),
  1,
  'with its segment'
);
select throws_ok(
  $$select * from public.import_call('Retell!', 'call_2', '00000000-0000-4000-a000-0000000000a1',
    'Retell call', now() - interval '2 minutes', now() - interval '1 minute')$$,
  '22023', null,
  'a bad platform name is refused'
);

select * from finish();
rollback;
