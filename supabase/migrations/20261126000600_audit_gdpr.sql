/**
 * voicesessions — audit log and GDPR requests
 * ===========================================
 * `audit_log` is append-only: no API role may insert, update or delete (not even
 * service_role); rows are written by the database's own security-definer functions, and an
 * update or delete is refused by a trigger for everyone. `gdpr_requests` records each
 * data-subject request with its status and timestamps; it survives the erasure it records.
 *
 * Neither table holds the erased content or a direct identifier of the data subject: the
 * subject is a `subject_ref`, a salted SHA-256 of their id (private.subject_ref), which cannot
 * be turned back into the person without the original id, yet lets an operator who holds the
 * id find the entries about it (GDPR Art. 30 records, Art. 17 proof of erasure).
 *
 * Who may do what
 *   audit_log, gdpr_requests   read: admins of the company; service_role.
 *                              write: nobody through the API.
 */

-- Subject references ---------------------------------------------------------------------

/** Secrets of this database (created once, never exposed). */
create table private.secrets (
  name text primary key,
  value text not null
);
revoke all on table private.secrets from public;

insert into private.secrets (name, value)
values ('subject_ref_salt', replace(gen_random_uuid()::text || gen_random_uuid()::text, '-', ''));

/**
 * The pseudonymous reference of a data subject: hex SHA-256 of a per-database salt and the id.
 */
create function private.subject_ref(subject_id uuid)
returns text
language sql
stable
security definer
set search_path = ''
as $$
  select encode(
    pg_catalog.sha256(convert_to(s.value || ':' || subject_ref.subject_id::text, 'UTF8')),
    'hex'
  )
  from private.secrets s where s.name = 'subject_ref_salt';
$$;
revoke all on function private.subject_ref(uuid) from public;
grant execute on function private.subject_ref(uuid) to service_role;

-- Audit log --------------------------------------------------------------------------------

/**
 * One entry per action worth proving later: who (actor id and role), what (action,
 * entity type and id or subject reference), where (company), when, and structured details
 * (categories, counts, stores). Details never hold free text about a person.
 */
create table public.audit_log (
  id bigint generated always as identity primary key,
  occurred_at timestamptz not null default now(),
  actor_id uuid,
  actor_role text not null check (char_length(actor_role) between 1 and 64),
  action text not null check (action ~ '^[a-z][a-z0-9_.]{0,99}$'),
  entity_type text not null check (entity_type ~ '^[a-z][a-z0-9_]{0,63}$'),
  entity_id uuid,
  subject_ref text check (subject_ref is null or subject_ref ~ '^[0-9a-f]{64}$'),
  -- No foreign key: an audit entry outlives the company it is about (and is never updated).
  company_id uuid,
  details jsonb not null default '{}'::jsonb check (jsonb_typeof(details) = 'object')
);
comment on table public.audit_log is
  'Append-only audit trail. Written only by database functions; never holds erased content.';

create index audit_log_company_id_occurred_at_idx on public.audit_log (company_id, occurred_at desc);
create index audit_log_subject_ref_idx on public.audit_log (subject_ref) where subject_ref is not null;

/** Trigger: the audit log is append-only, for every role. */
create function private.audit_log_append_only()
returns trigger
language plpgsql
set search_path = ''
as $$
begin
  raise exception 'audit_log is append-only: % is not allowed', lower(tg_op)
    using errcode = '42501';
end;
$$;
revoke all on function private.audit_log_append_only() from public;

create trigger audit_log_append_only
  before update or delete on public.audit_log
  for each row execute function private.audit_log_append_only();
create trigger audit_log_no_truncate
  before truncate on public.audit_log
  for each statement execute function private.audit_log_append_only();

/**
 * Writes one audit entry as the current caller. Used by the database's own functions (GDPR
 * operations, retention); not executable through the API.
 */
create function private.audit(
  action text,
  entity_type text,
  entity_id uuid default null,
  company_id uuid default null,
  subject_id uuid default null,
  details jsonb default '{}'::jsonb
)
returns bigint
language sql
security definer
set search_path = ''
as $$
  insert into public.audit_log
    (actor_id, actor_role, action, entity_type, entity_id, subject_ref, company_id, details)
  values (
    (select auth.uid()),
    coalesce((select auth.role()), session_user::text),
    audit.action,
    audit.entity_type,
    audit.entity_id,
    case when audit.subject_id is null then null else private.subject_ref(audit.subject_id) end,
    audit.company_id,
    coalesce(audit.details, '{}'::jsonb)
  )
  returning id;
$$;
revoke all on function private.audit(text, text, uuid, uuid, uuid, jsonb) from public;

-- GDPR requests ----------------------------------------------------------------------------

/**
 * One data-subject request (erasure, anonymization, export, retention run). It outlives the
 * data it erased and holds none of it: the subject is a `subject_ref`, the details are
 * categories, counts, stores and pending storage paths. Open requests past `due_at`
 * (one month, GDPR Art. 12(3)) are overdue.
 */
create table public.gdpr_requests (
  id uuid primary key default gen_random_uuid(),
  kind public.gdpr_request_kind not null,
  subject_ref text check (subject_ref is null or subject_ref ~ '^[0-9a-f]{64}$'),
  company_id uuid references public.companies (id) on delete set null,
  status public.gdpr_request_status not null default 'pending',
  requested_by uuid,
  requested_at timestamptz not null default now(),
  due_at timestamptz not null default (now() + interval '1 month'),
  started_at timestamptz,
  completed_at timestamptz,
  details jsonb not null default '{}'::jsonb check (jsonb_typeof(details) = 'object'),
  error text check (error is null or char_length(error) <= 2000),
  updated_at timestamptz not null default now(),
  constraint gdpr_requests_completed_when_done
    check ((status = 'completed') = (completed_at is not null)),
  constraint gdpr_requests_due_after_requested check (due_at >= requested_at)
);
comment on table public.gdpr_requests is
  'Data-subject requests with status and timestamps; survives the erasure it records.';

create index gdpr_requests_company_id_requested_at_idx
  on public.gdpr_requests (company_id, requested_at desc);
create index gdpr_requests_open_due_idx
  on public.gdpr_requests (due_at) where status in ('pending', 'in_progress');
create index gdpr_requests_subject_ref_idx on public.gdpr_requests (subject_ref);

create trigger gdpr_requests_set_updated_at before update on public.gdpr_requests
  for each row execute function private.set_updated_at();

-- Row-Level Security ---------------------------------------------------------------------

alter table public.audit_log enable row level security;
alter table public.gdpr_requests enable row level security;

create policy "Admins can read their company's audit log"
  on public.audit_log for select to authenticated
  using (company_id = (select private.admin_company_id()));

create policy "Admins can read their company's GDPR requests"
  on public.gdpr_requests for select to authenticated
  using (company_id = (select private.admin_company_id()));

-- Grants -----------------------------------------------------------------------------------

revoke all on table public.audit_log, public.gdpr_requests from anon, authenticated, service_role;

grant select on table public.audit_log, public.gdpr_requests to authenticated, service_role;
