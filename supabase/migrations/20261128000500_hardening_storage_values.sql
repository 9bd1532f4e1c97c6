/**
 * Hardening: the value policy of 20261128000100 on what users write into storage.objects.
 *
 * storage.objects belongs to Supabase Storage (our migrations cannot add constraints to it),
 * but its insert and update policies are ours: a user's row must carry JSON within the
 * policy (private.jsonb_problem: finite, bounded numbers, at most 32 levels, at most 64 KiB
 * per document) in `metadata` and `user_metadata`, and timestamps in the stored window
 * [2000-01-01, 2100-01-01) UTC, so that no reader (the SDK, a GDPR export, the erasure) meets
 * a value it cannot read. A row outside it is refused like any other policy violation
 * (42501). Nobody makes another person an object's owner (20261128000200, item 4): `owner`
 * and `owner_id` are null or the caller. `user_metadata` exists
 * only in newer Storage versions: the policies name it only where the column exists.
 */

create or replace function private.storage_object_values_ok(
  metadata jsonb,
  user_metadata jsonb,
  created_at timestamptz,
  updated_at timestamptz,
  last_accessed_at timestamptz
)
returns boolean
language sql
immutable
parallel safe
set search_path = ''
as $$
  select private.jsonb_problem(storage_object_values_ok.metadata, 32, 65536) is null
     and private.jsonb_problem(storage_object_values_ok.user_metadata, 32, 65536) is null
     and coalesce(
           (select bool_and(t >= timestamptz '2000-01-01 00:00:00+00'
                            and t < timestamptz '2100-01-01 00:00:00+00')
            from unnest(array[storage_object_values_ok.created_at,
                              storage_object_values_ok.updated_at,
                              storage_object_values_ok.last_accessed_at]) as t
            where t is not null),
           true);
$$;
comment on function private.storage_object_values_ok(jsonb, jsonb, timestamptz, timestamptz,
                                                     timestamptz) is
  'Whether a storage.objects row a user writes keeps the value policy (JSON and time window).';
revoke all on function private.storage_object_values_ok(jsonb, jsonb, timestamptz, timestamptz,
                                                        timestamptz) from public, anon;
grant execute on function private.storage_object_values_ok(jsonb, jsonb, timestamptz,
                                                           timestamptz, timestamptz)
  to authenticated, service_role;

do $$
declare
  values_ok text;
begin
  if to_regclass('storage.objects') is null then
    return;
  end if;
  values_ok := format(
    'private.storage_object_values_ok(metadata, %s, created_at, updated_at, last_accessed_at)',
    case when exists (select 1 from information_schema.columns
                      where table_schema = 'storage' and table_name = 'objects'
                        and column_name = 'user_metadata')
         then 'user_metadata' else 'null::jsonb' end);

  drop policy if exists "Owners can upload the recordings of their sessions" on storage.objects;
  execute format($policy$
    create policy "Owners can upload the recordings of their sessions"
      on storage.objects for insert to authenticated
      with check (
        bucket_id = 'session-audio'
        and (storage.foldername(name))[2] = (select auth.uid()::text)
        and private.is_own_session_audio_path(name)
        and (owner is null or owner = (select auth.uid()))
        and (owner_id is null or owner_id = (select auth.uid()::text))
        and %s
      )$policy$, values_ok);

  drop policy if exists "Owners can replace the recordings of their sessions" on storage.objects;
  execute format($policy$
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
        and (owner is null or owner = (select auth.uid()))
        and (owner_id is null or owner_id = (select auth.uid()::text))
        and %s
      )$policy$, values_ok);
end
$$;
