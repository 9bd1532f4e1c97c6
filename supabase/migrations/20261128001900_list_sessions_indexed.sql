/**
 * voicesessions — listing sessions reads a page, not the history
 * ===============================================================
 * public.list_sessions without a company or person (the SDK's `sessions.list()`) left the
 * choice of rows to RLS: `profile_id = me or company_id = the company I manage`. PostgreSQL
 * reads such an OR through a BitmapOr (or a sequential scan), in no order, so every page
 * fetched and sorted every session the caller may see: a manager's first page of 50 in a
 * company of 100,000 sessions read all 100,000 (2,215 buffers, 25 ms); a trainee's, all of
 * their own.
 *
 * For an end user without a company or person filter the function now names the two parts
 * of what RLS lets them see, each read through its index in (started_at, id) order and
 * stopped after max_rows, and merges them: their own sessions (sessions_profile_id_...),
 * and, managing a company, the company's sessions of everyone else
 * (sessions_company_id_...). These are exactly the rows the policy "Owners and company
 * managers and admins read sessions" shows (a manager's own sessions, wherever they are,
 * come from the first part; the second excludes them, so none appears twice), and RLS still
 * applies to both (SECURITY INVOKER): naming them can only narrow, never widen, what is
 * returned. tests/db/test_list_sessions.py holds the function to the generic query for every
 * person of the test world, and a manager's page to a bounded number of buffers. A keyset
 * page (`after_started_at`, `after_id`) also bounds started_at from above, which the indexes
 * can start from.
 *
 * Everything else (a company or person given, the service role) is the query it was.
 */

create or replace function public.list_sessions(
  company_id uuid default null,
  profile_id uuid default null,
  status public.session_status default null,
  started_after timestamptz default null,
  started_before timestamptz default null,
  after_started_at timestamptz default null,
  after_id uuid default null,
  max_rows integer default 50
)
returns setof public.sessions
language plpgsql
stable
security invoker
set search_path = ''
as $$
declare
  me uuid;
  managed uuid;
begin
  if max_rows is null or max_rows < 1 or max_rows > 1000 then
    raise exception 'max_rows must be between 1 and 1000, not %', max_rows
      using errcode = '22023';
  end if;
  if (after_started_at is null) <> (after_id is null) then
    raise exception 'after_started_at and after_id go together' using errcode = '22023';
  end if;

  if list_sessions.company_id is null and list_sessions.profile_id is null
     and (select private.is_end_user()) then
    me := auth.uid();
    managed := private.managed_company_id();
    return query
      select u.*
      from (
        (select s.*
         from public.sessions s
         where s.profile_id = me
           and (list_sessions.status is null or s.status = list_sessions.status)
           and (list_sessions.started_after is null
                or s.started_at >= list_sessions.started_after)
           and (list_sessions.started_before is null
                or s.started_at < list_sessions.started_before)
           and (list_sessions.after_id is null
                or (s.started_at <= list_sessions.after_started_at
                    and (s.started_at, s.id)
                        < (list_sessions.after_started_at, list_sessions.after_id)))
         order by s.started_at desc, s.id desc
         limit list_sessions.max_rows)
        union all
        (select s.*
         from public.sessions s
         where managed is not null
           and s.company_id = managed
           and s.profile_id is distinct from me
           and (list_sessions.status is null or s.status = list_sessions.status)
           and (list_sessions.started_after is null
                or s.started_at >= list_sessions.started_after)
           and (list_sessions.started_before is null
                or s.started_at < list_sessions.started_before)
           and (list_sessions.after_id is null
                or (s.started_at <= list_sessions.after_started_at
                    and (s.started_at, s.id)
                        < (list_sessions.after_started_at, list_sessions.after_id)))
         order by s.started_at desc, s.id desc
         limit list_sessions.max_rows)
      ) u
      order by u.started_at desc, u.id desc
      limit list_sessions.max_rows;
    return;
  end if;

  return query
    select s.*
    from public.sessions s
    where (list_sessions.company_id is null or s.company_id = list_sessions.company_id)
      and (list_sessions.profile_id is null or s.profile_id = list_sessions.profile_id)
      and (list_sessions.status is null or s.status = list_sessions.status)
      and (list_sessions.started_after is null or s.started_at >= list_sessions.started_after)
      and (list_sessions.started_before is null or s.started_at < list_sessions.started_before)
      and (list_sessions.after_id is null
           or (s.started_at, s.id) < (list_sessions.after_started_at, list_sessions.after_id))
    order by s.started_at desc, s.id desc
    limit list_sessions.max_rows;
end;
$$;
revoke all on function public.list_sessions(uuid, uuid, public.session_status, timestamptz,
  timestamptz, timestamptz, uuid, integer) from public, anon;
grant execute on function public.list_sessions(uuid, uuid, public.session_status, timestamptz,
  timestamptz, timestamptz, uuid, integer) to authenticated, service_role;
