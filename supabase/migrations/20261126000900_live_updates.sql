/**
 * voicesessions — live updates during a call
 * ==========================================
 * What a voice pipeline calls while a practice call is running, and what happens when it
 * ends. Everything the API calls here is SECURITY INVOKER: the caller's RLS decides which
 * session it may touch, exactly as for a plain insert/update/select.
 *
 *   append_transcript_segments(session_id, segments)   one call per batch of final segments
 *   update_audio_metrics(session_id, metrics)          merge keys into sessions.audio_quality
 *   broadcast_session_event(session_id, event, payload) fan an event out to live watchers
 *
 * and, when a session moves active -> completed, a trigger assembles its `transcripts` row
 * from the final segments in the same transaction.
 *
 * Errors (besides the ones the tables already raise)
 *   22023  a malformed argument (the message names the segment and the field); nothing is
 *          written. (PostgreSQL itself raises 22P02 if an argument is not JSON at all.)
 *   P0002  update_audio_metrics, broadcast_session_event: the session does not exist or the
 *          caller cannot see it (another company's session), as the SDK's other calls about
 *          a session answer SessionNotFound. append_transcript_segments: for service_role,
 *          the session does not exist.
 *   42501  the caller may not write to the session: a manager or admin who can read it; for
 *          append_transcript_segments (an insert, refused as RLS refuses a direct insert)
 *          also any end user for a session that is not theirs or does not exist.
 *   VS002  a new segment for a session that is no longer active.
 *
 * Ending a call while segments are still arriving
 * -----------------------------------------------
 * Completion must see every segment that was accepted, and a segment must never be accepted
 * after the transcript was assembled. Both sides take a transaction-scoped advisory lock on
 * the session (class 1448299521 = 'VSL\x01', object = hashtext(session id)): each segment
 * insert takes it *shared* before the session's status is checked, completing takes it
 * *exclusive* before the transcript is assembled. So completion waits for in-flight appends
 * and then includes them; an append that arrives during completion waits and then sees a
 * completed session (VS002). Appends of the same session never wait for each other, and an
 * advisory lock (unlike a row lock on the session) neither blocks audio-metric updates nor
 * lets a stream of appends starve the completion.
 */

-- Appending final segments ---------------------------------------------------------------

/**
 * Trigger: a segment insert holds the session open (shared advisory lock, see above) until
 * its transaction ends. Named so that it fires before
 * `transcript_segments_inherit_session_owner` (triggers fire in name order), which then
 * checks the status under the lock.
 */
create function private.transcript_segments_hold_session_open()
returns trigger
language plpgsql
set search_path = ''
as $$
begin
  perform pg_catalog.pg_advisory_xact_lock_shared(
    1448299521, pg_catalog.hashtext(new.session_id::text)
  );
  return new;
end;
$$;
revoke all on function private.transcript_segments_hold_session_open() from public;

create trigger transcript_segments_hold_session_open
  before insert on public.transcript_segments
  for each row execute function private.transcript_segments_hold_session_open();

/**
 * What is wrong with a batch of `append_transcript_segments.segments`: the first element that
 * is not a valid final segment, as 'segments[<index>]: <problem>', or null if all are valid.
 * A valid segment is
 *   {seq, speaker, text, start_ms, end_ms, confidence?, words?, segment_id?}
 * seq, start_ms, end_ms are integers (0 .. 2^31-1, end_ms >= start_ms); speaker is a string
 * of 1..64 characters; text a string of at most 20,000; confidence null or 0..1; words null
 * or an array; segment_id null or a string of 1..200. Any other key is refused, so a
 * misspelt field is an error instead of silently lost data. (One call per batch with the
 * checks inline, in PL/pgSQL so that its plan is cached: calling a function per element, or
 * planning an SQL function's body at every call, would cost more than the checks.)
 */
create function private.transcript_segments_problem(segments jsonb)
returns text
language plpgsql
immutable
parallel safe
set search_path = ''
as $$
begin
  return (
  select format('segments[%s]: %s', e.ord - 1, p.problem)
  from jsonb_array_elements(transcript_segments_problem.segments) with ordinality e(segment, ord)
  cross join lateral (select case
    when segment is null or jsonb_typeof(segment) <> 'object' then
      format('must be a JSON object, not %s', coalesce(jsonb_typeof(segment), 'null'))
    when not segment ?& array['seq', 'speaker', 'text', 'start_ms', 'end_ms'] then
      format('is missing %s', array_to_string(array(
        select k from unnest(array['seq', 'speaker', 'text', 'start_ms', 'end_ms']) k
        where not segment ? k), ', '))
    when segment - array['seq', 'speaker', 'text', 'start_ms', 'end_ms', 'confidence', 'words',
                         'segment_id'] <> '{}'::jsonb then
      format('has unknown keys: %s (allowed: seq, speaker, text, start_ms, end_ms,'
             ' confidence, words, segment_id)', array_to_string(array(
        select k from jsonb_object_keys(segment) k
        where k <> all (array['seq', 'speaker', 'text', 'start_ms', 'end_ms', 'confidence',
                              'words', 'segment_id'])
        order by k), ', '))
    when jsonb_typeof(segment -> 'seq') <> 'number' then
      format('seq must be an integer between 0 and 2147483647, not %s', segment -> 'seq')
    when (segment ->> 'seq')::numeric not between 0 and 2147483647
         or (segment ->> 'seq')::numeric <> trunc((segment ->> 'seq')::numeric) then
      format('seq must be an integer between 0 and 2147483647, not %s', segment -> 'seq')
    when jsonb_typeof(segment -> 'speaker') <> 'string'
         or char_length(segment ->> 'speaker') not between 1 and 64 then
      format('speaker must be a string of 1 to 64 characters, not %s',
             left((segment -> 'speaker')::text, 80))
    when jsonb_typeof(segment -> 'text') <> 'string' then
      format('text must be a string, not %s', jsonb_typeof(segment -> 'text'))
    when char_length(segment ->> 'text') > 20000 then
      format('text has %s characters, at most 20000 are allowed',
             char_length(segment ->> 'text'))
    when jsonb_typeof(segment -> 'start_ms') <> 'number' then
      format('start_ms must be an integer between 0 and 2147483647, not %s',
             segment -> 'start_ms')
    when (segment ->> 'start_ms')::numeric not between 0 and 2147483647
         or (segment ->> 'start_ms')::numeric <> trunc((segment ->> 'start_ms')::numeric) then
      format('start_ms must be an integer between 0 and 2147483647, not %s',
             segment -> 'start_ms')
    when jsonb_typeof(segment -> 'end_ms') <> 'number' then
      format('end_ms must be an integer between 0 and 2147483647, not %s',
             segment -> 'end_ms')
    when (segment ->> 'end_ms')::numeric not between 0 and 2147483647
         or (segment ->> 'end_ms')::numeric <> trunc((segment ->> 'end_ms')::numeric) then
      format('end_ms must be an integer between 0 and 2147483647, not %s',
             segment -> 'end_ms')
    when (segment ->> 'end_ms')::numeric < (segment ->> 'start_ms')::numeric then
      format('end_ms (%s) is before start_ms (%s)', segment -> 'end_ms', segment -> 'start_ms')
    when jsonb_typeof(segment -> 'confidence') not in ('null', 'number') then
      format('confidence must be null or a number between 0 and 1, not %s',
             left((segment -> 'confidence')::text, 80))
    when (segment ->> 'confidence')::numeric not between 0 and 1 then
      format('confidence must be null or a number between 0 and 1, not %s',
             segment -> 'confidence')
    when jsonb_typeof(segment -> 'words') not in ('null', 'array') then
      format('words must be null or an array, not %s', jsonb_typeof(segment -> 'words'))
    when jsonb_typeof(segment -> 'segment_id') not in ('null', 'string')
         or char_length(segment ->> 'segment_id') not between 1 and 200 then
      format('segment_id must be null or a string of 1 to 200 characters, not %s',
             left((segment -> 'segment_id')::text, 80))
  end as problem) p
  where p.problem is not null
  order by e.ord
  limit 1
  );
end;
$$;
revoke all on function private.transcript_segments_problem(jsonb) from public;
grant execute on function private.transcript_segments_problem(jsonb)
  to authenticated, service_role;

/**
 * Store a batch of final transcript segments of one session: one call per batch (at most
 * 1,000 segments), one INSERT for all of them.
 *
 * `segments` is a JSON array of {seq, speaker, text, start_ms, end_ms, confidence?, words?,
 * segment_id?} (see private.transcript_segments_problem). The whole batch is validated first:
 * one bad element fails the call with 22023 naming it, and nothing is written.
 *
 * Idempotent on (session_id, seq): a segment whose seq is already stored is skipped, whatever
 * its content (the first delivery wins), also when the same seq appears twice in the batch
 * and also after the session has ended — replaying a batch is always a no-op, never an
 * error. A *new* seq for a session that is no longer active fails with VS002 and the batch
 * is not written. Concurrent calls with overlapping batches are safe: the unique index
 * arbitrates, rows are inserted in seq order (so two such calls cannot deadlock), and each
 * segment is stored exactly once.
 *
 * Returns {"inserted": n, "duplicates": m}, n + m = the number of elements.
 *
 * Cost does not depend on how many segments the session already holds: the known seqs are
 * found with one probe each of the unique index (session_id, seq) — deliberately a scalar
 * subquery, which the planner runs as a per-row index probe, where NOT EXISTS could become an
 * anti-join that reads all of the session's segments.
 *
 * Who: the session owner (RLS on transcript_segments) and service_role. Any other API user
 * gets 42501, as a direct insert into transcript_segments would: a manager or admin who can
 * read the session, another company's trainee, and also a user naming a session that does not
 * exist (so the error never tells whether another company's session id exists). For
 * service_role, which may write every session, a session that does not exist is P0002.
 */
create function public.append_transcript_segments(session_id uuid, segments jsonb)
returns jsonb
language plpgsql
security invoker
set search_path = ''
as $$
declare
  total integer;
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

  problem := private.transcript_segments_problem(append_transcript_segments.segments);
  if problem is not null then
    raise exception '%', problem using errcode = '22023';
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
    select distinct on (((e.value ->> 'seq')::numeric)::integer)
      ((e.value ->> 'seq')::numeric)::integer as seq,
      e.value ->> 'speaker' as speaker,
      e.value ->> 'text' as text,
      ((e.value ->> 'start_ms')::numeric)::integer as start_ms,
      ((e.value ->> 'end_ms')::numeric)::integer as end_ms,
      (e.value ->> 'confidence')::real as confidence,
      nullif(e.value -> 'words', 'null'::jsonb) as words,
      e.value ->> 'segment_id' as segment_id
    from jsonb_array_elements(append_transcript_segments.segments) with ordinality e(value, ord)
    order by ((e.value ->> 'seq')::numeric)::integer, e.ord
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

-- Audio metrics ----------------------------------------------------------------------------

/**
 * Merge `metrics` (a JSON object) into the session's `audio_quality` and return the merged
 * object. One UPDATE (`audio_quality = audio_quality || metrics`): concurrent calls with
 * different keys queue on the row lock and each merges into the other's result, so every key
 * survives; for the same key the last commit wins. The merge is shallow: a top-level key is
 * replaced as a whole, and a key given as null is stored as null. Allowed in every status
 * (metrics measured from the recording arrive after the call).
 *
 * Who: the session owner and service_role. Another company's session, or one that does not
 * exist: P0002. A manager or admin who can read the session but not change it: 42501 (not
 * P0002: they can see it, so "not found" would be untrue), as the SDK's other session
 * updates do.
 */
create function public.update_audio_metrics(session_id uuid, metrics jsonb)
returns jsonb
language plpgsql
security invoker
set search_path = ''
as $$
declare
  merged jsonb;
begin
  if update_audio_metrics.session_id is null then
    raise exception 'session_id is required' using errcode = '22023';
  end if;
  if update_audio_metrics.metrics is null
     or jsonb_typeof(update_audio_metrics.metrics) <> 'object' then
    raise exception 'metrics must be a JSON object, not %',
      coalesce(jsonb_typeof(update_audio_metrics.metrics), 'null')
      using errcode = '22023',
            hint = 'For example {"snr_db": 31.5, "clipping_ratio": 0.001}.';
  end if;

  update public.sessions s
  set audio_quality = s.audio_quality || update_audio_metrics.metrics
  where s.id = update_audio_metrics.session_id
  returning s.audio_quality into merged;
  if found then
    return merged;
  end if;

  if exists (select 1 from public.sessions s where s.id = update_audio_metrics.session_id) then
    raise exception 'only the owner of session % can update its audio metrics',
      update_audio_metrics.session_id
      using errcode = '42501';
  end if;
  raise exception 'session % not found', update_audio_metrics.session_id
    using errcode = 'P0002';
end;
$$;
revoke all on function public.update_audio_metrics(uuid, jsonb) from public, anon;
grant execute on function public.update_audio_metrics(uuid, jsonb)
  to authenticated, service_role;

-- Transcript assembly on completion ------------------------------------------------------

/**
 * Trigger: a session leaving `active` first waits for the segment inserts in flight (the
 * exclusive side of the advisory lock described at the top), so that the transcript assembled
 * after it sees them all and no segment is accepted afterwards.
 */
create function private.sessions_wait_for_live_writes()
returns trigger
language plpgsql
set search_path = ''
as $$
begin
  perform pg_catalog.pg_advisory_xact_lock(1448299521, pg_catalog.hashtext(new.id::text));
  return new;
end;
$$;
revoke all on function private.sessions_wait_for_live_writes() from public;

create trigger sessions_wait_for_live_writes
  before update of status on public.sessions
  for each row when (old.status = 'active' and new.status <> 'active')
  execute function private.sessions_wait_for_live_writes();

/**
 * Trigger: when a session moves active -> completed, (re)build its `transcripts` row from its
 * final segments, in the same transaction, ordered by audio offset (start_ms, then seq):
 *   content             one line "speaker: text" per segment
 *   structured_content  [{seq, speaker, text, start_ms, end_ms, confidence}, ...]
 *   word_count          whitespace-separated words of the segments' text (speakers not counted)
 *   confidence          average segment confidence (segments without one are left out;
 *                       null if none has one)
 *   language            sessions.metadata->>'language' when it is a language tag, else 'en'
 * and the search vector follows from content and language.
 *
 * A session completed without any final segment gets no transcript row (there is nothing to
 * assemble; a transcript made afterwards, e.g. from the recording, is written by service_role),
 * and an existing row is then left alone. An existing row is replaced by the assembly,
 * unless it has been anonymized.
 *
 * Security definer: the trainee completing their own call has no privilege on `transcripts`.
 */
create function private.assemble_transcript()
returns trigger
language plpgsql
security definer
set search_path = ''
as $$
declare
  tag text := new.metadata ->> 'language';
begin
  if tag is null or tag !~ '^[A-Za-z]{2,3}(-[A-Za-z0-9]{1,8})*$' then
    tag := 'en';
  end if;
  insert into public.transcripts
    (session_id, content, structured_content, language, word_count, confidence)
  select new.id,
         string_agg(t.speaker || ': ' || t.text, E'\n' order by t.start_ms, t.seq),
         jsonb_agg(
           jsonb_build_object(
             'seq', t.seq, 'speaker', t.speaker, 'text', t.text,
             'start_ms', t.start_ms, 'end_ms', t.end_ms, 'confidence', t.confidence
           )
           order by t.start_ms, t.seq
         ),
         tag,
         coalesce(sum(pg_catalog.regexp_count(t.text, E'\\S+')), 0),
         avg(t.confidence)
  from public.transcript_segments t
  where t.session_id = new.id
  having count(*) > 0
  on conflict (session_id) do update
    set content = excluded.content,
        structured_content = excluded.structured_content,
        language = excluded.language,
        word_count = excluded.word_count,
        confidence = excluded.confidence
    where not public.transcripts.is_anonymized;
  return null;
end;
$$;
revoke all on function private.assemble_transcript() from public;

create trigger sessions_assemble_transcript
  after update of status on public.sessions
  for each row when (old.status = 'active' and new.status = 'completed')
  execute function private.assemble_transcript();

-- Live event fan-out ---------------------------------------------------------------------

/**
 * The session id of a broadcast topic 'session:<uuid>', or null for any other topic (never an
 * error: the realtime policy below calls it with whatever topic a client joins).
 */
create function private.session_id_from_topic(topic text)
returns uuid
language sql
immutable
parallel safe
set search_path = ''
as $$
  select case
    when session_id_from_topic.topic
         ~ '^session:[0-9A-Fa-f]{8}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{12}$'
    then substr(session_id_from_topic.topic, 9)::uuid
  end;
$$;
revoke all on function private.session_id_from_topic(text) from public;
grant execute on function private.session_id_from_topic(text) to authenticated, service_role;

/**
 * Hand an event to Supabase Realtime Broadcast: `realtime.send(payload, event,
 * 'session:<id>', private => true)`, when that function exists (on Supabase); returns whether
 * it did. Security definer because realtime.send runs as its caller and inserts into
 * realtime.messages, which API roles may not do (Supabase's guidance for broadcasting from the
 * database). It trusts its caller to have checked access: only
 * public.broadcast_session_event calls it, after reading the session under the caller's RLS,
 * and the schema `private` is not exposed through the API.
 */
create function private.send_session_broadcast(session_id uuid, event text, payload jsonb)
returns boolean
language plpgsql
security definer
set search_path = ''
as $$
begin
  if pg_catalog.to_regprocedure('realtime.send(jsonb, text, text, boolean)') is null then
    return false;
  end if;
  perform realtime.send(
    send_session_broadcast.payload,
    send_session_broadcast.event,
    'session:' || send_session_broadcast.session_id::text,
    true
  );
  return true;
end;
$$;
revoke all on function private.send_session_broadcast(uuid, text, jsonb) from public;
grant execute on function private.send_session_broadcast(uuid, text, jsonb)
  to authenticated, service_role;

/**
 * Fan a live event of a session out to everyone watching it. Anyone who can read the session
 * may broadcast (its owner, managers and admins of the company, service_role); for anyone
 * else, or a session that does not exist: P0002. `event` is a name such as
 * 'transcript_chunk', 'audio_metrics' or 'status_change' (letters, digits, _ . : -, at most
 * 100 characters); `payload` a JSON object. Both deliveries below happen only if the calling
 * transaction commits.
 *
 * 1. Supabase Realtime Broadcast, when the database has it: the payload as it is, as `event`
 *    on the private channel 'session:<session id>'. Clients join it with their own JWT; the
 *    policy on realtime.messages below lets exactly the readers of the session receive it.
 *    (Realtime's own size limit applies: 256 KB on Free, 3 MB on Pro.)
 * 2. Always, PostgreSQL NOTIFY on channel 'vs_session_events' (what the SDK's Postgres backend
 *    listens to): {"id", "session_id", "event", "payload"}, `id` a fresh uuid per event (so
 *    that two equal events of one transaction are not merged into one by NOTIFY). A
 *    notification must stay under 8,000 bytes; a larger one is never truncated or split but
 *    sent by reference: {"id", "session_id", "event", "ref": true, "bytes": <payload size>}.
 *    The listener then reads the current state from the tables (segments, audio_quality,
 *    status) — a reference tells it *that* something changed, the tables say *what*. Events
 *    of that size are batches of stored rows in practice; splitting them into numbered parts
 *    would make every listener reassemble and lose events whose parts it missed.
 *
 * NOTIFY is not authorized per listener: any role that can LISTEN on the database sees every
 * notification, so it is for trusted server-side processes (service_role backends), never for
 * end users; end users watch through Supabase Realtime, authorized per session by RLS.
 */
create function public.broadcast_session_event(session_id uuid, event text, payload jsonb)
returns void
language plpgsql
security invoker
set search_path = ''
as $$
declare
  envelope jsonb;
  notification text;
begin
  if broadcast_session_event.session_id is null then
    raise exception 'session_id is required' using errcode = '22023';
  end if;
  if broadcast_session_event.event is null
     or broadcast_session_event.event !~ '^[A-Za-z0-9][A-Za-z0-9_.:-]{0,99}$' then
    raise exception 'event must be a name of 1 to 100 letters, digits, _ . : or -, not %',
      coalesce(quote_literal(broadcast_session_event.event), 'null')
      using errcode = '22023';
  end if;
  if broadcast_session_event.payload is null
     or jsonb_typeof(broadcast_session_event.payload) <> 'object' then
    raise exception 'payload must be a JSON object, not %',
      coalesce(jsonb_typeof(broadcast_session_event.payload), 'null')
      using errcode = '22023';
  end if;
  if not exists (
    select 1 from public.sessions s where s.id = broadcast_session_event.session_id
  ) then
    raise exception 'session % not found', broadcast_session_event.session_id
      using errcode = 'P0002';
  end if;

  perform private.send_session_broadcast(
    broadcast_session_event.session_id,
    broadcast_session_event.event,
    broadcast_session_event.payload
  );

  envelope := jsonb_build_object(
    'id', pg_catalog.gen_random_uuid(),
    'session_id', broadcast_session_event.session_id,
    'event', broadcast_session_event.event,
    'payload', broadcast_session_event.payload
  );
  notification := envelope::text;
  if octet_length(notification) >= 8000 then
    notification := jsonb_build_object(
      'id', envelope -> 'id',
      'session_id', broadcast_session_event.session_id,
      'event', broadcast_session_event.event,
      'ref', true,
      'bytes', octet_length(broadcast_session_event.payload::text)
    )::text;
  end if;
  perform pg_catalog.pg_notify('vs_session_events', notification);
end;
$$;
revoke all on function public.broadcast_session_event(uuid, text, jsonb) from public, anon;
grant execute on function public.broadcast_session_event(uuid, text, jsonb)
  to authenticated, service_role;

/**
 * Supabase Realtime authorizes private channels with RLS on realtime.messages, evaluated as
 * the joining user with realtime.topic() set to the channel's topic: a reader of the session
 * may receive the broadcasts of 'session:<session id>'. The session is looked up under the
 * user's own RLS on sessions (owner, managers and admins of the company). There is no insert
 * policy: events are sent through broadcast_session_event, which checks access, never
 * directly by clients. Created only where Realtime exists, so this migration also runs on a
 * plain PostgreSQL.
 */
do $$
begin
  if to_regclass('realtime.messages') is not null then
    execute $policy$
      create policy "Session readers can receive session broadcasts"
        on realtime.messages for select to authenticated
        using (
          realtime.messages.extension = 'broadcast'
          and (select private.session_id_from_topic((select realtime.topic())))
              in (select s.id from public.sessions s)
        )
    $policy$;
  end if;
end
$$;
