"""Live feeds over PostgresBackend against hostile notifications, both faces: company B's
admin watches a session of B while a trainee of company A sends whatever PostgreSQL lets
them send — deep, huge, non-JSON, forged, replayed, misaddressed, named like the SDK's own
control events — and the feed delivers exactly B's genuine events and nothing else, without
failing or reconnecting. The verifier behind it is also checked on generated input."""

from __future__ import annotations

import hashlib
import hmac
import json
import re
import time
import uuid
from typing import Any

import psycopg
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.sdk.conftest import Sdk, sdk
from tests.support.db import unchanged
from tests.support.live import entered, events_key, next_event, sign
from tests.support.segments import segment
from voicesessions import InvalidInputError, SessionEvent
from voicesessions._events import REPLAY_WINDOW_MS, EventVerifier

CHANNEL = "vs_session_events"
#: Now, in epoch milliseconds (the test database runs on this machine's clock).
NOW_MS = int(time.time() * 1000)


def notify_as(client: Sdk, who: str, payloads: list[str]) -> None:
    """``who`` sends each payload with pg_notify on the events channel, by direct SQL as
    the API role of that identity (one committed request)."""
    with client.db.api() as api:
        for payload in payloads:
            api.run(
                client.world.identity(who),
                "select pg_notify(%s, %s)",
                (CHANNEL, payload),
                commit=True,
            )


def deep(depth: int) -> str:
    """A JSON object nested ``depth`` levels (arrays inside it: 2 bytes a level, so that
    thousands of levels fit in a notification's 8,000 bytes)."""
    return '{"k": ' + "[" * (depth - 1) + "]" * (depth - 1) + "}"


def envelope(session_id: Any, event: str = "status", payload: str = "{}") -> str:
    """The JSON body of a notification, as the database writes it (sent now)."""
    return (
        f'{{"id": "{uuid.uuid4()}", "at_ms": {NOW_MS}, "event": {json.dumps(event)},'
        f' "payload": {payload}, "session_id": "{session_id}"}}'
    )


def forgeries(target: uuid.UUID, elsewhere: uuid.UUID) -> list[str]:
    """What anyone without the key can put on the channel to reach ``target``'s feeds."""
    prefix = f"vs1:{target}:"
    bodies = [
        envelope(target),
        envelope(target, "failed", '{"error": "forged"}'),
        envelope(target, "reconnected", '{"attempts": 1}'),
        envelope(target, "status", deep(2500)),
        deep(3500),
        "[" * 3000 + "]" * 3000,
        "not json at all",
        "",
        "\u2603" * 2000,
    ]
    found: list[str] = []
    for body in bodies:
        found.append(body)  # the unsigned format of the past
        found.append(prefix + "0" * 64 + ":" + body)
        found.append(sign(b"a guessed key", str(target), body))
        found.append(sign(b"", str(target), body))
    found += [
        prefix,
        prefix[:-1],
        prefix + "f" * 64,
        prefix + "f" * 63 + ":" + envelope(target),
        prefix + "F" * 64 + "::" + envelope(target),
        prefix + "\u00e9" * 64 + ":" + envelope(target),
        prefix + "\ud7ff" * 63 + "0:" + envelope(target),
        f"vs1:{str(target).upper()}:" + "0" * 64 + ":" + envelope(target),
        f"vs2:{target}:" + "0" * 64 + ":" + envelope(target),
        f"vs1:{elsewhere}:" + "0" * 64 + ":" + envelope(target),
        "x" * 7990,
    ]
    return found


async def test_company_bs_feed_survives_anything_company_a_can_send(client: Sdk) -> None:
    target = client.world.active_session["B1"]
    own = client.world.active_session["A1"]
    attacker = client.user("A1")
    async with entered(client.user("AB").updates.events(target)) as events:
        notify_as(client, "A1", forgeries(target, own))
        # What A may broadcast on its own session: huge (by reference) or refused as too deep.
        await sdk(
            attacker.updates.broadcast_update(
                {"session_id": own, "update_type": "audio_metrics", "data": {"t": "x" * 900_000}}
            )
        )
        with pytest.raises(InvalidInputError):
            await sdk(attacker.updates.update_audio_metrics(own, json.loads(deep(40))))
        assert await sdk(events.get(timeout=1.5)) is None
        await sdk(client.vs.updates.update_audio_metrics(target, {"rms_dbfs": -18.0}))
        genuine = await next_event(events)
        assert await sdk(events.get(timeout=0.5)) is None
    assert (genuine.event, genuine.kind, genuine.payload) == (
        "audio_metrics",
        "event",
        {"rms_dbfs": -18.0},
    )


async def test_a_replayed_notification_is_delivered_once(client: Sdk) -> None:
    """A genuine notification copied by a listener and sent again by anyone (pg_notify) is
    recognised by its id."""
    target = client.world.active_session["B1"]
    with psycopg.connect(client.db.dsn, autocommit=True) as spy:
        spy.execute(f"listen {CHANNEL}")
        async with entered(client.user("AB").updates.events(target)) as events:
            await sdk(client.user("B1").updates.update_audio_metrics(target, {"snr_db": 30.0}))
            first = await next_event(events)
            [copied] = [n.payload for n in spy.notifies(timeout=5, stop_after=1)]
            notify_as(client, "A1", [copied, copied])
            assert await sdk(events.get(timeout=1.5)) is None
    assert first.payload == {"snr_db": 30.0}


async def test_signed_but_malformed_notifications_are_skipped(client: Sdk) -> None:
    """Even a notification signed with the database's key (so only a holder of the key — a
    bug, not an attacker — could send it) never ends the feed when its body is unusable."""
    target = client.world.active_session["B1"]
    key = events_key(client.db.dsn)
    bodies = [
        deep(3800),
        envelope(target, "status", deep(3000)),
        "[1, 2, 3]",
        '"a string"',
        "not json",
        "{",
        envelope(uuid.uuid4()),
        envelope(target).replace('"event": "status"', '"event": 7'),
        envelope(target).replace('"id": "', '"id": 7, "x": "'),
        json.dumps({"session_id": str(target), "event": "status", "payload": {}}),  # no id
    ]
    async with entered(client.user("AB").updates.events(target)) as events:
        notify_as(client, "A1", [sign(key, str(target), body) for body in bodies])
        assert await sdk(events.get(timeout=1.5)) is None
        await sdk(client.vs.updates.update_audio_metrics(target, {"rms_dbfs": -9.0}))
        assert (await next_event(events)).payload == {"rms_dbfs": -9.0}


async def test_the_sdks_own_events_are_marked_as_control_events(client: Sdk) -> None:
    sid = client.world.active_session["A2"]
    async with entered(client.user("A2").updates.events(sid)) as events:
        with client.db.connect() as conn:
            conn.execute(
                "select pg_terminate_backend(pid) from pg_stat_activity"
                " where datname = current_database() and query ilike 'listen%%'"
            )
        reconnected = await next_event(events)
        await sdk(client.vs.updates.update_audio_metrics(sid, {"rms_dbfs": -20.0}))
        ordinary = await next_event(events)
    assert (reconnected.event, reconnected.kind, reconnected.is_control) == (
        "reconnected",
        "control",
        True,
    )
    assert (ordinary.kind, ordinary.is_control) == ("event", False)


# -- what the SDK sends is checked before it writes anything -----------------------------------


def nested_value(depth: int) -> Any:
    """A value nesting ``depth`` objects and arrays (built without recursion)."""
    value: Any = 1
    for level in range(depth):
        value = [value] if level % 2 else {"k": value}
    return value


async def test_what_the_database_would_not_broadcast_is_refused_before_any_write(
    client: Sdk,
) -> None:
    sid = client.world.active_session["A1"]
    me = client.user("A1")
    deep_word = {"word": "hi", "extra": nested_value(40)}
    huge_word = {"word": "x" * 1_100_000}
    calls = [
        lambda: me.updates.update_audio_metrics(sid, {"m": nested_value(32)}),
        lambda: me.updates.update_audio_metrics(sid, {"m": nested_value(3000)}),
        lambda: me.updates.update_audio_metrics(sid, {"m": "x" * 1_100_000}),
        lambda: me.updates.broadcast_update(
            {"session_id": sid, "update_type": "status_change", "data": nested_value(32)}
        ),
        lambda: me.updates.append_transcript_chunk(
            sid, [segment(900), {**segment(901), "words": [deep_word]}]
        ),
        lambda: me.updates.append_transcript_chunk(
            sid, [segment(902), {**segment(903, final=False), "words": [huge_word]}]
        ),
    ]
    with unchanged(client.db):
        for make in calls:
            with pytest.raises(InvalidInputError) as excinfo:
                await sdk(make())
            # named by the broadcast check, or by the stored-value policy that runs first
            assert re.search(r"broadcast|nested more than|bytes", str(excinfo.value))
    # The edges that fit: 32 levels of metrics (with the payload object itself).
    await sdk(me.updates.update_audio_metrics(sid, {"m": nested_value(31)}))


async def test_a_large_chunk_is_broadcast_as_several_events_in_order(client: Sdk) -> None:
    sid = client.world.active_session["B1"]
    chunk = [segment(1000 + n, text="word " * 4000, final=n % 7 != 3) for n in range(60)]
    async with entered(client.user("AB").updates.events(sid)) as events:
        result = await sdk(client.user("B1").updates.append_transcript_chunk(sid, chunk))
        received = [await next_event(events)]
        while (more := await sdk(events.get(timeout=1.0))) is not None:
            received.append(more)
    assert result.inserted == len([s for s in chunk if s["is_final"]])
    assert len(received) > 1
    assert all(e.event == "transcript" for e in received)
    assert all(e.by_reference and e.bytes is not None and e.bytes <= 200_000 for e in received)
    with client.db.connect() as conn:
        stored = conn.execute(
            "select count(*) from public.transcript_segments where session_id = %s and seq >= 1000",
            (sid,),
        ).fetchone()
    assert stored is not None
    assert stored[0] == result.inserted


# -- the verifier on generated input ---------------------------------------------------------

KEY = hashlib.sha256(b"test key").digest()
SESSION = uuid.UUID("0b0b0b0b-0000-4000-8000-000000000001")


@settings(max_examples=300, deadline=None)
@given(payload=st.text(max_size=400))
def test_no_unsigned_text_passes_or_raises(payload: str) -> None:
    verifier = EventVerifier(KEY, SESSION, NOW_MS)
    assert verifier.event(payload) is None
    assert verifier.event(f"vs1:{SESSION}:{payload}") is None
    assert verifier.event(f"vs1:{SESSION}:{payload[:64]:\u00e9<64}:{payload}") is None


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner),
    max_leaves=30,
)


@settings(max_examples=300, deadline=None)
@given(body=st.text(max_size=200) | json_values.map(json.dumps))
def test_a_signed_body_is_decoded_defensively(body: str) -> None:
    """Whatever a signed body holds, the verifier returns an event only for an object of
    this session with a string id and event name, and never raises."""
    verifier = EventVerifier(KEY, SESSION, NOW_MS)
    event = verifier.event(sign(KEY, str(SESSION), body))
    if event is not None:
        assert event["session_id"] == str(SESSION)
        assert isinstance(event["event"], str)
        assert isinstance(event["id"], str)


@settings(max_examples=100, deadline=None)
@given(payload=json_values.filter(lambda v: isinstance(v, dict)), event=st.text(max_size=30))
def test_a_genuine_event_passes_once(payload: dict[str, Any], event: str) -> None:
    verifier = EventVerifier(KEY, SESSION, NOW_MS)
    assert verifier.event(sign(KEY, str(uuid.uuid4()), "{}")) is None
    assert verifier.dropped == 0  # another session's: not even looked at
    message = {
        "id": str(uuid.uuid4()),
        "at_ms": NOW_MS,
        "session_id": str(SESSION),
        "event": event,
        "payload": payload,
    }
    signed = sign(KEY, str(SESSION), json.dumps(message))
    assert verifier.event(signed) == message
    assert verifier.event(signed) is None  # a replay
    assert verifier.dropped == 1
    tampered = signed[:-1] + ("}" if signed[-1] != "}" else " ")
    assert EventVerifier(KEY, SESSION, NOW_MS).event(tampered) is None
    other = EventVerifier(hmac.new(KEY, b"other", hashlib.sha256).digest(), SESSION, NOW_MS)
    assert other.event(signed) is None


def signed_at(at_ms: Any) -> str:
    body = {"id": str(uuid.uuid4()), "at_ms": at_ms, "session_id": str(SESSION), "event": "e"}
    return sign(KEY, str(SESSION), json.dumps({**body, "payload": {}}))


def test_a_notification_sent_long_before_is_dropped_as_a_replay() -> None:
    """Older than the feed, or than the newest event received, by more than the window (a
    transaction may commit a while after it broadcast): a copy, whatever its id."""
    window = REPLAY_WINDOW_MS
    verifier = EventVerifier(KEY, SESSION, NOW_MS)
    assert verifier.event(signed_at(NOW_MS - window - 1)) is None
    assert verifier.event(signed_at(NOW_MS - window)) is not None
    assert verifier.event(signed_at(NOW_MS + 3 * window)) is not None
    assert verifier.event(signed_at(NOW_MS)) is None
    assert verifier.event(signed_at(NOW_MS + 2 * window)) is not None
    for malformed in (None, str(NOW_MS), NOW_MS + 0.5, True, [NOW_MS]):
        assert verifier.event(signed_at(malformed)) is None
    assert verifier.dropped == 7


def test_session_event_kind_defaults_to_event() -> None:
    assert SessionEvent(session_id=SESSION, event="failed").kind == "event"
