/**
 * voicesessions — analytics: analysis ingestion, dashboards, transcript search
 * ===========================================================================
 * What turns stored calls into scores, progress and team numbers:
 *
 *   public.record_analysis(session_id, provider, analysis_type, results, ...)   store a result
 *   public.company_metrics(company_id, since, until)                           one company
 *   public.user_progress(profile_id, since, until)                             one person
 *   public.team_overview(company_id, since, until)                             one row per trainee
 *   public.metrics_timeseries(company_id | profile_id, bucket, since, until)   for charts
 *   public.search_transcripts(query, max_results)                              (re-created)
 *
 * Errors (besides the tables' own)
 *   22004  a required argument is null.   22023  a malformed argument; for record_analysis the
 *          message names the offending key of `results`; nothing is written.
 *   P0002  the session, company or profile does not exist, or the caller cannot see it.
 *   42501  the caller may see it but not do this (see "Who may do what").
 *   VS003  record_analysis: an analysis with the same (session, analysis_type, provider,
 *          version) was already recorded with different `results`.
 *   VS004  record_analysis: the session is still active (analyses describe a finished call).
 *
 * Recording an analysis
 * ---------------------
 * `results` is a JSON object. These keys, all optional, feed the session's
 * `session_analytics` row (null = not measured):
 *
 *   overall_score        number 0..100
 *   skill_scores         object {skill: number 0..100}, skill names like analysis types
 *                        (^[a-z][a-z0-9_]{0,63}$); opening, questioning, objection_handling and
 *                        closing also fill the columns of those names
 *   talk_time_ratio      number 0..1: the trainee's share of speaking time
 *   filler_words_count   integer >= 0 (the trainee's)
 *   speaking_pace_wpm    number 0..1000 (the trainee's words per minute)
 *   question_count       integer >= 0 (questions the trainee asked)
 *   sentiment_score      number -1..1, from the transcript's text or about the simulated
 *                        buyer; never inferred from the trainee's voice (EU AI Act Art. 5(1)(f))
 *
 * Any other key is kept in analysis_results.results as it is (summaries, rationales, the
 * full conversation-metrics breakdown). A `conversation_metrics` analysis carries measured
 * numbers only: overall_score, skill_scores and sentiment_score are refused in it (22023).
 * `results` holds at most 1,000,000 bytes of JSON.
 *
 * In the same transaction, record_analysis
 *   - stores the analysis (created_at = clock_timestamp(), so later recordings sort later);
 *   - rebuilds the session's analytics row: for each analysis_type the newest analysis
 *     counts, and each field above takes its value from the newest of those that carries it
 *     (a newer analysis of a type replaces the older one entirely; types complement each
 *     other). `api_cost_usd` instead adds up the cost of every analysis ever recorded for the
 *     session, so that the money spent survives the retention of old analyses;
 *   - moves a `completed` session to `analyzed`, unless the analysis is a
 *     `conversation_metrics` one: those are recorded by the SDK when a call completes, and
 *     `completed` keeps meaning "waiting for the AI analysis". Other statuses stay.
 * Analyses of one session are serialized by a row lock on the session, so concurrent
 * recordings always leave the analytics row built from all of them.
 *
 * Idempotency: the key is (session_id, analysis_type, provider, version), the table's unique
 * key. Recording the same key again with equal `results` (JSON equality) changes nothing and
 * returns the stored row (a re-delivered webhook, a retried call); with different `results`
 * it is VS003 — a provider that re-analyses a session records a new `version`.
 *
 * Who may do what
 * ---------------
 *   record_analysis     the service role: any analysis of any session. The session's owner:
 *                       only `conversation_metrics` from provider `voicesessions`, the
 *                       numbers the SDK measures from the transcript when the owner completes
 *                       their call (numbers the owner could skew anyway by writing the
 *                       transcript, which is theirs). Scores and sentiment therefore come
 *                       only from the service role: a browser holding the anon key and a
 *                       user's JWT can never forge them. Managers and admins who can see
 *                       the session: 42501. Anyone else: P0002 (nothing is revealed).
 *   company_metrics,    managers and admins of the company, the service role (42501 for
 *   team_overview       everyone else; P0002 for the service role when the company does not
 *                       exist).
 *   user_progress       the person, managers and admins of their company, the service role.
 *   metrics_timeseries  by company or by person, as above.
 * The dashboards are SECURITY INVOKER and read through the caller's RLS as well: the explicit
 * checks only turn "you would see nothing" into a clear 42501.
 *
 * Dashboards: definitions
 * -----------------------
 * A session belongs to the window [since, until) by its started_at (either bound may be
 * null: open). Counts and sums of an empty window are 0, never a missing row; averages of
 * nothing are null (an average of no scores is unknown, not 0). Sessions of every status
 * count; only ended sessions have a duration. Minutes are sum(duration_seconds) / 60,
 * `minute_cost` is sum(sessions.minute_cost) (billable minutes consumed), `api_cost_usd`
 * sum(session_analytics.api_cost_usd). Trend: the least-squares slope of overall_score
 * against the session's start time, in score points per week (null with fewer than two
 * scored sessions at different times).
 */

-- Error codes: see the header. ---------------------------------------------------------------

-- Session analytics: the API cost of a session ---------------------------------------------

alter table public.session_analytics
  add column api_cost_usd numeric(12, 6) not null default 0 check (api_cost_usd >= 0);
comment on column public.session_analytics.api_cost_usd is
  'Sum of api_cost_usd of every analysis recorded for the session (kept after retention deletes analyses).';

-- Recording an analysis --------------------------------------------------------------------

/**
 * What is wrong with the `results` of an analysis of type `analysis_type` (see the header),
 * or null when nothing is.
 */
create function private.analysis_results_problem(analysis_type text, results jsonb)
returns text
language plpgsql
immutable
parallel safe
set search_path = ''
as $$
declare
  r jsonb := analysis_results_problem.results;
  bad text;
begin
  if r is null or jsonb_typeof(r) <> 'object' then
    return format('results must be a JSON object, not %s', coalesce(jsonb_typeof(r), 'null'));
  end if;
  if octet_length(r::text) > 1000000 then
    return format('results has %s bytes of JSON, at most 1000000 are allowed',
                  octet_length(r::text));
  end if;
  if analysis_results_problem.analysis_type = 'conversation_metrics' then
    select string_agg(k, ', ' order by k) into bad
    from unnest(array['overall_score', 'skill_scores', 'sentiment_score']) k
    where r ? k;
    if bad is not null then
      return format('a conversation_metrics analysis carries measured numbers only, not %s',
                    bad);
    end if;
  end if;
  -- Each known key: null, or a value of its type and range.
  select format('results.%s must be %s, not %s', c.key, c.expected,
                left((r -> c.key)::text, 80))
  into bad
  from (values
    ('overall_score', 'a number between 0 and 100', 0::numeric, 100::numeric, false),
    ('talk_time_ratio', 'a number between 0 and 1', 0, 1, false),
    ('filler_words_count', 'an integer >= 0', 0, 2147483647, true),
    ('speaking_pace_wpm', 'a number between 0 and 1000', 0, 1000, false),
    ('question_count', 'an integer >= 0', 0, 2147483647, true),
    ('sentiment_score', 'a number between -1 and 1', -1, 1, false)
  ) as c(key, expected, lo, hi, whole)
  where r ? c.key
    and jsonb_typeof(r -> c.key) <> 'null'
    and (jsonb_typeof(r -> c.key) <> 'number'
         or (r ->> c.key)::numeric not between c.lo and c.hi
         or (c.whole and (r ->> c.key)::numeric <> trunc((r ->> c.key)::numeric)))
  order by c.key
  limit 1;
  if bad is not null then
    return bad;
  end if;
  if r ? 'skill_scores' and jsonb_typeof(r -> 'skill_scores') <> 'null' then
    if jsonb_typeof(r -> 'skill_scores') <> 'object' then
      return format('results.skill_scores must be an object {skill: score}, not %s',
                    jsonb_typeof(r -> 'skill_scores'));
    end if;
    select format('results.skill_scores.%s must be %s', left(e.key, 80),
                  case when e.key !~ '^[a-z][a-z0-9_]{0,63}$'
                       then 'named like ^[a-z][a-z0-9_]{0,63}$'
                       else 'null or a number between 0 and 100, not '
                            || left(e.value::text, 80) end)
    into bad
    from jsonb_each(r -> 'skill_scores') e
    where e.key !~ '^[a-z][a-z0-9_]{0,63}$'
       or (jsonb_typeof(e.value) <> 'null'
           and (jsonb_typeof(e.value) <> 'number' or (e.value)::numeric not between 0 and 100))
    order by e.key
    limit 1;
    if bad is not null then
      return bad;
    end if;
  end if;
  return null;
end;
$$;
revoke all on function private.analysis_results_problem(text, jsonb) from public;
grant execute on function private.analysis_results_problem(text, jsonb)
  to authenticated, service_role;

/**
 * Rebuilds the analytics row of a session from its analyses (the rules are in the header)
 * and adds `added_cost` to its API cost. Called by private.record_analysis only, with the
 * session row locked.
 */
create function private.refresh_session_analytics(session_id uuid, added_cost numeric)
returns void
language plpgsql
set search_path = ''
as $$
begin
  with current_analyses as (
    select distinct on (a.analysis_type) a.results, a.created_at, a.id
    from public.analysis_results a
    where a.session_id = refresh_session_analytics.session_id
    order by a.analysis_type, a.created_at desc, a.id desc
  ),
  fields as (
    select distinct on (f.key) f.key, f.value
    from current_analyses c
    cross join lateral jsonb_each(c.results) f
    where f.key in ('overall_score', 'talk_time_ratio', 'filler_words_count',
                    'speaking_pace_wpm', 'question_count', 'sentiment_score')
      and jsonb_typeof(f.value) = 'number'
    order by f.key, c.created_at desc, c.id desc
  ),
  skills as (
    select coalesce(jsonb_object_agg(x.key, x.value), '{}'::jsonb) as scores
    from (
      select distinct on (s.key) s.key, s.value
      from current_analyses c
      cross join lateral jsonb_each(
        case when jsonb_typeof(c.results -> 'skill_scores') = 'object'
             then c.results -> 'skill_scores' else '{}'::jsonb end
      ) s
      where jsonb_typeof(s.value) = 'number'
      order by s.key, c.created_at desc, c.id desc
    ) x
  ),
  merged as (
    select jsonb_object_agg(f.key, f.value) filter (where f.key is not null) as v
    from fields f
  )
  insert into public.session_analytics as sa
    (session_id, overall_score, opening_score, questioning_score, objection_handling_score,
     closing_score, skill_scores, talk_time_ratio, filler_words_count, speaking_pace_wpm,
     question_count, sentiment_score, api_cost_usd)
  select refresh_session_analytics.session_id,
         round((m.v ->> 'overall_score')::numeric)::smallint,
         round((k.scores ->> 'opening')::numeric)::smallint,
         round((k.scores ->> 'questioning')::numeric)::smallint,
         round((k.scores ->> 'objection_handling')::numeric)::smallint,
         round((k.scores ->> 'closing')::numeric)::smallint,
         k.scores,
         round((m.v ->> 'talk_time_ratio')::numeric, 4),
         (m.v ->> 'filler_words_count')::integer,
         round((m.v ->> 'speaking_pace_wpm')::numeric, 1),
         (m.v ->> 'question_count')::integer,
         round((m.v ->> 'sentiment_score')::numeric, 4),
         coalesce(refresh_session_analytics.added_cost, 0)
  from merged m cross join skills k
  on conflict on constraint session_analytics_pkey do update
    set overall_score = excluded.overall_score,
        opening_score = excluded.opening_score,
        questioning_score = excluded.questioning_score,
        objection_handling_score = excluded.objection_handling_score,
        closing_score = excluded.closing_score,
        skill_scores = excluded.skill_scores,
        talk_time_ratio = excluded.talk_time_ratio,
        filler_words_count = excluded.filler_words_count,
        speaking_pace_wpm = excluded.speaking_pace_wpm,
        question_count = excluded.question_count,
        sentiment_score = excluded.sentiment_score,
        api_cost_usd = sa.api_cost_usd + excluded.api_cost_usd;
end;
$$;
revoke all on function private.refresh_session_analytics(uuid, numeric) from public;

/**
 * Records an analysis (implementation of public.record_analysis, which see). Security
 * definer: end users have no privilege on analysis_results and session_analytics; the caller
 * is checked here (the service role, or the owner for conversation metrics).
 */
create function private.record_analysis(
  session_id uuid,
  provider text,
  analysis_type text,
  results jsonb,
  version text,
  confidence numeric,
  processing_time_ms integer,
  api_cost_usd numeric
)
returns public.analysis_results
language plpgsql
volatile
security definer
set search_path = ''
as $$
declare
  caller uuid := (select auth.uid());
  is_service boolean := private.gdpr_is_service_role();
  owner_id uuid;
  owner_company uuid;
  current_status public.session_status;
  problem text;
  stored public.analysis_results;
begin
  if record_analysis.session_id is null then
    raise exception 'session_id is required' using errcode = '22004';
  end if;
  if record_analysis.provider is null or char_length(btrim(record_analysis.provider)) = 0
     or char_length(record_analysis.provider) > 100 then
    raise exception 'provider must be a name of 1 to 100 characters, not %',
      coalesce(quote_literal(left(record_analysis.provider, 120)), 'null')
      using errcode = '22023';
  end if;
  if record_analysis.analysis_type is null
     or record_analysis.analysis_type !~ '^[a-z][a-z0-9_]{0,63}$' then
    raise exception 'analysis_type must match ^[a-z][a-z0-9_]{0,63}$ (e.g. sales_scoring), not %',
      coalesce(quote_literal(left(record_analysis.analysis_type, 80)), 'null')
      using errcode = '22023';
  end if;
  if record_analysis.version is null or char_length(btrim(record_analysis.version)) = 0
     or char_length(record_analysis.version) > 50 then
    raise exception 'version must be a string of 1 to 50 characters, not %',
      coalesce(quote_literal(left(record_analysis.version, 80)), 'null')
      using errcode = '22023';
  end if;
  if record_analysis.confidence not between 0 and 1 then
    raise exception 'confidence must be null or between 0 and 1, not %',
      record_analysis.confidence using errcode = '22023';
  end if;
  if record_analysis.processing_time_ms < 0 then
    raise exception 'processing_time_ms must be null or >= 0, not %',
      record_analysis.processing_time_ms using errcode = '22023';
  end if;
  if record_analysis.api_cost_usd < 0 or record_analysis.api_cost_usd >= 1000000 then
    raise exception 'api_cost_usd must be null or between 0 and 999999.999999, not %',
      record_analysis.api_cost_usd using errcode = '22023';
  end if;
  problem := private.analysis_results_problem(record_analysis.analysis_type,
                                              record_analysis.results);
  if problem is not null then
    raise exception '%', problem
      using errcode = '22023',
            hint = 'See "Recording an analysis" in the README for the shape of results.';
  end if;

  -- Who is asking. The session is read without a lock first, so that nobody who may not
  -- record anything can make writers wait.
  select s.profile_id, s.company_id into owner_id, owner_company
  from public.sessions s where s.id = record_analysis.session_id;
  if not found then
    raise exception 'session % not found', record_analysis.session_id using errcode = 'P0002';
  end if;
  if not is_service then
    if caller is not null and caller = owner_id then
      if record_analysis.analysis_type <> 'conversation_metrics'
         or record_analysis.provider <> 'voicesessions' then
        raise exception 'a session''s owner may record only conversation_metrics from provider voicesessions'
          using errcode = '42501',
                hint = 'Scores and other analyses are recorded by a backend with the service role.';
      end if;
    elsif caller is not null and owner_company = (select private.managed_company_id()) then
      raise exception 'only the service role records analyses of other people''s sessions'
        using errcode = '42501';
    else
      raise exception 'session % not found', record_analysis.session_id
        using errcode = 'P0002';
    end if;
  end if;

  -- One recording per session at a time: the analytics row is rebuilt from every analysis
  -- committed before this one.
  select s.status into current_status from public.sessions s
  where s.id = record_analysis.session_id
  for no key update;
  if current_status = 'active' then
    raise exception 'session % is still active: complete it before recording analyses',
      record_analysis.session_id
      using errcode = 'VS004';
  end if;

  insert into public.analysis_results as a
    (session_id, provider, analysis_type, version, results, confidence, processing_time_ms,
     api_cost_usd, created_at)
  values (record_analysis.session_id, record_analysis.provider, record_analysis.analysis_type,
          record_analysis.version, record_analysis.results, record_analysis.confidence,
          record_analysis.processing_time_ms, record_analysis.api_cost_usd,
          pg_catalog.clock_timestamp())
  on conflict on constraint analysis_results_identity_key do nothing
  returning a.* into stored;

  if not found then
    select a.* into stored from public.analysis_results a
    where a.session_id = record_analysis.session_id
      and a.analysis_type = record_analysis.analysis_type
      and a.provider = record_analysis.provider
      and a.version = record_analysis.version;
    if stored.results is distinct from record_analysis.results then
      raise exception 'analysis % of provider % version % is already recorded for session % with different results',
        record_analysis.analysis_type, record_analysis.provider, record_analysis.version,
        record_analysis.session_id
        using errcode = 'VS003',
              hint = 'Record a re-analysis under a new version.';
    end if;
    return stored;
  end if;

  perform private.refresh_session_analytics(record_analysis.session_id,
                                            record_analysis.api_cost_usd);

  if current_status = 'completed' and record_analysis.analysis_type <> 'conversation_metrics' then
    update public.sessions s set status = 'analyzed' where s.id = record_analysis.session_id;
  end if;
  return stored;
end;
$$;
revoke all on function private.record_analysis(uuid, text, text, jsonb, text, numeric, integer,
  numeric) from public;
grant execute on function private.record_analysis(uuid, text, text, jsonb, text, numeric,
  integer, numeric) to authenticated, service_role;

/**
 * Store one analysis of a session and keep its analytics row and status in step, in one
 * transaction (the results shape, the rules, idempotency and who may call it are described
 * at the top of this migration). Returns the stored analysis_results row — the one recorded
 * earlier when the same analysis is recorded again.
 */
create function public.record_analysis(
  session_id uuid,
  provider text,
  analysis_type text,
  results jsonb,
  version text default '1',
  confidence numeric default null,
  processing_time_ms integer default null,
  api_cost_usd numeric default null
)
returns public.analysis_results
language sql
volatile
security invoker
set search_path = ''
as $$
  select * from private.record_analysis(
    record_analysis.session_id, record_analysis.provider, record_analysis.analysis_type,
    record_analysis.results, record_analysis.version, record_analysis.confidence,
    record_analysis.processing_time_ms, record_analysis.api_cost_usd);
$$;
revoke all on function public.record_analysis(uuid, text, text, jsonb, text, numeric, integer,
  numeric) from public, anon;
grant execute on function public.record_analysis(uuid, text, text, jsonb, text, numeric,
  integer, numeric) to authenticated, service_role;

-- Dashboards: who may read them -------------------------------------------------------------

/**
 * Passes for the service role and the managers and admins of `company_id`; 42501 for
 * everyone else; P0002 for the service role when the company does not exist.
 */
create function private.analytics_authorize_company(company_id uuid)
returns void
language plpgsql
stable
set search_path = ''
as $$
begin
  if analytics_authorize_company.company_id is null then
    raise exception 'company_id is required' using errcode = '22004';
  end if;
  if private.gdpr_is_service_role() then
    if not exists (select 1 from public.companies c
                   where c.id = analytics_authorize_company.company_id) then
      raise exception 'company % not found', analytics_authorize_company.company_id
        using errcode = 'P0002';
    end if;
    return;
  end if;
  if analytics_authorize_company.company_id = (select private.managed_company_id()) then
    return;
  end if;
  raise exception 'only managers and admins of the company can read its numbers'
    using errcode = '42501';
end;
$$;
revoke all on function private.analytics_authorize_company(uuid) from public;
grant execute on function private.analytics_authorize_company(uuid)
  to authenticated, service_role;

/**
 * Passes for the person themself, managers and admins of their company and the service
 * role; 42501 for everyone else; P0002 for the service role when the profile does not exist.
 */
create function private.analytics_authorize_profile(profile_id uuid)
returns void
language plpgsql
stable
set search_path = ''
as $$
begin
  if analytics_authorize_profile.profile_id is null then
    raise exception 'profile_id is required' using errcode = '22004';
  end if;
  if private.gdpr_is_service_role() then
    if not exists (select 1 from public.profiles p
                   where p.id = analytics_authorize_profile.profile_id) then
      raise exception 'profile % not found', analytics_authorize_profile.profile_id
        using errcode = 'P0002';
    end if;
    return;
  end if;
  if analytics_authorize_profile.profile_id = (select auth.uid())
     or exists (select 1 from public.profiles p
                where p.id = analytics_authorize_profile.profile_id
                  and p.company_id = (select private.managed_company_id())) then
    return;
  end if;
  raise exception 'only the person and the managers and admins of their company can read their progress'
    using errcode = '42501';
end;
$$;
revoke all on function private.analytics_authorize_profile(uuid) from public;
grant execute on function private.analytics_authorize_profile(uuid)
  to authenticated, service_role;

/** 22023 unless since < until (when both are given). */
create function private.analytics_check_window(since timestamptz, until timestamptz)
returns void
language plpgsql
immutable
set search_path = ''
as $$
begin
  if analytics_check_window.since >= analytics_check_window.until then
    raise exception 'since (%) must be before until (%)',
      analytics_check_window.since, analytics_check_window.until
      using errcode = '22023';
  end if;
end;
$$;
revoke all on function private.analytics_check_window(timestamptz, timestamptz) from public;
grant execute on function private.analytics_check_window(timestamptz, timestamptz)
  to authenticated, service_role;

-- Dashboards ---------------------------------------------------------------------------------

/**
 * A company's numbers over the sessions started in [since, until): exactly one row, zeros
 * for an empty window (definitions in the header). `skill_averages` is {skill: average}
 * over the sessions that have that skill's score.
 */
create function public.company_metrics(
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
    with scoped as materialized (
      select s.profile_id, s.duration_seconds, s.minute_cost, a.overall_score,
             a.api_cost_usd, a.talk_time_ratio, a.skill_scores
      from public.sessions s
      left join public.session_analytics a on a.session_id = s.id
      where s.company_id = company_metrics.company_id
        and s.started_at >= coalesce(company_metrics.since, '-infinity')
        and s.started_at < coalesce(company_metrics.until, 'infinity')
    )
    select count(*),
           count(distinct x.profile_id),
           count(x.overall_score),
           round(avg(x.overall_score), 2),
           coalesce(round(sum(x.duration_seconds) / 60.0, 2), 0),
           coalesce(sum(x.minute_cost), 0),
           coalesce(sum(x.api_cost_usd), 0),
           round(avg(x.talk_time_ratio), 4),
           (select coalesce(jsonb_object_agg(k.key, k.average), '{}'::jsonb)
            from (select e.key, round(avg((e.value)::numeric), 2) as average
                  from scoped y cross join lateral jsonb_each(y.skill_scores) e
                  where jsonb_typeof(e.value) = 'number'
                  group by e.key) k)
    from scoped x;
end;
$$;
revoke all on function public.company_metrics(uuid, timestamptz, timestamptz) from public, anon;
grant execute on function public.company_metrics(uuid, timestamptz, timestamptz)
  to authenticated, service_role;

/**
 * Progress of each of `profile_ids` over the sessions they started in [since, until), one
 * row per id in the order given (shared by user_progress and team_overview; the callers
 * authorize). `skills` is {skill: {first, latest, average, sessions}}.
 */
create function private.progress(profile_ids uuid[], since timestamptz, until timestamptz)
returns table (
  profile_id uuid,
  sessions bigint,
  scored_sessions bigint,
  first_score smallint,
  latest_score smallint,
  average_score numeric,
  best_score smallint,
  trend_per_week numeric,
  average_talk_ratio numeric,
  first_session_at timestamptz,
  last_session_at timestamptz,
  skills jsonb
)
language plpgsql
stable
set search_path = ''
as $$
begin
  return query
    select p.id, agg.sessions, agg.scored_sessions, agg.first_score, agg.latest_score,
           agg.average_score, agg.best_score, agg.trend_per_week, agg.average_talk_ratio,
           agg.first_session_at, agg.last_session_at, sk.skills
    from unnest(progress.profile_ids) with ordinality as p(id, ord)
    cross join lateral (
      select count(*) as sessions,
             count(a.overall_score) as scored_sessions,
             (array_agg(a.overall_score order by s.started_at, s.id)
                filter (where a.overall_score is not null))[1] as first_score,
             (array_agg(a.overall_score order by s.started_at desc, s.id desc)
                filter (where a.overall_score is not null))[1] as latest_score,
             round(avg(a.overall_score), 2) as average_score,
             max(a.overall_score) as best_score,
             round(regr_slope(a.overall_score::double precision,
                              extract(epoch from s.started_at)::double precision / 604800
                   )::numeric, 4) as trend_per_week,
             round(avg(a.talk_time_ratio), 4) as average_talk_ratio,
             min(s.started_at) as first_session_at,
             max(s.started_at) as last_session_at
      from public.sessions s
      left join public.session_analytics a on a.session_id = s.id
      where s.profile_id = p.id
        and s.started_at >= coalesce(progress.since, '-infinity')
        and s.started_at < coalesce(progress.until, 'infinity')
    ) agg
    cross join lateral (
      select coalesce(jsonb_object_agg(k.key, jsonb_build_object(
               'first', k.first, 'latest', k.latest, 'average', k.average,
               'sessions', k.n)), '{}'::jsonb) as skills
      from (
        select e.key,
               (array_agg((e.value)::numeric order by s.started_at, s.id))[1] as first,
               (array_agg((e.value)::numeric order by s.started_at desc, s.id desc))[1]
                 as latest,
               round(avg((e.value)::numeric), 2) as average,
               count(*) as n
        from public.sessions s
        join public.session_analytics a on a.session_id = s.id
        cross join lateral jsonb_each(a.skill_scores) e
        where s.profile_id = p.id
          and s.started_at >= coalesce(progress.since, '-infinity')
          and s.started_at < coalesce(progress.until, 'infinity')
          and jsonb_typeof(e.value) = 'number'
        group by e.key
      ) k
    ) sk
    order by p.ord;
end;
$$;
revoke all on function private.progress(uuid[], timestamptz, timestamptz) from public;
grant execute on function private.progress(uuid[], timestamptz, timestamptz)
  to authenticated, service_role;

/**
 * One person's progress over the sessions they started in [since, until): exactly one row
 * (zeros and nulls when there is nothing): session counts, first / latest / average / best
 * overall score, trend (score points per week, least squares), average talk ratio, and per
 * skill {first, latest, average, sessions}.
 */
create function public.user_progress(
  profile_id uuid,
  since timestamptz default null,
  until timestamptz default null
)
returns table (
  sessions bigint,
  scored_sessions bigint,
  first_score smallint,
  latest_score smallint,
  average_score numeric,
  best_score smallint,
  trend_per_week numeric,
  average_talk_ratio numeric,
  first_session_at timestamptz,
  last_session_at timestamptz,
  skills jsonb
)
language plpgsql
stable
security invoker
set search_path = ''
as $$
begin
  perform private.analytics_check_window(user_progress.since, user_progress.until);
  perform private.analytics_authorize_profile(user_progress.profile_id);
  return query
    select pr.sessions, pr.scored_sessions, pr.first_score, pr.latest_score,
           pr.average_score, pr.best_score, pr.trend_per_week, pr.average_talk_ratio,
           pr.first_session_at, pr.last_session_at, pr.skills
    from private.progress(array[user_progress.profile_id], user_progress.since,
                          user_progress.until) pr;
end;
$$;
revoke all on function public.user_progress(uuid, timestamptz, timestamptz) from public, anon;
grant execute on function public.user_progress(uuid, timestamptz, timestamptz)
  to authenticated, service_role;

/**
 * One row per trainee of the company (also those without sessions in the window), ordered
 * by display name: their progress as user_progress computes it.
 */
create function public.team_overview(
  company_id uuid,
  since timestamptz default null,
  until timestamptz default null
)
returns table (
  profile_id uuid,
  display_name text,
  sessions bigint,
  scored_sessions bigint,
  first_score smallint,
  latest_score smallint,
  average_score numeric,
  best_score smallint,
  trend_per_week numeric,
  average_talk_ratio numeric,
  first_session_at timestamptz,
  last_session_at timestamptz,
  skills jsonb
)
language plpgsql
stable
security invoker
set search_path = ''
as $$
begin
  perform private.analytics_check_window(team_overview.since, team_overview.until);
  perform private.analytics_authorize_company(team_overview.company_id);
  return query
    select pr.profile_id, p.display_name, pr.sessions, pr.scored_sessions, pr.first_score,
           pr.latest_score, pr.average_score, pr.best_score, pr.trend_per_week,
           pr.average_talk_ratio, pr.first_session_at, pr.last_session_at, pr.skills
    from private.progress(
      array(select t.id from public.profiles t
            where t.company_id = team_overview.company_id and t.role = 'trainee'
            order by t.display_name, t.id),
      team_overview.since, team_overview.until
    ) pr
    join public.profiles p on p.id = pr.profile_id;
end;
$$;
revoke all on function public.team_overview(uuid, timestamptz, timestamptz) from public, anon;
grant execute on function public.team_overview(uuid, timestamptz, timestamptz)
  to authenticated, service_role;

/**
 * Numbers per day, week (starting Monday) or month (UTC) of a company or of one person —
 * exactly one of company_id and profile_id — for charts. Every bucket from the first to the
 * last is present (zeros for a bucket without sessions): from `since` (else the first
 * session) to `until` (else the last session); no session and no bounds: no rows. At most
 * 1,000 buckets (22023 beyond).
 */
create function public.metrics_timeseries(
  company_id uuid default null,
  profile_id uuid default null,
  bucket text default 'week',
  since timestamptz default null,
  until timestamptz default null
)
returns table (
  bucket_start date,
  sessions bigint,
  active_users bigint,
  scored_sessions bigint,
  average_score numeric,
  total_minutes numeric,
  api_cost_usd numeric,
  average_talk_ratio numeric
)
language plpgsql
stable
security invoker
set search_path = ''
as $$
declare
  first_bucket date;
  last_bucket date;
  step interval;
begin
  if (metrics_timeseries.company_id is null) = (metrics_timeseries.profile_id is null) then
    raise exception 'give exactly one of company_id and profile_id' using errcode = '22023';
  end if;
  if metrics_timeseries.bucket is null
     or metrics_timeseries.bucket not in ('day', 'week', 'month') then
    raise exception 'bucket must be day, week or month, not %',
      coalesce(quote_literal(metrics_timeseries.bucket), 'null')
      using errcode = '22023';
  end if;
  perform private.analytics_check_window(metrics_timeseries.since, metrics_timeseries.until);
  if metrics_timeseries.company_id is not null then
    perform private.analytics_authorize_company(metrics_timeseries.company_id);
  else
    perform private.analytics_authorize_profile(metrics_timeseries.profile_id);
  end if;
  step := ('1 ' || metrics_timeseries.bucket)::interval;

  select date_trunc(metrics_timeseries.bucket,
                    coalesce(metrics_timeseries.since, min(s.started_at)) at time zone 'UTC')::date,
         date_trunc(metrics_timeseries.bucket,
                    coalesce(metrics_timeseries.until - interval '1 microsecond',
                             max(s.started_at)) at time zone 'UTC')::date
  into first_bucket, last_bucket
  from public.sessions s
  where (metrics_timeseries.company_id is null or s.company_id = metrics_timeseries.company_id)
    and (metrics_timeseries.profile_id is null or s.profile_id = metrics_timeseries.profile_id)
    and s.started_at >= coalesce(metrics_timeseries.since, '-infinity')
    and s.started_at < coalesce(metrics_timeseries.until, 'infinity');
  if first_bucket is null or last_bucket is null then
    return;
  end if;
  if first_bucket + 1000 * step <= last_bucket then
    raise exception 'the window holds more than 1000 %s', metrics_timeseries.bucket
      using errcode = '22023',
            hint = 'Choose a larger bucket or a shorter window.';
  end if;

  return query
    select b.start::date,
           count(x.session_id),
           count(distinct x.profile_id),
           count(x.overall_score),
           round(avg(x.overall_score), 2),
           coalesce(round(sum(x.duration_seconds) / 60.0, 2), 0),
           coalesce(sum(x.api_cost_usd), 0),
           round(avg(x.talk_time_ratio), 4)
    from generate_series(first_bucket::timestamp, last_bucket::timestamp, step) as b(start)
    left join (
      select s.id as session_id, s.profile_id, s.duration_seconds, a.overall_score,
             a.api_cost_usd, a.talk_time_ratio,
             date_trunc(metrics_timeseries.bucket, s.started_at at time zone 'UTC') as start
      from public.sessions s
      left join public.session_analytics a on a.session_id = s.id
      where (metrics_timeseries.company_id is null
             or s.company_id = metrics_timeseries.company_id)
        and (metrics_timeseries.profile_id is null
             or s.profile_id = metrics_timeseries.profile_id)
        and s.started_at >= coalesce(metrics_timeseries.since, '-infinity')
        and s.started_at < coalesce(metrics_timeseries.until, 'infinity')
    ) x on x.start = b.start
    group by b.start
    order by b.start;
end;
$$;
revoke all on function public.metrics_timeseries(uuid, uuid, text, timestamptz, timestamptz)
  from public, anon;
grant execute on function public.metrics_timeseries(uuid, uuid, text, timestamptz, timestamptz)
  to authenticated, service_role;

-- Transcript search --------------------------------------------------------------------------

/**
 * Full-text search over assembled transcripts, each in its own language: the query is parsed
 * with `websearch_to_tsquery` (quotes, or, -exclusion) in every text-search configuration of
 * pg_catalog, and each transcript is matched with the configuration of its language
 * (private.text_search_config: en, de, fr, es, it, nl, pt, sv, ... by primary subtag;
 * unknown -> simple), using the GIN index. Returns the best `max_results` (1..100), ranked by
 * ts_rank (then newest first), each with a highlighted snippet (matches between ** and **,
 * at most two fragments) built in the transcript's own configuration. Snippets are built
 * for the returned rows only (ts_headline re-parses the whole text, the costly part).
 * SECURITY INVOKER: RLS decides which transcripts a caller searches (their own; managers and
 * admins their company's). Anonymized transcripts are not searched.
 */
create or replace function public.search_transcripts(query text, max_results integer default 20)
returns table (
  session_id uuid,
  title text,
  started_at timestamptz,
  language text,
  rank real,
  snippet text
)
language plpgsql
stable
security invoker
set search_path = ''
as $$
#variable_conflict use_column
begin
  if query is null or btrim(query) = '' then
    raise exception 'the search query is empty' using errcode = '22023';
  end if;
  if max_results is null or max_results < 1 or max_results > 100 then
    raise exception 'max_results must be between 1 and 100, not %', max_results
      using errcode = '22023';
  end if;
  return query
    select best.session_id, best.title, best.started_at, best.language, best.rank,
           pg_catalog.ts_headline(
             best.cfg, best.content, best.tsq,
             'StartSel=**, StopSel=**, MaxFragments=2, MinWords=5, MaxWords=20'
           )
    from (
      select t.session_id, s.title, s.started_at, t.language, t.content, q.cfg, q.tsq,
             pg_catalog.ts_rank(t.search_vector, q.tsq) as rank
      from (
        select c.oid::regconfig as cfg,
               pg_catalog.websearch_to_tsquery(c.oid::regconfig, search_transcripts.query) as tsq
        from pg_catalog.pg_ts_config c
        where c.cfgnamespace = 'pg_catalog'::regnamespace
      ) q
      join public.transcripts t
        on t.search_vector operator(pg_catalog.@@) q.tsq
       and private.text_search_config(t.language) = q.cfg
      join public.sessions s on s.id = t.session_id
      where not t.is_anonymized
      order by rank desc, s.started_at desc, t.session_id
      limit search_transcripts.max_results
    ) best
    order by best.rank desc, best.started_at desc, best.session_id;
end;
$$;
