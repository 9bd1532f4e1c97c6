/**
 * voicesessions — ingest near the cost of COPY
 * ============================================
 * Storing live transcript segments is the hottest write path: a call produces segments for
 * its whole duration, for every live session at once. This migration keeps every rule of the
 * earlier ones (20261126000900_live_updates.sql, 20261128000100_hardening_values.sql,
 * 20261128000200_hardening_tenancy.sql, 20261128000400_hardening_live.sql) and makes them
 * cheaper to enforce, for every path that writes segments (append_transcript_segments, a
 * direct insert by service_role or through PostgREST, COPY):
 *
 * 1. One row trigger does the per-row work of a segment insert. Before, two row triggers ran
 *    per segment: transcript_segments_hold_session_open (the shared advisory lock) and
 *    transcript_segments_inherit_session_owner, whose visibility test called
 *    private.can_see_session -> private.caller_is_end_user, SQL functions with their own
 *    search_path, which PostgreSQL neither inlines nor caches: they were planned again for
 *    every row (about 90% of a segment's cost, profiled with track_functions). Now
 *    transcript_segments_hold_session_open takes the lock, reads the session (one cached
 *    index lookup) and settles what inherit_session_owner settled, in the same order and
 *    with the same errors: a missing or invisible session 23503, a session that is not
 *    active VS002, owner columns other than the session's 42501, then copies the owner. The
 *    visibility rule itself stays private.can_see_session's: the trigger only answers
 *    "visible" without calling it in the two cases where that function is true by its own
 *    definition (the caller owns the session; the caller is not an API end user), and asks
 *    it otherwise.
 *    transcript_segments_inherit_session_owner stays as the second BEFORE INSERT row trigger
 *    (triggers fire in name order) but only runs when the owner columns are still unset,
 *    which the first trigger never leaves them; the UPDATE rules (session and owner columns
 *    never change) move to transcript_segments_owner_is_fixed, a BEFORE UPDATE row trigger
 *    calling the same private.inherit_session_owner.
 *
 * 2. public.append_transcript_segments(session_id, segments) validates a valid batch in one
 *    pass of plain expressions (the detailed checker only names the problem of a batch that
 *    pass does not vouch for) and reads each element once to insert it.
 *
 * 3. public.append_transcript_segments(session_id, segments, interim), an overload: one call,
 *    one transaction, per chunk of a live stream: it stores the final segments exactly as
 *    the two-argument function does and broadcasts the chunk's `transcript` event(s) from
 *    the database (private.send_session_broadcast: Realtime and the signed NOTIFY), so that
 *    a client sends each segment once instead of once to store it and once more to
 *    broadcast it, in two transactions.
 */

-- 1. Segment inserts ------------------------------------------------------------------------

/**
 * Trigger (BEFORE INSERT, per row, first by name): hold the session open (the shared advisory
 * lock of 20261126000900_live_updates.sql, taken before the status is read) and inherit the
 * session's owner, as private.inherit_session_owner('require_active') does (see the header).
 * Security definer: the session is read whoever inserts (its visibility is checked here).
 */
create or replace function private.transcript_segments_hold_session_open()
returns trigger
language plpgsql
security definer
set search_path = ''
as $$
declare
  owner_id uuid;
  owner_company uuid;
  current_status public.session_status;
  visible boolean;
begin
  perform pg_catalog.pg_advisory_xact_lock_shared(
    1448299521, pg_catalog.hashtext(new.session_id::text)
  );
  select s.profile_id, s.company_id, s.status into owner_id, owner_company, current_status
  from public.sessions s where s.id = new.session_id;
  if found then
    -- private.can_see_session is true when the caller owns the session or is not an API end
    -- user (private.caller_is_end_user); only other callers need the function itself.
    visible := owner_id = auth.uid()
      or not (coalesce(nullif(pg_catalog.current_setting('role', true), ''), 'none')
                in ('anon', 'authenticated')
              or coalesce(auth.role() in ('anon', 'authenticated'), false));
    if not coalesce(visible, false) then
      visible := private.can_see_session(owner_id, owner_company);
    end if;
  end if;
  if not found or not visible then
    raise exception 'session % does not exist', new.session_id using errcode = '23503';
  end if;
  if current_status <> 'active' then
    raise exception 'session % is %, live data can only be added to an active session',
      new.session_id, current_status
      using errcode = 'VS002';
  end if;
  if (new.profile_id is not null and new.profile_id is distinct from owner_id)
     or (new.company_id is not null and new.company_id is distinct from owner_company) then
    raise exception '%: profile_id and company_id must be those of the session', tg_table_name
      using errcode = '42501',
            hint = 'Omit them: the database copies them from the session.';
  end if;
  new.profile_id := owner_id;
  new.company_id := owner_company;
  return new;
end;
$$;
revoke all on function private.transcript_segments_hold_session_open() from public, anon,
  authenticated, service_role;

drop trigger if exists transcript_segments_inherit_session_owner on public.transcript_segments;
-- A safety net only: the trigger above always sets both columns.
create trigger transcript_segments_inherit_session_owner
  before insert on public.transcript_segments
  for each row when (new.profile_id is null or new.company_id is null)
  execute function private.inherit_session_owner('require_active');

drop trigger if exists transcript_segments_owner_is_fixed on public.transcript_segments;
create trigger transcript_segments_owner_is_fixed
  before update on public.transcript_segments
  for each row execute function private.inherit_session_owner('require_active');

-- 2. Appending a batch ---------------------------------------------------------------------

/**
 * public.append_transcript_segments as 20261126000900_live_updates.sql documents it: same
 * arguments, result, errors, idempotence, ordering and locking. Store a batch of final
 * transcript segments of one session: one call per batch (at most 1,000 segments), one
 * INSERT for all of them. `segments` is a JSON array of {seq, speaker, text, start_ms,
 * end_ms, confidence?, words?, segment_id?}; one bad element fails the call with 22023 naming
 * it, and nothing is written. Idempotent on (session_id, seq): a segment whose seq is already
 * stored is skipped, whatever its content (the first delivery wins), also when the same seq
 * appears twice in the batch and after the session has ended. A new seq for a session that is
 * no longer active fails with VS002 and the batch is not written. Rows are inserted in seq
 * order (two overlapping calls cannot deadlock); the known seqs are found with one probe each
 * of the unique index (session_id, seq), so the cost does not depend on how many segments the
 * session holds. Returns {"inserted": n, "duplicates": m}.
 *
 * Who: the session owner (RLS on transcript_segments) and service_role; any other API user
 * gets 42501 (also for a session that does not exist); service_role gets P0002 for a session
 * that does not exist.
 *
 * What changed: validation. private.transcript_segments_problem (20261128000100) walks the
 * batch with two jsonpath queries and then checks each element field by field, calling a
 * function per element: most of the call's cost. Here one pass of plain expressions vouches
 * for a batch that is entirely valid (the normal case), and only a batch it does not vouch
 * for goes to transcript_segments_problem, whose message names the first problem (so the
 * messages are unchanged). The pass may fail to vouch for a batch that function accepts
 * (then nothing is refused: the function decides), never vouch for one it refuses:
 *   - at most 8,388,608 bytes of JSON text;
 *   - each element an object with the required keys and no other (`?&`, minus the allowed);
 *   - seq, start_ms, end_ms JSON numbers, whole, in 0..2^31-1, end_ms >= start_ms (hence
 *     also inside the JSON number policy: 0 or at least 1);
 *   - speaker a string of 1..64 characters, text a string of at most 20,000;
 *   - confidence absent, null, 0 or a number in [1e-20, 1] (the number policy's lower bound);
 *   - words absent, null, or an array private.transcript_words_problem accepts (its own
 *     depth, number and size policy: the only nesting a valid segment can hold);
 *   - segment_id absent, null or a string of 1..200 characters.
 * Each element's fields are then read once (jsonb_to_recordset) for the INSERT.
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

  -- One pass that vouches for a valid batch (see above); a batch it does not vouch for is
  -- judged by private.transcript_segments_problem.
  valid := pg_catalog.octet_length(append_transcript_segments.segments::text) <= 8388608;
  if valid then
    valid := coalesce((
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
    ), true);
  end if;
  if not valid then
    problem := private.transcript_segments_problem(append_transcript_segments.segments);
    if problem is not null then
      raise exception '%', problem using errcode = '22023';
    end if;
  end if;

  -- May the caller write to this session? FOR KEY SHARE passes RLS only where the caller may
  -- update the session (its owner, service_role); it is the lock the foreign key takes for
  -- each inserted segment anyway, and blocks nothing but deleting the session.
  perform 1 from public.sessions s
  where s.id = append_transcript_segments.session_id
  for key share;
  if not found then
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
    (session_id, seq, speaker, text, start_ms, end_ms, confidence, words, segment_id)
  select append_transcript_segments.session_id, b.seq, b.speaker, b.text, b.start_ms,
         b.end_ms, b.confidence, b.words, b.segment_id
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
  where (
    select t.id from public.transcript_segments t
    where t.session_id = append_transcript_segments.session_id and t.seq = b.seq
  ) is null
  order by b.seq
  on conflict on constraint transcript_segments_session_seq_key do nothing;
  get diagnostics inserted = row_count;

  return jsonb_build_object('inserted', inserted, 'duplicates', total - inserted);
end;
$$;
revoke all on function public.append_transcript_segments(uuid, jsonb) from public, anon;
grant execute on function public.append_transcript_segments(uuid, jsonb)
  to authenticated, service_role;

-- 3. One call per live chunk --------------------------------------------------------------

/**
 * append_transcript_segments(session_id, segments, interim): store a chunk's final segments
 * and broadcast the chunk, in one transaction — what the SDK calls for every chunk of a live
 * stream. (An overload, not a new name: PostgREST picks it by its argument names, the
 * two-argument function keeps its contract of storing only; `interim` has no default, so a
 * call is never ambiguous.)
 *
 * `segments`: the final segments, exactly as the two-argument function takes them (stored by
 * calling it: same validation, limits, errors and idempotence on (session_id, seq));
 * `interim`: a JSON array of interim segments (objects), broadcast only (null: none). Returns
 * {"inserted", "duplicates"} as the two-argument function does.
 *
 * Then the chunk goes out as `transcript` events (private.send_session_broadcast: Realtime
 * where it exists, the signed NOTIFY always, both delivered at commit) with the payload
 * {"final": [...], "interim": [...]}: each final segment with every field of the SDK's
 * SegmentInput (`confidence`, `words`, `segment_id` null when absent, `is_final` true), each
 * interim as given. One event when the payload is at most 200,000 bytes as JSON text (below
 * Realtime's smallest message limit); otherwise consecutive segments, finals first, in order,
 * each event as large as fits. A chunk with no final segment stores nothing and only
 * broadcasts, so whoever may broadcast to the session (a reader) may send interims, as with
 * public.broadcast_session_event.
 *
 * Errors: those of append_transcript_segments and send_session_broadcast; 22023 when
 * `interim` is not an array of objects.
 */
create or replace function public.append_transcript_segments(
  session_id uuid,
  segments jsonb,
  interim jsonb
)
returns jsonb
language plpgsql
security invoker
set search_path = ''
as $$
declare
  result jsonb := '{"inserted": 0, "duplicates": 0}'::jsonb;
  finals jsonb;
  interims jsonb := coalesce(append_transcript_segments.interim, '[]'::jsonb);
  payload jsonb;
  part jsonb;
  size integer;
  added integer;
  item record;
begin
  if append_transcript_segments.session_id is null then
    raise exception 'session_id is required' using errcode = '22023';
  end if;
  if pg_catalog.jsonb_typeof(interims) <> 'array' then
    raise exception 'interim must be a JSON array of segments, not %',
      pg_catalog.jsonb_typeof(interims)
      using errcode = '22023';
  end if;
  if exists (
    select 1 from pg_catalog.jsonb_array_elements(interims) e(v)
    where pg_catalog.jsonb_typeof(e.v) <> 'object'
  ) then
    raise exception 'interim must be a JSON array of segment objects' using errcode = '22023';
  end if;

  if append_transcript_segments.segments is not null
     and pg_catalog.jsonb_typeof(append_transcript_segments.segments) = 'array'
     and pg_catalog.jsonb_array_length(append_transcript_segments.segments) = 0
     and pg_catalog.jsonb_array_length(interims) > 0 then
    finals := '[]'::jsonb;  -- interims only: nothing to store
  else
    result := public.append_transcript_segments(append_transcript_segments.session_id,
                                                append_transcript_segments.segments);
    select coalesce(pg_catalog.jsonb_agg(
             '{"confidence": null, "words": null, "segment_id": null}'::jsonb || e.v
             || '{"is_final": true}'::jsonb order by e.ord), '[]'::jsonb)
    into finals
    from pg_catalog.jsonb_array_elements(append_transcript_segments.segments)
         with ordinality e(v, ord);
  end if;
  if pg_catalog.jsonb_array_length(finals) = 0 and pg_catalog.jsonb_array_length(interims) = 0
  then
    return result;
  end if;

  payload := pg_catalog.jsonb_build_object('final', finals, 'interim', interims);
  -- No JSON token prints in more than 6 times its stored size (a 1-byte control character
  -- prints as the 6 bytes \u00XX; keys, strings, numbers, literals and containers less),
  -- so a small payload is not printed just to learn that it fits.
  if pg_catalog.pg_column_size(payload) * 6 <= 200000
     or pg_catalog.octet_length(payload::text) <= 200000 then
    perform private.send_session_broadcast(append_transcript_segments.session_id, 'transcript',
                                           payload);
    return result;
  end if;
  -- Too large for one event: split greedily, in order (finals first).
  part := '{"final": [], "interim": []}'::jsonb;
  size := pg_catalog.octet_length(part::text);
  for item in
    select t.kind, t.v from (
      select 1 as n, f.ord, 'final' as kind, f.v
      from pg_catalog.jsonb_array_elements(finals) with ordinality f(v, ord)
      union all
      select 2, i.ord, 'interim', i.v
      from pg_catalog.jsonb_array_elements(interims) with ordinality i(v, ord)
    ) t
    order by t.n, t.ord
  loop
    added := pg_catalog.octet_length(item.v::text) + 2;
    if size + added > 200000
       and (pg_catalog.jsonb_array_length(part -> 'final') > 0
            or pg_catalog.jsonb_array_length(part -> 'interim') > 0) then
      perform private.send_session_broadcast(append_transcript_segments.session_id, 'transcript',
                                             part);
      part := '{"final": [], "interim": []}'::jsonb;
      size := pg_catalog.octet_length(part::text);
    end if;
    part := pg_catalog.jsonb_set(part, array[item.kind],
                                 (part -> item.kind) || pg_catalog.jsonb_build_array(item.v));
    size := size + added;
  end loop;
  perform private.send_session_broadcast(append_transcript_segments.session_id, 'transcript',
                                         part);
  return result;
end;
$$;
revoke all on function public.append_transcript_segments(uuid, jsonb, jsonb) from public, anon;
grant execute on function public.append_transcript_segments(uuid, jsonb, jsonb)
  to authenticated, service_role;

-- 4. The per-call checks of a broadcast -----------------------------------------------------

/**
 * private.caller_reads_session and private.session_event_signature
 * (20261128000400_hardening_live.sql), unchanged in what they answer, as PL/pgSQL instead of
 * SQL: a SQL function with its own search_path is neither inlined nor cached, so each call
 * planned its queries again (about 185 µs and 85 µs of server CPU per call, the largest
 * part of broadcasting a chunk); PL/pgSQL keeps its plans for the session.
 */
create or replace function private.caller_reads_session(session_id uuid)
returns boolean
language plpgsql
stable
security definer
set search_path = ''
as $$
declare
  trusted boolean;
begin
  select r.rolname = 'service_role' or r.rolsuper or r.rolname = current_user
  into trusted
  from pg_catalog.pg_roles r
  where r.rolname = coalesce(
    nullif(pg_catalog.current_setting('role'), 'none'), session_user::text
  );
  if not found then
    return null;
  end if;
  if trusted then
    return exists (select 1 from public.sessions s where s.id = caller_reads_session.session_id);
  end if;
  return exists (
    select 1 from public.sessions s
    where s.id = caller_reads_session.session_id
      and (s.profile_id = (select auth.uid())
           or s.company_id = (select private.managed_company_id()))
  );
end;
$$;
revoke all on function private.caller_reads_session(uuid) from public, anon;
grant execute on function private.caller_reads_session(uuid) to authenticated, service_role;

create or replace function private.session_event_signature(message text)
returns text
language plpgsql
stable
security definer
set search_path = ''
as $$
declare
  ipad bytea;
  opad bytea;
begin
  select decode(i.value, 'hex'), decode(o.value, 'hex') into ipad, opad
  from private.secrets i, private.secrets o
  where i.name = 'session_events_ipad' and o.name = 'session_events_opad';
  return encode(
    pg_catalog.sha256(
      opad || pg_catalog.sha256(ipad || convert_to(session_event_signature.message, 'UTF8'))
    ),
    'hex'
  );
end;
$$;
revoke all on function private.session_event_signature(text) from public, anon, authenticated,
  service_role;
