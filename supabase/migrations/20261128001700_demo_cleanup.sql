/**
 * voicesessions — the demo's data: fixed ids, removed through the GDPR erasure
 * ============================================================================
 * `voicesessions demo` used to create a new company and trainee on every run, named with a
 * random tag, and nothing could tell its data from anyone else's. The demo's data is now
 * known to the database by two fixed ids, which nobody can change (a primary key is not
 * updatable by the API roles) and no other caller generates (random UUIDs):
 *
 *   private.demo_company_id()  the demo company: every demo run reuses it
 *   private.demo_trainee_id()  the demo trainee's auth user id
 *
 * `voicesessions demo --cleanup` removes all of it: it erases every person of the demo
 * company and the demo trainee with their accounts through public.gdpr_erase_user (so each
 * erasure is recorded and their audio deleted, as for anyone), then removes the empty
 * company with public.demo_remove_company. That function refuses while the company still
 * has a profile (23503): deleting the company would otherwise delete people's sessions by
 * cascade, without the erasure's request, audit entry and storage deletion. Its GDPR
 * requests and audit entries survive it (their company_id becomes null).
 *
 * Service role only (provisioning, like create_company): not executable by anon or
 * authenticated. Security invoker: the service role's own privileges on companies apply.
 */

create or replace function private.demo_company_id()
returns uuid
language sql
immutable
parallel safe
set search_path = ''
as $$
  select 'de300000-0000-4000-8000-000000000001'::uuid;
$$;
revoke all on function private.demo_company_id() from public, anon, authenticated;
grant execute on function private.demo_company_id() to service_role;

create or replace function private.demo_trainee_id()
returns uuid
language sql
immutable
parallel safe
set search_path = ''
as $$
  select 'de300000-0000-4000-8000-000000000002'::uuid;
$$;
revoke all on function private.demo_trainee_id() from public, anon, authenticated;
grant execute on function private.demo_trainee_id() to service_role;

/**
 * The demo company, created when missing (named 'Demo Sales Academy'), and the demo
 * trainee's id: {company_id, trainee_id, created}. Repeated demo runs reuse the company.
 */
create or replace function public.demo_company()
returns jsonb
language plpgsql
volatile
security invoker
set search_path = ''
as $$
declare
  created boolean;
begin
  insert into public.companies (id, name)
  values (private.demo_company_id(), 'Demo Sales Academy')
  on conflict (id) do nothing;
  created := found;
  return jsonb_build_object(
    'company_id', private.demo_company_id(),
    'trainee_id', private.demo_trainee_id(),
    'created', created
  );
end;
$$;
revoke all on function public.demo_company() from public, anon, authenticated;
grant execute on function public.demo_company() to service_role;

/**
 * What the demo left in this database, changing nothing: {company_id (null when there is no
 * demo company), trainee_id, people (the profile ids of the demo company, the demo trainee
 * first when present)}. The people are whom `demo --cleanup` erases, with the demo trainee
 * (whose account may exist without a profile after an interrupted run).
 */
create or replace function public.demo_data()
returns jsonb
language sql
stable
security invoker
set search_path = ''
as $$
  select jsonb_build_object(
    'company_id', (select c.id from public.companies c where c.id = private.demo_company_id()),
    'trainee_id', private.demo_trainee_id(),
    'people', coalesce(
      (select jsonb_agg(p.id order by p.id <> private.demo_trainee_id(), p.created_at, p.id)
       from public.profiles p where p.company_id = private.demo_company_id()),
      '[]'::jsonb)
  );
$$;
revoke all on function public.demo_data() from public, anon, authenticated;
grant execute on function public.demo_data() to service_role;

/**
 * Deletes the demo company once nobody is left in it; true when it was deleted, false when
 * there was none. A company that still has a profile is refused (23503: erase its people
 * first, with `voicesessions demo --cleanup`). The company row is locked first, so a profile
 * being added concurrently either commits before the check (and is refused with it) or
 * fails on its foreign key once the company is gone.
 */
create or replace function public.demo_remove_company()
returns boolean
language plpgsql
volatile
security invoker
set search_path = ''
as $$
declare
  company uuid := private.demo_company_id();
  people bigint;
begin
  perform 1 from public.companies c where c.id = company for update;
  if not found then
    return false;
  end if;
  select count(*) into people from public.profiles p where p.company_id = company;
  if people > 0 then
    raise exception 'the demo company still has % person(s): erase them first', people
      using errcode = '23503',
            hint = '`voicesessions demo --cleanup` erases them with their accounts.';
  end if;
  delete from public.companies c where c.id = company;
  return true;
end;
$$;
revoke all on function public.demo_remove_company() from public, anon, authenticated;
grant execute on function public.demo_remove_company() to service_role;
