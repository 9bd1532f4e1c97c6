"""Reading hosted platforms' webhooks and checking their signatures (voicesessions._hosted),
without a database: generated bodies and keys against retell-sdk's own verifier, and the
readings of the less common shapes of the platforms' bodies."""

from __future__ import annotations

import time
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.support.hosted import retell_event, retell_sdk_accepts, retell_signature, vapi_report
from voicesessions import InvalidInputError, WebhookSignatureError
from voicesessions._hosted import HostedCall, retell_call, vapi_call, verify_retell

TEXT = st.text(st.characters(blacklist_categories=("Cs",)), max_size=200)
KEYS = st.text(st.characters(min_codepoint=33, max_codepoint=126), min_size=1, max_size=40)


@settings(max_examples=100, deadline=None)
@given(body=TEXT, key=KEYS, other=KEYS, skew_s=st.integers(-400, 400), flip=st.booleans())
def test_our_retell_verdict_is_retell_sdks(
    body: str, key: str, other: str, skew_s: int, flip: bool
) -> None:
    now = time.time()
    signed_with = other if flip else key
    signature = retell_signature(
        body.encode(), signed_with, timestamp_ms=int((now + skew_s) * 1000)
    )
    theirs = retell_sdk_accepts(body.encode(), key, signature)
    try:
        verify_retell(body.encode(), {"x-retell-signature": signature}, key, now=now)
        ours = True
    except WebhookSignatureError:
        ours = False
    if not 298 <= abs(skew_s) <= 302:  # at the 5-minute edge the two clocks may differ
        assert ours == theirs == ((not flip or other == key) and abs(skew_s) < 300)


def _one(found: HostedCall | str) -> HostedCall:
    assert isinstance(found, HostedCall)
    return found


def test_vapi_messages_without_offsets_are_timed_from_the_first() -> None:
    report = vapi_report("c")
    for entry in report["message"]["artifact"]["messages"]:
        entry.pop("secondsFromStart")
    del report["message"]["endedAt"]
    del report["message"]["call"]["endedAt"]
    call = _one(vapi_call(report))
    starts = [s.start_ms for s in call.segments]
    assert starts == [400, 4500, 8900, 12300]  # from startedAt
    assert call.ended_at.timestamp() == pytest.approx(call.started_at.timestamp() + 15.8)


def test_retell_utterances_without_words_follow_the_previous_one() -> None:
    event = retell_event("call_ended", "c")
    utterances: list[dict[str, Any]] = event["call"]["transcript_object"]
    utterances[1]["words"] = []
    utterances.insert(2, {"role": "transfer_target", "content": "Hold on.", "words": []})
    utterances.append({"role": "tool_call_invocation", "content": "lookup", "words": []})
    call = _one(retell_call(event))
    assert [s.speaker for s in call.segments] == ["buyer", "trainee", "buyer", "trainee"]
    assert (call.segments[1].start_ms, call.segments[1].end_ms) == (3900, 3900)
    assert call.segments[1].words is None
    assert call.analysis is None  # call_ended carries no analysis


def test_titles_fit_and_strange_values_are_refused() -> None:
    event = retell_event("call_ended", "c")
    event["call"]["agent_name"] = "  " + "A" * 400
    assert len(_one(retell_call(event)).title or "") == 255
    event["call"]["start_timestamp"] = "yesterday"
    with pytest.raises(InvalidInputError, match="start_timestamp"):
        retell_call(event)
    event = retell_event("call_ended", "c")
    event["call"]["transcript_object"] = "hello"
    with pytest.raises(InvalidInputError, match="transcript_object"):
        retell_call(event)
    assert retell_call({"event": 3}) == "unknown"
    assert vapi_call({"message": {"type": None}}) == "unknown"
