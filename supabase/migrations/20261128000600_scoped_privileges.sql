/**
 * voicesessions — default privileges back to the project's, policy names within 63 bytes
 * =======================================================================================
 * Earlier versions of 20261126000100_foundation.sql and 20261128000200_hardening_tenancy.sql
 * changed default privileges that belong to the project, not to us:
 *
 *   alter default privileges revoke execute on functions from public;            (global)
 *   alter default privileges in schema public revoke ... from anon, authenticated;
 *     (functions in the foundation; tables, sequences and functions in the hardening)
 *
 * so the user's own functions created later, anywhere, were no longer executable by PUBLIC,
 * and on Supabase their new tables, sequences and functions in `public` no longer went to the
 * API roles. Those files now revoke object by object instead, and leave default privileges
 * alone (apart from schema `private`, which is ours). This migration gives a database that
 * ran the earlier files the end state of a fresh install:
 *
 * - Only where the migration history (supabase_migrations.schema_migrations.statements, kept
 *   by `voicesessions db migrate` and by the Supabase CLI) shows that 20261126000100 or
 *   20261128000200 ran one of those statements. A fresh install of the current files never
 *   did, so there this migration changes nothing, whatever the project's own defaults are.
 *   A database whose history lacks the statements (`supabase migration repair`) is left as
 *   it is.
 * - Global: `alter default privileges grant execute on functions to public` for the role
 *   running the migrations, as the earlier files ran theirs (on plain PostgreSQL this removes
 *   the pg_default_acl entry the revoke created).
 * - Schema `public`: Supabase's default privileges for anon and authenticated, where the
 *   project has them. We never touched service_role's defaults, so they tell what the
 *   project's defaults were: for tables, sequences and functions, anon and authenticated get
 *   back exactly the privileges service_role's default ACL entry (of the role running the
 *   migrations, in `public`) holds, and nothing where service_role has no entry (plain
 *   PostgreSQL, or a project that revoked its defaults, as Supabase's
 *   `auto_expose_new_tables = false` does for all three roles).
 * - Our own objects the earlier files left to Supabase's defaults (the identity sequences,
 *   public.accept_invitation for service_role) lose what those defaults gave them.
 * - Not restored: the privileges the earlier hardening file revoked from anon and
 *   authenticated on sequences that already existed in `public` (`revoke all on all
 *   sequences in schema public`); grant them again where the project relied on them.
 *
 * Policy names: six names longer than PostgreSQL's 63-byte identifier limit were stored
 * truncated. Renamed here where the truncated name exists (the policies are unchanged):
 *
 *   "Owners and company managers and admins read sessions"       (public.sessions)
 *   "Owners and company managers and admins read segments"       (public.transcript_segments)
 *   "Owners and company managers and admins read transcripts"    (public.transcripts)
 *   "Owners and company managers and admins read analyses"       (public.analysis_results)
 *   "Owners and company managers and admins read analytics"      (public.session_analytics)
 *   "Owners and company managers and admins read session audio"  (storage.objects)
 */

-- Default privileges -----------------------------------------------------------------------

do $$
declare
  ran_global boolean := false;
  ran_public boolean := false;
  entry record;
begin
  if to_regclass('supabase_migrations.schema_migrations') is not null then
    select
      -- a statement (not a comment) at the start of a line
      coalesce(bool_or(s ~* ('(^|\n)[ \t]*alter\s+default\s+privileges\s+revoke\s+execute'
                             '\s+on\s+functions\s+from\s+public\s*;')), false),
      coalesce(bool_or(s ~* ('(^|\n)[ \t]*alter\s+default\s+privileges\s+in\s+schema'
                             '\s+public\s+revoke\s')), false)
    into ran_global, ran_public
    from supabase_migrations.schema_migrations m
    cross join lateral unnest(m.statements) s
    where m.version in ('20261126000100', '20261128000200');
  end if;

  if ran_global then
    alter default privileges grant execute on functions to public;
  end if;

  if ran_public then
    for entry in
      select case d.defaclobjtype when 'r' then 'tables' when 'S' then 'sequences'
                                  else 'functions' end as kind,
             string_agg(a.privilege_type, ', ' order by a.privilege_type) as privileges
      from pg_catalog.pg_default_acl d
      cross join lateral pg_catalog.aclexplode(d.defaclacl) a
      where d.defaclrole = (select r.oid from pg_catalog.pg_roles r
                            where r.rolname = current_user)
        and d.defaclnamespace = 'public'::regnamespace
        and d.defaclobjtype in ('r', 'S', 'f')
        and a.grantee = 'service_role'::regrole
      group by d.defaclobjtype
    loop
      execute format('alter default privileges in schema public grant %s on %s'
                     ' to anon, authenticated', entry.privileges, entry.kind);
    end loop;
  end if;
end
$$;

-- Our objects that Supabase's default privileges reached through the earlier files (the
-- current ones revoke these per object; a no-op where nothing was granted).
revoke all on sequence public.audit_log_id_seq, public.transcript_segments_id_seq
  from public, anon, authenticated, service_role;
revoke all on function public.accept_invitation(text, text) from service_role;

-- Policy names -------------------------------------------------------------------------------

do $$
declare
  p record;
begin
  for p in
    select v.schema_name, v.table_name, v.old_name, v.new_name
    from (values
      ('public', 'sessions', 'sessions'),
      ('public', 'transcript_segments', 'segments'),
      ('public', 'transcripts', 'transcripts'),
      ('public', 'analysis_results', 'analyses'),
      ('public', 'session_analytics', 'analytics'),
      ('storage', 'objects', 'session audio')
    ) x(schema_name, table_name, what)
    cross join lateral (
      select x.schema_name, x.table_name,
             -- what PostgreSQL stored: the first 63 bytes (the names are ASCII)
             left('Owners, and managers and admins of the company, can read ' || x.what, 63)
               as old_name,
             'Owners and company managers and admins read ' || x.what as new_name
    ) v
  loop
    if exists (select 1 from pg_catalog.pg_policies pp
               where pp.schemaname = p.schema_name and pp.tablename = p.table_name
                 and pp.policyname = p.old_name) then
      execute format('alter policy %I on %I.%I rename to %I',
                     p.old_name, p.schema_name, p.table_name, p.new_name);
    end if;
  end loop;
end
$$;
