"""A session that does not exist and another company's session get the same answer from
every SDK call that takes a session: SessionNotFound, same message shape, same code, and
nothing written.

The calls are enumerated from the public signatures (every public method of a resource with
a ``session_id`` parameter, plus the two that take an update carrying one); :data:`CALLS`
gives each a valid rest of its arguments, and a test fails when a new such method is not in
it. Each runs as people of company A (a trainee, a manager, an admin) on company B's sessions.
"""

from __future__ import annotations

import inspect
import io
import math
import struct
import uuid
import wave
from collections.abc import Callable
from typing import Any

import pytest

from tests.sdk.conftest import Sdk, sdk
from tests.sdk.test_surface_types import RESOURCES, public_methods
from tests.support.db import unchanged
from tests.support.segments import segment
from voicesessions import SessionNotFound, StreamError, VoiceSessionsError


def wav_bytes(seconds: float = 1.0, rate: int = 16_000) -> bytes:
    """A short 440 Hz tone as a WAV file."""
    frames = b"".join(
        struct.pack("<h", int(8000 * math.sin(2 * math.pi * 440 * n / rate)))
        for n in range(int(seconds * rate))
    )
    out = io.BytesIO()
    with wave.open(out, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(frames)
    return out.getvalue()


Call = Callable[[Any, uuid.UUID], Any]

#: resource.method -> a call of it about session ``sid`` with otherwise valid arguments.
CALLS: dict[str, Call] = {
    "sessions.get": lambda vs, sid: vs.sessions.get(sid),
    "sessions.update_status": lambda vs, sid: vs.sessions.update_status(sid, "completed"),
    "sessions.complete": lambda vs, sid: vs.sessions.complete(sid),
    "sessions.archive": lambda vs, sid: vs.sessions.archive(sid),
    "sessions.get_transcript": lambda vs, sid: vs.sessions.get_transcript(sid),
    "sessions.record_analysis": lambda vs, sid: vs.sessions.record_analysis(
        sid, provider="voicesessions", analysis_type="conversation_metrics", results={}
    ),
    "sessions.get_analytics": lambda vs, sid: vs.sessions.get_analytics(sid),
    "sessions.attach_audio": lambda vs, sid: vs.sessions.attach_audio(sid, wav_bytes()),
    "sessions.audio_url": lambda vs, sid: vs.sessions.audio_url(sid),
    "sessions.remove_audio": lambda vs, sid: vs.sessions.remove_audio(sid),
    "updates.append_transcript_chunk": lambda vs, sid: vs.updates.append_transcript_chunk(
        sid, [segment(50)]
    ),
    "updates.update_audio_metrics": lambda vs, sid: vs.updates.update_audio_metrics(
        sid, {"snr_db": 20}
    ),
    "updates.update_session_status": lambda vs, sid: vs.updates.update_session_status(
        sid, "completed"
    ),
    "updates.broadcast_update": lambda vs, sid: vs.updates.broadcast_update(
        {"session_id": sid, "update_type": "audio_metrics", "data": {"snr_db": 1}}
    ),
    "updates.handle_realtime_update": lambda vs, sid: vs.updates.handle_realtime_update(
        {"session_id": sid, "update_type": "audio_metrics", "data": {"snr_db": 1}}
    ),
    "updates.subscribe": lambda vs, sid: vs.updates.subscribe(sid, lambda event: None),
    "updates.events": lambda vs, sid: enter(vs.updates.events(sid)),
    "gdpr.anonymize_session_data": lambda vs, sid: vs.gdpr.anonymize_session_data(sid),
    "updates.stream": lambda vs, sid: stream_once(vs, sid),
}

#: Methods that take a session inside another argument.
INSIDE = {"updates.broadcast_update", "updates.handle_realtime_update"}


async def stream_once(vs: Any, sid: uuid.UUID) -> None:
    """A stream fails when its first batch is refused: StreamError, caused by the answer."""
    stream = vs.updates.stream(sid)
    if hasattr(stream, "__aenter__"):
        async with stream:
            await stream.add(segment(51))
    else:
        with stream:
            stream.add(segment(51))


async def enter(feed: Any) -> Any:
    if hasattr(feed, "__aenter__"):
        await feed.__aenter__()
        await feed.aclose()
    else:
        feed.__enter__()
        feed.close()
    return None


def session_methods() -> set[str]:
    found = set()
    for resource, cls in RESOURCES["sync"].items():
        for name in public_methods(cls):
            params = inspect.signature(getattr(cls, name)).parameters
            if "session_id" in params:
                found.add(f"{resource}.{name}")
    return found


def test_every_method_taking_a_session_is_in_the_table() -> None:
    assert session_methods() | INSIDE == set(CALLS)


async def answer(call: Callable[[], Any]) -> VoiceSessionsError:
    try:
        result = await sdk(call())
    except StreamError as exc:  # a stream reports what refused its batch as the cause
        if not isinstance(exc.__cause__, VoiceSessionsError):
            pytest.fail(f"StreamError without the refusal as its cause: {exc}")
        return exc.__cause__
    except VoiceSessionsError as exc:
        return exc
    if hasattr(result, "aclose"):
        await sdk(result.aclose())
    elif hasattr(result, "close"):
        result.close()
    pytest.fail("no error")


@pytest.mark.parametrize("who", ["A1", "MA", "AA"])
@pytest.mark.parametrize("method", sorted(CALLS))
async def test_missing_and_invisible_sessions_get_the_same_answer(
    client: Sdk, method: str, who: str
) -> None:
    person = client.user(who)
    missing = uuid.uuid4()
    with unchanged(client.db):
        for theirs in (client.world.active_session["B1"], client.world.completed_session["B1"]):
            got = {}
            for label, sid in (("missing", missing), ("invisible", theirs)):
                exc = await answer(lambda sid=sid: CALLS[method](person, sid))
                assert isinstance(exc, SessionNotFound), f"{label}: {type(exc).__name__}: {exc}"
                assert str(exc) == f"[P0002] session {sid} not found", label
                got[label] = (type(exc), exc.code, exc.hint, exc.details)
            assert got["missing"] == got["invisible"]
