"""Pipecat: a real pipeline run in-process (PipelineWorker, WorkerRunner) fed with synthetic
frames, SessionObserver attached; each test checks what the database holds afterwards."""

from __future__ import annotations

import asyncio
import warnings
from dataclasses import dataclass
from typing import Any

import pytest

with warnings.catch_warnings():
    # Pipecat imports the standard library's audioop, deprecated since Python 3.11 (Pipecat
    # brings audioop-lts on 3.13): its warning, not ours, and the suite turns warnings into
    # errors.
    warnings.filterwarnings("ignore", "'audioop' is deprecated", DeprecationWarning)
    import pipecat.audio.utils  # noqa: F401

from pipecat.frames.frames import (
    BotStartedSpeakingFrame,
    BotStoppedSpeakingFrame,
    DataFrame,
    EndFrame,
    ErrorFrame,
    Frame,
    InterimTranscriptionFrame,
    InterruptionFrame,
    TranscriptionFrame,
    TTSTextFrame,
    UserStartedSpeakingFrame,
    UserStoppedSpeakingFrame,
)
from pipecat.pipeline.pipeline import Pipeline
from pipecat.pipeline.worker import PipelineWorker
from pipecat.processors.frame_processor import FrameDirection, FrameProcessor
from pipecat.workers.runner import WorkerRunner

from tests.integrations.conftest import Call
from voicesessions.integrations import CallEnd
from voicesessions.integrations.pipecat import SessionObserver


class Passthrough(FrameProcessor):
    """The pipeline's one processor: passes every frame on (the transport's place)."""

    async def process_frame(self, frame: Frame, direction: FrameDirection) -> None:
        await super().process_frame(frame, direction)
        await self.push_frame(frame, direction)


@dataclass
class Heard(DataFrame):
    """What a speech-to-text service hears (the audio's stand-in): the transcription it
    will make."""

    transcription: Frame


class BroadcastingSTT(FrameProcessor):
    """Makes each transcription from what it hears and sends it both ways, as Pipecat's STT
    services do: two sibling frames, each pushed on through the hops after it."""

    async def process_frame(self, frame: Frame, direction: FrameDirection) -> None:
        await super().process_frame(frame, direction)
        if isinstance(frame, Heard):
            await self.broadcast_frame_instance(frame.transcription)
        else:
            await self.push_frame(frame, direction)


class FlushingSTT(FrameProcessor):
    """Pushes its last transcription when the EndFrame reaches it, as an STT service
    finalizing its stream does: after the EndFrame was first pushed, before it went on."""

    async def process_frame(self, frame: Frame, direction: FrameDirection) -> None:
        await super().process_frame(frame, direction)
        if isinstance(frame, EndFrame):
            await asyncio.sleep(0.05)
            await self.push_frame(TranscriptionFrame("Last words.", "trainee-1", "t"))
        await self.push_frame(frame, direction)


async def run(
    observer: Any,
    frames: list[Frame | float],
    *,
    finish: str = "end",
    processors: tuple[type[FrameProcessor], ...] = (Passthrough,),
) -> None:
    """Run a pipeline of ``processors`` with ``observer``: push ``frames`` (a float: sleep
    that long), then end it with an EndFrame (``finish="end"``) or cancel it (``"cancel"``)."""
    if BroadcastingSTT in processors:
        transcriptions = (TranscriptionFrame, InterimTranscriptionFrame)
        frames = [Heard(f) if isinstance(f, transcriptions) else f for f in frames]
    worker = PipelineWorker(
        Pipeline([p() for p in processors]), observers=[observer], cancel_on_idle_timeout=False
    )
    started = asyncio.Event()

    @worker.event_handler("on_pipeline_started")
    async def _started(worker: Any, frame: Any) -> None:
        started.set()

    async def feed() -> None:
        await asyncio.wait_for(started.wait(), timeout=10)
        for frame in frames:
            if isinstance(frame, float):
                await asyncio.sleep(frame)
            else:
                await worker.queue_frame(frame)
        if finish == "end":
            await worker.queue_frame(EndFrame())
        else:
            await asyncio.sleep(0.05)  # the frames reach the observer before the cancel
            await worker.cancel()

    runner = WorkerRunner(handle_sigint=False)
    await runner.add_workers(worker)
    await asyncio.gather(runner.run(), feed())


def user_turn(text: str, interims: list[str]) -> list[Frame | float]:
    frames: list[Frame | float] = [UserStartedSpeakingFrame(), 0.01]
    for partial in interims:
        frames += [InterimTranscriptionFrame(partial, "trainee-1", "t"), 0.01]
    return [
        *frames,
        UserStoppedSpeakingFrame(),
        TranscriptionFrame(text, "trainee-1", "t"),
        0.01,
    ]


def bot_turn(words: list[str], *, interrupted: bool = False) -> list[Frame | float]:
    frames: list[Frame | float] = [BotStartedSpeakingFrame()]
    for word in words:
        frames += [TTSTextFrame(word, "word"), 0.005]
    return [*frames, InterruptionFrame() if interrupted else BotStoppedSpeakingFrame(), 0.01]


CONVERSATION = [
    *user_turn("Hi, it's Lee from Acme.", ["Hi", "Hi it's", "Hi it's Lee"]),
    *bot_turn(["Hello", "Lee.", "What", "do", "you", "want?"]),
    *user_turn("Shall we talk about your renewal?", ["Shall we"]),
    *bot_turn(["Sure,", "but", "I", "only", "have"], interrupted=True),
    *user_turn("It will be quick, I promise.", []),
    # The trainee starts a sentence the call ends on: an interim never made final.
    UserStartedSpeakingFrame(),
    InterimTranscriptionFrame("So", "trainee-1", "t"),
]
SAID = [
    ("trainee", "Hi, it's Lee from Acme."),
    ("buyer", "Hello Lee. What do you want?"),
    ("trainee", "Shall we talk about your renewal?"),
    ("buyer", "Sure, but I only have"),  # interrupted: kept as spoken
    ("trainee", "It will be quick, I promise."),
]


@pytest.mark.parametrize(
    "processors",
    [(Passthrough,), (BroadcastingSTT, Passthrough, Passthrough)],
    ids=["one-processor", "broadcast-and-hops"],
)
async def test_a_pipeline_stores_its_finals_in_order_and_completes(
    call: Call, processors: tuple[type[FrameProcessor], ...]
) -> None:
    """Each final once, whatever the frame's hops and a broadcast's two sibling frames."""
    observer = SessionObserver(call.vs, profile_id=call.trainee, title="Renewal call")
    await run(observer, CONVERSATION, processors=processors)
    result = await observer.result()

    assert result.ok, result
    assert (result.end, result.finals, result.stored) == (CallEnd.COMPLETED, 5, 5)
    # The interims a final replaces in the same batch are not sent (listeners would only see
    # them flash by); the last one is broadcast, and none is stored:
    assert result.interims_sent >= 1
    stored = call.segments(result.session_id)
    assert [(seq, speaker, text) for seq, speaker, text, _, _ in stored] == [
        (seq, speaker, text) for seq, (speaker, text) in enumerate(SAID)
    ]
    starts = [start for _, _, _, start, _ in stored]
    assert starts == sorted(starts)  # on the pipeline's clock, in order
    assert all(start <= end for _, _, _, start, end in stored)
    session = call.session(result.session_id)
    assert session["status"] == "completed"
    assert session["ended"]
    assert session["audio_quality"]["call"]["end"] == "completed"
    assert session["audio_quality"]["call"]["framework"] == "pipecat"
    metrics = call.conversation_metrics(result.session_id)
    assert metrics is not None
    assert set(metrics["conversation"]["speakers"]) == {"trainee", "buyer"}
    assert call.transcript_text(result.session_id)


async def test_a_final_pushed_while_the_end_frame_travels_is_stored(call: Call) -> None:
    observer = SessionObserver(call.vs, profile_id=call.trainee)
    await run(observer, user_turn("Hello.", []), processors=(FlushingSTT, Passthrough))
    result = await observer.result()
    assert result.ok, result
    assert [text for _, _, text, _, _ in call.segments(result.session_id)] == [
        "Hello.",
        "Last words.",
    ]


async def test_cancel_keeps_the_finals_seen_and_completes_as_cancelled(call: Call) -> None:
    session = await call.vs.sessions.create(call.trainee, "Cut short")
    observer = SessionObserver(call.vs, session_id=session.id)
    frames = [
        *user_turn("Hi, it's Lee from Acme.", ["Hi"]),
        BotStartedSpeakingFrame(),
        TTSTextFrame("Hello", "word"),
        TTSTextFrame("Lee.", "word"),
        ErrorFrame("tts went away"),
        InterruptionFrame(),  # the trainee interrupts
        *user_turn("Hello?", []),
        BotStartedSpeakingFrame(),
        TTSTextFrame("Who", "word"),  # speaking when the pipeline is cancelled
    ]
    await run(observer, frames, finish="cancel")
    result = await observer.result()

    assert result.end is CallEnd.CANCELLED
    assert result.completed
    assert not result.unstored
    # The bot's turn cut short keeps the words spoken; every final before the cancel stored.
    assert [(speaker, text) for _, speaker, text, _, _ in call.segments(session.id)] == [
        ("trainee", "Hi, it's Lee from Acme."),
        ("buyer", "Hello Lee."),
        ("trainee", "Hello?"),
        ("buyer", "Who"),
    ]
    row = call.session(session.id)
    assert row["status"] == "completed"
    assert row["audio_quality"]["call"]["end"] == "cancelled"
    assert row["audio_quality"]["call"]["errors"] == 1
    assert row["audio_quality"]["call"]["last_error"] == "tts went away"


async def test_a_slow_database_never_blocks_the_pipeline_and_loses_no_final(call: Call) -> None:
    session = await call.vs.sessions.create(call.trainee, "Slow database")
    observer = SessionObserver(call.vs, session_id=session.id, max_pending=4, max_batch=2)
    turns = 12
    frames: list[Frame | float] = []
    for turn in range(turns):
        frames += user_turn(f"Point number {turn}.", [f"Point {turn}", f"Point num {turn}"])
    with call.held(session.id):
        # The whole call runs and the pipeline ends while no append can go through.
        await asyncio.wait_for(run(observer, frames), timeout=60)
        assert call.segments(session.id) == []
        assert observer.recorder._queue  # still waiting for the database
    result = await observer.result()

    assert result.ok, result
    assert result.interims_dropped > 0  # the queue was full: interims went first
    assert [text for _, _, text, _, _ in call.segments(session.id)] == [
        f"Point number {turn}." for turn in range(turns)
    ]


@pytest.mark.parametrize("bad", ["not-a-uuid", "00000000-0000-4000-8000-0000000000aa"])
async def test_an_unknown_session_reports_every_final_as_unstored(call: Call, bad: str) -> None:
    if bad == "not-a-uuid":
        with pytest.raises(Exception, match="session_id must be a UUID"):
            SessionObserver(call.vs, session_id=bad)
        return
    observer = SessionObserver(call.vs, session_id=bad)
    lost: list[list[dict[str, Any]]] = []
    observer.recorder._on_unstored = lost.append
    await run(observer, CONVERSATION)
    result = await observer.result()
    assert not result.ok
    assert not result.completed
    assert [(s["seq"], s["text"]) for s in result.unstored] == [
        (seq, text) for seq, (_, text) in enumerate(SAID)
    ]
    assert lost == [result.unstored]
