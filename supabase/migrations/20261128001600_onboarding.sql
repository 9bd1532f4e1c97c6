/**
 * voicesessions — onboarding: a company and its first person, all or nothing, re-runnable
 * ======================================================================================
 * Setting up a tenant took three calls (create the company, the auth user, the profile);
 * when a later one failed the earlier ones stayed, and running the same setup again made a
 * second company. Here:
 *
 *   public.auth_user_id(email)            the auth user with that address, or null (the
 *                                          natural key of a person: Supabase Auth keeps
 *                                          addresses unique and lower case);
 *   public.onboard_member(user_id, company_name, role, display_name, *_retention_days)
 *                                          the company and the person's profile in one
 *                                          transaction, or the ones an earlier identical
 *                                          call made.
 *
 * A person has one profile, so the person is the key of an onboarding: calling again for a
 * user whose profile is in a company of that name with that role returns that company and
 * profile (`created` false) and writes nothing; any other existing profile is 23505. Both
 * functions are for the service role only (42501 for anyone else). The auth user itself is
 * made by Supabase Auth (or the SDK over PostgreSQL) before: the SDK's
 * `tenants.onboard(company_name, email)` looks the address up and creates the user only
 * when there is none.
 */

/** Implementation of public.auth_user_id (which see). */
create or replace function private.auth_user_id(email text)
returns uuid
language plpgsql
stable
security definer
set search_path = ''
as $$
declare
  found_id uuid;
begin
  if not private.gdpr_is_service_role() then
    raise exception 'not allowed: only the service role looks users up by email'
      using errcode = '42501';
  end if;
  if auth_user_id.email is null then
    raise exception 'email is required' using errcode = '22004';
  end if;
  select u.id into found_id from auth.users u
  where u.email = lower(btrim(auth_user_id.email))
  order by u.created_at, u.id
  limit 1;
  return found_id;
end;
$$;
revoke all on function private.auth_user_id(text) from public, anon, authenticated;
grant execute on function private.auth_user_id(text) to service_role;

/**
 * The id of the auth user whose email is `email` (compared trimmed and in lower case, as
 * Supabase Auth stores it), or null when there is none. Service role only (42501).
 */
create or replace function public.auth_user_id(email text)
returns uuid
language sql
stable
security invoker
set search_path = ''
as $$
  select private.auth_user_id(auth_user_id.email);
$$;
revoke all on function public.auth_user_id(text) from public, anon, authenticated;
grant execute on function public.auth_user_id(text) to service_role;

/** Implementation of public.onboard_member (which see). */
create or replace function private.onboard_member(
  user_id uuid,
  company_name text,
  role public.profile_role,
  display_name text,
  audio_retention_days integer,
  transcript_retention_days integer,
  analysis_retention_days integer,
  session_retention_days integer
)
returns jsonb
language plpgsql
volatile
security definer
set search_path = ''
as $$
declare
  clean_company text := btrim(onboard_member.company_name);
  subject_email text;
  existing public.profiles;
  existing_company public.companies;
  company public.companies;
  profile public.profiles;
  name text;
begin
  if not private.gdpr_is_service_role() then
    raise exception 'not allowed: only the service role onboards companies'
      using errcode = '42501',
            hint = 'People join an existing company by invitation (create_invitation).';
  end if;
  if onboard_member.user_id is null or onboard_member.company_name is null
     or onboard_member.role is null then
    raise exception 'user_id, company_name and role are required' using errcode = '22004';
  end if;
  if char_length(clean_company) not between 1 and 200 then
    raise exception 'company_name must have 1 to 200 characters' using errcode = '22023';
  end if;
  -- One onboarding of a person at a time: a concurrent identical call waits, then finds the
  -- profile this one made.
  perform pg_catalog.pg_advisory_xact_lock(
    private.gdpr_lock_key('onboarding', onboard_member.user_id));
  select lower(u.email) into subject_email from auth.users u where u.id = onboard_member.user_id;
  if not found then
    raise exception 'user % not found', onboard_member.user_id
      using errcode = 'P0002',
            hint = 'Create the auth user first (Supabase Auth, or tenants.create_user).';
  end if;
  select p.* into existing from public.profiles p where p.id = onboard_member.user_id;
  if found then
    select c.* into existing_company from public.companies c where c.id = existing.company_id;
    if btrim(existing_company.name) = clean_company and existing.role = onboard_member.role then
      return jsonb_build_object('company', to_jsonb(existing_company),
                                'profile', to_jsonb(existing), 'created', false);
    end if;
    raise exception 'user % already belongs to company % (%) as %', onboard_member.user_id,
      existing_company.id, existing_company.name, existing.role
      using errcode = '23505',
            hint = 'A person has one profile: erase it before onboarding them elsewhere, '
                   'or onboard with the same company name and role to get it back.';
  end if;
  name := coalesce(nullif(btrim(onboard_member.display_name), ''),
                   nullif(split_part(subject_email, '@', 1), ''),
                   'user-' || left(onboard_member.user_id::text, 8));
  if char_length(name) > 200 then
    raise exception 'display_name must be at most 200 characters' using errcode = '22023';
  end if;
  insert into public.companies (name, audio_retention_days, transcript_retention_days,
                                analysis_retention_days, session_retention_days)
  values (clean_company, onboard_member.audio_retention_days,
          onboard_member.transcript_retention_days, onboard_member.analysis_retention_days,
          onboard_member.session_retention_days)
  returning * into company;
  insert into public.profiles (id, company_id, role, display_name)
  values (onboard_member.user_id, company.id, onboard_member.role, name)
  returning * into profile;
  perform private.audit(
    'tenancy.onboard', 'company', company.id, company.id, null,
    jsonb_build_object('role', profile.role)
  );
  return jsonb_build_object('company', to_jsonb(company), 'profile', to_jsonb(profile),
                            'created', true);
end;
$$;
revoke all on function private.onboard_member(
  uuid, text, public.profile_role, text, integer, integer, integer, integer
) from public, anon, authenticated;
grant execute on function private.onboard_member(
  uuid, text, public.profile_role, text, integer, integer, integer, integer
) to service_role;

/**
 * Onboards auth user `user_id` as the first person of a new company `company_name`: the
 * company (with optional retention days per category) and the person's profile with `role`
 * (default admin) and `display_name` (default: the local part of their email), in one
 * transaction. Returns {company, profile, created}. Calling it again for a person whose
 * profile is in a company of that name with that role returns them unchanged (`created`
 * false, nothing written); a person with any other profile: 23505, and nothing is written.
 * A missing user: P0002. Bad names or retention days: 22023 / 23514. Writes an audit entry
 * 'tenancy.onboard'. Service role only (42501).
 */
create or replace function public.onboard_member(
  user_id uuid,
  company_name text,
  role public.profile_role default 'admin',
  display_name text default null,
  audio_retention_days integer default null,
  transcript_retention_days integer default null,
  analysis_retention_days integer default null,
  session_retention_days integer default null
)
returns jsonb
language sql
volatile
security invoker
set search_path = ''
as $$
  select private.onboard_member(
    onboard_member.user_id, onboard_member.company_name, onboard_member.role,
    onboard_member.display_name, onboard_member.audio_retention_days,
    onboard_member.transcript_retention_days, onboard_member.analysis_retention_days,
    onboard_member.session_retention_days);
$$;
revoke all on function public.onboard_member(
  uuid, text, public.profile_role, text, integer, integer, integer, integer
) from public, anon, authenticated;
grant execute on function public.onboard_member(
  uuid, text, public.profile_role, text, integer, integer, integer, integer
) to service_role;
