"""Conversation metrics computed from a call's final transcript segments, with no AI provider.

    from voicesessions.metrics import conversation_metrics
    m = conversation_metrics(transcript.segments, language="en")
    m.speakers["trainee"].talk_time_ratio, m.speakers["trainee"].longest_monologue_s

Pure functions: no I/O, no clock, the same answer for the same segments. Only *final*
segments count (an item with ``is_final=False`` is skipped); they are put in audio order
(start_ms, then end_ms, then input order) whatever order they come in.

Definitions (times in seconds, from the segments' ``start_ms``/``end_ms``):

- **speaking time** of a speaker: the length of the union of their segments' intervals
  (their own overlapping segments count once). While two people talk at once, each of them
  is speaking: overlap counts for both.
- **talk-time ratio** (time-based, silence excluded): a speaker's speaking time divided by
  the sum of every speaker's speaking time. Silence counts for nobody; the ratios of all
  speakers add up to 1.
- **word ratio** (word-based): a speaker's words divided by all words. A word is a
  whitespace-separated token of the text.
- **words per minute**: a speaker's words divided by their speaking time in minutes (None
  when they never spoke).
- **filler words**: tokens (or token sequences, for phrases like "you know") that match the
  language's filler list, compared lower-cased without surrounding punctuation;
  **filler rate** = filler words / words. Lists per language in :data:`DEFAULT_FILLERS`
  (by primary subtag: "en-GB" uses "en"; an unknown language uses English); pass
  ``fillers=`` to use your own.
- **questions**: the number of question marks in a speaker's text, a run such as "??"
  counting once.
- **turns**: maximal runs of consecutive segments (in audio order) by the same speaker.
  **Speaker switches** = turns - 1; **switches per minute** (interactivity) divides them by
  the conversation's duration (first start to last end) in minutes.
- **longest monologue** of a speaker: their longest turn, from its first segment's start to
  its latest end (their own pauses inside a turn count; another speaker's segment ends it).
- **patience** of a speaker: the mean pause between the end of the previous speaker's turn
  and the start of theirs, over the turns they take after someone else; starting before
  the other person finished (an **interruption**) counts as a pause of 0. For the trainee
  this is the pause before they answer the buyer.
- **silence**: the conversation's duration minus the time at least one person speaks;
  **overlap**: the time at least two people speak at once.

Ratios, rates and averages of nothing are None (an empty transcript has no talk ratio).

The database computes the same numbers itself when a session completes
(``private.conversation_metrics`` in ``supabase/migrations``), from the stored segments in
``seq`` order, with the default fillers of the session's language, and records them as the
``conversation_metrics`` analysis of provider ``voicesessions``: a user's client never sends
the figures that dashboards show. Both implementations are tested against one table of cases
(``tests/support/metrics_cases.py``).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, ConfigDict

__all__ = [
    "DEFAULT_FILLERS",
    "MAX_RESULT_SPEAKERS",
    "METRICS_VERSION",
    "ConversationMetrics",
    "SpeakerMetrics",
    "conversation_metrics",
    "filler_words_for",
]

#: Version of the definitions above; recorded as the ``version`` of conversation_metrics
#: analyses, so that changed definitions are recorded as a new analysis, not a conflict.
METRICS_VERSION = "voicesessions.metrics/2"

#: At most this many speakers are broken down in :meth:`ConversationMetrics.analysis_results`
#: (the trainee first, then by speaking time, then by label); the others are counted in
#: ``speakers_omitted``. Keeps the recorded analysis small whatever the transcript holds.
MAX_RESULT_SPEAKERS = 50

#: Filler words and phrases per language (primary subtag). Hesitation sounds and the common
#: verbal tics of each language; words that are usually meant ("like", "actually") are left
#: out, because counting them would accuse a rep of fillers they did not use.
DEFAULT_FILLERS: Mapping[str, tuple[str, ...]] = {
    "en": (
        "um",
        "umm",
        "uh",
        "uhm",
        "er",
        "erm",
        "ah",
        "hmm",
        "you know",
        "i mean",
        "basically",
        "literally",
        "sort of",
        "kind of",
    ),
    "de": ("äh", "ähm", "öh", "öhm", "hm", "hmm", "sozusagen", "quasi", "halt", "irgendwie"),
    "fr": ("euh", "heu", "bah", "ben", "en fait", "du coup", "tu vois", "genre"),
    "es": ("eh", "em", "este", "o sea", "pues", "sabes"),
    "it": ("ehm", "eh", "cioè", "tipo", "diciamo", "insomma"),
    "nl": ("eh", "ehm", "uh", "uhm", "zeg maar", "nou"),
    "pt": ("hum", "é", "tipo", "né", "quer dizer", "então"),
}

_QUESTION = re.compile("[?\uff1f]+")  # ASCII and full-width question marks
# Punctuation stripped from both ends of a token before it is compared with the fillers.
_EDGE_PUNCTUATION = (
    "\"'.,;:!?()[]{}-\u201c\u201d\u2018\u2019\u00ab\u00bb\u201e\u201a\u00bf\u00a1\u2026\u2013\u2014"
)


class SpeakerMetrics(BaseModel):
    """One speaker's numbers (see the module docstring for each definition)."""

    model_config = ConfigDict(frozen=True)

    speaker: str
    segments: int
    words: int
    talk_time_s: float
    talk_time_ratio: float | None
    word_ratio: float | None
    words_per_minute: float | None
    filler_words: int
    filler_rate: float | None
    questions: int
    turns: int
    longest_monologue_s: float
    patience_s: float | None
    interruptions: int


class ConversationMetrics(BaseModel):
    """Conversation metrics of one call, per speaker and overall.

    Computed from the transcript's text and timing only: nothing here is inferred from
    anyone's voice (emotion recognition from an employee's voice is prohibited by the EU AI
    Act, Art. 5(1)(f)).
    """

    model_config = ConfigDict(frozen=True)

    version: str = METRICS_VERSION
    language: str
    segments: int
    words: int
    duration_s: float
    talk_time_s: float
    silence_s: float
    overlap_s: float
    turns: int
    speaker_switches: int
    switches_per_minute: float | None
    speakers: dict[str, SpeakerMetrics]

    def speaker(self, label: str) -> SpeakerMetrics | None:
        """The numbers of the speaker ``label``, or None if they never spoke."""
        return self.speakers.get(label)

    def analysis_results(self, trainee: str = "trainee") -> dict[str, Any]:
        """The ``results`` of a ``conversation_metrics`` analysis: the trainee's numbers under
        the keys that feed ``session_analytics`` (talk_time_ratio, filler_words_count,
        speaking_pace_wpm, question_count) and the breakdown under ``conversation``.

        ``speaking_pace_wpm`` is the trainee's words per minute of speaking time rounded to
        one decimal, half up, on the exact ratio (``words * 60000 / talk_ms``), and left out
        (None) above 1,000 words per minute (timestamps that cannot be right). The breakdown
        lists at most :data:`MAX_RESULT_SPEAKERS` speakers (the trainee first, then the
        longest speaking time, then the label in code-point order); ``speakers_omitted``
        counts the others."""
        own = self.speakers.get(trainee)
        conversation = self.model_dump(mode="json")
        kept = sorted(
            self.speakers.values(),
            key=lambda m: (m.speaker != trainee, -_ms(m.talk_time_s), m.speaker),
        )[:MAX_RESULT_SPEAKERS]
        conversation["speakers"] = {
            m.speaker: conversation["speakers"][m.speaker] for m in sorted(kept, key=_label)
        }
        conversation["speakers_omitted"] = len(self.speakers) - len(kept)
        return {
            # a trainee who never spoke while others did had a share of 0
            "talk_time_ratio": own.talk_time_ratio
            if own is not None
            else (0.0 if self.talk_time_s > 0 else None),
            "filler_words_count": 0 if own is None else own.filler_words,
            "speaking_pace_wpm": None if own is None else _pace(own.words, _ms(own.talk_time_s)),
            "question_count": 0 if own is None else own.questions,
            "trainee_speaker": trainee,
            "conversation": conversation,
        }


def _ms(seconds: float) -> int:
    return round(seconds * 1000)


def _label(m: SpeakerMetrics) -> str:
    return m.speaker


def _pace(words: int, talk_ms: int) -> float | None:
    """Words per minute rounded to 0.1 half up on the exact ratio; None when not measurable
    or above 1,000 (integer arithmetic only, so that SQL computes the very same number)."""
    if talk_ms <= 0 or words * 60 > talk_ms:
        return None
    return ((words * 1_200_000 + talk_ms) // (2 * talk_ms)) / 10


@dataclass(frozen=True)
class _Segment:
    order: int
    speaker: str
    text: str
    start_ms: int
    end_ms: int


def filler_words_for(language: str | None) -> tuple[str, ...]:
    """The default fillers of a BCP-47 language tag (by primary subtag; English otherwise)."""
    primary = (language or "en").split("-")[0].lower()
    return tuple(DEFAULT_FILLERS.get(primary, DEFAULT_FILLERS["en"]))


def conversation_metrics(
    segments: Iterable[Any],
    *,
    language: str = "en",
    fillers: Iterable[str] | None = None,
) -> ConversationMetrics:
    """Conversation metrics of the final segments (see the module docstring).

    ``segments`` are :class:`~voicesessions.TranscriptSegment`,
    :class:`~voicesessions.SegmentInput` or mappings with ``speaker``, ``text``,
    ``start_ms`` and ``end_ms`` (``is_final`` optional). ``fillers`` replaces the language's
    default filler list.
    """
    items = _finals(segments)
    phrases = _filler_phrases(filler_words_for(language) if fillers is None else fillers)
    by_speaker: dict[str, list[_Segment]] = {}
    for seg in items:
        by_speaker.setdefault(seg.speaker, []).append(seg)

    talk_ms = {
        s: _union_length([(g.start_ms, g.end_ms) for g in gs]) for s, gs in by_speaker.items()
    }
    words = {s: sum(len(g.text.split()) for g in gs) for s, gs in by_speaker.items()}
    total_talk = sum(talk_ms.values())
    total_words = sum(words.values())
    turns = _turns(items)
    monologue, patience, interruptions, turn_counts = _turn_stats(turns)

    speakers: dict[str, SpeakerMetrics] = {}
    for label, segs in by_speaker.items():
        fill = sum(_count_fillers(g.text, phrases) for g in segs)
        minutes = talk_ms[label] / 60_000
        pauses = patience.get(label, [])
        speakers[label] = SpeakerMetrics(
            speaker=label,
            segments=len(segs),
            words=words[label],
            talk_time_s=talk_ms[label] / 1000,
            talk_time_ratio=_ratio(talk_ms[label], total_talk),
            word_ratio=_ratio(words[label], total_words),
            words_per_minute=words[label] / minutes if minutes > 0 else None,
            filler_words=fill,
            filler_rate=_ratio(fill, words[label]),
            questions=sum(len(_QUESTION.findall(g.text)) for g in segs),
            turns=turn_counts.get(label, 0),
            longest_monologue_s=monologue.get(label, 0) / 1000,
            patience_s=sum(pauses) / len(pauses) / 1000 if pauses else None,
            interruptions=interruptions.get(label, 0),
        )

    intervals = [(g.start_ms, g.end_ms) for g in items]
    duration_ms = (max(g.end_ms for g in items) - items[0].start_ms) if items else 0
    anyone_ms = _union_length(intervals)
    switches = max(len(turns) - 1, 0)
    return ConversationMetrics(
        language=language,
        segments=len(items),
        words=total_words,
        duration_s=duration_ms / 1000,
        talk_time_s=anyone_ms / 1000,
        silence_s=(duration_ms - anyone_ms) / 1000,
        overlap_s=_overlap_length(list(by_speaker.values())) / 1000,
        turns=len(turns),
        speaker_switches=switches,
        switches_per_minute=switches / (duration_ms / 60_000) if duration_ms > 0 else None,
        speakers=dict(sorted(speakers.items())),
    )


# -- the pieces -------------------------------------------------------------------------------


def _finals(segments: Iterable[Any]) -> list[_Segment]:
    found = []
    for order, raw in enumerate(segments):
        fields = raw if isinstance(raw, Mapping) else vars(raw) if hasattr(raw, "__dict__") else {}
        if fields.get("is_final", True) is False:
            continue
        try:
            start, end = int(fields["start_ms"]), int(fields["end_ms"])
            speaker, text = str(fields["speaker"]), str(fields.get("text") or "")
        except (KeyError, TypeError, ValueError) as exc:
            raise ValueError(
                f"segment {order} needs speaker, text, start_ms and end_ms: {exc}"
            ) from exc
        if end < start:
            raise ValueError(f"segment {order}: end_ms {end} is before start_ms {start}")
        found.append(_Segment(order, speaker, text, start, end))
    found.sort(key=lambda g: (g.start_ms, g.end_ms, g.order))
    return found


def _merge(intervals: Iterable[tuple[int, int]]) -> list[tuple[int, int]]:
    merged: list[tuple[int, int]] = []
    for start, end in sorted(intervals):
        if merged and start <= merged[-1][1]:
            merged[-1] = (merged[-1][0], max(merged[-1][1], end))
        else:
            merged.append((start, end))
    return merged


def _union_length(intervals: Iterable[tuple[int, int]]) -> int:
    return sum(end - start for start, end in _merge(intervals))


def _overlap_length(per_speaker: Sequence[Sequence[_Segment]]) -> int:
    """Time during which at least two speakers speak: a sweep over each speaker's merged
    intervals, counting where two or more are open."""
    events: list[tuple[int, int]] = []
    for segs in per_speaker:
        for start, end in _merge((g.start_ms, g.end_ms) for g in segs):
            events += [(start, 1), (end, -1)]
    events.sort(key=lambda e: (e[0], e[1]))  # ends before starts at the same instant
    total, open_count, last = 0, 0, 0
    for at, delta in events:
        if open_count >= 2:
            total += at - last
        open_count += delta
        last = at
    return total


def _turns(items: Sequence[_Segment]) -> list[list[_Segment]]:
    turns: list[list[_Segment]] = []
    for seg in items:
        if turns and turns[-1][0].speaker == seg.speaker:
            turns[-1].append(seg)
        else:
            turns.append([seg])
    return turns


def _turn_stats(
    turns: Sequence[Sequence[_Segment]],
) -> tuple[dict[str, int], dict[str, list[int]], dict[str, int], dict[str, int]]:
    """Per speaker: longest turn (ms), pauses before their turns that follow someone else
    (ms, interruptions as 0), interruptions, and number of turns."""
    longest: dict[str, int] = {}
    pauses: dict[str, list[int]] = {}
    interruptions: dict[str, int] = {}
    counts: dict[str, int] = {}
    previous_end: int | None = None
    for turn in turns:
        label = turn[0].speaker
        start, end = turn[0].start_ms, max(g.end_ms for g in turn)
        longest[label] = max(longest.get(label, 0), end - start)
        counts[label] = counts.get(label, 0) + 1
        if previous_end is not None:
            gap = start - previous_end
            pauses.setdefault(label, []).append(max(gap, 0))
            if gap < 0:
                interruptions[label] = interruptions.get(label, 0) + 1
        previous_end = end
    return longest, pauses, interruptions, counts


def _filler_phrases(fillers: Iterable[str]) -> list[tuple[str, ...]]:
    phrases = {tuple(_normalize(t) for t in f.split()) for f in fillers if f.split()}
    # Longest first, so that "you know" is matched before a one-word "you" would be.
    return sorted(phrases, key=lambda p: (-len(p), p))


def _normalize(token: str) -> str:
    return token.strip(_EDGE_PUNCTUATION).lower()


def _count_fillers(text: str, phrases: Sequence[tuple[str, ...]]) -> int:
    """Non-overlapping occurrences of the filler phrases in ``text``, left to right, the
    longest phrase first at each position."""
    tokens = [_normalize(t) for t in text.split()]
    count, i = 0, 0
    while i < len(tokens):
        for phrase in phrases:
            if tuple(tokens[i : i + len(phrase)]) == phrase:
                count += 1
                i += len(phrase)
                break
        else:
            i += 1
    return count


def _ratio(part: float, whole: float) -> float | None:
    return part / whole if whole else None
