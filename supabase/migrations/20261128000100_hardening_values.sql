/**
 * voicesessions — what values the database accepts
 * ================================================
 * The database accepts only values every reader can read back and every function can
 * process. One policy, enforced here for every writer (PostgREST, the SDK, direct SQL) and
 * mirrored by the SDK (src/voicesessions/_values.py) so that it fails before any I/O:
 *
 * Numbers
 *   - numeric / real columns: finite only (NaN sorts above every number in PostgreSQL, so a
 *     `>= 0` check alone lets it through; NaN and ±Infinity are refused by a CHECK on every
 *     such column of the public tables, `<table>_<column>_finite`);
 *   - JSON numbers, anywhere in any stored document: 0, or a magnitude between 1e-20 and
 *     9007199254740991 (2^53 - 1, the largest integer a double holds exactly). `1e5000`
 *     (14 bytes) would print back as a 5,001-digit integer that Python's JSON parser
 *     refuses; `1e-50` underflows `real`. JSON has no NaN or Infinity.
 *   - integers inside analysis results (filler_words_count, question_count) are written
 *     as integers: 3, not 3.0 (refused up front, 22023, rather than failing the rebuild).
 *
 * JSON documents (every jsonb column of the public tables, CHECK
 * `<table>_<column>_json_policy`, through private.jsonb_problem)
 *   - nested at most 32 levels (containers inside containers; the GDPR functions recurse);
 *   - at most these bytes as PostgreSQL prints them (octet_length(doc::text)):
 *       sessions.metadata, sessions.audio_quality, sessions.analytics_summary,
 *       session_participants.persona: 65,536 (64 KiB)
 *       transcript_segments.words: 65,536 per segment (and the shape below)
 *       analysis_results.results, session_analytics.skill_scores: 1,000,000
 *       transcripts.structured_content, audit_log.details, gdpr_requests.details (written by
 *       the database's own functions): depth and numbers only.
 *   - segment `words`: null or an array of flat objects (keys of 1..64 characters, values
 *     string, number, boolean or null); `word` a string, `start_ms`/`end_ms` integers
 *     0..2147483647, `confidence` null or a number 0..1 when present.
 *
 * Per call
 *   append_transcript_segments: at most 1,000 segments and 8,388,608 bytes (8 MiB) of JSON;
 *   record_analysis: results of at most 1,000,000 bytes.
 *
 * Timestamps and dates (every timestamptz / date column of the public tables, CHECK
 * `<table>_<column>_in_window`): from 2000-01-01 (inclusive) to 2100-01-01 (exclusive), UTC.
 * No -infinity, no BC dates, no year 20000. Clock-relative bounds (an end not far in the
 * future) are the lifecycle triggers' business.
 *
 * Text: PostgreSQL itself refuses NUL characters and invalid UTF-8 (lone surrogates) in
 * text and jsonb; the length caps are the columns' own CHECKs.
 *
 * Errors: the validating functions raise 22023 with a message naming the field (and the
 * segment index) and the limit; a direct table write that breaks a CHECK gets 23514 naming
 * the constraint. Both are InvalidInputError in the SDK.
 *
 * Existing rows: the constraints are added NOT VALID and then validated; a table holding
 * rows that break one keeps it NOT VALID (new and updated rows are still checked) and the
 * migration says so with a WARNING, instead of failing or rewriting anybody's data.
 *
 * Later migrations that add tables or columns end with `select private.apply_value_policy();`
 * (idempotent), which puts the number, time and JSON constraints on whatever lacks them.
 */

-- The JSON policy -------------------------------------------------------------------------

/**
 * What is wrong with a JSON document under the policy above, or null: nested deeper than
 * `max_depth` containers, a number outside the accepted range, or more than `max_bytes`
 * bytes as printed (no size limit when `max_bytes` is null). The message starts with a verb
 * ("is nested ...", "holds ...", "has ...") so that callers prefix the field's name.
 * Depth is checked first and only down to `max_depth` levels, so an absurdly deep document
 * costs no more than a legal one; numbers before size, so a document that would print as
 * megabytes of digits is never printed.
 */
create or replace function private.jsonb_problem(doc jsonb, max_depth integer, max_bytes integer)
returns text
language plpgsql
immutable
parallel safe
set search_path = ''
as $$
declare
  bad jsonb;
  size integer;
begin
  if jsonb_problem.doc is null then
    return null;
  end if;
  if pg_catalog.jsonb_path_exists(jsonb_problem.doc, pg_catalog.format(
       'strict $.**{%s} ? (@.type() == "object" || @.type() == "array")',
       jsonb_problem.max_depth)::jsonpath) then
    return pg_catalog.format('is nested more than %s levels deep', jsonb_problem.max_depth);
  end if;
  bad := pg_catalog.jsonb_path_query_first(jsonb_problem.doc,
    'strict $.** ? (@.type() == "number" && (@ > 9007199254740991 || @ < -9007199254740991
                    || (@ != 0 && @ > -1e-20 && @ < 1e-20)))');
  if bad is not null then
    return pg_catalog.format(
      'holds the number %s, out of range (numbers are 0 or between 1e-20 and'
      ' 9007199254740991 in magnitude)',
      case when pg_catalog.octet_length(bad::text) > 40
           then pg_catalog.left(bad::text, 20) || '...(' || pg_catalog.octet_length(bad::text)
                || ' digits)'
           else bad::text end);
  end if;
  if jsonb_problem.max_bytes is not null then
    size := pg_catalog.octet_length(jsonb_problem.doc::text);
    if size > jsonb_problem.max_bytes then
      return pg_catalog.format('has %s bytes of JSON, at most %s are allowed', size,
                               jsonb_problem.max_bytes);
    end if;
  end if;
  return null;
end;
$$;
revoke all on function private.jsonb_problem(jsonb, integer, integer) from public, anon;
grant execute on function private.jsonb_problem(jsonb, integer, integer)
  to authenticated, service_role;

/**
 * What is wrong with a segment's `words` (see the header), as 'words[<i>]...: <problem>',
 * or null.
 */
create or replace function private.transcript_words_problem(words jsonb)
returns text
language plpgsql
immutable
parallel safe
set search_path = ''
as $$
declare
  problem text;
begin
  if transcript_words_problem.words is null
     or pg_catalog.jsonb_typeof(transcript_words_problem.words) = 'null' then
    return null;
  end if;
  if pg_catalog.jsonb_typeof(transcript_words_problem.words) <> 'array' then
    return pg_catalog.format('words must be null or an array of word objects, not %s',
                             pg_catalog.jsonb_typeof(transcript_words_problem.words));
  end if;
  problem := private.jsonb_problem(transcript_words_problem.words, 2, 65536);
  if problem is not null then
    return 'words ' || problem;
  end if;
  select pg_catalog.format('words[%s]%s', e.ord - 1, p.problem) into problem
  from pg_catalog.jsonb_array_elements(transcript_words_problem.words)
       with ordinality e(word, ord)
  cross join lateral (select case
    when pg_catalog.jsonb_typeof(e.word) <> 'object' then
      pg_catalog.format(' must be an object, not %s', pg_catalog.jsonb_typeof(e.word))
    else (
      select pg_catalog.format('.%s %s', pg_catalog.left(f.key, 80), f.problem)
      from (
        select k.key, case
          when pg_catalog.char_length(k.key) not between 1 and 64 then
            'is not a key of 1 to 64 characters'
          when pg_catalog.jsonb_typeof(k.value) in ('object', 'array') then
            'must be a string, number, boolean or null, not ' || pg_catalog.jsonb_typeof(k.value)
          when k.key = 'word' and pg_catalog.jsonb_typeof(k.value) <> 'string' then
            'must be a string, not ' || pg_catalog.left(k.value::text, 80)
          when k.key in ('start_ms', 'end_ms')
               and (pg_catalog.jsonb_typeof(k.value) <> 'number'
                    or (k.value)::numeric not between 0 and 2147483647
                    or (k.value #>> '{}') !~ '^[0-9]+$') then
            'must be an integer between 0 and 2147483647, not ' || pg_catalog.left(k.value::text, 80)
          when k.key = 'confidence' and pg_catalog.jsonb_typeof(k.value) <> 'null'
               and (pg_catalog.jsonb_typeof(k.value) <> 'number'
                    or (k.value)::numeric not between 0 and 1) then
            'must be null or a number between 0 and 1, not ' || pg_catalog.left(k.value::text, 80)
        end as problem
        from pg_catalog.jsonb_each(e.word) k
      ) f
      where f.problem is not null
      order by f.key
      limit 1)
  end as problem) p
  where p.problem is not null
  order by e.ord
  limit 1;
  return problem;
end;
$$;
revoke all on function private.transcript_words_problem(jsonb) from public, anon;
grant execute on function private.transcript_words_problem(jsonb) to authenticated, service_role;

-- Batches of segments ---------------------------------------------------------------------

/**
 * What is wrong with a batch of `append_transcript_segments.segments`: the batch as a whole
 * (more than 8 MiB of JSON), or the first element that is not a valid final segment, as
 * 'segments[<index>]: <problem>', or null if all are valid. A valid segment is
 *   {seq, speaker, text, start_ms, end_ms, confidence?, words?, segment_id?}
 * seq, start_ms, end_ms are integers (0 .. 2^31-1, end_ms >= start_ms); speaker is a string
 * of 1..64 characters; text a string of at most 20,000; confidence null, 0 or a number
 * between 1e-20 and 1; words as private.transcript_words_problem accepts; segment_id null or
 * a string of 1..200. Any other key is refused, so a misspelt field is an error instead of
 * silently lost data. Every number obeys the JSON number policy (a confidence of 1e-50 is
 * refused here, naming the segment, instead of underflowing `real` in the insert).
 */
create or replace function private.transcript_segments_problem(segments jsonb)
returns text
language plpgsql
immutable
parallel safe
set search_path = ''
as $$
declare
  problem text;
begin
  if transcript_segments_problem.segments is null then
    return null;
  end if;
  -- Depth 4 (array, segment, words, word) and numbers first: the checks below cast numbers.
  problem := private.jsonb_problem(transcript_segments_problem.segments, 4, null);
  if problem is not null then
    -- Name the segment and, where it is an object, the field.
    return (
      select pg_catalog.format('segments[%s]%s', e.ord - 1, coalesce(
        (select pg_catalog.format('.%s %s', pg_catalog.left(f.key, 80),
                                  private.jsonb_problem(f.value, 2, null))
         from pg_catalog.jsonb_each(
                case when pg_catalog.jsonb_typeof(e.segment) = 'object'
                     then e.segment else '{}'::jsonb end) f
         where private.jsonb_problem(f.value, 2, null) is not null
         order by f.key
         limit 1),
        ': ' || private.jsonb_problem(e.segment, 3, null)))
      from pg_catalog.jsonb_array_elements(
             case when pg_catalog.jsonb_typeof(transcript_segments_problem.segments) = 'array'
                  then transcript_segments_problem.segments else '[]'::jsonb end
           ) with ordinality e(segment, ord)
      where private.jsonb_problem(e.segment, 3, null) is not null
      order by e.ord
      limit 1
    );
  end if;
  if pg_catalog.octet_length(transcript_segments_problem.segments::text) > 8388608 then
    return pg_catalog.format(
      'segments hold %s bytes of JSON, at most 8388608 (8 MiB) are allowed per call',
      pg_catalog.octet_length(transcript_segments_problem.segments::text));
  end if;
  return (
  select pg_catalog.format('segments[%s]: %s', e.ord - 1, p.problem)
  from pg_catalog.jsonb_array_elements(transcript_segments_problem.segments)
       with ordinality e(segment, ord)
  cross join lateral (select case
    when segment is null or pg_catalog.jsonb_typeof(segment) <> 'object' then
      pg_catalog.format('must be a JSON object, not %s',
                        coalesce(pg_catalog.jsonb_typeof(segment), 'null'))
    when not segment ?& array['seq', 'speaker', 'text', 'start_ms', 'end_ms'] then
      pg_catalog.format('is missing %s', pg_catalog.array_to_string(array(
        select k from pg_catalog.unnest(array['seq', 'speaker', 'text', 'start_ms', 'end_ms']) k
        where not segment ? k), ', '))
    when segment - array['seq', 'speaker', 'text', 'start_ms', 'end_ms', 'confidence', 'words',
                         'segment_id'] <> '{}'::jsonb then
      pg_catalog.format('has unknown keys: %s (allowed: seq, speaker, text, start_ms, end_ms,'
             ' confidence, words, segment_id)', pg_catalog.array_to_string(array(
        select k from pg_catalog.jsonb_object_keys(segment) k
        where k <> all (array['seq', 'speaker', 'text', 'start_ms', 'end_ms', 'confidence',
                              'words', 'segment_id'])
        order by k), ', '))
    when pg_catalog.jsonb_typeof(segment -> 'seq') <> 'number'
         or (segment ->> 'seq')::numeric not between 0 and 2147483647
         or (segment ->> 'seq')::numeric <> pg_catalog.trunc((segment ->> 'seq')::numeric) then
      pg_catalog.format('seq must be an integer between 0 and 2147483647, not %s',
                        pg_catalog.left((segment -> 'seq')::text, 80))
    when pg_catalog.jsonb_typeof(segment -> 'speaker') <> 'string'
         or pg_catalog.char_length(segment ->> 'speaker') not between 1 and 64 then
      pg_catalog.format('speaker must be a string of 1 to 64 characters, not %s',
             pg_catalog.left((segment -> 'speaker')::text, 80))
    when pg_catalog.jsonb_typeof(segment -> 'text') <> 'string' then
      pg_catalog.format('text must be a string, not %s', pg_catalog.jsonb_typeof(segment -> 'text'))
    when pg_catalog.char_length(segment ->> 'text') > 20000 then
      pg_catalog.format('text has %s characters, at most 20000 are allowed',
             pg_catalog.char_length(segment ->> 'text'))
    when pg_catalog.jsonb_typeof(segment -> 'start_ms') <> 'number'
         or (segment ->> 'start_ms')::numeric not between 0 and 2147483647
         or (segment ->> 'start_ms')::numeric
            <> pg_catalog.trunc((segment ->> 'start_ms')::numeric) then
      pg_catalog.format('start_ms must be an integer between 0 and 2147483647, not %s',
             pg_catalog.left((segment -> 'start_ms')::text, 80))
    when pg_catalog.jsonb_typeof(segment -> 'end_ms') <> 'number'
         or (segment ->> 'end_ms')::numeric not between 0 and 2147483647
         or (segment ->> 'end_ms')::numeric
            <> pg_catalog.trunc((segment ->> 'end_ms')::numeric) then
      pg_catalog.format('end_ms must be an integer between 0 and 2147483647, not %s',
             pg_catalog.left((segment -> 'end_ms')::text, 80))
    when (segment ->> 'end_ms')::numeric < (segment ->> 'start_ms')::numeric then
      pg_catalog.format('end_ms (%s) is before start_ms (%s)', segment -> 'end_ms',
                        segment -> 'start_ms')
    when pg_catalog.jsonb_typeof(segment -> 'confidence') not in ('null', 'number') then
      pg_catalog.format('confidence must be null or a number between 0 and 1, not %s',
             pg_catalog.left((segment -> 'confidence')::text, 80))
    when (segment ->> 'confidence')::numeric not between 0 and 1 then
      pg_catalog.format('confidence must be null or a number between 0 and 1, not %s',
             segment -> 'confidence')
    when private.transcript_words_problem(segment -> 'words') is not null then
      private.transcript_words_problem(segment -> 'words')
    when pg_catalog.jsonb_typeof(segment -> 'segment_id') not in ('null', 'string')
         or pg_catalog.char_length(segment ->> 'segment_id') not between 1 and 200 then
      pg_catalog.format('segment_id must be null or a string of 1 to 200 characters, not %s',
             pg_catalog.left((segment -> 'segment_id')::text, 80))
  end as problem) p
  where p.problem is not null
  order by e.ord
  limit 1
  );
end;
$$;
revoke all on function private.transcript_segments_problem(jsonb) from public, anon;
grant execute on function private.transcript_segments_problem(jsonb)
  to authenticated, service_role;

-- Analysis results ------------------------------------------------------------------------

/**
 * What is wrong with the `results` of an analysis of type `analysis_type`, or null: not an
 * object, the JSON policy (depth 32, numbers, 1,000,000 bytes), a conversation_metrics
 * analysis carrying scores, or a known key of the wrong type or range. Integer keys
 * (filler_words_count, question_count) must be written as integers (3, not 3.0 or 3e0).
 */
create or replace function private.analysis_results_problem(analysis_type text, results jsonb)
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
  if r is null or pg_catalog.jsonb_typeof(r) <> 'object' then
    return pg_catalog.format('results must be a JSON object, not %s',
                             coalesce(pg_catalog.jsonb_typeof(r), 'null'));
  end if;
  bad := private.jsonb_problem(r, 32, 1000000);
  if bad is not null then
    return 'results ' || bad;
  end if;
  if analysis_results_problem.analysis_type = 'conversation_metrics' then
    select pg_catalog.string_agg(k, ', ' order by k) into bad
    from pg_catalog.unnest(array['overall_score', 'skill_scores', 'sentiment_score']) k
    where r ? k;
    if bad is not null then
      return pg_catalog.format(
        'a conversation_metrics analysis carries measured numbers only, not %s', bad);
    end if;
  end if;
  -- Each known key: null, or a value of its type and range.
  select pg_catalog.format('results.%s must be %s, not %s', c.key, c.expected,
                           pg_catalog.left((r -> c.key)::text, 80))
  into bad
  from (values
    ('overall_score', 'a number between 0 and 100', 0::numeric, 100::numeric, false),
    ('talk_time_ratio', 'a number between 0 and 1', 0, 1, false),
    ('filler_words_count', 'an integer >= 0 (written 3, not 3.0)', 0, 2147483647, true),
    ('speaking_pace_wpm', 'a number between 0 and 1000', 0, 1000, false),
    ('question_count', 'an integer >= 0 (written 3, not 3.0)', 0, 2147483647, true),
    ('sentiment_score', 'a number between -1 and 1', -1, 1, false)
  ) as c(key, expected, lo, hi, whole)
  where r ? c.key
    and pg_catalog.jsonb_typeof(r -> c.key) <> 'null'
    and (pg_catalog.jsonb_typeof(r -> c.key) <> 'number'
         or (r ->> c.key)::numeric not between c.lo and c.hi
         or (c.whole and (r ->> c.key) !~ '^[0-9]+$'))
  order by c.key
  limit 1;
  if bad is not null then
    return bad;
  end if;
  if r ? 'skill_scores' and pg_catalog.jsonb_typeof(r -> 'skill_scores') <> 'null' then
    if pg_catalog.jsonb_typeof(r -> 'skill_scores') <> 'object' then
      return pg_catalog.format('results.skill_scores must be an object {skill: score}, not %s',
                               pg_catalog.jsonb_typeof(r -> 'skill_scores'));
    end if;
    select pg_catalog.format('results.skill_scores.%s must be %s', pg_catalog.left(e.key, 80),
                  case when e.key !~ '^[a-z][a-z0-9_]{0,63}$'
                       then 'named like ^[a-z][a-z0-9_]{0,63}$'
                       else 'null or a number between 0 and 100, not '
                            || pg_catalog.left(e.value::text, 80) end)
    into bad
    from pg_catalog.jsonb_each(r -> 'skill_scores') e
    where e.key !~ '^[a-z][a-z0-9_]{0,63}$'
       or (pg_catalog.jsonb_typeof(e.value) <> 'null'
           and (pg_catalog.jsonb_typeof(e.value) <> 'number'
                or (e.value)::numeric not between 0 and 100))
    order by e.key
    limit 1;
    if bad is not null then
      return bad;
    end if;
  end if;
  return null;
end;
$$;
revoke all on function private.analysis_results_problem(text, jsonb) from public, anon;
grant execute on function private.analysis_results_problem(text, jsonb)
  to authenticated, service_role;

-- Constraints -----------------------------------------------------------------------------

/**
 * Validate a constraint added NOT VALID; if existing rows break it, leave it NOT VALID (it
 * still checks every new or updated row) and say so, rather than failing the migration.
 */
create or replace function private.validate_or_warn(tbl regclass, constraint_name text)
returns void
language plpgsql
set search_path = ''
as $$
begin
  execute pg_catalog.format('alter table %s validate constraint %I', tbl, constraint_name);
exception when check_violation then
  raise warning 'existing rows of % break %: the constraint checks new and updated rows only'
    ' until they are fixed (then: alter table % validate constraint %)',
    tbl, constraint_name, tbl, constraint_name;
end;
$$;
revoke all on function private.validate_or_warn(regclass, text) from public, anon,
  authenticated, service_role;

/**
 * Put the value policy on every column of the public tables that lacks it, idempotently
 * (constraints are found by name): `<table>_<column>_json_policy` on jsonb columns (the caps
 * of the header; a jsonb column not listed there gets depth 32 and 64 KiB),
 * `<table>_<column>_finite` on numeric/real/double precision columns,
 * `<table>_<column>_in_window` on timestamptz/date columns. Each is added NOT VALID, then
 * validated where existing rows allow (private.validate_or_warn). A later migration that
 * adds tables or columns ends with `select private.apply_value_policy();`.
 */
create or replace function private.apply_value_policy()
returns void
language plpgsql
set search_path = ''
as $$
declare
  c record;
  name text;
begin
  for c in
    select t.relname as tbl, a.attname as col,
           pg_catalog.format_type(a.atttypid, null) as type_name,
           coalesce(x.depth, 32) as depth,
           case when x.tbl is null then 65536 else x.max_bytes end as max_bytes,
           coalesce(x.words, false) as words
    from pg_catalog.pg_attribute a
    join pg_catalog.pg_class t on t.oid = a.attrelid
    left join (values
      ('sessions', 'metadata', 32, 65536, false),
      ('sessions', 'audio_quality', 32, 65536, false),
      ('sessions', 'analytics_summary', 32, 65536, false),
      ('session_participants', 'persona', 32, 65536, false),
      ('transcript_segments', 'words', 2, 65536, true),
      ('analysis_results', 'results', 32, 1000000, false),
      ('session_analytics', 'skill_scores', 32, 1000000, false),
      ('transcripts', 'structured_content', 32, null, false),
      ('audit_log', 'details', 32, null, false),
      ('gdpr_requests', 'details', 32, null, false)
    ) as x(tbl, col, depth, max_bytes, words) on x.tbl = t.relname and x.col = a.attname
    where t.relnamespace = 'public'::regnamespace and t.relkind in ('r', 'p')
      and not t.relispartition and a.attnum > 0 and not a.attisdropped
      and a.atttypid in ('jsonb'::regtype, 'numeric'::regtype, 'real'::regtype,
                         'double precision'::regtype, 'timestamp with time zone'::regtype,
                         'date'::regtype)
    order by 1, 2
  loop
    name := c.tbl || '_' || c.col || case
      when c.type_name = 'jsonb' then '_json_policy'
      when c.type_name in ('numeric', 'real', 'double precision') then '_finite'
      else '_in_window' end;
    continue when exists (
      select 1 from pg_catalog.pg_constraint k
      where k.conname = name
        and k.conrelid = pg_catalog.format('public.%I', c.tbl)::regclass);
    if c.words then
      execute pg_catalog.format(
        'alter table public.%I add constraint %I check'
        ' (private.transcript_words_problem(%I) is null) not valid', c.tbl, name, c.col);
    elsif c.type_name = 'jsonb' then
      execute pg_catalog.format(
        'alter table public.%I add constraint %I check'
        ' (private.jsonb_problem(%I, %s, %s) is null) not valid',
        c.tbl, name, c.col, c.depth, coalesce(c.max_bytes::text, 'null'));
    elsif c.type_name in ('numeric', 'real', 'double precision') then
      execute pg_catalog.format(
        'alter table public.%I add constraint %I check'
        ' (%I not in (''NaN'', ''Infinity'', ''-Infinity'')) not valid', c.tbl, name, c.col);
    elsif c.type_name = 'date' then
      execute pg_catalog.format(
        'alter table public.%I add constraint %I check'
        ' (%I >= date ''2000-01-01'' and %I < date ''2100-01-01'') not valid',
        c.tbl, name, c.col, c.col);
    else
      execute pg_catalog.format(
        'alter table public.%I add constraint %I check'
        ' (%I >= timestamptz ''2000-01-01 00:00:00+00'''
        ' and %I < timestamptz ''2100-01-01 00:00:00+00'') not valid',
        c.tbl, name, c.col, c.col);
    end if;
    perform private.validate_or_warn(pg_catalog.format('public.%I', c.tbl)::regclass, name);
  end loop;
end;
$$;
revoke all on function private.apply_value_policy() from public, anon, authenticated,
  service_role;

select private.apply_value_policy();

-- Clear messages for direct writes --------------------------------------------------------

/**
 * Trigger: the value policy of the columns named in the trigger's arguments, raised as 22023
 * naming the table, the column and the limit (the CHECK constraints above stay the
 * guarantee; this gives a direct PostgREST write the message the functions give). Arguments:
 * 'json:<column>:<max depth>:<max bytes>' and 'time:<column>'.
 */
create or replace function private.value_policy_check()
returns trigger
language plpgsql
set search_path = ''
as $$
declare
  arg text;
  part text[];
  doc jsonb;
  moment timestamptz;
  problem text;
begin
  foreach arg in array tg_argv loop
    part := pg_catalog.string_to_array(arg, ':');
    if part[1] = 'json' then
      execute pg_catalog.format('select ($1).%I', part[2]) into doc using new;
      problem := private.jsonb_problem(doc, part[3]::integer, part[4]::integer);
      if problem is not null then
        raise exception '%.% %', tg_table_name, part[2], problem using errcode = '22023';
      end if;
    else
      execute pg_catalog.format('select ($1).%I', part[2]) into moment using new;
      if moment < timestamptz '2000-01-01 00:00:00+00'
         or moment >= timestamptz '2100-01-01 00:00:00+00' then
        raise exception '%.% must be from 2000-01-01 to before 2100-01-01 (UTC), not %',
          tg_table_name, part[2], moment using errcode = '22023';
      end if;
    end if;
  end loop;
  return new;
end;
$$;
revoke all on function private.value_policy_check() from public, anon;
grant execute on function private.value_policy_check() to authenticated, service_role;

drop trigger if exists sessions_value_policy on public.sessions;
create trigger sessions_value_policy
  before insert or update on public.sessions
  for each row execute function private.value_policy_check(
    'time:started_at', 'time:ended_at', 'json:metadata:32:65536',
    'json:audio_quality:32:65536', 'json:analytics_summary:32:65536');

drop trigger if exists session_participants_value_policy on public.session_participants;
create trigger session_participants_value_policy
  before insert or update on public.session_participants
  for each row execute function private.value_policy_check('json:persona:32:65536');
