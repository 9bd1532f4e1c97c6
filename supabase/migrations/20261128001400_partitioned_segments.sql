/**
 * voicesessions — transcript segments partitioned by session
 * ==========================================================
 * transcript_segments is the table that grows with every minute of every call: hundreds of
 * millions of rows a year for a thousand companies. From here on it is partitioned by hash
 * of `session_id` into 16 partitions (`private.transcript_segments_p00` ... `_p15`).
 *
 * Why by session, and why hash (the layouts compared, see BENCHMARKS.md):
 *   - Every hot statement names one session: appending a batch, reading a session's
 *     segments, assembling its transcript at completion, and the idempotence of an append
 *     (unique (session_id, seq)). With the session as the partition key each of them reads
 *     one partition, and the unique constraint stays a real database guarantee: PostgreSQL
 *     enforces uniqueness on a partitioned table only over keys that contain the partition
 *     key, so a time-partitioned table (by created_at) could no longer refuse a second
 *     (session_id, seq) in another month's partition.
 *   - Retention and erasure delete by company/person and age, not by whole time ranges
 *     (each company chooses its own retention), so dropping old time partitions would not
 *     replace those deletes anyway; they run per partition over the same indexes.
 *   - Hash needs no maintenance: the 16 partitions exist once and for all (no partition to
 *     create ahead of time, no pg_partman job); each stays 1/16 of the table, so its indexes
 *     stay shallower and vacuum works in smaller pieces. 16 divides evenly into 32, 64, ...
 *     should a partition ever need splitting (detach, re-hash into modulus 32).
 *
 * What stays the same: the table's name, columns, defaults, identity, CHECKs, the value
 * policy, the foreign key to sessions (on delete cascade), the unique (session_id, seq)
 * constraint and its name (a duplicate's error names it), the indexes, the row and
 * statement triggers, RLS and its policies, the grants, the publication, the comments. The primary key becomes (id, session_id): a partitioned table's primary key
 * must contain the partition key; `id` is still unique (one identity sequence).
 *
 * The partitions live in `private` (not exposed by the API), with RLS enabled and every
 * privilege revoked: the only way to them is through public.transcript_segments, where RLS
 * applies.
 *
 * Realtime: the table stays in the `supabase_realtime` publication, but PostgreSQL publishes
 * a partitioned table's changes under its partitions' names (unless the publication is
 * altered with publish_via_partition_root, which this migration does not do to a
 * publication it does not own alone), so Postgres Changes subscriptions on
 * transcript_segments receive nothing. Live segments reach listeners as the SDK's
 * `transcript` Broadcast events (append_transcript_segments with `interim`), which is the
 * documented way; Postgres Changes on sessions and session_analytics are unchanged.
 *
 * A database that already holds segments: this migration moves them, in one transaction,
 * holding an ACCESS EXCLUSIVE lock on the table meanwhile (appends wait; plan a quiet
 * moment for a large table: the copy runs at roughly COPY speed, then the indexes and the
 * foreign key are built once). Ids are kept and the identity continues after the largest.
 */

-- 1. The old table steps aside (into private, so that its index names free up) ------------
-- (Its first statement takes the table's ACCESS EXCLUSIVE lock, held to the end of the
-- migration's transaction.)

alter table public.transcript_segments set schema private;
alter table private.transcript_segments rename to transcript_segments_unpartitioned;

-- 2. The partitioned table: same columns, defaults, identity and CHECKs ------------------

create table public.transcript_segments (
  like private.transcript_segments_unpartitioned
    including defaults including identity including constraints including comments
    including storage including statistics
) partition by hash (session_id);

do $$
declare
  i integer;
begin
  for i in 0..15 loop
    execute pg_catalog.format(
      'create table private.%I partition of public.transcript_segments'
      ' for values with (modulus 16, remainder %s)',
      pg_catalog.format('transcript_segments_p%s', pg_catalog.lpad(i::text, 2, '0')), i);
  end loop;
end
$$;

-- 3. The rows (before the triggers and the foreign key: a copy, not new segments) ---------

insert into public.transcript_segments overriding system value
select * from private.transcript_segments_unpartitioned;

select pg_catalog.setval(
  pg_catalog.pg_get_serial_sequence('public.transcript_segments', 'id'),
  coalesce((select max(id) from public.transcript_segments), 0) + 1,
  false);

-- 4. Keys, indexes, the foreign key --------------------------------------------------------

drop table private.transcript_segments_unpartitioned;

alter table public.transcript_segments
  add constraint transcript_segments_pkey primary key (id, session_id),
  add constraint transcript_segments_session_seq_key unique (session_id, seq),
  add constraint transcript_segments_session_id_fkey foreign key (session_id)
    references public.sessions (id) on delete cascade;
create index transcript_segments_profile_id_idx on public.transcript_segments (profile_id);
create index transcript_segments_company_id_profile_id_idx
  on public.transcript_segments (company_id, profile_id);

comment on table public.transcript_segments is
  'Final transcript segments, one row each; unique (session_id, seq) makes replays no-ops.'
  ' Partitioned by hash of session_id (20261128001400).';

-- 5. Triggers (as 20261128000800 and 20261128001000 left them) -----------------------------

create trigger transcript_segments_hold_session_open
  before insert on public.transcript_segments
  for each row when (new.profile_id is null or new.company_id is null)
  execute function private.transcript_segments_hold_session_open();
create trigger transcript_segments_inherit_session_owner
  before insert on public.transcript_segments
  for each row when (new.profile_id is null or new.company_id is null)
  execute function private.inherit_session_owner('require_active');
create trigger transcript_segments_owner_is_fixed
  before update on public.transcript_segments
  for each row execute function private.inherit_session_owner('require_active');
create trigger transcript_segments_check_sessions
  after insert on public.transcript_segments
  referencing new table as added
  for each statement execute function private.transcript_segments_check_sessions();

-- 6. Row-Level Security and grants ---------------------------------------------------------

alter table public.transcript_segments enable row level security;

create policy "Owners and company managers and admins read segments"
  on public.transcript_segments for select to authenticated
  using (
    company_id = (select private.my_company_id())
    and (profile_id = (select auth.uid()) or (select private.managed_company_id()) is not null)
  );
create policy "Session owners can add segments"
  on public.transcript_segments for insert to authenticated
  with check (profile_id = (select auth.uid()));

revoke all on table public.transcript_segments from public, anon, authenticated, service_role;
grant select on table public.transcript_segments to authenticated;
grant insert (session_id, profile_id, company_id, seq, speaker, text, start_ms, end_ms,
              confidence, words, segment_id)
  on table public.transcript_segments to authenticated;
grant select, insert, update, delete on table public.transcript_segments to service_role;
revoke all on sequence public.transcript_segments_id_seq
  from public, anon, authenticated, service_role;

do $$
declare
  part regclass;
begin
  for part in
    select i.inhrelid::regclass from pg_catalog.pg_inherits i
    where i.inhparent = 'public.transcript_segments'::regclass
  loop
    execute pg_catalog.format('alter table %s enable row level security', part);
    execute pg_catalog.format(
      'revoke all on table %s from public, anon, authenticated, service_role', part);
  end loop;
end
$$;

-- 7. Realtime's publication, where it exists and held the table ----------------------------

do $$
begin
  if exists (select 1 from pg_catalog.pg_publication where pubname = 'supabase_realtime')
     and not exists (
       select 1 from pg_catalog.pg_publication_tables
       where pubname = 'supabase_realtime' and schemaname = 'public'
         and tablename = 'transcript_segments') then
    alter publication supabase_realtime add table public.transcript_segments;
  end if;
end
$$;

analyze public.transcript_segments;

select private.apply_value_policy();
