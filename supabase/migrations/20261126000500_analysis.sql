/**
 * voicesessions — analysis results and session analytics
 * ======================================================
 * `analysis_results` keeps every provider result, versioned, with its cost. Recording the
 * same (provider, analysis_type, version) for a session twice hits a unique key, so ingestion
 * can be made idempotent. `session_analytics` holds one row of dashboard numbers per session,
 * filled by the database from the analyses (logic arrives with the analytics functions).
 *
 * Sentiment (`sentiment_score`) comes from the transcript's text or describes the simulated
 * buyer; it is never inferred from a trainee's voice (EU AI Act Art. 5(1)(f)).
 *
 * Who may do what
 *   analysis_results, session_analytics
 *     read: the session owner; managers and admins of the company.
 *     write: service_role and the database's own functions only: a trainee never writes
 *     their own scores.
 */

-- Analysis results -----------------------------------------------------------------------

create table public.analysis_results (
  id uuid primary key default gen_random_uuid(),
  session_id uuid not null references public.sessions (id) on delete cascade,
  profile_id uuid not null,
  company_id uuid not null,
  provider text not null check (char_length(provider) between 1 and 100),
  analysis_type text not null check (analysis_type ~ '^[a-z][a-z0-9_]{0,63}$'),
  version text not null default '1' check (char_length(version) between 1 and 50),
  results jsonb not null check (jsonb_typeof(results) = 'object'),
  confidence numeric(5, 4) check (confidence between 0 and 1),
  processing_time_ms integer check (processing_time_ms >= 0),
  api_cost_usd numeric(12, 6) check (api_cost_usd >= 0),
  created_at timestamptz not null default now(),
  constraint analysis_results_identity_key unique (session_id, analysis_type, provider, version)
);
comment on table public.analysis_results is
  'Results of AI providers and of our own conversation metrics, versioned, with their cost.';

create index analysis_results_session_type_created_idx
  on public.analysis_results (session_id, analysis_type, created_at desc);
create index analysis_results_profile_id_idx on public.analysis_results (profile_id);
create index analysis_results_company_id_idx on public.analysis_results (company_id);

create trigger analysis_results_inherit_session_owner
  before insert or update on public.analysis_results
  for each row execute function private.inherit_session_owner();

-- Session analytics ------------------------------------------------------------------------

/**
 * Dashboard numbers of one session. `session_date`/`session_hour` are the session's UTC start
 * date and hour, copied when the row is written (a generated column cannot read another
 * table). Scores are 0..100; `talk_time_ratio` is the trainee's share of speaking time, 0..1;
 * `sentiment_score` is -1..1.
 */
create table public.session_analytics (
  session_id uuid primary key references public.sessions (id) on delete cascade,
  profile_id uuid not null,
  company_id uuid not null,
  overall_score smallint check (overall_score between 0 and 100),
  opening_score smallint check (opening_score between 0 and 100),
  questioning_score smallint check (questioning_score between 0 and 100),
  objection_handling_score smallint check (objection_handling_score between 0 and 100),
  closing_score smallint check (closing_score between 0 and 100),
  skill_scores jsonb not null default '{}'::jsonb check (jsonb_typeof(skill_scores) = 'object'),
  talk_time_ratio numeric(5, 4) check (talk_time_ratio between 0 and 1),
  filler_words_count integer check (filler_words_count >= 0),
  speaking_pace_wpm numeric(6, 1) check (speaking_pace_wpm >= 0),
  question_count integer check (question_count >= 0),
  sentiment_score numeric(5, 4) check (sentiment_score between -1 and 1),
  session_date date not null,
  session_hour smallint not null check (session_hour between 0 and 23),
  created_at timestamptz not null default now(),
  updated_at timestamptz not null default now()
);
comment on table public.session_analytics is
  'One row of dashboard metrics per session (scores 0..100, talk ratio, fillers, pace).';
comment on column public.session_analytics.sentiment_score is
  'From the transcript text or the simulated buyer; never from the trainee''s voice (EU AI Act Art. 5(1)(f)).';

create index session_analytics_profile_date_idx
  on public.session_analytics (profile_id, session_date);
create index session_analytics_company_date_idx
  on public.session_analytics (company_id, session_date);

/**
 * Trigger: `session_date` and `session_hour` follow the session's start (UTC).
 */
create function private.session_analytics_set_date()
returns trigger
language plpgsql
security definer
set search_path = ''
as $$
declare
  started timestamptz;
begin
  select s.started_at into started from public.sessions s where s.id = new.session_id;
  new.session_date := (started at time zone 'UTC')::date;
  new.session_hour := extract(hour from (started at time zone 'UTC'))::smallint;
  return new;
end;
$$;
revoke all on function private.session_analytics_set_date() from public;

create trigger session_analytics_inherit_session_owner
  before insert or update on public.session_analytics
  for each row execute function private.inherit_session_owner();
create trigger session_analytics_set_date
  before insert or update on public.session_analytics
  for each row execute function private.session_analytics_set_date();
create trigger session_analytics_set_updated_at before update on public.session_analytics
  for each row execute function private.set_updated_at();

-- Row-Level Security ---------------------------------------------------------------------

alter table public.analysis_results enable row level security;
alter table public.session_analytics enable row level security;

create policy "Owners and company managers and admins read analyses"
  on public.analysis_results for select to authenticated
  using (
    profile_id = (select auth.uid())
    or company_id = (select private.managed_company_id())
  );

create policy "Owners and company managers and admins read analytics"
  on public.session_analytics for select to authenticated
  using (
    profile_id = (select auth.uid())
    or company_id = (select private.managed_company_id())
  );

-- Grants -----------------------------------------------------------------------------------

revoke all on table public.analysis_results, public.session_analytics
  from anon, authenticated, service_role;

grant select on table public.analysis_results, public.session_analytics to authenticated;
grant select, insert, update, delete on table public.analysis_results, public.session_analytics
  to service_role;
