-- Companies, profiles, invitations, the audit log and GDPR requests: who may read and write.
-- Run with `supabase test db` (or pg_prove): one transaction, rolled back.
begin;
create extension if not exists pgtap with schema extensions;
set local search_path = public, extensions;

select plan(16);

-- The world, as the owner: company A (trainee a1, admin aa), company B (admin ab).
insert into auth.users (id, email, aud, role) values
  ('00000000-0000-4000-a000-0000000000a1', 'a1@example.test', 'authenticated', 'authenticated'),
  ('00000000-0000-4000-a000-0000000000aa', 'aa@example.test', 'authenticated', 'authenticated'),
  ('00000000-0000-4000-b000-0000000000ab', 'ab@example.test', 'authenticated', 'authenticated');
insert into public.companies (id, name) values
  ('00000000-0000-4000-a000-00000000000a', 'Company A'),
  ('00000000-0000-4000-b000-00000000000b', 'Company B');
insert into public.profiles (id, company_id, role, display_name) values
  ('00000000-0000-4000-a000-0000000000a1', '00000000-0000-4000-a000-00000000000a', 'trainee', 'A1'),
  ('00000000-0000-4000-a000-0000000000aa', '00000000-0000-4000-a000-00000000000a', 'admin', 'AA'),
  ('00000000-0000-4000-b000-0000000000ab', '00000000-0000-4000-b000-00000000000b', 'admin', 'AB');
do $$
begin
  perform private.audit('test.seed', 'company', '00000000-0000-4000-a000-00000000000a',
    '00000000-0000-4000-a000-00000000000a');
  perform private.audit('test.seed', 'company', '00000000-0000-4000-b000-00000000000b',
    '00000000-0000-4000-b000-00000000000b');
end
$$;
insert into public.gdpr_requests (kind, company_id) values
  ('export', '00000000-0000-4000-a000-00000000000a'),
  ('export', '00000000-0000-4000-b000-00000000000b');

-- Trainee A1.
set local role authenticated;
set local request.jwt.claims to '{"sub": "00000000-0000-4000-a000-0000000000a1", "role": "authenticated"}';
select results_eq(
  'select name from public.companies',
  array['Company A'::text],
  'a trainee reads their own company only'
);
select is_empty(
  $$update public.companies set name = 'Renamed' returning id$$,
  'a trainee cannot rename their company'
);
select results_eq(
  'select display_name from public.profiles',
  array['A1'::text],
  'a trainee reads their own profile only'
);
select throws_ok(
  $$insert into public.companies (name) values ('New Co')$$,
  '42501', null,
  'a user cannot create a company directly'
);
select is_empty(
  'select id from public.audit_log',
  'a trainee reads no audit entry'
);
select throws_ok(
  $$insert into public.gdpr_requests (kind, company_id)
    values ('erasure', '00000000-0000-4000-a000-00000000000a')$$,
  '42501', null,
  'a user cannot write a GDPR request directly (the GDPR functions do)'
);

-- Admin AA of company A.
set local request.jwt.claims to '{"sub": "00000000-0000-4000-a000-0000000000aa", "role": "authenticated"}';
select results_eq(
  $$update public.companies set name = 'Company A, renamed' returning name$$,
  array['Company A, renamed'::text],
  'an admin renames their own company, and no other'
);
select results_eq(
  'select display_name from public.profiles order by display_name',
  array['A1'::text, 'AA'],
  'an admin reads the profiles of their company, and none of another'
);
select results_eq(
  'select company_id from public.audit_log',
  array['00000000-0000-4000-a000-00000000000a'::uuid],
  'an admin reads the audit log of their company only'
);
select results_eq(
  'select company_id from public.gdpr_requests',
  array['00000000-0000-4000-a000-00000000000a'::uuid],
  'an admin reads the GDPR requests of their company only'
);
select throws_ok(
  $$insert into public.audit_log (actor_role, action, entity_type, company_id)
    values ('authenticated', 'forged', 'company', '00000000-0000-4000-a000-00000000000a')$$,
  '42501', null,
  'no user writes the audit log, an admin included'
);
select throws_ok(
  $$delete from public.audit_log$$,
  '42501', null,
  'no user deletes audit entries'
);
select throws_ok(
  $$insert into public.company_invitations (company_id, email, token_hash, expires_at)
    values ('00000000-0000-4000-a000-00000000000a', 'new@example.test', repeat('a', 64),
            now() + interval '1 day')$$,
  '42501', null,
  'an admin does not write invitations directly (the invitation functions do)'
);

-- Anonymous.
set local role anon;
set local request.jwt.claims to '{"role": "anon"}';
select throws_ok(
  'select count(*) from public.companies',
  '42501', null,
  'anon cannot read companies'
);
select throws_ok(
  'select count(*) from public.profiles',
  '42501', null,
  'anon cannot read profiles'
);

-- service_role (the server side) reads every company: as many as the table holds (a seeded
-- database holds more than this test's two).
reset role;
select count(*)::int as every_company from public.companies \gset
set local role service_role;
set local request.jwt.claims to '{"role": "service_role"}';
select results_eq(
  'select count(*)::int from public.companies',
  array[:every_company],
  'service_role reads every company'
);

reset role;
select * from finish();
rollback;
