/**
 * voicesessions — a lighter append: the same rules, fewer instructions per call
 * ==============================================================================
 * Three changes to what an append of live transcript segments runs, each measured in
 * instructions per call with benchmarks/append_work.py (callgrind on a single-user backend:
 * the same whatever the machine's load; 10,000 segments stored):
 *
 * 1. private.transcript_words_problem is STRICT. It answers null for a null argument, and
 *    the CHECK transcript_segments_words_json_policy runs it on every segment written, most
 *    of which carry no words: a STRICT function is not called at all for a null argument
 *    (no PL/pgSQL call, no search_path set and reset per row). The same answers wherever it
 *    is used.
 * 2. append_transcript_segments' validation pass asks whether any segment fails (NOT
 *    EXISTS) instead of folding every segment into bool_and: no aggregate to build at each
 *    execution. The same verdicts: a segment the pass cannot vouch for (`is not true`) sends
 *    the batch to private.transcript_segments_problem as before.
 * 3. private.transcript_segments_check_sessions answers the owner adding to their own
 *    session without calling private.sees_session, whose first test that is.
 *
 * Together, per call: a batch of 1, 1,874 k -> 1,806 k instructions (the code the
 * performance issue measured: 2,070 k); a batch of 50, 17,891 k -> 17,294 k (23,445 k).
 */

alter function private.transcript_words_problem(jsonb) strict;

create or replace function public.append_transcript_segments(session_id uuid, segments jsonb)
returns jsonb
language plpgsql
security invoker
set search_path = ''
as $$
declare
  total integer;
  valid boolean;
  problem text;
  inserted integer;
  owner uuid[];
  owner_id uuid;
  owner_company uuid;
begin
  if append_transcript_segments.session_id is null then
    raise exception 'session_id is required' using errcode = '22023';
  end if;
  if append_transcript_segments.segments is null
     or jsonb_typeof(append_transcript_segments.segments) <> 'array' then
    raise exception 'segments must be a JSON array of segment objects, not %',
      coalesce(jsonb_typeof(append_transcript_segments.segments), 'null')
      using errcode = '22023';
  end if;
  total := jsonb_array_length(append_transcript_segments.segments);
  if total > 1000 then
    raise exception 'a batch holds at most 1000 segments, not %', total
      using errcode = '22023',
            hint = 'Split the segments into several calls.';
  end if;

  -- In one statement (one executor start fewer per call): the session, locked FOR KEY SHARE
  -- (see below), and the one pass that vouches for a valid batch (20261128000800): no segment
  -- it cannot vouch for (NOT EXISTS: no aggregate state to build, and the scan stops at the
  -- first such segment); a batch it does not vouch for is judged by
  -- private.transcript_segments_problem, before anything about the session is answered.
  select case when pg_catalog.octet_length(append_transcript_segments.segments::text) <= 8388608
              then not exists (
                select from pg_catalog.jsonb_array_elements(append_transcript_segments.segments) e(v)
                where (
                case when pg_catalog.jsonb_typeof(e.v) <> 'object' then false
                else
                  e.v ?& '{seq,speaker,text,start_ms,end_ms}'::text[]
                  and (e.v - '{seq,speaker,text,start_ms,end_ms,confidence,words,segment_id}'::text[])
                      = '{}'::jsonb
                  and case when pg_catalog.jsonb_typeof(e.v -> 'seq') = 'number'
                            and pg_catalog.jsonb_typeof(e.v -> 'start_ms') = 'number'
                            and pg_catalog.jsonb_typeof(e.v -> 'end_ms') = 'number'
                           then (e.v -> 'seq')::numeric between 0 and 2147483647
                                and (e.v -> 'seq')::numeric = pg_catalog.trunc((e.v -> 'seq')::numeric)
                                and (e.v -> 'start_ms')::numeric between 0 and 2147483647
                                and (e.v -> 'start_ms')::numeric
                                    = pg_catalog.trunc((e.v -> 'start_ms')::numeric)
                                and (e.v -> 'end_ms')::numeric between 0 and 2147483647
                                and (e.v -> 'end_ms')::numeric
                                    = pg_catalog.trunc((e.v -> 'end_ms')::numeric)
                                and (e.v -> 'end_ms')::numeric >= (e.v -> 'start_ms')::numeric
                           else false end
                  and pg_catalog.jsonb_typeof(e.v -> 'speaker') = 'string'
                  and pg_catalog.char_length(e.v ->> 'speaker') between 1 and 64
                  and pg_catalog.jsonb_typeof(e.v -> 'text') = 'string'
                  and pg_catalog.char_length(e.v ->> 'text') <= 20000
                  and case pg_catalog.jsonb_typeof(e.v -> 'confidence')
                        when 'number' then (e.v -> 'confidence')::numeric = 0
                                           or (e.v -> 'confidence')::numeric between 1e-20 and 1
                        when 'null' then true
                        else e.v -> 'confidence' is null end
                  and case pg_catalog.jsonb_typeof(e.v -> 'words')
                        when 'array' then private.transcript_words_problem(e.v -> 'words') is null
                        when 'null' then true
                        else e.v -> 'words' is null end
                  and case pg_catalog.jsonb_typeof(e.v -> 'segment_id')
                        when 'string' then pg_catalog.char_length(e.v ->> 'segment_id') between 1 and 200
                        when 'null' then true
                        else e.v -> 'segment_id' is null end
                end) is not true
              )
              else false end,
         (select array[s.profile_id, s.company_id] from public.sessions s
          where s.id = append_transcript_segments.session_id
          for key share)
  into valid, owner;
  if not valid then
    problem := private.transcript_segments_problem(append_transcript_segments.segments);
    if problem is not null then
      raise exception '%', problem using errcode = '22023';
    end if;
  end if;

  -- May the caller write to this session? FOR KEY SHARE (above) passes RLS only where the
  -- caller may update the session (its owner, service_role); it is the lock the foreign key
  -- takes for each inserted segment anyway, and blocks nothing but deleting the session.
  owner_id := owner[1];
  owner_company := owner[2];
  if owner is null then
    if exists (select 1 from public.sessions s where s.id = append_transcript_segments.session_id)
    then
      raise exception 'only the owner of session % can add segments to it',
        append_transcript_segments.session_id
        using errcode = '42501';
    end if;
    if (select private.is_end_user()) then
      raise exception 'session % does not exist or is not yours: no segments can be added to it',
        append_transcript_segments.session_id
        using errcode = '42501';
    end if;
    raise exception 'session % not found', append_transcript_segments.session_id
      using errcode = 'P0002';
  end if;

  if total = 0 then
    return jsonb_build_object('inserted', 0, 'duplicates', 0);
  end if;

  insert into public.transcript_segments
    (session_id, profile_id, company_id, seq, speaker, text, start_ms, end_ms, confidence,
     words, segment_id)
  select append_transcript_segments.session_id, owner_id, owner_company, b.seq, b.speaker,
         b.text, b.start_ms, b.end_ms, b.confidence, b.words, b.segment_id
  from (
    select distinct on (r.seq::integer)
      r.seq::integer as seq, r.speaker, r.text, r.start_ms::integer as start_ms,
      r.end_ms::integer as end_ms, r.confidence::real as confidence,
      nullif(r.words, 'null'::jsonb) as words, r.segment_id
    from rows from (
           jsonb_to_recordset(append_transcript_segments.segments)
             as (seq numeric, speaker text, text text, start_ms numeric, end_ms numeric,
                 confidence numeric, words jsonb, segment_id text)
         ) with ordinality as r(seq, speaker, text, start_ms, end_ms, confidence, words,
                                segment_id, ord)
    order by r.seq::integer, r.ord
  ) b
  order by b.seq
  -- The already stored seqs: the unique index's own check before each row is written (one
  -- probe each, whatever the session holds), skipped without error. No conflict target: the
  -- table's unique keys are (session_id, seq) and its primary key (id, session_id), whose id
  -- is always generated, so (session_id, seq) is the only key a row of this INSERT can
  -- conflict on; naming it would make PostgreSQL map it to the partition's index at every
  -- execution on a partitioned table (a catalog scan per index of the partition).
  on conflict do nothing;
  get diagnostics inserted = row_count;

  return jsonb_build_object('inserted', inserted, 'duplicates', total - inserted);
end;
$$;
revoke all on function public.append_transcript_segments(uuid, jsonb) from public, anon;
grant execute on function public.append_transcript_segments(uuid, jsonb)
  to authenticated, service_role;

create or replace function private.transcript_segments_check_sessions()
returns trigger
language plpgsql
security definer
set search_path = ''
as $$
declare
  checked uuid;
  owner_id uuid;
  owner_company uuid;
  current_status public.session_status;
  foreign_owner boolean;
  violated_table text;
  violated_schema text;
begin
  for checked in select distinct a.session_id from added a order by a.session_id loop
    perform pg_catalog.pg_advisory_xact_lock_shared(
      1448299521, pg_catalog.hashtext(checked::text)
    );
    select s.profile_id, s.company_id, s.status,
           exists (select 1 from added a
                   where a.session_id = s.id
                     and (a.profile_id <> s.profile_id or a.company_id <> s.company_id))
    into owner_id, owner_company, current_status, foreign_owner
    from public.sessions s where s.id = checked;
    -- The owner adding to their own session, the common case, is answered here: the first
    -- test private.sees_session makes, without calling it (a nested PL/pgSQL call that sets
    -- its own search_path). Without a caller (auth.uid() null) the comparison is null, not
    -- true: private.sees_session decides, as before.
    if not found
       or not (coalesce(owner_id = auth.uid(), false)
               or private.sees_session(owner_id, owner_company)) then
      -- What the foreign key answers for a missing session (to an end user, whom RLS hides
      -- the key's value from, without it): a session one cannot see looks missing. The
      -- foreign key names the table that holds the row: the partition, where the table is
      -- partitioned.
      select c.relname, n.nspname into violated_table, violated_schema
      from public.transcript_segments t
      join pg_catalog.pg_class c on c.oid = t.tableoid
      join pg_catalog.pg_namespace n on n.oid = c.relnamespace
      where t.session_id = checked
      limit 1;
      raise exception 'insert or update on table "%" violates foreign key constraint "transcript_segments_session_id_fkey"',
        coalesce(violated_table, tg_table_name)
        using errcode = '23503',
              detail = case when private.caller_is_end_user()
                         then 'Key is not present in table "sessions".'
                         else pg_catalog.format(
                           'Key (session_id)=(%s) is not present in table "sessions".', checked)
                       end,
              constraint = 'transcript_segments_session_id_fkey',
              table = coalesce(violated_table, tg_table_name),
              schema = coalesce(violated_schema, tg_table_schema);
    end if;
    if current_status <> 'active' then
      raise exception 'session % is %, live data can only be added to an active session',
        checked, current_status
        using errcode = 'VS002';
    end if;
    if foreign_owner then
      raise exception '%: profile_id and company_id must be those of the session', tg_table_name
        using errcode = '42501',
              hint = 'Omit them: the database copies them from the session.';
    end if;
  end loop;
  return null;
end;
$$;
revoke all on function private.transcript_segments_check_sessions() from public, anon,
  authenticated, service_role;
