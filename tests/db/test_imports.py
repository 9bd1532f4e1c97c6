"""public.import_call (migration 20261128001500_imports.sql): a hosted platform's call stored
as one session, idempotent on (company, platform, call id) in the database itself.

Run as PostgREST runs requests (tests/support/api.py). The race is real: two transactions
on two connections, the second blocked on the first's key until it commits or rolls back.
"""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
import pytest
from psycopg.rows import dict_row

from tests.conftest import Database
from tests.support.api import Api
from tests.support.world import World
from voicesessions._identity import Identity
from voicesessions._request import request_context

WorldDb = tuple[Database, World]
SERVICE = Identity.service_role()
IMPORT = (
    "select * from public.import_call(%(platform)s, %(call_id)s, %(profile_id)s, %(title)s,"
    " %(started_at)s, %(ended_at)s, %(segments)s::jsonb, %(metadata)s::jsonb)"
)


def call(profile_id: uuid.UUID, call_id: str | None = None, **changes: Any) -> dict[str, Any]:
    start = datetime.now(UTC) - timedelta(minutes=2)
    args: dict[str, Any] = {
        "platform": "vapi",
        "call_id": call_id or f"call_{uuid.uuid4().hex}",
        "profile_id": profile_id,
        "title": "Vapi call",
        "started_at": start,
        "ended_at": start + timedelta(seconds=30),
        "segments": [
            {"seq": 0, "speaker": "buyer", "text": "Hello?", "start_ms": 0, "end_ms": 900},
            {
                "seq": 1,
                "speaker": "trainee",
                "text": "Hi, Riley here.",
                "start_ms": 1200,
                "end_ms": 2500,
            },
        ],
        "metadata": {"source": {"platform": "vapi"}},
    }
    args.update(changes)
    return {k: json.dumps(v) if k in ("segments", "metadata") else v for k, v in args.items()}


@pytest.fixture
def api(world_db: WorldDb) -> Iterator[Api]:
    with world_db[0].api() as executor:
        yield executor


def imported(db: Database, platform: str, call_id: str) -> list[tuple[Any, ...]]:
    with db.connect() as conn:
        return [
            tuple(r)
            for r in conn.execute(
                "select i.company_id, i.session_id from private.session_imports i"
                " where i.platform = %s and i.call_id = %s",
                (platform, call_id),
            ).fetchall()
        ]


def count(db: Database, table: str) -> int:
    with db.connect() as conn:
        row = conn.execute(f"select count(*) from public.{table}").fetchone()
    assert row is not None
    return int(row[0])  # type: ignore[call-overload]


def test_a_call_becomes_a_completed_session_once(world_db: WorldDb, api: Api) -> None:
    db, world = world_db
    a1 = world.person("A1").id
    args = call(a1)
    first = api.run(SERVICE, IMPORT, args, commit=True).rows
    assert len(first) == 1
    assert first[0]["created"] is True
    sid = first[0]["session_id"]
    with db.connect() as conn:
        status, ended, metadata = conn.execute(
            "select status::text, ended_at, metadata from public.sessions where id = %s", (sid,)
        ).fetchone()  # type: ignore[misc]
        texts = [
            r[0]
            for r in conn.execute(
                "select text from public.transcript_segments where session_id = %s order by seq",
                (sid,),
            ).fetchall()
        ]
        content = conn.execute(
            "select content from public.transcripts where session_id = %s", (sid,)
        ).fetchone()
    assert (status, ended, metadata) == (
        "completed",
        args["ended_at"],
        {"source": {"platform": "vapi"}},
    )
    assert texts == ["Hello?", "Hi, Riley here."]
    assert content is not None  # assembled on completion
    again = api.run(SERVICE, IMPORT, args, commit=True).rows
    assert again == [{"session_id": sid, "created": False}]
    assert imported(db, "vapi", args["call_id"]) == [(world.companies["A"], sid)]


@pytest.mark.parametrize("who", ["anon", "A1", "MA", "AA"])
def test_only_the_service_role_imports(world_db: WorldDb, api: Api, who: str) -> None:
    world = world_db[1]
    with pytest.raises(psycopg.errors.InsufficientPrivilege):
        api.run(world.identity(who), IMPORT, call(world.person("A1").id))
    with pytest.raises(psycopg.errors.InsufficientPrivilege):
        api.run(world.identity(who), "select * from private.session_imports")


def test_the_key_is_per_company(world_db: WorldDb, api: Api) -> None:
    world = world_db[1]
    shared = f"call_{uuid.uuid4().hex}"
    a = api.run(SERVICE, IMPORT, call(world.person("A1").id, shared), commit=True).rows[0]
    same_company = api.run(SERVICE, IMPORT, call(world.person("A2").id, shared), commit=True).rows[
        0
    ]
    b = api.run(SERVICE, IMPORT, call(world.person("B1").id, shared), commit=True).rows[0]
    retell = api.run(
        SERVICE, IMPORT, call(world.person("A1").id, shared, platform="retell"), commit=True
    ).rows[0]
    assert same_company == {"session_id": a["session_id"], "created": False}
    assert b["created"] is True
    assert retell["created"] is True
    assert len({a["session_id"], b["session_id"], retell["session_id"]}) == 3


def _hold_import(db: Database, args: dict[str, Any]) -> psycopg.Connection[Any]:
    """A service-role transaction that has imported ``args`` and is still open."""
    conn = psycopg.connect(db.authenticator_dsn, row_factory=dict_row)
    conn.execute(*request_context(SERVICE.role, SERVICE.claims, path="/rpc/import_call"))
    conn.execute(IMPORT, args)
    return conn


def _blocked_import(db: Database, args: dict[str, Any]) -> tuple[threading.Thread, list[Any]]:
    out: list[Any] = []

    def run() -> None:
        with Api(db.authenticator_dsn) as other:
            out.extend(other.run(SERVICE, IMPORT, args, commit=True).rows)

    thread = threading.Thread(target=run)
    thread.start()
    deadline = time.monotonic() + 30
    with db.connect() as conn:
        while time.monotonic() < deadline:
            waiting = conn.execute(
                "select count(*) from pg_stat_activity where wait_event_type = 'Lock'"
                " and query like '%%import_call%%' and datname = current_database()"
            ).fetchone()
            if waiting and waiting[0]:
                break
            time.sleep(0.02)
        else:
            raise AssertionError("the second import never waited on the first")
    return thread, out


@pytest.mark.parametrize("first_commits", [True, False], ids=["commit", "rollback"])
def test_racing_imports_store_one_session(world_db: WorldDb, first_commits: bool) -> None:
    db, world = world_db
    args = call(world.person("A1").id)
    before = count(db, "sessions")
    holder = _hold_import(db, args)
    try:
        thread, out = _blocked_import(db, args)  # waits on the first one's key
        if first_commits:
            holder.commit()
        else:
            holder.rollback()
    finally:
        holder.close()
    thread.join(30)
    assert not thread.is_alive()
    [row] = out
    assert row["created"] is (not first_commits)
    [(_, sid)] = imported(db, "vapi", args["call_id"])
    assert row["session_id"] == sid
    assert count(db, "sessions") == before + 1


def test_an_erased_session_stays_erased(world_db: WorldDb, api: Api) -> None:
    db, world = world_db
    args = call(world.person("A1").id)
    sid = api.run(SERVICE, IMPORT, args, commit=True).rows[0]["session_id"]
    with db.connect() as conn:
        conn.execute("delete from public.sessions where id = %s", (sid,))
    assert api.run(SERVICE, IMPORT, args, commit=True).rows == [
        {"session_id": None, "created": False}
    ]
    assert imported(db, "vapi", args["call_id"]) == [(world.companies["A"], None)]


def test_more_than_one_batch_of_segments(world_db: WorldDb, api: Api) -> None:
    db, world = world_db
    many = [
        {
            "seq": i,
            "speaker": "trainee" if i % 2 else "buyer",
            "text": f"turn {i}",
            "start_ms": i * 10,
            "end_ms": i * 10 + 5,
        }
        for i in range(2345)
    ]
    sid = api.run(SERVICE, IMPORT, call(world.person("A1").id, segments=many), commit=True).rows[0][
        "session_id"
    ]
    with db.connect() as conn:
        stored = conn.execute(
            "select count(*), min(seq), max(seq) from public.transcript_segments"
            " where session_id = %s",
            (sid,),
        ).fetchone()
    assert tuple(stored or ()) == (2345, 0, 2344)


@pytest.mark.parametrize(
    ("changes", "sqlstate"),
    [
        ({"platform": None}, "22004"),
        ({"call_id": None}, "22004"),
        ({"started_at": None}, "22004"),
        ({"platform": "Vapi"}, "22023"),
        ({"platform": "v" * 40}, "22023"),
        ({"call_id": ""}, "22023"),
        ({"call_id": "c" * 201}, "22023"),
        ({"ended_at": datetime.now(UTC) - timedelta(hours=1)}, "22023"),
        ({"segments": {"seq": 0}}, "22023"),
        (
            {"segments": [{"seq": 0, "speaker": "buyer", "text": "x", "start_ms": 5, "end_ms": 1}]},
            "22023",
        ),
        (
            {
                "segments": [
                    {
                        "seq": i,
                        "speaker": "buyer",
                        "text": "x",
                        "start_ms": 0,
                        "end_ms": 1,
                        **({"words": "bad"} if i == 1500 else {}),
                    }
                    for i in range(1600)
                ]
            },
            "22023",
        ),
        ({"profile_id": uuid.uuid4()}, "23503"),
        ({"title": " "}, "23514"),
        (
            {
                "started_at": datetime.now(UTC) + timedelta(hours=1),
                "ended_at": datetime.now(UTC) + timedelta(hours=2),
            },
            "22023",
        ),
        ({"metadata": []}, "23514"),
    ],
    ids=[
        "null-platform",
        "null-call-id",
        "null-start",
        "platform-case",
        "platform-long",
        "empty-call-id",
        "long-call-id",
        "ends-before-start",
        "segments-object",
        "segment-backwards",
        "bad-words-in-2nd-batch",
        "no-profile",
        "blank-title",
        "future",
        "metadata-array",
    ],
)
def test_a_refused_import_leaves_nothing(
    world_db: WorldDb, api: Api, changes: dict[str, Any], sqlstate: str
) -> None:
    db, world = world_db
    own = ("profile_id", "call_id")  # the arguments call() takes itself
    args = call(world.person("A1").id, **{k: v for k, v in changes.items() if k not in own})
    args.update({k: v for k, v in changes.items() if k in own})
    before = (count(db, "sessions"), count(db, "transcript_segments"))
    with pytest.raises(psycopg.Error) as caught:
        api.run(SERVICE, IMPORT, args, commit=True)
    assert caught.value.sqlstate == sqlstate
    assert (count(db, "sessions"), count(db, "transcript_segments")) == before
    with db.connect() as conn:
        row = conn.execute("select count(*) from private.session_imports").fetchone()
    assert row == (0,)
