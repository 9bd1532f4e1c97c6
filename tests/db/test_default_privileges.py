"""The migrations leave the project's default privileges alone and grant per object.

Default privileges belong to the project: PostgreSQL's (functions executable by PUBLIC) or
Supabase's (new tables, sequences and functions of ``public`` granted to anon,
authenticated and service_role). So:

- our objects get exactly the same privileges under either: each revokes what the defaults
  give and grants what its roles need;
- objects the user creates after migrating, in ``public`` or in a schema of their own, get
  what they get in a database that never saw our migrations;
- a database that ran the earlier versions of the foundation and hardening files (which
  changed the global and ``public`` defaults, and stored six policy names truncated) reaches,
  through 20261128000600_scoped_privileges.sql, the state of a fresh install; on a fresh
  install that migration changes nothing, even where the project set defaults of its own.

Every case runs in both shapes, whatever VOICESESSIONS_TEST_SUPABASE_DEFAULT_PRIVILEGES says.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest

from benchmarks._server import migrations_at
from tests.conftest import Database
from tests.support.privileges import (
    SHAPES,
    Acls,
    Conn,
    Shape,
    default_acls,
    object_acls,
    prepare,
    scratch_database,
)
from voicesessions.local import migrations

REPO = Path(__file__).resolve().parents[2]
MIGRATIONS_DIR = REPO / "supabase" / "migrations"
SCOPED = "20261128000600"
#: The last commit with the earlier files (global and `public` default privileges changed,
#: six policy names over 63 bytes).
EARLIER_FILES_COMMIT = "ec89ae0e4a7ed2ae396676dda27cbcb219203376"

#: The six read policies, by their names within 63 bytes (20261128000600 renames the
#: truncated ones; a later migration recreates them by these names).
READ_POLICIES = {
    ("public", "sessions", "Owners and company managers and admins read sessions"),
    ("public", "transcript_segments", "Owners and company managers and admins read segments"),
    ("public", "transcripts", "Owners and company managers and admins read transcripts"),
    ("public", "analysis_results", "Owners and company managers and admins read analyses"),
    ("public", "session_analytics", "Owners and company managers and admins read analytics"),
    ("storage", "objects", "Owners and company managers and admins read session audio"),
}

#: What a user creates after migrating, in `public` and in a schema of their own.
USER_OBJECTS = """
create schema their_app;
create table public.their_things (id bigserial primary key, name text);
create sequence public.their_counter;
create view public.their_view as select 1 as one;
create function public.their_fn() returns integer language sql as 'select 1';
create procedure public.their_proc() language sql as 'select 1';
create type public.their_mood as enum ('fine');
create table their_app.things (id bigserial primary key);
create sequence their_app.counter;
create function their_app.fn() returns integer language sql as 'select 1';
"""
USER_OBJECT = re.compile(r"^(public\.)?their_|^their_app(\.|$)")


def migrated_objects(conn: Conn, files: list[migrations.Migration] | None = None) -> Acls:
    """Migrate (all files, or ``files``) and return the privileges of the objects that the
    migrations created (those that were not there before)."""
    before = object_acls(conn).keys()
    migrations.migrate(conn, files)
    return {key: grants for key, grants in object_acls(conn).items() if key not in before}


def policies(conn: Conn) -> set[tuple[str, str, str]]:
    return {
        (str(s), str(t), str(p))
        for s, t, p in conn.execute("select schemaname, tablename, policyname from pg_policies")
    }


def state(conn: Conn) -> dict[str, Any]:
    """What 20261128000600 is about: every object's privileges, the default privileges and
    the policy names."""
    return {
        "objects": object_acls(conn),
        "defaults": default_acls(conn),
        "policies": policies(conn),
    }


# -- our objects ----------------------------------------------------------------------------


def test_our_objects_get_the_same_privileges_under_either_defaults(template_db: Database) -> None:
    found: dict[Shape, Acls] = {}
    for shape in SHAPES:
        with scratch_database(template_db) as conn:
            prepare(conn, shape)
            found[shape] = migrated_objects(conn)
    assert found["supabase"] == found["postgresql"]
    ours = found["postgresql"]
    # The comparison covers every kind of object the migrations make.
    assert {kind for kind, _ in ours} >= {"relation", "column", "function", "type", "schema"}
    assert ("function", "accept_invitation(text,text)") in ours
    assert ("relation", "audit_log_id_seq") in ours
    # Nothing of ours is granted to PUBLIC (a null ACL would read as PostgreSQL's default).
    to_public = [
        key
        for key, grants in ours.items()
        if key[0] in ("function", "relation") and any(g.startswith("PUBLIC:") for g in grants)
    ]
    assert to_public == []


# -- the user's objects ---------------------------------------------------------------------


@pytest.mark.parametrize("shape", SHAPES)
def test_the_users_own_objects_get_the_projects_defaults(
    template_db: Database, shape: Shape
) -> None:
    """The same objects, created in a database that never saw our migrations and in a
    migrated one, get the same privileges; the default privileges are the same too (those of
    schema `private`, ours, aside)."""
    found: dict[bool, tuple[Acls, set[tuple[str, str, str, str]]]] = {}
    for migrated in (False, True):
        with scratch_database(template_db) as conn:
            prepare(conn, shape)
            if migrated:
                migrations.migrate(conn)
            conn.execute(USER_OBJECTS.encode())
            users = {k: g for k, g in object_acls(conn).items() if USER_OBJECT.search(k[1])}
            defaults = {d for d in default_acls(conn) if d[1] != "private"}
            found[migrated] = (users, defaults)
    assert found[True] == found[False]
    users, _ = found[True]
    assert len(users) >= 10
    # What the defaults mean, so that the comparison above compares something.
    fn = users[("function", "their_fn()")]
    assert "PUBLIC:EXECUTE" in fn
    assert ("PUBLIC:EXECUTE" in users[("function", "their_app.fn()")]) is True
    assert ("anon:SELECT" in users[("relation", "their_things")]) is (shape == "supabase")
    assert ("anon:USAGE" in users[("relation", "their_counter")]) is (shape == "supabase")
    assert ("anon:EXECUTE" in fn) is (shape == "supabase")


# -- 20261128000600 -------------------------------------------------------------------------


@pytest.mark.parametrize("shape", SHAPES)
def test_a_database_that_ran_the_earlier_files_reaches_a_fresh_install(
    template_db: Database, shape: Shape
) -> None:
    with scratch_database(template_db) as conn:
        prepare(conn, shape)
        migrations.migrate(conn)
        fresh = state(conn)
    with scratch_database(template_db) as conn:
        prepare(conn, shape)
        migrations.migrate(conn, migrations_at(EARLIER_FILES_COMMIT))
        earlier = state(conn)
        applied = migrations.migrate(conn)
        upgraded = state(conn)
    # 000600 and whatever came after it; nothing of the earlier files runs twice.
    assert [m.version for m in applied] == [
        m.version for m in migrations.load_migrations() if m.version >= SCOPED
    ]
    # The earlier files did leave something to restore, in each part compared.
    assert ("postgres", "<global>", "f", "postgres:EXECUTE") in earlier["defaults"]
    assert not READ_POLICIES & earlier["policies"]
    assert earlier != fresh
    assert upgraded["defaults"] == fresh["defaults"]
    assert upgraded["policies"] == fresh["policies"]
    assert upgraded["objects"] == fresh["objects"]


@pytest.mark.parametrize("shape", SHAPES)
def test_scoped_privileges_leave_a_fresh_install_alone(template_db: Database, shape: Shape) -> None:
    """Also where the project changed its defaults itself, the way the earlier files did:
    only the migration history tells our statements from the project's."""
    own_defaults = (
        "alter default privileges revoke execute on functions from public;"
        "alter default privileges in schema public revoke all on tables from anon;"
    )
    with scratch_database(template_db) as conn:
        prepare(conn, shape)
        conn.execute(own_defaults)
        migrations.migrate(conn, [m for m in migrations.load_migrations() if m.version != SCOPED])
        before = state(conn)
        applied = migrations.migrate(conn)
        after = state(conn)
    assert [m.version for m in applied] == [SCOPED]
    assert after == before
    assert ("postgres", "<global>", "f", "postgres:EXECUTE") in after["defaults"]


# -- policy names ---------------------------------------------------------------------------

_POLICY_NAME = re.compile(
    r'\b(?:create|alter|drop)\s+policy\s+(?:if\s+exists\s+)?("(?:[^"]|"")+"|[a-z_][a-z0-9_$]*)'
    r'|\brename\s+to\s+("(?:[^"]|"")+")',
    re.IGNORECASE,
)


def policy_names_in_files() -> dict[str, set[str]]:
    """Every policy name a migration file creates, alters, drops or renames to."""
    found: dict[str, set[str]] = {}
    for path in sorted(MIGRATIONS_DIR.glob("*.sql")):
        for match in _POLICY_NAME.finditer(path.read_text(encoding="utf-8")):
            name = match.group(1) or match.group(2)
            if name.startswith('"'):
                name = name[1:-1].replace('""', '"')
            found.setdefault(name, set()).add(path.name)
    return found


def test_policy_names_fit_in_an_identifier() -> None:
    """PostgreSQL truncates a longer name to 63 bytes, silently within a file; a 63-byte name
    cannot be told from a truncated one, so every name is shorter."""
    names = policy_names_in_files()
    assert len(names) >= 20
    assert {n for _, _, n in READ_POLICIES} <= names.keys()
    too_long = {n: files for n, files in names.items() if len(n.encode()) >= 63}
    assert too_long == {}


def test_the_read_policies_have_their_short_names(fresh_db: Database) -> None:
    with fresh_db.connect() as conn:
        found = policies(conn)  # type: ignore[arg-type]
    assert found >= READ_POLICIES
    ours = {(s, t, p) for s, t, p in found if s in ("public", "storage", "realtime")}
    assert [p for p in ours if len(p[2].encode()) >= 63] == []
