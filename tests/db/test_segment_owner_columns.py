"""One set of rules for a segment insert, whether it names the owner columns or not.

Since 20261128001000 a segment that arrives without ``profile_id``/``company_id`` is checked
(and given them) by a row trigger, and one that arrives with both by a statement trigger over
the statement's new rows (what ``append_transcript_segments`` inserts). These tests hold the
two paths to the same answers: for every identity and every kind of session (own active, own
completed, another person's of the same company, another company's in every status,
missing), the errcode is the same with and without the owner columns, and with them an end
user cannot tell a session they cannot see from a missing one (the whole error, not only its
code). Also: COPY and multi-session statements by service_role, and mismatched owner columns.
"""

from __future__ import annotations

import re
import uuid
from typing import Any

import psycopg
import pytest

from tests.conftest import Database
from tests.support.api import Identity
from tests.support.db import owner, owner_rows, unchanged
from tests.support.world import World, add_sessions_in_every_status

WorldDb = tuple[Database, World]

UUID_RE = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
PARTITION_RE = re.compile(r"_p[0-9]{2}\b")
COLUMNS = ("session_id", "seq", "speaker", "text", "start_ms", "end_ms")
OWNER_COLUMNS = ("profile_id", "company_id")


@pytest.fixture(scope="module")
def sessions(shared_world_db: WorldDb) -> tuple[Database, World, dict[str, Any]]:
    """The shared world plus B1's sessions in every status; maps each probe name
    to (session id or a missing one, the owner's profile and company or None)."""
    db, world = shared_world_db
    with owner(db) as conn:
        add_sessions_in_every_status(conn, world.person("B1").id)
    found = owner_rows(
        db,
        "select id, profile_id, company_id, status::text from public.sessions"
        " where profile_id = %s",
        (world.person("B1").id,),
    )
    probes: dict[str, Any] = {
        f"B1 {r['status']}": (r["id"], r["profile_id"], r["company_id"]) for r in found
    }
    for key in ("A1", "A2"):
        person = world.person(key)
        for kind, sid in (
            ("active", world.active_session[key]),
            ("completed", world.completed_session[key]),
        ):
            probes[f"{key} {kind}"] = (sid, person.id, world.companies[person.company])
    probes["missing"] = (uuid.uuid4(), None, None)
    return db, world, probes


def attempt(
    db: Database, who: Identity, session: uuid.UUID, owners: tuple[Any, Any] | None
) -> str | tuple[str, ...]:
    """Insert one segment into ``session`` as ``who`` (rolled back): "inserted", or the
    whole error with ids masked (sqlstate, message, detail, hint, constraint, table, schema).
    ``owners``: the owner columns to send, or None to omit them."""
    columns = COLUMNS + (OWNER_COLUMNS if owners else ())
    values: tuple[Any, ...] = (session, 9001, "trainee", "probe", 0, 1) + (owners or ())
    query = (
        f"insert into public.transcript_segments ({', '.join(columns)})"
        f" values ({', '.join(['%s'] * len(columns))})"
    )
    try:
        with db.api() as api:
            api.run(who, query, values)
    except psycopg.Error as exc:
        d = exc.diag
        # Ids masked; and the partition, which depends on the session id alone (its hash),
        # not on whether the session exists.
        return tuple(
            PARTITION_RE.sub("_p<n>", UUID_RE.sub("<id>", str(part))) if part is not None else ""
            for part in (
                exc.sqlstate,
                d.message_primary,
                d.message_detail,
                d.message_hint,
                d.constraint_name,
                d.table_name,
                d.schema_name,
            )
        )
    return "inserted"


def code(answer: str | tuple[str, ...]) -> str:
    return answer if isinstance(answer, str) else answer[0]


WHO = ("A1", "MA", "AA", "B1", "service_role")


def expected(world: World, who: str, name: str, owners_given: bool) -> str:
    """What the rules answer: "inserted" or the errcode. ``name`` is "<trainee> <status>" or
    "missing"; with ``owners_given`` the insert names the session's owner columns (the
    caller's own for a missing session)."""
    key, _, status = name.partition(" ")
    if who == "service_role":
        return "23503" if name == "missing" else "VS002" if status != "active" else "inserted"
    me = world.person(who)
    if name == "missing":
        return "23503"
    mine = key == who
    visible = mine or (me.role in {"manager", "admin"} and world.person(key).company == me.company)
    if owners_given and not mine:
        return "42501"  # RLS: the row names another person as its owner
    if not visible:
        return "23503"  # the row trigger: as if missing
    if status != "active":
        return "VS002"
    return "inserted" if mine else "42501"


@pytest.mark.parametrize("who", WHO)
def test_the_rules_with_and_without_the_owner_columns(
    sessions: tuple[Database, World, dict[str, Any]], who: str
) -> None:
    db, world, probes = sessions
    identity = world.identity(who)
    me = world.people.get(who)
    answers: dict[tuple[str, bool], str] = {}
    with unchanged(db):
        for name, (sid, profile, company) in probes.items():
            answers[name, False] = code(attempt(db, identity, sid, None))
            owners = (
                (profile, company)
                if profile
                else (me.id, world.companies[me.company])
                if me
                else (uuid.uuid4(), uuid.uuid4())
            )
            answers[name, True] = code(attempt(db, identity, sid, owners))
    wanted = {(name, given): expected(world, who, name, given) for name, given in answers}
    assert answers == wanted
    # Both paths store exactly the same cases.
    assert {n for (n, g), a in answers.items() if g and a == "inserted"} == {
        n for (n, g), a in answers.items() if not g and a == "inserted"
    }


@pytest.mark.parametrize("who", ["A1", "MA", "AA", "B1"])
def test_with_the_owner_columns_a_hidden_session_looks_missing(
    sessions: tuple[Database, World, dict[str, Any]], who: str
) -> None:
    """An end user naming themselves as owner: every session they cannot see, in every
    status, gets exactly the answer a missing session gets (the foreign key's)."""
    db, world, probes = sessions
    me = world.person(who)
    mine = (me.id, world.companies[me.company])
    visible = {
        r["id"]
        for r in owner_rows(db, "select id from public.sessions where company_id = %s", (mine[1],))
    }
    hidden = [sid for sid, *_ in probes.values() if sid not in visible]
    assert len(hidden) >= 5  # four statuses of another company's sessions, and a missing one
    with unchanged(db):
        answers = {attempt(db, me.identity, sid, mine) for sid in hidden}
    assert len(answers) == 1, answers
    (answer,) = answers
    assert answer[0] == "23503"
    assert answer[4] == "transcript_segments_session_id_fkey"


def test_owner_columns_other_than_the_sessions_are_refused(
    sessions: tuple[Database, World, dict[str, Any]],
) -> None:
    db, world, probes = sessions
    sid, profile, company = probes["A1 active"]
    other_company = world.companies["B"]
    a2 = world.person("A2").id
    with unchanged(db):
        # The owner with a wrong company: the statement trigger (42501, its hint).
        answer = attempt(db, world.identity("A1"), sid, (profile, other_company))
        assert answer[0] == "42501"
        assert "must be those of the session" in answer[1]
        # service_role naming another person of the company as owner.
        answer = attempt(db, Identity.service_role(), sid, (a2, company))
        assert answer[0] == "42501"
        assert "must be those of the session" in answer[1]


def test_one_statement_over_several_sessions_is_checked_for_each(
    sessions: tuple[Database, World, dict[str, Any]],
) -> None:
    """service_role inserting rows of two sessions in one statement: all stored when both
    are open, nothing when one of them is completed or has a wrong owner."""
    db, _, probes = sessions
    a1, a2, done = probes["A1 active"], probes["A2 active"], probes["A2 completed"]

    def insert(rows: list[tuple[Any, ...]]) -> str:
        placeholders = ", ".join(["(%s, %s, %s, %s, 'trainee', 'x', 0, 1)"] * len(rows))
        query = (
            "insert into public.transcript_segments"
            " (session_id, profile_id, company_id, seq, speaker, text, start_ms, end_ms)"
            f" values {placeholders}"
        )
        try:
            with db.api() as api:
                result = api.run(Identity.service_role(), query, [v for row in rows for v in row])
        except psycopg.Error as exc:
            return str(exc.sqlstate)
        return str(result.rowcount)

    with unchanged(db):
        assert insert([(*a1, 9100), (*a2, 9100), (*a1, 9101)]) == "3"
        assert insert([(*a1, 9100), (*done, 9100)]) == "VS002"
        assert insert([(*a1, 9100), (a2[0], a1[1], a1[2], 9100)]) == "42501"


@pytest.mark.parametrize("with_owners", [False, True])
def test_copy_goes_through_the_same_checks(
    sessions: tuple[Database, World, dict[str, Any]], with_owners: bool
) -> None:
    db, world, probes = sessions
    columns = COLUMNS + (OWNER_COLUMNS if with_owners else ())

    def copy(name: str, owners: tuple[Any, Any] | None = None) -> str:
        sid, profile, company = probes[name]
        extra = (owners or (profile, company)) if with_owners else ()
        rows = [(sid, seq, "trainee", "copied", 0, 1, *extra) for seq in (9200, 9201)]
        try:
            with db.api() as api:
                api.copy(Identity.service_role(), "public.transcript_segments", columns, rows)
        except psycopg.Error as exc:
            return str(exc.sqlstate)
        return "copied"

    with unchanged(db):
        assert copy("A1 active") == "copied"
        assert copy("A1 completed") == "VS002"
        assert copy("missing") == "23503"
        if with_owners:
            assert copy("A1 active", (world.person("A2").id, world.companies["A"])) == "42501"
