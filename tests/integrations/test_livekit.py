"""LiveKit Agents: a real ``AgentSession`` (livekit-agents' own EventEmitter) emitting its own
event types, as a running session does, with ``record_agent_session`` attached; each test
checks what the database holds afterwards."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import pytest
from livekit.agents import (
    AgentHandoff,
    AgentSession,
    ChatMessage,
    CloseEvent,
    CloseReason,
    ConversationItemAddedEvent,
    ErrorEvent,
    UserInputTranscribedEvent,
    UserStateChangedEvent,
)

from tests.integrations.conftest import Call
from voicesessions.integrations import CallEnd
from voicesessions.integrations.livekit import AgentSessionRecording, record_agent_session


class Conversation:
    """Emit a call's events on ``session`` with times ``at`` seconds after the recording
    started (as LiveKit stamps them: wall-clock ``created_at``)."""

    def __init__(self, session: AgentSession, recording: AgentSessionRecording) -> None:
        self.session = session
        self.t0 = recording._t0

    def trainee(self, at: float, text: str, interims: list[str]) -> None:
        s, t0 = self.session, self.t0
        s.emit(
            "user_state_changed",
            UserStateChangedEvent(old_state="listening", new_state="speaking", created_at=t0 + at),
        )
        for i, partial in enumerate(interims):
            s.emit(
                "user_input_transcribed",
                UserInputTranscribedEvent(
                    transcript=partial, is_final=False, created_at=t0 + at + 0.1 * (i + 1)
                ),
            )
        s.emit(
            "user_state_changed",
            UserStateChangedEvent(
                old_state="speaking", new_state="listening", created_at=t0 + at + 1
            ),
        )
        s.emit(
            "user_input_transcribed",
            UserInputTranscribedEvent(transcript=text, is_final=True, created_at=t0 + at + 1.2),
        )
        # The user message that follows repeats the transcript: not stored twice.
        self.item("user", text, at, at + 1, transcription_delay=0.2, end_of_turn_delay=0.4)

    def item(self, role: str, text: str, start: float, end: float, **metrics: float) -> None:
        message = ChatMessage(
            role=role,  # type: ignore[arg-type]
            content=[text],
            metrics={
                "started_speaking_at": self.t0 + start,
                "stopped_speaking_at": self.t0 + end,
                **metrics,  # type: ignore[typeddict-item]
            },
            created_at=self.t0 + end,
        )
        self.session.emit("conversation_item_added", ConversationItemAddedEvent(item=message))

    def close(self, reason: CloseReason = CloseReason.PARTICIPANT_DISCONNECTED) -> None:
        self.session.emit("close", CloseEvent(reason=reason))


SAID = [
    ("trainee", "Hi, it's Lee from Acme.", 1000, 2200),
    ("buyer", "Hello Lee. What do you want?", 3000, 5000),
    ("trainee", "Shall we talk about your renewal?", 6000, 7200),
    ("buyer", "Sure, but I only", 8000, 8500),  # interrupted: as far as it went
    ("trainee", "Sorry, typing: the price list.", 9000, 9000),  # typed: no transcript
]


def play(conversation: Conversation) -> None:
    conversation.trainee(1, "Hi, it's Lee from Acme.", ["Hi", "Hi it's"])
    conversation.item("assistant", "Hello Lee. What do you want?", 3, 5, e2e_latency=0.8)
    conversation.session.emit(
        "conversation_item_added",
        ConversationItemAddedEvent(item=AgentHandoff(old_agent_id=None, new_agent_id="buyer")),
    )
    conversation.trainee(6, "Shall we talk about your renewal?", ["Shall"])
    conversation.item("assistant", "Sure, but I only", 8, 8.5, e2e_latency=1.2, llm_node_ttft=0.3)
    conversation.item("user", "Sorry, typing: the price list.", 9, 9)


async def test_an_agent_session_stores_its_finals_in_order_and_completes(call: Call) -> None:
    session: AgentSession = AgentSession()
    recording = record_agent_session(call.vs, session, profile_id=call.trainee, title="Renewal")
    conversation = Conversation(session, recording)
    play(conversation)
    # The trainee starts a sentence the call ends on: an interim never made final.
    session.emit(
        "user_input_transcribed",
        UserInputTranscribedEvent(
            transcript="Bye", is_final=False, created_at=conversation.t0 + 10
        ),
    )
    conversation.close()
    result = await recording.result()

    assert result.ok, result
    assert (result.end, result.finals, result.stored) == (CallEnd.COMPLETED, 5, 5)
    # The interims superseded in their batch by their final are not sent (listeners would
    # see them flash by); the last one is broadcast, and none is stored:
    assert result.interims_sent == 1
    stored = call.segments(result.session_id)
    assert [(speaker, text) for _, speaker, text, _, _ in stored] == [
        (speaker, text) for speaker, text, _, _ in SAID
    ]
    assert [seq for seq, *_ in stored] == list(range(5))
    # On the call's clock (ms since the recording was attached), within a few ms.
    for (_, _, _, start, end), (_, _, want_start, want_end) in zip(stored, SAID, strict=True):
        assert abs(start - want_start) < 50
        assert abs(end - want_end) < 50
    row = call.session(result.session_id)
    assert row["status"] == "completed"
    quality = row["audio_quality"]
    assert quality["call"]["end"] == "completed"
    assert quality["call"]["close_reason"] == "participant_disconnected"
    assert quality["latency"]["e2e_latency"] == {"count": 2, "mean_ms": 1000.0, "max_ms": 1200.0}
    assert quality["latency"]["end_of_turn_delay"]["count"] == 2
    metrics = call.conversation_metrics(result.session_id)
    assert metrics is not None
    assert set(metrics["conversation"]["speakers"]) == {"trainee", "buyer"}


async def test_closing_on_an_error_keeps_what_was_said(call: Call) -> None:
    existing = await call.vs.sessions.create(call.trainee, "Broken call")
    session: AgentSession = AgentSession()
    recording = record_agent_session(call.vs, session, session_id=existing.id)
    conversation = Conversation(session, recording)
    conversation.trainee(1, "Hello?", [])
    session.emit("error", ErrorEvent(error=RuntimeError("llm down"), source=None))
    conversation.close(CloseReason.ERROR)
    result = await recording.result()

    assert result.end is CallEnd.ERROR
    assert result.completed
    assert not result.unstored
    assert [text for _, _, text, _, _ in call.segments(existing.id)] == ["Hello?"]
    row = call.session(existing.id)
    assert row["status"] == "completed"
    assert row["audio_quality"]["call"]["end"] == "error"
    assert row["audio_quality"]["call"]["errors"] == 1


async def test_a_slow_database_never_blocks_the_listeners_and_loses_no_final(call: Call) -> None:
    existing = await call.vs.sessions.create(call.trainee, "Slow database")
    session: AgentSession = AgentSession()
    recording = record_agent_session(
        call.vs, session, session_id=existing.id, max_pending=3, max_batch=2
    )
    conversation = Conversation(session, recording)
    with call.held(existing.id):
        for turn in range(10):
            conversation.trainee(turn * 2, f"Point number {turn}.", ["Point", "Point num"])
            await asyncio.sleep(0)  # the recorder's task runs, and waits for the database
        conversation.close()
        await asyncio.sleep(0.2)
        assert call.segments(existing.id) == []
        assert not recording.recorder._task.done()  # type: ignore[union-attr]
    result = await recording.result()

    assert result.ok, result
    assert result.interims_dropped > 0
    assert [text for _, _, text, _, _ in call.segments(existing.id)] == [
        f"Point number {turn}." for turn in range(10)
    ]


async def test_a_listener_error_is_counted_not_lost(call: Call) -> None:
    session: AgentSession = AgentSession()
    recording = record_agent_session(call.vs, session, profile_id=call.trainee)
    unknown: Any = ConversationItemAddedEvent.model_construct(item=object())  # skipped
    session.emit("conversation_item_added", unknown)
    # A listener that raises: LiveKit would log and swallow the error; it is counted.
    broken = UserInputTranscribedEvent.model_construct(
        transcript="Hi", is_final=True, created_at="not a time"
    )
    session.emit("user_input_transcribed", broken)
    Conversation(session, recording).close()
    result = await recording.result()
    assert result.completed
    row = call.session(result.session_id)
    assert row["audio_quality"]["call"]["errors"] == 1


def test_only_an_agent_session_is_recorded(call: Call) -> None:
    with pytest.raises(TypeError, match="AgentSession"):
        record_agent_session(call.vs, object(), session_id=uuid.uuid4())
