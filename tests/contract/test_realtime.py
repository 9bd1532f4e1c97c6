"""Live reading over Supabase, both faces, against a real websocket server speaking the
Realtime protocol (tests/support/phoenix.py) on 127.0.0.1, with respx standing in for the
REST API of the same project (respx patches httpx only: the websocket is a real one).

Pinned: the socket URL and the join of the private channel ``session:<id>`` with the
identity's JWT; broadcasts delivered as SessionEvents (other topics and frames ignored); a
refused join is PermissionDeniedError, an invisible session SessionNotFound before any
connection; a dropped connection is rejoined and announced; the minted JWT of ``as_user`` is
refreshed on the open channel; closing a feed or a subscription closes the socket; and the
broadcasting side: the ``broadcast_session_event`` RPC each live update makes.
"""

from __future__ import annotations

import asyncio
import datetime
import json
import threading
import time
import uuid
import warnings
from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx
import jwt
import pytest
import respx

from tests.contract.conftest import SECRET, SERVICE_KEY, SESSION, STARTED, USER_A, USER_B, Face
from tests.sdk.conftest import sdk
from tests.support.live import entered, eventually, next_event
from tests.support.phoenix import PATH, PhoenixServer, broadcast_frame
from voicesessions import (
    AsyncVoiceSessions,
    PermissionDeniedError,
    SessionEvent,
    SessionNotFound,
    TransientError,
    VoiceSessions,
    _realtime,
)

#: realtime-py reads ``ConnectionClosed.code`` and ``.reason`` when a connection is lost,
#: which websockets 15 deprecates; under ``filterwarnings = error`` that warning kills its
#: listening task. Ignored here so that most tests see the usual path (the channel is
#: errored); one test turns it back into an error (as ``-W error`` would) to pin the fallback.
REALTIME_PY_DEPRECATION = r"ConnectionClosed\.(code|reason) is deprecated:DeprecationWarning"

pytestmark = [
    pytest.mark.asyncio(loop_scope="session"),
    pytest.mark.filterwarnings(f"ignore:{REALTIME_PY_DEPRECATION}"),
]

TOPIC = f"session:{SESSION}"
COMPANY = uuid.UUID("c0c0c0c0-0000-4000-8000-00000000000c")
#: The feed's idle tick, shortened so that token checks and stop requests come quickly.
TICK_S = 0.05


def session_row(session_id: uuid.UUID = SESSION, owner: uuid.UUID = USER_A) -> dict[str, Any]:
    """A ``sessions`` row as PostgREST returns it."""
    stamp = STARTED.isoformat()
    return {
        "id": str(session_id),
        "profile_id": str(owner),
        "company_id": str(COMPANY),
        "title": "Discovery call",
        "status": "active",
        "started_at": stamp,
        "created_at": stamp,
        "updated_at": stamp,
    }


def user_token(token: str | None) -> dict[str, Any] | None:
    """The verified claims of a user JWT minted by ``as_user``; None for anything else."""
    if token is None:
        return None
    try:
        claims: dict[str, Any] = jwt.decode(
            token,
            SECRET,
            algorithms=["HS256"],
            audience="authenticated",
            options={"verify_exp": False, "verify_iat": False},
        )
    except jwt.InvalidTokenError:
        return None
    return claims


def only_user_a(topic: str, token: str | None) -> bool:
    """RLS on realtime.messages, as the tests need it: service_role sees everything, user A
    the topic of SESSION, nobody else anything."""
    if token == SERVICE_KEY:
        return True
    claims = user_token(token)
    return claims is not None and claims["sub"] == str(USER_A) and topic == TOPIC


def leftovers() -> list[str]:
    """Tasks of realtime-py still pending on this loop, and feed threads still running: what
    a closed feed must not leave behind."""
    tasks = [
        repr(task)
        for task in asyncio.all_tasks()
        if "/realtime/" in getattr(getattr(task.get_coro(), "cr_code", None), "co_filename", "")
    ]
    threads = [t.name for t in threading.enumerate() if t.name.startswith("voicesessions-realtime")]
    return tasks + threads


# -- fixtures -----------------------------------------------------------------------------


@pytest.fixture
def server() -> Iterator[PhoenixServer]:
    with PhoenixServer(authorize=only_user_a) as realtime:
        yield realtime


@pytest.fixture
def rest(server: PhoenixServer) -> Iterator[respx.MockRouter]:
    """The REST API of the same project (same host and port as the websocket server)."""
    with respx.mock(base_url=server.url, assert_all_called=False) as router:
        router.get("/rest/v1/sessions").respond(200, json=[session_row()])
        yield router


@pytest.fixture
def fast_tick(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_realtime, "TICK_S", TICK_S)


@pytest.fixture
async def service(
    face: Face, server: PhoenixServer, rest: respx.MockRouter, fast_tick: None
) -> AsyncIterator[Any]:
    """A service-role client (with the JWT secret) of the face under test on the project."""
    backend = face.build(SERVICE_KEY, url=server.url, jwt_secret=SECRET)
    client = AsyncVoiceSessions(backend) if face.name == "async" else VoiceSessions(backend)
    try:
        yield client
    finally:
        await face.call(client.aclose if face.name == "async" else client.close)


def bearer(request: httpx.Request) -> str:
    scheme, _, token = request.headers["Authorization"].partition(" ")
    assert scheme == "Bearer"
    return token


# -- reading: events() --------------------------------------------------------------------


async def test_a_user_joins_the_private_channel_with_their_jwt(
    service: Any, server: PhoenixServer, rest: respx.MockRouter
) -> None:
    async with entered(service.as_user(USER_A).updates.events(SESSION)):
        (join,) = server.received("phx_join")
        (connection,) = server.connections
    # The socket of the project, with its key and protocol version.
    assert connection.path == PATH
    assert connection.query == {"apikey": SERVICE_KEY, "vsn": "1.0.0"}
    # The private channel of the session, joined with the same JWT the REST call carried.
    assert join.topic == f"realtime:{TOPIC}"
    config = join.payload["config"]
    assert config["private"] is True
    assert config["postgres_changes"] == []
    assert config["presence"]["enabled"] is False
    (visibility_check,) = rest.calls
    assert join.payload["access_token"] == bearer(visibility_check.request)
    claims = user_token(join.payload["access_token"])
    assert claims is not None
    assert claims["sub"] == str(USER_A)
    assert claims["role"] == "authenticated"
    # Leaving the block closes the socket, and the feed leaves nothing running.
    await server.until(lambda: server.connections[0].closed)
    assert leftovers() == []


async def test_the_service_role_joins_with_its_key(service: Any, server: PhoenixServer) -> None:
    async with entered(service.updates.events(SESSION)):
        (join,) = server.received("phx_join")
    assert join.payload["access_token"] == SERVICE_KEY
    assert join.payload["config"]["private"] is True


SB_SECRET = "sb_secret_N7UND0UgjKTVK-Uodkm0Hg_xSvEMPvz"


@pytest.mark.parametrize("as_user", [False, True], ids=["secret-key", "secret-key+as_user"])
async def test_an_sb_key_joins_with_apikey_and_only_a_jwt_as_access_token(
    face: Face, fast_tick: None, as_user: bool
) -> None:
    # Realtime authorizes a join without access_token by the role of the apikey: this
    # server lets every join in, the test is about what the client sends.
    with PhoenixServer() as server, respx.mock(base_url=server.url) as rest:
        rest.get("/rest/v1/sessions").respond(200, json=[session_row()])
        backend = face.build(SB_SECRET, url=server.url, jwt_secret=SECRET)
        client = AsyncVoiceSessions(backend) if face.name == "async" else VoiceSessions(backend)
        try:
            watcher = client.as_user(USER_A) if as_user else client
            async with entered(watcher.updates.events(SESSION)):
                (join,) = server.received("phx_join")
                (connection,) = server.connections
        finally:
            await face.call(client.aclose if face.name == "async" else client.close)
    assert connection.query == {"apikey": SB_SECRET, "vsn": "1.0.0"}
    if as_user:
        claims = user_token(join.payload["access_token"])
        assert claims is not None
        assert claims["sub"] == str(USER_A)
    else:  # no JWT to send: Realtime reads the role from the apikey
        assert join.payload.get("access_token") is None
    assert "sb_" not in json.dumps(join.payload)


async def test_broadcasts_arrive_as_session_events(service: Any, server: PhoenixServer) -> None:
    other = f"session:{uuid.uuid4()}"
    async with entered(service.as_user(USER_A).updates.events(SESSION)) as events:
        # What the client must ignore: another topic, a system notice, a heartbeat's reply.
        server.send(broadcast_frame(other, "audio_metrics", {"rms_dbfs": -1.0}, message_id="x"))
        server.send(
            {
                "event": "system",
                "topic": f"realtime:{TOPIC}",
                "payload": {
                    "channel": TOPIC,
                    "extension": "system",
                    "message": "Subscribed to Realtime",
                    "status": "ok",
                },
                "ref": None,
            }
        )
        server.send(
            {
                "event": "phx_reply",
                "topic": "phoenix",
                "payload": {"status": "ok", "response": {}},
                "ref": "999",
            }
        )
        metrics_id = server.broadcast(TOPIC, "audio_metrics", {"rms_dbfs": -19.5})
        status_id = server.broadcast(TOPIC, "status", {"status": "completed", "id": "mine"})
        metrics = await next_event(events, within=5)
        status = await next_event(events, within=5)
        assert await sdk(events.get(timeout=0.2)) is None  # nothing else came through
    assert metrics == SessionEvent(
        session_id=SESSION,
        event="audio_metrics",
        payload={"rms_dbfs": -19.5},  # without the id Realtime adds to the payload
        id=metrics_id,
        received_at=metrics.received_at,
    )
    assert status.event == "status"
    assert status.id == status_id
    assert status.payload == {"status": "completed", "id": "mine"}  # a payload's own id stays


async def test_a_refused_join_is_permission_denied(
    service: Any, server: PhoenixServer, rest: respx.MockRouter
) -> None:
    rest.get("/rest/v1/sessions").respond(200, json=[session_row()])  # RLS lets B see it
    with pytest.raises(PermissionDeniedError) as refused:
        async with entered(service.as_user(USER_B).updates.events(SESSION)):
            pass
    assert str(SESSION) in str(refused.value)
    assert "Unauthorized" in str(refused.value)
    assert refused.value.code == "42501"
    (join,) = server.received("phx_join")
    claims = user_token(join.payload["access_token"])
    assert claims is not None
    assert claims["sub"] == str(USER_B)
    await server.until(lambda: all(c.closed for c in server.connections))
    assert leftovers() == []  # e.g. the channel's rejoin timer


async def test_an_invisible_session_is_not_found_without_connecting(
    service: Any, server: PhoenixServer, rest: respx.MockRouter
) -> None:
    route = rest.get("/rest/v1/sessions").respond(200, json=[])
    with pytest.raises(SessionNotFound):
        async with entered(service.as_user(USER_B).updates.events(SESSION)):
            pass
    assert route.called
    assert ("id", f"eq.{SESSION}") in route.calls[0].request.url.params.multi_items()
    assert server.connections == []


async def test_an_unreachable_realtime_server_is_transient(
    face: Face, rest: respx.MockRouter, fast_tick: None
) -> None:
    with PhoenixServer() as gone:
        url = gone.url  # a port nothing listens on once the server has stopped
    backend = face.build(SERVICE_KEY, url=url)
    client = AsyncVoiceSessions(backend) if face.name == "async" else VoiceSessions(backend)
    with respx.mock(base_url=url) as router:
        router.get("/rest/v1/sessions").respond(200, json=[session_row()])
        with pytest.raises(TransientError, match="cannot connect to Realtime"):
            async with entered(client.updates.events(SESSION)):
                pass
    await face.call(client.aclose if face.name == "async" else client.close)


async def test_an_unanswered_join_is_transient(
    service: Any, server: PhoenixServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(_realtime, "JOIN_TIMEOUT_S", 1)
    server.ignore_joins = True
    with pytest.raises(TransientError, match=str(SESSION)):
        async with entered(service.updates.events(SESSION)):
            pass
    assert len(server.received("phx_join")) == 1
    await server.until(lambda: all(c.closed for c in server.connections))
    assert leftovers() == []


async def test_a_dropped_connection_is_rejoined_and_announced(
    service: Any, server: PhoenixServer
) -> None:
    async with entered(service.as_user(USER_A).updates.events(SESSION)) as events:
        server.drop()
        reconnected = await next_event(events, within=10)
        assert reconnected.event == "reconnected"
        assert reconnected.payload is not None
        assert reconnected.payload["attempts"] >= 1
        await server.until(lambda: server.joined(TOPIC))
        later = server.broadcast(TOPIC, "transcript", {"final": [], "interim": []})
        event = await next_event(events, within=5)
        assert (event.event, event.id) == ("transcript", later)
        first, second = server.received("phx_join")
    assert (first.connection, second.connection) == (0, 1)
    assert second.topic == first.topic
    assert second.payload["config"] == first.payload["config"]
    assert server.connections[0].closed


async def test_a_listener_that_dies_silently_is_noticed(
    service: Any, server: PhoenixServer
) -> None:
    """Under ``-W error`` realtime-py's listening task dies of a deprecation warning when the
    connection drops, without erroring the channel: the feed must notice, not hang."""
    async with entered(service.as_user(USER_A).updates.events(SESSION)) as events:
        with warnings.catch_warnings():
            message, _, _ = REALTIME_PY_DEPRECATION.partition(":")
            warnings.filterwarnings("error", message, DeprecationWarning)
            server.drop()
            reconnected = await next_event(events, within=10)
        assert reconnected.event == "reconnected"
        assert reconnected.payload is not None
        assert "the listener failed" in reconnected.payload["error"]
        later = server.broadcast(TOPIC, "status", {"status": "completed"})
        assert (await next_event(events, within=5)).id == later


async def test_access_lost_while_watching_ends_the_feed_with_permission_denied(
    service: Any, server: PhoenixServer
) -> None:
    async with entered(service.as_user(USER_A).updates.events(SESSION)) as events:
        server.authorize = lambda topic, token: False  # e.g. the user changed company
        server.drop()
        with pytest.raises(PermissionDeniedError):
            await sdk(events.get(timeout=10))
    assert len(server.received("phx_join")) == 2  # refused rejoins are not retried
    await server.until(lambda: all(c.closed for c in server.connections))


async def test_a_channel_the_server_closes_is_rejoined(service: Any, server: PhoenixServer) -> None:
    """What Realtime does when a token expires: a system error, then ``phx_close``."""
    async with entered(service.as_user(USER_A).updates.events(SESSION)) as events:
        server.send(
            {
                "event": "system",
                "topic": f"realtime:{TOPIC}",
                "payload": {
                    "channel": TOPIC,
                    "extension": "system",
                    "message": "Token has expired 0 seconds ago",
                    "status": "error",
                },
                "ref": None,
            }
        )
        reconnected = await next_event(events, within=10)
        assert reconnected.event == "reconnected"
        assert reconnected.payload is not None
        assert "Token has expired" in reconnected.payload["error"]
        await server.until(lambda: len(server.received("phx_join")) == 2)


# -- the user's token on an open channel --------------------------------------------------


class Clock:
    """A stand-in for the ``time`` module of the backend: ``time()`` moves when told."""

    def __init__(self) -> None:
        self.now = float(int(time.time()))

    def time(self) -> float:
        return self.now


async def test_the_users_jwt_is_refreshed_on_the_open_channel(
    face: Face, service: Any, server: PhoenixServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    clock = Clock()
    monkeypatch.setattr(face.module, "time", clock)
    lifetime = face.module.USER_TOKEN_LIFETIME
    margin = face.module.USER_TOKEN_REFRESH_MARGIN
    async with entered(service.as_user(USER_A).updates.events(SESSION)) as events:
        (join,) = server.received("phx_join")
        first = user_token(join.payload["access_token"])
        assert first is not None
        await sdk(events.get(timeout=3 * TICK_S))
        assert server.received("access_token") == []  # still fresh: nothing sent
        clock.now += lifetime - margin
        (push,) = await server.until(lambda: server.received("access_token"))
        await sdk(events.get(timeout=3 * TICK_S))
        assert len(server.received("access_token")) == 1  # sent once, not on every tick
        # A rejoin after a drop uses the fresh token too.
        server.drop()
        assert (await next_event(events, within=10)).event == "reconnected"
        rejoin = server.received("phx_join")[-1]
    assert push.topic == f"realtime:{TOPIC}"
    fresh = user_token(push.payload["access_token"])
    assert fresh is not None
    assert fresh["sub"] == str(USER_A)
    assert fresh["iat"] == first["iat"] + lifetime - margin
    assert fresh["exp"] == fresh["iat"] + lifetime
    assert rejoin.payload["access_token"] == push.payload["access_token"]
    assert leftovers() == []  # e.g. the reply timeout of the access_token push


async def test_a_steady_flow_of_events_does_not_hold_back_the_refresh(
    face: Face, service: Any, server: PhoenixServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    clock = Clock()
    monkeypatch.setattr(face.module, "time", clock)
    monkeypatch.setattr(_realtime, "TICK_S", 0.5)
    stop = threading.Event()

    def flow() -> None:  # an event every 20 ms: the feed is never idle for a tick
        while not stop.is_set():
            server.broadcast(TOPIC, "audio_metrics", {"rms_dbfs": -20.0})
            time.sleep(0.02)

    async with entered(service.as_user(USER_A).updates.events(SESSION)) as events:
        sender = threading.Thread(target=flow)
        sender.start()
        try:
            await next_event(events, within=5)
            clock.now += face.module.USER_TOKEN_LIFETIME
            deadline = time.monotonic() + 5
            while not server.received("access_token"):
                assert time.monotonic() < deadline, "the token was not refreshed"
                assert (await next_event(events, within=5)).event == "audio_metrics"
        finally:
            stop.set()
            sender.join()


# -- reading: subscribe() -----------------------------------------------------------------


async def test_subscribe_delivers_broadcasts_until_closed(
    face: Face, service: Any, server: PhoenixServer
) -> None:
    received: list[SessionEvent] = []
    subscription = await sdk(service.as_user(USER_A).updates.subscribe(SESSION, received.append))
    assert subscription.active
    (connection,) = server.joined(TOPIC)
    first = server.broadcast(TOPIC, "status", {"status": "completed"})
    await eventually(lambda: len(received) == 1, within=5)
    await face.call(subscription.aclose if face.name == "async" else subscription.close)
    await server.until(lambda: connection.closed)
    assert not subscription.active
    assert leftovers() == []
    assert [(e.event, e.id, e.payload) for e in received] == [
        ("status", first, {"status": "completed"})
    ]


# -- writing: the broadcast RPC -----------------------------------------------------------


@pytest.fixture
def rpc(rest: respx.MockRouter) -> respx.Route:
    """``POST /rest/v1/rpc/broadcast_session_event`` (it returns void: 204)."""
    return rest.post("/rest/v1/rpc/broadcast_session_event").respond(204)


def sent(route: respx.Route) -> list[dict[str, Any]]:
    return [json.loads(c.request.content) for c in route.calls]


async def test_audio_metrics_are_merged_then_broadcast(
    service: Any, rest: respx.MockRouter, rpc: respx.Route
) -> None:
    merge = rest.post("/rest/v1/rpc/update_audio_metrics").respond(
        200, json={"rms_dbfs": -18.0, "peak_dbfs": -2.0}
    )
    me = service.as_user(USER_A)
    merged = await sdk(me.updates.update_audio_metrics(SESSION, {"rms_dbfs": -18.0}))
    assert merged == {"rms_dbfs": -18.0, "peak_dbfs": -2.0}
    assert json.loads(merge.calls[0].request.content) == {
        "session_id": str(SESSION),
        "metrics": {"rms_dbfs": -18.0},
    }
    assert sent(rpc) == [
        {"session_id": str(SESSION), "event": "audio_metrics", "payload": {"rms_dbfs": -18.0}}
    ]
    request = rpc.calls[0].request
    assert request.headers["apikey"] == SERVICE_KEY
    claims = user_token(bearer(request))
    assert claims is not None
    assert claims["sub"] == str(USER_A)


async def test_a_transcript_chunk_is_stored_and_broadcast_by_one_request(
    service: Any, rest: respx.MockRouter, rpc: respx.Route
) -> None:
    """One request carries the chunk once: the database stores the finals and broadcasts
    finals and interims itself (append_transcript_segments with ``interim``)."""
    append = rest.post("/rest/v1/rpc/append_transcript_segments").respond(
        200, json={"inserted": 1, "duplicates": 0}
    )
    final = {"seq": 1, "speaker": "trainee", "text": "hello", "start_ms": 0, "end_ms": 900}
    interim = {**final, "seq": 2, "text": "how a", "start_ms": 1000, "end_ms": 1400}
    result = await sdk(
        service.updates.append_transcript_chunk(SESSION, [final, {**interim, "is_final": False}])
    )
    assert (result.inserted, result.interim) == (1, 1)
    (body,) = (json.loads(c.request.content) for c in append.calls)
    assert body["session_id"] == str(SESSION)
    assert [s["seq"] for s in body["segments"]] == [1]
    assert [s["seq"] for s in body["interim"]] == [2]
    assert body["interim"][0]["is_final"] is False
    assert sent(rpc) == []
    assert [c.request.url.path for c in rest.calls] == ["/rest/v1/rpc/append_transcript_segments"]


async def test_broadcast_update_sends_data_and_timestamp_only(
    service: Any, rest: respx.MockRouter, rpc: respx.Route
) -> None:
    at = datetime.datetime(2026, 3, 4, 5, 6, 7, tzinfo=datetime.UTC)
    await sdk(
        service.updates.broadcast_update(
            {
                "session_id": SESSION,
                "update_type": "status_change",
                "data": {"status": "paused"},
                "timestamp": at,
            }
        )
    )
    assert sent(rpc) == [
        {
            "session_id": str(SESSION),
            "event": "status_change",
            "payload": {"data": {"status": "paused"}, "timestamp": at.isoformat()},
        }
    ]
    # Nothing was stored: the only request is the broadcast.
    assert [c.request.url.path for c in rest.calls] == ["/rest/v1/rpc/broadcast_session_event"]


async def test_a_broadcast_about_an_invisible_session_is_session_not_found(
    service: Any, rest: respx.MockRouter
) -> None:
    rest.post("/rest/v1/rpc/broadcast_session_event").respond(
        400,
        json={"code": "P0002", "message": f"session {SESSION} not found", "details": None},
    )
    with pytest.raises(SessionNotFound):
        await sdk(
            service.as_user(USER_B).updates.broadcast_update(
                {"session_id": SESSION, "update_type": "status_change", "data": "paused"}
            )
        )


# -- hostile broadcasts -------------------------------------------------------------------


def hostile_frames() -> list[dict[str, Any]]:
    """Frames on the session's topic that carry no usable event: every shape of the inner
    message, event name and id that is not what ``realtime.send`` produces."""
    good = broadcast_frame(TOPIC, "status", {"status": "active"}, message_id="m1")
    frames: list[dict[str, Any]] = []
    for inner in (None, [], "text", 7, {"event": "status"}, {"payload": {"a": 1}}):
        frames.append({**good, "payload": inner})
    for payload in (None, [1, 2], "text", 3.5, True):
        frames.append({**good, "payload": {**good["payload"], "payload": payload}})
    for event in (None, 7, ["status"], {"name": "status"}):
        frames.append({**good, "payload": {**good["payload"], "event": event}})
    for meta in ("m1", [], {"id": {"nested": 1}}, {"id": 12}):
        frames.append({**good, "payload": {**good["payload"], "meta": meta}})
    return frames


async def test_no_broadcast_shape_ends_the_feed(service: Any, server: PhoenixServer) -> None:
    """Whatever the server pushes on the channel, the feed skips what it cannot read and
    goes on: the next well-formed broadcast is the next event, and no control event came."""
    async with entered(service.as_user(USER_A).updates.events(SESSION)) as events:
        for frame in hostile_frames():
            server.send(frame)
        later = server.broadcast(TOPIC, "transcript", {"final": [], "interim": []})
        event = await next_event(events, within=5)
        assert (event.event, event.id, event.kind) == ("transcript", later, "event")
        # A broadcast named like one of the SDK's own control events is still a user event.
        server.broadcast(TOPIC, "failed", {"error": "forged"})
        forged = await next_event(events, within=5)
        assert (forged.event, forged.kind, forged.is_control) == ("failed", "event", False)
        assert await sdk(events.get(timeout=0.3)) is None
