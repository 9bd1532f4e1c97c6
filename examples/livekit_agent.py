"""A LiveKit agent playing the AI buyer; every call is stored as a session.

    pip install -e '.[livekit,binary]'
    voicesessions local start            # or set VOICESESSIONS_DSN / SUPABASE_URL + keys
    export TRAINEE_PROFILE_ID=...        # the trainee who calls
    export LIVEKIT_URL=... LIVEKIT_API_KEY=... LIVEKIT_API_SECRET=...
    python examples/livekit_agent.py dev # the models through LiveKit Inference

Without LIVEKIT_URL it plays a scripted call through the same glue (`store_calls`): an
AgentSession emitting the events a call makes, with no service; a trainee and a session are
made up, and what was stored is printed.
"""

from __future__ import annotations

import asyncio
import os
import sys
import time
import uuid

from livekit.agents import (
    Agent,
    AgentServer,
    AgentSession,
    ChatMessage,
    CloseEvent,
    CloseReason,
    ConversationItemAddedEvent,
    JobContext,
    UserInputTranscribedEvent,
    cli,
)

from voicesessions import AsyncVoiceSessions
from voicesessions.integrations.livekit import AgentSessionRecording, record_agent_session

BUYER = "You are Sam, a busy finance director. The caller sells invoicing software. Be brief."


def store_calls(
    vs: AsyncVoiceSessions, session: AgentSession, profile_id: uuid.UUID | str
) -> AgentSessionRecording:
    """The glue: attach before session.start(); the call is stored as it goes and the
    session completed when the AgentSession closes (``await recording.result()``)."""
    return record_agent_session(vs, session, profile_id=profile_id, title="Discovery call")


server = AgentServer()


@server.rtc_session()
async def buyer(ctx: JobContext) -> None:
    vs = AsyncVoiceSessions.from_env()
    session: AgentSession = AgentSession(
        stt="deepgram/nova-3", llm="openai/gpt-4.1-mini", tts="cartesia/sonic-2"
    )
    recording = store_calls(vs, session, os.environ["TRAINEE_PROFILE_ID"])

    async def stored() -> None:
        await session.aclose()  # closes the session (if not yet): the call is completed
        print(await recording.result())
        await vs.aclose()

    ctx.add_shutdown_callback(stored)
    await session.start(agent=Agent(instructions=BUYER), room=ctx.room)


SCRIPT = [
    ("Hi Sam, it's Lee from Acme. Do you have a minute?", "A minute, yes. What is it about?"),
    ("How much time does your team spend chasing invoices?", "Too much. Two days a month."),
]


async def scripted_call() -> None:
    """The events of a short call on a real AgentSession (no service needed)."""
    async with AsyncVoiceSessions.from_env() as vs:
        # Re-runnable: the second run finds Lee and LiveKit Co instead of making new ones.
        lee = await vs.tenants.onboard("LiveKit Co", "lee@livekit.example", display_name="Lee")
        session: AgentSession = AgentSession()
        recording = store_calls(vs, session, lee.user_id)
        t = time.time()
        for said, answer in SCRIPT:
            session.emit(
                "user_input_transcribed",
                UserInputTranscribedEvent(transcript=said, is_final=True, created_at=t + 1),
            )
            reply = ChatMessage(
                role="assistant",
                content=[answer],
                metrics={"started_speaking_at": t + 2, "stopped_speaking_at": t + 3},
            )
            session.emit("conversation_item_added", ConversationItemAddedEvent(item=reply))
            t += 3
        session.emit("close", CloseEvent(reason=CloseReason.PARTICIPANT_DISCONNECTED))
        result = await recording.result()
        assert result.session_id is not None
        transcript = await vs.sessions.get_transcript(result.session_id)
        print(f"stored {result.stored} segments (complete: {result.ok}):\n{transcript.text}")


if __name__ == "__main__":
    if os.environ.get("LIVEKIT_URL") or len(sys.argv) > 1:
        cli.run_app(server)
    else:
        asyncio.run(scripted_call())
