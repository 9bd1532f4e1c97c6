"""Live events against hostile input (supabase/migrations/20261128000400_hardening_live.sql):
the SDK's control event names are reserved, payloads are bounded in depth and size, every
notification is signed by the database with a key no API role can read, the SECURITY
DEFINER sender checks its caller itself, and realtime.messages shows a row only on its own
topic to the readers of its session.

Calls run as PostgREST runs them (tests/support/api.py), one committed transaction each, as
every identity of the two-company world where the answer depends on who asks.
"""

from __future__ import annotations

import hashlib
import hmac
import itertools
import json
import random
import uuid
from collections.abc import Iterator, Sequence
from typing import Any

import psycopg
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from psycopg.types.json import Jsonb

from tests.conftest import Database
from tests.support.api import Result
from tests.support.db import owner_rows, scalar, unchanged
from tests.support.live import NOTIFY_HEADER_BYTES, events_key, opened, sign
from tests.support.supabase import supabase_world
from tests.support.world import World

WorldDb = tuple[Database, World]

CHANNEL = "vs_session_events"
BROADCAST = "select public.broadcast_session_event(%s, %s, %s)"
SEND = "select private.send_session_broadcast(%s, %s, %s)"
PEOPLE = ("A1", "A2", "MA", "AA", "B1", "AB")
IDENTITIES = (*PEOPLE, "anon", "service_role")
MAX_DEPTH = 32
MAX_BYTES = 1_048_576


def call(db: Database, world: World, who: str, query: str, params: Sequence[Any]) -> Result:
    with db.api() as api:
        return api.run(world.identity(who), query, params, commit=True)


def refused(
    db: Database, world: World, who: str, query: str, params: Sequence[Any], sqlstate: str
) -> psycopg.Error:
    """``who`` runs ``query``: refused with ``sqlstate``. (Tests wrap their refusals in
    ``unchanged(db)``: no table may change.)"""
    with pytest.raises(psycopg.Error) as excinfo:
        call(db, world, who, query, params)
    assert excinfo.value.sqlstate == sqlstate, f"{who}: {excinfo.value.sqlstate} {excinfo.value}"
    return excinfo.value


@pytest.fixture
def listener(shared_world_db: WorldDb) -> Iterator[psycopg.Connection[Any]]:
    """A connection LISTENing on the events channel, drained before the test starts."""
    db, _ = shared_world_db
    conn = psycopg.connect(db.dsn, autocommit=True)
    conn.execute(f"listen {CHANNEL}")
    drain(conn)
    try:
        yield conn
    finally:
        conn.close()


def drain(conn: psycopg.Connection[Any], within: float = 0.2) -> list[str]:
    """Every notification that arrives within ``within`` seconds of quiet."""
    return [n.payload for n in conn.notifies(timeout=within)]


def nested(depth: int, shape: str) -> str:
    """A payload object, as JSON text, whose nesting (the payload itself included) is
    ``depth`` levels of objects ("object"), arrays under the top object ("array") or both in
    turn ("mixed"). Text, because json.dumps cannot write thousands of levels."""
    opening, closing = ['{"k": '], ["}"]
    for level in range(1, depth):
        as_array = shape == "array" or (shape == "mixed" and level % 2)
        opening.append("[" if as_array else '{"k": ')
        closing.append("]" if as_array else "}")
    return "".join(opening) + "1" + "".join(reversed(closing))


def json_depth(text: str) -> int:
    """How deeply the containers of a JSON text nest (its strings hold no brackets here)."""
    deepest = level = 0
    for char in text:
        if char in "[{":
            level += 1
            deepest = max(deepest, level)
        elif char in "]}":
            level -= 1
    return deepest


def raw_json(text: str) -> Jsonb:
    """A jsonb parameter sent as the given JSON text."""
    return Jsonb(text, dumps=lambda value: str(value))


def casings(word: str, count: int, rng: random.Random) -> set[str]:
    """``word`` lower, upper, title and ``count`` random mixes of letter case."""
    found = {word, word.upper(), word.title()}
    for _ in range(count):
        found.add("".join(c.upper() if rng.random() < 0.5 else c for c in word))
    return found


# -- reserved names -------------------------------------------------------------------------


RESERVED = sorted(
    casings("failed", 8, random.Random(1)) | casings("reconnected", 8, random.Random(2))
)


@pytest.mark.parametrize("who", ["A1", "MA", "service_role"])
def test_the_sdks_control_event_names_are_refused(
    shared_world_db: WorldDb, listener: psycopg.Connection[Any], who: str
) -> None:
    db, world = shared_world_db
    sid = world.active_session["A1"]
    with unchanged(db):
        for name, query in itertools.product(RESERVED, (BROADCAST, SEND)):
            exc = refused(db, world, who, query, (sid, name, Jsonb({"error": "x"})), "22023")
            assert "reserved" in str(exc)
            assert name in str(exc)
    assert drain(listener) == []
    # Names that merely contain them are ordinary names.
    for name in ("failed_upload", "reconnected.twice", "not-failed"):
        call(db, world, who, BROADCAST, (sid, name, Jsonb({})))
    assert len(drain(listener)) == 3


# -- payload caps ---------------------------------------------------------------------------


DEPTHS = [1, 2, 16, MAX_DEPTH - 1, MAX_DEPTH, MAX_DEPTH + 1, MAX_DEPTH + 2, 200, 2500]


@pytest.mark.parametrize("shape", ["object", "array", "mixed"])
@pytest.mark.parametrize("depth", DEPTHS)
def test_payload_depth_is_capped(
    shared_world_db: WorldDb, listener: psycopg.Connection[Any], depth: int, shape: str
) -> None:
    db, world = shared_world_db
    sid = world.active_session["B1"]
    payload = nested(depth, shape)
    assert json_depth(payload) == depth
    with unchanged(db):
        for who, query in (("B1", BROADCAST), ("AB", SEND), ("service_role", BROADCAST)):
            if depth <= MAX_DEPTH:
                call(db, world, who, query, (sid, "deep", raw_json(payload)))
                [raw] = drain(listener)
                assert opened(events_key(db.dsn), raw)["payload"] == json.loads(payload)
            else:
                exc = refused(db, world, who, query, (sid, "deep", raw_json(payload)), "22023")
                assert "payload" in str(exc)
                assert f"{MAX_DEPTH} levels" in str(exc)
                assert drain(listener) == []


@pytest.mark.parametrize("char", ["x", "ü", "✓", "😀"])
def test_payload_size_is_capped(
    shared_world_db: WorldDb, listener: psycopg.Connection[Any], char: str
) -> None:
    """At most 1 MiB as JSON text (UTF-8 bytes); the largest accepted one goes by reference."""
    db, world = shared_world_db
    sid = world.active_session["A2"]
    width = len(char.encode())
    room = MAX_BYTES - len('{"t": ""}')
    fits = {"t": char * (room // width) + "x" * (room % width)}
    assert len(json.dumps(fits, ensure_ascii=False).encode()) == MAX_BYTES
    call(db, world, "A2", BROADCAST, (sid, "big", Jsonb(fits)))
    [raw] = drain(listener)
    assert opened(events_key(db.dsn), raw)["bytes"] == MAX_BYTES
    over = {"t": fits["t"] + char}
    with unchanged(db):
        for who in ("A2", "MA", "service_role"):
            exc = refused(db, world, who, BROADCAST, (sid, "big", Jsonb(over)), "22023")
            assert "payload has" in str(exc)
            assert str(MAX_BYTES) in str(exc)
    assert drain(listener) == []


# -- signatures -----------------------------------------------------------------------------


@pytest.mark.parametrize("who", ["A1", "MA", "AA", "service_role"])
def test_every_notification_is_signed_by_the_database(
    shared_world_db: WorldDb, listener: psycopg.Connection[Any], who: str
) -> None:
    db, world = shared_world_db
    sid = world.active_session["A1"]
    key = events_key(db.dsn)
    small = {"note": "ünïcode ✓ 😀", "n": 1}
    large = {"t": "é" * 5000}  # over NOTIFY's limit: by reference, signed too
    call(db, world, who, BROADCAST, (sid, "status", Jsonb(small)))
    call(db, world, who, BROADCAST, (sid, "transcript", Jsonb(large)))
    whole, reference = drain(listener)
    for raw in (whole, reference):
        assert raw.startswith(f"vs1:{sid}:")
        assert len(raw.encode()) < 8000
        assert raw[NOTIFY_HEADER_BYTES - 1] == ":"
        forged_key = hashlib.sha256(key).digest()
        with pytest.raises(AssertionError):
            opened(forged_key, raw)
    assert opened(key, whole)["payload"] == small
    assert opened(key, reference)["ref"] is True


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(message=st.text(max_size=300))
def test_the_database_signs_as_rfc_2104_hmac_sha256(shared_world_db: WorldDb, message: str) -> None:
    db, _ = shared_world_db
    message = message.replace("\x00", "")
    key = events_key(db.dsn)
    expected = hmac.new(key, message.encode("utf-8", "surrogatepass"), hashlib.sha256)
    if any(0xD800 <= ord(c) <= 0xDFFF for c in message):
        return  # not representable in PostgreSQL text
    got = scalar(db, "select private.session_event_signature(%s)", (message,))
    assert got == expected.hexdigest()


def test_the_signing_key_is_out_of_reach_of_api_users(shared_world_db: WorldDb) -> None:
    db, world = shared_world_db
    for who in IDENTITIES:  # read-only calls: nothing to change
        refused(db, world, who, "select value from private.secrets", (), "42501")
        refused(db, world, who, "select private.session_event_signature('x')", (), "42501")
        if who != "service_role":
            refused(db, world, who, "select private.session_events_key()", (), "42501")
    result = call(db, world, "service_role", "select private.session_events_key() as k", ())
    assert bytes.fromhex(result.rows[0]["k"]) == events_key(db.dsn)
    assert len(events_key(db.dsn)) == 32


def test_a_notification_can_be_verified_only_with_the_databases_key(
    shared_world_db: WorldDb, listener: psycopg.Connection[Any]
) -> None:
    """What anyone can send with pg_notify, even copying a genuine notification's shape,
    does not carry the signature of its body."""
    db, world = shared_world_db
    sid = world.active_session["B1"]
    call(db, world, "B1", BROADCAST, (sid, "status", Jsonb({"status": "active"})))
    [genuine] = drain(listener)
    key = events_key(db.dsn)
    message = opened(key, genuine)
    version, session_id, signature, body = genuine.split(":", 3)
    tampered = body.replace('"active"', '"failed"')
    assert tampered != body
    forged = f"{version}:{session_id}:{signature}:{tampered}"
    call(db, world, "A1", "select pg_notify(%s, %s)", (CHANNEL, forged))
    [received] = drain(listener)
    assert received == forged
    with pytest.raises(AssertionError, match="bad signature"):
        opened(key, received)
    assert sign(key, session_id, body) == genuine
    assert message["payload"] == {"status": "active"}


# -- the SECURITY DEFINER sender checks its caller ---------------------------------------------


def visible_sessions(db: Database, world: World, who: str) -> set[uuid.UUID]:
    if who == "anon":
        return set()
    result = call(db, world, who, "select id from public.sessions", ())
    return {row["id"] for row in result.rows}


def all_sessions(db: Database) -> list[uuid.UUID]:
    return [row["id"] for row in owner_rows(db, "select id from public.sessions order by id")]


@pytest.mark.parametrize("who", IDENTITIES)
def test_the_sender_lets_through_exactly_the_readers_of_the_session(
    shared_world_db: WorldDb, listener: psycopg.Connection[Any], who: str
) -> None:
    """private.send_session_broadcast (SECURITY DEFINER, executable by authenticated) and
    private.caller_reads_session agree with RLS on sessions for every session, and a refused
    send notifies nothing."""
    db, world = shared_world_db
    readable = visible_sessions(db, world, who)
    sessions = [*all_sessions(db), uuid.uuid4()]
    assert readable <= set(sessions)
    with unchanged(db):
        check_sender(db, world, listener, who, readable, sessions)


def check_sender(
    db: Database,
    world: World,
    listener: psycopg.Connection[Any],
    who: str,
    readable: set[uuid.UUID],
    sessions: list[uuid.UUID],
) -> None:
    for sid in sessions:
        if who == "anon":
            refused(db, world, who, SEND, (sid, "status", Jsonb({})), "42501")
            continue
        reads = call(db, world, who, "select private.caller_reads_session(%s) as r", (sid,))
        assert reads.rows[0]["r"] is (sid in readable), sid
        if sid in readable:
            call(db, world, who, SEND, (sid, "status", Jsonb({"by": who})))
        else:
            exc = refused(db, world, who, SEND, (sid, "status", Jsonb({"by": who})), "P0002")
            assert "not found" in str(exc)
    key = events_key(db.dsn)
    sent = [opened(key, raw) for raw in drain(listener, 0.5)]
    assert sorted(m["session_id"] for m in sent) == sorted(str(s) for s in readable)
    assert all(m["payload"] == {"by": who} for m in sent)


# -- realtime.messages: each row on its own topic ------------------------------------------------


@pytest.fixture(scope="module")
def realtime_world(template_db: Database) -> Iterator[WorldDb]:
    yield from supabase_world(template_db)


def test_realtime_messages_show_a_row_only_on_its_own_topic_to_its_readers(
    realtime_world: WorldDb,
) -> None:
    """As Realtime's join check and as a direct query, with realtime.topic() set to any
    topic or none: an identity sees exactly the broadcasts of the topic it is on, and only
    if it reads that topic's session."""
    db, world = realtime_world
    owners = ("A1", "A2", "B1")
    for trainee in owners:
        sid = world.active_session[trainee]
        call(db, world, trainee, BROADCAST, (sid, "status", Jsonb({"of": trainee})))
    topics = [f"session:{world.active_session[t]}" for t in owners]
    settings_ = [None, *topics, f"session:{uuid.uuid4()}", "session:junk", ""]
    for who, topic in itertools.product(IDENTITIES, settings_):
        with db.api() as api:
            result = api.run(
                world.identity(who),
                "select set_config('realtime.topic', coalesce(%s, ''), true),"
                " (select coalesce(array_agg(m.topic order by m.topic), '{}')"
                "  from realtime.messages m) as seen",
                (topic,),
            )
        seen = list(result.rows[0]["seen"])
        if who == "service_role":
            continue  # bypasses RLS (Realtime never joins as it)
        readable = {f"session:{s}" for s in visible_sessions(db, world, who)}
        expected = [topic] if topic in topics and topic in readable else []
        assert seen == expected, (who, topic, seen)
