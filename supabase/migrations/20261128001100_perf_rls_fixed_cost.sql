/**
 * voicesessions — performance: the fixed cost RLS adds to every statement
 * ======================================================================
 * Nothing here widens what anyone may read; `benchmarks/rls_scale.py` measures it.
 *
 * The read policies of sessions and transcript segments asked "which company is mine, do I
 * manage it" through private.my_company_id() / private.managed_company_id(): plpgsql
 * security definer functions, each call a separate executor run (function call, the
 * `search_path = ''` save and restore, SPI, its own index scan of profiles), one or two per
 * statement, the largest part of what RLS added to a small query. These two policies now
 * read the caller's profile row in the policy itself, a subquery the planner makes an
 * initplan of the statement (`(select ...)`, evaluated once, only when needed): one index
 * lookup by primary key inside the statement's own execution.
 *
 * Why this is the same rule, and safe:
 * - The subquery runs with the caller's rights, so the profiles read policy applies to it.
 *   That policy lets everyone read their own row (`id = auth.uid() or ...`, the first arm
 *   holds for the one row looked up, so its second arm, a definer helper, is not even
 *   evaluated), and the subquery reads only that row: it returns exactly what the definer
 *   helpers returned (the caller's company; for a manager or an admin the company they
 *   manage), and nothing about anyone else. No recursion: the profiles policy calls a
 *   definer helper, which reads profiles as its owner, without RLS.
 * - A caller with no profile gets null / no row, as from the helpers: nothing matches.
 * - The helpers stay (other policies and functions use them), unchanged.
 *
 * Not done, measured or reasoned out (BENCHMARKS.md has the numbers):
 * - caching "who is the caller" in a custom GUC for the rest of the transaction: any role
 *   that can run SET (a Postgres DSN user) could write a company into it; keying it by the
 *   claims does not help (the forger writes their own claims into the key), only a secret
 *   would (an HMAC per statement), which costs what it saves;
 * - invoker SQL helper functions: every function must carry `set search_path` (advisor
 *   0011), which stops PostgreSQL from inlining them, so they would be parsed and planned
 *   in every statement; the subquery written in the policy is what inlining would give.
 */

-- Sessions: the owner, or a manager or an admin of the session's company.
drop policy if exists "Owners and company managers and admins read sessions" on public.sessions;
create policy "Owners and company managers and admins read sessions"
  on public.sessions for select to authenticated
  using (
    profile_id = (select auth.uid())
    or company_id = (
      select p.company_id from public.profiles p
      where p.id = (select auth.uid()) and p.role in ('manager', 'admin')
    )
  );

-- Transcript segments: the caller's company (20261128000700 says why the company first),
-- and in it everything for a manager or an admin, only their own rows for anyone else.
drop policy if exists "Owners and company managers and admins read segments"
  on public.transcript_segments;
create policy "Owners and company managers and admins read segments"
  on public.transcript_segments for select to authenticated
  using (
    company_id = (select p.company_id from public.profiles p where p.id = (select auth.uid()))
    and (
      profile_id = (select auth.uid())
      or exists (
        select from public.profiles p
        where p.id = (select auth.uid()) and p.role in ('manager', 'admin')
      )
    )
  );
