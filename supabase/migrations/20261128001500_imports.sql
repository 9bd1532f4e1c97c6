/**
 * voicesessions — calls imported from hosted voice platforms (Vapi, Retell)
 * ========================================================================
 * A hosted platform runs the call and reports it afterwards by webhook, sometimes twice,
 * sometimes twice at the same moment, and (Retell) in two parts (`call_ended`, then
 * `call_analyzed`, in either order). The SDK (`vs.imports`) reads the report; this migration
 * makes storing it idempotent on the platform's call id:
 *
 *   private.session_imports   one row per (company, platform, call id): the session the call
 *                             became. Its primary key is the idempotency key: two deliveries
 *                             of one call, even racing, store one session (the second waits
 *                             on the first's key, then finds its row).
 *   public.import_call(...)   the whole call in one transaction: claims the key, creates the
 *                             session (started at the call's start), stores its final
 *                             segments through public.append_transcript_segments (same
 *                             checks, in batches of 1000), completes it at the call's end
 *                             (the transcript is assembled and its conversation metrics
 *                             measured, as for any session). Returns (session_id, created):
 *                             created = false when the call was imported before (nothing is
 *                             written); session_id = null when that session has been erased
 *                             since (GDPR erasure, retention): an erased call is not imported
 *                             again by a late redelivery.
 *
 * The analysis, its cost and the recording are added afterwards by the SDK through the usual
 * paths (public.record_analysis, idempotent on its key; record_session_audio), so a redelivery
 * completes whatever an earlier delivery could not store.
 *
 * Who: the service role only (a webhook receiver with the service key). The call's owner is
 * a profile the caller names; the session takes its company, and the key is per company.
 * Errors: 42501 not the service role; 22004 a required argument is null; 22023 a bad platform
 * name, call id, time span or segments (the messages of append_transcript_segments); 23503 no
 * such profile.
 */

-- The idempotency key ---------------------------------------------------------------------

create table private.session_imports (
  company_id uuid not null references public.companies (id) on delete cascade,
  platform text not null check (platform ~ '^[a-z][a-z0-9_]{0,31}$'),
  call_id text not null check (char_length(call_id) between 1 and 200),
  -- Set in the same transaction as the session it names (hence deferred); null once that
  -- session is erased, so that the call stays imported (and erased).
  session_id uuid references public.sessions (id) on delete set null
    deferrable initially deferred,
  created_at timestamptz not null default now(),
  constraint session_imports_pkey primary key (company_id, platform, call_id)
);
comment on table private.session_imports is
  'Calls imported from hosted platforms: (company, platform, call id) -> session. Idempotency key of public.import_call.';

create unique index session_imports_session_id_idx on private.session_imports (session_id);

revoke all on table private.session_imports from public, anon, authenticated, service_role;

-- The import ------------------------------------------------------------------------------

create or replace function private.import_call(
  platform text,
  call_id text,
  profile_id uuid,
  title text,
  started_at timestamptz,
  ended_at timestamptz,
  segments jsonb,
  metadata jsonb
)
returns table (session_id uuid, created boolean)
language plpgsql
volatile
security definer
set search_path = ''
as $$
declare
  owner_company uuid;
  new_id uuid := gen_random_uuid();
  total integer;
  done integer := 0;
  batch jsonb;
begin
  if not private.gdpr_is_service_role() then
    raise exception 'only the service role imports calls' using errcode = '42501';
  end if;
  if import_call.platform is null or import_call.call_id is null
     or import_call.profile_id is null or import_call.title is null
     or import_call.started_at is null or import_call.ended_at is null then
    raise exception 'platform, call_id, profile_id, title, started_at and ended_at are required'
      using errcode = '22004';
  end if;
  if import_call.platform !~ '^[a-z][a-z0-9_]{0,31}$' then
    raise exception 'platform must match ^[a-z][a-z0-9_]{0,31}$ (e.g. vapi), not %',
      quote_literal(left(import_call.platform, 40))
      using errcode = '22023';
  end if;
  if char_length(import_call.call_id) not between 1 and 200 then
    raise exception 'call_id must have 1 to 200 characters, not %',
      char_length(import_call.call_id)
      using errcode = '22023';
  end if;
  if import_call.ended_at < import_call.started_at then
    raise exception 'the call ends (%) before it starts (%)', import_call.ended_at,
      import_call.started_at
      using errcode = '22023';
  end if;
  if import_call.segments is not null and jsonb_typeof(import_call.segments) <> 'array' then
    raise exception 'segments must be a JSON array of segment objects, not %',
      jsonb_typeof(import_call.segments)
      using errcode = '22023';
  end if;

  select p.company_id into owner_company from public.profiles p
  where p.id = import_call.profile_id;
  if not found then
    raise exception 'profile % does not exist', import_call.profile_id using errcode = '23503';
  end if;

  -- The key first: a concurrent import of the same call waits here until this one commits
  -- (then finds its row) or rolls back (then goes on itself).
  insert into private.session_imports as i (company_id, platform, call_id, session_id)
  values (owner_company, import_call.platform, import_call.call_id, new_id)
  on conflict on constraint session_imports_pkey do nothing;
  if not found then
    return query
      select i.session_id, false from private.session_imports i
      where i.company_id = owner_company and i.platform = import_call.platform
        and i.call_id = import_call.call_id;
    return;
  end if;

  insert into public.sessions (id, profile_id, title, started_at, metadata)
  values (new_id, import_call.profile_id, import_call.title, import_call.started_at,
          coalesce(import_call.metadata, '{}'::jsonb));

  total := coalesce(jsonb_array_length(import_call.segments), 0);
  while done < total loop
    select jsonb_agg(e.v order by e.n) into batch
    from jsonb_array_elements(import_call.segments) with ordinality e(v, n)
    where e.n > done and e.n <= done + 1000;
    perform public.append_transcript_segments(new_id, batch);
    done := done + 1000;
  end loop;

  update public.sessions s set status = 'completed', ended_at = import_call.ended_at
  where s.id = new_id;

  return query select new_id, true;
end;
$$;
revoke all on function private.import_call(text, text, uuid, text, timestamptz, timestamptz,
  jsonb, jsonb) from public, anon, authenticated;
grant execute on function private.import_call(text, text, uuid, text, timestamptz, timestamptz,
  jsonb, jsonb) to service_role;

/**
 * Import one finished call of a hosted platform as a completed session (see the top of this
 * migration). `segments` are final segments as append_transcript_segments takes them
 * (seq, speaker, text, start_ms, end_ms[, confidence, words, segment_id]), offsets from the
 * call's start; `metadata` becomes the session's metadata.
 */
create or replace function public.import_call(
  platform text,
  call_id text,
  profile_id uuid,
  title text,
  started_at timestamptz,
  ended_at timestamptz,
  segments jsonb default '[]'::jsonb,
  metadata jsonb default '{}'::jsonb
)
returns table (session_id uuid, created boolean)
language sql
volatile
security invoker
set search_path = ''
as $$
  select * from private.import_call(
    import_call.platform, import_call.call_id, import_call.profile_id, import_call.title,
    import_call.started_at, import_call.ended_at, import_call.segments, import_call.metadata);
$$;
revoke all on function public.import_call(text, text, uuid, text, timestamptz, timestamptz,
  jsonb, jsonb) from public, anon, authenticated;
grant execute on function public.import_call(text, text, uuid, text, timestamptz, timestamptz,
  jsonb, jsonb) to service_role;

select private.apply_value_policy();
