"""CallRecorder: one live call from a voice framework, stored as a session.

The adapters (:mod:`voicesessions.integrations.pipecat`, ``.livekit``) turn their
framework's events into four calls, all plain functions that return at once and never wait
for the database, so they are safe in a frame path or an event listener:

- :meth:`CallRecorder.final` (a final segment: stored, numbered ``seq`` 0, 1, 2... in the
  order the calls are made), :meth:`CallRecorder.interim` (broadcast to listeners, never
  stored), :meth:`CallRecorder.latency` (a latency sample), :meth:`CallRecorder.end`.

Between those calls and the database sits a bounded queue of ``max_pending`` segments,
drained by one background task into ``vs.updates.stream`` (which batches, broadcasts the
interims and is idempotent on ``(session_id, seq)``). When the queue is full an interim is
dropped (the oldest queued interim first, to make room for a final), and a final is never
dropped: it is queued beyond the bound (finals are the text of the call, which the
framework keeps in its own conversation context anyway). A final that the database did not
take (retries ran out, or it refused the batch) is reported: logged, counted, passed to
``on_unstored``, and listed in :attr:`CallResult.unstored`, with its ``seq``, so it can be
appended again (appends are idempotent).

At the end of the call the queue is drained, the latency summary and the call's facts are
merged into the session's ``audio_quality`` (keys ``"call"`` and ``"latency"``), and the
session is completed, which makes the database assemble the transcript and record the
``conversation_metrics`` analysis. The lifecycle of a session has one way out of
``active``: ``completed`` (the ``session_status`` transitions of the migrations); so a
cancelled call or one ended by an error is completed too, with what was said before it
ended, and ``audio_quality["call"]["end"]`` says how it ended: ``"completed"``,
``"cancelled"`` or ``"error"`` (see :class:`CallEnd`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from types import TracebackType
from typing import TYPE_CHECKING, Any

from voicesessions.errors import InvalidInputError, StreamError, VoiceSessionsError
from voicesessions.models import SegmentInput, SessionStatus, Speaker

if TYPE_CHECKING:
    from voicesessions._async.client import AsyncVoiceSessions
    from voicesessions._async.live import AsyncTranscriptStream

logger = logging.getLogger("voicesessions")

#: Segments waiting between the frame path and the database before interims are dropped.
DEFAULT_MAX_PENDING = 1000
#: The speakers of a training call (the default labels the conversation metrics use).
TRAINEE = Speaker.TRAINEE.value
BUYER = Speaker.BUYER.value

_MAX_MS = 2**31 - 1
_MAX_ERROR_TEXT = 500


class CallEnd(StrEnum):
    """How a call ended (``audio_quality["call"]["end"]``); the session is completed in
    every case, since ``completed`` is the lifecycle's only way out of ``active``."""

    COMPLETED = "completed"
    CANCELLED = "cancelled"
    ERROR = "error"


@dataclass
class CallResult:
    """What a call stored: counts, the session, and what could not be stored."""

    session_id: uuid.UUID | None
    end: CallEnd
    #: Final segments seen, stored now, and already stored before (a replay).
    finals: int = 0
    stored: int = 0
    duplicates: int = 0
    #: Interim segments broadcast, and dropped because the queue was full.
    interims_sent: int = 0
    interims_dropped: int = 0
    #: Final segments the database did not take, as SegmentInput fields, in seq order.
    unstored: list[dict[str, Any]] = field(default_factory=list)
    #: Whether the session was completed (its transcript and conversation metrics made).
    completed: bool = False
    #: The first error met while storing (None when everything went through).
    error: BaseException | None = None

    @property
    def ok(self) -> bool:
        """Every final stored and the session completed."""
        return self.completed and self.error is None and not self.unstored


class CallRecorder:
    """Stream one call into a session: the shared core of the framework adapters.

    Give ``session_id`` (an active session) or ``profile_id`` (and ``title``, ``metadata``):
    the session is then created when the first event arrives. ``framework`` is recorded in
    ``audio_quality["call"]``. ``max_pending`` bounds the queue (see the module docstring);
    ``max_batch`` and ``max_delay_s`` are the stream's (``vs.updates.stream``).
    ``on_unstored(segments)`` is called once, at the end, with the finals not stored.

    Usable on its own: ``async with CallRecorder(vs, profile_id=p) as call:`` then
    ``call.final(...)``; leaving the block ends the call (``cancelled`` when the block was
    cancelled, ``error`` on an exception).
    """

    def __init__(
        self,
        vs: AsyncVoiceSessions,
        *,
        session_id: uuid.UUID | str | None = None,
        profile_id: uuid.UUID | str | None = None,
        title: str = "Voice call",
        metadata: Mapping[str, Any] | None = None,
        framework: str | None = None,
        max_pending: int = DEFAULT_MAX_PENDING,
        max_batch: int = 50,
        max_delay_s: float = 0.2,
        on_unstored: Callable[[list[dict[str, Any]]], Any] | None = None,
    ) -> None:
        if (session_id is None) == (profile_id is None):
            raise InvalidInputError("give either session_id (an active session) or profile_id")
        if isinstance(max_pending, bool) or not isinstance(max_pending, int) or max_pending < 1:
            raise InvalidInputError("max_pending must be an integer >= 1")
        self._vs = vs
        self._session_id = None if session_id is None else _uuid(session_id, "session_id")
        self._profile_id = None if profile_id is None else _uuid(profile_id, "profile_id")
        self._title = title
        self._metadata = dict(metadata or {})
        self._max_pending = max_pending
        self._max_batch = max_batch
        self._max_delay_s = max_delay_s
        self._on_unstored = on_unstored
        self._facts: dict[str, Any] = {} if framework is None else {"framework": framework}
        self._latency: dict[str, list[float]] = {}  # name -> [count, sum, max] in seconds
        self._queue: deque[SegmentInput] = deque()
        self._queued_interims = 0
        self._over_bound_warned = False
        self._seq = 0
        self._t0 = time.monotonic()
        self._wake: asyncio.Event | None = None
        self._task: asyncio.Task[CallResult] | None = None
        self._end: CallEnd | None = None
        self._errors = 0
        self._last_error: str | None = None
        self._finals = 0
        self._interims_dropped = 0
        self._late: list[dict[str, Any]] = []  # finals not queued: reported at the end
        self._broken = False  # storing failed: finals go to _late until the end

    # -- the call's clock ---------------------------------------------------------------

    def start_clock(self, at: float | None = None) -> None:
        """Set the call's time zero to ``at`` (a ``time.monotonic()`` reading; now if
        None). It is the recorder's creation until then."""
        self._t0 = time.monotonic() if at is None else at

    def clock_ms(self, at: float | None = None) -> int:
        """``at`` (a ``time.monotonic()`` reading; now if None) on the call's clock, in ms."""
        moment = time.monotonic() if at is None else at
        return _ms((moment - self._t0) * 1000)

    @property
    def session_id(self) -> uuid.UUID | None:
        """The session (None until it has been created)."""
        return self._session_id

    @property
    def next_seq(self) -> int:
        """The ``seq`` the next final segment gets."""
        return self._seq

    # -- the frame path: never waits -----------------------------------------------------

    def final(
        self,
        speaker: str,
        text: str,
        start_ms: float,
        end_ms: float,
        *,
        confidence: float | None = None,
        segment_id: str | None = None,
    ) -> int | None:
        """Queue a final segment and return its ``seq`` (None for empty text). Times are
        milliseconds on the call's clock; a negative one counts as 0, an end before the
        start as the start."""
        text = _clean(text)
        if not text:
            return None
        seq = self._seq
        self._seq += 1
        self._finals += 1
        fields = _fields(seq, speaker, text, start_ms, end_ms, segment_id)
        if confidence is not None and 0 <= confidence <= 1:
            fields["confidence"] = float(confidence)
        if self._end is not None or self._broken:
            if self._end is not None:
                logger.error("call of session %s: final segment %d after the end", self._sid(), seq)
            self._late.append(fields)
            return seq
        try:
            segment = SegmentInput.model_validate(fields)
        except ValueError as exc:  # pydantic's ValidationError is a ValueError
            logger.error("call of session %s: final segment %d refused: %s", self._sid(), seq, exc)
            self._late.append(fields)
            self._note_error(exc)
            return seq
        if len(self._queue) >= self._max_pending:
            if self._queued_interims:
                self._drop_oldest_interim()
            elif not self._over_bound_warned:
                self._over_bound_warned = True
                logger.warning(
                    "call of session %s: the database is slower than the call; %d segments"
                    " queued (final segments are kept)",
                    self._sid(),
                    len(self._queue),
                )
        self._push(segment)
        return seq

    def interim(
        self,
        speaker: str,
        text: str,
        start_ms: float,
        end_ms: float,
        *,
        segment_id: str | None = None,
    ) -> None:
        """Queue an interim segment: broadcast to the session's listeners, never stored.
        Dropped when the queue is full or the call has ended."""
        text = _clean(text)
        if not text or self._end is not None or self._broken:
            return
        if len(self._queue) >= self._max_pending:
            self._interims_dropped += 1
            return
        fields = _fields(self._seq, speaker, text, start_ms, end_ms, segment_id)
        try:
            segment = SegmentInput.model_validate({**fields, "is_final": False})
        except ValueError:
            self._interims_dropped += 1
            return
        self._queued_interims += 1
        self._push(segment)

    def latency(self, name: str, seconds: float | None) -> None:
        """Add a latency sample (seconds) to the call's summary: count, mean and max per
        name, merged into ``audio_quality["latency"]`` at the end, in milliseconds."""
        if seconds is None or not isinstance(seconds, (int, float)) or not seconds >= 0:
            return
        entry = self._latency.setdefault(name, [0, 0.0, 0.0])
        entry[0] += 1
        entry[1] += float(seconds)
        entry[2] = max(entry[2], float(seconds))

    def start(self) -> None:
        """Start the background task now (creating the session, when it is to be created)
        rather than at the first event. Call it inside the running event loop."""
        self._ensure_task()

    def note(self, **facts: Any) -> None:
        """Record facts about the call in ``audio_quality["call"]`` (merged at the end)."""
        self._facts.update(facts)

    def error(self, error: BaseException | str) -> None:
        """Count an error the framework reported without ending the call."""
        self._note_error(error)

    def end(self, how: CallEnd | str = CallEnd.COMPLETED, error: Any = None) -> None:
        """End the call: what is queued is stored, then the session is completed. Returns
        at once; :meth:`result` waits. The first end counts; later ones change nothing."""
        if error is not None:
            self._note_error(error)
        if self._end is not None:
            return
        self._end = CallEnd(how)
        self._ensure_task()
        assert self._wake is not None
        self._wake.set()

    # -- waiting -------------------------------------------------------------------------

    async def result(self) -> CallResult:
        """Wait until the call has ended and everything is stored; what happened."""
        if self._task is None:
            self._ensure_task()
        assert self._task is not None
        return await asyncio.shield(self._task)

    async def aclose(self, how: CallEnd | str = CallEnd.COMPLETED) -> CallResult:
        """End the call (if not yet ended) and wait for :meth:`result`."""
        self.end(how)
        return await self.result()

    async def __aenter__(self) -> CallRecorder:
        self._ensure_task()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if exc_type is None:
            how = CallEnd.COMPLETED
        elif issubclass(exc_type, asyncio.CancelledError):
            how = CallEnd.CANCELLED
        else:
            how = CallEnd.ERROR
        self.end(how, exc if how is CallEnd.ERROR else None)
        await self.result()

    # -- inside ----------------------------------------------------------------------------

    def _sid(self) -> str:
        return "(not created yet)" if self._session_id is None else str(self._session_id)

    def _note_error(self, error: Any) -> None:
        self._errors += 1
        self._last_error = _clean(str(error))[:_MAX_ERROR_TEXT] or type(error).__name__

    def _push(self, segment: SegmentInput) -> None:
        self._queue.append(segment)
        self._ensure_task()
        assert self._wake is not None
        self._wake.set()

    def _drop_oldest_interim(self) -> None:
        for index, queued in enumerate(self._queue):
            if not queued.is_final:
                del self._queue[index]
                self._queued_interims -= 1
                self._interims_dropped += 1
                return

    def _ensure_task(self) -> None:
        if self._task is None:
            self._wake = asyncio.Event()
            self._task = asyncio.get_running_loop().create_task(
                self._run(), name=f"voicesessions-call-{self._sid()}"
            )

    async def _run(self) -> CallResult:
        assert self._wake is not None
        error: BaseException | None = None
        unstored: list[SegmentInput] = []
        stream: AsyncTranscriptStream | None = None
        current: SegmentInput | None = None
        try:
            if self._session_id is None:
                assert self._profile_id is not None
                session = await self._vs.sessions.create(
                    self._profile_id, self._title, **self._metadata
                )
                self._session_id = session.id
            stream = self._vs.updates.stream(
                self._session_id,
                max_batch=self._max_batch,
                max_delay_s=self._max_delay_s,
                max_buffer=self._max_batch,
            )
            await stream.__aenter__()
            while True:
                while self._queue:
                    current = self._queue.popleft()
                    if not current.is_final:
                        self._queued_interims -= 1
                    await stream.add(current)  # waits while the stream holds a batch
                    current = None
                if self._end is not None:
                    break
                self._wake.clear()
                await self._wake.wait()
            await stream.aclose()
        except StreamError as exc:
            error = exc.__cause__ if isinstance(exc.__cause__, BaseException) else exc
            unstored = [s for s in exc.pending if isinstance(s, SegmentInput)]
        except Exception as exc:  # the session could not be created, or the stream opened
            error = exc
        if error is not None:
            logger.error("call of session %s: storing failed: %s", self._sid(), error)
            if current is not None:
                unstored.append(current)
            unstored.extend(self._queue)
            self._queue.clear()
            self._broken = True
            if stream is not None:
                with contextlib.suppress(VoiceSessionsError):
                    await stream.aclose()
            while self._end is None:  # the call goes on: count what it says until it ends
                self._wake.clear()
                await self._wake.wait()
        stats = None if stream is None else stream.stats
        end = self._end or CallEnd.COMPLETED
        lost = [s.stored() for s in unstored if s.is_final] + self._late
        lost.sort(key=lambda s: int(s["seq"]))
        result = CallResult(
            session_id=self._session_id,
            end=end,
            finals=self._finals,
            stored=0 if stats is None else stats.inserted,
            duplicates=0 if stats is None else stats.duplicates,
            interims_sent=0 if stats is None else stats.interim,
            interims_dropped=self._interims_dropped,
            unstored=lost,
            error=error,
        )
        if self._session_id is not None:
            try:
                await self._vs.updates.update_audio_metrics(
                    self._session_id, self._audio_quality(result)
                )
                await self._vs.updates.update_session_status(
                    self._session_id, SessionStatus.COMPLETED
                )
                result.completed = True
            except Exception as exc:
                logger.error("call of session %s: completing failed: %s", self._sid(), exc)
                result.error = result.error or exc
        if lost:
            logger.error(
                "call of session %s: %d final segment(s) not stored (seq %s)",
                self._sid(),
                len(lost),
                ", ".join(str(s["seq"]) for s in lost[:20]),
            )
            if self._on_unstored is not None:
                try:
                    self._on_unstored(list(lost))
                except Exception:
                    logger.exception("on_unstored callback failed")
        return result

    def _audio_quality(self, result: CallResult) -> dict[str, Any]:
        call: dict[str, Any] = {
            **self._facts,
            "end": result.end.value,
            "finals": result.finals,
            "finals_unstored": len(result.unstored),
            "interims_dropped": result.interims_dropped,
            "errors": self._errors,
        }
        if self._last_error is not None:
            call["last_error"] = self._last_error
        latency = {
            name: {
                "count": int(count),
                "mean_ms": round(total / count * 1000, 1),
                "max_ms": round(most * 1000, 1),
            }
            for name, (count, total, most) in sorted(self._latency.items())
        }
        return {"call": call, "latency": latency} if latency else {"call": call}


def _uuid(value: uuid.UUID | str, name: str) -> uuid.UUID:
    try:
        return value if isinstance(value, uuid.UUID) else uuid.UUID(str(value))
    except ValueError:
        raise InvalidInputError(f"{name} must be a UUID, not {value!r}") from None


def _ms(value: float) -> int:
    if value != value:  # NaN
        return 0
    return max(0, min(_MAX_MS, round(value)))


def _clean(text: str) -> str:
    return str(text).replace("\x00", "").strip()


def _fields(
    seq: int, speaker: str, text: str, start_ms: float, end_ms: float, segment_id: str | None
) -> dict[str, Any]:
    start = _ms(start_ms)
    fields: dict[str, Any] = {
        "seq": seq,
        "speaker": speaker,
        "text": text,
        "start_ms": start,
        "end_ms": max(start, _ms(end_ms)),
    }
    if segment_id:
        fields["segment_id"] = segment_id
    return fields
