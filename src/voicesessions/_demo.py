"""``voicesessions demo``: a simulated practice call streamed through the SDK while a
subscriber prints what it hears.

The demo uses the public API, as an application would: the service role provisions the
demo company and trainee; the trainee (through ``as_user``, so RLS applies) starts a
session, subscribes to it, streams the call (interim segments as words arrive, then the
final one, and audio metrics now and then), completes it and reads the assembled transcript
back.

The demo's data is known to the database by two fixed ids (migration
``20261128001700_demo_cleanup``: ``public.demo_company`` creates or returns the demo company,
``public.demo_data`` lists what the demo left): every run reuses the demo company and the
demo trainee and adds one session. :func:`cleanup_demo` (``voicesessions demo --cleanup``)
erases every person of the demo company and the demo trainee with their accounts through the
GDPR erasure (recorded as any erasure, audio included), then removes the empty company.
"""

from __future__ import annotations

import contextlib
import dataclasses
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable
from importlib import metadata
from typing import Any

from voicesessions._sync.client import VoiceSessions
from voicesessions.errors import ConfigurationError, ConflictError, NotFoundError
from voicesessions.models import ErasureReport, SessionEvent

#: The demo trainee's login (the account has no password: nobody signs in as Dana).
DEMO_EMAIL = "demo-trainee@example.com"
DEMO_TRAINEE_NAME = "Dana Demo"

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
            self.line(f"  ~~~~~  audio    {audio_text(event.payload)}")
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
    company_created: bool


#: How the demo's audio metrics read: key -> (label, unit), in this order.
_AUDIO_LABELS = {
    "rms_dbfs": ("level", "dBFS"),
    "peak_dbfs": ("peak", "dBFS"),
    "snr_db": ("SNR", "dB"),
}
#: The event kinds in the order a reader expects them.
_EVENT_ORDER = ("transcript", "audio_metrics", "status")


def audio_text(metrics: Any) -> str:
    """Audio metrics as a person reads them: ``level -19.5 dBFS · peak -3.2 dBFS · SNR 31 dB``
    (known keys first, in that order, then any other key as ``name value``)."""
    if not metrics:
        return "none recorded"
    items = dict(metrics)
    shown = [
        f"{label} {items.pop(key)} {unit}"
        for key, (label, unit) in _AUDIO_LABELS.items()
        if key in items
    ]
    shown += [f"{key} {value}" for key, value in sorted(items.items())]
    return " · ".join(shown)


def events_text(heard: Counter[str]) -> str:
    """Event counts as ``transcript 3 · audio_metrics 3 · status 1`` (a fixed order)."""
    kinds = [k for k in _EVENT_ORDER if heard.get(k)]
    kinds += sorted(k for k in heard if k not in _EVENT_ORDER and heard[k])
    return " · ".join(f"{kind} {heard[kind]}" for kind in kinds) or "none"


def documentation_url() -> str | None:
    """The ``Documentation`` URL of the installed distribution (pyproject's
    ``project.urls``), or None when the package runs from a source tree without metadata."""
    try:
        urls = metadata.metadata("voicesessions").get_all("Project-URL") or []
    except metadata.PackageNotFoundError:
        return None
    for entry in urls:
        label, _, url = str(entry).partition(",")
        if label.strip().lower() == "documentation" and url.strip():
            return url.strip()
    return None


def _rpc(vs: VoiceSessions, function: str) -> dict[str, Any]:
    """Call one of the demo's database functions (service role)."""
    try:
        answer = vs._backend.rpc(function)
    except NotFoundError as exc:
        raise ConfigurationError(
            f"this database has no public.{function}(): apply the migrations first "
            "(`voicesessions db migrate`, or `supabase db push`)"
        ) from exc
    return dict(answer)


def _provision(vs: VoiceSessions) -> tuple[uuid.UUID, uuid.UUID, bool]:
    """The demo company (created on the first run) and the demo trainee's profile in it:
    (company id, trainee id, whether the company was created now)."""
    ids = _rpc(vs, "demo_company")
    company_id = uuid.UUID(str(ids["company_id"]))
    trainee_id = uuid.UUID(str(ids["trainee_id"]))
    try:
        vs.tenants.get_profile(trainee_id)
    except NotFoundError:
        # ConflictError: the account outlived an erasure without --include-account (or an
        # interrupted run): reuse it.
        with contextlib.suppress(ConflictError):
            vs.tenants.create_user(DEMO_EMAIL, user_id=trainee_id)
        vs.tenants.create_profile(trainee_id, company_id, display_name=DEMO_TRAINEE_NAME)
    return company_id, trainee_id, bool(ids.get("created"))


def run_demo(
    vs: VoiceSessions, *, speed: float, echo: Callable[..., None], tty: bool
) -> DemoResult:
    """Run the simulated call at ``speed`` times real time, printing through ``echo``."""
    company_id, trainee_id, created = _provision(vs)
    trainee = vs.as_user(trainee_id)
    session = trainee.sessions.create(
        trainee_id, "Discovery call with Northwind (simulated)", scenario="discovery"
    )
    turns = _timeline()
    company = vs.tenants.get_company(company_id)
    how = "created now" if created else "reused: every demo run adds its session to it"
    echo(f"Company {company.name} ({how}), trainee {DEMO_TRAINEE_NAME} ({trainee_id})")
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
    echo(f"  audio quality         {audio_text(done.audio_quality)}")
    echo(f"  events heard          {events_text(console.heard)}")
    echo(f"  status                {done.status.value}")
    echo("")
    echo("Where to go next:")
    docs = documentation_url()
    if docs:
        echo(f"  {docs}   # the documentation: quickstart, live updates, analytics")
    echo("  voicesessions --help                                 # every command")
    echo(f"  voicesessions gdpr export --user {trainee_id} -o dana.json   # all data on Dana")
    echo("  voicesessions demo --cleanup                         # remove everything the demo made")
    return DemoResult(company_id, trainee_id, session.id, created)


@dataclasses.dataclass
class DemoCleanup:
    """What :func:`cleanup_demo` removed: one erasure report per person erased now (people
    already erased, or never here, are left out), and whether the demo company was removed."""

    company_id: uuid.UUID | None
    erased: list[tuple[uuid.UUID, ErasureReport]]
    company_removed: bool

    @property
    def nothing_left(self) -> bool:
        """True when there was nothing of the demo to remove."""
        return not self.erased and not self.company_removed

    @property
    def pending_storage(self) -> int:
        """Audio files still to delete (a storage failure): run the clean-up again."""
        return sum(len(report.pending_storage) for _, report in self.erased)


def cleanup_demo(vs: VoiceSessions) -> DemoCleanup:
    """Remove everything the demo made: erase each person of the demo company and the demo
    trainee, with their accounts and audio, through the GDPR erasure; then remove the empty
    demo company. Idempotent: a second call finds nothing and changes nothing."""
    found = _rpc(vs, "demo_data")
    company = uuid.UUID(str(found["company_id"])) if found.get("company_id") else None
    people = [uuid.UUID(str(pid)) for pid in found.get("people") or []]
    trainee = uuid.UUID(str(found["trainee_id"]))
    if trainee not in people:
        people.insert(0, trainee)
    erased: list[tuple[uuid.UUID, ErasureReport]] = []
    for person in people:
        try:
            report = vs.gdpr.delete_user_session_data(person, include_account=True)
        except NotFoundError:
            continue  # never in this database
        if report.already_erased and not report.storage_removed and not report.pending_storage:
            continue
        erased.append((person, report))
    removed = bool(vs._backend.rpc("demo_remove_company"))
    return DemoCleanup(company, erased, removed)


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
