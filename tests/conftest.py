"""Test harness: one real PostgreSQL per test run, a migrated template, a fresh clone per use.

- ``pg_server``: an embedded PostgreSQL started for the run (system binaries when present,
  else the ``local`` extra's), stopped at the end, its files in RAM when there is room
  (:func:`cluster_parent`). Works as root (the server runs as an unprivileged user).
- ``template_db``: a database bootstrapped and migrated once; ``world_template``: the same
  plus the two-company world of tests/support/world.py.
- ``fresh_db`` / ``world_db``: a clone of a template for one test (milliseconds, not a
  migration run), dropped afterwards. Clones are made one ahead and dropped in a background
  thread per template (:class:`_Clones`): a test does not wait for either.
"""

from __future__ import annotations

import os
import queue
import secrets
import shutil
import threading
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
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


#: A directory for the suite's throwaway PostgreSQL clusters. Unset or empty: a RAM file
#: system (:data:`RAM_DIR`) when it has :data:`RAM_DIR_MIN_FREE` bytes free, else the system's
#: temporary directory.
CLUSTER_DIR_ENV = "VOICESESSIONS_TEST_CLUSTER_DIR"
RAM_DIR = Path("/dev/shm")
RAM_DIR_MIN_FREE = 2 * 1024**3


def cluster_parent() -> Path | None:
    """Where the suite makes its clusters (:func:`temporary_cluster`'s ``parent``).

    A database clone and a drop create and delete some thousand small files (every
    relation of the migrated schema): on a disk shared with other work each took
    ~0.6 s under load, on a RAM file system ~0.05 s, and the suite makes ~1,500 of them.
    The clusters are throwaway (``fsync`` off), so nothing is lost by keeping them in RAM.
    """
    chosen = os.environ.get(CLUSTER_DIR_ENV, "")
    if chosen:
        return Path(chosen)
    try:
        usage = shutil.disk_usage(RAM_DIR)
    except OSError:
        return None
    if usage.free >= RAM_DIR_MIN_FREE and os.access(RAM_DIR, os.W_OK | os.X_OK):
        return RAM_DIR
    return None


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
    with temporary_server("voicesessions-test-", cluster_parent()) as info:
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


class _Clones:
    """Clones of one template for the tests: made one ahead, and dropped, by a thread.

    ``CREATE DATABASE ... TEMPLATE`` and ``DROP DATABASE`` spend most of their time waiting
    (for the checkpointer, for every backend to acknowledge a barrier), little of it
    computing: done by this thread while a test runs, that wait is off the tests' path. One
    thread and one admin connection per template; every clone is still used by one test (or
    one module) only and dropped after it. An error of the thread is raised to the test that
    takes the clone, or at the end of the run.
    """

    def __init__(self, server: LocalServerInfo, template: Database) -> None:
        self._server = server
        self._template = template
        self._ready: queue.Queue[Database | BaseException] = queue.Queue()
        self._jobs: queue.Queue[Database | None] = queue.Queue()  # None: make one
        self._stop = object()
        self._error: BaseException | None = None
        self._thread: threading.Thread | None = None

    def take(self) -> Database:
        """A clone no test has used (made now if none is ready); the next is started."""
        if self._thread is None:
            self._thread = threading.Thread(target=self._work, daemon=True)
            self._thread.start()
            self._jobs.put(None)
        ready = self._ready.get()
        self._jobs.put(None)  # the next test's, while this one runs
        if isinstance(ready, BaseException):
            raise ready
        return ready

    def give_back(self, db: Database) -> None:
        """Drop ``db`` (in the thread, after the next clone is made)."""
        self._jobs.put(db)

    def close(self) -> None:
        """Finish every job, drop the clone nobody took, raise a drop that failed."""
        if self._thread is None:
            return
        self._jobs.put(self._stop)  # type: ignore[arg-type]
        self._thread.join()
        while not self._ready.empty():
            left = self._ready.get()
            if isinstance(left, Database):
                _drop_database(self._server, left.name)
        if self._error is not None:
            raise self._error

    def _work(self) -> None:
        with _admin(self._server) as conn:
            while (job := self._jobs.get()) is not self._stop:
                try:
                    if job is None:
                        name = f"vs_test_{uuid.uuid4().hex[:12]}"
                        conn.execute(
                            sql.SQL("create database {} template {}").format(
                                sql.Identifier(name), sql.Identifier(self._template.name)
                            )
                        )
                        self._ready.put(_database(self._server, name))
                    else:
                        conn.execute(
                            sql.SQL("drop database if exists {} with (force)").format(
                                sql.Identifier(job.name)
                            )
                        )
                except BaseException as exc:  # to the test that waits, or to close()
                    if job is None:
                        self._ready.put(exc)
                    elif self._error is None:
                        self._error = exc


@pytest.fixture(scope="session")
def _fresh_clones(pg_server: LocalServerInfo, template_db: Database) -> Iterator[_Clones]:
    clones = _Clones(pg_server, template_db)
    yield clones
    clones.close()


@pytest.fixture(scope="session")
def _world_clones(
    pg_server: LocalServerInfo, world_template: tuple[Database, World]
) -> Iterator[_Clones]:
    clones = _Clones(pg_server, world_template[0])
    yield clones
    clones.close()


def _clone(clones: _Clones) -> Iterator[Database]:
    db = clones.take()
    try:
        yield db
    finally:
        clones.give_back(db)


@pytest.fixture
def fresh_db(_fresh_clones: _Clones) -> Iterator[Database]:
    """A migrated, empty database for one test."""
    yield from _clone(_fresh_clones)


@pytest.fixture
def world_db(
    world_template: tuple[Database, World], _world_clones: _Clones
) -> Iterator[tuple[Database, World]]:
    """A migrated database holding the two-company world, for one test."""
    for db in _clone(_world_clones):
        yield db, world_template[1]


@pytest.fixture(scope="module")
def shared_world_db(
    world_template: tuple[Database, World], _world_clones: _Clones
) -> Iterator[tuple[Database, World]]:
    """One world database per test module, for tests that roll back every change."""
    for db in _clone(_world_clones):
        yield db, world_template[1]


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
