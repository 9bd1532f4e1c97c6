"""Pipecat: store a running pipeline's call as a session (extra: `voicesessions[pipecat]`).

    from voicesessions.integrations.pipecat import SessionObserver
    recorder = SessionObserver(vs, profile_id=trainee_id, title="Renewal call")
    worker = PipelineWorker(pipeline, observers=[recorder])
    await WorkerRunner().add_workers(worker); ...           # run the pipeline as usual
    result = await recorder.result()                        # stored, session completed

An observer (Pipecat's ``BaseObserver``, told of each frame once), so it sees both sides
wherever it is attached: the trainee's speech from ``TranscriptionFrame`` (final, stored)
and ``InterimTranscriptionFrame`` (broadcast only), the AI buyer's spoken words from
``TTSTextFrame`` (what was said, not what the LLM generated), one segment per bot turn
(``BotStartedSpeakingFrame`` to ``BotStoppedSpeakingFrame``; an interrupted turn keeps the
words spoken). Times are on the pipeline's clock (0 at ``StartFrame``): a user segment runs
from ``UserStartedSpeakingFrame`` (or its first interim) to its final transcription. TTFB
metrics (``MetricsFrame``) become ``audio_quality["latency"]["ttfb"]``; ``ErrorFrame``\\s
are counted. When the worker is done (the observer's cleanup, so what processors push while
the ``EndFrame`` travels is kept) the session is completed: after an ``EndFrame`` with
``audio_quality["call"]["end"] == "completed"``, else (``CancelFrame``, or torn down without
either) ``"cancelled"``. Everything else is :class:`~voicesessions.integrations.CallRecorder`:
the observer never waits for the database. (Pipecat's ``TranscriptProcessor`` is gone; its
replacement, the context aggregators' turn events, carries no timings, hence frames.)
"""

from __future__ import annotations

import functools
from collections import deque
from typing import TYPE_CHECKING, Any

from voicesessions.integrations._call import BUYER, TRAINEE, CallEnd, CallRecorder, CallResult

if TYPE_CHECKING:
    from voicesessions._async.client import AsyncVoiceSessions

__all__ = ["SessionObserver"]  # noqa: F822 (made on first use: see __getattr__)

_EXTRA = "pip install 'voicesessions[pipecat]'"


def __getattr__(name: str) -> Any:
    if name == "SessionObserver":
        return _observer_class()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


@functools.cache
def _observer_class() -> type[Any]:
    try:
        from pipecat.frames import frames as f
        from pipecat.metrics.metrics import TTFBMetricsData
        from pipecat.observers.base_observer import BaseObserver, FramePushed
    except ImportError as exc:
        raise ImportError(
            f"voicesessions.integrations.pipecat needs Pipecat: {_EXTRA} ({exc})"
        ) from exc

    class SessionObserver(BaseObserver):
        """Stream a Pipecat pipeline's call into a session (see the module docstring).

        ``vs`` is an ``AsyncVoiceSessions``; give ``session_id`` (an active session) or
        ``profile_id`` (the session is created when the pipeline starts, with ``title``
        and ``metadata``). ``trainee`` and ``buyer`` are the speaker labels. Other keyword
        arguments go to :class:`~voicesessions.integrations.CallRecorder`
        (``max_pending``, ``on_unstored``...). ``recorder`` is that CallRecorder.
        """

        def __init__(
            self,
            vs: AsyncVoiceSessions,
            *,
            trainee: str = TRAINEE,
            buyer: str = BUYER,
            **options: Any,
        ) -> None:
            super().__init__(observe_every_push=False)
            self.recorder = CallRecorder(vs, framework="pipecat", **options)
            self._trainee = trainee
            self._buyer = buyer
            self._t0_ns: int | None = None
            self._user_start: float | None = None
            self._user_speaking = False
            self._user_turn = 0
            self._bot_text = ""
            self._bot_start: float | None = None
            self._bot_turn = 0
            self._now = 0.0
            self._ending: CallEnd | None = None
            # A broadcast frame travels as two frames, siblings: handle the first only.
            self._recent: deque[int] = deque(maxlen=256)

        async def on_push_frame(self, data: FramePushed) -> None:
            self.handle(data.frame, data.timestamp)

        async def cleanup(self) -> None:
            """The worker is done: every frame pushed before has been observed (see
            :meth:`handle`); the call ends as the pipeline did."""
            await super().cleanup()  # type: ignore[no-untyped-call]
            self._bot_done(self._now)
            self.recorder.end(self._ending or CallEnd.CANCELLED)

        async def result(self) -> CallResult:
            """Wait until the call is stored and the session completed."""
            return await self.recorder.result()

        def handle(self, frame: Any, timestamp_ns: int) -> None:
            """One frame pushed at ``timestamp_ns`` on the pipeline's clock (never waits).

            The observer is told of a frame when it is first pushed, so an ``EndFrame``
            queued at the pipeline's start is seen before what processors further on push
            while it travels (an STT service's last transcription, say): the end of the
            call is the worker's cleanup, once the frame has gone through and all the
            pushes before are observed (the worker calls observers in push order).
            """
            if self._t0_ns is None:
                self._t0_ns = timestamp_ns
                self.recorder.start()
            sibling = getattr(frame, "broadcast_sibling_id", None)
            if sibling is not None:
                if sibling in self._recent:
                    return
                self._recent.append(frame.id)
            now = self._now = (timestamp_ns - self._t0_ns) / 1_000_000
            if isinstance(frame, f.InterimTranscriptionFrame):
                if self._user_start is None:
                    self._user_start = now
                self.recorder.interim(
                    self._trainee,
                    frame.text,
                    self._user_start,
                    now,
                    segment_id=f"user-{self._user_turn}",
                )
            elif isinstance(frame, f.TranscriptionFrame):
                start = now if self._user_start is None else self._user_start
                self.recorder.final(
                    self._trainee, frame.text, start, now, segment_id=f"user-{self._user_turn}"
                )
                self._user_turn += 1
                self._user_start = now if self._user_speaking else None
            elif isinstance(frame, (f.UserStartedSpeakingFrame, f.VADUserStartedSpeakingFrame)):
                self._user_speaking = True
                if self._user_start is None:
                    self._user_start = now
            elif isinstance(frame, f.UserStoppedSpeakingFrame):
                self._user_speaking = False
            elif isinstance(frame, f.TTSTextFrame):
                if self._bot_start is None:
                    self._bot_start = now
                if frame.includes_inter_frame_spaces or not self._bot_text:
                    self._bot_text += frame.text
                else:
                    self._bot_text += " " + frame.text
            elif isinstance(frame, f.BotStartedSpeakingFrame):
                if self._bot_start is None:
                    self._bot_start = now
            elif isinstance(frame, (f.BotStoppedSpeakingFrame, f.InterruptionFrame)):
                self._bot_done(now)
            elif isinstance(frame, f.MetricsFrame):
                for item in frame.data:
                    if isinstance(item, TTFBMetricsData):
                        self.recorder.latency("ttfb", item.value)
            elif isinstance(frame, f.ErrorFrame):
                self.recorder.error(frame.error)
            elif isinstance(frame, f.EndFrame):
                self._ending = self._ending or CallEnd.COMPLETED
            elif isinstance(frame, f.CancelFrame):
                self._ending = self._ending or CallEnd.CANCELLED

        def _bot_done(self, now: float | None) -> None:
            """The bot's turn ended (stopped, interrupted, or the call ended): its words
            so far are one final segment."""
            if self._bot_text.strip() and self._bot_start is not None:
                end = self._bot_start if now is None else now
                self.recorder.final(
                    self._buyer,
                    self._bot_text,
                    self._bot_start,
                    end,
                    segment_id=f"bot-{self._bot_turn}",
                )
                self._bot_turn += 1
            self._bot_text = ""
            self._bot_start = None

    return SessionObserver
