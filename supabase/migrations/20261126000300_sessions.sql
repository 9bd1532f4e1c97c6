/**
 * voicesessions — sessions and participants
 * =========================================
 * A session is one practice call by a trainee. Its lifecycle is enforced here, not by the
 * callers: only the transitions of `public.session_status` are accepted (errcode VS001),
 * `ended_at` is set when the session completes, `started_at` may not lie in the future
 * (errcode 22023), `duration_seconds` is derived from the two timestamps, and `company_id` is always the owner's company (a caller may omit it; a
 * different value is refused with 42501).
 *
 * Who may do what
 *   sessions      read: the owner; managers and admins of the company.
 *                 insert: a user for themselves.  update (title, status, ended_at,
 *                 audio_quality, metadata): the owner.  delete: service_role only (the GDPR
 *                 functions remove sessions together with their audio and an audit record).
 *   participants  read: whoever can read the session.  insert, update (display_name,
 *                 persona): the session owner.  delete: service_role only.
 */

-- Sessions ---------------------------------------------------------------------------------

create table public.sessions (
  id uuid primary key default gen_random_uuid(),
  profile_id uuid not null references public.profiles (id) on delete cascade,
  company_id uuid not null references public.companies (id) on delete cascade,
  title text not null check (char_length(btrim(title)) between 1 and 255),
  status public.session_status not null default 'active',
  started_at timestamptz not null default now(),
  ended_at timestamptz,
  duration_seconds integer generated always as (
    case when ended_at is null then null
         else floor(extract(epoch from (ended_at - started_at)))::integer end
  ) stored,
  -- Audio: a path inside the private `session-audio` bucket, never a public URL.
  audio_path text check (audio_path is null or char_length(audio_path) between 1 and 1024),
  audio_size_bytes bigint check (audio_size_bytes >= 0),
  audio_quality jsonb not null default '{}'::jsonb check (jsonb_typeof(audio_quality) = 'object'),
  minute_cost numeric(10, 4) check (minute_cost >= 0),
  processing_status public.processing_status not null default 'pending',
  analytics_summary jsonb not null default '{}'::jsonb
    check (jsonb_typeof(analytics_summary) = 'object'),
  metadata jsonb not null default '{}'::jsonb check (jsonb_typeof(metadata) = 'object'),
  created_at timestamptz not null default now(),
  updated_at timestamptz not null default now(),
  constraint sessions_ended_after_started check (ended_at is null or ended_at >= started_at),
  constraint sessions_active_has_no_end check (status <> 'active' or ended_at is null),
  constraint sessions_ended_has_end check (status = 'active' or ended_at is not null)
);
comment on table public.sessions is
  'One voice practice session. Lifecycle: active -> completed -> analyzed -> archived.';
comment on column public.sessions.company_id is
  'Always the owner''s company, set by the database; denormalized for fast RLS.';
comment on column public.sessions.duration_seconds is
  'Whole seconds from started_at to ended_at; derived, never written.';

create index sessions_profile_id_started_at_idx on public.sessions (profile_id, started_at desc);
create index sessions_company_id_started_at_idx on public.sessions (company_id, started_at desc);
create index sessions_status_idx on public.sessions (status, ended_at);

create trigger sessions_set_updated_at before update on public.sessions
  for each row execute function private.set_updated_at();

/**
 * Trigger: a new session takes its owner's company. Security definer so that it finds the
 * profile whoever inserts; RLS then decides whether the caller may insert that row.
 */
create function private.sessions_before_insert()
returns trigger
language plpgsql
security definer
set search_path = ''
as $$
declare
  owner_company uuid;
begin
  select p.company_id into owner_company from public.profiles p where p.id = new.profile_id;
  if not found then
    raise exception 'profile % does not exist', new.profile_id using errcode = '23503';
  end if;
  if new.company_id is not null and new.company_id is distinct from owner_company then
    raise exception 'company_id must be the company of the session''s owner'
      using errcode = '42501',
            hint = 'Omit company_id: the database sets it from the owner''s profile.';
  end if;
  new.company_id := owner_company;
  if new.started_at > now() + interval '5 minutes' then
    raise exception 'started_at % is in the future', new.started_at
      using errcode = '22023',
            hint = 'Omit started_at to use the current time.';
  end if;
  if new.status not in ('active', 'completed') then
    raise exception 'a new session must be active or completed, not %', new.status
      using errcode = 'VS001';
  end if;
  if new.status = 'completed' and new.ended_at is null then
    new.ended_at := greatest(now(), new.started_at);
  end if;
  return new;
end;
$$;
revoke all on function private.sessions_before_insert() from public;

create trigger sessions_before_insert before insert on public.sessions
  for each row execute function private.sessions_before_insert();

/**
 * Trigger: ownership never changes, and status moves only along the lifecycle. Completing a
 * session stamps `ended_at` (unless the caller gave one).
 */
create function private.sessions_before_update()
returns trigger
language plpgsql
set search_path = ''
as $$
begin
  if new.id is distinct from old.id
     or new.profile_id is distinct from old.profile_id
     or new.company_id is distinct from old.company_id then
    raise exception 'a session''s id, owner and company cannot change' using errcode = '42501';
  end if;
  if new.status is distinct from old.status then
    if not (
      (old.status = 'active' and new.status = 'completed')
      or (old.status = 'completed' and new.status in ('analyzed', 'archived'))
      or (old.status = 'analyzed' and new.status = 'archived')
    ) then
      raise exception 'invalid session status transition: % -> %', old.status, new.status
        using errcode = 'VS001',
              hint = 'Allowed: active -> completed -> analyzed -> archived, completed -> archived.';
    end if;
    if old.status = 'active' and new.ended_at is null then
      new.ended_at := greatest(now(), new.started_at);
    end if;
  end if;
  return new;
end;
$$;
revoke all on function private.sessions_before_update() from public;

create trigger sessions_before_update before update on public.sessions
  for each row execute function private.sessions_before_update();

-- Participants -----------------------------------------------------------------------------

/**
 * Who took part in a session, and the speaker label their transcript segments carry. The
 * trainee (the session's owner) is added by the database when the session is created; the AI
 * buyer has no profile and carries its persona/scenario in `persona`; a coach or peer is a
 * profile of the same company.
 */
create table public.session_participants (
  id uuid primary key default gen_random_uuid(),
  session_id uuid not null references public.sessions (id) on delete cascade,
  profile_id uuid references public.profiles (id) on delete cascade,
  kind public.participant_kind not null,
  speaker_label text not null check (char_length(speaker_label) between 1 and 64),
  display_name text check (display_name is null or char_length(display_name) between 1 and 200),
  persona jsonb not null default '{}'::jsonb check (jsonb_typeof(persona) = 'object'),
  created_at timestamptz not null default now(),
  constraint session_participants_profile_matches_kind
    check ((kind = 'ai_buyer') = (profile_id is null)),
  constraint session_participants_speaker_unique unique (session_id, speaker_label)
);
comment on table public.session_participants is
  'Participants of a session (trainee, AI buyer, coach, peer) and their speaker labels.';

create unique index session_participants_session_profile_idx
  on public.session_participants (session_id, profile_id) where profile_id is not null;
create index session_participants_profile_id_idx on public.session_participants (profile_id);

/**
 * Trigger (insert and update): a human participant belongs to the session's company, the
 * trainee participant is the session's owner, and a participant never changes session.
 */
create function private.session_participants_check()
returns trigger
language plpgsql
security definer
set search_path = ''
as $$
declare
  s record;
  participant_company uuid;
begin
  if tg_op = 'UPDATE' and new.session_id is distinct from old.session_id then
    raise exception 'a participant cannot move to another session' using errcode = '42501';
  end if;
  select ss.profile_id, ss.company_id into s from public.sessions ss where ss.id = new.session_id;
  if not found then
    raise exception 'session % does not exist', new.session_id using errcode = '23503';
  end if;
  if new.profile_id is not null then
    select p.company_id into participant_company from public.profiles p where p.id = new.profile_id;
    if participant_company is distinct from s.company_id then
      raise exception 'a participant must belong to the session''s company'
        using errcode = '42501';
    end if;
  end if;
  if new.kind = 'trainee' and new.profile_id is distinct from s.profile_id then
    raise exception 'the trainee participant must be the session''s owner'
      using errcode = '23514';
  end if;
  return new;
end;
$$;
revoke all on function private.session_participants_check() from public;

create trigger session_participants_check before insert or update on public.session_participants
  for each row execute function private.session_participants_check();

/**
 * Trigger: every new session lists its owner as the trainee participant (speaker "trainee").
 */
create function private.sessions_add_trainee_participant()
returns trigger
language plpgsql
security definer
set search_path = ''
as $$
begin
  insert into public.session_participants (session_id, profile_id, kind, speaker_label)
  values (new.id, new.profile_id, 'trainee', 'trainee');
  return null;
end;
$$;
revoke all on function private.sessions_add_trainee_participant() from public;

create trigger sessions_add_trainee_participant after insert on public.sessions
  for each row execute function private.sessions_add_trainee_participant();

-- Rows that hang off a session ------------------------------------------------------------

/**
 * Trigger for tables that hang off a session (segments, transcripts, analyses, analytics):
 * they carry the session's `profile_id` and `company_id` so that their RLS policies compare
 * indexed columns instead of joining `sessions`. The values always come from the session: a
 * caller may omit them; a different value is refused (42501); they never change afterwards.
 * With the trigger argument 'require_active', rows may only be added to an active session
 * (errcode VS002).
 */
create function private.inherit_session_owner()
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
  if tg_op = 'UPDATE' then
    if new.session_id is distinct from old.session_id
       or new.profile_id is distinct from old.profile_id
       or new.company_id is distinct from old.company_id then
      raise exception '%: session_id, profile_id and company_id cannot change', tg_table_name
        using errcode = '42501';
    end if;
    return new;
  end if;
  select s.profile_id, s.company_id, s.status into owner_id, owner_company, current_status
  from public.sessions s where s.id = new.session_id;
  if not found then
    raise exception 'session % does not exist', new.session_id using errcode = '23503';
  end if;
  if tg_argv[0] = 'require_active' and current_status <> 'active' then
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
revoke all on function private.inherit_session_owner() from public;

-- Row-Level Security ---------------------------------------------------------------------

alter table public.sessions enable row level security;
alter table public.session_participants enable row level security;

create policy "Owners and company managers and admins read sessions"
  on public.sessions for select to authenticated
  using (
    profile_id = (select auth.uid())
    or company_id = (select private.managed_company_id())
  );

create policy "Users can create their own sessions"
  on public.sessions for insert to authenticated
  with check (profile_id = (select auth.uid()));

create policy "Owners can update their sessions"
  on public.sessions for update to authenticated
  using (profile_id = (select auth.uid()))
  with check (profile_id = (select auth.uid()));

create policy "Whoever can read the session can read its participants"
  on public.session_participants for select to authenticated
  using (session_id in (select s.id from public.sessions s));

create policy "Session owners can add participants"
  on public.session_participants for insert to authenticated
  with check (
    session_id in (select s.id from public.sessions s where s.profile_id = (select auth.uid()))
  );

create policy "Session owners can update participants"
  on public.session_participants for update to authenticated
  using (
    session_id in (select s.id from public.sessions s where s.profile_id = (select auth.uid()))
  )
  with check (
    session_id in (select s.id from public.sessions s where s.profile_id = (select auth.uid()))
  );

-- Grants -----------------------------------------------------------------------------------

revoke all on table public.sessions, public.session_participants
  from anon, authenticated, service_role;

grant select on table public.sessions to authenticated;
grant insert (id, profile_id, company_id, title, status, started_at, ended_at, audio_quality,
              metadata)
  on table public.sessions to authenticated;
grant update (title, status, ended_at, audio_quality, metadata)
  on table public.sessions to authenticated;

grant select on table public.session_participants to authenticated;
grant insert (id, session_id, profile_id, kind, speaker_label, display_name, persona)
  on table public.session_participants to authenticated;
grant update (display_name, persona) on table public.session_participants to authenticated;

grant select, insert, update, delete on table public.sessions, public.session_participants
  to service_role;
