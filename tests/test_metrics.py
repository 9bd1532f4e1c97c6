"""Conversation metrics (voicesessions.metrics) on small transcripts whose answers are worked
out by hand in the comments next to them."""

from __future__ import annotations

import uuid
from typing import Any

import pytest

from tests.support.metrics_cases import CASES, MetricsCase
from voicesessions import SegmentInput, TranscriptSegment
from voicesessions.metrics import (
    DEFAULT_FILLERS,
    MAX_RESULT_SPEAKERS,
    METRICS_VERSION,
    conversation_metrics,
    filler_words_for,
)


def seg(speaker: str, start: float, end: float, text: str = "", **extra: Any) -> dict[str, Any]:
    """A segment with times in seconds."""
    return {
        "speaker": speaker,
        "start_ms": round(start * 1000),
        "end_ms": round(end * 1000),
        "text": text,
        **extra,
    }


# A discovery call with silence between turns and no overlap:
#   trainee  0-4 s   "Hi um thanks for taking my call"                      7 words, 1 filler
#   buyer    5-7 s   "Sure what is this about?"                              5 words, 1 question
#   trainee  8-14 s  "We help sales teams. You know, how do you train reps today? Any budget?"
#                    14 words, 1 filler ("you know"), 2 questions
CALL = [
    seg("trainee", 0, 4, "Hi um thanks for taking my call"),
    seg("buyer", 5, 7, "Sure what is this about?"),
    seg(
        "trainee",
        8,
        14,
        "We help sales teams. You know, how do you train reps today? Any budget?",
    ),
]


def test_talk_time_and_word_ratios_exclude_silence() -> None:
    m = conversation_metrics(CALL)
    trainee, buyer = m.speakers["trainee"], m.speakers["buyer"]
    # speaking time: trainee 4 + 6 = 10 s, buyer 2 s; silence (1 s + 1 s) counts for nobody
    assert trainee.talk_time_s == 10.0
    assert buyer.talk_time_s == 2.0
    assert trainee.talk_time_ratio == pytest.approx(10 / 12)
    assert buyer.talk_time_ratio == pytest.approx(2 / 12)
    # words: trainee 7 + 14 = 21, buyer 5
    assert (trainee.words, buyer.words, m.words) == (21, 5, 26)
    assert trainee.word_ratio == pytest.approx(21 / 26)
    assert m.duration_s == 14.0
    assert m.talk_time_s == 12.0
    assert m.silence_s == 2.0
    assert m.overlap_s == 0.0


def test_pace_fillers_and_questions() -> None:
    m = conversation_metrics(CALL)
    trainee, buyer = m.speakers["trainee"], m.speakers["buyer"]
    # 21 words in 10 s = 126 words per minute; 5 words in 2 s = 150
    assert trainee.words_per_minute == pytest.approx(126.0)
    assert buyer.words_per_minute == pytest.approx(150.0)
    # "um" and "You know," (punctuation stripped, case folded)
    assert trainee.filler_words == 2
    assert trainee.filler_rate == pytest.approx(2 / 21)
    assert buyer.filler_words == 0
    assert (trainee.questions, buyer.questions) == (2, 1)


def test_turns_monologues_interactivity_and_patience() -> None:
    m = conversation_metrics(CALL)
    trainee, buyer = m.speakers["trainee"], m.speakers["buyer"]
    # turns: trainee, buyer, trainee -> 2 switches in 14 s = 8.571 per minute
    assert (m.turns, m.speaker_switches) == (3, 2)
    assert m.switches_per_minute == pytest.approx(2 / (14 / 60))
    assert (trainee.turns, buyer.turns) == (2, 1)
    # longest turn: trainee 8-14 s = 6 s, buyer 2 s
    assert trainee.longest_monologue_s == 6.0
    assert buyer.longest_monologue_s == 2.0
    # the trainee answers 1 s after the buyer stops (7 -> 8); the buyer 1 s after the trainee
    assert trainee.patience_s == 1.0
    assert buyer.patience_s == 1.0
    assert trainee.interruptions == buyer.interruptions == 0


def test_overlapping_speech_counts_for_both_and_interruptions_are_zero_pauses() -> None:
    # trainee 0-5 s, buyer talks over them 4-6 s, trainee starts again at 5.5 s until 9 s
    m = conversation_metrics(
        [
            seg("trainee", 0, 5, "one two three"),
            seg("buyer", 4, 6, "mhm right"),
            seg("trainee", 5.5, 9, "four five"),
        ]
    )
    trainee, buyer = m.speakers["trainee"], m.speakers["buyer"]
    # trainee speaks 0-5 and 5.5-9 = 8.5 s, buyer 2 s: ratio 8.5 / 10.5
    assert trainee.talk_time_s == 8.5
    assert trainee.talk_time_ratio == pytest.approx(8.5 / 10.5)
    assert buyer.talk_time_ratio == pytest.approx(2 / 10.5)
    # someone speaks all of 0-9 s: no silence; two people at once 4-5 s and 5.5-6 s = 1.5 s
    assert (m.duration_s, m.talk_time_s, m.silence_s) == (9.0, 9.0, 0.0)
    assert m.overlap_s == 1.5
    # the buyer starts 1 s before the trainee stops, the trainee 0.5 s before the buyer
    # stops: both interruptions, pauses of 0
    assert (buyer.interruptions, trainee.interruptions) == (1, 1)
    assert buyer.patience_s == 0.0
    assert trainee.patience_s == 0.0
    assert trainee.longest_monologue_s == 5.0
    assert m.turns == 3


def test_a_speakers_own_overlapping_segments_count_once_and_pauses_stay_in_the_turn() -> None:
    # trainee 0-3 s and 2-4 s (overlapping), then 7-8 s with nobody else in between
    m = conversation_metrics(
        [seg("trainee", 0, 3, "a b"), seg("trainee", 2, 4, "c"), seg("trainee", 7, 8, "d")]
    )
    trainee = m.speakers["trainee"]
    assert trainee.talk_time_s == 5.0  # [0, 4] + [7, 8]
    assert trainee.turns == 1
    assert trainee.longest_monologue_s == 8.0  # one turn from 0 s to 8 s, its pause included
    assert m.overlap_s == 0.0  # one speaker cannot overlap themself
    assert m.silence_s == 3.0


def test_single_speaker() -> None:
    m = conversation_metrics([seg("trainee", 0, 30, "word " * 60), seg("trainee", 30, 60, "x?")])
    trainee = m.speakers["trainee"]
    assert trainee.talk_time_ratio == 1.0
    assert trainee.word_ratio == 1.0
    assert trainee.words_per_minute == pytest.approx(61.0)  # 61 words in one minute
    assert m.speaker_switches == 0
    assert m.switches_per_minute == 0.0
    assert trainee.patience_s is None  # never answered anyone
    assert trainee.questions == 1
    assert m.speaker("buyer") is None


def test_empty_transcript() -> None:
    m = conversation_metrics([])
    assert m.speakers == {}
    assert (m.segments, m.words, m.turns, m.speaker_switches) == (0, 0, 0, 0)
    assert (m.duration_s, m.talk_time_s, m.silence_s, m.overlap_s) == (0.0, 0.0, 0.0, 0.0)
    assert m.switches_per_minute is None
    results = m.analysis_results()
    assert results["talk_time_ratio"] is None
    assert results["speaking_pace_wpm"] is None
    assert (results["filler_words_count"], results["question_count"]) == (0, 0)


def test_a_speaker_with_only_silent_segments_has_no_pace() -> None:
    m = conversation_metrics([seg("trainee", 1, 1, ""), seg("buyer", 1, 3, "hello")])
    assert m.speakers["trainee"].words_per_minute is None
    assert m.speakers["trainee"].filler_rate is None
    assert m.speakers["trainee"].talk_time_ratio == 0.0


def test_interim_segments_are_skipped_and_order_is_by_audio_offset() -> None:
    shuffled = [CALL[2], {**CALL[1], "is_final": False}, CALL[0], CALL[1]]
    assert conversation_metrics(shuffled) == conversation_metrics(CALL)
    only_interim = conversation_metrics([{**CALL[0], "is_final": False}])
    assert only_interim.segments == 0


def test_models_and_mappings_give_the_same_answer() -> None:
    sid = uuid.uuid4()
    rows = [TranscriptSegment(session_id=sid, seq=i, **s) for i, s in enumerate(CALL)]
    inputs = [SegmentInput(seq=i, **s) for i, s in enumerate(CALL)]
    expected = conversation_metrics(CALL)
    assert conversation_metrics(rows) == expected
    assert conversation_metrics(inputs) == expected
    assert (
        conversation_metrics(
            [*inputs, SegmentInput(**{**inputs[0].model_dump(), "is_final": False})]
        )
        == expected
    )


def test_fillers_per_language_and_custom_lists() -> None:
    german = [seg("trainee", 0, 6, "Ähm, das ist halt so. Äh, sozusagen fertig")]
    # "Ähm," "halt" "Äh," "sozusagen"
    assert conversation_metrics(german, language="de").speakers["trainee"].filler_words == 4
    assert conversation_metrics(german, language="de-AT").speakers["trainee"].filler_words == 4
    # English fillers do not match German hesitations
    assert conversation_metrics(german, language="en").speakers["trainee"].filler_words == 0
    custom = conversation_metrics(german, language="de", fillers=["das ist", "fertig"])
    assert custom.speakers["trainee"].filler_words == 2
    assert filler_words_for("xx-YY") == DEFAULT_FILLERS["en"]
    assert filler_words_for("FR") == DEFAULT_FILLERS["fr"]


def test_phrases_match_before_single_words_and_do_not_overlap() -> None:
    text = "I mean, you know you know... I mean it"
    m = conversation_metrics([seg("trainee", 0, 5, text)], fillers=["i mean", "you know", "you"])
    # "I mean," "you know" "you know..." "I mean" -> 4, the lone "you" is never reached
    assert m.speakers["trainee"].filler_words == 4


def test_question_runs_count_once() -> None:
    m = conversation_metrics([seg("buyer", 0, 2, "Really?? Why? Okay.")])
    assert m.speakers["buyer"].questions == 2


def test_analysis_results_carry_the_trainees_numbers_and_the_breakdown() -> None:
    m = conversation_metrics(CALL)
    results = m.analysis_results()
    assert results["talk_time_ratio"] == pytest.approx(10 / 12)
    assert results["speaking_pace_wpm"] == 126.0
    assert results["filler_words_count"] == 2
    assert results["question_count"] == 2
    assert results["conversation"]["version"] == METRICS_VERSION
    assert results["conversation"]["speakers"]["buyer"]["words"] == 5
    assert not {"overall_score", "skill_scores", "sentiment_score"} & set(results)
    # a trainee who said nothing
    silent = conversation_metrics([seg("buyer", 0, 1, "hello?")]).analysis_results()
    assert silent["talk_time_ratio"] == 0.0
    assert silent["question_count"] == 0
    # an implausible pace (timestamps that cannot be right) is left out
    fast = conversation_metrics([seg("trainee", 0, 0.5, "w " * 20)]).analysis_results()
    assert fast["speaking_pace_wpm"] is None


def test_bad_segments_are_refused() -> None:
    with pytest.raises(ValueError, match="before start_ms"):
        conversation_metrics([seg("trainee", 5, 4, "x")])
    with pytest.raises(ValueError, match="needs speaker"):
        conversation_metrics([{"speaker": "trainee", "text": "x"}])


# -- the table of cases shared with the database's implementation ---------------------------


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.name)
def test_shared_cases_give_the_figures_worked_out_by_hand(case: MetricsCase) -> None:
    results = conversation_metrics(case.segments, language=case.language).analysis_results()
    for key, value in case.expected.items():
        assert results[key] == (pytest.approx(value) if isinstance(value, float) else value), key
    conversation = results["conversation"]
    assert conversation["segments"] == len(case.segments)
    assert len(conversation["speakers"]) <= MAX_RESULT_SPEAKERS
    speakers = {s["speaker"] for s in case.segments}
    assert conversation["speakers_omitted"] == len(speakers) - len(conversation["speakers"])


def test_the_breakdown_keeps_the_trainee_and_the_longest_speakers() -> None:
    many = [seg(f"s{i:03d}", i, i + 0.001 * (i + 1), "w") for i in range(MAX_RESULT_SPEAKERS + 5)]
    results = conversation_metrics([*many, seg("trainee", 0, 0.0005, "me")]).analysis_results()
    kept = set(results["conversation"]["speakers"])
    assert "trainee" in kept
    assert len(kept) == MAX_RESULT_SPEAKERS
    assert results["conversation"]["speakers_omitted"] == 6
    # the speakers with the least speaking time are the ones left out
    assert kept - {"trainee"} == {f"s{i:03d}" for i in range(6, MAX_RESULT_SPEAKERS + 5)}


def test_pace_rounds_half_up_on_the_exact_ratio() -> None:
    # 1 word in 400 s is 0.15 words per minute exactly: half up gives 0.2 (round() on the
    # float 0.15, which is below 0.15, would give 0.1)
    results = conversation_metrics([seg("trainee", 0, 400, "word")]).analysis_results()
    assert results["speaking_pace_wpm"] == 0.2
