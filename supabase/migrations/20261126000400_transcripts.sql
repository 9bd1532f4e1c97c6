/**
 * voicesessions — transcripts
 * ===========================
 * Live transcripts are stored one row per *final* segment, never by rewriting a document:
 * appending the 10,000th segment costs what the 10th did, and `(session_id, seq)` is unique so
 * a replayed segment is a no-op (`on conflict do nothing`). Interim results are broadcast to
 * listeners and never stored. Segments may only be added while the session is active
 * (errcode VS002).
 *
 * When a session completes, one `transcripts` row assembles the segments (content,
 * structured content, word count, confidence) with a full-text search vector built with the
 * text-search configuration of the transcript's language.
 *
 * Who may do what
 *   transcript_segments  read: whoever can read the session.  insert: the session owner
 *                        (while active).  update/delete: service_role only.
 *   transcripts          read: whoever can read the session.  written only by the database's
 *                        own functions and service_role.
 */

-- Language -> text-search configuration ------------------------------------------------

/**
 * The text-search configuration for a BCP-47 language tag ('en', 'en-US', 'pt-BR', ...),
 * by its primary subtag; 'simple' (no stemming, no stop words) for anything unknown.
 * Immutable, so it can build the stored search vector and match it at query time.
 */
create function private.text_search_config(language text)
returns regconfig
language sql
immutable
parallel safe
set search_path = ''
as $$
  select case lower(split_part(coalesce(text_search_config.language, ''), '-', 1))
    when 'ar' then 'pg_catalog.arabic'
    when 'da' then 'pg_catalog.danish'
    when 'de' then 'pg_catalog.german'
    when 'el' then 'pg_catalog.greek'
    when 'en' then 'pg_catalog.english'
    when 'es' then 'pg_catalog.spanish'
    when 'fi' then 'pg_catalog.finnish'
    when 'fr' then 'pg_catalog.french'
    when 'ga' then 'pg_catalog.irish'
    when 'hu' then 'pg_catalog.hungarian'
    when 'id' then 'pg_catalog.indonesian'
    when 'it' then 'pg_catalog.italian'
    when 'lt' then 'pg_catalog.lithuanian'
    when 'nb' then 'pg_catalog.norwegian'
    when 'ne' then 'pg_catalog.nepali'
    when 'nl' then 'pg_catalog.dutch'
    when 'nn' then 'pg_catalog.norwegian'
    when 'no' then 'pg_catalog.norwegian'
    when 'pt' then 'pg_catalog.portuguese'
    when 'ro' then 'pg_catalog.romanian'
    when 'ru' then 'pg_catalog.russian'
    when 'sr' then 'pg_catalog.serbian'
    when 'sv' then 'pg_catalog.swedish'
    when 'ta' then 'pg_catalog.tamil'
    when 'tr' then 'pg_catalog.turkish'
    else 'pg_catalog.simple'
  end::regconfig;
$$;
revoke all on function private.text_search_config(text) from public;
grant execute on function private.text_search_config(text) to authenticated, service_role;

-- Segments -------------------------------------------------------------------------------

/**
 * One final transcript segment. `seq` is the segment's position in the session (assigned by
 * the producer, unique per session); `start_ms`/`end_ms` are audio offsets, the order that
 * counts; `segment_id` is the transcription provider's own id, if any.
 */
create table public.transcript_segments (
  id bigint generated always as identity primary key,
  session_id uuid not null references public.sessions (id) on delete cascade,
  profile_id uuid not null,
  company_id uuid not null,
  seq integer not null check (seq >= 0),
  speaker text not null check (char_length(speaker) between 1 and 64),
  text text not null check (char_length(text) <= 20000),
  start_ms integer not null check (start_ms >= 0),
  end_ms integer not null,
  confidence real check (confidence between 0 and 1),
  words jsonb check (words is null or jsonb_typeof(words) = 'array'),
  segment_id text check (segment_id is null or char_length(segment_id) between 1 and 200),
  created_at timestamptz not null default now(),
  constraint transcript_segments_end_after_start check (end_ms >= start_ms),
  constraint transcript_segments_session_seq_key unique (session_id, seq)
);
comment on table public.transcript_segments is
  'Final transcript segments, one row each; unique (session_id, seq) makes replays no-ops.';
comment on column public.transcript_segments.profile_id is
  'The session owner (copied from the session by the database, for RLS).';

create index transcript_segments_profile_id_idx on public.transcript_segments (profile_id);
create index transcript_segments_company_id_idx on public.transcript_segments (company_id);

create trigger transcript_segments_inherit_session_owner
  before insert or update on public.transcript_segments
  for each row execute function private.inherit_session_owner('require_active');

-- Assembled transcripts ----------------------------------------------------------------

create table public.transcripts (
  id uuid primary key default gen_random_uuid(),
  session_id uuid not null unique references public.sessions (id) on delete cascade,
  profile_id uuid not null,
  company_id uuid not null,
  content text not null default '',
  structured_content jsonb not null default '[]'::jsonb
    check (jsonb_typeof(structured_content) = 'array'),
  language text not null default 'en'
    check (language ~ '^[A-Za-z]{2,3}(-[A-Za-z0-9]{1,8})*$'),
  word_count integer not null default 0 check (word_count >= 0),
  confidence numeric(5, 4) check (confidence between 0 and 1),
  is_anonymized boolean not null default false,
  anonymized_at timestamptz,
  search_vector tsvector generated always as (
    to_tsvector(private.text_search_config(language), content)
  ) stored,
  created_at timestamptz not null default now(),
  updated_at timestamptz not null default now(),
  constraint transcripts_anonymized_at check (is_anonymized = (anonymized_at is not null))
);
comment on table public.transcripts is
  'One assembled transcript per session, with a language-aware full-text search vector.';

create index transcripts_profile_id_idx on public.transcripts (profile_id);
create index transcripts_company_id_idx on public.transcripts (company_id);
create index transcripts_search_vector_idx on public.transcripts using gin (search_vector);

create trigger transcripts_inherit_session_owner
  before insert or update on public.transcripts
  for each row execute function private.inherit_session_owner();
create trigger transcripts_set_updated_at before update on public.transcripts
  for each row execute function private.set_updated_at();

-- Row-Level Security ---------------------------------------------------------------------

alter table public.transcript_segments enable row level security;
alter table public.transcripts enable row level security;

create policy "Owners and company managers and admins read segments"
  on public.transcript_segments for select to authenticated
  using (
    profile_id = (select auth.uid())
    or company_id = (select private.managed_company_id())
  );

create policy "Session owners can add segments"
  on public.transcript_segments for insert to authenticated
  with check (profile_id = (select auth.uid()));

create policy "Owners and company managers and admins read transcripts"
  on public.transcripts for select to authenticated
  using (
    profile_id = (select auth.uid())
    or company_id = (select private.managed_company_id())
  );

-- Grants -----------------------------------------------------------------------------------

revoke all on table public.transcript_segments, public.transcripts
  from anon, authenticated, service_role;

grant select on table public.transcript_segments to authenticated;
grant insert (session_id, profile_id, company_id, seq, speaker, text, start_ms, end_ms,
              confidence, words, segment_id)
  on table public.transcript_segments to authenticated;
grant select on table public.transcripts to authenticated;

grant select, insert, update, delete on table public.transcript_segments, public.transcripts
  to service_role;
