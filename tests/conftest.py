"""Test harness: one real PostgreSQL per test run, a migrated template, a fresh clone per use.

- ``pg_server``: an embedded PostgreSQL started for the run (system binaries when present,
  else the ``local`` extra's), stopped at the end. Works as root (the server runs as an
  unprivileged user).
- ``template_db``: a database bootstrapped and migrated once; ``world_template``: the same
  plus the two-company world of tests/support/world.py.
- ``fresh_db`` / ``world_db``: a clone of a template for one test (milliseconds, not a
  migration run), dropped afterwards.
"""

from __future__ import annotations

import os
import secrets
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING

import psycopg
import pytest
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from tests.support.api import Api
from tests.support.pgbouncer import PgBouncer, running_pgbouncer
from tests.support.world import World, seed_world
from voicesessions.local import migrations

if TYPE_CHECKING:
    from voicesessions.local.server import LocalServerInfo

AUTHENTICATOR_PASSWORD = secrets.token_urlsafe(16)

#: Set (to anything but "" or "0") to migrate the test template under Supabase's default
#: privileges: every new table, sequence and function of schema ``public`` granted to the
#: API roles, as a Supabase project's ``postgres`` role has it. CI runs tests/db once so.
SUPABASE_DEFAULTS_ENV = "VOICESESSIONS_TEST_SUPABASE_DEFAULT_PRIVILEGES"
SUPABASE_DEFAULT_PRIVILEGES = "".join(
    f"alter default privileges in schema public grant all on {kind}"
    " to anon, authenticated, service_role;"
    for kind in ("tables", "sequences", "functions")
)


def supabase_defaults() -> bool:
    """Whether this run migrates under Supabase's default privileges."""
    return os.environ.get(SUPABASE_DEFAULTS_ENV, "") not in ("", "0")


def apply_supabase_defaults(conn: psycopg.Connection[object]) -> None:
    """In a run under Supabase's default privileges, set them on this database (the API
    roles must exist: they are cluster-wide, created by the first bootstrap)."""
    if supabase_defaults():
        conn.execute(SUPABASE_DEFAULT_PRIVILEGES)


@dataclass
class Database:
    """A database of the test cluster, with DSNs for its owner and for PostgREST's login."""

    name: str
    dsn: str
    authenticator_dsn: str

    def connect(self, autocommit: bool = True) -> psycopg.Connection[object]:
        return psycopg.connect(self.dsn, autocommit=autocommit)  # type: ignore[return-value]

    def api(self) -> Api:
        return Api(self.authenticator_dsn)


@dataclass(frozen=True)
class ExistingServer:
    """A server the suite did not start (VOICESESSIONS_TEST_DSN): only its superuser DSN."""

    dsn: str


@pytest.fixture(scope="session")
def pg_server() -> Iterator[LocalServerInfo]:
    """The run's PostgreSQL. ``VOICESESSIONS_TEST_DSN`` (a superuser DSN) points the suite at
    an existing server instead, e.g. another PostgreSQL major version."""
    existing = os.environ.get("VOICESESSIONS_TEST_DSN")
    if existing:
        yield ExistingServer(existing)  # type: ignore[misc]
        return
    from voicesessions.local.server import temporary_server

    # Not pytest's tmp_path: its parents are private to root, and when the suite runs as root
    # the server runs as an unprivileged user that must be able to reach its data directory.
    with temporary_server("voicesessions-test-") as info:
        yield info


def _database(server: LocalServerInfo, name: str) -> Database:
    return Database(
        name=name,
        dsn=make_conninfo(server.dsn, dbname=name),
        authenticator_dsn=make_conninfo(
            server.dsn, dbname=name, user="authenticator", password=AUTHENTICATOR_PASSWORD
        ),
    )


def _admin(server: LocalServerInfo) -> psycopg.Connection[object]:
    return psycopg.connect(server.dsn, autocommit=True)  # type: ignore[return-value]


def _create_database(server: LocalServerInfo, name: str, template: str | None = None) -> Database:
    with _admin(server) as conn:
        if template is None:
            conn.execute(sql.SQL("create database {}").format(sql.Identifier(name)))
        else:
            conn.execute(
                sql.SQL("create database {} template {}").format(
                    sql.Identifier(name), sql.Identifier(template)
                )
            )
    return _database(server, name)


def _drop_database(server: LocalServerInfo, name: str) -> None:
    with _admin(server) as conn:
        conn.execute(
            sql.SQL("drop database if exists {} with (force)").format(sql.Identifier(name))
        )


@pytest.fixture(scope="session")
def template_db(pg_server: LocalServerInfo) -> Database:
    """Bootstrapped and migrated once per run; clone it, never write to it."""
    _drop_database(pg_server, "vs_template_world")
    _drop_database(pg_server, "vs_template")
    db = _create_database(pg_server, "vs_template")
    migrate_database(db)
    return db


def migrate_database(db: Database) -> None:
    """Bootstrap and migrate ``db`` as the test templates are (also for clusters of their
    own, such as the read-replica tests' primary)."""
    with db.connect() as conn:
        if supabase_defaults():
            migrations.bootstrap(conn)  # the API roles must exist first
            apply_supabase_defaults(conn)
        migrations.migrate(conn)
        conn.execute(
            sql.SQL("alter role authenticator with password {}").format(
                sql.Literal(AUTHENTICATOR_PASSWORD)
            )
        )


@pytest.fixture(scope="session")
def world_template(pg_server: LocalServerInfo, template_db: Database) -> tuple[Database, World]:
    db = _create_database(pg_server, "vs_template_world", template_db.name)
    with db.connect(autocommit=False) as conn:
        world = seed_world(conn)
    return db, world


def _clone(pg_server: LocalServerInfo, template: Database) -> Iterator[Database]:
    name = f"vs_test_{uuid.uuid4().hex[:12]}"
    db = _create_database(pg_server, name, template.name)
    try:
        yield db
    finally:
        _drop_database(pg_server, name)


@pytest.fixture
def fresh_db(pg_server: LocalServerInfo, template_db: Database) -> Iterator[Database]:
    """A migrated, empty database for one test."""
    yield from _clone(pg_server, template_db)


@pytest.fixture
def world_db(
    pg_server: LocalServerInfo, world_template: tuple[Database, World]
) -> Iterator[tuple[Database, World]]:
    """A migrated database holding the two-company world, for one test."""
    template, world = world_template
    for db in _clone(pg_server, template):
        yield db, world


@pytest.fixture(scope="module")
def shared_world_db(
    pg_server: LocalServerInfo, world_template: tuple[Database, World]
) -> Iterator[tuple[Database, World]]:
    """One world database per test module, for tests that roll back every change."""
    template, world = world_template
    for db in _clone(pg_server, template):
        yield db, world


@pytest.fixture(scope="session")
def pgbouncer(pg_server: LocalServerInfo) -> Iterator[PgBouncer]:
    """A PgBouncer in transaction mode with a small pool in front of the run's PostgreSQL
    (tests/support/pgbouncer.py), for the superuser and ``authenticator`` logins."""
    with running_pgbouncer(pg_server.dsn, pgbouncer_passwords(pg_server)) as bouncer:
        yield bouncer


def pgbouncer_passwords(server: LocalServerInfo) -> dict[str, str]:
    """The logins a PgBouncer in front of the run's server lets through: the superuser of
    the server's DSN and ``authenticator``, with their passwords."""
    params = conninfo_to_dict(server.dsn)
    passwords = {"authenticator": AUTHENTICATOR_PASSWORD}
    if params.get("password"):
        passwords[str(params.get("user") or "postgres")] = str(params["password"])
    return passwords


def pytest_report_header(config: pytest.Config) -> str:
    """Say which PostgreSQL the run uses, so a CI log shows what was tested."""
    defaults = " under Supabase's default privileges" if supabase_defaults() else ""
    if os.environ.get("VOICESESSIONS_TEST_DSN"):
        return f"postgresql: existing server from VOICESESSIONS_TEST_DSN{defaults}"
    from voicesessions.local.server import find_binaries

    binaries = find_binaries()
    return (
        f"postgresql: {binaries.major_version} from {binaries.bindir} ({binaries.source}){defaults}"
    )
