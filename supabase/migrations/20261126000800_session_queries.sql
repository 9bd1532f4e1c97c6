/**
 * voicesessions — session queries for the API
 * ===========================================
 * Read functions the SDK calls through `/rest/v1/rpc/` (or directly in local mode). They are
 * SECURITY INVOKER: RLS of the caller applies to every row they read, exactly as for a plain
 * select. STABLE, so PostgREST runs them in a read-only transaction.
 */

/**
 * A page of sessions, newest first, with keyset pagination: pass the `started_at` and `id`
 * of the last row of the previous page as `after_started_at` / `after_id`. The order
 * (started_at desc, id desc) is total, so pages never skip or repeat a row.
 */
create function public.list_sessions(
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
begin
  if max_rows is null or max_rows < 1 or max_rows > 1000 then
    raise exception 'max_rows must be between 1 and 1000, not %', max_rows
      using errcode = '22023';
  end if;
  if (after_started_at is null) <> (after_id is null) then
    raise exception 'after_started_at and after_id go together' using errcode = '22023';
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

/**
 * Full-text search over assembled transcripts, each in its own language: the query is parsed
 * with `websearch_to_tsquery` (quotes, OR, -exclusion) in every text-search configuration,
 * and each transcript is matched with the configuration of its language, using the GIN index.
 * Returns the best `max_results` (1..100) with their rank and a highlighted snippet
 * (matches between ** and **). Anonymized transcripts are not searched.
 */
create function public.search_transcripts(query text, max_results integer default 20)
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
    select t.session_id, s.title, s.started_at, t.language,
           pg_catalog.ts_rank(t.search_vector, q.tsq) as rank,
           pg_catalog.ts_headline(
             q.cfg, t.content, q.tsq,
             'StartSel=**, StopSel=**, MaxFragments=2, MinWords=5, MaxWords=20'
           ) as snippet
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
    limit search_transcripts.max_results;
end;
$$;
revoke all on function public.search_transcripts(text, integer) from public, anon;
grant execute on function public.search_transcripts(text, integer) to authenticated, service_role;
