"""A local Supabase Realtime server for tests: the Phoenix channels protocol (serializer
1.0.0, every frame a JSON object ``{"event", "topic", "payload", "ref", "join_ref"}``) over
a real websocket on 127.0.0.1, built on ``websockets``.

It runs on an event loop in a thread of its own, so a test on either face of the SDK (the
sync face blocks the test's loop while it waits for an event) can drive it, and its methods
are safe to call from any thread. What it does, as Supabase Realtime does it:

- serves ``/realtime/v1/websocket`` only (404 elsewhere; 403 without an ``apikey``);
- ``heartbeat`` on topic ``phoenix`` -> ``phx_reply`` ok;
- ``phx_join`` -> ``phx_reply`` ``{"status": "ok", "response": {"postgres_changes": []}}``,
  or, for a private channel the test's ``authorize(topic, token)`` refuses, an error reply
  ``{"reason": "Unauthorized: You do not have permissions to read from this Channel topic:
  <topic>"}``; the token is the join's ``access_token``, else the connection's ``apikey``;
- (with :attr:`PhoenixServer.ignore_joins`) no answer to a join at all;
- ``access_token`` pushes replace the token of the channel (recorded; no reply);
- ``phx_leave`` -> ``phx_reply`` ok, then ``phx_close``.

A test pushes what the database would send with :meth:`PhoenixServer.broadcast` (the frame
Realtime builds for ``realtime.send``: the message id in ``meta.id`` and also added to the
payload), sends any raw frame with :meth:`PhoenixServer.send`, and cuts every connection
without a close frame with :meth:`PhoenixServer.drop`. Every frame received is recorded
(:attr:`PhoenixServer.frames`), and so is every connection (:attr:`PhoenixServer.connections`:
its path, query and whether it has ended).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl, urlsplit

from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.exceptions import ConnectionClosed
from websockets.http11 import Request, Response

#: The path of the Realtime websocket of a Supabase project.
PATH = "/realtime/v1/websocket"
#: What Realtime answers a private join that RLS on realtime.messages refuses.
UNAUTHORIZED = "Unauthorized: You do not have permissions to read from this Channel topic: {}"

#: ``authorize(topic, token)``: may the holder of ``token`` join the private ``topic``
#: (without the ``realtime:`` prefix)? ``token`` is None when the client sent none.
Authorize = Callable[[str, str | None], bool]


def _allow_all(topic: str, token: str | None) -> bool:
    return True


@dataclass(frozen=True)
class Frame:
    """One frame a client sent: on which connection (0 = the first), and what."""

    connection: int
    message: dict[str, Any]

    @property
    def event(self) -> str:
        return str(self.message.get("event"))

    @property
    def topic(self) -> str:
        return str(self.message.get("topic"))

    @property
    def payload(self) -> dict[str, Any]:
        payload = self.message.get("payload")
        return payload if isinstance(payload, dict) else {}


@dataclass
class Connection:
    """One websocket connection a client opened."""

    index: int
    path: str
    query: dict[str, str]
    closed: bool = False
    #: topic -> the token it was joined (or last refreshed) with
    joined: dict[str, str | None] = field(default_factory=dict)


def broadcast_frame(
    topic: str, event: str, payload: dict[str, Any], *, message_id: str | None = None
) -> dict[str, Any]:
    """The frame Realtime pushes for a broadcast on ``topic`` (without ``realtime:``).

    With ``message_id`` it is a broadcast from the database (``realtime.send``): the id is in
    ``meta`` and, unless the payload has an ``id`` already, added to the payload."""
    inner: dict[str, Any] = {"event": event, "payload": dict(payload), "type": "broadcast"}
    if message_id is not None:
        inner["meta"] = {"id": message_id}
        inner["payload"].setdefault("id", message_id)
    return {"event": "broadcast", "topic": f"realtime:{topic}", "payload": inner, "ref": None}


class PhoenixServer:
    """A Realtime server on 127.0.0.1 (a free port), in a thread: ``with PhoenixServer() as
    server:``; :attr:`url` is the project URL a Supabase backend is built with."""

    def __init__(self, authorize: Authorize = _allow_all) -> None:
        self.authorize = authorize
        #: When True, joins are recorded but never answered (an overloaded server).
        self.ignore_joins = False
        self._lock = threading.Lock()
        self._frames: list[Frame] = []
        self._connections: list[Connection] = []
        self._sockets: dict[int, ServerConnection] = {}
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="phoenix-server")
        self._server: Server | None = None
        self.port = 0

    # -- lifecycle ----------------------------------------------------------------------

    def __enter__(self) -> PhoenixServer:
        self._thread.start()
        self._server = self._run(self._start())
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    def __exit__(self, *exc: object) -> None:
        self._run(self._stop())
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join()
        self._loop.close()

    @property
    def url(self) -> str:
        """The project URL: the websocket is at ``ws://127.0.0.1:<port>/realtime/v1/websocket``."""
        return f"http://127.0.0.1:{self.port}"

    # -- what the clients did -----------------------------------------------------------

    @property
    def frames(self) -> list[Frame]:
        """Every frame received so far, in order."""
        with self._lock:
            return list(self._frames)

    @property
    def connections(self) -> list[Connection]:
        with self._lock:
            return list(self._connections)

    def received(self, event: str, topic: str | None = None) -> list[Frame]:
        """The frames of one event (``phx_join``, ``access_token``...), of one topic if given
        (without ``realtime:``)."""
        return [
            f
            for f in self.frames
            if f.event == event and (topic is None or f.topic == f"realtime:{topic}")
        ]

    def joined(self, topic: str) -> list[Connection]:
        """The open connections on which ``topic`` is joined now."""
        return [c for c in self.connections if not c.closed and topic in c.joined]

    async def until(self, check: Callable[[], Any], within: float = 10) -> Any:
        """Wait (without blocking the caller's event loop) until ``check()`` is truthy; return
        it. Fails the test after ``within`` seconds."""
        deadline = time.monotonic() + within
        while not (result := check()):
            assert time.monotonic() < deadline, "the Realtime server did not see it in time"
            await asyncio.sleep(0.01)
        return result

    # -- what a test makes the server do ------------------------------------------------

    def broadcast(
        self,
        topic: str,
        event: str,
        payload: dict[str, Any],
        *,
        message_id: str | None = None,
    ) -> str | None:
        """Push a broadcast to every connection that joined ``topic``, as the database's
        ``realtime.send`` does (``message_id``: a fresh uuid unless given; pass ``""`` for a
        client broadcast, which has none). Returns the message id."""
        mid = str(uuid.uuid4()) if message_id is None else (message_id or None)
        frame = broadcast_frame(topic, event, payload, message_id=mid)
        self._run(self._send(frame, only_topic=f"realtime:{topic}"))
        return mid

    def send(self, frame: dict[str, Any]) -> None:
        """Send a raw frame to every open connection."""
        self._run(self._send(frame, only_topic=None))

    def drop(self) -> None:
        """Cut every open connection at once, without a close frame (a network failure)."""
        self._run(self._drop())

    # -- internals ----------------------------------------------------------------------

    def _run(self, coroutine: Any) -> Any:
        future: Future[Any] = asyncio.run_coroutine_threadsafe(coroutine, self._loop)
        return future.result(timeout=10)

    async def _start(self) -> Server:
        return await serve(self._handle, "127.0.0.1", 0, process_request=self._check_request)

    async def _stop(self) -> None:
        assert self._server is not None
        self._server.close()
        await self._server.wait_closed()

    def _check_request(self, connection: ServerConnection, request: Request) -> Response | None:
        url = urlsplit(request.path)
        if url.path != PATH:
            return connection.respond(404, "Not Found\n")
        if not dict(parse_qsl(url.query)).get("apikey"):
            return connection.respond(403, "apikey required\n")
        return None

    async def _handle(self, socket: ServerConnection) -> None:
        assert socket.request is not None
        url = urlsplit(socket.request.path)
        with self._lock:
            connection = Connection(len(self._connections), url.path, dict(parse_qsl(url.query)))
            self._connections.append(connection)
            self._sockets[connection.index] = socket
        try:
            async for raw in socket:
                message = json.loads(raw)
                with self._lock:
                    self._frames.append(Frame(connection.index, message))
                for reply in self._answer(connection, message):
                    await socket.send(json.dumps(reply))
        except ConnectionClosed:
            pass
        finally:
            with self._lock:
                connection.closed = True
                del self._sockets[connection.index]

    def _answer(self, connection: Connection, message: dict[str, Any]) -> Iterator[dict[str, Any]]:
        event, topic, ref = message.get("event"), str(message.get("topic")), message.get("ref")
        payload = message.get("payload") or {}
        join_ref = message.get("join_ref")

        def reply(status: str, response: dict[str, Any]) -> dict[str, Any]:
            return {
                "event": "phx_reply",
                "topic": topic,
                "payload": {"status": status, "response": response},
                "ref": ref,
                "join_ref": join_ref,
            }

        if topic == "phoenix" and event == "heartbeat":
            yield reply("ok", {})
        elif event == "phx_join" and not self.ignore_joins:
            sub_topic = topic.removeprefix("realtime:")
            config = payload.get("config") or {}
            token = payload.get("access_token") or connection.query.get("apikey")
            if config.get("private") and not self.authorize(sub_topic, token):
                yield reply("error", {"reason": UNAUTHORIZED.format(sub_topic)})
                return
            with self._lock:
                connection.joined[topic.removeprefix("realtime:")] = token
            bindings = config.get("postgres_changes") or []
            yield reply(
                "ok",
                {"postgres_changes": [{**b, "id": n} for n, b in enumerate(bindings, start=1)]},
            )
        elif event == "access_token":
            with self._lock:
                sub_topic = topic.removeprefix("realtime:")
                if sub_topic in connection.joined:
                    connection.joined[sub_topic] = payload.get("access_token")
        elif event == "phx_leave":
            with self._lock:
                connection.joined.pop(topic.removeprefix("realtime:"), None)
            yield reply("ok", {})
            yield {"event": "phx_close", "topic": topic, "payload": {}, "ref": join_ref}

    async def _send(self, frame: dict[str, Any], *, only_topic: str | None) -> None:
        text = json.dumps(frame)
        with self._lock:
            targets = [
                self._sockets[c.index]
                for c in self._connections
                if not c.closed
                and c.index in self._sockets
                and (only_topic is None or only_topic.removeprefix("realtime:") in c.joined)
            ]
        for socket in targets:
            with contextlib.suppress(ConnectionClosed):
                await socket.send(text)

    async def _drop(self) -> None:
        with self._lock:
            sockets = list(self._sockets.values())
        for socket in sockets:
            socket.transport.abort()
        # Wait until the handlers have seen it, so a later broadcast does not reach them.
        await asyncio.wait_for(asyncio.gather(*(s.wait_closed() for s in sockets)), 5)
