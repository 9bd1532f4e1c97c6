"""LiveKit Agents: store an AgentSession's call as a session.

Install with ``pip install 'voicesessions[livekit]'``::

    from voicesessions.integrations.livekit import record_agent_session
    recording = record_agent_session(vs, session, profile_id=trainee_id, title="Renewal call")
    await session.start(agent=Buyer(), room=ctx.room)   # run the agent as usual
    result = await recording.result()                   # after the session closed

Listens to the ``AgentSession``'s events (plain functions: LiveKit refuses coroutine
listeners; each returns at once and never waits for the database):

- ``user_input_transcribed``: the trainee's speech, interim (broadcast only) and final
  (stored), from the ``user_state_changed`` to ``speaking`` before it to its arrival;
- ``conversation_item_added``: the AI buyer's messages (``text_content``: what was spoken,
  an interrupted turn as far as it went), timed by the message's ``metrics``
  (``started_speaking_at`` / ``stopped_speaking_at``); a user message is stored only when
  no final transcript came since the previous one (typed input), since it repeats them;
  the turn latencies of every message (``e2e_latency``, ``llm_node_ttft``,
  ``tts_node_ttfb``, ``transcription_delay``, ``end_of_turn_delay``...) are summed up into
  ``audio_quality["latency"]`` (``metrics_collected``, deprecated in livekit-agents 1.8 for
  these per-message metrics, is not listened to);
- ``error``: counted; ``close``: the call ends and the session is completed, with
  ``audio_quality["call"]["end"] == "error"`` when it closed on an error
  (``CloseReason.ERROR``), ``"completed"`` otherwise, and the ``close_reason``.

Times are milliseconds since the recording was attached. Everything else is
:class:`~voicesessions.integrations.CallRecorder`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from voicesessions.integrations._call import BUYER, TRAINEE, CallEnd, CallRecorder, CallResult

if TYPE_CHECKING:
    from voicesessions._async.client import AsyncVoiceSessions

__all__ = ["AgentSessionRecording", "record_agent_session"]

logger = logging.getLogger("voicesessions")

_EXTRA = "pip install 'voicesessions[livekit]'"
#: The ChatMessage.metrics keys summed up as latencies (seconds in, ms in audio_quality).
LATENCIES = (
    "e2e_latency",
    "llm_node_ttft",
    "tts_node_ttfb",
    "transcription_delay",
    "end_of_turn_delay",
    "on_user_turn_completed_delay",
    "playback_latency",
)


def record_agent_session(
    vs: AsyncVoiceSessions,
    session: Any,
    *,
    trainee: str = TRAINEE,
    buyer: str = BUYER,
    **options: Any,
) -> AgentSessionRecording:
    """Record ``session`` (a ``livekit.agents.AgentSession``) into a voicesessions session.

    Give ``session_id`` (an active session) or ``profile_id`` (created with ``title`` and
    ``metadata`` when the first event arrives, or at once if called in a running loop);
    other keyword arguments go to :class:`~voicesessions.integrations.CallRecorder`.
    Attach before ``session.start()`` so no event is missed.
    """
    try:
        from livekit.agents import AgentSession
    except ImportError as exc:
        raise ImportError(
            f"voicesessions.integrations.livekit needs LiveKit Agents: {_EXTRA} ({exc})"
        ) from exc
    if not isinstance(session, AgentSession):
        raise TypeError(f"session must be a livekit.agents.AgentSession, not {type(session)}")
    recording = AgentSessionRecording(
        CallRecorder(vs, framework="livekit-agents", **options), session, trainee, buyer
    )
    with contextlib.suppress(RuntimeError):  # no running loop: at the first event
        asyncio.get_running_loop()
        recording.recorder.start()
    return recording


class AgentSessionRecording:
    """The listeners attached to one AgentSession, and the :class:`CallRecorder` they feed."""

    def __init__(self, recorder: CallRecorder, session: Any, trainee: str, buyer: str) -> None:
        self.recorder = recorder
        self._session = session
        self._trainee = trainee
        self._buyer = buyer
        self._t0 = time.time()
        self._user_start: float | None = None
        self._user_speaking = False
        self._user_turn = 0
        self._finals_since_user_item = 0
        self._listeners: dict[str, Callable[[Any], None]] = {
            "user_state_changed": self._guarded(self._on_user_state),
            "user_input_transcribed": self._guarded(self._on_transcribed),
            "conversation_item_added": self._guarded(self._on_item),
            "error": self._guarded(self._on_error),
            "close": self._guarded(self._on_close),
        }
        for event, listener in self._listeners.items():
            session.on(event, listener)

    async def result(self) -> CallResult:
        """Wait until the session closed and the call is stored."""
        return await self.recorder.result()

    def detach(self) -> None:
        """Stop listening (the call is not ended: see :meth:`CallRecorder.end`)."""
        for event, listener in self._listeners.items():
            self._session.off(event, listener)

    # -- listeners (LiveKit logs and swallows what a listener raises: count it instead) --

    def _guarded(self, listener: Callable[[Any], None]) -> Callable[[Any], None]:
        def guarded(event: Any) -> None:
            try:
                listener(event)
            except Exception as exc:
                logger.exception("voicesessions: a LiveKit event could not be recorded")
                self.recorder.error(exc)

        return guarded

    def _ms(self, wall: float | None) -> float:
        return 0.0 if wall is None else (wall - self._t0) * 1000

    def _on_user_state(self, event: Any) -> None:
        at = self._ms(event.created_at)
        if event.new_state == "speaking":
            self._user_speaking = True
            if self._user_start is None:
                self._user_start = at
        else:
            self._user_speaking = False

    def _on_transcribed(self, event: Any) -> None:
        now = self._ms(event.created_at)
        if self._user_start is None:
            self._user_start = now
        segment_id = f"user-{self._user_turn}"
        if not event.is_final:
            self.recorder.interim(
                self._trainee, event.transcript, self._user_start, now, segment_id=segment_id
            )
            return
        if (
            self.recorder.final(
                self._trainee, event.transcript, self._user_start, now, segment_id=segment_id
            )
            is not None
        ):
            self._finals_since_user_item += 1
        self._user_turn += 1
        self._user_start = now if self._user_speaking else None

    def _on_item(self, event: Any) -> None:
        item = event.item
        role = getattr(item, "role", None)  # an agent handoff has none
        if getattr(item, "type", None) != "message" or role not in ("user", "assistant"):
            return
        metrics = item.metrics or {}
        for name in LATENCIES:
            self.recorder.latency(name, metrics.get(name))
        text = item.text_content or ""
        start = self._ms(metrics.get("started_speaking_at", item.created_at))
        end = self._ms(metrics.get("stopped_speaking_at", item.created_at))
        if role == "assistant":
            self.recorder.final(self._buyer, text, start, end, segment_id=f"agent-{item.id}")
        else:
            if self._finals_since_user_item == 0:  # not transcribed: e.g. typed input
                self.recorder.final(self._trainee, text, start, end, segment_id=f"user-{item.id}")
            self._finals_since_user_item = 0

    def _on_error(self, event: Any) -> None:
        self.recorder.error(event.error)

    def _on_close(self, event: Any) -> None:
        reason = getattr(event.reason, "value", str(event.reason))
        self.recorder.note(close_reason=reason)
        how = CallEnd.ERROR if reason == "error" else CallEnd.COMPLETED
        self.recorder.end(how, event.error)
