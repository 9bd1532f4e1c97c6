"""Live views of one session: its event feed (an iterator, or a callback in the background)
and a batching transcript writer. ``vs.updates.events()``, ``.subscribe()`` and
``.stream()`` build them; see :class:`AsyncSessionUpdateManager`.

Both faces share this code: what differs between an asyncio task and a thread is in
:mod:`voicesessions._concurrency`.
"""

from __future__ import annotations

import contextlib
import logging
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping
from types import TracebackType
from typing import Any

from voicesessions._arguments import checked_arguments
from voicesessions._async.backends.base import AsyncBackend
from voicesessions._concurrency import AsyncCondition, AsyncWorker, async_resolve
from voicesessions._retry_policy import RetryPolicy
from voicesessions._validation import validate_mapping
from voicesessions.errors import ConfigurationError, StreamError, TransientError
from voicesessions.models import AppendResult, SegmentInput, SessionEvent, StreamStats

from .retry import call_with_retry

logger = logging.getLogger("voicesessions")

#: How patiently a lost event feed is reconnected: about a minute of attempts.
DEFAULT_RECONNECT_POLICY = RetryPolicy(max_attempts=15, initial_backoff_s=0.2, max_backoff_s=5.0)
#: How patiently a stream retries a batch: about half a minute of attempts.
DEFAULT_STREAM_RETRY_POLICY = RetryPolicy(max_attempts=10, initial_backoff_s=0.1, max_backoff_s=4.0)
#: Segments sent in one database call by a stream, unless configured otherwise.
DEFAULT_MAX_BATCH = 50
#: Longest a segment waits in a stream before its batch is sent, in seconds.
DEFAULT_MAX_DELAY_S = 0.2
#: Segments a stream holds before ``add`` waits for the database (back-pressure).
DEFAULT_MAX_BUFFER = 1000

#: Event names the SDK adds to a feed itself (``kind="control"``; the database refuses them).
EVENT_RECONNECTED = "reconnected"
EVENT_FAILED = "failed"

SessionCallback = Callable[[SessionEvent], Any]


@checked_arguments
class AsyncSessionEvents:
    """The live events of one session: ``async with`` it, then ``async for`` over it.

    Entering checks that the caller can see the session (SessionNotFound otherwise) and
    starts listening: every event sent after that is received, in order. A lost connection is
    reconnected per ``reconnect`` (a :class:`RetryPolicy`); the iterator then yields a
    ``"reconnected"`` event, because events sent while it was down are missed. When
    reconnecting gives up, iteration raises the :class:`~voicesessions.errors.TransientError`.
    """

    def __init__(
        self,
        backend: AsyncBackend,
        check_access: Callable[[], Awaitable[object]],
        session_id: uuid.UUID,
        *,
        reconnect: RetryPolicy = DEFAULT_RECONNECT_POLICY,
    ) -> None:
        self._backend = backend
        self._check_access = check_access
        self.session_id = session_id
        self._reconnect_policy = reconnect
        self._connection: contextlib.AbstractAsyncContextManager[Any] | None = None
        self._feed: AsyncIterator[dict[str, Any] | None] | None = None
        self._queued: list[SessionEvent] = []
        self._stopped = False

    async def __aenter__(self) -> AsyncSessionEvents:
        await self._check_access()
        await self._connect()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    def __aiter__(self) -> AsyncSessionEvents:
        return self

    async def __anext__(self) -> SessionEvent:
        event = await self.get()
        if event is None:
            raise StopAsyncIteration
        return event

    async def get(self, timeout: float | None = None) -> SessionEvent | None:  # noqa: ASYNC109
        """The next event; ``None`` once the feed is stopped or closed, or when no event came
        within ``timeout`` seconds (checked about once a second; ``None``: wait on)."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            if self._stopped:
                return None
            if self._queued:
                return self._queued.pop(0)
            if self._feed is None:
                return None  # closed
            try:
                raw = await self._feed.__anext__()
            except (TransientError, StopAsyncIteration) as exc:
                if self._stopped:
                    return None
                await self._reconnect(exc)
                continue
            if isinstance(raw, Mapping):
                return _event(self.session_id, raw)
            if deadline is not None and time.monotonic() >= deadline:
                return None

    def stop(self) -> None:
        """Make iteration end (within about a second); safe to call from another thread."""
        self._stopped = True

    async def aclose(self) -> None:
        """Stop listening and disconnect. Idempotent."""
        self._stopped = True
        await self._disconnect()

    async def _connect(self) -> None:
        connection = self._backend.session_events(self.session_id)
        self._feed = await connection.__aenter__()
        self._connection = connection

    async def _disconnect(self) -> None:
        connection, self._connection, self._feed = self._connection, None, None
        if connection is not None:
            await connection.__aexit__(None, None, None)

    async def _reconnect(self, error: BaseException) -> None:
        reason = str(error) or "the event feed ended"
        logger.warning("event feed of session %s lost (%s); reconnecting", self.session_id, reason)
        with contextlib.suppress(Exception):
            await self._disconnect()
        attempts = 0

        async def attempt() -> None:
            nonlocal attempts
            attempts += 1
            await self._connect()

        await call_with_retry(self._reconnect_policy, attempt, idempotent=True)
        logger.warning(
            "event feed of session %s reconnected after %d attempt(s); events sent meanwhile"
            " were missed",
            self.session_id,
            attempts,
        )
        self._queued.append(
            SessionEvent(
                session_id=self.session_id,
                event=EVENT_RECONNECTED,
                payload={"attempts": attempts, "error": reason},
                kind="control",
            )
        )


class AsyncSubscription:
    """A callback receiving a session's events in the background (an asyncio task; a thread
    on the sync face). Stop it with :meth:`aclose` or ``async with``.

    The callback gets every :class:`SessionEvent` (a coroutine function is awaited on the
    async face). An exception it raises is logged and the next event still delivered. If
    reconnecting gives up, the callback gets a final ``"failed"`` event and :attr:`error`
    holds the error.
    """

    def __init__(self, events: AsyncSessionEvents, callback: SessionCallback) -> None:
        self._events = events
        self._callback = callback
        self._worker = AsyncWorker(
            self._run, name=f"voicesessions-subscription-{events.session_id}"
        )
        self.error: BaseException | None = None
        self._running = False

    @property
    def session_id(self) -> uuid.UUID:
        return self._events.session_id

    @property
    def active(self) -> bool:
        """True until the subscription is closed or has failed."""
        return self._running

    async def start(self) -> AsyncSubscription:
        await self._events.__aenter__()
        self._running = True
        self._worker.start()
        return self

    async def aclose(self) -> None:
        """Stop delivering events and disconnect. Idempotent."""
        self._events.stop()
        self._worker.cancel()
        await self._worker.join()
        await self._events.aclose()
        self._running = False

    async def __aenter__(self) -> AsyncSubscription:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def _run(self) -> None:
        try:
            async for event in self._events:
                await self._deliver(event)
        except TransientError as exc:
            self.error = exc
            logger.error("event feed of session %s failed: %s", self.session_id, exc)
            await self._deliver(
                SessionEvent(
                    session_id=self.session_id,
                    event=EVENT_FAILED,
                    payload={"error": str(exc)},
                    kind="control",
                )
            )
        finally:
            self._running = False
            await self._events.aclose()

    async def _deliver(self, event: SessionEvent) -> None:
        try:
            await async_resolve(self._callback(event))
        except Exception:
            logger.exception("subscription callback failed on %s event", event.event)


@checked_arguments
class AsyncTranscriptStream:
    """Batch transcript segments into few database calls: ``async with`` it, ``await
    s.add(segment)``.

    A batch is sent when ``max_batch`` segments are waiting, when the oldest has waited
    ``max_delay_s`` seconds, on :meth:`flush` and when the stream closes; one batch is in
    flight at a time, in the order added. ``add`` waits while ``max_buffer`` segments are
    unsent (back-pressure: a slow database slows the producer instead of filling memory).
    A batch that fails transiently is retried per ``retry`` (appends are idempotent on
    ``seq``, so a batch that did commit before the connection dropped is not stored twice).
    When retries run out, or the database refuses a batch (e.g. the session has ended), the
    stream fails: every later call raises :class:`~voicesessions.errors.StreamError` with
    the unsent segments in ``pending``, and so does leaving the ``async with`` block.
    """

    def __init__(
        self,
        write: Callable[[list[SegmentInput]], Awaitable[AppendResult]],
        session_id: uuid.UUID,
        *,
        max_batch: int = DEFAULT_MAX_BATCH,
        max_delay_s: float = DEFAULT_MAX_DELAY_S,
        max_buffer: int = DEFAULT_MAX_BUFFER,
    ) -> None:
        if isinstance(max_batch, bool) or not isinstance(max_batch, int) or max_batch < 1:
            raise ConfigurationError("max_batch must be an integer >= 1")
        if (
            isinstance(max_buffer, bool)
            or not isinstance(max_buffer, int)
            or max_buffer < max_batch
        ):
            raise ConfigurationError("max_buffer must be an integer >= max_batch")
        if (
            isinstance(max_delay_s, bool)
            or not isinstance(max_delay_s, (int, float))
            or not max_delay_s > 0
        ):
            raise ConfigurationError("max_delay_s must be a positive number of seconds")
        self.session_id = session_id
        self._write = write
        self._max_batch = max_batch
        self._max_delay_s = float(max_delay_s)
        self._max_buffer = max_buffer
        self._condition = AsyncCondition()
        self._buffer: list[tuple[float, SegmentInput]] = []  # (time added, segment)
        self._flush_wanted = False
        self._closing = False
        self._started = False
        self._error: BaseException | None = None
        self._counts = {"added": 0, "inserted": 0, "duplicates": 0, "interim": 0, "batches": 0}
        self._worker = AsyncWorker(self._run, name=f"voicesessions-stream-{session_id}")

    async def __aenter__(self) -> AsyncTranscriptStream:
        if self._started:
            raise StreamError("a stream can be entered only once")
        self._started = True
        self._worker.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    @property
    def stats(self) -> StreamStats:
        """Counts so far: segments added, stored, already stored, interim, batches, unsent."""
        return StreamStats(**self._counts, pending=len(self._buffer))

    async def add(self, segment: SegmentInput | Mapping[str, Any]) -> None:
        """Queue one segment (validated now: InvalidInputError before any I/O); waits while
        the buffer is full."""
        await self._queue([validate_mapping(SegmentInput, segment, "segment")])

    async def add_many(self, segments: Iterable[SegmentInput | Mapping[str, Any]]) -> None:
        """Queue several segments, all validated before any is queued."""
        await self._queue([validate_mapping(SegmentInput, s, "segment") for s in segments])

    async def _queue(self, parsed: list[SegmentInput]) -> None:
        for segment in parsed:
            async with self._condition:
                while True:
                    self._check_usable()
                    if len(self._buffer) < self._max_buffer:
                        break
                    await self._condition.wait()
                self._buffer.append((time.monotonic(), segment))
                self._counts["added"] += 1
                # Only the sender cares that the buffer grew, and only when it must start
                # timing a batch (the first segment) or send one (a full batch): waking it
                # for every segment would cost a context switch per segment.
                if len(self._buffer) == 1 or len(self._buffer) >= self._max_batch:
                    self._condition.notify_all()

    async def flush(self) -> None:
        """Send everything queued now and wait until it is stored (StreamError if it fails)."""
        async with self._condition:
            self._check_usable()
            self._flush_wanted = True
            self._condition.notify_all()
            while self._buffer and self._error is None:
                await self._condition.wait()
            self._raise_if_failed()

    async def aclose(self) -> None:
        """Send what is queued, stop, and raise StreamError if anything could not be stored.
        Idempotent."""
        async with self._condition:
            self._closing = True
            self._condition.notify_all()
        await self._worker.join()
        async with self._condition:
            self._raise_if_failed()

    def _check_usable(self) -> None:
        self._raise_if_failed()
        if not self._started:
            raise StreamError("use the stream inside `async with` / `with`")
        if self._closing:
            raise StreamError("the stream is closed")

    def _raise_if_failed(self) -> None:
        if self._error is not None:
            pending = [segment for _, segment in self._buffer]
            raise StreamError(
                f"the stream of session {self.session_id} failed, {len(pending)} segment(s)"
                f" not stored: {self._error}",
                pending=pending,
            ) from self._error

    async def _run(self) -> None:
        while True:
            async with self._condition:
                while True:
                    if not self._buffer:
                        self._flush_wanted = False
                        if self._closing:
                            return
                        await self._condition.wait()
                        continue
                    due = self._buffer[0][0] + self._max_delay_s
                    now = time.monotonic()
                    if (
                        len(self._buffer) >= self._max_batch
                        or self._closing
                        or self._flush_wanted
                        or now >= due
                    ):
                        break
                    await self._condition.wait(due - now)
                batch = [segment for _, segment in self._buffer[: self._max_batch]]
            try:
                result = await self._write(_without_superseded(batch))
            except Exception as exc:
                async with self._condition:
                    self._error = exc
                    self._condition.notify_all()
                logger.error("stream of session %s failed: %s", self.session_id, exc)
                return
            async with self._condition:
                del self._buffer[: len(batch)]
                self._counts["inserted"] += result.inserted
                self._counts["duplicates"] += result.duplicates
                self._counts["interim"] += result.interim
                self._counts["batches"] += 1
                self._condition.notify_all()


def _without_superseded(batch: list[SegmentInput]) -> list[SegmentInput]:
    """The batch without interim segments that a final one in it replaces (same segment_id):
    listeners would only see them flash by."""
    finals = {s.segment_id for s in batch if s.is_final and s.segment_id is not None}
    return [s for s in batch if s.is_final or s.segment_id is None or s.segment_id not in finals]


def _event(session_id: uuid.UUID, raw: Mapping[str, Any]) -> SessionEvent:
    """A backend's raw event as a SessionEvent, whatever its shape: only values of the
    expected types are kept (a payload that is not an object becomes ``None``)."""
    by_reference = raw.get("ref") is True
    payload = raw.get("payload")
    size = raw.get("bytes")
    event = raw.get("event")
    event_id = raw.get("id")
    return SessionEvent(
        session_id=session_id,
        event=event if isinstance(event, str) else "",
        payload=None if by_reference or not isinstance(payload, dict) else payload,
        by_reference=by_reference,
        bytes=size if isinstance(size, int) and not isinstance(size, bool) else None,
        id=None if event_id is None else str(event_id),
        kind="event",
    )
