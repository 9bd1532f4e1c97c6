"""A database as on Supabase with Realtime: Realtime's own objects created before the
migrations run, then migrated and holding the two-company world."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from contextlib import contextmanager

import psycopg
from psycopg import sql
from psycopg.conninfo import make_conninfo

from tests.conftest import AUTHENTICATOR_PASSWORD, Database
from tests.support.world import World, seed_world
from voicesessions.local import migrations

# The parts of Supabase Realtime's schema the migration relies on, as Realtime creates them
# (supabase/realtime migrations): realtime.send is SECURITY INVOKER, executable only by
# Supabase's own roles, and inserts into realtime.messages, which has RLS and no policy.
FAKE_REALTIME = """
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


@contextmanager
def realtime_database(template_db: Database) -> Iterator[tuple[Database, World]]:
    """A new database with Supabase Realtime's objects created *before* the migrations run
    (as on Supabase), migrated, holding the two-company world; dropped afterwards."""
    name = f"vs_realtime_{uuid.uuid4().hex[:12]}"
    maintenance = make_conninfo(template_db.dsn, dbname="postgres")
    with psycopg.connect(maintenance, autocommit=True) as admin:
        admin.execute(sql.SQL("create database {} template template0").format(sql.Identifier(name)))
    try:
        dsn = make_conninfo(template_db.dsn, dbname=name)
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute(FAKE_REALTIME.encode())
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
