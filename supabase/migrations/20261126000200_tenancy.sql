/**
 * voicesessions — tenancy: companies and profiles
 * ===============================================
 * A company is a tenant. Every person is one profile (1:1 with auth.users) in exactly one
 * company, with a role: trainee, manager or admin.
 *
 * Who may do what
 * ---------------
 *   companies  read: its members.  update (name, retention): its admins.
 *              insert/delete: service_role only (tenant provisioning).
 *   profiles   read: yourself; managers and admins read every profile of their company.
 *              insert: admins, into their own company.  update: your display name; admins
 *              also change the role of others in their company.  delete: service_role only
 *              (erasure goes through the GDPR functions).
 *   Nobody changes their own role; nobody moves a profile to another company (errcode 42501).
 */

-- Tables -------------------------------------------------------------------------------

/**
 * A tenant. Retention settings say how many days each category of data is kept before the
 * retention job anonymizes or deletes it (GDPR Art. 5(1)(e)); null keeps it indefinitely.
 */
create table public.companies (
  id uuid primary key default gen_random_uuid(),
  name text not null check (char_length(btrim(name)) between 1 and 200),
  audio_retention_days integer check (audio_retention_days > 0),
  transcript_retention_days integer check (transcript_retention_days > 0),
  analysis_retention_days integer check (analysis_retention_days > 0),
  session_retention_days integer check (session_retention_days > 0),
  created_at timestamptz not null default now(),
  updated_at timestamptz not null default now()
);
comment on table public.companies is 'Tenants. Every other row belongs to exactly one company.';

/**
 * A person in a company; its id is the auth.users id, so deleting the auth user deletes the
 * profile and, through cascades, everything about them.
 */
create table public.profiles (
  id uuid primary key references auth.users (id) on delete cascade,
  company_id uuid not null references public.companies (id) on delete cascade,
  role public.profile_role not null default 'trainee',
  display_name text not null check (char_length(btrim(display_name)) between 1 and 200),
  created_at timestamptz not null default now(),
  updated_at timestamptz not null default now()
);
comment on table public.profiles is
  'One profile per auth user: company membership, role and display name.';

create index profiles_company_id_role_idx on public.profiles (company_id, role);

create trigger companies_set_updated_at before update on public.companies
  for each row execute function private.set_updated_at();
create trigger profiles_set_updated_at before update on public.profiles
  for each row execute function private.set_updated_at();

-- Helpers used by RLS policies ----------------------------------------------------------
-- Security definer so that a policy on `profiles` can read `profiles` without recursion.
-- Each returns null when the caller has no profile (or not the role), so a comparison with
-- it is never true.

/** The caller's company. */
create function private.my_company_id()
returns uuid
language sql
stable
security definer
set search_path = ''
as $$
  select p.company_id from public.profiles p where p.id = (select auth.uid());
$$;

/** The caller's company if the caller is a manager or an admin there, else null. */
create function private.managed_company_id()
returns uuid
language sql
stable
security definer
set search_path = ''
as $$
  select p.company_id from public.profiles p
  where p.id = (select auth.uid()) and p.role in ('manager', 'admin');
$$;

/** The caller's company if the caller is an admin there, else null. */
create function private.admin_company_id()
returns uuid
language sql
stable
security definer
set search_path = ''
as $$
  select p.company_id from public.profiles p
  where p.id = (select auth.uid()) and p.role = 'admin';
$$;

revoke all on function private.my_company_id() from public;
revoke all on function private.managed_company_id() from public;
revoke all on function private.admin_company_id() from public;
grant execute on function private.my_company_id() to authenticated, service_role;
grant execute on function private.managed_company_id() to authenticated, service_role;
grant execute on function private.admin_company_id() to authenticated, service_role;

-- Guards ---------------------------------------------------------------------------------

/**
 * Trigger: end users never change their own role and nobody moves a profile to another
 * company (its sessions would silently change tenant). Role changes by end users come only
 * from an admin of the same company (RLS already limits which rows they reach).
 */
create function private.guard_profile_update()
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

create trigger profiles_guard_update before update on public.profiles
  for each row execute function private.guard_profile_update();

-- Row-Level Security ---------------------------------------------------------------------

alter table public.companies enable row level security;
alter table public.profiles enable row level security;

create policy "Members can read their own company"
  on public.companies for select to authenticated
  using (id = (select private.my_company_id()));

create policy "Admins can update their company"
  on public.companies for update to authenticated
  using (id = (select private.admin_company_id()))
  with check (id = (select private.admin_company_id()));

create policy "Users read themselves, managers and admins read their company"
  on public.profiles for select to authenticated
  using (
    id = (select auth.uid())
    or company_id = (select private.managed_company_id())
  );

create policy "Admins can add profiles to their company"
  on public.profiles for insert to authenticated
  with check (company_id = (select private.admin_company_id()));

create policy "Users update themselves, admins update their company"
  on public.profiles for update to authenticated
  using (
    id = (select auth.uid())
    or company_id = (select private.admin_company_id())
  )
  with check (
    id = (select auth.uid())
    or company_id = (select private.admin_company_id())
  );

-- Grants ---------------------------------------------------------------------------------

revoke all on table public.companies, public.profiles from anon, authenticated, service_role;

grant select on table public.companies to authenticated;
grant update (name, audio_retention_days, transcript_retention_days, analysis_retention_days,
              session_retention_days)
  on table public.companies to authenticated;

grant select on table public.profiles to authenticated;
grant insert (id, company_id, role, display_name) on table public.profiles to authenticated;
grant update (display_name, role) on table public.profiles to authenticated;

grant select, insert, update, delete on table public.companies, public.profiles to service_role;
