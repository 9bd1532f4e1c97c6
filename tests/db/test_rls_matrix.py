"""The RLS matrix: every table x seven identities x {select, insert, update, delete}.

Each case runs as PostgREST would (tests/support/api.py) in a transaction that is rolled
back, against the two-company world (tests/support/world.py):

- select: the exact rows visible (by session or row identity), or the SQLSTATE;
- insert: one row *about trainee A1 / company A*, so every other identity must be refused;
- update: a no-op update of every row; the number of rows affected is the number the identity
  may change;
- delete: a delete of every row; rows affected, or the SQLSTATE.
"""

from __future__ import annotations

import uuid
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import psycopg
import pytest

from tests.conftest import Database
from tests.support.world import PUBLIC_TABLES, TRAINEES, World

IDENTITIES = ("anon", "A1", "A2", "MA", "AA", "B1", "service_role")
DENIED = "42501"

TABLES = PUBLIC_TABLES


# -- who sees what -----------------------------------------------------------------------


def visible_sessions(world: World, who: str) -> set[uuid.UUID]:
    if who == "service_role":
        return world.sessions_in("A") | world.sessions_in("B")
    person = world.person(who)
    if person.role in ("manager", "admin"):
        return world.sessions_in(person.company)
    return world.sessions_of(who)


def session_rows(world: World, who: str, per_active: int, per_completed: int) -> Counter[Any]:
    """Multiset of session ids of a session-hanging table visible to ``who``."""
    rows: Counter[Any] = Counter()
    for key in TRAINEES:
        if world.active_session[key] in visible_sessions(world, who):
            rows[world.active_session[key]] += per_active
        if world.completed_session[key] in visible_sessions(world, who):
            rows[world.completed_session[key]] += per_completed
    return +rows


def company_scope(world: World, who: str, *, admins_only: bool) -> Counter[Any]:
    companies = ("A", "B")
    if who != "service_role":
        person = world.person(who)
        allowed = person.role == "admin" if admins_only else True
        companies = (person.company,) if allowed else ()
    return Counter(world.companies[c] for c in companies)


def visible_profiles(world: World, who: str) -> Counter[Any]:
    if who == "service_role":
        return Counter(p.id for p in world.people.values())
    person = world.person(who)
    if person.role in ("manager", "admin"):
        return Counter(p.id for p in world.people.values() if p.company == person.company)
    return Counter([person.id])


@dataclass(frozen=True)
class TableSpec:
    key_column: str
    select: Callable[[World, str], Counter[Any]]
    insert_sql: Callable[[World], tuple[str, tuple[Any, ...]]]
    insert_allowed: frozenset[str]
    update_sql: str
    update_count: Callable[[World, str], int | str]
    delete_count: Callable[[World, str], int | str]
    # The SQLSTATE of a refused insert: 42501, except where the row names a session the
    # identity cannot see, which is answered as a missing one would be (23503).
    insert_refusal: Callable[[World, str], str] = lambda world, who: DENIED


def _hidden_session_is_missing(world: World, who: str) -> str:
    """A1's active session, seen by those who may read it; missing (23503) for the others."""
    if who == "anon" or world.active_session["A1"] in visible_sessions(world, who):
        return DENIED
    return "23503"


def _service_only(count: int) -> Callable[[World, str], int | str]:
    return lambda world, who: count if who == "service_role" else DENIED


SPECS: dict[str, TableSpec] = {
    "companies": TableSpec(
        key_column="id",
        select=lambda w, who: company_scope(w, who, admins_only=False),
        insert_sql=lambda w: ("insert into companies (name) values ('New Co')", ()),
        insert_allowed=frozenset({"service_role"}),
        update_sql="update companies set name = name",
        update_count=lambda w, who: sum(company_scope(w, who, admins_only=True).values()),
        delete_count=_service_only(2),
    ),
    "profiles": TableSpec(
        key_column="id",
        select=visible_profiles,
        insert_sql=lambda w: (
            "insert into profiles (id, company_id, role, display_name)"
            " values (%s, %s, 'trainee', 'Newcomer')",
            (w.spare_user, w.companies["A"]),
        ),
        # Joining a company takes an invitation the person accepts: end users never insert.
        insert_allowed=frozenset({"service_role"}),
        update_sql="update profiles set display_name = display_name",
        update_count=lambda w, who: (
            6
            if who == "service_role"
            else 4
            if w.person(who).role == "admin" and w.person(who).company == "A"
            else 2
            if w.person(who).role == "admin"
            else 1
        ),
        delete_count=_service_only(6),
    ),
    "sessions": TableSpec(
        key_column="id",
        select=lambda w, who: Counter(visible_sessions(w, who)),
        insert_sql=lambda w: (
            "insert into sessions (profile_id, title) values (%s, 'Another call')",
            (w.person("A1").id,),
        ),
        insert_allowed=frozenset({"A1", "service_role"}),
        update_sql="update sessions set title = title",
        update_count=lambda w, who: 6 if who == "service_role" else len(w.sessions_of(who)),
        delete_count=_service_only(6),
    ),
    "session_participants": TableSpec(
        key_column="session_id",
        insert_refusal=_hidden_session_is_missing,
        select=lambda w, who: session_rows(w, who, per_active=2, per_completed=1),
        insert_sql=lambda w: (
            "insert into session_participants (session_id, kind, speaker_label)"
            " values (%s, 'ai_buyer', 'buyer_2')",
            (w.active_session["A1"],),
        ),
        insert_allowed=frozenset({"A1", "service_role"}),
        update_sql="update session_participants set display_name = display_name",
        update_count=lambda w, who: 9 if who == "service_role" else 3 if who in TRAINEES else 0,
        delete_count=_service_only(9),
    ),
    "transcript_segments": TableSpec(
        key_column="session_id",
        insert_refusal=_hidden_session_is_missing,
        select=lambda w, who: session_rows(w, who, per_active=3, per_completed=0),
        insert_sql=lambda w: (
            "insert into transcript_segments (session_id, seq, speaker, text, start_ms, end_ms)"
            " values (%s, 100, 'trainee', 'new words', 5000, 6000)",
            (w.active_session["A1"],),
        ),
        insert_allowed=frozenset({"A1", "service_role"}),
        update_sql="update transcript_segments set text = text",
        update_count=_service_only(9),
        delete_count=_service_only(9),
    ),
    "transcripts": TableSpec(
        key_column="session_id",
        select=lambda w, who: session_rows(w, who, per_active=0, per_completed=1),
        insert_sql=lambda w: (
            "insert into transcripts (session_id, content) values (%s, 'forged transcript')",
            (w.active_session["A1"],),
        ),
        insert_allowed=frozenset({"service_role"}),
        update_sql="update transcripts set content = content",
        update_count=_service_only(3),
        delete_count=_service_only(3),
    ),
    "analysis_results": TableSpec(
        key_column="session_id",
        select=lambda w, who: session_rows(w, who, per_active=0, per_completed=1),
        insert_sql=lambda w: (
            "insert into analysis_results (session_id, provider, analysis_type, results)"
            " values (%s, 'self', 'overall', '{\"score\": 100}')",
            (w.completed_session["A1"],),
        ),
        insert_allowed=frozenset({"service_role"}),
        update_sql="update analysis_results set results = results",
        update_count=_service_only(3),
        delete_count=_service_only(3),
    ),
    "session_analytics": TableSpec(
        key_column="session_id",
        select=lambda w, who: session_rows(w, who, per_active=0, per_completed=1),
        insert_sql=lambda w: (
            "insert into session_analytics (session_id, overall_score) values (%s, 100)",
            (w.active_session["A1"],),
        ),
        insert_allowed=frozenset({"service_role"}),
        update_sql="update session_analytics set overall_score = overall_score",
        update_count=_service_only(3),
        delete_count=_service_only(3),
    ),
    "audit_log": TableSpec(
        key_column="company_id",
        select=lambda w, who: company_scope(w, who, admins_only=True),
        insert_sql=lambda w: (
            "insert into audit_log (actor_role, action, entity_type, company_id)"
            " values ('authenticated', 'forged', 'company', %s)",
            (w.companies["A"],),
        ),
        insert_allowed=frozenset(),
        update_sql="update audit_log set action = action",
        update_count=lambda w, who: DENIED,
        delete_count=lambda w, who: DENIED,
    ),
    "gdpr_requests": TableSpec(
        key_column="company_id",
        select=lambda w, who: company_scope(w, who, admins_only=True),
        insert_sql=lambda w: (
            "insert into gdpr_requests (kind, company_id) values ('erasure', %s)",
            (w.companies["A"],),
        ),
        insert_allowed=frozenset(),
        update_sql="update gdpr_requests set status = status",
        update_count=lambda w, who: DENIED,
        delete_count=lambda w, who: DENIED,
    ),
    "company_invitations": TableSpec(
        key_column="company_id",
        select=lambda w, who: company_scope(w, who, admins_only=True),
        insert_sql=lambda w: (
            "insert into company_invitations (company_id, email, token_hash, expires_at)"
            " values (%s, 'new@example.test', repeat('a', 64), now() + interval '1 day')",
            (w.companies["A"],),
        ),
        insert_allowed=frozenset({"service_role"}),
        update_sql="update company_invitations set role = role",
        update_count=lambda w, who: 2 if who == "service_role" else DENIED,
        delete_count=_service_only(2),
    ),
}


def _run(db: Database, world: World, who: str, query: str, params: tuple[Any, ...] = ()) -> Any:
    with db.api() as api:
        try:
            return api.run(world.identity(who), query, params)
        except psycopg.Error as exc:
            return exc.sqlstate


def _expect_anon_denied(who: str, expected: Any) -> Any:
    # anon holds no privilege on any table: every operation is refused outright.
    return DENIED if who == "anon" else expected


def test_matrix_covers_every_table(shared_world_db: tuple[Database, World]) -> None:
    db, _ = shared_world_db
    with db.connect() as conn:
        rows = conn.execute(
            "select c.relname from pg_class c join pg_namespace n on n.oid = c.relnamespace"
            " where n.nspname = 'public' and c.relkind in ('r', 'p') order by 1"
        ).fetchall()
    assert sorted(TABLES) == [r[0] for r in rows]  # type: ignore[index]


@pytest.mark.parametrize("who", IDENTITIES)
@pytest.mark.parametrize("table", TABLES)
def test_select(shared_world_db: tuple[Database, World], table: str, who: str) -> None:
    db, world = shared_world_db
    spec = SPECS[table]
    result = _run(db, world, who, f"select {spec.key_column} as k from {table}")
    expected = _expect_anon_denied(who, None)
    if expected == DENIED:
        assert result == DENIED
        return
    assert not isinstance(result, str), f"{who} select on {table} failed with {result}"
    assert Counter(r["k"] for r in result.rows) == spec.select(world, who)


@pytest.mark.parametrize("who", IDENTITIES)
@pytest.mark.parametrize("table", TABLES)
def test_insert(shared_world_db: tuple[Database, World], table: str, who: str) -> None:
    db, world = shared_world_db
    spec = SPECS[table]
    query, params = spec.insert_sql(world)
    result = _run(db, world, who, query, params)
    if who in spec.insert_allowed:
        assert not isinstance(result, str), f"{who} insert into {table} failed with {result}"
        assert result.rowcount == 1
    else:
        assert result == spec.insert_refusal(world, who)


@pytest.mark.parametrize("who", IDENTITIES)
@pytest.mark.parametrize("table", TABLES)
def test_update(shared_world_db: tuple[Database, World], table: str, who: str) -> None:
    db, world = shared_world_db
    spec = SPECS[table]
    result = _run(db, world, who, spec.update_sql)
    expected = _expect_anon_denied(who, None)
    if expected is None:
        expected = spec.update_count(world, who)
    if expected == DENIED:
        assert result == DENIED
    else:
        assert not isinstance(result, str), f"{who} update on {table} failed with {result}"
        assert result.rowcount == expected


@pytest.mark.parametrize("who", IDENTITIES)
@pytest.mark.parametrize("table", TABLES)
def test_delete(shared_world_db: tuple[Database, World], table: str, who: str) -> None:
    db, world = shared_world_db
    spec = SPECS[table]
    result = _run(db, world, who, f"delete from {table}")
    expected = _expect_anon_denied(who, None)
    if expected is None:
        expected = spec.delete_count(world, who)
    if expected == DENIED:
        assert result == DENIED
    else:
        assert not isinstance(result, str), f"{who} delete on {table} failed with {result}"
        assert result.rowcount == expected
