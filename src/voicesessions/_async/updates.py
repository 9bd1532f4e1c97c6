"""SessionUpdateManager: live transcript chunks, audio metrics and status changes.

A chunk of transcript segments is one database call and one transaction
(``public.append_transcript_segments`` with its ``interim`` argument): its final segments
are stored as rows, idempotent on ``(session_id, seq)`` (a replayed batch stores nothing
twice, so every write here is safe to retry), and the database itself broadcasts the chunk,
finals and interims, so each segment is sent once. Audio metrics are merged into
``sessions.audio_quality`` by the database in one statement, so concurrent updates of
different keys all survive. Every other update is then broadcast on the session's topic
(``public.broadcast_session_event``). Broadcasts go to Supabase Realtime where it exists,
and to ``NOTIFY`` always.

Reading side: :meth:`~AsyncSessionUpdateManager.events` (an iterator) and
:meth:`~AsyncSessionUpdateManager.subscribe` (a callback) deliver a session's events,
whoever wrote them; :meth:`~AsyncSessionUpdateManager.stream` batches segments for a
producer that emits them one by one.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from voicesessions._arguments import checked_arguments
from voicesessions._async.backends.base import AsyncBackend
from voicesessions._async.live import (
    AsyncSessionEvents,
    AsyncSubscription,
    AsyncTranscriptStream,
)
from voicesessions._async.repository import AsyncSessionRepository
from voicesessions._events import check_event_payload, transcript_events
from voicesessions._query import Json
from voicesessions._retry_policy import RetryPolicy
from voicesessions._validation import as_uuid, reading, validate_mapping
from voicesessions._values import MAX_AUDIO_QUALITY_BYTES, check_json, segment_problems
from voicesessions._values import MAX_SEGMENTS_PER_CALL as MAX_SEGMENTS_PER_CALL
from voicesessions.errors import InvalidInputError
from voicesessions.models import (
    AppendResult,
    SegmentInput,
    Session,
    SessionEvent,
    SessionStatus,
    SessionUpdate,
    UpdateType,
)

from .live import (
    DEFAULT_MAX_BATCH,
    DEFAULT_MAX_BUFFER,
    DEFAULT_MAX_DELAY_S,
    DEFAULT_RECONNECT_POLICY,
    DEFAULT_STREAM_RETRY_POLICY,
)
from .resource import Resource

#: Event names on the session topic.
EVENT_TRANSCRIPT = "transcript"
EVENT_AUDIO_METRICS = "audio_metrics"
EVENT_STATUS = "status"


@checked_arguments
class AsyncSessionUpdateManager(Resource):
    """Write live updates of a session and fan them out to its listeners."""

    def __init__(
        self, backend: AsyncBackend, retry: RetryPolicy, sessions: AsyncSessionRepository
    ) -> None:
        super().__init__(backend, retry)
        self._sessions = sessions

    async def handle_realtime_update(self, update: SessionUpdate | Mapping[str, Any]) -> Any:
        """Apply one update (by its type) and return what the specific method returns.

        The specific methods broadcast the update themselves, so listeners hear of it once.
        """
        update = validate_mapping(SessionUpdate, update, "update")
        if update.update_type is UpdateType.TRANSCRIPT_CHUNK:
            segments = update.data if isinstance(update.data, list) else [update.data]
            return await self.append_transcript_chunk(update.session_id, segments)
        if update.update_type is UpdateType.AUDIO_METRICS:
            if not isinstance(update.data, Mapping):
                raise InvalidInputError("audio_metrics data must be an object")
            return await self.update_audio_metrics(update.session_id, update.data)
        status = update.data.get("status") if isinstance(update.data, Mapping) else update.data
        if not isinstance(status, str):
            raise InvalidInputError("status_change data must be a status or {'status': ...}")
        return await self.update_session_status(update.session_id, status)

    async def append_transcript_chunk(
        self,
        session_id: uuid.UUID | str,
        segments: Iterable[SegmentInput | Mapping[str, Any]],
    ) -> AppendResult:
        """Store the final segments (idempotent on their ``seq``) and broadcast all of them.

        Interim segments are broadcast only. All or nothing: the whole chunk is validated
        before any I/O (InvalidInputError naming ``segments[i]`` and the field: everything
        the database would refuse, such as a NUL character, a number out of range or
        malformed ``words``, and that it can be broadcast: see :mod:`voicesessions._events`),
        and then goes to the database in one call and one transaction
        (``public.append_transcript_segments`` with ``interim``), so at most
        :data:`MAX_SEGMENTS_PER_CALL` (1,000) finals and 8 MiB of JSON per chunk. The
        database stores the finals and broadcasts the segments as one ``transcript`` event,
        or as several in order when one would exceed 200 KB: each segment is sent once.
        """
        sid = as_uuid(session_id, "session_id")
        parsed = [
            validate_mapping(SegmentInput, s, f"segments[{index}]")
            for index, s in enumerate(segments)
        ]
        if not parsed:
            return AppendResult(inserted=0, duplicates=0, interim=0)
        batch = [s.stored() for s in parsed if s.is_final]
        problem = segment_problems(batch)
        if problem is not None:
            raise InvalidInputError(problem)
        interim = [s.model_dump(mode="json") for s in parsed if not s.is_final]
        if interim:
            # A final segment always fits in an event (its fields are capped far below the
            # event limits); an interim is checked as the database will check its event.
            transcript_events([], interim)
        inserted, duplicates = await self._append(sid, batch, interim)
        return AppendResult(inserted=inserted, duplicates=duplicates, interim=len(interim))

    async def update_audio_metrics(
        self, session_id: uuid.UUID | str, metrics: Mapping[str, Any]
    ) -> dict[str, Any]:
        """Merge ``metrics`` into the session's ``audio_quality`` (atomic in the database) and
        broadcast them; returns the merged ``audio_quality``."""
        sid = as_uuid(session_id, "session_id")
        if not isinstance(metrics, Mapping) or not metrics:
            raise InvalidInputError("metrics must be a non-empty object")
        values = check_json(dict(metrics), "metrics", max_bytes=MAX_AUDIO_QUALITY_BYTES)
        check_event_payload(values, "metrics")
        params = {"session_id": sid, "metrics": values}
        merged = await self._session_call(
            sid, lambda: self._backend.rpc("update_audio_metrics", params)
        )
        await self._broadcast(sid, EVENT_AUDIO_METRICS, values)
        with reading("update_audio_metrics"):
            return dict(merged)

    async def update_session_status(
        self, session_id: uuid.UUID | str, status: SessionStatus | str
    ) -> Session:
        """Move the session along its lifecycle (the database's rules) and broadcast it.
        Completing a session assembles its transcript in the same transaction."""
        session = await self._sessions.update_status(session_id, status)
        await self._broadcast(
            session.id,
            EVENT_STATUS,
            {"status": session.status.value, "ended_at": _iso(session.ended_at)},
        )
        return session

    async def broadcast_update(self, update: SessionUpdate | Mapping[str, Any]) -> None:
        """Send an update to the listeners of its session without storing anything."""
        update = validate_mapping(SessionUpdate, update, "update")
        payload = {"data": update.data, "timestamp": update.timestamp.isoformat()}
        check_event_payload(payload, "the update (its data within {data, timestamp})")
        await self._broadcast(update.session_id, update.update_type.value, payload)

    def events(
        self,
        session_id: uuid.UUID | str,
        *,
        reconnect: RetryPolicy = DEFAULT_RECONNECT_POLICY,
    ) -> AsyncSessionEvents:
        """The live events of a session, whoever writes them::

            async with vs.updates.events(session_id) as events:
                async for event in events:
                    ...

        Entering checks the caller can see the session (SessionNotFound: e.g. another
        company's session) and starts listening. A dropped connection is reconnected per
        ``reconnect`` and announced by a ``"reconnected"`` event (events sent while it was
        down are missed: re-read the state). See :class:`SessionEvent` for the events.

        Over Supabase the events come from Realtime Broadcast on the private channel
        ``session:<id>``, authorized by RLS for the identity. Over PostgreSQL they come from
        ``LISTEN`` (NOTIFY has no per-listener authorization: the visibility check above is
        the SDK's, so hand a PostgreSQL DSN only to trusted server-side code).
        """
        sid = as_uuid(session_id, "session_id")
        return AsyncSessionEvents(
            self._backend, lambda: self._sessions.get(sid), sid, reconnect=reconnect
        )

    async def subscribe(
        self,
        session_id: uuid.UUID | str,
        callback: Callable[[SessionEvent], Any],
        *,
        reconnect: RetryPolicy = DEFAULT_RECONNECT_POLICY,
    ) -> AsyncSubscription:
        """Call ``callback(event)`` for every live event of the session, in the background,
        until the returned subscription is closed (``await sub.aclose()`` or ``async with``).
        Listening has started when this returns. Same events, checks and reconnection as
        :meth:`events`; on the sync face the callback runs in a thread of its own.
        """
        return await AsyncSubscription(
            self.events(session_id, reconnect=reconnect), callback
        ).start()

    def stream(
        self,
        session_id: uuid.UUID | str,
        *,
        max_batch: int = DEFAULT_MAX_BATCH,
        max_delay_s: float = DEFAULT_MAX_DELAY_S,
        max_buffer: int = DEFAULT_MAX_BUFFER,
        retry: RetryPolicy = DEFAULT_STREAM_RETRY_POLICY,
    ) -> AsyncTranscriptStream:
        """A batching writer of the session's segments::

            async with vs.updates.stream(session_id) as s:
                await s.add(segment)          # returns at once unless the buffer is full

        Batches of up to ``max_batch`` segments (at most :data:`MAX_SEGMENTS_PER_CALL`) go
        out when full, after ``max_delay_s``, on ``flush()`` and on exit, each through
        :meth:`append_transcript_chunk` (so finals are stored once, interims broadcast).
        Transient failures are retried per ``retry``; see :class:`AsyncTranscriptStream` for
        back-pressure and what happens when retries run out.
        """
        sid = as_uuid(session_id, "session_id")
        if isinstance(max_batch, int) and max_batch > MAX_SEGMENTS_PER_CALL:
            raise InvalidInputError(f"max_batch must be at most {MAX_SEGMENTS_PER_CALL}")
        patient = AsyncSessionUpdateManager(self._backend, retry, self._sessions)
        return AsyncTranscriptStream(
            lambda batch: patient.append_transcript_chunk(sid, batch),
            sid,
            max_batch=max_batch,
            max_delay_s=max_delay_s,
            max_buffer=max_buffer,
        )

    async def _append(
        self, session_id: uuid.UUID, batch: list[dict[str, Any]], interim: list[dict[str, Any]]
    ) -> tuple[int, int]:
        # Idempotent on (session_id, seq): a retried chunk stores nothing twice (its broadcast
        # may reach listeners twice: events carry their content, same seq / segment_id).
        # Both lists were built here from validated models: plain JSON, not walked again.
        params = {"session_id": session_id, "segments": Json(batch), "interim": Json(interim)}
        result = await self._session_call(
            session_id, lambda: self._backend.rpc("append_transcript_segments", params)
        )
        with reading("append_transcript_segments"):
            return int(result["inserted"]), int(result["duplicates"])

    async def _broadcast(self, session_id: uuid.UUID, event: str, payload: Any) -> None:
        # A broadcast may reach listeners twice when retried; events carry their content, so
        # a listener that sees a segment twice can tell (same seq / segment_id).
        params = {"session_id": session_id, "event": event, "payload": payload}
        await self._session_call(
            session_id, lambda: self._backend.rpc("broadcast_session_event", params)
        )


def _iso(value: Any) -> str | None:
    return None if value is None else value.isoformat()
