/**
 * voicesessions — foundation
 * ==========================
 * Schemas, enums and the small helpers every later migration uses.
 *
 * Conventions for every migration in this folder
 * ----------------------------------------------
 * - Tables live in `public` (exposed through PostgREST); internals live in `private`, a schema
 *   the API never exposes. Security-definer functions are in `private`, have
 *   `set search_path = ''` and schema-qualify every name.
 * - Nothing is granted by default, and default privileges are the project's (never changed
 *   here outside `private`): each table, sequence and function revokes what PostgreSQL's or
 *   Supabase's defaults give (functions: PUBLIC; objects in `public`: anon, authenticated,
 *   service_role) and then grants exactly what each role needs (Supabase stops
 *   auto-granting new objects to anon/authenticated/service_role in 2026).
 * - Every RLS policy is `to authenticated`, wraps auth.uid() and the helpers in `(select ...)`
 *   so they are evaluated once per statement, and reads only indexed columns.
 * - Every `raise` carries an errcode. Standard codes where one fits (42501 permission denied,
 *   23503 missing row, 23514 rule violated, 22023 bad value); our own class `VS` otherwise:
 *
 *     VS001  invalid_status_transition   a session status change the lifecycle forbids
 *     VS002  session_not_active          writing live data into a session that has ended
 *
 *   The Python SDK maps each code to an exception (see voicesessions.errors).
 */

-- Schemas --------------------------------------------------------------------------------

create schema if not exists private;
comment on schema private is
  'Internals of voicesessions: security-definer helpers and trigger functions. Never exposed through the API.';

revoke all on schema private from public;
-- Usage lets policies and invoker triggers call the helpers granted below; the schema is not
-- exposed through the API, and each function still needs its own EXECUTE grant.
grant usage on schema private to authenticated, service_role;
grant usage on schema public to anon, authenticated, service_role;

-- No `alter default privileges` here: they would change how the project's own objects are
-- granted. Every object below revokes and grants its own privileges (see the conventions).

-- Enums ----------------------------------------------------------------------------------

/** Role of a person inside their company. */
create type public.profile_role as enum ('trainee', 'manager', 'admin');

/**
 * Session lifecycle. Allowed transitions (enforced by a trigger, errcode VS001):
 *   active -> completed -> analyzed -> archived, and completed -> archived
 *   (a session whose analysis never arrives can still be archived).
 */
create type public.session_status as enum ('active', 'completed', 'analyzed', 'archived');

/** Background processing of a session's recording and analysis. */
create type public.processing_status as enum ('pending', 'processing', 'complete', 'failed');

/** Who took part in a session. */
create type public.participant_kind as enum ('trainee', 'ai_buyer', 'coach', 'peer');

/** What a data-subject request asks for (GDPR Arts. 15, 17, 20 and retention, Art. 5(1)(e)). */
create type public.gdpr_request_kind as enum ('erasure', 'anonymization', 'export', 'retention');

create type public.gdpr_request_status as enum ('pending', 'in_progress', 'completed', 'failed');

-- Helpers --------------------------------------------------------------------------------

/**
 * Trigger: keeps `updated_at` current on every update.
 */
create function private.set_updated_at()
returns trigger
language plpgsql
set search_path = ''
as $$
begin
  new.updated_at := now();
  return new;
end;
$$;
revoke all on function private.set_updated_at() from public;

/**
 * True when the current statement runs for an API user (PostgREST's anon or authenticated
 * role) rather than service_role, the migration owner or a trusted definer function.
 * Guards that protect columns from end users use it.
 */
create function private.is_end_user()
returns boolean
language sql
stable
set search_path = ''
as $$
  select current_user in ('anon', 'authenticated');
$$;
revoke all on function private.is_end_user() from public;
grant execute on function private.is_end_user() to authenticated, service_role;
