"""A Pipecat bot playing the AI buyer in a Daily room; every call is stored as a session.

    pip install -e '.[pipecat,binary]' 'pipecat-ai[daily,deepgram,openai,cartesia,silero]'
    voicesessions local start            # or set VOICESESSIONS_DSN / SUPABASE_URL + keys
    export TRAINEE_PROFILE_ID=...        # the trainee who calls
    export DAILY_ROOM_URL=... DAILY_TOKEN=... DEEPGRAM_API_KEY=... OPENAI_API_KEY=...
    export CARTESIA_API_KEY=... CARTESIA_VOICE_ID=...
    python examples/pipecat_bot.py

Without DAILY_ROOM_URL it plays a scripted call through the same glue (`run_call`), with no
service: a trainee and a session are made up, and what was stored is printed.
"""

from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import Callable
from typing import Any

from pipecat.frames.frames import (
    BotStartedSpeakingFrame,
    BotStoppedSpeakingFrame,
    EndFrame,
    Frame,
    TranscriptionFrame,
    TTSTextFrame,
    UserStartedSpeakingFrame,
    UserStoppedSpeakingFrame,
)
from pipecat.pipeline.pipeline import Pipeline
from pipecat.pipeline.worker import PipelineWorker
from pipecat.workers.runner import WorkerRunner

from voicesessions import AsyncVoiceSessions
from voicesessions.integrations import CallResult
from voicesessions.integrations.pipecat import SessionObserver

BUYER = "You are Sam, a busy finance director. The caller sells invoicing software. Be brief."


async def run_call(
    vs: AsyncVoiceSessions,
    profile_id: uuid.UUID | str,
    processors: list[Any],
    *,
    title: str,
    setup: Callable[[PipelineWorker], None] | None = None,
) -> CallResult:
    """The glue: run the pipeline with a SessionObserver; the call is stored as it goes."""
    recorder = SessionObserver(vs, profile_id=profile_id, title=title)
    worker = PipelineWorker(Pipeline(processors), observers=[recorder])
    if setup is not None:
        setup(worker)
    runner = WorkerRunner()
    await runner.add_workers(worker)
    await runner.run()
    return await recorder.result()  # the session is completed, with its metrics


def daily_bot() -> tuple[list[Any], Callable[[PipelineWorker], None]]:
    """The real bot (the keys in the environment): Daily, Deepgram, OpenAI, Cartesia."""
    from pipecat.audio.vad.silero import SileroVADAnalyzer
    from pipecat.processors.aggregators.llm_context import LLMContext
    from pipecat.processors.aggregators.llm_response_universal import (
        LLMContextAggregatorPair,
        LLMUserAggregatorParams,
    )
    from pipecat.services.cartesia.tts import CartesiaTTSService
    from pipecat.services.deepgram.stt import DeepgramSTTService
    from pipecat.services.openai.llm import OpenAILLMService
    from pipecat.transports.daily.transport import DailyParams, DailyTransport

    transport = DailyTransport(
        os.environ["DAILY_ROOM_URL"],
        os.environ.get("DAILY_TOKEN"),
        "Sam (AI buyer)",
        DailyParams(audio_in_enabled=True, audio_out_enabled=True),
    )
    context = LLMContext([{"role": "system", "content": BUYER}])
    aggregators = LLMContextAggregatorPair(
        context, user_params=LLMUserAggregatorParams(vad_analyzer=SileroVADAnalyzer())
    )
    processors = [
        transport.input(),
        DeepgramSTTService(api_key=os.environ["DEEPGRAM_API_KEY"]),
        aggregators.user(),
        OpenAILLMService(api_key=os.environ["OPENAI_API_KEY"]),
        CartesiaTTSService(
            api_key=os.environ["CARTESIA_API_KEY"], voice_id=os.environ["CARTESIA_VOICE_ID"]
        ),
        transport.output(),
        aggregators.assistant(),
    ]

    def setup(worker: PipelineWorker) -> None:
        @transport.event_handler("on_participant_left")
        async def hung_up(transport: Any, participant: Any, reason: Any) -> None:
            await worker.queue_frame(EndFrame())  # the session is completed

    return processors, setup


SCRIPT = [
    ("trainee", "Hi Sam, it's Lee from Acme. Do you have a minute?"),
    ("buyer", "A minute, yes. What is it about?"),
    ("trainee", "How much time does your team spend chasing invoices?"),
    ("buyer", "Too much. Two days a month, at least."),
]


def scripted_call(worker: PipelineWorker) -> None:
    """Feed the pipeline the frames a call would make (no service needed)."""

    async def feed() -> None:
        for speaker, text in SCRIPT:
            frames: list[Frame]
            if speaker == "trainee":
                frames = [
                    UserStartedSpeakingFrame(),
                    UserStoppedSpeakingFrame(),
                    TranscriptionFrame(text, "trainee", ""),
                ]
            else:
                words = [TTSTextFrame(word, "word") for word in text.split()]
                frames = [BotStartedSpeakingFrame(), *words, BotStoppedSpeakingFrame()]
            for frame in frames:
                await worker.queue_frame(frame)
                await asyncio.sleep(0.02)
        await worker.queue_frame(EndFrame())

    tasks: set[asyncio.Task[None]] = set()

    @worker.event_handler("on_pipeline_started")
    async def started(worker: Any, frame: Any) -> None:
        task = asyncio.create_task(feed())
        tasks.add(task)
        task.add_done_callback(tasks.discard)


async def main() -> None:
    async with AsyncVoiceSessions.from_env() as vs:
        if os.environ.get("DAILY_ROOM_URL"):
            processors, setup = daily_bot()
            profile_id: uuid.UUID | str = os.environ["TRAINEE_PROFILE_ID"]
        else:
            processors, setup = [], scripted_call
            # Re-runnable: the second run finds Lee and Pipecat Co instead of making new ones.
            lee = await vs.tenants.onboard("Pipecat Co", "lee@pipecat.example", display_name="Lee")
            profile_id = lee.user_id
        result = await run_call(vs, profile_id, processors, title="Discovery call", setup=setup)
        assert result.session_id is not None
        transcript = await vs.sessions.get_transcript(result.session_id)
        print(f"stored {result.stored} segments (complete: {result.ok}):\n{transcript.text}")


if __name__ == "__main__":
    asyncio.run(main())
