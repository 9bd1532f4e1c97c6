/**
 * voicesessions — hardening of live feeds and broadcasts
 * ======================================================
 * Live events must reach exactly the readers of a session, and no payload one tenant sends
 * may break another tenant's feed. This migration (after 20261126000900_live_updates.sql):
 *
 *   - bounds what broadcast_session_event accepts: a payload at most 32 levels deep and
 *     1 MiB (1,048,576 bytes) as JSON text; larger or deeper: 22023 naming `payload` and the
 *     limit. (Every reader can decode such a payload; the notification the Postgres listener
 *     reads is below 8,000 bytes anyway, larger events go by reference.)
 *   - reserves the event names the SDK gives its own control events: 'failed' and
 *     'reconnected' (in any letter case): 22023. The SDK also marks its own events
 *     (SessionEvent.kind = 'control'), so a user event can never pass for one.
 *   - signs every NOTIFY on 'vs_session_events' with HMAC-SHA-256 keyed by a secret of this
 *     database (private.secrets 'session_events_key', readable only by SECURITY DEFINER
 *     functions and, through private.session_events_key(), by service_role). A notification is
 *
 *         vs1:<session id>:<hex HMAC of "vs1:<session id>:" || body>:<body>
 *
 *     body being the JSON envelope {"id", "at_ms", "session_id", "event", "payload"} (or,
 *     over 8,000 bytes, {"id", "at_ms", "session_id", "event", "ref": true, "bytes"}); `id`
 *     a fresh uuid and `at_ms` the database's clock (epoch milliseconds) when it was sent,
 *     so that a listener can also drop a genuine notification sent again (a replay). The fixed-length prefix
 *     lets a listener skip other sessions' notifications without decoding them, and the
 *     signature lets it drop what anyone else sent with pg_notify (a forger cannot produce
 *     it without the key). One HMAC per event: two sha256 over the notification, with the
 *     padded keys computed once, here.
 *   - makes private.send_session_broadcast check its caller itself (it is SECURITY DEFINER
 *     and executable by authenticated): only a reader of the session may send its events.
 *   - fixes the read policy of realtime.messages: a row is visible only on its own topic
 *     (`topic = realtime.topic()`), so a direct query never returns other sessions'
 *     broadcasts.
 *
 * Errors: 22023 bad argument (reserved name, payload too deep or too large, ...), P0002 the
 * session does not exist or the caller cannot read it.
 */

-- The signing key ------------------------------------------------------------------------

/**
 * 'session_events_key': 32 random bytes (hex); 'session_events_ipad' / '_opad': the key
 * zero-padded to SHA-256's 64-byte block and XORed with 0x36 / 0x5c (RFC 2104), so that
 * signing an event costs two sha256 calls and no byte loop.
 */
do $$
declare
  key bytea := decode(
    replace(gen_random_uuid()::text || gen_random_uuid()::text, '-', ''), 'hex'
  ) || pg_catalog.sha256(convert_to(clock_timestamp()::text || random()::text, 'UTF8'));
  ipad bytea := '\x'::bytea;
  opad bytea := '\x'::bytea;
  b integer;
begin
  key := substr(pg_catalog.sha256(key), 1, 32);
  for i in 0 .. 63 loop
    b := case when i < octet_length(key) then get_byte(key, i) else 0 end;
    ipad := ipad || decode(lpad(to_hex(b # 54), 2, '0'), 'hex');
    opad := opad || decode(lpad(to_hex(b # 92), 2, '0'), 'hex');
  end loop;
  insert into private.secrets (name, value)
  values ('session_events_key', encode(key, 'hex')),
         ('session_events_ipad', encode(ipad, 'hex')),
         ('session_events_opad', encode(opad, 'hex'))
  on conflict (name) do nothing;
end
$$;

/**
 * HMAC-SHA-256 (hex) of `message` (as UTF-8) under the session events key. Only SECURITY
 * DEFINER functions of this migration call it; no API role may.
 */
create function private.session_event_signature(message text)
returns text
language sql
stable
security definer
set search_path = ''
as $$
  select encode(
    pg_catalog.sha256(
      decode(o.value, 'hex')
      || pg_catalog.sha256(
        decode(i.value, 'hex') || convert_to(session_event_signature.message, 'UTF8')
      )
    ),
    'hex'
  )
  from private.secrets i, private.secrets o
  where i.name = 'session_events_ipad' and o.name = 'session_events_opad';
$$;
revoke all on function private.session_event_signature(text) from public, anon, authenticated,
  service_role;

/**
 * The key (hex) the SDK's Postgres listener verifies notifications with. A listener holds a
 * PostgreSQL DSN, i.e. is trusted code; it reads the key as service_role.
 */
create function private.session_events_key()
returns text
language sql
stable
security definer
set search_path = ''
as $$
  select s.value from private.secrets s where s.name = 'session_events_key';
$$;
revoke all on function private.session_events_key() from public, anon, authenticated;
grant execute on function private.session_events_key() to service_role;

-- Checks -----------------------------------------------------------------------------------

/**
 * What is wrong with a live event, or null: `event` a name of 1 to 100 letters, digits,
 * _ . : or - that is not one of the SDK's own control events; `payload` a JSON object at
 * most 32 levels deep (nested objects/arrays, the payload itself included) and 1,048,576
 * bytes as JSON text. The depth is checked first, with a jsonpath that stops descending at
 * level 32, so a deep payload costs little to refuse.
 */
create function private.session_event_problem(event text, payload jsonb)
returns text
language plpgsql
immutable
parallel safe
set search_path = ''
as $$
declare
  size integer;
begin
  if session_event_problem.event is null
     or session_event_problem.event !~ '^[A-Za-z0-9][A-Za-z0-9_.:-]{0,99}$' then
    return format('event must be a name of 1 to 100 letters, digits, _ . : or -, not %s',
                  coalesce(left(quote_literal(session_event_problem.event), 120), 'null'));
  end if;
  if lower(session_event_problem.event) in ('failed', 'reconnected') then
    return format('event %s is reserved for the SDK''s own control events'
                  ' (reserved: failed, reconnected)',
                  quote_literal(session_event_problem.event));
  end if;
  if session_event_problem.payload is null
     or jsonb_typeof(session_event_problem.payload) <> 'object' then
    return format('payload must be a JSON object, not %s',
                  coalesce(jsonb_typeof(session_event_problem.payload), 'null'));
  end if;
  -- Level 0 is the payload object itself: an object or array at level 32 is the 33rd level
  -- of nesting. The path does not descend below level 32, however deep the payload.
  if jsonb_path_exists(session_event_problem.payload,
                       'strict $.**{32} ? (@.type() == "object" || @.type() == "array")') then
    return 'payload is nested more than 32 levels deep (at most 32 levels are allowed)';
  end if;
  size := octet_length(session_event_problem.payload::text);
  if size > 1048576 then
    return format('payload has %s bytes as JSON, at most 1048576 are allowed', size);
  end if;
  return null;
end;
$$;
revoke all on function private.session_event_problem(text, jsonb) from public;
grant execute on function private.session_event_problem(text, jsonb)
  to authenticated, service_role;

/**
 * Whether the caller may read session `session_id` — the same rule as the read policy on
 * public.sessions (its owner, managers and admins of its company), evaluated from inside
 * SECURITY DEFINER code, where RLS no longer applies as the caller. The caller is the role
 * the request assumed (`set role`, as PostgREST does) or else the login role:
 * service_role, superusers and the owner of this function (trusted code) may read every
 * session; anyone else is judged by their JWT (auth.uid()). tests/db pins that it agrees with
 * RLS for every identity and session.
 */
create function private.caller_reads_session(session_id uuid)
returns boolean
language sql
stable
security definer
set search_path = ''
as $$
  select case
    when r.rolname = 'service_role' or r.rolsuper or r.rolname = current_user then
      exists (select 1 from public.sessions s where s.id = caller_reads_session.session_id)
    else exists (
      select 1 from public.sessions s
      where s.id = caller_reads_session.session_id
        and (s.profile_id = (select auth.uid())
             or s.company_id = (select private.managed_company_id()))
    )
  end
  from pg_catalog.pg_roles r
  where r.rolname = coalesce(
    nullif(pg_catalog.current_setting('role'), 'none'), session_user::text
  );
$$;
revoke all on function private.caller_reads_session(uuid) from public, anon;
grant execute on function private.caller_reads_session(uuid) to authenticated, service_role;

-- Sending ----------------------------------------------------------------------------------

/**
 * Send a live event of a session on both transports; returns whether Supabase Realtime
 * exists (and got it). Security definer (realtime.send inserts into realtime.messages, and
 * the notification is signed with a key no API role may read), so it checks everything
 * itself, whoever calls it: the event and payload (private.session_event_problem, 22023)
 * and that the caller reads the session (private.caller_reads_session, else P0002).
 *
 * 1. Supabase Realtime Broadcast, when the database has it: `realtime.send(payload, event,
 *    'session:<id>', private => true)`.
 * 2. Always, a signed NOTIFY on 'vs_session_events' (format at the top of this file).
 */
create or replace function private.send_session_broadcast(session_id uuid, event text,
                                                          payload jsonb)
returns boolean
language plpgsql
security definer
set search_path = ''
as $$
declare
  problem text;
  realtime boolean;
  envelope jsonb;
  body text;
  prefix text;
begin
  if send_session_broadcast.session_id is null then
    raise exception 'session_id is required' using errcode = '22023';
  end if;
  problem := private.session_event_problem(send_session_broadcast.event,
                                           send_session_broadcast.payload);
  if problem is not null then
    raise exception '%', problem using errcode = '22023';
  end if;
  if not private.caller_reads_session(send_session_broadcast.session_id) then
    raise exception 'session % not found', send_session_broadcast.session_id
      using errcode = 'P0002';
  end if;

  realtime := pg_catalog.to_regprocedure('realtime.send(jsonb, text, text, boolean)')
              is not null;
  if realtime then
    -- Dynamic: the schema `realtime` exists only on Supabase (and plpgsql_check checks
    -- static statements against the database it runs on).
    execute format('select %I.send($1, $2, $3, true)', 'realtime')
      using send_session_broadcast.payload,
            send_session_broadcast.event,
            'session:' || send_session_broadcast.session_id::text;
  end if;

  envelope := jsonb_build_object(
    'id', pg_catalog.gen_random_uuid(),
    'at_ms', (extract(epoch from pg_catalog.clock_timestamp()) * 1000)::bigint,
    'session_id', send_session_broadcast.session_id,
    'event', send_session_broadcast.event,
    'payload', send_session_broadcast.payload
  );
  prefix := 'vs1:' || send_session_broadcast.session_id::text || ':';
  body := envelope::text;
  -- 106 bytes of prefix and signature: the whole notification must stay under 8,000 bytes.
  if octet_length(body) >= 8000 - 106 then
    body := jsonb_build_object(
      'id', envelope -> 'id',
      'at_ms', envelope -> 'at_ms',
      'session_id', send_session_broadcast.session_id,
      'event', send_session_broadcast.event,
      'ref', true,
      'bytes', octet_length(send_session_broadcast.payload::text)
    )::text;
  end if;
  perform pg_catalog.pg_notify(
    'vs_session_events',
    prefix || private.session_event_signature(prefix || body) || ':' || body
  );
  return realtime;
end;
$$;
revoke all on function private.send_session_broadcast(uuid, text, jsonb) from public, anon;
grant execute on function private.send_session_broadcast(uuid, text, jsonb)
  to authenticated, service_role;

/**
 * Fan a live event of a session out to everyone watching it (see
 * private.send_session_broadcast for the transports and the notification format). Anyone
 * who can read the session may broadcast (its owner, managers and admins of the company,
 * service_role); for anyone else, or a session that does not exist: P0002. `event` is a
 * name such as 'transcript', 'audio_metrics' or 'status' (1 to 100 letters, digits,
 * _ . : -; not 'failed' nor 'reconnected', the SDK's own); `payload` a JSON object of at
 * most 32 levels and 1 MiB. Deliveries happen only if the calling transaction commits.
 *
 * NOTIFY is not authorized per listener: any role that can LISTEN sees every notification,
 * so it is for trusted server-side processes (holders of a PostgreSQL DSN), never for end
 * users, who watch through Supabase Realtime, authorized per session by RLS. Its
 * notifications are signed, so a listener can tell them from anyone else's pg_notify.
 */
create or replace function public.broadcast_session_event(session_id uuid, event text,
                                                         payload jsonb)
returns void
language plpgsql
security invoker
set search_path = ''
as $$
declare
  problem text;
begin
  if broadcast_session_event.session_id is null then
    raise exception 'session_id is required' using errcode = '22023';
  end if;
  problem := private.session_event_problem(broadcast_session_event.event,
                                           broadcast_session_event.payload);
  if problem is not null then
    raise exception '%', problem using errcode = '22023';
  end if;
  -- Under the caller's own RLS (the SECURITY DEFINER sender checks again, by the same rule).
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
end;
$$;
revoke all on function public.broadcast_session_event(uuid, text, jsonb) from public, anon;
grant execute on function public.broadcast_session_event(uuid, text, jsonb)
  to authenticated, service_role;

-- Receiving on Supabase ----------------------------------------------------------------------

/**
 * Realtime evaluates this policy as the joining user with realtime.topic() set to the
 * channel's topic. A row is visible only on its own topic, and only to readers of that
 * topic's session: a direct query (any topic setting) never returns another session's
 * broadcasts.
 */
do $$
begin
  if to_regclass('realtime.messages') is not null then
    execute 'drop policy if exists "Session readers can receive session broadcasts"'
            ' on realtime.messages';
    execute $policy$
      create policy "Session readers can receive session broadcasts"
        on realtime.messages for select to authenticated
        using (
          realtime.messages.extension = 'broadcast'
          and realtime.messages.topic = (select realtime.topic())
          and (select private.session_id_from_topic((select realtime.topic())))
              in (select s.id from public.sessions s)
        )
    $policy$;
  end if;
end
$$;

-- Bring the value policy of 20261128000100 to any column this migration added.
select private.apply_value_policy();
