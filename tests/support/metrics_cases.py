"""One table of transcripts on which the two implementations of the conversation metrics
must agree: ``voicesessions.metrics`` (Python) and ``private.conversation_metrics`` (the
database, on completion). tests/test_metrics.py checks the hand-worked figures of some cases
in Python; tests/db/test_metrics_sql.py completes a session holding each case's segments and
compares what the database recorded with what Python computes.

Every segment fits the table's constraints (speaker 1..64 characters, text at most 20,000,
0 <= start_ms <= end_ms < 2^31), so that both sides see the same input. ``seq`` is the
segment's position in the list (the database's input order).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from voicesessions.metrics import DEFAULT_FILLERS, MAX_RESULT_SPEAKERS


def seg(speaker: str, start_ms: int, end_ms: int, text: str = "") -> dict[str, Any]:
    return {"speaker": speaker, "start_ms": start_ms, "end_ms": end_ms, "text": text}


@dataclass(frozen=True)
class MetricsCase:
    """``segments`` in input order; ``metadata_language`` is what the session's metadata
    carries (None: no key) and ``language`` the language the metrics are computed in."""

    name: str
    segments: list[dict[str, Any]]
    language: str = "en"
    metadata_language: Any = None
    expected: dict[str, Any] = field(default_factory=dict)  # results keys worked out by hand


def _fillers_case(lang: str) -> MetricsCase:
    words = list(DEFAULT_FILLERS[lang])
    # every filler, upper-cased and wrapped in punctuation, then a few words that are not
    text = " ".join(f"«{w.upper()}»," for w in words) + " plain words here"
    return MetricsCase(
        f"fillers-{lang}",
        [seg("trainee", 0, 10_000, text), seg("buyer", 10_500, 12_000, words[0])],
        language=lang,
        metadata_language=lang,
        expected={"filler_words_count": len(words)},
    )


CASES: list[MetricsCase] = [
    MetricsCase("empty", []),
    MetricsCase(
        "discovery-call",
        [
            seg("trainee", 0, 4000, "Hi um thanks for taking my call"),
            seg("buyer", 5000, 7000, "Sure what is this about?"),
            seg(
                "trainee",
                8000,
                14000,
                "We help sales teams. You know, how do you train reps today? Any budget?",
            ),
        ],
        expected={
            "talk_time_ratio": 10 / 12,
            "filler_words_count": 2,
            "speaking_pace_wpm": 126.0,
            "question_count": 2,
        },
    ),
    MetricsCase(
        "one-speaker",
        [seg("trainee", 0, 30_000, "word " * 60), seg("trainee", 30_000, 60_000, "x?")],
        expected={"talk_time_ratio": 1.0, "speaking_pace_wpm": 61.0, "question_count": 1},
    ),
    MetricsCase(
        "only-the-buyer",
        [seg("buyer", 0, 3000, "hello? anyone?")],
        expected={"talk_time_ratio": 0.0, "filler_words_count": 0, "question_count": 0},
    ),
    MetricsCase(
        "overlapping-speakers",
        [
            seg("trainee", 0, 5000, "one two three"),
            seg("buyer", 4000, 6000, "mhm right"),
            seg("trainee", 5500, 9000, "four five"),
        ],
    ),
    MetricsCase(
        "own-overlapping-segments",
        [
            seg("trainee", 0, 3000, "a b"),
            seg("trainee", 2000, 4000, "c"),
            seg("trainee", 7000, 8000),
        ],
    ),
    MetricsCase(
        "input-order-is-not-audio-order",
        [
            seg("buyer", 9000, 9500, "late"),
            seg("trainee", 0, 1000, "first"),
            seg("trainee", 0, 1000, "same times, later seq"),
            seg("buyer", 0, 500, "shorter first"),
            seg("trainee", 3000, 3000, "zero length"),
        ],
    ),
    MetricsCase(
        "silent-segments-only",
        [seg("trainee", 1000, 1000, "words without time"), seg("buyer", 2000, 2000, "more")],
        expected={"talk_time_ratio": None, "speaking_pace_wpm": None},
    ),
    MetricsCase(
        "interruptions-and-patience",
        [
            seg("buyer", 0, 2000, "so"),
            seg("trainee", 1500, 3000, "sorry"),
            seg("buyer", 4000, 5000, "ok"),
            seg("trainee", 7000, 8000, "right"),
            seg("buyer", 7500, 7600, "mm"),
            seg("trainee", 9000, 9100, "yes"),
        ],
    ),
    MetricsCase(
        "questions",
        [seg("trainee", 0, 1000, "Really?? Why\uff1f\uff1f ? a?b? ¿qué?")],
        expected={"question_count": 6},
    ),
    MetricsCase(
        "whitespace-kinds",
        [
            seg(
                "trainee",
                0,
                2000,
                "um\u3000uh\u00a0er\tah\nhmm\u2009you\u2028know\x1cbasically  \u0085 literally",
            )
        ],
        expected={"filler_words_count": 8},
    ),
    MetricsCase(
        "filler-lookalikes",
        [
            seg(
                "trainee",
                0,
                3000,
                # Kelvin sign K lower-cases to k; dotted capital I does not lower-case to i;
                # 'you ... know' is broken by a token of punctuation; 'umm-hmm' is one token
                "\u212aind of | \u0130 mean | you ... know | umm-hmm | UM. | (uh) | you know",
            )
        ],
        expected={"filler_words_count": 4},
    ),
    MetricsCase(
        "fillers-decomposed-accents",
        [seg("trainee", 0, 1000, "A\u0308h a\u0308h äh ÄH")],
        language="de-AT",
        metadata_language="de-AT",
        expected={"filler_words_count": 2},
    ),
    MetricsCase(
        "unknown-language-uses-english",
        [seg("trainee", 0, 1000, "um euh äh")],
        language="sw",
        metadata_language="sw",
        expected={"filler_words_count": 1},
    ),
    MetricsCase(
        "language-tag-case",
        [seg("trainee", 0, 1000, "Euh ben, en fait… du coup")],
        language="FR-ca",
        metadata_language="FR-ca",
        expected={"filler_words_count": 4},
    ),
    MetricsCase(
        "not-a-language-tag",
        [seg("trainee", 0, 1000, "um euh")],
        language="en",
        metadata_language="fr_FR; drop table",
    ),
    MetricsCase(
        "language-not-a-string",
        [seg("trainee", 0, 1000, "um euh")],
        language="en",
        metadata_language=["fr"],
    ),
    MetricsCase(
        "unicode-speakers-and-text",
        [
            seg("trainee", 0, 1000, "Grüß Gott 👋🏽 ça va? 你好吗\uff1f"),
            seg("Käufer 🤖", 1200, 2500, "Ja, ähm, schön"),
            seg("x" * 64, 2600, 2700, "\u200b zero-width space is not whitespace"),
        ],
    ),
    MetricsCase(
        "pace-rounding-ties",
        # 1 word in 400 s: 0.15 words per minute, half up -> 0.2
        [seg("trainee", 0, 400_000, "word")],
        expected={"speaking_pace_wpm": 0.2},
    ),
    MetricsCase(
        "pace-exactly-1000",
        [seg("trainee", 0, 60, "word")],
        expected={"speaking_pace_wpm": 1000.0},
    ),
    MetricsCase(
        "pace-above-1000-is-left-out",
        [seg("trainee", 0, 59, "word")],
        expected={"speaking_pace_wpm": None},
    ),
    MetricsCase(
        "large-offsets",
        [
            seg("trainee", 2**31 - 10_000, 2**31 - 1, "end of a long day"),
            seg("buyer", 0, 1, "start"),
        ],
    ),
    MetricsCase(
        "many-speakers-are-capped",
        [
            seg(f"s{i:03d}", i * 100, i * 100 + 50 + (i % 7) * 10, f"w{i}")
            for i in range(MAX_RESULT_SPEAKERS + 25)
        ]
        + [seg("trainee", 0, 10, "me")],
    ),
    MetricsCase(
        "long-text",
        [seg("trainee", 0, 600_000, ("um you know " * 1666)[:20_000]), seg("buyer", 1, 2, "?")],
    ),
    *(_fillers_case(lang) for lang in sorted(DEFAULT_FILLERS)),
]
