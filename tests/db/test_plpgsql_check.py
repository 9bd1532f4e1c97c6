"""plpgsql_check over every PL/pgSQL function the migrations define: 0 errors, 0 warnings.

``supabase db lint`` runs the plpgsql_check extension: for each schema it calls
``plpgsql_check_function(oid)`` with the extension's defaults (fatal errors, ``other_warnings``
and ``extra_warnings`` on; ``performance_warnings`` and ``security_warnings`` off) on every
PL/pgSQL function that is *not* a trigger function, and at its default level (``warning``)
reports the findings of level ``error``, ``warning`` and ``warning extra`` (a ``performance``
finding is below that level and filtered out). This module checks:

- the same levels with the same switches, plus ``security_warnings`` (SQL injection through
  ``EXECUTE`` of unquoted input: these functions run as SECURITY DEFINER on values API users
  send, and the check costs nothing). ``performance`` findings (a safe implicit widening such
  as integer to bigint, a VOLATILE that could be STABLE) are not defects and stay outside the
  warning level, as in ``supabase db lint``;
- every PL/pgSQL function the migrations own: the functions of the migrated template that
  the Supabase-compatibility bootstrap alone does not create (whatever their schema:
  ``public``, ``private``, ``storage``...), excluding extension members;
- trigger functions too, which ``supabase db lint`` skips (they need a relation): each one
  against every table it is attached to (``relid``); one attached nowhere cannot be checked
  and is a finding itself;
- in a database shaped like a Supabase project: Realtime's schema and GoTrue's audit log
  (tests/support/supabase.py) exist, so the branches the functions take only on Supabase
  (``realtime.send``, ``realtime.messages``, ``auth.audit_log_entries``, guarded by
  ``to_regclass`` on plain PostgreSQL) are checked against real relations.

The extension is optional on a developer's machine: where the server cannot create it the
tests skip and say so. In CI (``CI=true``) the main run uses the system's PostgreSQL, for
which ``.ci/run`` installs Debian's ``postgresql-15-plpgsql-check``: there a missing extension
fails. The second CI run, on the ``local`` extra's PostgreSQL (``VOICESESSIONS_PG_BINDIR``),
has no such package and skips.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from dataclasses import dataclass

import psycopg
import pytest
from psycopg import sql
from psycopg.conninfo import make_conninfo
from psycopg.rows import TupleRow

from tests.conftest import Database
from tests.support.db import SYSTEM_SCHEMAS, owner
from tests.support.extensions import require_extension
from tests.support.supabase import AUTH_AUDIT_LOG_DDL, REALTIME_DDL
from voicesessions.local import migrations

#: The finding levels at ``supabase db lint``'s default level, plus security warnings.
FAILING_LEVELS = ("error", "warning", "warning extra", "security")

#: The switches of plpgsql_check_function_tb (see the module docstring).
CHECK_SQL = (
    "select level, sqlstate, message, detail, hint, lineno, statement, query"
    " from plpgsql_check_function_tb(%s::regprocedure, %s::regclass, newtable => %s,"
    " oldtable => %s, fatal_errors => false,"
    " other_warnings => true, extra_warnings => true, performance_warnings => false,"
    " security_warnings => true, compatibility_warnings => false)"
)

_PLPGSQL_FUNCTIONS = (
    "select p.oid::regprocedure::text, md5(p.prosrc), p.prorettype = 'trigger'::regtype"
    " from pg_proc p join pg_namespace n on n.oid = p.pronamespace"
    " join pg_language l on l.oid = p.prolang"
    f" where l.lanname = 'plpgsql' and {SYSTEM_SCHEMAS}"
    " and not exists (select 1 from pg_depend d where d.classid = 'pg_proc'::regclass"
    " and d.objid = p.oid and d.deptype = 'e')"
)


@dataclass(frozen=True)
class Function:
    signature: str  # regprocedure text, e.g. private.gdpr_apply_retention(uuid,boolean,integer)
    is_trigger: bool


def create_extension(conn: psycopg.Connection[TupleRow]) -> None:
    """``create extension plpgsql_check``, or skip (fail in CI's main run) without it."""
    require_extension(conn, "plpgsql_check", "postgresql-<major>-plpgsql-check")


def plpgsql_functions(conn: psycopg.Connection[TupleRow]) -> dict[str, tuple[str, bool]]:
    return {
        str(name): (str(src), bool(trig)) for name, src, trig in conn.execute(_PLPGSQL_FUNCTIONS)
    }


def bootstrap_only_functions(template: Database) -> dict[str, tuple[str, bool]]:
    """The PL/pgSQL functions of a database that had the compatibility bootstrap and no
    migration (made and dropped here)."""
    name = f"vs_bootstrap_{uuid.uuid4().hex[:12]}"
    maintenance = make_conninfo(template.dsn, dbname="postgres")
    with psycopg.connect(maintenance, autocommit=True) as admin:
        admin.execute(sql.SQL("create database {} template template0").format(sql.Identifier(name)))
    try:
        with psycopg.connect(make_conninfo(template.dsn, dbname=name), autocommit=True) as conn:
            migrations.bootstrap(conn)
            return plpgsql_functions(conn)
    finally:
        with psycopg.connect(maintenance, autocommit=True) as admin:
            admin.execute(
                sql.SQL("drop database if exists {} with (force)").format(sql.Identifier(name))
            )


def migration_functions(db: Database, template: Database) -> list[Function]:
    """The PL/pgSQL functions the migrations define or redefine (see the module docstring)."""
    with owner(db) as conn:
        migrated = plpgsql_functions(conn)
    bootstrapped = bootstrap_only_functions(template)
    return [
        Function(signature, is_trigger)
        for signature, (source, is_trigger) in sorted(migrated.items())
        if bootstrapped.get(signature, ("", False))[0] != source
    ]


#: A table a trigger function is attached to, with the names of the transition tables its
#: trigger declares (``REFERENCING NEW TABLE AS ...``), which the check must be told.
Target = tuple[str, str | None, str | None]


def attached_tables(conn: psycopg.Connection[TupleRow], function: Function) -> list[Target]:
    found = conn.execute(
        "select distinct tgrelid::regclass::text, tgnewtable::text, tgoldtable::text"
        " from pg_trigger where tgfoid = %s::regprocedure and not tgisinternal order by 1",
        (function.signature,),
    ).fetchall()
    return [(str(r[0]), r[1], r[2]) for r in found]


def findings(conn: psycopg.Connection[TupleRow], functions: list[Function]) -> list[str]:
    """Every finding at a failing level, one line each, naming function, table and line."""
    lines: list[str] = []
    for function in functions:
        targets: list[Target | None] = [None]
        if function.is_trigger:
            targets = list(attached_tables(conn, function))
            if not targets:
                lines.append(f"{function.signature}: trigger function attached to no table")
        for target in targets:
            table, new, old = target if target else (None, None, None)
            where = function.signature + (f" on {table}" if table else "")
            for level, state, message, detail, hint, lineno, statement, query in conn.execute(
                CHECK_SQL, (function.signature, table or 0, new, old)
            ):
                if level in FAILING_LEVELS:
                    context = "; ".join(
                        f"{label}: {value}"
                        for label, value in (
                            ("statement", statement),
                            ("query", query),
                            ("detail", detail),
                            ("hint", hint),
                        )
                        if value
                    )
                    line = "" if lineno is None else f" line {lineno}"
                    lines.append(
                        f"{where}{line}: {level} {state} {message}"
                        + (f" ({context})" if context else "")
                    )
    return lines


@pytest.fixture
def lint_db(fresh_db: Database) -> Iterator[tuple[Database, psycopg.Connection[TupleRow]]]:
    """A clone of the migrated template with plpgsql_check, shaped like a Supabase project."""
    with owner(fresh_db) as conn:
        create_extension(conn)
        yield fresh_db, conn


def test_every_migration_plpgsql_function_passes_plpgsql_check(
    lint_db: tuple[Database, psycopg.Connection[TupleRow]], template_db: Database
) -> None:
    db, conn = lint_db
    functions = migration_functions(db, template_db)
    names = {f.signature for f in functions}
    # The list is the real one: functions of both schemas, trigger functions among them.
    assert {
        "private.gdpr_apply_retention(uuid,boolean,integer)",
        "append_transcript_segments(uuid,jsonb)",
        "private.sessions_before_update()",
    } <= names
    assert sum(f.is_trigger for f in functions) >= 5
    # Supabase's objects, added after listing so that they are not linted as ours.
    conn.execute(REALTIME_DDL.encode())
    conn.execute(AUTH_AUDIT_LOG_DDL)
    found = findings(conn, functions)
    assert not found, (
        f"plpgsql_check: {len(found)} finding(s) in {len(functions)} functions:\n"
        + "\n".join(found)
    )


def test_the_check_reports_what_it_must(
    lint_db: tuple[Database, psycopg.Connection[TupleRow]],
) -> None:
    """The same check on planted defects, one per failing level: an implicit conversion (the
    42804 warning) and an unused variable (warning), an unused parameter (warning extra),
    dynamic SQL built from unquoted input (security), a trigger reading a column its table
    does not have (error, checked against that table), a statement trigger reading a column
    its transition table does not have, a trigger function attached nowhere."""
    _, conn = lint_db
    conn.execute(
        "create function public.lint_bad_cast(x text) returns integer language plpgsql as $$"
        " declare n integer; unused integer; begin n := x; return n; end $$"
    )
    conn.execute(
        "create function public.lint_unused_param(x text) returns integer language plpgsql"
        " as $$ begin return 1; end $$"
    )
    conn.execute(
        "create function public.lint_injectable(x text) returns bigint language plpgsql as $$"
        " declare n bigint; begin"
        " execute 'select count(*) from public.companies where name = ''' || x || '''' into n;"
        " return n; end $$"
    )
    conn.execute(
        "create function public.lint_bad_trigger() returns trigger language plpgsql as $$"
        " begin new.no_such_column := 1; return new; end $$"
    )
    conn.execute(
        "create trigger lint_bad before insert on public.companies"
        " for each row execute function public.lint_bad_trigger()"
    )
    conn.execute(
        "create function public.lint_bad_batch() returns trigger language plpgsql as $$"
        " begin perform t.no_such_column from batch t; return null; end $$"
    )
    conn.execute(
        "create trigger lint_batch after insert on public.companies referencing new table as"
        " batch for each statement execute function public.lint_bad_batch()"
    )
    conn.execute(
        "create function public.lint_unattached() returns trigger language plpgsql as $$"
        " begin return new; end $$"
    )
    found = findings(
        conn,
        [
            Function("lint_bad_cast(text)", False),
            Function("lint_unused_param(text)", False),
            Function("lint_injectable(text)", False),
            Function("lint_bad_trigger()", True),
            Function("lint_bad_batch()", True),
            Function("lint_unattached()", True),
        ],
    )
    text = "\n".join(found)
    assert "lint_bad_cast(text) line 1: warning 42804" in text
    assert 'lint_bad_cast(text) line 1: warning 00000 unused variable "unused"' in text
    assert 'lint_unused_param(text): warning extra 00000 unused parameter "x"' in text
    assert "lint_injectable(text) line 1: security" in text
    assert (
        'lint_bad_trigger() on companies line 1: error 42703 record "new" has no field'
        ' "no_such_column"' in text
    )
    # A statement trigger's transition table is known to the check (not "does not exist").
    assert "lint_bad_batch() on companies line 1: error 42703 column t.no_such_column" in text
    assert "lint_unattached(): trigger function attached to no table" in text
    assert len(found) == 7, text
