"""Supabase objects the local bootstrap (compat.sql) does not create, as Supabase creates them,
for tests that need a database shaped like a Supabase project.

- :data:`REALTIME_DDL`: the parts of Supabase Realtime's schema the migrations rely on (from
  the supabase/realtime migrations): ``realtime.send`` is SECURITY INVOKER, executable only
  by Supabase's own roles, and inserts into ``realtime.messages``, which has RLS and no
  policy. Run it *before* the migrations to get the Realtime policy they create on Supabase.
- :data:`AUTH_AUDIT_LOG_DDL`: GoTrue's ``auth.audit_log_entries``, with the columns the GDPR
  functions read;
- :func:`supabase_world`: a migrated two-company world in a database that has Realtime.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import psycopg
from psycopg import sql
from psycopg.conninfo import make_conninfo

from tests.conftest import AUTHENTICATOR_PASSWORD, Database
from tests.support.world import World, seed_world
from voicesessions.local import migrations

REALTIME_DDL = """
create schema realtime;
grant usage on schema realtime to anon, authenticated, service_role;
create table realtime.messages (
  topic text not null,
  extension text not null,
  payload jsonb,
  event text,
  private boolean default false,
  updated_at timestamp not null default now(),
  inserted_at timestamp not null default now(),
  id uuid not null default gen_random_uuid(),
  primary key (id, inserted_at)
);
alter table realtime.messages enable row level security;
grant select, insert, update on realtime.messages to anon, authenticated, service_role;
create function realtime.topic() returns text language sql stable
  as $$ select nullif(current_setting('realtime.topic', true), '')::text $$;
create function realtime.send(payload jsonb, event text, topic text, private boolean default true)
returns void language plpgsql as $$
begin
  begin
    execute format('set local realtime.topic to %L', topic);
    insert into realtime.messages (payload, event, topic, private, extension)
    values (payload, event, topic, private, 'broadcast');
  exception when others then
    raise warning 'ErrorSendingBroadcastMessage: %', sqlerrm;
  end;
end;
$$;
revoke all on function realtime.send(jsonb, text, text, boolean) from public;
"""

AUTH_AUDIT_LOG_DDL = (
    "create table auth.audit_log_entries (instance_id uuid, id uuid primary key,"
    " payload json, created_at timestamptz default now(),"
    " ip_address varchar(64) not null default '')"
)


def supabase_world(template: Database) -> Iterator[tuple[Database, World]]:
    """A new database of ``template``'s server shaped like a Supabase project: Supabase
    Realtime's objects created *before* the migrations run (as on Supabase, so the migrations
    add their Realtime policy), migrated, holding the two-company world; dropped afterwards.
    A generator for fixtures: ``yield from supabase_world(template_db)``."""
    name = f"vs_supabase_{uuid.uuid4().hex[:12]}"
    maintenance = make_conninfo(template.dsn, dbname="postgres")
    with psycopg.connect(maintenance, autocommit=True) as admin:
        admin.execute(sql.SQL("create database {} template template0").format(sql.Identifier(name)))
    try:
        dsn = make_conninfo(template.dsn, dbname=name)
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute(REALTIME_DDL.encode())
            migrations.migrate(conn)
            conn.autocommit = False
            world = seed_world(conn)
        authenticator = make_conninfo(dsn, user="authenticator", password=AUTHENTICATOR_PASSWORD)
        yield Database(name, dsn, authenticator), world
    finally:
        with psycopg.connect(maintenance, autocommit=True) as admin:
            admin.execute(
                sql.SQL("drop database if exists {} with (force)").format(sql.Identifier(name))
            )
