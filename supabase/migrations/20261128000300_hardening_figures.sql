/**
 * voicesessions — hardening: figures other people rely on, and the states that produce them
 * =========================================================================================
 * Rule: nothing a user's own client sends feeds a figure other people rely on (dashboards,
 * cost totals, scores, conversation metrics) unless the database derived it itself from
 * stored data, or the service role wrote it.
 *
 * 1. Conversation metrics are computed by the database. When a session moves
 *    active -> completed, the trigger `sessions_record_conversation_metrics` measures the call
 *    from its stored segments (private.conversation_metrics: the definitions of
 *    `voicesessions.metrics`, tested against the same table of cases as the Python code) and
 *    records them, in the same transaction as the status change, as the analysis
 *    (conversation_metrics, provider voicesessions, version 'voicesessions.metrics/2'). A call
 *    without segments gets none. The breakdown lists at most 50 speakers, so what the database
 *    records is small whatever the transcript holds.
 * 2. record_analysis is the service role's only. A user (the session's owner included) gets
 *    42501 for a session they can see and P0002 otherwise: no score, cost, or metric a user's
 *    client sends reaches session_analytics or the dashboards. Provider `voicesessions` is the
 *    database's own: record_analysis refuses it for everyone (42501), so the key the database
 *    records under can never be taken first. Per session: at most 100 analyses and 5,000,000
 *    bytes of `results` JSON in total (22023).
 *    Analyses of provider voicesessions recorded by clients before this migration carried a
 *    cost a client could choose: their api_cost_usd is set to null and taken off the
 *    session's total.
 * 3. Time comes from the server's clock, or is bounded by it (sessions):
 *      - started_at <= now() + 5 minutes; for a user (not the service role) also
 *        >= now() - 12 hours when the session is created (22023);
 *      - a session lasts at most 12 hours: ended_at <= started_at + 12 hours; completing a
 *        session without an explicit ended_at ends it at now(), or at started_at + 12 hours if
 *        that is earlier (a forgotten session is not billed for days);
 *      - ended_at <= now() + 5 minutes (22023);
 *      - for a user, ended_at is fixed once the session has ended (42501); users have no
 *        privilege on started_at. The service role (trusted backends) may correct both
 *        within the bounds above.
 * 4. `analyzed` means "an analysis exists": a session moves to it only when it has an analysis
 *    other than the database's conversation metrics (VS001 otherwise, whoever asks:
 *    record_analysis is the way there).
 * 5. record_session_audio: size_bytes at most 209,715,200 (200 MB, the bucket's limit; 22023).
 * 6. Retention: each *_retention_days is null or 1..36500 (check constraints; values above
 *    36500 are lowered to 36500 first). gdpr_apply_retention for all companies handles each
 *    company in its own subtransaction: a failure rolls back that company's work only and is
 *    reported under `failures` [{company_id, sqlstate, message}] (for one company the error
 *    is raised). Active sessions are left alone by retention (nothing of a live call is
 *    deleted or anonymized). A null dry_run is refused (22004). Before analysis retention deletes
 *    analyses, the session's analytics figures are kept in session_analytics.retained, so a
 *    later analysis that does not carry a figure (overall_score...) leaves the kept one in
 *    place.
 */

-- 1. Conversation metrics computed by the database ----------------------------------------

/**
 * The constants of the metric definitions, generated from `voicesessions.metrics` and
 * checked against it by the tests: version, default fillers per language, the characters
 * Python's str.split() splits on, the punctuation stripped from tokens, and the case folding
 * that matters for the default fillers (every character whose Python lower-case is one
 * character of a default filler; no other character can make a token equal to a filler).
 */
create or replace function private.metrics_definitions()
returns jsonb
language sql
immutable
parallel safe
set search_path = ''
as $$
  select jsonb_build_object(
    'version', 'voicesessions.metrics/2',
    'max_result_speakers', 50,
    'trainee_speaker', 'trainee',
    'fillers', jsonb_build_object(
      'en', jsonb_build_array('um', 'umm', 'uh', 'uhm', 'er', 'erm', 'ah', 'hmm', 'you know',
                              'i mean', 'basically', 'literally', 'sort of', 'kind of'),
      'de', jsonb_build_array('äh', 'ähm', 'öh', 'öhm', 'hm', 'hmm', 'sozusagen', 'quasi',
                              'halt', 'irgendwie'),
      'fr', jsonb_build_array('euh', 'heu', 'bah', 'ben', 'en fait', 'du coup', 'tu vois',
                              'genre'),
      'es', jsonb_build_array('eh', 'em', 'este', 'o sea', 'pues', 'sabes'),
      'it', jsonb_build_array('ehm', 'eh', 'cioè', 'tipo', 'diciamo', 'insomma'),
      'nl', jsonb_build_array('eh', 'ehm', 'uh', 'uhm', 'zeg maar', 'nou'),
      'pt', jsonb_build_array('hum', 'é', 'tipo', 'né', 'quer dizer', 'então')
    ),
    'whitespace', U&'\0009\000A\000B\000C\000D\001C\001D\001E\001F\0020\0085\00A0\1680\2000\2001\2002\2003\2004\2005\2006\2007\2008\2009\200A\2028\2029\202F\205F\3000',
    'edge_punctuation', U&'"''.,;:!?()[]{}-\201C\201D\2018\2019\00AB\00BB\201E\201A\00BF\00A1\2026\2013\2014',
    'fold_from', U&'ABCDEFGHIKLMNOPQRSTUVWYZ\00C3\00C4\00C8\00C9\00D6\212A',
    'fold_to', U&'abcdefghiklmnopqrstuvwyz\00E3\00E4\00E8\00E9\00F6k'
  );
$$;
revoke all on function private.metrics_definitions() from public, anon, authenticated;

/**
 * The language of a session for its metrics and transcript: metadata.language when it is a
 * language tag of at most 35 characters, else 'en'.
 */
create or replace function private.session_language(metadata jsonb)
returns text
language sql
immutable
parallel safe
set search_path = ''
as $$
  select case
    when jsonb_typeof(session_language.metadata -> 'language') = 'string'
         and char_length(session_language.metadata ->> 'language') <= 35
         and (session_language.metadata ->> 'language') ~ '^[A-Za-z]{2,3}(-[A-Za-z0-9]{1,8})*$'
    then session_language.metadata ->> 'language'
    else 'en'
  end;
$$;
revoke all on function private.session_language(jsonb) from public, anon, authenticated;

/**
 * `text` as the filler matching sees it (voicesessions.metrics._normalize on every token):
 * whitespace runs as one space, the text padded with a space at both ends, the punctuation
 * at both ends of every token removed (a token of punctuation only becomes empty, so that
 * it still separates the tokens around it), then case-folded.
 */
create or replace function private.metrics_normalize(
  text text, ws_run text, punct_run text, fold_from text, fold_to text
)
returns text
language sql
immutable
parallel safe
set search_path = ''
as $$
  select pg_catalog.translate(
    pg_catalog.regexp_replace(
      pg_catalog.regexp_replace(
        ' ' || pg_catalog.regexp_replace(metrics_normalize.text, metrics_normalize.ws_run, ' ',
                                         'g') || ' ',
        ' ' || metrics_normalize.punct_run, ' ', 'g'),
      metrics_normalize.punct_run || ' ', ' ', 'g'),
    metrics_normalize.fold_from, metrics_normalize.fold_to);
$$;
revoke all on function private.metrics_normalize(text, text, text, text, text)
  from public, anon, authenticated;

/**
 * The `results` of the conversation_metrics analysis of a session, from its stored segments
 * (in seq order, then put in audio order), exactly as
 * `voicesessions.metrics.conversation_metrics(segments, language=language)
 * .analysis_results("trainee")` computes them; null when the session has no segment.
 * Floats are computed with the same IEEE operations as the Python code and printed with the
 * shortest exact representation (extra_float_digits).
 */
create or replace function private.conversation_metrics(session_id uuid, language text)
returns jsonb
language plpgsql
stable
set search_path = ''
set extra_float_digits = 3
as $$
declare
  defs jsonb := private.metrics_definitions();
  primary_tag text := lower(split_part(coalesce(conversation_metrics.language, 'en'), '-', 1));
  fillers jsonb;
  filler_re text;
  ws_run text;
  ws_chars text;
  ws_spaces text;
  punct text;
  punct_run text;
  fold_from text;
  fold_to text;
  trainee text;
  max_speakers integer;
  overall record;
  own_doc jsonb;
  own_words bigint;
  own_talk bigint;
  pace double precision;
begin
  fillers := coalesce(defs -> 'fillers' -> primary_tag, defs -> 'fillers' -> 'en');
  ws_run := '[' || (defs ->> 'whitespace') || ']+';
  ws_chars := defs ->> 'whitespace';
  ws_spaces := pg_catalog.repeat(' ', char_length(ws_chars));
  punct := defs ->> 'edge_punctuation';
  -- every punctuation character escaped (a backslash before a non-alphanumeric character is
  -- that character, inside brackets too)
  punct_run := '[' || pg_catalog.regexp_replace(punct, '(.)', '\\\1', 'g') || ']+';
  fold_from := defs ->> 'fold_from';
  fold_to := defs ->> 'fold_to';
  trainee := defs ->> 'trainee_speaker';
  max_speakers := (defs ->> 'max_result_speakers')::integer;
  -- The fillers, normalized like the text below, as one pattern that matches a phrase
  -- between two token boundaries. In the text matched, tokens are separated by two spaces
  -- (an empty token, left by a token of punctuation only, by four), so that a match, which
  -- takes one space on each side, leaves the next token its own. A greedy RE takes the
  -- longest match at the leftmost position, and matches do not overlap: the longest phrase
  -- first at each position, left to right, as voicesessions.metrics._count_fillers does.
  select ' (?:'
         || string_agg(pg_catalog.replace(
                         pg_catalog.regexp_replace(p.phrase, '([^[:alnum:] ])', '\\\1', 'g'),
                         ' ', '  '),
                       '|' order by char_length(p.phrase) desc, p.phrase collate "C")
         || ') '
  into filler_re
  from (
    select pg_catalog.btrim(private.metrics_normalize(f.filler, ws_run, punct_run, fold_from,
                                                      fold_to), ' ') as phrase
    from jsonb_array_elements_text(fillers) f(filler)
  ) p
  where p.phrase <> '';

  with segs as materialized (
    select row_number() over (order by g.start_ms, g.end_ms, g.seq) as ord,
           g.speaker, g.start_ms::bigint as start_ms, g.end_ms::bigint as end_ms,
           case when x.collapsed = '' then 0
                else char_length(x.collapsed)
                     - char_length(pg_catalog.replace(x.collapsed, ' ', '')) + 1 end as words,
           case when x.collapsed = '' or filler_re is null then 0
                else pg_catalog.regexp_count(
                       -- as private.metrics_normalize, with tokens two spaces apart
                       pg_catalog.translate(
                         pg_catalog.regexp_replace(
                           pg_catalog.regexp_replace(
                             ' ' || pg_catalog.replace(x.collapsed, ' ', '  ') || ' ',
                             ' ' || punct_run, ' ', 'g'),
                           punct_run || ' ', ' ', 'g'),
                         fold_from, fold_to),
                       filler_re) end as fillers,
           pg_catalog.regexp_count(g.text, U&'[?\FF1F]+') as questions
    from public.transcript_segments g
    cross join lateral (
      -- every whitespace character a space (translate is much faster than a regex over a
      -- large class), then runs of spaces one
      select pg_catalog.btrim(
               pg_catalog.regexp_replace(pg_catalog.translate(g.text, ws_chars, ws_spaces),
                                         '  +', ' ', 'g'),
               ' ') as collapsed
    ) x
    where g.session_id = conversation_metrics.session_id
  ),
  -- each speaker's own intervals, merged (islands of overlapping or touching segments)
  own_marked as (
    select s.speaker, s.start_ms, s.end_ms,
           max(s.end_ms) over (partition by s.speaker order by s.start_ms, s.end_ms
                               rows between unbounded preceding and 1 preceding) as prev_end
    from segs s
  ),
  own_islands as (
    select m.speaker, m.start_ms, m.end_ms,
           sum(case when m.prev_end is null or m.start_ms > m.prev_end then 1 else 0 end)
             over (partition by m.speaker order by m.start_ms, m.end_ms
                   rows unbounded preceding) as island
    from own_marked m
  ),
  merged as (
    select i.speaker, min(i.start_ms) as start_ms, max(i.end_ms) as end_ms
    from own_islands i group by i.speaker, i.island
  ),
  talk as (
    select m.speaker, sum(m.end_ms - m.start_ms)::bigint as talk_ms
    from merged m group by m.speaker
  ),
  -- anyone speaking: the union of every segment
  any_marked as (
    select s.start_ms, s.end_ms,
           max(s.end_ms) over (order by s.start_ms, s.end_ms
                               rows between unbounded preceding and 1 preceding) as prev_end
    from segs s
  ),
  any_islands as (
    select a.start_ms, a.end_ms,
           sum(case when a.prev_end is null or a.start_ms > a.prev_end then 1 else 0 end)
             over (order by a.start_ms, a.end_ms rows unbounded preceding) as island
    from any_marked a
  ),
  anyone as (
    select coalesce(sum(x.len), 0)::bigint as anyone_ms
    from (select max(i.end_ms) - min(i.start_ms) as len from any_islands i group by i.island) x
  ),
  -- at least two speakers at once: a sweep over the merged intervals, ends before starts
  events as (
    select m.start_ms as at, 1 as delta from merged m
    union all
    select m.end_ms, -1 from merged m
  ),
  sweep as (
    select e.at,
           e.at - lag(e.at) over w as step,
           coalesce(sum(e.delta) over (w rows between unbounded preceding and 1 preceding), 0)
             as open_before
    from events e
    window w as (order by e.at, e.delta)
  ),
  overlap as (
    select coalesce(sum(case when sw.open_before >= 2 then sw.step else 0 end), 0)::bigint
             as overlap_ms
    from sweep sw
  ),
  -- turns: runs of consecutive segments (audio order) by the same speaker
  turn_marked as (
    select s.*, case when s.speaker is distinct from lag(s.speaker) over (order by s.ord)
                     then 1 else 0 end as starts_turn
    from segs s
  ),
  turn_numbered as (
    select t.*, sum(t.starts_turn) over (order by t.ord rows unbounded preceding) as turn
    from turn_marked t
  ),
  turns as (
    select t.turn, min(t.speaker) as speaker,
           min(t.start_ms) as start_ms, max(t.end_ms) as end_ms
    from turn_numbered t group by t.turn
  ),
  turn_gaps as (
    select t.speaker, t.end_ms - t.start_ms as length_ms,
           t.start_ms - lag(t.end_ms) over (order by t.turn) as gap
    from turns t
  ),
  turn_stats as (
    select g.speaker, count(*) as turns, max(g.length_ms) as longest_ms,
           sum(greatest(g.gap, 0)) filter (where g.gap is not null) as pause_sum,
           count(g.gap) as pause_count,
           count(*) filter (where g.gap < 0) as interruptions
    from turn_gaps g group by g.speaker
  ),
  per_speaker as (
    select s.speaker, count(*) as segments, sum(s.words)::bigint as words,
           sum(s.fillers)::bigint as fillers, sum(s.questions)::bigint as questions
    from segs s group by s.speaker
  ),
  totals as (
    select sum(t.talk_ms)::bigint as total_talk, (select sum(p.words) from per_speaker p)::bigint
             as total_words
    from talk t
  ),
  speaker_rows as (
    select p.speaker, p.segments, p.words, tk.talk_ms, p.fillers, p.questions,
           ts.turns, ts.longest_ms, ts.pause_sum, ts.pause_count, ts.interruptions,
           jsonb_build_object(
             'speaker', p.speaker,
             'segments', p.segments,
             'words', p.words,
             'talk_time_s', tk.talk_ms::double precision / 1000,
             'talk_time_ratio', case when tt.total_talk <> 0
               then tk.talk_ms::double precision / tt.total_talk::double precision end,
             'word_ratio', case when tt.total_words <> 0
               then p.words::double precision / tt.total_words::double precision end,
             'words_per_minute', case when tk.talk_ms > 0
               then p.words::double precision / (tk.talk_ms::double precision / 60000) end,
             'filler_words', p.fillers,
             'filler_rate', case when p.words <> 0
               then p.fillers::double precision / p.words::double precision end,
             'questions', p.questions,
             'turns', coalesce(ts.turns, 0),
             'longest_monologue_s', coalesce(ts.longest_ms, 0)::double precision / 1000,
             'patience_s', case when ts.pause_count > 0
               then (ts.pause_sum::double precision / ts.pause_count::double precision) / 1000
               end,
             'interruptions', coalesce(ts.interruptions, 0)
           ) as doc
    from per_speaker p
    join talk tk on tk.speaker = p.speaker
    left join turn_stats ts on ts.speaker = p.speaker
    cross join totals tt
  ),
  ranked as (
    select r.*, row_number() over (
             order by (r.speaker = trainee) desc, r.talk_ms desc, r.speaker collate "C"
           ) as rank
    from speaker_rows r
  )
  select (select count(*) from segs) as segments,
         (select tt.total_words from totals tt) as words,
         (select max(s.end_ms) - min(s.start_ms) from segs s) as duration_ms,
         (select a.anyone_ms from anyone a) as anyone_ms,
         (select o.overlap_ms from overlap o) as overlap_ms,
         (select count(*) from turns) as turns,
         (select coalesce(jsonb_object_agg(r.speaker, r.doc), '{}'::jsonb)
          from ranked r where r.rank <= max_speakers) as speakers,
         (select count(*) from ranked r where r.rank > max_speakers) as omitted,
         (select to_jsonb(r) from ranked r where r.speaker = trainee) as own
  into overall;

  if overall.segments = 0 then
    return null;
  end if;
  own_doc := overall.own -> 'doc';
  own_words := (overall.own ->> 'words')::bigint;
  own_talk := (overall.own ->> 'talk_ms')::bigint;
  pace := null;
  if own_talk > 0 and own_words * 60 <= own_talk then
    pace := div(own_words::numeric * 1200000 + own_talk, 2 * own_talk::numeric)
              ::double precision / 10;
  end if;

  return jsonb_build_object(
    'talk_time_ratio', case when own_doc is not null then own_doc -> 'talk_time_ratio'
                            when overall.anyone_ms > 0 then to_jsonb(0.0::double precision)
                            else 'null'::jsonb end,
    'filler_words_count', coalesce(own_doc -> 'filler_words', '0'::jsonb),
    'speaking_pace_wpm', to_jsonb(pace),
    'question_count', coalesce(own_doc -> 'questions', '0'::jsonb),
    'trainee_speaker', trainee,
    'conversation', jsonb_build_object(
      'version', defs ->> 'version',
      'language', conversation_metrics.language,
      'segments', overall.segments,
      'words', overall.words,
      'duration_s', overall.duration_ms::double precision / 1000,
      'talk_time_s', overall.anyone_ms::double precision / 1000,
      'silence_s', (overall.duration_ms - overall.anyone_ms)::double precision / 1000,
      'overlap_s', overall.overlap_ms::double precision / 1000,
      'turns', overall.turns,
      'speaker_switches', greatest(overall.turns - 1, 0),
      'switches_per_minute', case when overall.duration_ms > 0
        then greatest(overall.turns - 1, 0)::double precision
             / (overall.duration_ms::double precision / 60000) end,
      'speakers', overall.speakers,
      'speakers_omitted', overall.omitted
    )
  );
end;
$$;
revoke all on function private.conversation_metrics(uuid, text) from public, anon, authenticated;

/**
 * Trigger: when a session moves active -> completed, record its conversation metrics
 * (computed above) as the analysis (conversation_metrics, voicesessions,
 * 'voicesessions.metrics/2') and rebuild its analytics, in the same transaction. Fires after
 * `sessions_assemble_transcript` (name order) and after `sessions_wait_for_live_writes`
 * made the segments in flight land. Security definer: the trainee completing their call has
 * no privilege on analysis_results.
 */
create or replace function private.sessions_record_conversation_metrics()
returns trigger
language plpgsql
security definer
set search_path = ''
as $$
declare
  results jsonb := private.conversation_metrics(new.id, private.session_language(new.metadata));
begin
  if results is null then
    return null;
  end if;
  insert into public.analysis_results
    (session_id, provider, analysis_type, version, results, created_at)
  values (new.id, 'voicesessions', 'conversation_metrics',
          private.metrics_definitions() ->> 'version', results, pg_catalog.clock_timestamp())
  on conflict on constraint analysis_results_identity_key do nothing;
  if found then
    perform private.refresh_session_analytics(new.id, null);
  end if;
  return null;
end;
$$;
revoke all on function private.sessions_record_conversation_metrics()
  from public, anon, authenticated;

drop trigger if exists sessions_record_conversation_metrics on public.sessions;
create trigger sessions_record_conversation_metrics
  after update of status on public.sessions
  for each row when (old.status = 'active' and new.status = 'completed')
  execute function private.sessions_record_conversation_metrics();

-- 2. Analyses: the service role's only; what survives retention survives ---------------------

-- Figures that retention must not take away: the analytics as they stood when analysis
-- retention deleted the analyses they came from.
alter table public.session_analytics
  add column if not exists retained jsonb not null default '{}'::jsonb;
alter table public.session_analytics
  drop constraint if exists session_analytics_retained_is_object;
alter table public.session_analytics
  add constraint session_analytics_retained_is_object
  check (jsonb_typeof(retained) = 'object' and octet_length(retained::text) <= 100000)
  not valid;
alter table public.session_analytics validate constraint session_analytics_retained_is_object;
comment on column public.session_analytics.retained is
  'The figures (overall_score, skill_scores, ...) as they stood when analysis retention deleted the analyses they came from; a rebuild falls back on them for a figure no remaining analysis carries.';

/**
 * Rebuilds the analytics row of a session from its analyses (the rules are in the header of
 * 20261126001100_analytics.sql) and adds `added_cost` to its API cost. A figure that no
 * remaining analysis carries falls back on `retained` (the figures kept when analysis
 * retention deleted analyses), so retention never wipes what the documentation says
 * survives. Called with the session row locked (record_analysis, completion).
 */
create or replace function private.refresh_session_analytics(session_id uuid, added_cost numeric)
returns void
language plpgsql
set search_path = ''
as $$
declare
  kept jsonb;
begin
  select coalesce(sa.retained, '{}'::jsonb) into kept
  from public.session_analytics sa where sa.session_id = refresh_session_analytics.session_id;
  kept := coalesce(kept, '{}'::jsonb);
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
    select (case when jsonb_typeof(kept -> 'skill_scores') = 'object'
                 then kept -> 'skill_scores' else '{}'::jsonb end)
           || coalesce(jsonb_object_agg(x.key, x.value), '{}'::jsonb) as scores
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
    select (select coalesce(jsonb_object_agg(r.key, r.value), '{}'::jsonb)
            from jsonb_each(kept) r
            where r.key in ('overall_score', 'talk_time_ratio', 'filler_words_count',
                            'speaking_pace_wpm', 'question_count', 'sentiment_score')
              and jsonb_typeof(r.value) = 'number')
           || coalesce(jsonb_object_agg(f.key, f.value) filter (where f.key is not null),
                       '{}'::jsonb) as v
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
         round((m.v ->> 'filler_words_count')::numeric)::integer,
         round((m.v ->> 'speaking_pace_wpm')::numeric, 1),
         round((m.v ->> 'question_count')::numeric)::integer,
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
revoke all on function private.refresh_session_analytics(uuid, numeric)
  from public, anon, authenticated;

/**
 * Records an analysis (implementation of public.record_analysis). The service role only:
 * a session's owner gets 42501 (conversation metrics are measured by the database when the
 * call completes; scores, costs and other analyses come from a backend), so do managers and
 * admins who can see the session; anyone else gets P0002 (nothing is revealed). Provider
 * `voicesessions` is the database's own (42501 for everyone). At most 100 analyses and
 * 5,000,000 bytes of results per session (22023). The rest is as in
 * 20261126001100_analytics.sql.
 */
create or replace function private.record_analysis(
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
  analyses_count bigint;
  analyses_bytes bigint;
begin
  if record_analysis.session_id is null then
    raise exception 'session_id is required' using errcode = '22004';
  end if;

  -- Who is asking, before anything about the arguments is said (nothing is revealed to
  -- whoever may not record). The session is read without a lock first, so that nobody who
  -- may not record anything can make writers wait.
  select s.profile_id, s.company_id into owner_id, owner_company
  from public.sessions s where s.id = record_analysis.session_id;
  if not is_service then
    if found and caller is not null and caller = owner_id then
      raise exception 'a session''s owner does not record analyses: its conversation metrics are measured by the database when the call completes'
        using errcode = '42501',
              hint = 'Scores, costs and other analyses are recorded by a backend with the service role.';
    elsif found and caller is not null and owner_company = (select private.managed_company_id()) then
      raise exception 'only the service role records analyses of other people''s sessions'
        using errcode = '42501';
    end if;
    raise exception 'session % not found', record_analysis.session_id using errcode = 'P0002';
  end if;

  if record_analysis.provider is null or char_length(btrim(record_analysis.provider)) = 0
     or char_length(record_analysis.provider) > 100 then
    raise exception 'provider must be a name of 1 to 100 characters, not %',
      coalesce(quote_literal(left(record_analysis.provider, 120)), 'null')
      using errcode = '22023';
  end if;
  if lower(btrim(record_analysis.provider)) = 'voicesessions' then
    raise exception 'provider voicesessions is the database''s own: its conversation metrics are recorded when a session completes'
      using errcode = '42501',
            hint = 'Record your own measurements under your own provider name.';
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
  if record_analysis.confidence = 'NaN'::numeric
     or record_analysis.confidence not between 0 and 1 then
    raise exception 'confidence must be null or between 0 and 1, not %',
      record_analysis.confidence using errcode = '22023';
  end if;
  if record_analysis.processing_time_ms < 0 then
    raise exception 'processing_time_ms must be null or >= 0, not %',
      record_analysis.processing_time_ms using errcode = '22023';
  end if;
  if record_analysis.api_cost_usd = 'NaN'::numeric or record_analysis.api_cost_usd < 0
     or record_analysis.api_cost_usd >= 1000000 then
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
  if owner_id is null then
    raise exception 'session % not found', record_analysis.session_id using errcode = 'P0002';
  end if;

  -- One recording per session at a time: the analytics row is rebuilt from every analysis
  -- committed before this one.
  select s.status into current_status from public.sessions s
  where s.id = record_analysis.session_id
  for no key update;
  if not found then
    raise exception 'session % not found', record_analysis.session_id using errcode = 'P0002';
  end if;
  if current_status = 'active' then
    raise exception 'session % is still active: complete it before recording analyses',
      record_analysis.session_id
      using errcode = 'VS004';
  end if;

  select a.* into stored from public.analysis_results a
  where a.session_id = record_analysis.session_id
    and a.analysis_type = record_analysis.analysis_type
    and a.provider = record_analysis.provider
    and a.version = record_analysis.version;
  if found then
    if stored.results is distinct from record_analysis.results then
      raise exception 'analysis % of provider % version % is already recorded for session % with different results',
        record_analysis.analysis_type, left(record_analysis.provider, 100),
        left(record_analysis.version, 50), record_analysis.session_id
        using errcode = 'VS003',
              hint = 'Record a re-analysis under a new version.';
    end if;
    return stored;
  end if;

  select count(*), coalesce(sum(octet_length(a.results::text)), 0)
  into analyses_count, analyses_bytes
  from public.analysis_results a where a.session_id = record_analysis.session_id;
  if analyses_count >= 100 then
    raise exception 'session % already has % analyses, at most 100 are allowed per session',
      record_analysis.session_id, analyses_count
      using errcode = '22023';
  end if;
  if analyses_bytes + octet_length(record_analysis.results::text) > 5000000 then
    raise exception 'results: the analyses of session % would hold % bytes of JSON, at most 5000000 are allowed per session',
      record_analysis.session_id, analyses_bytes + octet_length(record_analysis.results::text)
      using errcode = '22023';
  end if;

  insert into public.analysis_results as a
    (session_id, provider, analysis_type, version, results, confidence, processing_time_ms,
     api_cost_usd, created_at)
  values (record_analysis.session_id, record_analysis.provider, record_analysis.analysis_type,
          record_analysis.version, record_analysis.results, record_analysis.confidence,
          record_analysis.processing_time_ms, record_analysis.api_cost_usd,
          pg_catalog.clock_timestamp())
  returning a.* into stored;

  perform private.refresh_session_analytics(record_analysis.session_id,
                                            record_analysis.api_cost_usd);

  if current_status = 'completed' and record_analysis.analysis_type <> 'conversation_metrics' then
    update public.sessions s set status = 'analyzed' where s.id = record_analysis.session_id;
  end if;
  return stored;
end;
$$;
revoke all on function private.record_analysis(uuid, text, text, jsonb, text, numeric, integer,
  numeric) from public, anon;
grant execute on function private.record_analysis(uuid, text, text, jsonb, text, numeric,
  integer, numeric) to authenticated, service_role;

-- Costs a client could choose before this migration: the SDK recorded its conversation
-- metrics with no cost, so any cost on them came from a client. Taken off the totals.
with forged as (
  select a.session_id, sum(a.api_cost_usd) as cost
  from public.analysis_results a
  where a.provider = 'voicesessions' and a.analysis_type = 'conversation_metrics'
    and a.api_cost_usd is not null
  group by a.session_id
)
update public.session_analytics sa
set api_cost_usd = greatest(sa.api_cost_usd - f.cost, 0)
from forged f
where sa.session_id = f.session_id;
update public.analysis_results a
set api_cost_usd = null
where a.provider = 'voicesessions' and a.analysis_type = 'conversation_metrics'
  and a.api_cost_usd is not null;

-- 3 and 4. Sessions: time from the server's clock; analyzed only with an analysis ------------

/**
 * The bounds of a session's times (see the header): raises 22023 naming the field and the
 * bound. `creating` applies the bound on a user's started_at at creation.
 */
create or replace function private.check_session_times(
  started_at timestamptz,
  ended_at timestamptz,
  creating boolean,
  is_service boolean
)
returns void
language plpgsql
stable
set search_path = ''
as $$
begin
  -- Before anything computes with them (the generated duration_seconds would fail with
  -- 22008 on PostgreSQL 15 and 0A000 on 17+, which has infinite intervals); the window is
  -- the value policy's (20261128000100).
  if not isfinite(check_session_times.started_at) then
    raise exception 'sessions.started_at must be from 2000-01-01 to before 2100-01-01 (UTC), not %',
      check_session_times.started_at using errcode = '22023';
  end if;
  if not isfinite(check_session_times.ended_at) then
    raise exception 'sessions.ended_at must be from 2000-01-01 to before 2100-01-01 (UTC), not %',
      check_session_times.ended_at using errcode = '22023';
  end if;
  if check_session_times.started_at > now() + interval '5 minutes' then
    raise exception 'started_at % is in the future (at most 5 minutes after the server''s clock)',
      check_session_times.started_at
      using errcode = '22023',
            hint = 'Omit started_at to use the current time.';
  end if;
  if check_session_times.creating and not check_session_times.is_service
     and check_session_times.started_at < now() - interval '12 hours' then
    raise exception 'started_at % is more than 12 hours before the server''s clock',
      check_session_times.started_at
      using errcode = '22023',
            hint = 'A session is created when its call starts; omit started_at to use the current time.';
  end if;
  if check_session_times.ended_at is not null then
    if check_session_times.ended_at > now() + interval '5 minutes' then
      raise exception 'ended_at % is in the future (at most 5 minutes after the server''s clock)',
        check_session_times.ended_at
        using errcode = '22023',
              hint = 'Omit ended_at: the database sets it when the session completes.';
    end if;
    if check_session_times.ended_at > check_session_times.started_at + interval '12 hours' then
      raise exception 'ended_at % is more than 12 hours after started_at %: a session lasts at most 12 hours',
        check_session_times.ended_at, check_session_times.started_at
        using errcode = '22023';
    end if;
  end if;
end;
$$;
revoke all on function private.check_session_times(timestamptz, timestamptz, boolean, boolean)
  from public, anon, authenticated;

/**
 * Trigger: a new session takes its owner's company; its times are bounded by the server's
 * clock (see the header); a session is created active or completed. Security definer so
 * that it finds the profile whoever inserts; RLS then decides whether the caller may insert
 * that row.
 */
create or replace function private.sessions_before_insert()
returns trigger
language plpgsql
security definer
set search_path = ''
as $$
declare
  owner_company uuid;
begin
  -- (20261128000200) a user inserting a session for anyone but themself gets RLS's answer
  -- whether that profile exists or not: no existence oracle.
  if private.caller_is_end_user()
     and new.profile_id is distinct from (select auth.uid()) then
    raise exception 'new row violates row-level security policy for table "sessions"'
      using errcode = '42501';
  end if;
  select p.company_id into owner_company from public.profiles p where p.id = new.profile_id;
  if not found then
    raise exception 'profile % does not exist', new.profile_id using errcode = '23503';
  end if;
  if new.company_id is not null and new.company_id is distinct from owner_company then
    raise exception 'company_id must be the company of the session''s owner'
      using errcode = '42501',
            hint = 'Omit company_id: the database sets it from the owner''s profile.';
  end if;
  new.company_id := owner_company;
  if new.status not in ('active', 'completed') then
    raise exception 'a new session must be active or completed, not %', new.status
      using errcode = 'VS001';
  end if;
  if new.started_at is null then
    new.started_at := now();
  end if;
  if new.status = 'completed' and new.ended_at is null then
    new.ended_at := greatest(least(now(), new.started_at + interval '12 hours'), new.started_at);
  end if;
  perform private.check_session_times(new.started_at, new.ended_at, true,
                                      private.gdpr_is_service_role());
  return new;
end;
$$;
revoke all on function private.sessions_before_insert() from public, anon, authenticated;

/**
 * Trigger: ownership never changes; status moves only along the lifecycle; `analyzed` needs
 * an analysis (other than the database's conversation metrics); completing a session stamps
 * `ended_at` (now, at most 12 hours after the start) unless the caller gave one within the
 * bounds; for users, `ended_at` is fixed once the session has ended (the service role may
 * correct the times within the bounds). Security definer: it reads analysis_results
 * whoever updates.
 */
create or replace function private.sessions_before_update()
returns trigger
language plpgsql
security definer
set search_path = ''
as $$
begin
  if new.id is distinct from old.id
     or new.profile_id is distinct from old.profile_id
     or new.company_id is distinct from old.company_id then
    raise exception 'a session''s id, owner and company cannot change' using errcode = '42501';
  end if;
  if old.status <> 'active' and new.ended_at is distinct from old.ended_at
     and not private.gdpr_is_service_role() then
    raise exception 'ended_at of session % is fixed since it ended (%)', old.id, old.ended_at
      using errcode = '42501';
  end if;
  if new.status is distinct from old.status then
    if not (
      (old.status = 'active' and new.status = 'completed')
      or (old.status = 'completed' and new.status in ('analyzed', 'archived'))
      or (old.status = 'analyzed' and new.status = 'archived')
    ) then
      raise exception 'invalid session status transition: % -> %', old.status, new.status
        using errcode = 'VS001',
              hint = 'Allowed: active -> completed -> analyzed -> archived, completed -> archived.';
    end if;
    if new.status = 'analyzed' and not exists (
      select 1 from public.analysis_results a
      where a.session_id = new.id and a.analysis_type <> 'conversation_metrics'
    ) then
      raise exception 'session % has no analysis: it becomes analyzed when one is recorded', new.id
        using errcode = 'VS001',
              hint = 'Record the analysis (record_analysis, service role): it moves the session to analyzed.';
    end if;
    if old.status = 'active' and new.ended_at is null then
      new.ended_at := greatest(least(now(), new.started_at + interval '12 hours'),
                               new.started_at);
    end if;
  end if;
  if new.started_at is distinct from old.started_at
     or new.ended_at is distinct from old.ended_at then
    perform private.check_session_times(new.started_at, new.ended_at, false,
                                        private.gdpr_is_service_role());
  end if;
  return new;
end;
$$;
revoke all on function private.sessions_before_update() from public, anon, authenticated;

-- 5. Recordings within the bucket's limit ------------------------------------------------------

/**
 * Record an uploaded recording on its session (see 20261126001200_storage_audio.sql);
 * `size_bytes` is at most 209,715,200 (the 200 MB limit of the session-audio bucket).
 */
create or replace function private.record_session_audio(
  session_id uuid,
  path text,
  size_bytes bigint,
  quality jsonb,
  replace boolean
)
returns jsonb
language plpgsql
security definer
set search_path = ''
as $$
declare
  s public.sessions;
  previous text;
  expected_prefix text;
begin
  if record_session_audio.path is null or record_session_audio.size_bytes is null
     or record_session_audio.quality is null or record_session_audio.replace is null then
    raise exception 'path, size_bytes, quality and replace are required' using errcode = '22004';
  end if;
  if record_session_audio.size_bytes < 0 or record_session_audio.size_bytes > 209715200 then
    raise exception 'size_bytes must be between 0 and 209715200 (the bucket''s 200 MB limit), not %',
      record_session_audio.size_bytes
      using errcode = '22023';
  end if;
  if jsonb_typeof(record_session_audio.quality) <> 'object' then
    raise exception 'quality must be a JSON object, not %',
      jsonb_typeof(record_session_audio.quality)
      using errcode = '22023';
  end if;
  s := private.session_for_audio_change(record_session_audio.session_id);
  expected_prefix := s.company_id::text || '/' || s.profile_id::text || '/' || s.id::text || '.';
  if left(record_session_audio.path, length(expected_prefix)) <> expected_prefix
     or substr(record_session_audio.path, length(expected_prefix) + 1) !~ '^[a-z0-9]{1,10}$' then
    raise exception 'the recording of session % must be stored at %<ext>, not %',
      s.id, expected_prefix, left(record_session_audio.path, 200)
      using errcode = '22023',
            hint = 'ext: 1 to 10 lower-case letters or digits, e.g. webm, wav, ogg.';
  end if;
  previous := s.audio_path;
  if previous is not null and previous <> record_session_audio.path
     and not record_session_audio.replace then
    raise exception 'session % already has a recording (%)', s.id, previous
      using errcode = '23505',
            hint = 'Remove it first (remove_audio), or replace it (replace => true).';
  end if;
  update public.sessions ss
  set audio_path = record_session_audio.path,
      audio_size_bytes = record_session_audio.size_bytes,
      audio_quality = ss.audio_quality || record_session_audio.quality
  where ss.id = s.id
  returning ss.* into s;
  return jsonb_build_object(
    'audio_path', s.audio_path,
    'audio_size_bytes', s.audio_size_bytes,
    'audio_quality', s.audio_quality,
    'replaced_path', case when previous is distinct from s.audio_path then previous end
  );
end;
$$;
revoke all on function private.record_session_audio(uuid, text, bigint, jsonb, boolean)
  from public, anon;
grant execute on function private.record_session_audio(uuid, text, bigint, jsonb, boolean)
  to authenticated, service_role;

alter table public.sessions drop constraint if exists sessions_audio_size_within_bucket;
-- A size above the bucket's limit cannot be the size of a stored object: unknown.
update public.sessions set audio_size_bytes = null where audio_size_bytes > 209715200;
alter table public.sessions add constraint sessions_audio_size_within_bucket
  check (audio_size_bytes is null or audio_size_bytes <= 209715200) not valid;
alter table public.sessions validate constraint sessions_audio_size_within_bucket;

-- 6. Retention: bounded settings, one company's failure stops only that company --------------

update public.companies set audio_retention_days = 36500 where audio_retention_days > 36500;
update public.companies set transcript_retention_days = 36500
  where transcript_retention_days > 36500;
update public.companies set analysis_retention_days = 36500 where analysis_retention_days > 36500;
update public.companies set session_retention_days = 36500 where session_retention_days > 36500;
alter table public.companies drop constraint if exists companies_retention_days_bounded;
alter table public.companies add constraint companies_retention_days_bounded check (
  (audio_retention_days is null or audio_retention_days between 1 and 36500)
  and (transcript_retention_days is null or transcript_retention_days between 1 and 36500)
  and (analysis_retention_days is null or analysis_retention_days between 1 and 36500)
  and (session_retention_days is null or session_retention_days between 1 and 36500)
) not valid;
alter table public.companies validate constraint companies_retention_days_bounded;

/**
 * Applies retention (implementation of public.gdpr_apply_retention; see
 * 20261126001000_gdpr.sql). Changed here: each company in its own subtransaction (with
 * company_id null a failing company is reported under `failures` [{company_id, sqlstate,
 * message}] and the others go on; for one company the error is raised); active sessions are
 * left alone; a null dry_run is refused (22004); the analytics figures are kept in
 * session_analytics.retained before analyses are deleted.
 */
create or replace function private.gdpr_apply_retention(
  company_id uuid,
  dry_run boolean,
  batch_size integer
)
returns jsonb
language plpgsql
volatile
security definer
set search_path = ''
as $$
declare
  is_dry boolean := gdpr_apply_retention.dry_run;
  budget integer := gdpr_apply_retention.batch_size;
  -- what is left of each category's batch for this call
  left_sessions integer;
  left_audio integer;
  left_transcripts integer;
  left_analyses integer;
  co record;
  session_cutoff timestamptz;
  audio_cutoff timestamptz;
  transcript_cutoff timestamptz;
  analysis_cutoff timestamptz;
  ids uuid[];
  n bigint;
  changes jsonb;
  counts jsonb;
  categories jsonb;
  totals jsonb := '{"sessions": 0, "audio": 0, "transcripts": 0, "segments": 0, "analyses": 0}'::jsonb;
  company_more boolean;
  any_more boolean := false;
  pending jsonb;
  stores jsonb;
  request_id uuid;
  request_status public.gdpr_request_status;
  companies jsonb := '[]'::jsonb;
  request_ids jsonb := '[]'::jsonb;
  all_pending jsonb := '[]'::jsonb;
  failures jsonb := '[]'::jsonb;
  saved_sessions integer;
  saved_audio integer;
  saved_transcripts integer;
  saved_analyses integer;
  failed_state text;
  failed_message text;
begin
  if is_dry is null then
    raise exception 'dry_run must be true or false, not null' using errcode = '22004';
  end if;
  if budget is null or budget < 1 or budget > 10000 then
    raise exception 'batch_size must be between 1 and 10000, not %', budget
      using errcode = '22023';
  end if;
  perform private.gdpr_authorize_company(gdpr_apply_retention.company_id);
  left_sessions := budget;
  left_audio := budget;
  left_transcripts := budget;
  left_analyses := budget;

  for co in
    select c.id, c.audio_retention_days, c.transcript_retention_days,
           c.analysis_retention_days, c.session_retention_days
    from public.companies c
    where (gdpr_apply_retention.company_id is null or c.id = gdpr_apply_retention.company_id)
      and (c.audio_retention_days is not null or c.transcript_retention_days is not null
           or c.analysis_retention_days is not null or c.session_retention_days is not null)
    order by c.id
  loop
    saved_sessions := left_sessions;
    saved_audio := left_audio;
    saved_transcripts := left_transcripts;
    saved_analyses := left_analyses;
    -- Each company in its own subtransaction: one company's failure rolls back its own work
    -- only, and the others go on (all companies); for one company the error is raised.
    begin
    if not is_dry then
      -- Two runs for one company (cron overlapping a manual run) take turns.
      perform pg_catalog.pg_advisory_xact_lock(private.gdpr_lock_key('retention', co.id));
    end if;
    session_cutoff := now() - make_interval(days => co.session_retention_days);
    audio_cutoff := now() - make_interval(days => co.audio_retention_days);
    transcript_cutoff := now() - make_interval(days => co.transcript_retention_days);
    analysis_cutoff := now() - make_interval(days => co.analysis_retention_days);
    counts := '{"sessions": 0, "audio": 0, "transcripts": 0, "segments": 0, "analyses": 0}'::jsonb;
    company_more := false;
    pending := '[]'::jsonb;

    -- Whole sessions, by the end of the session (its start while it has none). Their audio is
    -- recorded as pending storage first; the rows hanging off them go with them (cascade).
    -- The other categories skip sessions past this limit: they go as a whole.
    if session_cutoff is not null then
      select coalesce(array_agg(x.id), '{}') into ids
      from (select s.id from public.sessions s
            where s.company_id = co.id and s.status <> 'active'
              and s.started_at < session_cutoff
              and coalesce(s.ended_at, s.started_at) < session_cutoff
            order by s.started_at, s.id
            limit left_sessions + 1) x;
      if cardinality(ids) > left_sessions then
        company_more := true;
        ids := ids[1:left_sessions];
      end if;
      if cardinality(ids) > 0 then
        pending := pending || private.gdpr_take_audio(ids, false);
        if not is_dry then
          delete from public.sessions s where s.id = any (ids);
        end if;
        counts := counts || jsonb_build_object('sessions', cardinality(ids));
        left_sessions := left_sessions - cardinality(ids);
      end if;
    end if;

    -- Audio.
    if audio_cutoff is not null then
      select coalesce(array_agg(x.id), '{}') into ids
      from (select s.id from public.sessions s
            where s.company_id = co.id and s.audio_path is not null and s.status <> 'active'
              and s.started_at < audio_cutoff
              and coalesce(s.ended_at, s.started_at) < audio_cutoff
              and (session_cutoff is null
                   or coalesce(s.ended_at, s.started_at) >= session_cutoff)
            order by s.started_at, s.id
            limit left_audio + 1) x;
      if cardinality(ids) > left_audio then
        company_more := true;
        ids := ids[1:left_audio];
      end if;
      if cardinality(ids) > 0 then
        pending := pending || private.gdpr_take_audio(ids, not is_dry);
        counts := counts || jsonb_build_object('audio', cardinality(ids));
        left_audio := left_audio - cardinality(ids);
      end if;
    end if;

    -- Transcripts: anonymized as private.gdpr_anonymize_transcripts does for
    -- gdpr_anonymize_session. A session is done when its transcripts row is anonymized.
    if transcript_cutoff is not null then
      select coalesce(array_agg(x.id), '{}') into ids
      from (select s.id from public.sessions s
            where s.company_id = co.id and s.status <> 'active'
              and s.started_at < transcript_cutoff
              and coalesce(s.ended_at, s.started_at) < transcript_cutoff
              and (session_cutoff is null
                   or coalesce(s.ended_at, s.started_at) >= session_cutoff)
              and not exists (select 1 from public.transcripts t
                              where t.session_id = s.id and t.is_anonymized)
            order by s.started_at, s.id
            limit left_transcripts + 1) x;
      if cardinality(ids) > left_transcripts then
        company_more := true;
        ids := ids[1:left_transcripts];
      end if;
      if cardinality(ids) > 0 then
        if is_dry then
          select count(*) into n from public.transcript_segments g
          where g.session_id = any (ids) and (g.text <> '[anonymized]' or g.words is not null);
          changes := jsonb_build_object('transcripts', cardinality(ids), 'segments', n);
        else
          changes := private.gdpr_anonymize_transcripts(ids);
        end if;
        counts := counts || changes;
        left_transcripts := left_transcripts - cardinality(ids);
      end if;
    end if;

    -- Analyses, by their own creation time: the rows are deleted (analytics stay).
    if analysis_cutoff is not null then
      select coalesce(array_agg(x.session_id), '{}') into ids
      from (select a.session_id from public.analysis_results a
            join public.sessions s on s.id = a.session_id
            where a.company_id = co.id and a.created_at < analysis_cutoff
              and (session_cutoff is null
                   or coalesce(s.ended_at, s.started_at) >= session_cutoff)
            group by a.session_id
            order by min(a.created_at), a.session_id
            limit left_analyses + 1) x;
      if cardinality(ids) > left_analyses then
        company_more := true;
        ids := ids[1:left_analyses];
      end if;
      if cardinality(ids) > 0 then
        if is_dry then
          select count(*) into n from public.analysis_results a
          where a.session_id = any (ids) and a.created_at < analysis_cutoff;
        else
          -- What the analytics show survives the analyses it came from.
          update public.session_analytics sa
          set retained = jsonb_strip_nulls(jsonb_build_object(
                'overall_score', sa.overall_score, 'talk_time_ratio', sa.talk_time_ratio,
                'filler_words_count', sa.filler_words_count,
                'speaking_pace_wpm', sa.speaking_pace_wpm,
                'question_count', sa.question_count, 'sentiment_score', sa.sentiment_score,
                'skill_scores', sa.skill_scores))
          where sa.session_id = any (ids);
          delete from public.analysis_results a
          where a.session_id = any (ids) and a.created_at < analysis_cutoff;
          get diagnostics n = row_count;
        end if;
        counts := counts || jsonb_build_object('analyses', n);
        left_analyses := left_analyses - cardinality(ids);
      end if;
    end if;

    categories := private.gdpr_categories(counts);
    if jsonb_array_length(categories) = 0 and not company_more then
      continue;
    end if;

    request_id := null;
    request_status := null;
    if not is_dry and jsonb_array_length(categories) > 0 then
      stores := '["database"]'::jsonb
                || case when jsonb_array_length(pending) > 0 then '["storage"]'::jsonb
                        else '[]'::jsonb end;
      request_id := private.gdpr_open_request(
        'retention', null, co.id,
        jsonb_build_object(
          'pending_storage', pending,
          'retention_days', jsonb_build_object(
            'sessions', co.session_retention_days, 'audio', co.audio_retention_days,
            'transcripts', co.transcript_retention_days,
            'analyses', co.analysis_retention_days))
      );
      request_status := private.gdpr_settle_request(
        request_id,
        jsonb_build_object('counts', counts, 'categories', categories, 'stores', stores,
                           'more', company_more)
      );
      perform private.gdpr_audit(
        'gdpr.retention', 'company', co.id, co.id, null,
        jsonb_build_object('request_id', request_id, 'categories', categories,
                           'counts', counts, 'stores', stores, 'more', company_more,
                           'pending_storage_count', jsonb_array_length(pending))
      );
    end if;
    exception when others then
      if gdpr_apply_retention.company_id is not null then
        raise;
      end if;
      get stacked diagnostics failed_state = returned_sqlstate, failed_message = message_text;
      left_sessions := saved_sessions;
      left_audio := saved_audio;
      left_transcripts := saved_transcripts;
      left_analyses := saved_analyses;
      failures := failures || jsonb_build_array(jsonb_build_object(
        'company_id', co.id, 'sqlstate', failed_state, 'message', left(failed_message, 500)));
      continue;
    end;
    -- The company's work is done: count it.
    any_more := any_more or company_more;
    select jsonb_object_agg(t.key, (t.value)::bigint + coalesce((counts ->> t.key)::bigint, 0))
    into totals
    from jsonb_each(totals) t;
    if request_id is not null then
      request_ids := request_ids || to_jsonb(request_id);
    end if;
    all_pending := all_pending || private.gdpr_tag_pending(pending, request_id);
    companies := companies || jsonb_build_array(jsonb_build_object(
      'company_id', co.id, 'counts', counts, 'categories', categories, 'more', company_more,
      'request_id', request_id, 'status', request_status));
  end loop;

  return jsonb_build_object(
    'dry_run', is_dry,
    'batch_size', budget,
    'more', any_more,
    'counts', totals,
    'companies', companies,
    'request_ids', request_ids,
    'pending_storage', all_pending,
    'failures', failures
  );
end;
$$;
revoke all on function private.gdpr_apply_retention(uuid, boolean, integer)
  from public, anon;
grant execute on function private.gdpr_apply_retention(uuid, boolean, integer)
  to authenticated, service_role;

-- Bring the value policy of 20261128000100 to any column this migration added.
select private.apply_value_policy();
