/**
 * voicesessions — realtime publication
 * ====================================
 * Dashboards may follow sessions, their final transcript segments and their analytics with
 * Supabase Realtime's Postgres Changes (RLS applies per subscriber). Live events during a
 * call go through Broadcast instead, which scales better (see SessionUpdateManager).
 *
 * The tables join the `supabase_realtime` publication when it exists (always on Supabase;
 * the local bootstrap creates it too) and are skipped otherwise, so the migration also runs
 * on a database without Realtime.
 */

do $$
begin
  if exists (select 1 from pg_publication where pubname = 'supabase_realtime') then
    alter publication supabase_realtime
      add table public.sessions, public.transcript_segments, public.session_analytics;
  end if;
end
$$;
