/**
 * voicesessions — session recordings in Storage
 * =============================================
 * A session's recording is one object of the private `session-audio` bucket at
 *
 *     <company_id>/<profile_id>/<session_id>.<ext>        (ext: 1-10 of a-z, 0-9)
 *
 * and `sessions.audio_path` holds that path (never a URL), `audio_size_bytes` its size, and
 * `audio_quality` the metrics measured from the file (merged into what live updates put
 * there). The GDPR functions (20261126001000_gdpr.sql) find recordings by the same path.
 *
 * Who may do what with the objects (RLS on storage.objects, for bucket session-audio only)
 *   read:   the owner of the folder (`<their company>/<their id>/...`); managers and admins
 *           of the company the object's first folder names.
 *   insert, update (upsert), delete: the owner, and only at the path of one of their own
 *           sessions. service_role bypasses RLS (workers, GDPR erasure).
 *   Nobody reads or writes across companies; anon nothing.
 *
 * Functions (SDK: SessionRepository.attach_audio / remove_audio)
 *   record_session_audio(session_id, path, size_bytes, quality, replace)
 *       record an uploaded recording on its session (after the upload succeeded)
 *   clear_session_audio(session_id, path, check_only)
 *       forget the recording `path` of a session (after the object was deleted)
 *
 * Error codes
 *   22004  a required argument is null
 *   22023  invalid value: a path that is not the session's `<company>/<profile>/<id>.<ext>`,
 *          a negative size, quality that is not a JSON object
 *   23505  the session already has another recording (remove it, or pass replace => true)
 *   42501  the caller can read the session but is not its owner (nor service_role)
 *   P0002  the session does not exist or the caller cannot see it
 */

-- The bucket ---------------------------------------------------------------------------------

-- Also declared in supabase/config.toml for `supabase start`; whichever comes first wins.
insert into storage.buckets (id, name, public, file_size_limit, allowed_mime_types)
values (
  'session-audio', 'session-audio', false, 209715200,
  array['audio/wav', 'audio/x-wav', 'audio/flac', 'audio/ogg', 'audio/mpeg', 'audio/webm',
        'audio/mp4', 'video/webm']
)
on conflict (id) do nothing;

-- Helpers ------------------------------------------------------------------------------------

/**
 * True when `name` is the recording path of a session owned by the caller:
 * `<company_id>/<auth.uid()>/<session_id>.<ext>` for one of their sessions. Security definer
 * so that it reads `sessions` whoever calls, and without RLS recursion; used by the Storage
 * policies below.
 */
create function private.is_own_session_audio_path(name text)
returns boolean
language sql
stable
security definer
set search_path = ''
as $$
  select is_own_session_audio_path.name ~ '^[0-9a-f-]{36}/[0-9a-f-]{36}/[0-9a-f-]{36}\.[a-z0-9]{1,10}$'
    and exists (
      select 1
      from public.sessions s
      where s.profile_id = (select auth.uid())
        and s.id::text = split_part(split_part(is_own_session_audio_path.name, '/', 3), '.', 1)
        and s.company_id::text = split_part(is_own_session_audio_path.name, '/', 1)
        and s.profile_id::text = split_part(is_own_session_audio_path.name, '/', 2)
    );
$$;
revoke all on function private.is_own_session_audio_path(text) from public;
grant execute on function private.is_own_session_audio_path(text) to authenticated, service_role;

/**
 * The session's row for a change of its recording: locked, with the caller authorized as its
 * owner or service_role (P0002 when invisible, 42501 when visible but not theirs).
 */
create function private.session_for_audio_change(session_id uuid)
returns public.sessions
language plpgsql
security definer
set search_path = ''
as $$
declare
  s public.sessions;
  caller uuid := (select auth.uid());
begin
  if session_for_audio_change.session_id is null then
    raise exception 'session_id is required' using errcode = '22004';
  end if;
  select * into s from public.sessions ss where ss.id = session_for_audio_change.session_id
    for update;
  if not found then
    raise exception 'session % not found', session_for_audio_change.session_id
      using errcode = 'P0002';
  end if;
  if (select private.gdpr_is_service_role()) or s.profile_id = caller then
    return s;
  end if;
  if s.company_id = (select private.managed_company_id()) then
    raise exception 'only the owner of session % can change its recording',
      session_for_audio_change.session_id
      using errcode = '42501';
  end if;
  raise exception 'session % not found', session_for_audio_change.session_id
    using errcode = 'P0002';
end;
$$;
revoke all on function private.session_for_audio_change(uuid) from public;

-- Functions ----------------------------------------------------------------------------------

/**
 * Record an uploaded recording on its session: `audio_path` = `path`, `audio_size_bytes` =
 * `size_bytes`, and `quality` merged into `audio_quality` (shallow, as update_audio_metrics
 * does). `path` must be the session's own `<company_id>/<profile_id>/<session_id>.<ext>`.
 * Recording the same path again is idempotent (size and quality are updated). A session
 * that already has a different recording is 23505 unless `replace`; the replaced path is
 * returned so that the caller deletes that object. Allowed in every status (recordings
 * arrive after the call).
 *
 * Returns {audio_path, audio_size_bytes, audio_quality, replaced_path}.
 * Who: the session owner and service_role.
 */
create function private.record_session_audio(
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
  if record_session_audio.size_bytes < 0 then
    raise exception 'size_bytes must be >= 0, not %', record_session_audio.size_bytes
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
      s.id, expected_prefix, record_session_audio.path
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
  from public;
grant execute on function private.record_session_audio(uuid, text, bigint, jsonb, boolean)
  to authenticated, service_role;

/** The API face of private.record_session_audio (security invoker: see its comment). */
create function public.record_session_audio(
  session_id uuid,
  path text,
  size_bytes bigint,
  quality jsonb,
  replace boolean default false
)
returns jsonb
language sql
security invoker
set search_path = ''
as $$
  select private.record_session_audio(
    record_session_audio.session_id, record_session_audio.path,
    record_session_audio.size_bytes, record_session_audio.quality, record_session_audio.replace
  );
$$;
revoke all on function public.record_session_audio(uuid, text, bigint, jsonb, boolean)
  from public, anon;
grant execute on function public.record_session_audio(uuid, text, bigint, jsonb, boolean)
  to authenticated, service_role;

/**
 * Forget the recording `path` of a session (its object was deleted): `audio_path` and
 * `audio_size_bytes` become null when `audio_path` is still `path`; `audio_quality` stays
 * (the metrics describe the call, not the file, as after GDPR anonymization). Returns true
 * when it cleared something, false when the session had no recording or another one
 * (idempotent). With `check_only` it only authorizes the caller and tells whether `path` is
 * the session's recording, changing nothing (the SDK asks before deleting the object).
 * Who: the session owner and service_role.
 */
create function private.clear_session_audio(
  session_id uuid,
  path text,
  check_only boolean
)
returns boolean
language plpgsql
security definer
set search_path = ''
as $$
declare
  s public.sessions;
begin
  if clear_session_audio.path is null or clear_session_audio.check_only is null then
    raise exception 'path and check_only are required' using errcode = '22004';
  end if;
  s := private.session_for_audio_change(clear_session_audio.session_id);
  if s.audio_path is distinct from clear_session_audio.path then
    return false;
  end if;
  if clear_session_audio.check_only then
    return true;
  end if;
  update public.sessions ss set audio_path = null, audio_size_bytes = null where ss.id = s.id;
  return true;
end;
$$;
revoke all on function private.clear_session_audio(uuid, text, boolean) from public;
grant execute on function private.clear_session_audio(uuid, text, boolean)
  to authenticated, service_role;

/** The API face of private.clear_session_audio (security invoker: see its comment). */
create function public.clear_session_audio(
  session_id uuid,
  path text,
  check_only boolean default false
)
returns boolean
language sql
security invoker
set search_path = ''
as $$
  select private.clear_session_audio(
    clear_session_audio.session_id, clear_session_audio.path, clear_session_audio.check_only
  );
$$;
revoke all on function public.clear_session_audio(uuid, text, boolean) from public, anon;
grant execute on function public.clear_session_audio(uuid, text, boolean)
  to authenticated, service_role;

-- Storage policies -------------------------------------------------------------------------

create policy "Owners and company managers and admins read session audio"
  on storage.objects for select to authenticated
  using (
    bucket_id = 'session-audio'
    and (
      (
        (storage.foldername(name))[2] = (select auth.uid()::text)
        and (storage.foldername(name))[1] = (select private.my_company_id()::text)
      )
      or (storage.foldername(name))[1] = (select private.managed_company_id()::text)
    )
  );

create policy "Owners can upload the recordings of their sessions"
  on storage.objects for insert to authenticated
  with check (
    bucket_id = 'session-audio'
    and (storage.foldername(name))[2] = (select auth.uid()::text)
    and private.is_own_session_audio_path(name)
  );

create policy "Owners can replace the recordings of their sessions"
  on storage.objects for update to authenticated
  using (
    bucket_id = 'session-audio'
    and (storage.foldername(name))[2] = (select auth.uid()::text)
    and private.is_own_session_audio_path(name)
  )
  with check (
    bucket_id = 'session-audio'
    and (storage.foldername(name))[2] = (select auth.uid()::text)
    and private.is_own_session_audio_path(name)
  );

create policy "Owners can delete the recordings of their sessions"
  on storage.objects for delete to authenticated
  using (
    bucket_id = 'session-audio'
    and (storage.foldername(name))[2] = (select auth.uid()::text)
    and private.is_own_session_audio_path(name)
  );
