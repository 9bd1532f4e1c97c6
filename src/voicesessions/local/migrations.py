"""Apply the SQL migrations in ``supabase/migrations/`` the way the Supabase CLI does.

Each migration file runs in its own transaction and is recorded in
``supabase_migrations.schema_migrations(version, statements, name)``, the table the Supabase
CLI keeps, so ``voicesessions db migrate`` and ``supabase db push`` agree on what has been
applied. On a plain PostgreSQL the Supabase-compatibility bootstrap (``compat.sql``) runs
first; on a real Supabase database it is never run.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from importlib import resources
from importlib.resources.abc import Traversable
from pathlib import Path
from typing import Any

import psycopg
import sqlparse
from psycopg import sql

from voicesessions.errors import MigrationError

Connection = psycopg.Connection[Any]

_FILENAME = re.compile(r"^(?P<version>\d{14})_(?P<name>[a-z0-9_]+)\.sql$")

_HISTORY_DDL = """
create schema if not exists supabase_migrations;
create table if not exists supabase_migrations.schema_migrations (
  version text not null primary key,
  statements text[],
  name text
);
"""


@dataclass(frozen=True)
class Migration:
    """One migration file: ``<14-digit version>_<name>.sql``."""

    version: str
    name: str
    sql: str

    @property
    def filename(self) -> str:
        return f"{self.version}_{self.name}.sql"

    def statements(self) -> list[str]:
        """The file split into statements, as stored in ``schema_migrations.statements``."""
        return [s.strip() for s in sqlparse.split(self.sql) if s.strip()]


@dataclass(frozen=True)
class MigrationState:
    """A migration and whether the database has it."""

    migration: Migration
    applied: bool


def migrations_dir() -> Traversable:
    """Where the migrations are: inside the installed wheel, or the checkout's ``supabase/``.

    The wheel maps ``supabase/migrations`` to ``voicesessions/_supabase/migrations`` at build
    time, so the SQL has a single home in the repository.
    """
    packaged = resources.files("voicesessions") / "_supabase" / "migrations"
    if packaged.is_dir():
        return packaged
    checkout = Path(__file__).resolve().parents[3] / "supabase" / "migrations"
    if checkout.is_dir():
        return checkout
    raise MigrationError(
        "the migrations are missing: neither the package data nor supabase/migrations exists"
    )


def load_migrations(directory: Traversable | Path | None = None) -> list[Migration]:
    """All migrations in version order. A file whose name does not follow the Supabase CLI's
    ``<14 digits>_<name>.sql`` pattern is an error, not something to skip silently."""
    root = directory if directory is not None else migrations_dir()
    found: list[Migration] = []
    for entry in root.iterdir():
        if not entry.name.endswith(".sql"):
            continue
        match = _FILENAME.match(entry.name)
        if match is None:
            raise MigrationError(
                f"{entry.name}: migration files must be named <14-digit timestamp>_<name>.sql"
            )
        found.append(Migration(match["version"], match["name"], entry.read_text(encoding="utf-8")))
    found.sort(key=lambda m: m.version)
    versions = [m.version for m in found]
    if len(set(versions)) != len(versions):
        raise MigrationError("two migration files share a version")
    return found


def compat_sql() -> str:
    """The Supabase-compatibility bootstrap for plain PostgreSQL."""
    return (resources.files("voicesessions.local") / "compat.sql").read_text(encoding="utf-8")


def is_supabase(conn: Connection) -> bool:
    """True on a database provisioned by Supabase (hosted or ``supabase start``)."""
    row = conn.execute("select exists (select 1 from pg_roles where rolname = 'supabase_admin')")
    result = row.fetchone()
    return bool(result and result[0])


def bootstrap(conn: Connection) -> bool:
    """Apply the compatibility bootstrap unless this is a Supabase database.

    Returns True when it ran. Idempotent: every object is created only where missing.
    """
    if is_supabase(conn):
        return False
    try:
        with conn.transaction():
            conn.execute(compat_sql().encode())
    except psycopg.Error as exc:
        raise MigrationError(
            f"Supabase-compatibility bootstrap failed: {exc}",
            sqlstate=exc.sqlstate,
        ) from exc
    return True


def _ensure_history(conn: Connection) -> None:
    with conn.transaction():
        conn.execute(_HISTORY_DDL.encode())


def applied_versions(conn: Connection) -> set[str]:
    """Versions recorded in ``supabase_migrations.schema_migrations`` (empty if none)."""
    exists = conn.execute(
        "select to_regclass('supabase_migrations.schema_migrations') is not null"
    ).fetchone()
    if not exists or not exists[0]:
        return set()
    rows = conn.execute("select version from supabase_migrations.schema_migrations").fetchall()
    return {str(r[0]) for r in rows}


def status(conn: Connection, migrations: Iterable[Migration] | None = None) -> list[MigrationState]:
    """Every known migration with whether it has been applied."""
    done = applied_versions(conn)
    todo = list(migrations) if migrations is not None else load_migrations()
    return [MigrationState(m, m.version in done) for m in todo]


def apply_one(conn: Connection, migration: Migration) -> None:
    """Run one migration and record it, in one transaction: all of it or none of it."""
    try:
        with conn.transaction():
            conn.execute(migration.sql.encode())
            conn.execute(
                sql.SQL(
                    "insert into supabase_migrations.schema_migrations (version, statements, name)"
                    " values ({}, {}, {})"
                ).format(
                    sql.Literal(migration.version),
                    sql.Literal(migration.statements()),
                    sql.Literal(migration.name),
                )
            )
    except psycopg.Error as exc:
        diag = exc.diag
        where = f" (line context: {diag.context.strip()})" if diag.context else ""
        raise MigrationError(
            f"migration {migration.filename} failed: {diag.message_primary or exc}{where}",
            version=migration.version,
            sqlstate=exc.sqlstate,
        ) from exc


def migrate(
    conn: Connection, migrations: Iterable[Migration] | None = None, *, compat: bool = True
) -> list[Migration]:
    """Bootstrap (plain PostgreSQL only) and apply every pending migration in order.

    Returns the migrations applied now; an empty list means the database was up to date.
    Stops at the first failure, leaving the earlier migrations applied and recorded.
    """
    if compat:
        bootstrap(conn)
    _ensure_history(conn)
    done = applied_versions(conn)
    todo = list(migrations) if migrations is not None else load_migrations()
    applied: list[Migration] = []
    for migration in todo:
        if migration.version in done:
            continue
        apply_one(conn, migration)
        applied.append(migration)
    return applied


def connect(dsn: str) -> Connection:
    """An autocommit connection for the runner (each migration opens its own transaction)."""
    try:
        return psycopg.connect(dsn, autocommit=True)
    except psycopg.Error as exc:
        raise MigrationError(f"cannot connect to the database: {exc}") from exc
