/**
 * voicesessions — dashboards independent of history: daily rollups kept by triggers
 * ================================================================================
 * public.company_metrics used to aggregate every session of the company and expand every
 * session's skill scores at each call (issue 13: 487 ms and 404k buffers at 100,000
 * sessions, linear in history). It now reads per-day sums kept by the database:
 *
 *   private.dash_company_day        (company_id, day): counts and sums of the sessions of
 *                                   the company that started that UTC day, with their
 *                                   analytics rows
 *   private.dash_company_day_skill  (company_id, day, skill): count and sum of the skill's
 *                                   numeric scores
 *
 * `active_users`, a distinct count, is not a sum: it is counted on the sessions themselves,
 * one index probe per person of the company (a skip scan of the new index
 * sessions (company_id, profile_id, started_at)), so no rollup names a person.
 *
 * What each row holds is exactly the sum, over the sessions of its key that exist now, of
 * what those sessions contribute (a session with its analytics row: 1 session; its score,
 * duration, minute cost, API cost and talk ratio when present, each with a count of how many
 * were present, so that "nothing" stays distinguishable from 0). A row whose session count
 * reaches 0 is deleted (a skill row: whose count reaches 0).
 *
 * Kept in step, in the transaction of the write, by row triggers (names dash_*):
 *   sessions: after insert; after update of the key (company, start time), the end
 *     (duration) or minute_cost; before delete (the analytics row is still there: the whole
 *     contribution goes; the cascade that then deletes the analytics row finds no session
 *     and does nothing). Deletes by retention, GDPR erasure, a deleted profile or company all
 *     go through these.
 *   session_analytics: after insert, delete, and update of overall_score, api_cost_usd,
 *     talk_time_ratio or skill_scores (record_analysis, anonymization, any later fix).
 * Every change is an additive delta applied with INSERT ... ON CONFLICT DO UPDATE, so two
 * transactions changing the same company and day never lose each other's update (the
 * second waits for the row lock of the first).
 *
 * GDPR. The rollups are per company and day only: no row names or keys a person (nothing an
 * export would have to list). An erasure deletes the person's sessions, which removes their
 * whole contribution from the sums in the same transaction: what is left is exactly the
 * numbers of the remaining sessions, as the full scan would compute them. Anonymization
 * does not change the figures. Nothing of an erased person is kept, not even anonymously.
 *
 * Access. The tables are private (no grant to anon/authenticated/service_role). The
 * dashboard reads them in private.dash_company_metrics, SECURITY DEFINER, which authorizes
 * the caller first exactly as company_metrics does (managers and admins of the company, the
 * service role) — RLS would let those callers read every session of the company anyway.
 *
 * Windows not aligned on UTC midnight: the whole days inside [since, until) come from the
 * rollups, the partial days at either end from the sessions themselves (an index range scan
 * of at most two days). The results are identical to the full scan's, types and scales
 * included (tests/db/test_perf_dashboards.py checks it on generated histories).
 *
 * Writes with triggers off (session_replication_role = replica, a bulk load) bypass the
 * rollups: call private.dash_rebuild() afterwards (it recomputes them from the base tables;
 * this migration calls it once for the existing data).
 */

-- Tables --------------------------------------------------------------------------------------

create table private.dash_company_day (
  company_id uuid not null,
  day date not null,
  sessions bigint not null default 0,
  scored bigint not null default 0,          -- sessions with an overall_score
  score_sum bigint not null default 0,
  timed bigint not null default 0,           -- sessions with a duration (ended)
  duration_sum bigint not null default 0,    -- seconds
  costed bigint not null default 0,          -- sessions with a minute_cost
  minute_cost_sum numeric(24, 4) not null default 0,
  analyzed bigint not null default 0,        -- sessions with an analytics row
  api_cost_sum numeric(24, 6) not null default 0,
  talked bigint not null default 0,          -- sessions with a talk_time_ratio
  talk_sum numeric(24, 4) not null default 0,
  primary key (company_id, day)
);
comment on table private.dash_company_day is
  'Per company and UTC day of started_at: sums over its sessions (kept by the dash_* triggers).';

create table private.dash_company_day_skill (
  company_id uuid not null,
  day date not null,
  skill text not null,
  n bigint not null default 0,
  total numeric not null default 0,
  primary key (company_id, day, skill)
);
comment on table private.dash_company_day_skill is
  'Per company, UTC day and skill: count and sum of the numeric skill scores of its sessions.';

revoke all on private.dash_company_day, private.dash_company_day_skill
  from public, anon, authenticated, service_role;

-- active_users: the distinct people of a company's sessions, by a skip scan of this index
create index if not exists sessions_company_id_profile_id_started_at_idx
  on public.sessions (company_id, profile_id, started_at);

-- Applying a change ---------------------------------------------------------------------------

/** The UTC day a session started on: the day of its rollup rows. */
create function private.dash_day(started_at timestamptz)
returns date
language sql
immutable
parallel safe
set search_path = ''
as $$
  select (dash_day.started_at at time zone 'UTC')::date;
$$;
revoke all on function private.dash_day(timestamptz) from public, anon, authenticated;

/**
 * The figures one side of a change contributes to the rollups of a (company, person, day):
 * the session itself when `with_session` (1 session, its duration and minute cost, each with
 * a count of presence), and its analytics row `an` when not null (score, API cost, talk
 * ratio). Skills are handled by private.dash_add.
 */
create function private.dash_figures(
  with_session boolean,
  duration_seconds integer,
  minute_cost numeric,
  an public.session_analytics
)
returns table (
  sessions integer, scored integer, score_sum integer, timed integer, duration_sum bigint,
  costed integer, minute_cost_sum numeric, analyzed integer, api_cost_sum numeric,
  talked integer, talk_sum numeric
)
language sql
immutable
set search_path = ''
as $$
  select w::integer,
         (h and dash_figures.an.overall_score is not null)::integer,
         (case when h then coalesce(dash_figures.an.overall_score, 0) else 0 end)::integer,
         (w and dash_figures.duration_seconds is not null)::integer,
         (case when w then coalesce(dash_figures.duration_seconds, 0) else 0 end)::bigint,
         (w and dash_figures.minute_cost is not null)::integer,
         (case when w then coalesce(dash_figures.minute_cost, 0) else 0 end)::numeric,
         h::integer,
         (case when h then dash_figures.an.api_cost_usd else 0 end)::numeric,
         (h and dash_figures.an.talk_time_ratio is not null)::integer,
         (case when h then coalesce(dash_figures.an.talk_time_ratio, 0) else 0 end)::numeric
  from (select coalesce(dash_figures.with_session, false) as w,
               dash_figures.an.session_id is not null as h) x;
$$;
revoke all on function private.dash_figures(boolean, integer, numeric,
  public.session_analytics) from public, anon, authenticated, service_role;

/**
 * Applies one change of a session's contribution to the rollups of (company_id, day): what it contributes after the change (`new_*`) minus what it contributed before
 * (`old_*`), as one additive delta (see private.dash_figures for the sides). Rows whose
 * count reaches 0 are deleted.
 */
create function private.dash_add(
  company_id uuid,
  day date,
  old_session boolean,
  old_duration integer,
  old_cost numeric,
  old_an public.session_analytics,
  new_session boolean,
  new_duration integer,
  new_cost numeric,
  new_an public.session_analytics
)
returns void
language plpgsql
set search_path = ''
as $$
declare
  left_count bigint;
begin
  insert into private.dash_company_day as r
    (company_id, day, sessions, scored, score_sum, timed, duration_sum, costed,
     minute_cost_sum, analyzed, api_cost_sum, talked, talk_sum)
  select dash_add.company_id, dash_add.day, n.sessions - o.sessions, n.scored - o.scored,
         n.score_sum - o.score_sum, n.timed - o.timed, n.duration_sum - o.duration_sum,
         n.costed - o.costed, n.minute_cost_sum - o.minute_cost_sum, n.analyzed - o.analyzed,
         n.api_cost_sum - o.api_cost_sum, n.talked - o.talked, n.talk_sum - o.talk_sum
  from private.dash_figures(dash_add.new_session, dash_add.new_duration, dash_add.new_cost,
                            dash_add.new_an) n,
       private.dash_figures(dash_add.old_session, dash_add.old_duration, dash_add.old_cost,
                            dash_add.old_an) o
  on conflict on constraint dash_company_day_pkey do update
    set sessions = r.sessions + excluded.sessions,
        scored = r.scored + excluded.scored,
        score_sum = r.score_sum + excluded.score_sum,
        timed = r.timed + excluded.timed,
        duration_sum = r.duration_sum + excluded.duration_sum,
        costed = r.costed + excluded.costed,
        minute_cost_sum = r.minute_cost_sum + excluded.minute_cost_sum,
        analyzed = r.analyzed + excluded.analyzed,
        api_cost_sum = r.api_cost_sum + excluded.api_cost_sum,
        talked = r.talked + excluded.talked,
        talk_sum = r.talk_sum + excluded.talk_sum
  returning r.sessions into left_count;
  if left_count <= 0 then
    delete from private.dash_company_day r
    where r.company_id = dash_add.company_id and r.day = dash_add.day;
  end if;

  if dash_add.old_an.session_id is not null or dash_add.new_an.session_id is not null then
    -- skills in name order: concurrent writers lock the rows in the same order
    insert into private.dash_company_day_skill as r (company_id, day, skill, n, total)
    select dash_add.company_id, dash_add.day, d.skill, sum(d.n), sum(d.total)
    from (
      select e.key as skill, 1 as n, (e.value)::numeric as total
      from jsonb_each(case when dash_add.new_an.session_id is not null
                           then dash_add.new_an.skill_scores end) e
      where jsonb_typeof(e.value) = 'number'
      union all
      select e.key, -1, -(e.value)::numeric
      from jsonb_each(case when dash_add.old_an.session_id is not null
                           then dash_add.old_an.skill_scores end) e
      where jsonb_typeof(e.value) = 'number'
    ) d
    group by d.skill
    having sum(d.n) <> 0 or sum(d.total) <> 0
    order by d.skill
    on conflict on constraint dash_company_day_skill_pkey do update
      set n = r.n + excluded.n,
          total = r.total + excluded.total;
    delete from private.dash_company_day_skill r
    where r.company_id = dash_add.company_id and r.day = dash_add.day and r.n <= 0
      and dash_add.old_an.session_id is not null
      and r.skill in (select jsonb_object_keys(dash_add.old_an.skill_scores));
  end if;

end;
$$;
revoke all on function private.dash_add(uuid, date, boolean, integer, numeric,
  public.session_analytics, boolean, integer, numeric, public.session_analytics)
  from public, anon, authenticated, service_role;

-- Triggers ------------------------------------------------------------------------------------

/**
 * Trigger on public.sessions (after insert, after update of what the rollups hold, before
 * delete): moves the session's contribution. Security definer: whoever writes sessions has
 * no privilege on the rollups.
 */
create function private.dash_sessions_rollup()
returns trigger
language plpgsql
security definer
set search_path = ''
as $$
declare
  an public.session_analytics;
  nothing public.session_analytics;
begin
  if tg_op = 'INSERT' then
    select a.* into an from public.session_analytics a where a.session_id = new.id;
    perform private.dash_add(new.company_id, private.dash_day(new.started_at),
                             false, null, null, nothing,
                             true, new.duration_seconds, new.minute_cost, an);
    return null;
  elsif tg_op = 'DELETE' then
    -- before the delete: the analytics row (deleted next by the cascade) is still here
    select a.* into an from public.session_analytics a where a.session_id = old.id;
    perform private.dash_add(old.company_id, private.dash_day(old.started_at),
                             true, old.duration_seconds, old.minute_cost, an,
                             false, null, null, nothing);
    return old;
  elsif (old.company_id, private.dash_day(old.started_at))
        is not distinct from (new.company_id, private.dash_day(new.started_at)) then
    perform private.dash_add(new.company_id, private.dash_day(new.started_at),
                             true, old.duration_seconds, old.minute_cost, nothing,
                             true, new.duration_seconds, new.minute_cost, nothing);
  else
    -- the key moved: the whole contribution, analytics included, moves with it
    select a.* into an from public.session_analytics a where a.session_id = new.id;
    perform private.dash_add(old.company_id, private.dash_day(old.started_at),
                             true, old.duration_seconds, old.minute_cost, an,
                             false, null, null, nothing);
    perform private.dash_add(new.company_id, private.dash_day(new.started_at),
                             false, null, null, nothing,
                             true, new.duration_seconds, new.minute_cost, an);
  end if;
  return null;
end;
$$;
revoke all on function private.dash_sessions_rollup() from public, anon, authenticated,
  service_role;

/**
 * Trigger on public.session_analytics (after insert, update of the figures, delete): moves
 * the analytics part of the session's contribution. When the session is gone (the cascade
 * of its delete), its before-delete trigger already took everything away.
 */
create function private.dash_session_analytics_rollup()
returns trigger
language plpgsql
security definer
set search_path = ''
as $$
declare
  s record;
  nothing public.session_analytics;
begin
  select x.company_id, x.started_at into s
  from public.sessions x
  where x.id = (case when tg_op = 'DELETE' then old.session_id else new.session_id end);
  if not found then
    return null;
  end if;
  perform private.dash_add(
    s.company_id, private.dash_day(s.started_at),
    false, null, null, case when tg_op = 'INSERT' then nothing else old end,
    false, null, null, case when tg_op = 'DELETE' then nothing else new end);
  return null;
end;
$$;
revoke all on function private.dash_session_analytics_rollup() from public, anon,
  authenticated, service_role;

drop trigger if exists dash_sessions_rollup_insert on public.sessions;
create trigger dash_sessions_rollup_insert
  after insert on public.sessions
  for each row execute function private.dash_sessions_rollup();

drop trigger if exists dash_sessions_rollup_update on public.sessions;
create trigger dash_sessions_rollup_update
  after update on public.sessions
  for each row
  when ((old.company_id, old.started_at, old.duration_seconds, old.minute_cost)
        is distinct from
        (new.company_id, new.started_at, new.duration_seconds, new.minute_cost))
  execute function private.dash_sessions_rollup();

drop trigger if exists dash_sessions_rollup_delete on public.sessions;
create trigger dash_sessions_rollup_delete
  before delete on public.sessions
  for each row execute function private.dash_sessions_rollup();

drop trigger if exists dash_session_analytics_rollup on public.session_analytics;
create trigger dash_session_analytics_rollup
  after insert or delete on public.session_analytics
  for each row execute function private.dash_session_analytics_rollup();

drop trigger if exists dash_session_analytics_rollup_update on public.session_analytics;
create trigger dash_session_analytics_rollup_update
  after update on public.session_analytics
  for each row
  when ((old.session_id, old.overall_score, old.api_cost_usd, old.talk_time_ratio,
         old.skill_scores)
        is distinct from
        (new.session_id, new.overall_score, new.api_cost_usd, new.talk_time_ratio,
         new.skill_scores))
  execute function private.dash_session_analytics_rollup();

-- Rebuilding ----------------------------------------------------------------------------------

/**
 * Recomputes every rollup from the sessions and analytics rows (the migration's backfill;
 * also after writes made with triggers off). Locks the rollups for the duration.
 */
create function private.dash_rebuild()
returns void
language plpgsql
set search_path = ''
as $$
begin
  lock table private.dash_company_day, private.dash_company_day_skill in exclusive mode;
  delete from private.dash_company_day;
  delete from private.dash_company_day_skill;
  insert into private.dash_company_day
    (company_id, day, sessions, scored, score_sum, timed, duration_sum, costed,
     minute_cost_sum, analyzed, api_cost_sum, talked, talk_sum)
  select s.company_id, private.dash_day(s.started_at), count(*), count(a.overall_score),
         coalesce(sum(a.overall_score), 0), count(s.duration_seconds),
         coalesce(sum(s.duration_seconds), 0), count(s.minute_cost),
         coalesce(sum(s.minute_cost), 0), count(a.session_id),
         coalesce(sum(a.api_cost_usd), 0), count(a.talk_time_ratio),
         coalesce(sum(a.talk_time_ratio), 0)
  from public.sessions s
  left join public.session_analytics a on a.session_id = s.id
  group by 1, 2;
  insert into private.dash_company_day_skill (company_id, day, skill, n, total)
  select s.company_id, private.dash_day(s.started_at), e.key, count(*), sum((e.value)::numeric)
  from public.sessions s
  join public.session_analytics a on a.session_id = s.id
  cross join lateral jsonb_each(a.skill_scores) e
  where jsonb_typeof(e.value) = 'number'
  group by 1, 2, 3;
end;
$$;
revoke all on function private.dash_rebuild() from public, anon, authenticated, service_role;

select private.dash_rebuild();

-- Reading -------------------------------------------------------------------------------------

/**
 * company_metrics computed from the rollups (whole UTC days inside the window) and from the
 * sessions of the partial days at its ends; same columns, values, types and scales as the
 * full scan (definitions in 20261126001100_analytics.sql). Security definer: authorizes the
 * caller itself first (private.analytics_authorize_company) before reading the rollups.
 */
create function private.dash_company_metrics(
  company_id uuid,
  since timestamptz,
  until timestamptz
)
returns table (
  sessions bigint,
  active_users bigint,
  scored_sessions bigint,
  average_score numeric,
  total_minutes numeric,
  minute_cost numeric,
  api_cost_usd numeric,
  average_talk_ratio numeric,
  skill_averages jsonb
)
language plpgsql
stable
security definer
set search_path = ''
as $$
declare
  company uuid := dash_company_metrics.company_id;
  lo timestamptz := coalesce(dash_company_metrics.since, '-infinity');
  hi timestamptz := coalesce(dash_company_metrics.until, 'infinity');
  first_day date;   -- the first whole UTC day inside the window
  end_day date;     -- the day after the last whole one
  edge_end timestamptz;    -- the sessions of [lo, edge_end) and [edge_start, hi) are read
  edge_start timestamptz;  -- one by one; the days in between from the rollups
begin
  perform private.analytics_check_window(dash_company_metrics.since,
                                         dash_company_metrics.until);
  perform private.analytics_authorize_company(company);
  first_day := private.dash_day(lo);
  if lo > '-infinity' and (first_day::timestamp at time zone 'UTC') < lo then
    first_day := first_day + 1;
  end if;
  end_day := private.dash_day(hi);
  if first_day < end_day then
    edge_end := first_day::timestamp at time zone 'UTC';
    edge_start := end_day::timestamp at time zone 'UTC';
  else
    first_day := null;
    end_day := null;
    edge_end := hi;
    edge_start := hi;
  end if;

  return query
    with recursive edge as materialized (
      select s.duration_seconds, s.minute_cost, a.session_id as analyzed,
             a.overall_score, a.api_cost_usd, a.talk_time_ratio, a.skill_scores
      from public.sessions s
      left join public.session_analytics a on a.session_id = s.id
      where s.company_id = company
        and ((s.started_at >= lo and s.started_at < edge_end)
             or (s.started_at >= edge_start and s.started_at < hi))
    ),
    parts as (
      select d.sessions, d.scored, d.score_sum, d.timed, d.duration_sum, d.costed,
             d.minute_cost_sum, d.analyzed, d.api_cost_sum, d.talked, d.talk_sum
      from private.dash_company_day d
      where d.company_id = company and d.day >= first_day and d.day < end_day
      union all
      select 1, (e.overall_score is not null)::integer, coalesce(e.overall_score, 0),
             (e.duration_seconds is not null)::integer, coalesce(e.duration_seconds, 0),
             (e.minute_cost is not null)::integer, coalesce(e.minute_cost, 0),
             (e.analyzed is not null)::integer, coalesce(e.api_cost_usd, 0),
             (e.talk_time_ratio is not null)::integer, coalesce(e.talk_time_ratio, 0)
      from edge e
    ),
    people(pid) as (  -- the company's people with sessions: one index probe each
      select (select s.profile_id from public.sessions s
              where s.company_id = company order by s.profile_id limit 1)
      union all
      select (select s.profile_id from public.sessions s
              where s.company_id = company and s.profile_id > people.pid
              order by s.profile_id limit 1)
      from people
      where people.pid is not null
    ),
    active as (
      select count(*) as n
      from people
      where people.pid is not null
        and exists (select 1 from public.sessions s
                    where s.company_id = company and s.profile_id = people.pid
                      and s.started_at >= lo and s.started_at < hi)
    ),
    skills as (
      select coalesce(jsonb_object_agg(k.skill, k.average), '{}'::jsonb) as averages
      from (
        select x.skill, round(sum(x.total) / sum(x.n), 2) as average
        from (
          select k.skill, k.n, k.total
          from private.dash_company_day_skill k
          where k.company_id = company and k.day >= first_day and k.day < end_day
          union all
          select e.key, 1, (e.value)::numeric
          from edge y cross join lateral jsonb_each(y.skill_scores) e
          where jsonb_typeof(e.value) = 'number'
        ) x
        group by x.skill
        having sum(x.n) > 0
      ) k
    )
    select coalesce(sum(t.sessions), 0)::bigint,
           (select active.n from active),
           coalesce(sum(t.scored), 0)::bigint,
           case when sum(t.scored) > 0 then round(sum(t.score_sum) / sum(t.scored), 2) end,
           case when sum(t.timed) > 0 then round(sum(t.duration_sum) / 60.0, 2)
                else 0::numeric end,
           case when sum(t.costed) > 0 then sum(t.minute_cost_sum) else 0::numeric end,
           case when sum(t.analyzed) > 0 then sum(t.api_cost_sum) else 0::numeric end,
           case when sum(t.talked) > 0 then round(sum(t.talk_sum) / sum(t.talked), 4) end,
           (select skills.averages from skills)
    from parts t;
end;
$$;
revoke all on function private.dash_company_metrics(uuid, timestamptz, timestamptz)
  from public, anon;
grant execute on function private.dash_company_metrics(uuid, timestamptz, timestamptz)
  to authenticated, service_role;

/**
 * A company's numbers over the sessions started in [since, until): exactly one row, zeros
 * for an empty window (definitions in 20261126001100_analytics.sql). `skill_averages` is
 * {skill: average} over the sessions that have that skill's score. Reads the daily rollups
 * (20261128000900_perf_dashboards.sql): its cost depends on the days and people of the
 * company, not on how many sessions they hold.
 */
create or replace function public.company_metrics(
  company_id uuid,
  since timestamptz default null,
  until timestamptz default null
)
returns table (
  sessions bigint,
  active_users bigint,
  scored_sessions bigint,
  average_score numeric,
  total_minutes numeric,
  minute_cost numeric,
  api_cost_usd numeric,
  average_talk_ratio numeric,
  skill_averages jsonb
)
language plpgsql
stable
security invoker
set search_path = ''
as $$
begin
  perform private.analytics_check_window(company_metrics.since, company_metrics.until);
  perform private.analytics_authorize_company(company_metrics.company_id);
  return query
    select m.sessions, m.active_users, m.scored_sessions, m.average_score, m.total_minutes,
           m.minute_cost, m.api_cost_usd, m.average_talk_ratio, m.skill_averages
    from private.dash_company_metrics(company_metrics.company_id, company_metrics.since,
                                      company_metrics.until) m;
end;
$$;
revoke all on function public.company_metrics(uuid, timestamptz, timestamptz) from public, anon;
grant execute on function public.company_metrics(uuid, timestamptz, timestamptz)
  to authenticated, service_role;

select private.apply_value_policy();
