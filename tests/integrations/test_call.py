"""CallRecorder on its own (what the adapters share), against the database."""

from __future__ import annotations

import pytest

from tests.integrations.conftest import Call
from voicesessions.integrations import CallEnd, CallRecorder


async def test_leaving_the_block_on_an_error_completes_the_call_as_error(call: Call) -> None:
    recorder = CallRecorder(call.vs, profile_id=call.trainee, framework="mine")

    async def a_call() -> None:
        async with recorder as rec:
            rec.final("trainee", "Hello?", 0, 900)
            rec.interim("buyer", "Hel", 1000, 1200)
            rec.final("buyer", "  ", 1000, 1500)  # empty: not a segment, no seq
            rec.final("buyer", "Hello, who is this?", 1000, -5)  # end before start: start
            rec.latency("ttfb", 0.25)
            raise RuntimeError("tts crashed")

    with pytest.raises(RuntimeError, match="tts crashed"):
        await a_call()
    result = await recorder.result()

    assert (result.end, result.finals, result.stored, result.completed) == (
        CallEnd.ERROR,
        2,
        2,
        True,
    )
    assert call.segments(result.session_id) == [
        (0, "trainee", "Hello?", 0, 900),
        (1, "buyer", "Hello, who is this?", 1000, 1000),
    ]
    quality = call.session(result.session_id)["audio_quality"]
    assert quality["call"] == {
        "framework": "mine",
        "end": "error",
        "finals": 2,
        "finals_unstored": 0,
        "interims_dropped": 0,
        "errors": 1,
        "last_error": "tts crashed",
    }
    assert quality["latency"] == {"ttfb": {"count": 1, "mean_ms": 250.0, "max_ms": 250.0}}


async def test_a_session_that_has_ended_reports_the_finals_it_refused(call: Call) -> None:
    ended = await call.vs.sessions.create(call.trainee, "Already over")
    await call.vs.sessions.complete(ended.id)
    lost: list[list[dict[str, object]]] = []
    recorder = CallRecorder(call.vs, session_id=ended.id, on_unstored=lost.append)
    async with recorder as rec:
        for seq in range(3):
            rec.final("trainee", f"Line {seq}.", seq * 1000, seq * 1000 + 500)
    result = await recorder.result()

    assert not result.ok
    assert result.error is not None
    assert [s["seq"] for s in result.unstored] == [0, 1, 2]
    assert lost == [result.unstored]
    assert call.segments(ended.id) == []
