/**
 * voicesessions — cheaper rollup triggers (deleting sessions)
 * ==========================================================
 * The rollups of 20261128000900_perf_dashboards.sql are kept by row triggers. Timed on a GDPR
 * erasure of a 1,000-session person (benchmarks/gdpr_erase.py, EXPLAIN ANALYZE of the
 * sessions delete): the before-delete trigger took 277 of the statement's 338 ms, 277 µs per
 * session. Most of it was planning: private.dash_add called private.dash_figures twice per
 * change, and the triggers called private.dash_day, SQL functions with their own
 * search_path, which PostgreSQL neither inlines nor caches (planned again at every call).
 *
 * Same rollups, same rules, same results (tests/db/test_perf_dashboards.py compares them
 * with full scans on generated histories); only cheaper to keep:
 *   - private.dash_day is PL/pgSQL (its plan is cached per session);
 *   - private.dash_add computes both sides of a change in PL/pgSQL expressions (what
 *     private.dash_figures returned, field by field) and applies the delta in one statement;
 *     private.dash_figures, used nowhere else, is dropped.
 */

create or replace function private.dash_day(started_at timestamptz)
returns date
language plpgsql
immutable
parallel safe
set search_path = ''
as $$
begin
  return (dash_day.started_at at time zone 'UTC')::date;
end;
$$;
revoke all on function private.dash_day(timestamptz) from public, anon, authenticated;

/**
 * Applies one change of a session's contribution to the rollups of (company_id, day): what
 * it contributes after the change (`new_*`) minus what it contributed before (`old_*`), as
 * one additive delta. One side contributes the session itself when `*_session` (1 session,
 * its duration and minute cost, each with a count of presence) and its analytics row `*_an`
 * when that is not null (score, API cost, talk ratio; skills in the skill rollup). Rows
 * whose count reaches 0 are deleted.
 */
create or replace function private.dash_add(
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
  ow boolean := coalesce(dash_add.old_session, false);
  nw boolean := coalesce(dash_add.new_session, false);
  oh boolean := dash_add.old_an.session_id is not null;
  nh boolean := dash_add.new_an.session_id is not null;
  left_count bigint;
begin
  insert into private.dash_company_day as r
    (company_id, day, sessions, scored, score_sum, timed, duration_sum, costed,
     minute_cost_sum, analyzed, api_cost_sum, talked, talk_sum)
  values (
    dash_add.company_id,
    dash_add.day,
    nw::integer - ow::integer,
    (nh and dash_add.new_an.overall_score is not null)::integer
      - (oh and dash_add.old_an.overall_score is not null)::integer,
    (case when nh then coalesce(dash_add.new_an.overall_score, 0) else 0 end)::integer
      - (case when oh then coalesce(dash_add.old_an.overall_score, 0) else 0 end)::integer,
    (nw and dash_add.new_duration is not null)::integer
      - (ow and dash_add.old_duration is not null)::integer,
    (case when nw then coalesce(dash_add.new_duration, 0) else 0 end)::bigint
      - (case when ow then coalesce(dash_add.old_duration, 0) else 0 end)::bigint,
    (nw and dash_add.new_cost is not null)::integer
      - (ow and dash_add.old_cost is not null)::integer,
    (case when nw then coalesce(dash_add.new_cost, 0) else 0 end)::numeric
      - (case when ow then coalesce(dash_add.old_cost, 0) else 0 end)::numeric,
    nh::integer - oh::integer,
    (case when nh then dash_add.new_an.api_cost_usd else 0 end)::numeric
      - (case when oh then dash_add.old_an.api_cost_usd else 0 end)::numeric,
    (nh and dash_add.new_an.talk_time_ratio is not null)::integer
      - (oh and dash_add.old_an.talk_time_ratio is not null)::integer,
    (case when nh then coalesce(dash_add.new_an.talk_time_ratio, 0) else 0 end)::numeric
      - (case when oh then coalesce(dash_add.old_an.talk_time_ratio, 0) else 0 end)::numeric
  )
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

  if oh or nh then
    -- skills in name order: concurrent writers lock the rows in the same order
    insert into private.dash_company_day_skill as r (company_id, day, skill, n, total)
    select dash_add.company_id, dash_add.day, d.skill, sum(d.n), sum(d.total)
    from (
      select e.key as skill, 1 as n, (e.value)::numeric as total
      from jsonb_each(case when nh then dash_add.new_an.skill_scores end) e
      where jsonb_typeof(e.value) = 'number'
      union all
      select e.key, -1, -(e.value)::numeric
      from jsonb_each(case when oh then dash_add.old_an.skill_scores end) e
      where jsonb_typeof(e.value) = 'number'
    ) d
    group by d.skill
    having sum(d.n) <> 0 or sum(d.total) <> 0
    order by d.skill
    on conflict on constraint dash_company_day_skill_pkey do update
      set n = r.n + excluded.n,
          total = r.total + excluded.total;
    if oh then
      delete from private.dash_company_day_skill r
      where r.company_id = dash_add.company_id and r.day = dash_add.day and r.n <= 0
        and r.skill in (select jsonb_object_keys(dash_add.old_an.skill_scores));
    end if;
  end if;
end;
$$;
revoke all on function private.dash_add(uuid, date, boolean, integer, numeric,
  public.session_analytics, boolean, integer, numeric, public.session_analytics)
  from public, anon, authenticated, service_role;

drop function private.dash_figures(boolean, integer, numeric, public.session_analytics);
