/**
 * voicesessions — an append finds its already stored seqs once, not twice
 * =======================================================================
 * append_transcript_segments (20261128001000) skipped a segment whose seq the session
 * already holds twice over: a scalar subquery probed the unique index (session_id, seq) for
 * every row of the batch, and then ON CONFLICT ... DO NOTHING made the same probe again
 * before writing the row (INSERT ... ON CONFLICT checks the arbiter index before each
 * insertion, and skips a conflict without writing anything: no heap tuple, no trigger, no
 * foreign-key check). The subquery is gone; ON CONFLICT alone decides, with the same
 * outcome in every case: the first delivery wins, a seq repeated within the batch is stored
 * once (DISTINCT ON), a replay after the session ended is a no-op (the statement trigger's
 * transition table holds only the rows written), concurrent overlapping batches store each
 * segment once (the unique index arbitrates, rows are written in seq order).
 *
 * The one visible difference: a skipped duplicate now draws a value of the id sequence
 * (column defaults are computed before the conflict check), so ids have gaps after replays;
 * ids were never promised to be dense (rolled-back appends left gaps already).
 *
 * Measured (server CPU per call, benchmarks/append_cost.py, 1,000 stored): a batch of one
 * segment 0.49 -> 0.44 ms, a batch of 50 1.83 -> 1.73 ms; on a transcript_segments
 * partitioned by session (20261128001400) the subquery was a per-row probe through the
 * partitioned table's generic plan, 0.97 -> 0.53 ms for one segment.
 */

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
  -- (see below), and the one pass that vouches for a valid batch (20261128000800); a batch it
  -- does not vouch for is judged by private.transcript_segments_problem, before anything about
  -- the session is answered.
  select case when pg_catalog.octet_length(append_transcript_segments.segments::text) <= 8388608
              then coalesce((
                select pg_catalog.bool_and(
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
                end)
              from pg_catalog.jsonb_array_elements(append_transcript_segments.segments) e(v)
              ), true)
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
