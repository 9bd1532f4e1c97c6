/**
 * voicesessions — hardening: who may see and touch what
 * =====================================================
 * Closes classes of leaks that hostile callers found with direct SQL, the way PostgREST runs
 * a request (one transaction, `set local role`, `request.jwt.claims`):
 *
 *   1. Joining a company needs the person's consent: an admin *invites* (a token, stored
 *      only as its SHA-256, with an expiry and a role) and the invitee *accepts*
 *      (public.accept_invitation). End users can no longer insert profiles; the service role
 *      still provisions them directly. Invitations: public.company_invitations,
 *      public.create_invitation, public.accept_invitation, public.revoke_invitation.
 *   2. GDPR requests, audit entries and pending storage paths stay with the company where
 *      they happened: an admin acting on a person (erase, export, pending storage) sees only
 *      their own company's records about that person, even when the person used to belong
 *      to another company. The person themself and the service role see all of them.
 *      public.gdpr_check_storage_removal lets a caller have the database authorize a
 *      storage deletion *before* touching storage.
 *   3. Existence oracles: a direct insert that names a row the caller cannot see (a session,
 *      a profile) gets exactly the answer a row that does not exist gets.
 *   4. storage.objects.owner / owner_id cannot be set by a user to anybody but themself, and
 *      a person's erasure no longer trusts `owner` (only their folder and their sessions'
 *      paths).
 *   5. A null safety flag is refused (22004) by every function the API roles can execute.
 *   6. Sequences (and every other object kind) carry no privilege for anon/authenticated,
 *      also under Supabase's default privileges (revoked object by object).
 *   7. Only the person themself (or the service role) changes their display name.
 *
 * Invitation caps: a token lives from 60 seconds to 30 days (default 7 days); at most 1,000
 * open (not accepted, revoked or expired) invitations per company (22023 beyond).
 */

-- 6. Privileges of object kinds a table revoke does not cover -----------------------------

-- Identity sequences: inserts never need a privilege on them (PostgreSQL checks none for
-- identity columns), and setval/nextval by an API role breaks every writer. Revoked one by
-- one: the user's own sequences in `public` keep whatever their project grants.
revoke all on sequence public.audit_log_id_seq, public.transcript_segments_id_seq
  from public, anon, authenticated, service_role;
revoke all on all sequences in schema private from public, anon, authenticated, service_role;
-- Objects created later in `private` (ours alone): nothing for anon/authenticated unless a
-- migration grants it explicitly. Schema `public` and the global defaults belong to the
-- project: each of our objects there revokes what those defaults give, object by object.
alter default privileges in schema private revoke all on sequences from anon, authenticated;
alter default privileges in schema private revoke all on tables from anon, authenticated;
alter default privileges in schema private revoke all on functions from anon, authenticated;

-- 1. Invitations -----------------------------------------------------------------------------

/**
 * True when the request runs for an API end user (anon or authenticated, by its `set role`
 * or its JWT claims). Unlike private.is_end_user (current_user), it keeps answering for the
 * caller inside security-definer functions, where current_user is the function's owner.
 */
create function private.caller_is_end_user()
returns boolean
language sql
stable
set search_path = ''
as $$
  select coalesce(nullif(pg_catalog.current_setting('role', true), ''), 'none')
           in ('anon', 'authenticated')
         or coalesce((select auth.role()) in ('anon', 'authenticated'), false);
$$;
revoke all on function private.caller_is_end_user() from public;

/**
 * An invitation to join a company with a role, addressed to an email address or to an
 * existing auth user. The token is handed out once, by create_invitation; only its SHA-256
 * is stored. Accepted by the invitee (accept_invitation), revoked by an admin
 * (revoke_invitation), or expired.
 */
create table public.company_invitations (
  id uuid primary key default gen_random_uuid(),
  company_id uuid not null references public.companies (id) on delete cascade,
  role public.profile_role not null default 'trainee',
  email text check (email is null or (char_length(email) between 3 and 255
                                      and email = lower(email) and email ~ '^[^@\s]+@[^@\s]+$')),
  -- No foreign key on purpose: whether an auth user exists is not for an admin to learn.
  invitee_id uuid,
  token_hash text not null unique check (token_hash ~ '^[0-9a-f]{64}$'),
  invited_by uuid,
  created_at timestamptz not null default now(),
  expires_at timestamptz not null,
  accepted_at timestamptz,
  accepted_by uuid,
  revoked_at timestamptz,
  constraint company_invitations_one_invitee check ((email is null) <> (invitee_id is null)),
  constraint company_invitations_expiry
    check (expires_at > created_at and expires_at <= created_at + interval '30 days'),
  constraint company_invitations_accepted
    check ((accepted_at is null) = (accepted_by is null)),
  constraint company_invitations_closed_once
    check (accepted_at is null or revoked_at is null)
);
comment on table public.company_invitations is
  'Invitations to join a company (token stored as SHA-256); accepted by the invitee.';
comment on column public.company_invitations.token_hash is
  'Hex SHA-256 of the token; the token itself is returned once by create_invitation.';

create index company_invitations_company_id_created_at_idx
  on public.company_invitations (company_id, created_at desc);
create index company_invitations_invitee_id_idx
  on public.company_invitations (invitee_id) where invitee_id is not null;
create index company_invitations_email_idx
  on public.company_invitations (email) where email is not null;

alter table public.company_invitations enable row level security;

/** The caller's email address (lower case) from auth.users, for invitations by email. */
create function private.my_email()
returns text
language sql
stable
security definer
set search_path = ''
as $$
  select lower(u.email) from auth.users u where u.id = (select auth.uid());
$$;
revoke all on function private.my_email() from public;
grant execute on function private.my_email() to authenticated, service_role;

create policy "Admins read their company's invitations, invitees theirs"
  on public.company_invitations for select to authenticated
  using (
    company_id = (select private.admin_company_id())
    or invitee_id = (select auth.uid())
    or email = (select private.my_email())
  );

revoke all on table public.company_invitations from anon, authenticated, service_role;
grant select (id, company_id, role, email, invitee_id, invited_by, created_at, expires_at,
              accepted_at, accepted_by, revoked_at)
  on table public.company_invitations to authenticated;
grant select, insert, update, delete on table public.company_invitations to service_role;

/** Hex SHA-256 of an invitation token. */
create function private.invitation_token_hash(token text)
returns text
language sql
immutable
set search_path = ''
as $$
  select encode(pg_catalog.sha256(convert_to(invitation_token_hash.token, 'UTF8')), 'hex');
$$;
revoke all on function private.invitation_token_hash(text) from public;

/** Implementation of public.create_invitation (which see). */
create function private.create_invitation(
  company_id uuid,
  role public.profile_role,
  email text,
  invitee_id uuid,
  expires_in_seconds integer
)
returns jsonb
language plpgsql
volatile
security definer
set search_path = ''
as $$
declare
  is_service boolean := private.gdpr_is_service_role();
  clean_email text := lower(btrim(create_invitation.email));
  token text;
  inv public.company_invitations;
  open_count integer;
begin
  if create_invitation.company_id is null or create_invitation.role is null
     or create_invitation.expires_in_seconds is null then
    raise exception 'company_id, role and expires_in_seconds are required'
      using errcode = '22004';
  end if;
  -- Authorization first, so that nothing below tells a stranger anything about the company.
  if not is_service and create_invitation.company_id
       is distinct from (select private.admin_company_id()) then
    raise exception 'not allowed: only an admin of the company or the service role may invite'
      using errcode = '42501';
  end if;
  if is_service and not exists (
    select 1 from public.companies c where c.id = create_invitation.company_id
  ) then
    raise exception 'company % does not exist', create_invitation.company_id
      using errcode = 'P0002';
  end if;
  if (clean_email is null) = (create_invitation.invitee_id is null) then
    raise exception 'invite either an email address or an existing user (invitee_id), not both or neither'
      using errcode = '22023';
  end if;
  if clean_email is not null and (char_length(clean_email) not between 3 and 255
                                  or clean_email !~ '^[^@\s]+@[^@\s]+$') then
    raise exception 'email must be an email address of at most 255 characters'
      using errcode = '22023';
  end if;
  if create_invitation.expires_in_seconds not between 60 and 2592000 then
    raise exception 'expires_in_seconds must be from 60 to 2592000 (30 days), not %',
      create_invitation.expires_in_seconds
      using errcode = '22023';
  end if;
  perform pg_catalog.pg_advisory_xact_lock(
    private.gdpr_lock_key('invitations', create_invitation.company_id));
  select count(*) into open_count from public.company_invitations i
  where i.company_id = create_invitation.company_id
    and i.accepted_at is null and i.revoked_at is null and i.expires_at > now();
  if open_count >= 1000 then
    raise exception 'company % has 1000 open invitations, the most allowed',
      create_invitation.company_id
      using errcode = '22023',
            hint = 'Revoke unused invitations, or wait for them to expire.';
  end if;
  token := 'vsi_' || replace(gen_random_uuid()::text || gen_random_uuid()::text, '-', '');
  insert into public.company_invitations
    (company_id, role, email, invitee_id, token_hash, invited_by, expires_at)
  values (
    create_invitation.company_id, create_invitation.role, clean_email,
    create_invitation.invitee_id, private.invitation_token_hash(token), (select auth.uid()),
    now() + make_interval(secs => create_invitation.expires_in_seconds)
  )
  returning * into inv;
  perform private.audit(
    'tenancy.invite', 'company_invitation', inv.id, inv.company_id, null,
    jsonb_build_object('role', inv.role, 'expires_at', inv.expires_at,
                       'addressed_to', case when inv.email is null then 'user' else 'email' end)
  );
  return (to_jsonb(inv) - 'token_hash') || jsonb_build_object('token', token);
end;
$$;
revoke all on function private.create_invitation(uuid, public.profile_role, text, uuid, integer)
  from public;
grant execute on function private.create_invitation(uuid, public.profile_role, text, uuid, integer)
  to authenticated, service_role;

/**
 * Invites a person to join `company_id` with `role`: by `email` (whoever signs in with that
 * address may accept) or by `invitee_id` (that auth user may accept), exactly one of the two.
 * Returns the invitation {id, company_id, role, email, invitee_id, invited_by, created_at,
 * expires_at, accepted_at, accepted_by, revoked_at} and `token`, the secret the invitee
 * passes to accept_invitation. The token is shown only here (only its SHA-256 is stored).
 * `expires_in_seconds`: 60 .. 2,592,000 (30 days), default 7 days. At most 1,000 open
 * invitations per company. Writes an audit entry 'tenancy.invite'.
 * Allowed: admins of the company, the service role (42501 for anyone else, whether or not
 * the company exists).
 */
create function public.create_invitation(
  company_id uuid,
  role public.profile_role default 'trainee',
  email text default null,
  invitee_id uuid default null,
  expires_in_seconds integer default 604800
)
returns jsonb
language sql
volatile
security invoker
set search_path = ''
as $$
  select private.create_invitation(create_invitation.company_id, create_invitation.role,
                                   create_invitation.email, create_invitation.invitee_id,
                                   create_invitation.expires_in_seconds);
$$;
revoke all on function public.create_invitation(uuid, public.profile_role, text, uuid, integer)
  from public, anon;
grant execute on function public.create_invitation(uuid, public.profile_role, text, uuid, integer)
  to authenticated, service_role;

/** Implementation of public.accept_invitation (which see). */
create function private.accept_invitation(token text, display_name text)
returns jsonb
language plpgsql
volatile
security definer
set search_path = ''
as $$
declare
  caller uuid := (select auth.uid());
  caller_email text;
  inv public.company_invitations;
  existing public.profiles;
  created public.profiles;
  name text;
begin
  if accept_invitation.token is null then
    raise exception 'token is required' using errcode = '22004';
  end if;
  if caller is null or not private.caller_is_end_user() then
    raise exception 'only the invited person, signed in, can accept an invitation'
      using errcode = '42501',
            hint = 'The service role provisions profiles directly (insert into profiles).';
  end if;
  select lower(u.email) into caller_email from auth.users u where u.id = caller;
  select i.* into inv from public.company_invitations i
  where i.token_hash = private.invitation_token_hash(accept_invitation.token)
  for update;
  -- Unknown, expired, revoked, addressed to someone else, or accepted by someone else: one
  -- answer, so that a token reveals nothing to anyone it was not meant for.
  if not found
     or inv.revoked_at is not null
     or (inv.accepted_at is not null and inv.accepted_by is distinct from caller)
     or (inv.accepted_at is null and inv.expires_at <= now())
     or (inv.invitee_id is not null and inv.invitee_id is distinct from caller)
     or (inv.email is not null and inv.email is distinct from caller_email) then
    raise exception 'invitation not found: unknown, expired, revoked or not addressed to you'
      using errcode = 'P0002';
  end if;
  select p.* into existing from public.profiles p where p.id = caller for update;
  if inv.accepted_at is not null then
    -- Accepting twice (a retry) answers the profile it created.
    return to_jsonb(existing);
  end if;
  if existing.id is not null then
    raise exception 'you already belong to a company'
      using errcode = '23505',
            hint = 'A person has one profile; it must be erased before joining another company.';
  end if;
  name := coalesce(nullif(btrim(accept_invitation.display_name), ''),
                   nullif(split_part(caller_email, '@', 1), ''),
                   'user-' || left(caller::text, 8));
  if char_length(name) > 200 then
    raise exception 'display_name must be at most 200 characters' using errcode = '22023';
  end if;
  insert into public.profiles (id, company_id, role, display_name)
  values (caller, inv.company_id, inv.role, name)
  returning * into created;
  update public.company_invitations i
  set accepted_at = now(), accepted_by = caller
  where i.id = inv.id;
  perform private.audit(
    'tenancy.join', 'company_invitation', inv.id, inv.company_id, null,
    jsonb_build_object('role', inv.role)
  );
  return to_jsonb(created);
end;
$$;
revoke all on function private.accept_invitation(text, text) from public;
grant execute on function private.accept_invitation(text, text) to authenticated;

/**
 * Accepts an invitation: the caller (signed in, without a profile) joins the invitation's
 * company with its role, under `display_name` (default: the local part of their email).
 * Returns the new profile. Accepting the same token again returns the same profile. An
 * unknown, expired or revoked token, or one addressed to someone else: P0002 (one answer for
 * all). A caller who already has a profile: 23505. Only the invitee may accept (the service
 * role provisions profiles directly): 42501 for anon and the service role.
 */
create function public.accept_invitation(token text, display_name text default null)
returns jsonb
language sql
volatile
security invoker
set search_path = ''
as $$
  select private.accept_invitation(accept_invitation.token, accept_invitation.display_name);
$$;
revoke all on function public.accept_invitation(text, text) from public, anon, service_role;
grant execute on function public.accept_invitation(text, text) to authenticated;

/** Implementation of public.revoke_invitation (which see). */
create function private.revoke_invitation(invitation_id uuid)
returns boolean
language plpgsql
volatile
security definer
set search_path = ''
as $$
declare
  inv public.company_invitations;
begin
  if revoke_invitation.invitation_id is null then
    raise exception 'invitation_id is required' using errcode = '22004';
  end if;
  select i.* into inv from public.company_invitations i
  where i.id = revoke_invitation.invitation_id
  for update;
  if not found or not (
    private.gdpr_is_service_role()
    or inv.company_id is not distinct from (select private.admin_company_id())
  ) then
    raise exception 'invitation % not found', revoke_invitation.invitation_id
      using errcode = 'P0002';
  end if;
  if inv.accepted_at is not null or inv.revoked_at is not null then
    return false;
  end if;
  update public.company_invitations i set revoked_at = now() where i.id = inv.id;
  perform private.audit('tenancy.invitation_revoked', 'company_invitation', inv.id,
                        inv.company_id, null, '{}'::jsonb);
  return true;
end;
$$;
revoke all on function private.revoke_invitation(uuid) from public;
grant execute on function private.revoke_invitation(uuid) to authenticated, service_role;

/**
 * Revokes an open invitation: its token can no longer be accepted. Returns true when it
 * revoked it, false when it was already accepted or revoked (idempotent). Allowed: admins of
 * the invitation's company, the service role; P0002 for a missing invitation and for one the
 * caller may not see (one answer).
 */
create function public.revoke_invitation(invitation_id uuid)
returns boolean
language sql
volatile
security invoker
set search_path = ''
as $$
  select private.revoke_invitation(revoke_invitation.invitation_id);
$$;
revoke all on function public.revoke_invitation(uuid) from public, anon;
grant execute on function public.revoke_invitation(uuid) to authenticated, service_role;

-- End users no longer insert profiles: an admin inviting by uuid could otherwise attach any
-- auth user without a profile (and that person's history) to their company.
drop policy if exists "Admins can add profiles to their company" on public.profiles;
revoke insert on table public.profiles from anon, authenticated;

-- 7. Display names: only the person themself (or the service role) ------------------------

/**
 * Trigger: end users never change their own role; nobody moves a profile to another
 * company; role changes by end users come only from an admin of the same company; a display
 * name is changed only by the person themself (or a trusted caller: service role, definer
 * functions).
 */
create or replace function private.guard_profile_update()
returns trigger
language plpgsql
set search_path = ''
as $$
begin
  if new.id is distinct from old.id then
    raise exception 'a profile''s id cannot change' using errcode = '42501';
  end if;
  if new.company_id is distinct from old.company_id then
    raise exception 'a profile cannot move to another company'
      using errcode = '42501',
            hint = 'Erase the profile and create a new one in the other company.';
  end if;
  if new.display_name is distinct from old.display_name and (select private.is_end_user())
     and old.id is distinct from (select auth.uid()) then
    raise exception 'only the person themself can change their display name'
      using errcode = '42501';
  end if;
  if new.role is distinct from old.role and (select private.is_end_user()) then
    if old.id = (select auth.uid()) then
      raise exception 'you cannot change your own role' using errcode = '42501';
    end if;
    if (select private.admin_company_id()) is distinct from old.company_id then
      raise exception 'only an admin of the company can change roles' using errcode = '42501';
    end if;
  end if;
  return new;
end;
$$;
revoke all on function private.guard_profile_update() from public;

-- 3. Existence oracles -----------------------------------------------------------------------

/**
 * True when the caller may see session `session_id` (the sessions read policy: its owner,
 * managers and admins of its company), or is not an end user.
 */
create function private.can_see_session(owner_id uuid, owner_company uuid)
returns boolean
language sql
stable
set search_path = ''
as $$
  select coalesce(
    not private.caller_is_end_user()
    or can_see_session.owner_id = (select auth.uid())
    or can_see_session.owner_company = (select private.managed_company_id()),
    false);
$$;
revoke all on function private.can_see_session(uuid, uuid) from public;

-- The sessions insert trigger's part of this (an end user creates sessions only for themself:
-- any other profile_id, existing or not, gets the answer RLS gives, 42501 with the same
-- message) is in private.sessions_before_insert as 20261128000300_hardening_figures.sql
-- redefines it, with private.caller_is_end_user from above.

/**
 * Trigger (insert and update) of session_participants (see 20261126000300_sessions.sql). A
 * session the caller cannot see is answered exactly like a missing one (23503); a
 * participant profile of another company exactly like a missing one (42501).
 */
create or replace function private.session_participants_check()
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
  if not found or not private.can_see_session(s.profile_id, s.company_id) then
    raise exception 'session % does not exist', new.session_id using errcode = '23503';
  end if;
  if new.profile_id is not null then
    -- Another company's profile and a missing one get the same answer. (A person of the
    -- session's company may be named as coach or peer by the session's owner, who cannot
    -- read colleagues' profiles: that acceptance is the feature, not an oracle to close.)
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

/**
 * Trigger for tables that hang off a session (see 20261126000300_sessions.sql). A session
 * the caller cannot see is answered exactly like a missing one (23503), before its status is
 * looked at: neither its existence nor its status leaks.
 */
create or replace function private.inherit_session_owner()
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
  if not found or not private.can_see_session(owner_id, owner_company) then
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

-- 2. GDPR records stay with their company ------------------------------------------------------

/**
 * Which company's GDPR records the caller may see about the subject with reference `ref`:
 * null for all of them (the service role, or the subject themself), else the caller's admin
 * company (the nil uuid, matching nothing, when the caller is not an admin). Called by the
 * definer functions after they authorized the caller.
 */
create function private.gdpr_record_scope(ref text)
returns uuid
language sql
stable
set search_path = ''
as $$
  select case
    when private.gdpr_is_service_role() then null
    when (select auth.uid()) is not null and gdpr_record_scope.ref is not null
         and private.subject_ref((select auth.uid())) = gdpr_record_scope.ref then null
    else coalesce((select private.admin_company_id()), '00000000-0000-0000-0000-000000000000'::uuid)
  end;
$$;
revoke all on function private.gdpr_record_scope(text) from public;

/**
 * The storage objects still to delete for a subject: every entry of `pending_storage` of
 * their open requests that the caller may see (private.gdpr_record_scope), as
 * [{request_id, bucket, path}].
 */
create or replace function private.gdpr_open_pending(subject_ref text)
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
    and r.status in ('pending', 'in_progress')
    and (private.gdpr_record_scope(gdpr_open_pending.subject_ref) is null
         or r.company_id = private.gdpr_record_scope(gdpr_open_pending.subject_ref));
$$;
revoke all on function private.gdpr_open_pending(text) from public;

/**
 * The storage objects of a subject in the `session-audio` bucket: the audio_path of each of
 * the given sessions (the subject's) plus every object of the bucket in a folder of theirs
 * (`<company_id>/<subject>/...`). `owner`/`owner_id` are not trusted (an object's owner says
 * who uploaded it, not whose data it is). For an admin, only objects under their company's
 * folder. `id`, `metadata` and `created_at` come from storage.objects and are null for a
 * path without an object row.
 */
create or replace function private.gdpr_subject_objects(subject uuid, session_ids uuid[])
returns table (id uuid, bucket text, path text, metadata jsonb, created_at timestamptz)
language plpgsql
stable
set search_path = ''
as $$
declare
  scope uuid := private.gdpr_record_scope(private.subject_ref(gdpr_subject_objects.subject));
begin
  if to_regclass('storage.objects') is null then
    return query
      select distinct null::uuid, 'session-audio'::text, s.audio_path, null::jsonb,
                      null::timestamptz
      from public.sessions s
      where s.id = any (gdpr_subject_objects.session_ids) and s.audio_path is not null
        and (scope is null or split_part(s.audio_path, '/', 1) = scope::text);
    return;
  end if;
  return query
    with paths as (
      select s.audio_path as path
      from public.sessions s
      where s.id = any (gdpr_subject_objects.session_ids) and s.audio_path is not null
        and (scope is null or split_part(s.audio_path, '/', 1) = scope::text)
    ),
    objects as (
      select o.id, o.bucket_id::text as bucket, o.name::text as path, o.metadata, o.created_at
      from storage.objects o
      where o.bucket_id = 'session-audio'
        and (split_part(o.name, '/', 2) = gdpr_subject_objects.subject::text
             or o.name in (select p.path from paths p))
        and (scope is null or split_part(o.name, '/', 1) = scope::text)
    )
    select o.id, o.bucket, o.path, o.metadata, o.created_at from objects o
    union all
    select null::uuid, 'session-audio'::text, p.path, null::jsonb, null::timestamptz
    from (select distinct p.path from paths p) p
    where not exists (select 1 from objects o where o.path = p.path);
end;
$$;
revoke all on function private.gdpr_subject_objects(uuid, uuid[]) from public;

/**
 * Open requests' pending storage objects (implementation of public.gdpr_pending_storage).
 * With a subject: that person's open requests the caller may see (an admin: their company's
 * only, even when the person used to belong to another company).
 */
create or replace function private.gdpr_pending_storage(subject_id uuid)
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
    only_company := private.gdpr_record_scope(ref);
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
 * Authorizes the caller to delete storage objects of a GDPR request, *before* anything is
 * deleted: the same rule as gdpr_confirm_storage_removed (the request's subject, an admin of
 * its company, the service role; 42501 otherwise, P0002 for a missing request only for the
 * service role). Returns the given paths that the request is still waiting for, in order,
 * without duplicates; changes nothing.
 */
create function private.gdpr_check_storage_removal(request_id uuid, paths text[])
returns text[]
language plpgsql
stable
security definer
set search_path = ''
as $$
declare
  caller uuid := (select auth.uid());
  is_service boolean := private.gdpr_is_service_role();
  req public.gdpr_requests;
  allowed text[];
begin
  if gdpr_check_storage_removal.request_id is null or gdpr_check_storage_removal.paths is null then
    raise exception 'request_id and paths are required' using errcode = '22004';
  end if;
  select r.* into req from public.gdpr_requests r where r.id = gdpr_check_storage_removal.request_id;
  if not found and is_service then
    raise exception 'GDPR request % does not exist', gdpr_check_storage_removal.request_id
      using errcode = 'P0002';
  end if;
  if not found or not coalesce(
       is_service
       or (caller is not null and req.subject_ref is not null
           and private.subject_ref(caller) = req.subject_ref)
       or (caller is not null and req.company_id is not null
           and req.company_id = (select private.admin_company_id())),
       false) then
    raise exception 'not allowed: only the request''s subject, an admin of its company or the service role may do this'
      using errcode = '42501';
  end if;
  select coalesce(array_agg(x.p order by x.first), '{}') into allowed
  from (
    select p.p, min(p.ordinality) as first
    from unnest(gdpr_check_storage_removal.paths) with ordinality p(p, ordinality)
    where exists (
      select 1 from jsonb_array_elements(coalesce(req.details -> 'pending_storage', '[]'::jsonb)) e
      where e.value ->> 'path' = p.p
    )
    group by p.p
  ) x;
  return allowed;
end;
$$;
revoke all on function private.gdpr_check_storage_removal(uuid, text[]) from public;
grant execute on function private.gdpr_check_storage_removal(uuid, text[])
  to authenticated, service_role;

/**
 * Which of `paths` the GDPR request `request_id` is still waiting for, after authorizing the
 * caller to remove them (the rule of gdpr_confirm_storage_removed: the request's subject, an
 * admin of its company, the service role; 42501 otherwise). Changes nothing: callers ask it
 * *before* deleting storage objects, then confirm with gdpr_confirm_storage_removed.
 */
create function public.gdpr_check_storage_removal(request_id uuid, paths text[])
returns text[]
language sql
stable
security invoker
set search_path = ''
as $$
  select private.gdpr_check_storage_removal(gdpr_check_storage_removal.request_id,
                                            gdpr_check_storage_removal.paths);
$$;
revoke all on function public.gdpr_check_storage_removal(uuid, text[]) from public, anon;
grant execute on function public.gdpr_check_storage_removal(uuid, text[])
  to authenticated, service_role;

/**
 * Erases a data subject (implementation of public.gdpr_erase_user). Null flags are refused
 * (22004); an admin sees and resumes only their own company's earlier requests.
 */
create or replace function private.gdpr_erase_user(
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
  with_account boolean := gdpr_erase_user.include_account;
  is_dry boolean := gdpr_erase_user.dry_run;
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
  scope uuid;
begin
  if with_account is null or is_dry is null then
    raise exception 'include_account and dry_run must be true or false, not null'
      using errcode = '22004';
  end if;
  company := private.gdpr_authorize(subject);
  ref := private.subject_ref(subject);
  scope := private.gdpr_record_scope(ref);

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
          and (scope is null or r.company_id = scope)
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
  -- Invitations addressed to them, or accepted by them, name them; invitations they sent
  -- keep the invitation but lose the sender.
  delete from public.company_invitations i
  where i.invitee_id = subject or i.accepted_by = subject
     or (subject_email is not null and i.email = lower(subject_email));
  update public.company_invitations i set invited_by = null where i.invited_by = subject;
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

/**
 * Exports a data subject (implementation of public.gdpr_export_user). For an admin, the
 * audit entries and GDPR requests are those of their company only.
 */
create or replace function private.gdpr_export_user(subject_id uuid)
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
  scope uuid;
begin
  company := private.gdpr_authorize(subject);
  ref := private.subject_ref(subject);
  scope := private.gdpr_record_scope(ref);
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
    'broadcasts', broadcasts,
    'invitations', (
      select coalesce(jsonb_agg(to_jsonb(i) - 'token_hash' order by i.created_at, i.id),
                      '[]'::jsonb)
      from public.company_invitations i
      where (i.invitee_id = subject or i.accepted_by = subject or i.invited_by = subject
             or (subject_email is not null and i.email = lower(subject_email)))
        and (scope is null or i.company_id = scope))
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
      from public.audit_log a
      where (a.subject_ref = ref or a.actor_id = subject)
        and (scope is null or a.company_id = scope)),
    'gdpr_requests', (
      select coalesce(jsonb_agg(to_jsonb(r) order by r.requested_at, r.id), '[]'::jsonb)
      from public.gdpr_requests r
      where (r.subject_ref = ref or r.requested_by = subject)
        and (scope is null or r.company_id = scope))
  );
end;
$$;
revoke all on function private.gdpr_export_user(uuid) from public;

-- 5. Null safety flags ---------------------------------------------------------------------------

/**
 * The API face of private.gdpr_apply_retention (see 20261126001000_gdpr.sql). A null
 * `dry_run` (or `batch_size`) is refused with 22004 here, before anything runs: a missing
 * safety flag never means "do it for real".
 */
create or replace function public.gdpr_apply_retention(
  company_id uuid default null,
  dry_run boolean default false,
  batch_size integer default 500
)
returns jsonb
language plpgsql
volatile
security invoker
set search_path = ''
as $$
begin
  if gdpr_apply_retention.dry_run is null or gdpr_apply_retention.batch_size is null then
    raise exception 'dry_run and batch_size are required (dry_run true or false, not null)'
      using errcode = '22004';
  end if;
  return private.gdpr_apply_retention(gdpr_apply_retention.company_id,
                                      gdpr_apply_retention.dry_run,
                                      gdpr_apply_retention.batch_size);
end;
$$;
revoke all on function public.gdpr_apply_retention(uuid, boolean, integer) from public, anon;
grant execute on function public.gdpr_apply_retention(uuid, boolean, integer)
  to authenticated, service_role;

/**
 * GDPR requests, most urgent first (see 20261126001000_gdpr.sql); `overdue` must be true or
 * false (22004 for null).
 */
create or replace function public.gdpr_list_requests(
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
  if gdpr_list_requests.overdue is null then
    raise exception 'overdue must be true or false, not null' using errcode = '22004';
  end if;
  if not private.gdpr_is_service_role() and (select private.admin_company_id()) is null then
    raise exception 'not allowed: only admins and the service role may list GDPR requests'
      using errcode = '42501';
  end if;
  return query
    select r.*
    from public.gdpr_requests r
    where (gdpr_list_requests.status is null or r.status = gdpr_list_requests.status)
      and (not gdpr_list_requests.overdue
           or (r.status in ('pending', 'in_progress') and r.due_at < now()))
    order by r.due_at, r.requested_at, r.id;
end;
$$;
revoke all on function public.gdpr_list_requests(public.gdpr_request_status, boolean)
  from public, anon;
grant execute on function public.gdpr_list_requests(public.gdpr_request_status, boolean)
  to authenticated, service_role;

-- 4. Storage: nobody makes another person the owner of an object. The storage.objects insert
-- and update policies that require `owner`/`owner_id` to be null or the caller are created
-- by 20261128000500_hardening_storage_values.sql, together with the value policy.

-- Bring the value policy of 20261128000100 to any column this migration added.
select private.apply_value_policy();
