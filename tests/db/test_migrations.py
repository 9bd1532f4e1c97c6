"""The migration runner and the migration files, against truly empty databases.

An empty database is created from ``template0`` on the test server (through the owner's
connection to the template's server, on its maintenance database so the template itself is
never held open) and dropped afterwards.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg.rows import TupleRow

from tests.conftest import Database, apply_supabase_defaults
from tests.support.privileges import scratch_dsn
from voicesessions.errors import MigrationError
from voicesessions.local import migrations
from voicesessions.local.migrations import Migration

MIGRATIONS_DIR = Path(__file__).resolve().parents[2] / "supabase" / "migrations"
FILENAME = re.compile(r"^\d{14}_[a-z0-9_]+\.sql$")

Conn = psycopg.Connection[TupleRow]


@pytest.fixture
def empty_dsn(template_db: Database) -> Iterator[str]:
    """DSN of a brand-new database cloned from template0: no schemas, roles aside."""
    with scratch_dsn(template_db) as dsn:
        yield dsn


@pytest.fixture
def empty_conn(empty_dsn: str) -> Iterator[Conn]:
    with psycopg.connect(empty_dsn, autocommit=True) as conn:
        yield conn


def history(conn: Conn) -> list[tuple[Any, ...]]:
    return conn.execute(
        "select version, name, statements from supabase_migrations.schema_migrations"
        " order by version"
    ).fetchall()


def schema_snapshot(conn: Conn) -> list[tuple[Any, ...]]:
    """Every object and ACL outside the system schemas, plus history: what a no-op keeps."""
    has_history = conn.execute(
        "select to_regclass('supabase_migrations.schema_migrations') is not null"
    ).fetchone()
    hist = (
        " union all select 'hist', version, name,"
        " coalesce(array_length(statements, 1), 0)::text"
        " from supabase_migrations.schema_migrations"
        if has_history == (True,)
        else ""
    )
    return conn.execute(
        "select 'rel', c.oid::regclass::text, c.relkind::text, coalesce(c.relacl::text, '')"
        " from pg_class c join pg_namespace n on n.oid = c.relnamespace"
        " where n.nspname not in ('pg_catalog', 'information_schema', 'pg_toast')"
        " union all select 'fn', p.oid::regprocedure::text, '', coalesce(p.proacl::text, '')"
        " from pg_proc p join pg_namespace n on n.oid = p.pronamespace"
        " where n.nspname not in ('pg_catalog', 'information_schema')"
        " union all select 'nsp', nspname, '', coalesce(nspacl::text, '') from pg_namespace"
        " union all select 'pol', polname, polrelid::regclass::text, '' from pg_policy"
        " union all select 'trg', tgname, tgrelid::regclass::text, '' from pg_trigger"
        " where not tgisinternal"
        " union all select 'pub', p.pubname, coalesce(pr.prrelid::regclass::text, ''), ''"
        " from pg_publication p left join pg_publication_rel pr on pr.prpubid = p.oid"
        + hist
        + " order by 1, 2, 3, 4"
    ).fetchall()


# -- the files ----------------------------------------------------------------------------


def test_migration_filenames_follow_the_cli_convention() -> None:
    names = sorted(p.name for p in MIGRATIONS_DIR.iterdir())
    assert names, f"no migrations in {MIGRATIONS_DIR}"
    assert [n for n in names if not FILENAME.match(n)] == []
    versions = [n[:14] for n in names]
    assert len(set(versions)) == len(versions)


def test_loaded_migrations_are_the_files_in_order() -> None:
    loaded = migrations.load_migrations()
    assert [m.filename for m in loaded] == sorted(p.name for p in MIGRATIONS_DIR.glob("*.sql"))
    for migration in loaded:
        assert migration.sql == (MIGRATIONS_DIR / migration.filename).read_text(encoding="utf-8")


def test_a_misnamed_file_is_an_error(tmp_path: Path) -> None:
    (tmp_path / "20261126000100_ok.sql").write_text("select 1;", encoding="utf-8")
    (tmp_path / "2026_bad-name.sql").write_text("select 1;", encoding="utf-8")
    with pytest.raises(MigrationError, match=re.escape("2026_bad-name.sql")):
        migrations.load_migrations(tmp_path)


def test_statements_split_whole_statements() -> None:
    """Dollar-quoted bodies are not cut apart when the statements are recorded."""
    for migration in migrations.load_migrations():
        statements = migration.statements()
        assert statements, migration.filename
        for statement in statements:
            assert statement.count("$$") % 2 == 0, (migration.filename, statement[:80])
        joined = re.sub(r"\s+", "", "".join(statements))
        assert joined == re.sub(r"\s+", "", migration.sql)


_NOT_IN_A_TRANSACTION = re.compile(
    r"^\s*(begin|commit|rollback|end|start\s+transaction|savepoint|vacuum)\b"
    r"|\bconcurrently\b|^\s*(create|drop|alter)\s+database\b",
    re.IGNORECASE,
)


def _without_comments(statement: str) -> str:
    statement = re.sub(r"/\*.*?\*/", "", statement, flags=re.DOTALL)
    return re.sub(r"--[^\n]*", "", statement)


def test_migrations_leave_transactions_to_the_runner() -> None:
    """Each file runs in one transaction (here and in the Supabase CLI): no file may end it
    early or use a command that cannot run inside one."""
    offending = [
        (migration.filename, statement[:60])
        for migration in migrations.load_migrations()
        for statement in migration.statements()
        if _NOT_IN_A_TRANSACTION.search(_without_comments(statement).strip())
        and "$$" not in statement
    ]
    assert offending == []


# -- applying -------------------------------------------------------------------------------


def test_all_migrations_apply_to_an_empty_database(empty_conn: Conn, template_db: Database) -> None:
    assert empty_conn.execute(
        "select to_regnamespace('auth') is null, to_regclass('public.sessions') is null"
    ).fetchone() == (True, True)
    apply_supabase_defaults(empty_conn)  # as the template was made, in such a run
    files = migrations.load_migrations()
    applied = migrations.migrate(empty_conn)
    assert [m.version for m in applied] == [m.version for m in files]
    recorded = history(empty_conn)
    assert [(v, n) for v, n, _ in recorded] == [(m.version, m.name) for m in files]
    for (_, _, statements), migration in zip(recorded, files, strict=True):
        assert statements, migration.filename
        assert statements == migration.statements()
    # The result is the schema the rest of the suite runs against.
    with psycopg.connect(template_db.dsn, autocommit=True) as template:
        expected = schema_snapshot(template)
    assert schema_snapshot(empty_conn) == expected
    assert any(row[:2] == ("rel", "sessions") for row in expected)


def test_second_migrate_is_a_no_op(empty_conn: Conn) -> None:
    migrations.migrate(empty_conn)
    before = schema_snapshot(empty_conn)
    assert migrations.migrate(empty_conn) == []
    assert schema_snapshot(empty_conn) == before
    assert all(state.applied for state in migrations.status(empty_conn))


def test_history_table_has_the_cli_columns(empty_conn: Conn) -> None:
    migrations.migrate(empty_conn)
    columns = empty_conn.execute(
        "select a.attname, format_type(a.atttypid, a.atttypmod), a.attnotnull"
        " from pg_attribute a where a.attrelid = 'supabase_migrations.schema_migrations'::regclass"
        " and a.attnum > 0 and not a.attisdropped order by a.attnum"
    ).fetchall()
    assert columns == [
        ("version", "text", True),
        ("statements", "text[]", False),
        ("name", "text", False),
    ]
    primary_key = empty_conn.execute(
        "select array_agg(a.attname::text) from pg_constraint c join pg_attribute a"
        " on a.attrelid = c.conrelid and a.attnum = any(c.conkey)"
        " where c.conrelid = 'supabase_migrations.schema_migrations'::regclass"
        " and c.contype = 'p'"
    ).fetchone()
    assert primary_key == (["version"],)


def test_migrate_applies_only_what_is_pending(empty_conn: Conn) -> None:
    files = migrations.load_migrations()
    migrations.migrate(empty_conn, files[:2])
    assert [v for v, _, _ in history(empty_conn)] == [m.version for m in files[:2]]
    rest = migrations.migrate(empty_conn)
    assert [m.version for m in rest] == [m.version for m in files[2:]]


# -- failures -------------------------------------------------------------------------------

GOOD = Migration("29990101000100", "good_one", "create table public.vs_good (id int primary key);")
AFTER = Migration("29990101000300", "after_bad", "create table public.vs_after (id int);")


@pytest.mark.parametrize(
    ("bad_sql", "sqlstate"),
    [
        (
            "create table public.vs_bad (id int);\n"
            "create function private.vs_bad() returns int language sql as $$ select 1 $$;\n"
            "create type public.vs_bad_kind as enum ('a');\n"
            "select 1 / 0;",
            "22012",
        ),
        ("create table public.vs_bad (id int);\ncreate tabel oops;", "42601"),
        (
            "create table public.vs_bad (id int);\n"
            "insert into public.vs_bad values (1);\n"
            "select * from public.does_not_exist;",
            "42P01",
        ),
    ],
)
def test_a_failing_migration_leaves_nothing(
    fresh_db: Database, bad_sql: str, sqlstate: str
) -> None:
    bad = Migration("29990101000200", "bad_one", bad_sql)
    with psycopg.connect(fresh_db.dsn, autocommit=True) as conn:
        before = history(conn)
        with pytest.raises(MigrationError) as excinfo:
            migrations.migrate(conn, [*migrations.load_migrations(), GOOD, bad, AFTER])
        error = excinfo.value
        assert error.version == bad.version
        assert error.sqlstate == sqlstate
        assert bad.filename in str(error)
        assert isinstance(error.__cause__, psycopg.Error)
        # The good migration before it stays applied and recorded; the bad one left nothing,
        # and the runner stopped there.
        assert history(conn) == [*before, (GOOD.version, GOOD.name, GOOD.statements())]
        leftovers = conn.execute(
            "select to_regclass('public.vs_good') is not null,"
            " to_regclass('public.vs_bad'), to_regprocedure('private.vs_bad()'),"
            " to_regtype('public.vs_bad_kind'), to_regclass('public.vs_after')"
        ).fetchone()
        assert leftovers == (True, None, None, None, None)
        # Nothing is left half-open either: the connection is usable and not in a transaction.
        assert conn.info.transaction_status == psycopg.pq.TransactionStatus.IDLE


# -- the compatibility bootstrap ---------------------------------------------------------------


def test_bootstrap_runs_twice_and_changes_nothing_the_second_time(empty_conn: Conn) -> None:
    assert migrations.bootstrap(empty_conn) is True
    found = empty_conn.execute(
        "select to_regclass('auth.users') is not null, to_regprocedure('auth.uid()') is not null,"
        " to_regclass('storage.objects') is not null,"
        " exists (select 1 from pg_publication where pubname = 'supabase_realtime'),"
        " exists (select 1 from pg_roles where rolname = 'authenticator' and rolcanlogin)"
    ).fetchone()
    assert found == (True, True, True, True, True)
    before = schema_snapshot(empty_conn)
    assert migrations.bootstrap(empty_conn) is True
    assert schema_snapshot(empty_conn) == before


def test_bootstrap_is_skipped_on_a_supabase_database(empty_dsn: str) -> None:
    """``supabase_admin`` marks a Supabase database. Roles are cluster-wide, so the role is
    created inside a transaction that is rolled back: other sessions never see it, and it
    cannot outlive the test."""
    check_absent = "select exists (select 1 from pg_roles where rolname = 'supabase_admin')"
    with psycopg.connect(empty_dsn) as conn:
        assert conn.execute(check_absent).fetchone() == (False,)
        try:
            conn.execute("create role supabase_admin nologin")
            assert migrations.is_supabase(conn) is True
            assert migrations.bootstrap(conn) is False
            untouched = conn.execute(
                "select to_regnamespace('auth'), to_regnamespace('storage'),"
                " exists (select 1 from pg_publication where pubname = 'supabase_realtime')"
            ).fetchone()
            assert untouched == (None, None, False)
        finally:
            conn.rollback()
        assert conn.execute(check_absent).fetchone() == (False,)
        assert migrations.is_supabase(conn) is False
