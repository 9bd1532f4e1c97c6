/**
 * voicesessions — GDPR: erasure, anonymization, export, retention
 * ================================================================
 * The database half of the data-subject rights (GDPR Arts. 15, 17, 20, 5(1)(e), 12(3), 30).
 * Each operation is one function call, hence one transaction: it either happens completely,
 * with its `gdpr_requests` row and its audit entry, or not at all.
 *
 *   public.gdpr_erase_user(subject_id, include_account, dry_run)      Art. 17 erasure
 *   public.gdpr_confirm_storage_removed(request_id, paths)            storage objects deleted
 *   public.gdpr_pending_storage(subject_id)                           storage still to delete
 *   public.gdpr_anonymize_session(session_id, extra_personal_keys)    one session anonymized
 *   public.gdpr_export_user(subject_id)                               Art. 15/20 export
 *   public.gdpr_apply_retention(company_id, dry_run, batch_size)      Art. 5(1)(e) retention
 *   public.gdpr_list_requests(status, overdue)                        requests, overdue ones
 *
 * Shape of the functions
 * ----------------------
 * The API calls the `public` functions. They are SECURITY INVOKER wrappers around functions
 * of the same name in `private` (the schema PostgREST does not expose), which are SECURITY
 * DEFINER, check the caller themselves (private.gdpr_authorize*) and do the work. A definer
 * function in an exposed schema that `authenticated` may execute is what the Supabase
 * advisor flags (lint 0029), and with good reason: this is the shape that keeps every check
 * inside the database while exposing nothing that bypasses RLS by itself.
 *
 * Who may do what (errcode 42501 for everyone else, anon included)
 * ----------------------------------------------------------------
 *   about a person (erase, export, pending storage of a subject):
 *       the person themself (auth.uid()), an admin of their company, the service role.
 *   about a session (anonymize): its owner, an admin of its company, the service role.
 *   about a request (confirm storage removed): its subject, an admin of its company, the
 *       service role.
 *   about a company (retention, listing requests, every pending storage object): an admin
 *       of the company, the service role; retention over all companies at once: the service
 *       role only.
 * Managers, other trainees of the same company and admins of other companies are refused.
 * "The service role" is a request that runs as `service_role` (PostgREST with the service
 * key, the SDK's Postgres backend), or an operator connected directly, without JWT claims,
 * as a superuser or a role with BYPASSRLS (Supabase's `postgres`). A request whose role or
 * claims say anon/authenticated is never the service role, whoever logged in
 * (private.gdpr_is_service_role).
 *
 * Missing things: a subject the database knows nothing about (no profile, no auth user, no
 * earlier GDPR request), a session or a request that does not exist: errcode P0002
 * (no_data_found) for callers who may act on anything of that kind (the service role, and a
 * person asking about themself); 42501 for everyone else, so that probing ids reveals
 * nothing. Bad arguments: 22004 (null) and 22023 (invalid value). Anonymizing a session that
 * is still active: 23514 (complete the session first: segments may still arrive).
 *
 * Records (Art. 30) without the erased content
 * --------------------------------------------
 * An erasure or anonymization that changes something, every export, and a retention run for
 * each company where it changed something write one `gdpr_requests` row and one `audit_log`
 * entry (confirming storage removal updates the request and adds an entry). Both identify
 * the person only by `subject_ref` (a salted hash, private.subject_ref) and hold only
 * categories, counts, stores, ids of requests, sessions and companies (never of the person)
 * and — until the objects are confirmed deleted — the storage paths still to delete (paths
 * are `<company_id>/<profile_id>/<session_id>.<ext>` in the `session-audio` bucket, i.e. they
 * contain the person's id; they leave the request as soon as gdpr_confirm_storage_removed is
 * called for them). When the person acts on their own data, the entry's actor_id and the
 * request's requested_by are left null (actor_role and details.actor = 'subject' say who
 * acted), so that erasing them leaves no raw id behind. An erasure or anonymization that
 * finds nothing to change (a repeated call) and every dry run write nothing.
 *
 * Storage, and what no database function can reach
 * -------------------------------------------------
 * Storage objects must be deleted through the Storage API (deleting rows of storage.objects
 * orphans the files, and Supabase blocks it). So the erasure records the objects to delete as
 * `pending_storage` in its request *before* deleting the rows that name them, in the same
 * transaction; the SDK then deletes the objects and calls gdpr_confirm_storage_removed. A
 * crash between the two is resumed by running the erasure again: it returns the pending
 * objects of every open request of that person (gdpr_pending_storage lists them too).
 * Out of reach, to be handled by the operator and documented to users:
 *   - backups and point-in-time recovery age out on their own cycle;
 *   - Broadcast copies of live events live 3 days in realtime.messages: erasure and
 *     anonymization delete those of the sessions concerned when the function owner may
 *     (reported as `unreachable` otherwise); copies of other channels are not looked at;
 *   - processors (ElevenLabs, OpenAI, transcription providers) must be asked separately;
 *   - words a person spoke as a coach or peer in someone else's session stay in that
 *     session's transcript (it is also the other person's data); the link to the person
 *     (their participant row) is erased.
 *   - audit entries of actions an erased person took on *other* people's data (as an admin)
 *     keep their actor_id: the audit log is append-only, and it is the record of processing.
 */

-- Who is calling ----------------------------------------------------------------------------

/**
 * True when the current request runs as the service role, or for an operator connected
 * directly without JWT claims as a superuser or a BYPASSRLS role. A request whose effective
 * role (`set role`, as PostgREST does it) or whose JWT claims say anon or authenticated is
 * never the service role, whoever logged in. Inside a security-definer function
 * current_setting('role') still names the caller's role, which is what makes this usable
 * from the definer functions below.
 */
create function private.gdpr_is_service_role()
returns boolean
language plpgsql
stable
set search_path = ''
as $$
declare
  effective_role text := coalesce(nullif(pg_catalog.current_setting('role', true), ''), 'none');
  claims_role text := (select auth.role());
begin
  if effective_role in ('anon', 'authenticated')
     or coalesce(claims_role in ('anon', 'authenticated'), false) then
    return false;
  end if;
  if effective_role = 'service_role' then
    return true;
  end if;
  if claims_role is not null and claims_role <> 'service_role' then
    return false;
  end if;
  return exists (
    select 1 from pg_catalog.pg_roles r
    where r.rolname = case when effective_role = 'none' then session_user::text
                           else effective_role end
      and (r.rolsuper or r.rolbypassrls)
  );
end;
$$;
revoke all on function private.gdpr_is_service_role() from public;
grant execute on function private.gdpr_is_service_role() to authenticated, service_role;

/**
 * Authorizes the caller to act on a data subject's data: the subject themself, an admin of
 * the subject's company, or the service role; anyone else gets 42501. Returns the subject's
 * company (from their profile or, once the profile is erased, from their latest GDPR
 * request; null when neither exists). A subject unknown to the database (no profile, no
 * auth user, no GDPR request) is P0002 for the service role and the subject, 42501 for
 * everyone else. Called only by the definer functions below.
 */
create function private.gdpr_authorize(subject uuid)
returns uuid
language plpgsql
stable
set search_path = ''
as $$
declare
  caller uuid := (select auth.uid());
  subject_company uuid;
  known boolean;
begin
  if gdpr_authorize.subject is null then
    raise exception 'a subject id is required' using errcode = '22004';
  end if;
  select p.company_id into subject_company
  from public.profiles p where p.id = gdpr_authorize.subject;
  known := found;
  if not known then
    select r.company_id into subject_company
    from public.gdpr_requests r
    where r.subject_ref = private.subject_ref(gdpr_authorize.subject)
    order by (r.company_id is null), r.requested_at desc
    limit 1;
    known := found
      or exists (select 1 from auth.users u where u.id = gdpr_authorize.subject);
  end if;
  if private.gdpr_is_service_role()
     or (caller is not null and caller = gdpr_authorize.subject) then
    if not known then
      raise exception 'no data subject %', gdpr_authorize.subject
        using errcode = 'P0002',
              hint = 'Nothing in this database is about that id: no profile, no auth user, no GDPR request.';
    end if;
    return subject_company;
  end if;
  if caller is not null and subject_company is not null
     and subject_company = (select private.admin_company_id()) then
    return subject_company;
  end if;
  raise exception 'not allowed: only the data subject, an admin of their company or the service role may do this'
    using errcode = '42501';
end;
$$;
revoke all on function private.gdpr_authorize(uuid) from public;

/**
 * Authorizes the caller to act on a session: its owner, an admin of its company, or the
 * service role (42501 otherwise; P0002 for the service role when the session does not
 * exist). Returns the session's owner and company.
 */
create function private.gdpr_authorize_session(
  session_id uuid,
  out profile_id uuid,
  out company_id uuid
)
language plpgsql
stable
set search_path = ''
as $$
declare
  caller uuid := (select auth.uid());
begin
  if gdpr_authorize_session.session_id is null then
    raise exception 'a session id is required' using errcode = '22004';
  end if;
  select s.profile_id, s.company_id
  into gdpr_authorize_session.profile_id, gdpr_authorize_session.company_id
  from public.sessions s where s.id = gdpr_authorize_session.session_id;
  if private.gdpr_is_service_role() then
    if not found then
      raise exception 'session % does not exist', gdpr_authorize_session.session_id
        using errcode = 'P0002';
    end if;
    return;
  end if;
  if found and caller is not null
     and (caller = gdpr_authorize_session.profile_id
          or gdpr_authorize_session.company_id = (select private.admin_company_id())) then
    return;
  end if;
  raise exception 'not allowed: only the session''s owner, an admin of its company or the service role may do this'
    using errcode = '42501';
end;
$$;
revoke all on function private.gdpr_authorize_session(uuid) from public;

/**
 * Authorizes the caller to act on a company: an admin of it or the service role (42501
 * otherwise). A null company means every company: the service role only. P0002 for the
 * service role when the company does not exist.
 */
create function private.gdpr_authorize_company(company_id uuid)
returns void
language plpgsql
stable
set search_path = ''
as $$
begin
  if private.gdpr_is_service_role() then
    if gdpr_authorize_company.company_id is not null and not exists (
      select 1 from public.companies c where c.id = gdpr_authorize_company.company_id
    ) then
      raise exception 'company % does not exist', gdpr_authorize_company.company_id
        using errcode = 'P0002';
    end if;
    return;
  end if;
  if gdpr_authorize_company.company_id is not null
     and gdpr_authorize_company.company_id = (select private.admin_company_id()) then
    return;
  end if;
  if gdpr_authorize_company.company_id is null then
    raise exception 'not allowed: only the service role may act on every company at once'
      using errcode = '42501',
            hint = 'Admins pass the company_id of their company.';
  end if;
  raise exception 'not allowed: only an admin of the company or the service role may do this'
    using errcode = '42501';
end;
$$;
revoke all on function private.gdpr_authorize_company(uuid) from public;

-- Records: requests and audit entries ------------------------------------------------------

/**
 * Writes one audit entry for a GDPR operation. Like private.audit (same columns, same actor
 * rules), but it takes the subject's reference rather than their id (confirming storage
 * removal knows only the request's reference) and leaves actor_id null when the actor is
 * the subject (details.actor = 'subject'), so that erasing a person who acted on their own
 * data leaves no raw id in the append-only log.
 */
create function private.gdpr_audit(
  action text,
  entity_type text,
  entity_id uuid,
  company_id uuid,
  subject_ref text,
  details jsonb
)
returns bigint
language plpgsql
set search_path = ''
as $$
declare
  caller uuid := (select auth.uid());
  by_subject boolean := caller is not null and gdpr_audit.subject_ref is not null
                        and private.subject_ref(caller) = gdpr_audit.subject_ref;
  entry_id bigint;
begin
  insert into public.audit_log
    (actor_id, actor_role, action, entity_type, entity_id, subject_ref, company_id, details)
  values (
    case when by_subject then null else caller end,
    coalesce((select auth.role()), session_user::text),
    gdpr_audit.action,
    gdpr_audit.entity_type,
    gdpr_audit.entity_id,
    gdpr_audit.subject_ref,
    gdpr_audit.company_id,
    coalesce(gdpr_audit.details, '{}'::jsonb)
      || case when by_subject then '{"actor": "subject"}'::jsonb else '{}'::jsonb end
  )
  returning id into entry_id;
  return entry_id;
end;
$$;
revoke all on function private.gdpr_audit(text, text, uuid, uuid, text, jsonb) from public;

/**
 * Opens a GDPR request (status in_progress, started now) and returns its id. requested_by is
 * the caller, or null when the caller is the subject (see private.gdpr_audit).
 */
create function private.gdpr_open_request(
  kind public.gdpr_request_kind,
  subject_ref text,
  company_id uuid,
  details jsonb
)
returns uuid
language plpgsql
set search_path = ''
as $$
declare
  caller uuid := (select auth.uid());
  request_id uuid;
begin
  insert into public.gdpr_requests
    (kind, subject_ref, company_id, status, requested_by, started_at, details)
  values (
    gdpr_open_request.kind,
    gdpr_open_request.subject_ref,
    gdpr_open_request.company_id,
    'in_progress',
    case when caller is not null and gdpr_open_request.subject_ref is not null
              and private.subject_ref(caller) = gdpr_open_request.subject_ref then null
         else caller end,
    now(),
    coalesce(gdpr_open_request.details, '{}'::jsonb)
  )
  returning id into request_id;
  return request_id;
end;
$$;
revoke all on function private.gdpr_open_request(public.gdpr_request_kind, text, uuid, jsonb)
  from public;

/**
 * Merges `details` into a request's details and completes the request when no storage
 * object is pending any more. Returns the resulting status.
 */
create function private.gdpr_settle_request(request_id uuid, details jsonb)
returns public.gdpr_request_status
language plpgsql
set search_path = ''
as $$
declare
  new_status public.gdpr_request_status;
begin
  update public.gdpr_requests r
  set details = r.details || coalesce(gdpr_settle_request.details, '{}'::jsonb),
      status = case
        when jsonb_array_length(coalesce(
               (r.details || coalesce(gdpr_settle_request.details, '{}'::jsonb))
                 -> 'pending_storage', '[]'::jsonb)) = 0
        then 'completed'::public.gdpr_request_status
        else 'in_progress'::public.gdpr_request_status
      end,
      completed_at = case
        when jsonb_array_length(coalesce(
               (r.details || coalesce(gdpr_settle_request.details, '{}'::jsonb))
                 -> 'pending_storage', '[]'::jsonb)) = 0
        then coalesce(r.completed_at, now())
      end
  where r.id = gdpr_settle_request.request_id
  returning r.status into new_status;
  return new_status;
end;
$$;
revoke all on function private.gdpr_settle_request(uuid, jsonb) from public;

/**
 * The storage objects still to delete for a subject: every entry of `pending_storage` of
 * their open requests, as [{request_id, bucket, path}].
 */
create function private.gdpr_open_pending(subject_ref text)
returns jsonb
language sql
stable
set search_path = ''
as $$
  select coalesce(
    jsonb_agg(
      jsonb_build_object('request_id', r.id, 'bucket', e.value ->> 'bucket',
                         'path', e.value ->> 'path')
      order by r.requested_at, r.id, e.ordinality
    ),
    '[]'::jsonb
  )
  from public.gdpr_requests r
  cross join lateral jsonb_array_elements(coalesce(r.details -> 'pending_storage', '[]'::jsonb))
    with ordinality e
  where r.subject_ref = gdpr_open_pending.subject_ref
    and r.status in ('pending', 'in_progress');
$$;
revoke all on function private.gdpr_open_pending(text) from public;

/** A transaction-level advisory lock key for GDPR work on one subject or company. */
create function private.gdpr_lock_key(scope text, id uuid)
returns bigint
language sql
immutable
set search_path = ''
as $$
  select pg_catalog.hashtextextended('voicesessions.gdpr.' || gdpr_lock_key.scope || ':'
                                     || gdpr_lock_key.id::text, 0);
$$;
revoke all on function private.gdpr_lock_key(text, uuid) from public;

-- Personal keys in JSON documents ---------------------------------------------------------

/**
 * The keys removed from JSON documents (analysis results, session metadata and analytics
 * summary, participant personas) when a session is anonymized, unless the caller adds more:
 *
 *   personal_context, audio_samples, name, full_name, first_name, last_name, email, phone,
 *   address, speaker_name, display_name, quotes, quote, transcript, text, excerpt, notes,
 *   utterances, words
 *
 * Keys match whatever their case and separators (private.gdpr_normalize_key): `full_name`
 * also removes `fullName` and `Full-Name`.
 */
create function private.gdpr_default_personal_keys()
returns text[]
language sql
immutable
parallel safe
set search_path = ''
as $$
  select array[
    'personal_context', 'audio_samples', 'name', 'full_name', 'first_name', 'last_name',
    'email', 'phone', 'address', 'speaker_name', 'display_name', 'quotes', 'quote',
    'transcript', 'text', 'excerpt', 'notes', 'utterances', 'words'
  ]::text[];
$$;
revoke all on function private.gdpr_default_personal_keys() from public;

/** A JSON key in comparable form: lower case, without '_', '-', '.' or spaces. */
create function private.gdpr_normalize_key(key text)
returns text
language sql
immutable
parallel safe
set search_path = ''
as $$
  select pg_catalog.regexp_replace(lower(gdpr_normalize_key.key), '[_\-. ]', '', 'g');
$$;
revoke all on function private.gdpr_normalize_key(text) from public;

/**
 * `doc` without the object members whose key is one of `keys`, at any depth: inside nested
 * objects and inside arrays, however deep. Keys match whatever their case and separators
 * (private.gdpr_normalize_key); null keys are ignored. Scalars come back unchanged; null
 * stays null.
 */
create function private.strip_keys(doc jsonb, keys text[])
returns jsonb
language plpgsql
immutable
parallel safe
set search_path = ''
as $$
declare
  normalized text[];
begin
  if doc is null or jsonb_typeof(doc) not in ('object', 'array') then
    return doc;
  end if;
  select coalesce(array_agg(private.gdpr_normalize_key(k)), '{}') into normalized
  from unnest(coalesce(strip_keys.keys, '{}')) k
  where k is not null;
  return private.gdpr_strip_normalized_keys(doc, normalized);
end;
$$;

/** The recursion of private.strip_keys, over keys already normalized. */
create function private.gdpr_strip_normalized_keys(doc jsonb, normalized text[])
returns jsonb
language plpgsql
immutable
parallel safe
set search_path = ''
as $$
begin
  case jsonb_typeof(doc)
    when 'object' then
      return coalesce(
        (select jsonb_object_agg(e.key, private.gdpr_strip_normalized_keys(e.value, normalized))
         from jsonb_each(doc) e
         where not (private.gdpr_normalize_key(e.key) = any (normalized))),
        '{}'::jsonb);
    when 'array' then
      return coalesce(
        (select jsonb_agg(private.gdpr_strip_normalized_keys(e.value, normalized)
                          order by e.ordinality)
         from jsonb_array_elements(doc) with ordinality e),
        '[]'::jsonb);
    else
      return doc;
  end case;
end;
$$;
revoke all on function private.strip_keys(jsonb, text[]) from public;
revoke all on function private.gdpr_strip_normalized_keys(jsonb, text[]) from public;

/** The default personal keys plus the caller's (trimmed, empty ones ignored), deduplicated. */
create function private.gdpr_personal_keys(extra text[])
returns text[]
language sql
immutable
set search_path = ''
as $$
  select array_agg(k order by first_seen)
  from (
    select btrim(k) as k, min(n) as first_seen
    from unnest(private.gdpr_default_personal_keys()
                || coalesce(gdpr_personal_keys.extra, '{}'::text[])) with ordinality u(k, n)
    where k is not null and btrim(k) <> ''
    group by btrim(k)
  ) keys;
$$;
revoke all on function private.gdpr_personal_keys(text[]) from public;

-- Building blocks shared by anonymization and retention -----------------------------------

/**
 * The audio of the given sessions as pending storage objects [{bucket, path}], ordered. With
 * `clear`, also sets their audio_path and audio_size_bytes to null.
 */
create function private.gdpr_take_audio(session_ids uuid[], clear boolean)
returns jsonb
language plpgsql
set search_path = ''
as $$
declare
  pending jsonb;
begin
  select coalesce(
           jsonb_agg(jsonb_build_object('bucket', 'session-audio', 'path', s.audio_path)
                     order by s.audio_path),
           '[]'::jsonb)
  into pending
  from public.sessions s
  where s.id = any (gdpr_take_audio.session_ids) and s.audio_path is not null;
  if gdpr_take_audio.clear then
    update public.sessions s
    set audio_path = null, audio_size_bytes = null
    where s.id = any (gdpr_take_audio.session_ids)
      and (s.audio_path is not null or s.audio_size_bytes is not null);
  end if;
  return pending;
end;
$$;
revoke all on function private.gdpr_take_audio(uuid[], boolean) from public;

/**
 * Anonymizes the transcripts of the given sessions: every segment's text becomes
 * '[anonymized]' and its word timings are dropped; each assembled transcript's content
 * becomes '[anonymized]' and its structured content '[]' (language, word count and confidence
 * stay), with is_anonymized / anonymized_at set. A session without an assembled transcript
 * gets one, anonymized: the transcripts row is the durable marker that a session's
 * transcript is anonymized (retention and search_transcripts rely on it). Returns
 * {transcripts, segments}: rows changed or created; a second call returns zeros.
 */
create function private.gdpr_anonymize_transcripts(session_ids uuid[])
returns jsonb
language plpgsql
set search_path = ''
as $$
declare
  n_segments bigint;
  n_transcripts bigint;
  n_created bigint;
begin
  update public.transcript_segments g
  set text = '[anonymized]', words = null
  where g.session_id = any (gdpr_anonymize_transcripts.session_ids)
    and (g.text <> '[anonymized]' or g.words is not null);
  get diagnostics n_segments = row_count;

  update public.transcripts t
  set content = '[anonymized]',
      structured_content = '[]'::jsonb,
      is_anonymized = true,
      anonymized_at = coalesce(t.anonymized_at, now())
  where t.session_id = any (gdpr_anonymize_transcripts.session_ids)
    and (not t.is_anonymized or t.content <> '[anonymized]'
         or t.structured_content <> '[]'::jsonb);
  get diagnostics n_transcripts = row_count;

  insert into public.transcripts (session_id, content, structured_content, is_anonymized,
                                  anonymized_at)
  select s.id, '[anonymized]', '[]'::jsonb, true, now()
  from public.sessions s
  where s.id = any (gdpr_anonymize_transcripts.session_ids)
    and not exists (select 1 from public.transcripts t where t.session_id = s.id)
  on conflict (session_id) do nothing;
  get diagnostics n_created = row_count;

  return jsonb_build_object('transcripts', n_transcripts + n_created, 'segments', n_segments);
end;
$$;
revoke all on function private.gdpr_anonymize_transcripts(uuid[]) from public;

/**
 * Removes what identifies people from the given sessions, apart from transcripts and audio:
 * the title becomes 'Anonymized session'; metadata and analytics_summary, participant
 * personas and analysis results lose the personal `keys` at any depth; participant display
 * names become null. session_analytics (scores, metrics) stay. Returns {sessions,
 * participants, analyses}: rows changed; a second call returns zeros.
 */
create function private.gdpr_strip_sessions(session_ids uuid[], keys text[])
returns jsonb
language plpgsql
set search_path = ''
as $$
declare
  n_sessions bigint;
  n_participants bigint;
  n_analyses bigint;
begin
  update public.sessions s
  set title = 'Anonymized session',
      metadata = private.strip_keys(s.metadata, gdpr_strip_sessions.keys),
      analytics_summary = private.strip_keys(s.analytics_summary, gdpr_strip_sessions.keys)
  where s.id = any (gdpr_strip_sessions.session_ids)
    and (s.title <> 'Anonymized session'
         or s.metadata <> private.strip_keys(s.metadata, gdpr_strip_sessions.keys)
         or s.analytics_summary
            <> private.strip_keys(s.analytics_summary, gdpr_strip_sessions.keys));
  get diagnostics n_sessions = row_count;

  update public.session_participants p
  set display_name = null,
      persona = private.strip_keys(p.persona, gdpr_strip_sessions.keys)
  where p.session_id = any (gdpr_strip_sessions.session_ids)
    and (p.display_name is not null
         or p.persona <> private.strip_keys(p.persona, gdpr_strip_sessions.keys));
  get diagnostics n_participants = row_count;

  update public.analysis_results a
  set results = private.strip_keys(a.results, gdpr_strip_sessions.keys)
  where a.session_id = any (gdpr_strip_sessions.session_ids)
    and a.results <> private.strip_keys(a.results, gdpr_strip_sessions.keys);
  get diagnostics n_analyses = row_count;

  return jsonb_build_object('sessions', n_sessions, 'participants', n_participants,
                            'analyses', n_analyses);
end;
$$;
revoke all on function private.gdpr_strip_sessions(uuid[], text[]) from public;

/**
 * The storage objects of a subject in the `session-audio` bucket: the audio_path of each of
 * the given sessions (the subject's), plus every object of the bucket that the subject owns
 * or that lies in a folder of theirs (`<company_id>/<profile_id>/...`), so that an upload
 * whose session never got its audio_path is found too. `id`, `metadata` and `created_at`
 * come from storage.objects and are null for a path without an object row. Reads
 * storage.objects only where it exists (always on Supabase and after the local bootstrap);
 * it has no index on the owner, so this reads the bucket's rows once per call.
 */
create function private.gdpr_subject_objects(subject uuid, session_ids uuid[])
returns table (id uuid, bucket text, path text, metadata jsonb, created_at timestamptz)
language plpgsql
stable
set search_path = ''
as $$
begin
  if to_regclass('storage.objects') is null then
    return query
      select distinct null::uuid, 'session-audio'::text, s.audio_path, null::jsonb,
                      null::timestamptz
      from public.sessions s
      where s.id = any (gdpr_subject_objects.session_ids) and s.audio_path is not null;
    return;
  end if;
  return query
    with paths as (
      select s.audio_path as path
      from public.sessions s
      where s.id = any (gdpr_subject_objects.session_ids) and s.audio_path is not null
    ),
    objects as (
      select o.id, o.bucket_id::text as bucket, o.name::text as path, o.metadata, o.created_at
      from storage.objects o
      where o.bucket_id = 'session-audio'
        and (o.owner = gdpr_subject_objects.subject
             or o.owner_id = gdpr_subject_objects.subject::text
             or split_part(o.name, '/', 2) = gdpr_subject_objects.subject::text
             or o.name in (select p.path from paths p))
    )
    select o.id, o.bucket, o.path, o.metadata, o.created_at from objects o
    union all
    select null::uuid, 'session-audio'::text, p.path, null::jsonb, null::timestamptz
    from (select distinct p.path from paths p) p
    where not exists (select 1 from objects o where o.path = p.path);
end;
$$;
revoke all on function private.gdpr_subject_objects(uuid, uuid[]) from public;

/** The storage objects of a subject (private.gdpr_subject_objects) as [{bucket, path}]. */
create function private.gdpr_subject_storage(subject uuid, session_ids uuid[])
returns jsonb
language sql
stable
set search_path = ''
as $$
  select coalesce(jsonb_agg(jsonb_build_object('bucket', x.bucket, 'path', x.path)
                            order by x.bucket, x.path), '[]'::jsonb)
  from (
    select distinct o.bucket, o.path
    from private.gdpr_subject_objects(gdpr_subject_storage.subject,
                                      gdpr_subject_storage.session_ids) o
  ) x;
$$;
revoke all on function private.gdpr_subject_storage(uuid, uuid[]) from public;

/**
 * True when an entry of GoTrue's auth.audit_log_entries (sign-ups, logins, admin actions;
 * present on Supabase, not created by the local bootstrap) is about the subject: as the actor
 * (`actor_id`, `actor_username`) or as the user acted on (`traits.user_id`,
 * `traits.user_email`).
 */
create function private.gdpr_is_auth_audit_about(payload json, subject uuid, email text)
returns boolean
language sql
immutable
set search_path = ''
as $$
  select coalesce(
    gdpr_is_auth_audit_about.payload ->> 'actor_id' = gdpr_is_auth_audit_about.subject::text
    or gdpr_is_auth_audit_about.payload -> 'traits' ->> 'user_id'
       = gdpr_is_auth_audit_about.subject::text
    or (gdpr_is_auth_audit_about.email is not null
        and (lower(gdpr_is_auth_audit_about.payload ->> 'actor_username')
               = lower(gdpr_is_auth_audit_about.email)
             or lower(gdpr_is_auth_audit_about.payload -> 'traits' ->> 'user_email')
               = lower(gdpr_is_auth_audit_about.email))),
    false);
$$;
revoke all on function private.gdpr_is_auth_audit_about(json, uuid, text) from public;

/**
 * Broadcast copies of sessions' live events: Supabase Realtime keeps what
 * public.broadcast_session_event sends to the private channel 'session:<session id>' in
 * realtime.messages for 3 days (transcript chunks included). Counts the copies of the given
 * sessions and, with `remove`, deletes them. Returns 0 where realtime.messages does not exist
 * (a plain PostgreSQL), and null where it exists but this function's owner may not delete
 * from it (the callers then report it as unreachable: the copies expire after 3 days).
 */
create function private.gdpr_session_broadcasts(session_ids uuid[], remove boolean)
returns bigint
language plpgsql
set search_path = ''
as $$
declare
  n bigint;
begin
  if to_regclass('realtime.messages') is null then
    return 0;
  end if;
  if not (pg_catalog.has_table_privilege('realtime.messages', 'SELECT')
          and pg_catalog.has_table_privilege('realtime.messages', 'DELETE')) then
    return null;
  end if;
  if gdpr_session_broadcasts.remove then
    delete from realtime.messages m
    where m.topic = any (select 'session:' || x::text
                         from unnest(gdpr_session_broadcasts.session_ids) x);
    get diagnostics n = row_count;
  else
    select count(*) into n
    from realtime.messages m
    where m.topic = any (select 'session:' || x::text
                         from unnest(gdpr_session_broadcasts.session_ids) x);
  end if;
  return n;
end;
$$;
revoke all on function private.gdpr_session_broadcasts(uuid[], boolean) from public;

/** Stores a GDPR function cannot clean itself, given the broadcast count (null: unreachable). */
create function private.gdpr_unreachable(broadcasts bigint)
returns jsonb
language sql
immutable
set search_path = ''
as $$
  select case when gdpr_unreachable.broadcasts is null then '["realtime.messages"]'::jsonb
              else '[]'::jsonb end;
$$;
revoke all on function private.gdpr_unreachable(bigint) from public;

-- Erasure (Art. 17) -----------------------------------------------------------------------

/**
 * What erasing a subject removes, per category: their sessions and, in them, participants,
 * segments, transcripts, analyses and analytics; their participations in other people's
 * sessions (counted with participants); the Broadcast copies of their sessions' live events
 * (realtime.messages); their profile; and with `include_account` their auth user, its
 * identities and GoTrue's audit entries about them.
 */
create function private.gdpr_erasure_counts(
  subject uuid,
  session_ids uuid[],
  include_account boolean,
  email text
)
returns jsonb
language plpgsql
stable
set search_path = ''
as $$
declare
  auth_audit bigint := 0;
begin
  if gdpr_erasure_counts.include_account and to_regclass('auth.audit_log_entries') is not null then
    select count(*) into auth_audit
    from auth.audit_log_entries e
    where private.gdpr_is_auth_audit_about(e.payload, gdpr_erasure_counts.subject,
                                           gdpr_erasure_counts.email);
  end if;
  return jsonb_build_object(
    'sessions', cardinality(gdpr_erasure_counts.session_ids),
    'participants', (select count(*) from public.session_participants p
                     where p.session_id = any (gdpr_erasure_counts.session_ids)
                        or p.profile_id = gdpr_erasure_counts.subject),
    'segments', (select count(*) from public.transcript_segments g
                 where g.session_id = any (gdpr_erasure_counts.session_ids)),
    'transcripts', (select count(*) from public.transcripts t
                    where t.session_id = any (gdpr_erasure_counts.session_ids)),
    'analyses', (select count(*) from public.analysis_results a
                 where a.session_id = any (gdpr_erasure_counts.session_ids)),
    'analytics', (select count(*) from public.session_analytics a
                  where a.session_id = any (gdpr_erasure_counts.session_ids)),
    'broadcasts', coalesce(private.gdpr_session_broadcasts(gdpr_erasure_counts.session_ids,
                                                           false), 0),
    'profile', (select count(*) from public.profiles p where p.id = gdpr_erasure_counts.subject),
    'account', case when gdpr_erasure_counts.include_account
                    then (select count(*) from auth.users u
                          where u.id = gdpr_erasure_counts.subject)
                    else 0 end,
    'identities', case when gdpr_erasure_counts.include_account
                       then (select count(*) from auth.identities i
                             where i.user_id = gdpr_erasure_counts.subject)
                       else 0 end,
    'auth_audit_entries', auth_audit
  );
end;
$$;
revoke all on function private.gdpr_erasure_counts(uuid, uuid[], boolean, text) from public;

/** The categories of a counts document whose count is not zero, in key order. */
create function private.gdpr_categories(counts jsonb)
returns jsonb
language sql
immutable
set search_path = ''
as $$
  select coalesce(jsonb_agg(c.key order by c.key), '[]'::jsonb)
  from jsonb_each(gdpr_categories.counts) c
  where jsonb_typeof(c.value) = 'number' and (c.value)::numeric > 0;
$$;
revoke all on function private.gdpr_categories(jsonb) from public;

/**
 * Pending storage entries [{bucket, path}] tagged with the request that holds them:
 * [{request_id, bucket, path}].
 */
create function private.gdpr_tag_pending(pending jsonb, request_id uuid)
returns jsonb
language sql
immutable
set search_path = ''
as $$
  select coalesce(
    jsonb_agg(jsonb_build_object('request_id', gdpr_tag_pending.request_id,
                                 'bucket', e.value ->> 'bucket', 'path', e.value ->> 'path')
              order by e.ordinality),
    '[]'::jsonb)
  from jsonb_array_elements(coalesce(gdpr_tag_pending.pending, '[]'::jsonb)) with ordinality e;
$$;
revoke all on function private.gdpr_tag_pending(jsonb, uuid) from public;

/**
 * Erases a data subject (implementation of public.gdpr_erase_user, which see).
 */
create function private.gdpr_erase_user(
  subject_id uuid,
  include_account boolean,
  dry_run boolean
)
returns jsonb
language plpgsql
volatile
security definer
set search_path = ''
as $$
declare
  subject uuid := gdpr_erase_user.subject_id;
  with_account boolean := coalesce(gdpr_erase_user.include_account, false);
  is_dry boolean := coalesce(gdpr_erase_user.dry_run, false);
  company uuid;
  ref text;
  subject_email text;
  session_ids uuid[];
  open_pending jsonb;
  new_pending jsonb;
  counts jsonb;
  categories jsonb;
  stores jsonb;
  request_stores jsonb;
  unreachable jsonb;
  nothing boolean;
  request_id uuid;
  request_status public.gdpr_request_status;
begin
  company := private.gdpr_authorize(subject);
  ref := private.subject_ref(subject);

  if is_dry then
    select coalesce(array_agg(s.id order by s.id), '{}') into session_ids
    from public.sessions s where s.profile_id = subject;
  else
    -- One erasure of a subject at a time. Locking the profile and the sessions makes every
    -- concurrent insert that references them (segments, analyses, participants, new
    -- sessions: their foreign-key checks) wait until this transaction ends, so the counts
    -- below are exactly what gets deleted.
    perform pg_catalog.pg_advisory_xact_lock(private.gdpr_lock_key('subject', subject));
    perform 1 from public.profiles p where p.id = subject for update;
    select coalesce(array_agg(x.id order by x.id), '{}') into session_ids
    from (select s.id from public.sessions s where s.profile_id = subject for update) x;
  end if;
  select u.email into subject_email from auth.users u where u.id = subject;

  -- Storage objects still pending in open requests of this subject are resumed, not recorded
  -- twice.
  open_pending := private.gdpr_open_pending(ref);
  select coalesce(jsonb_agg(o.value order by o.ordinality), '[]'::jsonb) into new_pending
  from jsonb_array_elements(private.gdpr_subject_storage(subject, session_ids))
    with ordinality o
  where not exists (
    select 1 from jsonb_array_elements(open_pending) p
    where p.value ->> 'bucket' = o.value ->> 'bucket' and p.value ->> 'path' = o.value ->> 'path'
  );

  counts := private.gdpr_erasure_counts(subject, session_ids, with_account, subject_email);
  categories := private.gdpr_categories(counts);
  unreachable := private.gdpr_unreachable(private.gdpr_session_broadcasts(session_ids, false));
  nothing := jsonb_array_length(categories) = 0 and jsonb_array_length(new_pending) = 0;
  stores := case when jsonb_array_length(categories) > 0 then '["database"]'::jsonb
                 else '[]'::jsonb end
            || case when jsonb_array_length(new_pending) + jsonb_array_length(open_pending) > 0
                    then '["storage"]'::jsonb else '[]'::jsonb end;
  request_stores := case when jsonb_array_length(categories) > 0 then '["database"]'::jsonb
                         else '[]'::jsonb end
                    || case when jsonb_array_length(new_pending) > 0 then '["storage"]'::jsonb
                            else '[]'::jsonb end;

  if is_dry or nothing then
    -- Nothing is written: a dry run, or a repeated erasure with nothing left in the database
    -- (it still hands back what storage objects remain to delete, so the caller can resume).
    return jsonb_build_object(
      'request_id', case when is_dry then null else (
        select r.id from public.gdpr_requests r
        where r.subject_ref = ref and r.kind = 'erasure'
        order by r.requested_at desc, r.id limit 1) end,
      'subject_ref', ref,
      'dry_run', is_dry,
      'include_account', with_account,
      'already_erased', nothing,
      'counts', counts,
      'categories', categories,
      'pending_storage', private.gdpr_tag_pending(new_pending, null) || open_pending,
      'stores', stores,
      'unreachable', unreachable,
      'status', null
    );
  end if;

  -- The request, with the storage objects to delete, is written before the rows that name
  -- them are deleted (one transaction: both commit or neither does).
  request_id := private.gdpr_open_request(
    'erasure', ref, company,
    jsonb_build_object('pending_storage', new_pending, 'include_account', with_account)
  );

  perform private.gdpr_session_broadcasts(session_ids, true);
  delete from public.transcript_segments g where g.session_id = any (session_ids);
  delete from public.transcripts t where t.session_id = any (session_ids);
  delete from public.analysis_results a where a.session_id = any (session_ids);
  delete from public.session_analytics a where a.session_id = any (session_ids);
  delete from public.session_participants p
  where p.session_id = any (session_ids) or p.profile_id = subject;
  delete from public.sessions s where s.id = any (session_ids);
  delete from public.profiles p where p.id = subject;
  if with_account then
    if to_regclass('auth.audit_log_entries') is not null then
      delete from auth.audit_log_entries e
      where private.gdpr_is_auth_audit_about(e.payload, subject, subject_email);
    end if;
    delete from auth.identities i where i.user_id = subject;
    delete from auth.users u where u.id = subject;
  end if;

  -- The request's stores are its own: 'storage' when it recorded objects to delete (the
  -- report below also says 'storage' when older requests are still waiting for some).
  request_status := private.gdpr_settle_request(
    request_id,
    jsonb_build_object('counts', counts, 'categories', categories, 'stores', request_stores)
  );
  perform private.gdpr_audit(
    'gdpr.erase', 'profile', null, company, ref,
    jsonb_build_object('request_id', request_id, 'categories', categories, 'counts', counts,
                       'stores', request_stores, 'include_account', with_account,
                       'pending_storage_count', jsonb_array_length(new_pending))
  );
  return jsonb_build_object(
    'request_id', request_id,
    'subject_ref', ref,
    'dry_run', false,
    'include_account', with_account,
    'already_erased', false,
    'counts', counts,
    'categories', categories,
    'pending_storage', private.gdpr_tag_pending(new_pending, request_id) || open_pending,
    'stores', stores,
    'unreachable', unreachable,
    'status', request_status
  );
end;
$$;
revoke all on function private.gdpr_erase_user(uuid, boolean, boolean) from public;
grant execute on function private.gdpr_erase_user(uuid, boolean, boolean)
  to authenticated, service_role;

/**
 * Erases everything the database holds about a person (GDPR Art. 17), in one transaction:
 * their sessions with participants, segments, transcripts, analyses and analytics; their
 * participations in other people's sessions; their profile; and with `include_account`
 * their auth user (with its identities and GoTrue's audit entries about them). Without
 * `include_account` the auth user (email, sign-in) stays, for a person who keeps using the
 * product.
 *
 * Storage: the audio objects (every audio_path of their sessions, and every object of the
 * `session-audio` bucket they own or that lies in their folder) are recorded as
 * `pending_storage` in the request before the rows are deleted; the caller deletes them
 * through the Storage API (or the local store) and calls gdpr_confirm_storage_removed. The
 * request is `completed` at once when there is nothing in storage, otherwise `in_progress`
 * until confirmed.
 *
 * Broadcast copies of their sessions' live events are deleted from realtime.messages too,
 * where the database has Realtime and allows it; otherwise the report lists
 * 'realtime.messages' under `unreachable` (those copies expire after 3 days).
 *
 * Returns {request_id, subject_ref, dry_run, include_account, already_erased, counts
 * {sessions, participants, segments, transcripts, analyses, analytics, broadcasts, profile,
 * account, identities, auth_audit_entries}, categories, pending_storage [{request_id, bucket,
 * path}], stores ('database', 'storage'), unreachable, status}.
 *
 * `dry_run` returns the same counts and storage objects and writes nothing (no request, no
 * audit entry). Idempotent: once nothing is left, a call returns zero counts,
 * already_erased = true, writes nothing, and still lists the storage objects every open
 * request of the person is waiting for (to resume an interrupted erasure).
 * Allowed: the person, an admin of their company, the service role (42501 otherwise).
 */
create function public.gdpr_erase_user(
  subject_id uuid,
  include_account boolean default false,
  dry_run boolean default false
)
returns jsonb
language sql
volatile
security invoker
set search_path = ''
as $$
  select private.gdpr_erase_user(gdpr_erase_user.subject_id, gdpr_erase_user.include_account,
                                 gdpr_erase_user.dry_run);
$$;
revoke all on function public.gdpr_erase_user(uuid, boolean, boolean) from public, anon;
grant execute on function public.gdpr_erase_user(uuid, boolean, boolean)
  to authenticated, service_role;

-- Storage objects still to delete -------------------------------------------------------

/**
 * Records that storage objects of a request were deleted (implementation of
 * public.gdpr_confirm_storage_removed, which see).
 */
create function private.gdpr_confirm_storage_removed(request_id uuid, paths text[])
returns jsonb
language plpgsql
volatile
security definer
set search_path = ''
as $$
declare
  caller uuid := (select auth.uid());
  is_service boolean := private.gdpr_is_service_role();
  req public.gdpr_requests%rowtype;
  pending jsonb;
  remaining jsonb;
  removed integer;
  not_pending integer;
  request_status public.gdpr_request_status;
begin
  if gdpr_confirm_storage_removed.request_id is null then
    raise exception 'a request id is required' using errcode = '22004';
  end if;
  select r.* into req from public.gdpr_requests r
  where r.id = gdpr_confirm_storage_removed.request_id
  for update;
  if not found then
    if is_service then
      raise exception 'GDPR request % does not exist', gdpr_confirm_storage_removed.request_id
        using errcode = 'P0002';
    end if;
    raise exception 'not allowed: only the request''s subject, an admin of its company or the service role may do this'
      using errcode = '42501';
  end if;
  -- coalesce: a comparison with a null (no admin company) must refuse, not slip through.
  if not coalesce(
       is_service
       or (caller is not null and req.subject_ref is not null
           and private.subject_ref(caller) = req.subject_ref)
       or (caller is not null and req.company_id is not null
           and req.company_id = (select private.admin_company_id())),
       false) then
    raise exception 'not allowed: only the request''s subject, an admin of its company or the service role may do this'
      using errcode = '42501';
  end if;
  if gdpr_confirm_storage_removed.paths is null then
    raise exception 'paths is required (the storage paths that were deleted)'
      using errcode = '22004';
  end if;

  pending := coalesce(req.details -> 'pending_storage', '[]'::jsonb);
  select coalesce(jsonb_agg(e.value order by e.ordinality), '[]'::jsonb) into remaining
  from jsonb_array_elements(pending) with ordinality e
  where not coalesce((e.value ->> 'path') = any (gdpr_confirm_storage_removed.paths), false);
  removed := jsonb_array_length(pending) - jsonb_array_length(remaining);
  select count(distinct p) into not_pending
  from unnest(gdpr_confirm_storage_removed.paths) p
  where p is not null
    and not exists (select 1 from jsonb_array_elements(pending) e where e.value ->> 'path' = p);

  request_status := req.status;
  if removed > 0 then
    request_status := private.gdpr_settle_request(
      req.id,
      jsonb_build_object(
        'pending_storage', remaining,
        'storage_removed', coalesce((req.details ->> 'storage_removed')::integer, 0) + removed
      )
    );
    perform private.gdpr_audit(
      'gdpr.storage_removed', 'gdpr_request', req.id, req.company_id, req.subject_ref,
      jsonb_build_object('request_id', req.id, 'kind', req.kind, 'stores', '["storage"]'::jsonb,
                         'removed', removed, 'remaining', jsonb_array_length(remaining))
    );
  end if;
  return jsonb_build_object(
    'request_id', req.id,
    'kind', req.kind,
    'removed', removed,
    'not_pending', not_pending,
    'remaining', private.gdpr_tag_pending(remaining, req.id),
    'status', request_status
  );
end;
$$;
revoke all on function private.gdpr_confirm_storage_removed(uuid, text[]) from public;
grant execute on function private.gdpr_confirm_storage_removed(uuid, text[])
  to authenticated, service_role;

/**
 * Records that the caller deleted these storage objects of a GDPR request (through the
 * Storage API or the local store): they leave the request's pending list — paths name the
 * person's folder, so none is kept once confirmed, only the number removed — and the request
 * is completed (completed_at set) when none remain. Paths that are not pending are ignored
 * and counted in `not_pending`; confirming twice changes nothing. Writes an audit entry
 * 'gdpr.storage_removed' when something was removed.
 * Returns {request_id, kind, removed, not_pending, remaining [{request_id, bucket, path}],
 * status}. Allowed: the request's subject, an admin of its company, the service role.
 */
create function public.gdpr_confirm_storage_removed(request_id uuid, paths text[])
returns jsonb
language sql
volatile
security invoker
set search_path = ''
as $$
  select private.gdpr_confirm_storage_removed(gdpr_confirm_storage_removed.request_id,
                                              gdpr_confirm_storage_removed.paths);
$$;
revoke all on function public.gdpr_confirm_storage_removed(uuid, text[]) from public, anon;
grant execute on function public.gdpr_confirm_storage_removed(uuid, text[])
  to authenticated, service_role;

/**
 * Open requests' pending storage objects (implementation of public.gdpr_pending_storage,
 * which see).
 */
create function private.gdpr_pending_storage(subject_id uuid)
returns table (
  request_id uuid,
  kind public.gdpr_request_kind,
  status public.gdpr_request_status,
  company_id uuid,
  requested_at timestamptz,
  due_at timestamptz,
  bucket text,
  path text
)
language plpgsql
stable
security definer
set search_path = ''
as $$
declare
  ref text;
  only_company uuid;
begin
  if gdpr_pending_storage.subject_id is not null then
    perform private.gdpr_authorize(gdpr_pending_storage.subject_id);
    ref := private.subject_ref(gdpr_pending_storage.subject_id);
  elsif not private.gdpr_is_service_role() then
    only_company := (select private.admin_company_id());
    if only_company is null then
      raise exception 'not allowed: only admins and the service role may list every pending object'
        using errcode = '42501',
              hint = 'Pass subject_id to list the objects pending for yourself.';
    end if;
  end if;
  return query
    select r.id, r.kind, r.status, r.company_id, r.requested_at, r.due_at,
           e.value ->> 'bucket', e.value ->> 'path'
    from public.gdpr_requests r
    cross join lateral jsonb_array_elements(coalesce(r.details -> 'pending_storage', '[]'::jsonb))
      with ordinality e
    where r.status in ('pending', 'in_progress')
      and (ref is null or r.subject_ref = ref)
      and (only_company is null or r.company_id = only_company)
    order by r.requested_at, r.id, e.ordinality;
end;
$$;
revoke all on function private.gdpr_pending_storage(uuid) from public;
grant execute on function private.gdpr_pending_storage(uuid) to authenticated, service_role;

/**
 * The storage objects that open GDPR requests are still waiting for, one row per object:
 * what a caller deletes (then confirms) to resume an interrupted erasure, anonymization or
 * retention run. With `subject_id`: that person's requests (allowed: the person, an admin
 * of their company, the service role). Without: every open request (service role) or those
 * of the caller's company (admins); 42501 for anyone else.
 */
create function public.gdpr_pending_storage(subject_id uuid default null)
returns table (
  request_id uuid,
  kind public.gdpr_request_kind,
  status public.gdpr_request_status,
  company_id uuid,
  requested_at timestamptz,
  due_at timestamptz,
  bucket text,
  path text
)
language sql
stable
security invoker
set search_path = ''
as $$
  select * from private.gdpr_pending_storage(gdpr_pending_storage.subject_id);
$$;
revoke all on function public.gdpr_pending_storage(uuid) from public, anon;
grant execute on function public.gdpr_pending_storage(uuid) to authenticated, service_role;

-- Anonymization -------------------------------------------------------------------------

/**
 * Anonymizes one session (implementation of public.gdpr_anonymize_session, which see).
 */
create function private.gdpr_anonymize_session(session_id uuid, extra_personal_keys text[])
returns jsonb
language plpgsql
volatile
security definer
set search_path = ''
as $$
declare
  owner_id uuid;
  company uuid;
  current_status public.session_status;
  keys text[] := private.gdpr_personal_keys(gdpr_anonymize_session.extra_personal_keys);
  ids uuid[] := array[gdpr_anonymize_session.session_id];
  pending jsonb;
  counts jsonb;
  categories jsonb;
  stores jsonb;
  ref text;
  broadcasts bigint;
  request_id uuid;
  request_status public.gdpr_request_status;
begin
  select a.profile_id, a.company_id into owner_id, company
  from private.gdpr_authorize_session(gdpr_anonymize_session.session_id) a;
  select s.status into current_status
  from public.sessions s where s.id = gdpr_anonymize_session.session_id
  for update;
  if current_status = 'active' then
    raise exception 'session % is still active', gdpr_anonymize_session.session_id
      using errcode = '23514',
            hint = 'Complete the session first: segments may still arrive while it is active.';
  end if;

  pending := private.gdpr_take_audio(ids, true);
  broadcasts := private.gdpr_session_broadcasts(ids, true);
  counts := jsonb_build_object('audio', jsonb_array_length(pending),
                               'broadcasts', coalesce(broadcasts, 0))
            || private.gdpr_anonymize_transcripts(ids)
            || private.gdpr_strip_sessions(ids, keys);
  categories := private.gdpr_categories(counts);
  if jsonb_array_length(categories) = 0 then
    return jsonb_build_object(
      'request_id', null,
      'session_id', gdpr_anonymize_session.session_id,
      'already_anonymized', true,
      'counts', counts,
      'categories', categories,
      'personal_keys', to_jsonb(keys),
      'pending_storage', '[]'::jsonb,
      'stores', '[]'::jsonb,
      'unreachable', private.gdpr_unreachable(broadcasts),
      'status', null
    );
  end if;

  ref := private.subject_ref(owner_id);
  stores := '["database"]'::jsonb
            || case when jsonb_array_length(pending) > 0 then '["storage"]'::jsonb
                    else '[]'::jsonb end;
  request_id := private.gdpr_open_request(
    'anonymization', ref, company,
    jsonb_build_object('session_id', gdpr_anonymize_session.session_id,
                       'pending_storage', pending)
  );
  request_status := private.gdpr_settle_request(
    request_id,
    jsonb_build_object('counts', counts, 'categories', categories, 'stores', stores)
  );
  perform private.gdpr_audit(
    'gdpr.anonymize', 'session', gdpr_anonymize_session.session_id, company, ref,
    jsonb_build_object('request_id', request_id, 'categories', categories, 'counts', counts,
                       'stores', stores, 'pending_storage_count', jsonb_array_length(pending))
  );
  return jsonb_build_object(
    'request_id', request_id,
    'session_id', gdpr_anonymize_session.session_id,
    'already_anonymized', false,
    'counts', counts,
    'categories', categories,
    'personal_keys', to_jsonb(keys),
    'pending_storage', private.gdpr_tag_pending(pending, request_id),
    'stores', stores,
    'unreachable', private.gdpr_unreachable(broadcasts),
    'status', request_status
  );
end;
$$;
revoke all on function private.gdpr_anonymize_session(uuid, text[]) from public;
grant execute on function private.gdpr_anonymize_session(uuid, text[])
  to authenticated, service_role;

/**
 * Anonymizes a session that has ended, all or nothing (one transaction):
 *   - transcript: every segment's text becomes '[anonymized]' and its word timings null; the
 *     assembled transcript's content '[anonymized]', structured content '[]', language kept,
 *     is_anonymized / anonymized_at set (a session without an assembled transcript gets an
 *     anonymized one, the durable marker that its transcript is anonymized);
 *   - the title becomes 'Anonymized session'; metadata and analytics_summary lose the
 *     personal keys; participants lose their display name and their persona the personal
 *     keys;
 *   - analysis results lose the personal keys at any depth (private.strip_keys): the default
 *     list (private.gdpr_default_personal_keys) plus `extra_personal_keys`;
 *   - the audio: audio_path and audio_size_bytes become null and the object is recorded as
 *     pending storage in the request (delete it, then gdpr_confirm_storage_removed);
 *   - Broadcast copies of the session's live events are deleted from realtime.messages
 *     where possible (else listed under `unreachable`; they expire after 3 days);
 *   - session_analytics (scores and metrics) stay.
 * Writes a gdpr_requests row (kind anonymization, subject = the session's owner) and an
 * audit entry 'gdpr.anonymize'. Idempotent: when nothing is left to change it writes nothing
 * and reports already_anonymized = true.
 * Returns {request_id, session_id, already_anonymized, counts {audio, broadcasts,
 * transcripts, segments, sessions, participants, analyses}, categories, personal_keys,
 * pending_storage, stores, unreachable, status}. Allowed: the session's owner, an admin of its company, the service role (42501
 * otherwise); a session still active is refused (23514).
 */
create function public.gdpr_anonymize_session(
  session_id uuid,
  extra_personal_keys text[] default '{}'
)
returns jsonb
language sql
volatile
security invoker
set search_path = ''
as $$
  select private.gdpr_anonymize_session(gdpr_anonymize_session.session_id,
                                        gdpr_anonymize_session.extra_personal_keys);
$$;
revoke all on function public.gdpr_anonymize_session(uuid, text[]) from public, anon;
grant execute on function public.gdpr_anonymize_session(uuid, text[])
  to authenticated, service_role;

-- Export (Art. 15 and 20) ---------------------------------------------------------------

/**
 * Exports a data subject (implementation of public.gdpr_export_user, which see).
 */
create function private.gdpr_export_user(subject_id uuid)
returns jsonb
language plpgsql
volatile
security definer
set search_path = ''
as $$
declare
  subject uuid := gdpr_export_user.subject_id;
  company uuid;
  ref text;
  session_ids uuid[];
  subject_email text;
  doc jsonb;
  auth_audit jsonb := '[]'::jsonb;
  broadcasts jsonb := '[]'::jsonb;
  counts jsonb;
  categories jsonb;
  request_id uuid;
begin
  company := private.gdpr_authorize(subject);
  ref := private.subject_ref(subject);
  select coalesce(array_agg(s.id order by s.id), '{}') into session_ids
  from public.sessions s where s.profile_id = subject;
  select u.email into subject_email from auth.users u where u.id = subject;
  if to_regclass('auth.audit_log_entries') is not null then
    select coalesce(jsonb_agg(to_jsonb(e) order by e.created_at, e.id), '[]'::jsonb)
    into auth_audit
    from auth.audit_log_entries e
    where private.gdpr_is_auth_audit_about(e.payload, subject, subject_email);
  end if;
  if to_regclass('realtime.messages') is not null
     and pg_catalog.has_table_privilege('realtime.messages', 'SELECT') then
    select coalesce(jsonb_agg(to_jsonb(m) order by m.inserted_at, m.id), '[]'::jsonb)
    into broadcasts
    from realtime.messages m
    where m.topic = any (select 'session:' || x::text from unnest(session_ids) x);
  end if;

  doc := jsonb_build_object(
    'account', (
      select to_jsonb(u) - array['encrypted_password', 'confirmation_token', 'recovery_token',
                                 'email_change_token_new', 'email_change_token_current',
                                 'phone_change_token', 'reauthentication_token']
      from auth.users u where u.id = subject),
    'identities', (
      select coalesce(jsonb_agg(to_jsonb(i) order by i.created_at, i.id), '[]'::jsonb)
      from auth.identities i where i.user_id = subject),
    'profile', (select to_jsonb(p) from public.profiles p where p.id = subject),
    'company', (select jsonb_build_object('name', c.name)
                from public.companies c where c.id = company),
    'sessions', (
      select coalesce(jsonb_agg(to_jsonb(s) order by s.started_at, s.id), '[]'::jsonb)
      from public.sessions s where s.id = any (session_ids)),
    'participants', (
      select coalesce(jsonb_agg(to_jsonb(p) order by p.session_id, p.speaker_label), '[]'::jsonb)
      from public.session_participants p
      where p.session_id = any (session_ids) or p.profile_id = subject),
    'segments', (
      select coalesce(jsonb_agg(to_jsonb(g) order by g.session_id, g.seq), '[]'::jsonb)
      from public.transcript_segments g where g.session_id = any (session_ids)),
    'transcripts', (
      select coalesce(jsonb_agg(to_jsonb(t) - 'search_vector' order by t.session_id), '[]'::jsonb)
      from public.transcripts t where t.session_id = any (session_ids)),
    'analysis_results', (
      select coalesce(jsonb_agg(to_jsonb(a) order by a.session_id, a.created_at, a.id),
                      '[]'::jsonb)
      from public.analysis_results a where a.session_id = any (session_ids)),
    'session_analytics', (
      select coalesce(jsonb_agg(to_jsonb(a) order by a.session_id), '[]'::jsonb)
      from public.session_analytics a where a.session_id = any (session_ids)),
    'storage_objects', (
      select coalesce(jsonb_agg(to_jsonb(o) order by o.bucket, o.path), '[]'::jsonb)
      from private.gdpr_subject_objects(subject, session_ids) o),
    'auth_audit_log', auth_audit,
    'broadcasts', broadcasts
  );
  select jsonb_object_agg(e.key, case jsonb_typeof(e.value)
                                   when 'array' then jsonb_array_length(e.value)
                                   when 'object' then 1 else 0 end)
  into counts
  from jsonb_each(doc) e;
  categories := private.gdpr_categories(counts);

  request_id := private.gdpr_open_request('export', ref, company, '{}'::jsonb);
  perform private.gdpr_settle_request(
    request_id,
    jsonb_build_object('counts', counts, 'categories', categories, 'stores', '["database"]'::jsonb)
  );
  perform private.gdpr_audit(
    'gdpr.export', 'profile', null, company, ref,
    jsonb_build_object('request_id', request_id, 'categories', categories, 'counts', counts,
                       'stores', '["database"]'::jsonb)
  );

  -- The records about the person come last, so that they include this export's own.
  return jsonb_build_object(
    'schema', 'voicesessions.export',
    'version', 1,
    'exported_at', now(),
    'request_id', request_id,
    'subject', jsonb_build_object('id', subject, 'subject_ref', ref, 'email', subject_email)
  ) || doc || jsonb_build_object(
    'audit_log', (
      select coalesce(jsonb_agg(to_jsonb(a) order by a.occurred_at, a.id), '[]'::jsonb)
      from public.audit_log a where a.subject_ref = ref or a.actor_id = subject),
    'gdpr_requests', (
      select coalesce(jsonb_agg(to_jsonb(r) order by r.requested_at, r.id), '[]'::jsonb)
      from public.gdpr_requests r where r.subject_ref = ref or r.requested_by = subject)
  );
end;
$$;
revoke all on function private.gdpr_export_user(uuid) from public;
grant execute on function private.gdpr_export_user(uuid) to authenticated, service_role;

/**
 * Everything the database holds about a person, as one JSON document (GDPR Art. 15 access,
 * Art. 20 portability): {schema: 'voicesessions.export', version: 1, exported_at,
 * request_id, subject {id, subject_ref, email}, account (the auth user without secrets),
 * identities, profile, company {name}, sessions, participants (in their sessions, and their
 * participations in others'), segments, transcripts, analysis_results (scores included),
 * session_analytics, storage_objects [{id, bucket, path, metadata, created_at}] (the audio
 * files to add to an archive), auth_audit_log (GoTrue's entries about them, where that table
 * exists), broadcasts (Realtime's copies of their sessions' live events, kept 3 days, where
 * readable), audit_log (entries about them or by them) and gdpr_requests (about them or made
 * by them)}. Rows are complete, as stored, except derived search vectors and secrets of the
 * auth user. Writes a gdpr_requests row (kind export, completed) and an audit entry
 * 'gdpr.export' (hence volatile). Allowed: the person, an admin of their company, the
 * service role (42501 otherwise).
 */
create function public.gdpr_export_user(subject_id uuid)
returns jsonb
language sql
volatile
security invoker
set search_path = ''
as $$
  select private.gdpr_export_user(gdpr_export_user.subject_id);
$$;
revoke all on function public.gdpr_export_user(uuid) from public, anon;
grant execute on function public.gdpr_export_user(uuid) to authenticated, service_role;

-- Retention (Art. 5(1)(e)) ---------------------------------------------------------------

/**
 * Applies retention (implementation of public.gdpr_apply_retention, which see).
 */
create function private.gdpr_apply_retention(
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
  is_dry boolean := coalesce(gdpr_apply_retention.dry_run, false);
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
  totals jsonb := '{"sessions": 0, "audio": 0, "transcripts": 0, "segments": 0, "analyses": 0}';
  company_more boolean;
  any_more boolean := false;
  pending jsonb;
  stores jsonb;
  request_id uuid;
  request_status public.gdpr_request_status;
  companies jsonb := '[]'::jsonb;
  request_ids jsonb := '[]'::jsonb;
  all_pending jsonb := '[]'::jsonb;
begin
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
    if not is_dry then
      -- Two runs for one company (cron overlapping a manual run) take turns.
      perform pg_catalog.pg_advisory_xact_lock(private.gdpr_lock_key('retention', co.id));
    end if;
    session_cutoff := now() - make_interval(days => co.session_retention_days);
    audio_cutoff := now() - make_interval(days => co.audio_retention_days);
    transcript_cutoff := now() - make_interval(days => co.transcript_retention_days);
    analysis_cutoff := now() - make_interval(days => co.analysis_retention_days);
    counts := '{"sessions": 0, "audio": 0, "transcripts": 0, "segments": 0, "analyses": 0}';
    company_more := false;
    pending := '[]'::jsonb;

    -- Whole sessions, by the end of the session (its start while it has none). Their audio is
    -- recorded as pending storage first; the rows hanging off them go with them (cascade).
    -- The other categories skip sessions past this limit: they go as a whole.
    if session_cutoff is not null then
      select coalesce(array_agg(x.id), '{}') into ids
      from (select s.id from public.sessions s
            where s.company_id = co.id and s.started_at < session_cutoff
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
            where s.company_id = co.id and s.audio_path is not null
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
            where s.company_id = co.id and s.started_at < transcript_cutoff
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
          delete from public.analysis_results a
          where a.session_id = any (ids) and a.created_at < analysis_cutoff;
          get diagnostics n = row_count;
        end if;
        counts := counts || jsonb_build_object('analyses', n);
        left_analyses := left_analyses - cardinality(ids);
      end if;
    end if;

    any_more := any_more or company_more;
    categories := private.gdpr_categories(counts);
    if jsonb_array_length(categories) = 0 and not company_more then
      continue;
    end if;
    select jsonb_object_agg(t.key, (t.value)::bigint + coalesce((counts ->> t.key)::bigint, 0))
    into totals
    from jsonb_each(totals) t;

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
    'pending_storage', all_pending
  );
end;
$$;
revoke all on function private.gdpr_apply_retention(uuid, boolean, integer) from public;
grant execute on function private.gdpr_apply_retention(uuid, boolean, integer)
  to authenticated, service_role;

/**
 * Applies each company's retention settings (companies.*_retention_days; null keeps that
 * category indefinitely), GDPR Art. 5(1)(e):
 *   sessions     older than session_retention_days are deleted with everything hanging off
 *                them (their audio is recorded as pending storage first);
 *   audio        older than audio_retention_days: recorded as pending storage, audio_path
 *                and audio_size_bytes cleared;
 *   transcripts  older than transcript_retention_days: anonymized (segments and assembled
 *                transcript, as gdpr_anonymize_session does);
 *   analyses     analysis_results created more than analysis_retention_days ago: deleted
 *                (session_analytics stay).
 * A session's age is counted from its end (its start while it has none). Each call handles at
 * most `batch_size` sessions per category (over all companies) and reports `more: true` when
 * some are left, so a cron job calls again until `more` is false and no call holds locks for
 * long. Idempotent: what was handled is not found again, so a second run does nothing.
 * `dry_run` reports the same counts and changes nothing.
 * A company where something changed gets one gdpr_requests row (kind retention; in_progress
 * until its pending storage is confirmed) and one audit entry 'gdpr.retention' per run.
 * Returns {dry_run, batch_size, more, counts {sessions, audio, transcripts, segments,
 * analyses}, companies [{company_id, counts, categories, more, request_id, status}],
 * request_ids, pending_storage [{request_id, bucket, path}]}.
 * Allowed: an admin of `company_id`, the service role; every company at once (company_id
 * null): the service role only.
 */
create function public.gdpr_apply_retention(
  company_id uuid default null,
  dry_run boolean default false,
  batch_size integer default 500
)
returns jsonb
language sql
volatile
security invoker
set search_path = ''
as $$
  select private.gdpr_apply_retention(gdpr_apply_retention.company_id,
                                      gdpr_apply_retention.dry_run,
                                      gdpr_apply_retention.batch_size);
$$;
revoke all on function public.gdpr_apply_retention(uuid, boolean, integer) from public, anon;
grant execute on function public.gdpr_apply_retention(uuid, boolean, integer)
  to authenticated, service_role;

-- Requests -------------------------------------------------------------------------------

/**
 * GDPR requests, most urgent first (due date, then request time). `status` filters by status;
 * `overdue` keeps the open ones (pending or in_progress) whose due date (one month after the
 * request, Art. 12(3)) has passed. SECURITY INVOKER: RLS applies, so an admin sees their
 * company's requests and the service role every request; anyone else gets 42501.
 */
create function public.gdpr_list_requests(
  status public.gdpr_request_status default null,
  overdue boolean default false
)
returns setof public.gdpr_requests
language plpgsql
stable
security invoker
set search_path = ''
as $$
begin
  if not private.gdpr_is_service_role() and (select private.admin_company_id()) is null then
    raise exception 'not allowed: only admins and the service role may list GDPR requests'
      using errcode = '42501';
  end if;
  return query
    select r.*
    from public.gdpr_requests r
    where (gdpr_list_requests.status is null or r.status = gdpr_list_requests.status)
      and (not coalesce(gdpr_list_requests.overdue, false)
           or (r.status in ('pending', 'in_progress') and r.due_at < now()))
    order by r.due_at, r.requested_at, r.id;
end;
$$;
revoke all on function public.gdpr_list_requests(public.gdpr_request_status, boolean)
  from public, anon;
grant execute on function public.gdpr_list_requests(public.gdpr_request_status, boolean)
  to authenticated, service_role;
