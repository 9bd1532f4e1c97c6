/**
 * voicesessions — scheduled retention (pg_cron where it exists, the CLI everywhere else)
 * ====================================================================================
 * Retention (GDPR Art. 5(1)(e), private.gdpr_apply_retention) runs by itself where the
 * pg_cron extension is installed (Supabase offers it: Database > Extensions > pg_cron):
 *
 *   select private.schedule_retention();                      every 10 minutes, batches of 500
 *   select private.schedule_retention('0,5,10,15,20,25,30,35,40,45,50,55 1-5 * * *', 200);
 *                                                             every 5 minutes 01:00-05:55 GMT
 *   select private.unschedule_retention();                    stop (true if a job was removed)
 *   select private.retention_schedule();                      the job (null: not scheduled)
 *   select private.retention_runs(20);                        its latest runs (cron.job_run_details)
 *
 * or `voicesessions gdpr retention --schedule '0 * * * *' | --unschedule | --runs` with a
 * direct connection string (--dsn; on Supabase the database's connection string, not the API
 * URL: these are operator functions, not exposed to the API). On PostgreSQL without pg_cron
 * nothing changes: `voicesessions gdpr retention --yes` from the system's cron stays the way
 * to run it, and this migration applies there too (it references pg_cron only at run time,
 * through dynamic SQL, after checking that the extension exists).
 *
 * One job run = one batch = one transaction
 * -----------------------------------------
 * The job's command is `select private.retention_tick(<batch_size>)`: one call of
 * private.gdpr_apply_retention over every company, i.e. at most batch_size sessions per
 * category (sessions, audio, transcripts, analyses) in one short transaction, each company in
 * its own subtransaction. A backlog drains over the following runs (each run picks up what is
 * left: retention is idempotent), so no run holds locks for long, whatever the backlog; with
 * lock_timeout = 5s (local to the run) a run never queues long behind a user's locks either:
 * the company concerned fails with 55P03 and the next run takes it up.
 * Why not a procedure looping with COMMIT between batches: PostgreSQL refuses transaction
 * control in a procedure that has a SET clause (`set search_path = ''`), and a routine in our
 * schemas without a fixed search_path is what the Supabase advisor flags (lint 0011,
 * tests/db/test_advisor.py). One batch per run needs neither, and works the same whether
 * pg_cron runs its jobs over libpq or in background workers. Throughput is batch_size per
 * category per run: 500 every 10 minutes is 72,000 sessions a day per category.
 *
 * Failures are visible, and one company never blocks the others
 * ---------------------------------------------------------------
 * A company whose retention fails is rolled back alone (its subtransaction) and the others'
 * work of the run is committed. The failure is recorded:
 *   - when the run changed something for other companies: an audit_log entry
 *     'gdpr.retention_failed' for that company (details {sqlstate, message, batch_size,
 *     scheduled});
 *     the run itself is recorded as succeeded;
 *   - when the run changed nothing else (the usual case once the others are done): the run
 *     raises, with the failing company's SQLSTATE and a message naming every failing company,
 *     so cron.job_run_details records it as failed with that message, run after run, until
 *     the cause is fixed.
 *
 * Storage: nothing is silently lost
 * ---------------------------------
 * No SQL can delete Storage objects (Supabase blocks deleting storage.objects rows; the files
 * would be orphaned). A scheduled run records the audio it takes off sessions (and that of
 * the sessions it deletes) as `pending_storage` of the company's `gdpr_requests` row (kind
 * retention), which stays in_progress until the objects are confirmed deleted. Any later
 * `voicesessions gdpr retention --yes` (or vs.gdpr.apply_retention_policy(), or
 * vs.gdpr.resume_pending_storage()) deletes them through the Storage API (or the local
 * store) and confirms them, which completes the requests; `voicesessions gdpr requests
 * --status in_progress` and public.gdpr_pending_storage() list what is waiting. Run one of
 * them daily wherever the service key is available (see README "Scheduled retention").
 *
 * Why the migration schedules nothing
 * -----------------------------------
 * Applying a migration never starts destructive jobs: the same files run on development,
 * preview and CI databases that may have pg_cron, the operator chooses the time (pg_cron
 * reads schedules in GMT), and on Supabase pg_cron is usually enabled in the dashboard after
 * the migrations ran, so a schedule made here would exist or not depending on that order.
 * Scheduling is one idempotent call (the job is named 'voicesessions-retention'; calling
 * again replaces its schedule). Retention itself stays opt-in per company
 * (companies.*_retention_days null by default).
 *
 * Privileges: these functions are the operator's (the migration owner: `postgres` on
 * Supabase, a superuser or the DSN's owner on plain PostgreSQL). None is executable by
 * PUBLIC, anon, authenticated or service_role. They are SECURITY INVOKER: the job belongs to,
 * and runs as, whoever scheduled it, and private.gdpr_apply_retention still requires the
 * service role or a superuser/BYPASSRLS role for all companies (42501 otherwise).
 */

/** The name of the pg_cron job that runs retention. */
create or replace function private.retention_job_name()
returns text
language sql
immutable
set search_path = ''
as $$
  select 'voicesessions-retention'::text;
$$;
revoke all on function private.retention_job_name() from public, anon, authenticated, service_role;

/**
 * The schema of pg_cron's objects (`cron`, fixed by pg_cron), null when the extension is
 * not installed in this database. The functions below build their pg_cron statements from
 * it, so that nothing refers to pg_cron's objects where it is absent (plpgsql_check,
 * `supabase db lint`).
 */
create or replace function private.retention_cron_schema()
returns text
language sql
stable
set search_path = ''
as $$
  select 'cron'::text
  where exists (select 1 from pg_catalog.pg_extension e where e.extname = 'pg_cron');
$$;
revoke all on function private.retention_cron_schema()
  from public, anon, authenticated, service_role;

/** Whether the pg_cron extension is installed in this database. */
create or replace function private.retention_has_pg_cron()
returns boolean
language sql
stable
set search_path = ''
as $$
  select private.retention_cron_schema() is not null;
$$;
revoke all on function private.retention_has_pg_cron()
  from public, anon, authenticated, service_role;

/**
 * One scheduled retention run: one batch of private.gdpr_apply_retention over every company
 * (at most `batch_size` sessions per category, one transaction), with a 5-second lock
 * timeout. A company that fails is rolled back alone; see the header for how its failure is
 * recorded (an audit entry 'gdpr.retention_failed', or the run raising with the company's
 * SQLSTATE when nothing else changed). Returns {batch_size, more, counts, companies
 * [{company_id, counts, more, request_id}], request_ids, pending_storage_count, failures}:
 * `more` true means the next run has work left. Bad batch_size: 22004 (null), 22023
 * (outside 1..10000).
 */
create or replace function private.retention_tick(batch_size integer default 500)
returns jsonb
language plpgsql
volatile
security invoker
set search_path = ''
as $$
declare
  report jsonb;
  failures jsonb;
  failure jsonb;
  named text;
begin
  if retention_tick.batch_size is null then
    raise exception 'batch_size is required' using errcode = '22004';
  end if;
  if retention_tick.batch_size not between 1 and 10000 then
    raise exception 'batch_size must be between 1 and 10000, not %', retention_tick.batch_size
      using errcode = '22023';
  end if;
  perform pg_catalog.set_config('lock_timeout', '5s', true);
  report := private.gdpr_apply_retention(null, false, retention_tick.batch_size);
  failures := coalesce(report -> 'failures', '[]'::jsonb);
  if jsonb_array_length(failures) > 0 then
    if jsonb_array_length(coalesce(report -> 'request_ids', '[]'::jsonb)) = 0 then
      select string_agg(format('%s (SQLSTATE %s: %s)', f ->> 'company_id', f ->> 'sqlstate',
                               f ->> 'message'), '; ' order by o)
      into named
      from jsonb_array_elements(failures) with ordinality x(f, o);
      raise exception 'retention failed for % company(ies): %',
          jsonb_array_length(failures), named
        using errcode = coalesce(failures -> 0 ->> 'sqlstate', 'P0001'),
              hint = 'The other companies have nothing left to do; fix the cause and the next run retries.';
    end if;
    for failure in select f from jsonb_array_elements(failures) f loop
      perform private.gdpr_audit(
        'gdpr.retention_failed', 'company', (failure ->> 'company_id')::uuid,
        (failure ->> 'company_id')::uuid, null,
        jsonb_build_object('sqlstate', failure ->> 'sqlstate', 'message', failure ->> 'message',
                           'batch_size', retention_tick.batch_size, 'scheduled', true));
    end loop;
  end if;
  return jsonb_build_object(
    'batch_size', retention_tick.batch_size,
    'more', coalesce((report ->> 'more')::boolean, false),
    'counts', report -> 'counts',
    'companies', coalesce(
      (select jsonb_agg(jsonb_build_object('company_id', c -> 'company_id',
                                           'counts', c -> 'counts', 'more', c -> 'more',
                                           'request_id', c -> 'request_id'))
       from jsonb_array_elements(report -> 'companies') c),
      '[]'::jsonb),
    'request_ids', coalesce(report -> 'request_ids', '[]'::jsonb),
    'pending_storage_count', jsonb_array_length(coalesce(report -> 'pending_storage', '[]'::jsonb)),
    'failures', failures
  );
end;
$$;
revoke all on function private.retention_tick(integer)
  from public, anon, authenticated, service_role;

/**
 * Schedules retention with pg_cron: the job 'voicesessions-retention' runs
 * `select private.retention_tick(batch_size)` on `schedule` (cron syntax, GMT; default every
 * 10 minutes). Calling again replaces the job's schedule and batch size. Returns the job id.
 * The job belongs to, and runs as, the caller. Without pg_cron: 0A000, naming the ways out
 * (enable pg_cron, or run `voicesessions gdpr retention --yes` from the system's cron).
 * Null arguments: 22004; batch_size outside 1..10000 or a schedule pg_cron refuses: 22023.
 */
create or replace function private.schedule_retention(
  schedule text default '*/10 * * * *',
  batch_size integer default 500
)
returns bigint
language plpgsql
volatile
security invoker
set search_path = ''
as $$
declare
  cron_schema text := private.retention_cron_schema();
  job bigint;
begin
  if schedule_retention.schedule is null or schedule_retention.batch_size is null then
    raise exception 'schedule and batch_size are required' using errcode = '22004';
  end if;
  if schedule_retention.batch_size not between 1 and 10000 then
    raise exception 'batch_size must be between 1 and 10000, not %', schedule_retention.batch_size
      using errcode = '22023';
  end if;
  if btrim(schedule_retention.schedule) = '' or length(schedule_retention.schedule) > 100 then
    raise exception 'schedule must be a cron expression such as ''0 3 * * *'''
      using errcode = '22023';
  end if;
  if cron_schema is null then
    raise exception 'pg_cron is not installed in this database, so retention cannot be scheduled here'
      using errcode = '0A000',
            hint = 'On Supabase enable pg_cron (Database > Extensions), then call again. '
                   'On PostgreSQL without pg_cron run `voicesessions gdpr retention --yes` '
                   'from the system''s cron.';
  end if;
  begin
    execute format('select %I.schedule($1, $2, $3)', cron_schema)
      into job
      using private.retention_job_name(), btrim(schedule_retention.schedule),
            format('select private.retention_tick(%s)', schedule_retention.batch_size);
  exception when internal_error or invalid_parameter_value or syntax_error then
    raise exception 'pg_cron refused the schedule %: %', schedule_retention.schedule, sqlerrm
      using errcode = '22023',
            hint = 'Five cron fields in GMT, e.g. ''0 * * * *'' or ''0 3 * * *''.';
  end;
  return job;
end;
$$;
revoke all on function private.schedule_retention(text, integer)
  from public, anon, authenticated, service_role;

/**
 * Removes the retention job. Returns whether one was removed (false without pg_cron or
 * without a job: nothing to stop). Runs already recorded in cron.job_run_details stay.
 */
create or replace function private.unschedule_retention()
returns boolean
language plpgsql
volatile
security invoker
set search_path = ''
as $$
declare
  cron_schema text := private.retention_cron_schema();
  removed boolean;
begin
  if cron_schema is null then
    return false;
  end if;
  execute format('select bool_or(%1$I.unschedule(j.jobid)) from %1$I.job j where j.jobname = $1',
                 cron_schema)
    into removed
    using private.retention_job_name();
  return coalesce(removed, false);
end;
$$;
revoke all on function private.unschedule_retention()
  from public, anon, authenticated, service_role;

/**
 * The retention job as pg_cron holds it: {jobid, schedule, command, active, username}, or
 * null (not scheduled, or no pg_cron). pg_cron shows a role its own jobs only: ask as the
 * role that scheduled it.
 */
create or replace function private.retention_schedule()
returns jsonb
language plpgsql
stable
security invoker
set search_path = ''
as $$
declare
  cron_schema text := private.retention_cron_schema();
  job jsonb;
begin
  if cron_schema is null then
    return null;
  end if;
  execute format(
    'select jsonb_build_object(''jobid'', j.jobid, ''schedule'', j.schedule,'
    ' ''command'', j.command, ''active'', j.active, ''username'', j.username)'
    ' from %I.job j where j.jobname = $1 order by j.jobid desc limit 1', cron_schema)
    into job
    using private.retention_job_name();
  return job;
end;
$$;
revoke all on function private.retention_schedule()
  from public, anon, authenticated, service_role;

/**
 * The latest `max_runs` runs of the retention job, newest first, from cron.job_run_details:
 * [{runid, status, return_message, start_time, end_time}] (status starting, running,
 * succeeded or failed; return_message is the error of a failed run). Empty without pg_cron,
 * without a job or without runs. max_runs: 1..1000 (22023; null 22004).
 */
create or replace function private.retention_runs(max_runs integer default 20)
returns jsonb
language plpgsql
stable
security invoker
set search_path = ''
as $$
declare
  cron_schema text := private.retention_cron_schema();
  runs jsonb;
begin
  if retention_runs.max_runs is null then
    raise exception 'max_runs is required' using errcode = '22004';
  end if;
  if retention_runs.max_runs not between 1 and 1000 then
    raise exception 'max_runs must be between 1 and 1000, not %', retention_runs.max_runs
      using errcode = '22023';
  end if;
  if cron_schema is null then
    return '[]'::jsonb;
  end if;
  execute format(
    'select coalesce(jsonb_agg(jsonb_build_object(''runid'', r.runid, ''status'', r.status,'
    ' ''return_message'', r.return_message, ''start_time'', r.start_time,'
    ' ''end_time'', r.end_time) order by r.start_time desc nulls first, r.runid desc),'
    ' ''[]''::jsonb)'
    ' from (select d.* from %1$I.job_run_details d join %1$I.job j on j.jobid = d.jobid'
    '       where j.jobname = $1'
    '       order by d.start_time desc nulls first, d.runid desc limit $2) r',
    cron_schema)
    into runs
    using private.retention_job_name(), retention_runs.max_runs;
  return runs;
end;
$$;
revoke all on function private.retention_runs(integer)
  from public, anon, authenticated, service_role;
