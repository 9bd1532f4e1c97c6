/**
 * voicesessions — performance: RLS at the price of a plain query
 * ==============================================================
 * Nothing here widens what anyone may read; `benchmarks/rls_scale.py` measures each change
 * (a user's query under RLS next to the same query as service_role with the filter written
 * out, same rows).
 *
 *   1. The policy helpers (private.my_company_id, managed_company_id, admin_company_id) are
 *      plpgsql. As SQL functions with their own search_path (security definer) PostgreSQL
 *      cannot inline them and parses and plans their body again in every statement; a
 *      plpgsql function keeps its plan for the session. Same answers, same privileges;
 *      the policies still call each once per statement, as an initplan `(select ...)`.
 *   2. Reading transcript segments: the policy was `profile_id = me or company_id = the
 *      company I manage`, which PostgreSQL can only answer with a BitmapOr and a visit of
 *      every heap page holding one of the rows: a manager counting the company's segments
 *      read a heap page per session. It now reads: the caller's company (`company_id =
 *      my company`), and in it everything for a manager or an admin, only their own rows
 *      for anyone else. That is the same set: a row's company is always its owner's
 *      company (set by the database; nobody changes company), and the company a caller
 *      manages, when there is one, is their own company (both helpers read the caller's
 *      one profile row). Written this way the condition has no OR of two indexable
 *      columns, so no BitmapOr: the index on (company_id, profile_id) answers the company
 *      and the rest, and counts and aggregates over a company are index-only scans, like
 *      the query with the filter written out. (`company_id = my company and (company_id =
 *      managed company or profile_id = me)` is not enough: the planner takes the two
 *      company conditions for independent ones and goes back to a BitmapOr at scale.) A
 *      trainee's own rows are found in their company's part of that index, filtered by
 *      profile_id; reads by session (the common case) use the session's index as before.
 *      The new index replaces the one on company_id alone, which it covers.
 *
 * Sessions keep their policy (`profile_id = me or company_id = the company I manage`, one
 * helper call): lists of sessions want started_at order, and neither form gives it to a
 * trainee cheaply (PostgreSQL 15 reads an OR through a bitmap, in no order, so "latest 20"
 * reads and sorts all of the trainee's sessions; the company's index in started_at order
 * would pass over every colleague's sessions instead). BENCHMARKS.md says what it costs.
 */

-- 1. Policy helpers ------------------------------------------------------------------------

/** The caller's company. */
create or replace function private.my_company_id()
returns uuid
language plpgsql
stable
security definer
set search_path = ''
as $$
declare
  company uuid;
begin
  select p.company_id into company from public.profiles p where p.id = (select auth.uid());
  return company;
end;
$$;

/** The caller's company if the caller is a manager or an admin there, else null. */
create or replace function private.managed_company_id()
returns uuid
language plpgsql
stable
security definer
set search_path = ''
as $$
declare
  company uuid;
begin
  select p.company_id into company from public.profiles p
  where p.id = (select auth.uid()) and p.role in ('manager', 'admin');
  return company;
end;
$$;

/** The caller's company if the caller is an admin there, else null. */
create or replace function private.admin_company_id()
returns uuid
language plpgsql
stable
security definer
set search_path = ''
as $$
declare
  company uuid;
begin
  select p.company_id into company from public.profiles p
  where p.id = (select auth.uid()) and p.role = 'admin';
  return company;
end;
$$;

revoke all on function private.my_company_id() from public, anon;
revoke all on function private.managed_company_id() from public, anon;
revoke all on function private.admin_company_id() from public, anon;
grant execute on function private.my_company_id() to authenticated, service_role;
grant execute on function private.managed_company_id() to authenticated, service_role;
grant execute on function private.admin_company_id() to authenticated, service_role;

-- 2. Reading transcript segments -----------------------------------------------------------

create index transcript_segments_company_id_profile_id_idx
  on public.transcript_segments (company_id, profile_id);
drop index public.transcript_segments_company_id_idx;

-- The read policy has its short name since 20261128000600 (which renames a truncated one).
drop policy "Owners and company managers and admins read segments"
  on public.transcript_segments;
create policy "Owners and company managers and admins read segments"
  on public.transcript_segments for select to authenticated
  using (
    company_id = (select private.my_company_id())
    -- Own rows first: a trainee reading their own rows never needs the second helper.
    and (profile_id = (select auth.uid()) or (select private.managed_company_id()) is not null)
  );
