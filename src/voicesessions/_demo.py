"""``voicesessions demo``: a simulated practice call streamed through the SDK while a
subscriber prints what it hears.

The demo uses only the public API, as an application would: the service role creates a
company and a trainee; the trainee (through ``as_user``, so RLS applies) starts a session,
subscribes to it, streams the call (interim segments as words arrive, then the final one,
and audio metrics now and then), completes it and reads the assembled transcript back.
"""

from __future__ import annotations

import dataclasses
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable
from typing import Any

from voicesessions._sync.client import VoiceSessions
from voicesessions.models import SessionEvent

#: The simulated call: (speaker, words). Timing is derived from the words.
SCRIPT: tuple[tuple[str, str], ...] = (
    ("trainee", "Hi Morgan, this is Dana from Brightline. Thanks for making time today."),
    ("buyer", "Sure. I have about fifteen minutes, so let's keep it focused."),
    ("trainee", "Of course. What made you take this call, what is going on with collections?"),
    ("buyer", "Honestly our finance team chases invoices by hand and it eats two days a month."),
    ("trainee", "Two days a month. Um, what does that cost you when quarter end comes around?"),
    ("buyer", "Quarter end is the worst. We pay overtime and still close late."),
    ("trainee", "If invoices were chased automatically, what would your team do instead?"),
    ("buyer", "Analysis, probably. But we tried a tool last year and nobody used it."),
    ("trainee", "Why do you think nobody used it? What got in the way?"),
    ("buyer", "It did not talk to our ERP, so people kept two systems in sync by hand."),
    ("trainee", "That makes sense. We integrate with your ERP directly, no double entry."),
    ("buyer", "Um, I would need to see that working. And what does it cost?"),
    ("trainee", "Fair question. So, um, can I show you a short demo with your own data first?"),
    ("buyer", "Okay. Send me two times next week and include our controller, Sam."),
    ("trainee", "Will do. Thanks Morgan, I'll send the invite today."),
)

#: Words per minute of each speaker, for the simulated audio offsets.
_WPM = {"trainee": 155.0, "buyer": 140.0}
#: Pause before each turn, in milliseconds (cycled).
_PAUSES_MS = (700, 450, 900, 350, 600)


@dataclasses.dataclass(frozen=True)
class _Turn:
    seq: int
    speaker: str
    text: str
    start_ms: int
    end_ms: int


def _timeline() -> list[_Turn]:
    turns, clock = [], 1200
    for seq, (speaker, text) in enumerate(SCRIPT):
        clock += _PAUSES_MS[seq % len(_PAUSES_MS)]
        length = round(len(text.split()) / _WPM[speaker] * 60_000)
        turns.append(_Turn(seq, speaker, text, clock, clock + length))
        clock += length
    return turns


class _Console:
    """Prints event lines (from the subscriber's thread) and a progress line (on a TTY)."""

    def __init__(self, echo: Callable[..., None], tty: bool, total: int) -> None:
        self._echo = echo
        self._tty = tty
        self._total = total
        self._done = 0
        self._lock = threading.Lock()
        self.heard: Counter[str] = Counter()
        self.interim_heard = 0
        self.completed = threading.Event()

    def line(self, text: str) -> None:
        with self._lock:
            if self._tty:
                self._echo("\r\033[K" + text)
                self._draw()
            else:
                self._echo(text)

    def progress(self, done: int) -> None:
        with self._lock:
            self._done = done
            if self._tty:
                self._draw()

    def _draw(self) -> None:
        width = 24
        filled = round(width * self._done / self._total)
        bar = "#" * filled + "-" * (width - filled)
        self._echo(f"\r[{bar}] turn {self._done}/{self._total}", nl=False)

    def finish(self) -> None:
        if self._tty:
            with self._lock:
                self._echo("\r\033[K", nl=False)

    def on_event(self, event: SessionEvent) -> None:
        self.heard[event.event] += 1
        if event.event == "transcript":
            for segment in event.final_segments:
                clock = f"{segment.start_ms // 60000:02d}:{segment.start_ms // 1000 % 60:02d}"
                self.line(f"  {clock}  {segment.speaker:<8} {segment.text}")
            self.interim_heard += len(event.interim_segments)
        elif event.event == "audio_metrics" and event.payload:
            shown = " · ".join(f"{k} {v}" for k, v in sorted(event.payload.items()))
            self.line(f"  ~~~~~  audio    {shown}")
        elif event.event == "status" and event.payload:
            self.line(f"  -----  status   {event.payload.get('status')}")
            if event.payload.get("status") == "completed":
                self.completed.set()
        else:
            self.line(f"  -----  {event.event}")


def _metrics(turn: _Turn) -> dict[str, Any]:
    """Plausible audio levels for the turn (the demo has no audio file to measure)."""
    wobble = (turn.seq * 7 % 5) / 10
    return {
        "rms_dbfs": round(-19.5 - wobble, 1),
        "peak_dbfs": round(-3.2 - wobble, 1),
        "snr_db": 31,
    }


@dataclasses.dataclass
class DemoResult:
    company_id: uuid.UUID
    trainee_id: uuid.UUID
    session_id: uuid.UUID


def run_demo(
    vs: VoiceSessions, *, speed: float, echo: Callable[..., None], tty: bool
) -> DemoResult:
    """Run the simulated call at ``speed`` times real time, printing through ``echo``."""
    tag = uuid.uuid4().hex[:8]
    company = vs.tenants.create_company(f"Demo Sales Academy {tag}")
    trainee_id = vs.tenants.create_user(f"demo-trainee-{tag}@example.com")
    vs.tenants.create_profile(trainee_id, company.id, display_name="Dana Demo")
    trainee = vs.as_user(trainee_id)
    session = trainee.sessions.create(
        trainee_id, "Discovery call with Northwind (simulated)", scenario="discovery"
    )
    turns = _timeline()
    echo(f"Company {company.name}, trainee Dana Demo ({trainee_id})")
    echo(f"Session {session.id}: {len(turns)} turns, {turns[-1].end_ms / 1000:.0f} s of call")
    echo("Live, as a subscriber hears it:")

    console = _Console(echo, tty, len(turns))
    started = time.monotonic()
    with trainee.updates.subscribe(session.id, console.on_event):
        with trainee.updates.stream(session.id, max_batch=20, max_delay_s=0.1) as stream:
            for turn in turns:
                _speak(stream, turn, speed)
                if turn.seq % 4 == 3:
                    trainee.updates.update_audio_metrics(session.id, _metrics(turn))
                console.progress(turn.seq + 1)
        trainee.updates.update_session_status(session.id, "completed")
        console.completed.wait(timeout=10)
    console.finish()
    elapsed = time.monotonic() - started

    transcript = trainee.sessions.get_transcript(session.id)
    done = trainee.sessions.get(session.id)
    analytics = trainee.sessions.get_analytics(session.id)  # recorded when it completed
    echo("")
    echo("Transcript, as stored:")
    echo(transcript.text)
    echo("")
    echo("Numbers:")
    echo(f"  call length           {turns[-1].end_ms / 1000:.0f} s, streamed in {elapsed:.1f} s")
    echo(f"  segments stored       {len(transcript.segments)} (each once, in audio order)")
    echo(f"  interim updates       {console.interim_heard} heard live, none stored")
    echo(f"  words                 {transcript.word_count}")
    echo(f"  trainee talk share    {_percent(analytics.talk_time_ratio)} (time, silence excluded)")
    echo(f"  trainee pace          {analytics.speaking_pace_wpm} words/min")
    echo(f"  trainee questions     {analytics.question_count}")
    echo(f"  filler words          {analytics.filler_words_count}")
    echo(f"  audio quality         {done.audio_quality}")
    echo(f"  events heard          {dict(sorted(console.heard.items()))}")
    echo(f"  status                {done.status.value}")
    echo("")
    echo("Where to go next:")
    echo("  README.md: the Python quickstart, live updates (events/subscribe/stream), analytics")
    echo(f"  voicesessions gdpr export --user {trainee_id} -o dana.json   # all data on Dana")
    echo(f"  voicesessions gdpr erase --user {trainee_id} --yes           # remove the demo data")
    return DemoResult(company.id, trainee_id, session.id)


def _percent(ratio: Any) -> str:
    return "n/a" if ratio is None else f"{float(ratio):.0%}"


def _speak(stream: Any, turn: _Turn, speed: float) -> None:
    """Stream one turn: interim segments as the words come, then the final one."""
    words = turn.text.split()
    steps = 3
    length = turn.end_ms - turn.start_ms
    for step in range(1, steps):
        time.sleep(length / steps / 1000 / speed)
        partial = " ".join(words[: len(words) * step // steps])
        stream.add(_segment(turn, partial, turn.start_ms + length * step // steps, final=False))
    time.sleep(length / steps / 1000 / speed)
    stream.add(_segment(turn, turn.text, turn.end_ms, final=True))


def _segment(turn: _Turn, text: str, end_ms: int, *, final: bool) -> dict[str, Any]:
    return {
        "seq": turn.seq,
        "speaker": turn.speaker,
        "text": text,
        "start_ms": turn.start_ms,
        "end_ms": end_ms,
        "confidence": 0.93 if final else 0.6,
        "segment_id": f"turn-{turn.seq}",
        "is_final": final,
    }
