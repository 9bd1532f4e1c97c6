/**
 * voicesessions — a segment batch checked once per statement, not once per row
 * ===========================================================================
 * 20261128000800_perf_ingest.sql left one BEFORE INSERT row trigger on transcript_segments,
 * private.transcript_segments_hold_session_open: for every row it takes the session's shared
 * advisory lock, reads the session, decides visibility, checks the status and the owner
 * columns and copies the owner. Measured on a batch of 50 (benchmarks/append_cost.py and the
 * profile in BENCHMARKS.md): about 13 µs of a segment's 52 µs, the same work 50 times over
 * for the one session a batch belongs to.
 *
 * Now the row trigger runs only for rows that arrive without their owner columns (a direct
 * insert through PostgREST, COPY, or service_role naming only the session): it copies the
 * owner as before, with the same checks and errors. Rows that arrive with both owner
 * columns (what append_transcript_segments now inserts: it has read the session already)
 * are checked by an AFTER INSERT statement trigger, once per session of the statement, over
 * the statement's new rows (a transition table): the same shared advisory lock, then the
 * session read, visible, active, and every row's owner columns those of the session. Every
 * rule stays in the database and applies to every path that inserts segments (the
 * function, a direct insert with or without the owner columns, COPY); only the cost moves
 * from per row to per session.
 *
 * What a caller sees:
 *   - Without owner columns (the way the API documents): unchanged, the row trigger raises
 *     as before (23503 `session <id> does not exist` for a missing or invisible session,
 *     VS002, 42501).
 *   - With both owner columns given: RLS checks `profile_id` first (42501 for an end user
 *     naming someone else), then the foreign key (23503 for a missing session), then the
 *     statement trigger. An end user naming a session that exists but that they cannot see
 *     gets exactly the foreign key's answer for a missing one (same errcode, message,
 *     detail, constraint, table and schema), so this path is no existence oracle either.
 *     A visible session: VS002 when it is not active, 42501 when an owner column is not the
 *     session's — as the row trigger answered.
 *   - The lock: a statement holds the session open from the moment its trigger runs until
 *     the transaction ends, and the status is read under the lock, as before. The rows are
 *     written before the lock is taken (not after, as with the row trigger), which changes
 *     nothing a completion can see: completion takes the lock exclusively before it reads
 *     the segments, so either it waits for this transaction and includes its rows, or this
 *     statement waits for the completion and then finds the session completed (VS002, the
 *     rows roll back).
 */

-- 1. Who sees a session, decided in one place for both triggers ---------------------------

/**
 * Whether the caller sees a session owned by (owner_id, owner_company): what
 * private.can_see_session answers, without calling it in the two cases where it is true by
 * its own definition (the caller owns the session; the caller is not an API end user), which
 * are the cases of every write that may succeed. Was inline in
 * private.transcript_segments_hold_session_open (20261128000800); both segment triggers call
 * this now. Reads the request's settings, so it answers for the API caller also inside a
 * security definer trigger.
 */
create or replace function private.sees_session(owner_id uuid, owner_company uuid)
returns boolean
language plpgsql
stable
set search_path = ''
as $$
begin
  if sees_session.owner_id = auth.uid() then
    return true;
  end if;
  if not (coalesce(nullif(pg_catalog.current_setting('role', true), ''), 'none')
            in ('anon', 'authenticated')
          or coalesce(auth.role() in ('anon', 'authenticated'), false)) then
    return true;
  end if;
  return coalesce(private.can_see_session(sees_session.owner_id, sees_session.owner_company),
                  false);
end;
$$;
revoke all on function private.sees_session(uuid, uuid) from public, anon, authenticated,
  service_role;

-- 2. The row trigger: only rows without their owner columns ---------------------------------

/**
 * As in 20261128000800_perf_ingest.sql (same checks, order and errors), with the visibility
 * decision in private.sees_session; it now fires only for rows without both owner columns.
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
begin
  perform pg_catalog.pg_advisory_xact_lock_shared(
    1448299521, pg_catalog.hashtext(new.session_id::text)
  );
  select s.profile_id, s.company_id, s.status into owner_id, owner_company, current_status
  from public.sessions s where s.id = new.session_id;
  if not found or not private.sees_session(owner_id, owner_company) then
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

drop trigger if exists transcript_segments_hold_session_open on public.transcript_segments;
create trigger transcript_segments_hold_session_open
  before insert on public.transcript_segments
  for each row when (new.profile_id is null or new.company_id is null)
  execute function private.transcript_segments_hold_session_open();

-- 3. The statement trigger: every row, once per session -------------------------------------

/**
 * Trigger (AFTER INSERT, per statement, transition table `added`): for each session the new
 * rows name, in session id order: the shared advisory lock, then (a new snapshot, under the
 * lock) the session — security definer: read whoever inserts — its visibility, its status,
 * and whether any new row names other owner columns. Rows the row trigger handled pass again
 * (it gave them the owner columns of the same session).
 */
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
    if not found or not private.sees_session(owner_id, owner_company) then
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

drop trigger if exists transcript_segments_check_sessions on public.transcript_segments;
create trigger transcript_segments_check_sessions
  after insert on public.transcript_segments
  referencing new table as added
  for each statement execute function private.transcript_segments_check_sessions();

-- 4. append_transcript_segments inserts the owner columns it has read ----------------------

/**
 * public.append_transcript_segments(session_id, segments) exactly as
 * 20261128000800_perf_ingest.sql documents it (arguments, result, errors, idempotence,
 * ordering, locking); the one change: the session row it locks FOR KEY SHARE (under the
 * caller's RLS) also gives the owner columns, which the INSERT names, so that the batch is
 * checked by the statement trigger above instead of row by row.
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
