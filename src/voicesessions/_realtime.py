"""Supabase Realtime: the Broadcast feed of one session, for both faces.

supabase-py's Realtime client is async only (its sync client raises NotImplementedError).
:func:`async_session_feed` is the feed on the async face; :func:`session_feed` gives the sync
face the very same feed by running it on an event loop in a thread of its own and handing
the events over through a queue. ``unasyncd`` maps the one name to the other.

The feed joins the private channel ``session:<id>`` with the identity's JWT: Realtime lets
the join through only if RLS on ``realtime.messages`` does (the policy in the live-updates
migration: readers of the session). Broadcasts sent by ``public.broadcast_session_event``
(``realtime.send``) arrive as ``{"event", "payload", "meta": {"id"}}``; the feed yields them
in the shape of ``Backend.session_events``. The client never reconnects by itself
(``auto_reconnect=False``): a lost connection raises TransientError, and the SDK's event
iterator reconnects and says so. tests/contract/test_realtime.py pins this against a local
server speaking the Realtime protocol.
"""

from __future__ import annotations

import asyncio
import contextlib
import queue
import threading
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

from realtime import AsyncRealtimeClient, RealtimeSubscribeStates
from realtime.types import RealtimeChannelConfig, RealtimeChannelOptions

from voicesessions._upstream import realtime_listener, realtime_tasks
from voicesessions.errors import APIError, PermissionDeniedError, TransientError

#: Seconds to wait for the socket and for the channel join.
JOIN_TIMEOUT_S = 10
#: Seconds without an event after which the feed yields ``None``.
TICK_S = 1.0

_Item = tuple[str, Any]


@contextlib.asynccontextmanager
async def async_session_feed(
    url: str, apikey: str, token: Callable[[], str | None], session_id: uuid.UUID
) -> AsyncIterator[AsyncIterator[dict[str, Any] | None]]:
    """Join ``session:<session_id>`` on the Realtime server of the project at ``url`` and
    yield an iterator of its broadcasts (see ``Backend.session_events``).

    ``token()`` gives the identity's current JWT (None for an ``sb_`` key without a user:
    the join then carries no ``access_token`` and Realtime reads the role from ``apikey``,
    where realtime-py would otherwise send the key as ``access_token`` too); it is asked
    again about every second (in the background, whether the iterator is being read or
    not) and a new one is passed on to Realtime (``access_token``), so a channel outlives
    the short-lived tokens the SDK mints for ``as_user``."""
    items: asyncio.Queue[_Item] = asyncio.Queue()
    client = AsyncRealtimeClient(
        f"{url.rstrip('/')}/realtime/v1", apikey, auto_reconnect=False, timeout=JOIN_TIMEOUT_S
    )
    try:
        try:
            await client.connect()
        except Exception as exc:  # websockets/OS errors of any kind: the server is unreachable
            raise _connection_error(exc) from exc
        current = token()
        await client.set_auth(current)
        channel = client.channel(
            f"session:{session_id}",
            RealtimeChannelOptions(
                config=RealtimeChannelConfig(
                    private=True, broadcast={"self": True, "ack": False}, presence=None
                )
            ),
        )
        channel.on_broadcast("*", lambda message: items.put_nowait(("event", message)))
        channel_state = _ChannelState(items)
        await channel.subscribe(channel_state.changed)
        await channel_state.joined(session_id)

        refresher = asyncio.create_task(_keep_token_fresh(client, token, current, items))
        try:
            yield _broadcasts(items, str(session_id), lambda: _listener_failure(client))
        finally:
            refresher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await refresher
    finally:
        await _shut(client)


async def _shut(client: AsyncRealtimeClient) -> None:
    """Close the socket and end every task the client and its channel started: ``close()``
    leaves the channel's rejoin timer and the reply timeouts of its pushes (10 s) running,
    which would outlive the feed (and, on the sync face, its event loop). Which tasks those
    are is read by :func:`voicesessions._upstream.realtime_tasks` (no public API tells)."""
    try:
        tasks = realtime_tasks(client)
    finally:
        await client.close()
    pending = [t for t in tasks if not t.done()]
    for task in pending:
        task.cancel()
    await asyncio.gather(*pending, return_exceptions=True)


async def _keep_token_fresh(
    client: AsyncRealtimeClient,
    token: Callable[[], str | None],
    current: str | None,
    items: asyncio.Queue[_Item],
) -> None:
    """Every TICK_S, ask for the identity's token and hand a new one to Realtime (an
    ``access_token`` push; later rejoins use it too). It runs beside the feed, so the channel
    stays authorized however fast or slowly the consumer reads: Realtime closes a channel
    whose token has expired. A failure (e.g. the backend was closed) ends the feed with it."""
    try:
        while True:
            await asyncio.sleep(TICK_S)
            fresh = token()
            if fresh != current:
                current = fresh
                await client.set_auth(fresh)
    except Exception as exc:
        items.put_nowait(("error", exc))


class _ChannelState:
    def __init__(self, items: asyncio.Queue[_Item]) -> None:
        self._items = items
        self.first: tuple[RealtimeSubscribeStates, Exception | None] | None = None
        self._first_seen = asyncio.Event()

    def changed(self, state: RealtimeSubscribeStates, error: Exception | None) -> None:
        if self.first is None:
            self.first = (state, error)
            self._first_seen.set()
        else:
            self._items.put_nowait(("state", (state, error)))

    async def joined(self, session_id: uuid.UUID) -> None:
        try:
            await asyncio.wait_for(self._first_seen.wait(), JOIN_TIMEOUT_S)
        except TimeoutError:
            raise TransientError(f"joining the channel of session {session_id} timed out") from None
        assert self.first is not None
        state, error = self.first
        if state is RealtimeSubscribeStates.SUBSCRIBED:
            return
        detail = str(error) if error is not None else state.value
        if state is RealtimeSubscribeStates.CHANNEL_ERROR and _is_refusal(detail):
            raise PermissionDeniedError(
                f"not allowed to watch session {session_id}: {detail}", code="42501"
            )
        raise TransientError(f"could not join the channel of session {session_id}: {detail}")


async def _broadcasts(
    items: asyncio.Queue[_Item], session_id: str, listener_failure: Callable[[], str | None]
) -> AsyncIterator[dict[str, Any] | None]:
    while True:
        try:
            kind, value = await asyncio.wait_for(items.get(), TICK_S)
        except TimeoutError:
            failure = listener_failure()
            if failure is not None:
                raise TransientError(f"the Realtime connection was lost: {failure}") from None
            yield None
            continue
        if kind == "error":
            raise value
        if kind == "state":
            state, error = value
            detail = str(error) if error is not None else state.value
            raise TransientError(f"the Realtime channel was lost: {detail}")
        event = _event(value, session_id)
        if event is not None:
            yield event


def _event(message: Any, session_id: str) -> dict[str, Any] | None:
    """A broadcast as ``Backend.session_events`` yields it, or None if it is not one (a
    message of another shape, a payload that is not an object, an event without a name):
    nothing a broadcast carries can end the feed.

    A broadcast from the database (``realtime.send``) has its message id in ``meta.id``, and
    Realtime also adds it to the payload as ``id`` (unless the payload had one): that copy is
    removed, so the payload is what ``broadcast_session_event`` was given, as over PostgreSQL.
    """
    if not isinstance(message, dict):
        return None
    payload = message.get("payload")
    event = message.get("event")
    if not isinstance(payload, dict) or not isinstance(event, str):
        return None
    meta = message.get("meta")
    message_id = meta.get("id") if isinstance(meta, dict) else None
    if not isinstance(message_id, str | None):
        message_id = None
    if message_id is not None and payload.get("id") == message_id:
        payload = {k: v for k, v in payload.items() if k != "id"}
    return {
        "id": message_id,
        "session_id": session_id,
        "event": event,
        "payload": payload,
    }


def _listener_failure(client: AsyncRealtimeClient) -> str | None:
    """Why the client's listening task ended, if it did. It normally ends by erroring the
    channel (which the feed hears of), but an exception inside it (e.g. a warning turned
    into an error by ``-W error``) ends it silently: without this check the feed would wait
    for events forever. (``client.is_connected`` stays true then: the task is read by
    :func:`voicesessions._upstream.realtime_listener`.)"""
    task = realtime_listener(client)
    if task is None or not task.done():
        return None
    if task.cancelled():
        return "the listener was cancelled"
    error = task.exception()
    return "the listener stopped" if error is None else f"the listener failed: {error!r}"


def _is_refusal(detail: str) -> bool:
    text = detail.lower()
    return any(word in text for word in ("unauthorized", "forbidden", "permission", "denied"))


def _connection_error(exc: Exception) -> APIError:
    status = getattr(getattr(exc, "response", None), "status_code", None)
    if status in (401, 403):
        return PermissionDeniedError(f"Realtime refused the connection: {exc}", http_status=status)
    return TransientError(f"cannot connect to Realtime: {exc}")


# -- the sync face: the same feed, run on a private event loop --------------------------------


@contextlib.contextmanager
def session_feed(
    url: str, apikey: str, token: Callable[[], str | None], session_id: uuid.UUID
) -> Iterator[Iterator[dict[str, Any] | None]]:
    """:func:`async_session_feed` for the sync face: the feed runs on an event loop in a
    daemon thread; its events come through a queue. Leaving the context stops the thread."""
    handoff: queue.Queue[_Item] = queue.Queue()
    loop = asyncio.new_event_loop()
    stop = asyncio.Event()

    async def pump() -> None:
        try:
            async with async_session_feed(url, apikey, token, session_id) as feed:
                handoff.put(("ready", None))
                async for event in feed:
                    if stop.is_set():
                        return
                    if event is not None:
                        handoff.put(("event", event))
        except Exception as exc:
            handoff.put(("error", exc))

    def run() -> None:
        try:
            task = loop.create_task(pump())
            loop.run_until_complete(_until(task, stop))
        finally:
            loop.close()

    thread = threading.Thread(target=run, name=f"voicesessions-realtime-{session_id}", daemon=True)
    thread.start()
    try:
        kind, value = handoff.get()
        if kind == "error":
            raise value
        yield _handed_over(handoff)
    finally:
        with contextlib.suppress(RuntimeError):  # the loop may have ended already
            loop.call_soon_threadsafe(stop.set)
        thread.join()


async def _until(task: asyncio.Task[None], stop: asyncio.Event) -> None:
    waiter = asyncio.ensure_future(stop.wait())
    await asyncio.wait({task, waiter}, return_when=asyncio.FIRST_COMPLETED)
    for pending in (task, waiter):
        pending.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await pending


def _handed_over(handoff: queue.Queue[_Item]) -> Iterator[dict[str, Any] | None]:
    while True:
        try:
            kind, value = handoff.get(timeout=TICK_S)
        except queue.Empty:
            yield None
            continue
        if kind == "error":
            raise value
        yield value
