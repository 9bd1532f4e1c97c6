"""Typed models: rows as the database returns them, inputs validated before any I/O, results.

Row models ignore columns they do not know (a newer schema may add some); input models
forbid unknown fields, so a typo is an error, not silently dropped data. All are immutable.
"""

from __future__ import annotations

import uuid
from datetime import UTC, date, datetime
from decimal import Decimal
from enum import StrEnum
from typing import Annotated, Any, Generic, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from voicesessions._values import (
    FINITE,
    JSON_NUMBER,
    MAX_INT4,
    MAX_METADATA_BYTES,
    MAX_RESULTS_BYTES,
    STORED_TIMESTAMP,
    WORDS,
    StoredText,
    WordValue,
    json_object,
)

T = TypeVar("T")


class SessionStatus(StrEnum):
    """Lifecycle: active -> completed -> analyzed -> archived (and completed -> archived)."""

    ACTIVE = "active"
    COMPLETED = "completed"
    ANALYZED = "analyzed"
    ARCHIVED = "archived"


class ProcessingStatus(StrEnum):
    PENDING = "pending"
    PROCESSING = "processing"
    COMPLETE = "complete"
    FAILED = "failed"


class ProfileRole(StrEnum):
    TRAINEE = "trainee"
    MANAGER = "manager"
    ADMIN = "admin"


class ParticipantKind(StrEnum):
    TRAINEE = "trainee"
    AI_BUYER = "ai_buyer"
    COACH = "coach"
    PEER = "peer"


class Speaker(StrEnum):
    """The default speaker labels. Segments may carry any label a participant declares."""

    TRAINEE = "trainee"
    BUYER = "buyer"
    COACH = "coach"
    PEER = "peer"


class _Row(BaseModel):
    model_config = ConfigDict(frozen=True, extra="ignore")


class _Input(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", str_strip_whitespace=True)


# -- tenancy --------------------------------------------------------------------------------


#: Longest retention period the database accepts, in days (about 100 years).
MAX_RETENTION_DAYS = 36500


class RetentionPolicy(_Input):
    """Days each category of a company's data is kept (1 to 36,500); None keeps it
    indefinitely."""

    audio_days: int | None = Field(default=None, gt=0, le=MAX_RETENTION_DAYS)
    transcript_days: int | None = Field(default=None, gt=0, le=MAX_RETENTION_DAYS)
    analysis_days: int | None = Field(default=None, gt=0, le=MAX_RETENTION_DAYS)
    session_days: int | None = Field(default=None, gt=0, le=MAX_RETENTION_DAYS)

    def to_columns(self) -> dict[str, int | None]:
        return {
            "audio_retention_days": self.audio_days,
            "transcript_retention_days": self.transcript_days,
            "analysis_retention_days": self.analysis_days,
            "session_retention_days": self.session_days,
        }


class Company(_Row):
    id: uuid.UUID
    name: str
    audio_retention_days: int | None = None
    transcript_retention_days: int | None = None
    analysis_retention_days: int | None = None
    session_retention_days: int | None = None
    created_at: datetime
    updated_at: datetime

    @property
    def retention(self) -> RetentionPolicy:
        return RetentionPolicy(
            audio_days=self.audio_retention_days,
            transcript_days=self.transcript_retention_days,
            analysis_days=self.analysis_retention_days,
            session_days=self.session_retention_days,
        )


class Profile(_Row):
    id: uuid.UUID
    company_id: uuid.UUID
    role: ProfileRole
    display_name: str
    created_at: datetime
    updated_at: datetime


class Onboarding(_Row):
    """A company and its first person (``tenants.onboard``). ``created`` is False when an
    earlier identical onboarding made them (nothing was written this time)."""

    company: Company
    profile: Profile
    created: bool

    @property
    def user_id(self) -> uuid.UUID:
        """The person's auth uid (their profile's id): what ``as_user`` takes."""
        return self.profile.id


class InvitationStatus(StrEnum):
    """Where an invitation stands: ``pending`` until accepted, revoked or expired."""

    PENDING = "pending"
    ACCEPTED = "accepted"
    REVOKED = "revoked"
    EXPIRED = "expired"


class Invitation(_Row):
    """An invitation to join a company with a role, addressed to an email address or to an
    existing user (exactly one of ``email`` / ``invitee_id``). The token is never read back:
    only :class:`CreatedInvitation` (what ``invite`` returns) carries it."""

    id: uuid.UUID
    company_id: uuid.UUID
    role: ProfileRole
    email: str | None = None
    invitee_id: uuid.UUID | None = None
    invited_by: uuid.UUID | None = None
    created_at: datetime
    expires_at: datetime
    accepted_at: datetime | None = None
    accepted_by: uuid.UUID | None = None
    revoked_at: datetime | None = None

    @property
    def status(self) -> InvitationStatus:
        if self.accepted_at is not None:
            return InvitationStatus.ACCEPTED
        if self.revoked_at is not None:
            return InvitationStatus.REVOKED
        if self.expires_at <= datetime.now(self.expires_at.tzinfo):
            return InvitationStatus.EXPIRED
        return InvitationStatus.PENDING


class CreatedInvitation(Invitation):
    """A new invitation and its secret ``token``, shown only once (the database keeps only
    its SHA-256): hand it to the invitee, who passes it to ``accept_invitation``."""

    token: str = Field(repr=False)


# -- sessions -------------------------------------------------------------------------------


class SessionCreate(_Input):
    """A new session. ``metadata`` is free-form JSON (scenario, persona, pipeline ids...)."""

    profile_id: uuid.UUID
    title: StoredText = Field(min_length=1, max_length=255)
    started_at: Annotated[datetime | None, STORED_TIMESTAMP] = None
    metadata: Annotated[dict[str, Any], json_object(MAX_METADATA_BYTES)] = Field(
        default_factory=dict
    )


class Session(_Row):
    id: uuid.UUID
    profile_id: uuid.UUID
    company_id: uuid.UUID
    title: str
    status: SessionStatus
    started_at: datetime
    ended_at: datetime | None = None
    duration_seconds: int | None = None
    audio_path: str | None = None
    audio_size_bytes: int | None = None
    audio_quality: dict[str, Any] = Field(default_factory=dict)
    minute_cost: Decimal | None = None
    processing_status: ProcessingStatus = ProcessingStatus.PENDING
    analytics_summary: dict[str, Any] = Field(default_factory=dict)
    metadata: dict[str, Any] = Field(default_factory=dict)
    created_at: datetime
    updated_at: datetime


class Participant(_Row):
    id: uuid.UUID
    session_id: uuid.UUID
    profile_id: uuid.UUID | None = None
    kind: ParticipantKind
    speaker_label: str
    display_name: str | None = None
    persona: dict[str, Any] = Field(default_factory=dict)
    created_at: datetime


class Page(BaseModel, Generic[T]):
    """One page of a keyset-paginated listing. Pass ``next_cursor`` back to get the next
    page; it is None on the last page."""

    model_config = ConfigDict(frozen=True)

    items: list[T]
    next_cursor: str | None = None


# -- transcripts ----------------------------------------------------------------------------


class TranscriptSegment(_Row):
    """One final segment of a live transcript."""

    session_id: uuid.UUID
    seq: int
    speaker: str
    text: str
    start_ms: int
    end_ms: int
    confidence: float | None = None
    words: list[dict[str, WordValue]] | None = None
    segment_id: str | None = None
    created_at: datetime | None = None


class Transcript(_Row):
    """A session's transcript: the assembled row (once the session completed) and the final
    segments ordered by audio offset (start_ms, then seq)."""

    session_id: uuid.UUID
    segments: list[TranscriptSegment]
    content: str | None = None
    language: str | None = None
    word_count: int | None = None
    confidence: Decimal | None = None
    is_anonymized: bool = False
    anonymized_at: datetime | None = None

    @property
    def text(self) -> str:
        """The assembled content, or the segments joined while the session is live."""
        if self.content is not None:
            return self.content
        return "\n".join(f"{s.speaker}: {s.text}" for s in self.segments)


class TranscriptHit(_Row):
    """A transcript matching a search, best first."""

    session_id: uuid.UUID
    title: str
    started_at: datetime
    language: str
    rank: float
    snippet: str


# -- analysis -------------------------------------------------------------------------------


class AnalysisResult(_Row):
    id: uuid.UUID
    session_id: uuid.UUID
    provider: str
    analysis_type: str
    version: str
    results: dict[str, Any]
    confidence: Decimal | None = None
    processing_time_ms: int | None = None
    api_cost_usd: Decimal | None = None
    created_at: datetime


class SessionAnalytics(_Row):
    """Dashboard numbers of one session. ``sentiment_score`` comes from text or describes the
    simulated buyer, never the trainee's voice (EU AI Act Art. 5(1)(f))."""

    session_id: uuid.UUID
    profile_id: uuid.UUID
    company_id: uuid.UUID
    overall_score: int | None = None
    opening_score: int | None = None
    questioning_score: int | None = None
    objection_handling_score: int | None = None
    closing_score: int | None = None
    skill_scores: dict[str, Any] = Field(default_factory=dict)
    talk_time_ratio: Decimal | None = None
    filler_words_count: int | None = None
    speaking_pace_wpm: Decimal | None = None
    question_count: int | None = None
    sentiment_score: Decimal | None = None
    api_cost_usd: Decimal = Decimal(0)
    session_date: date
    session_hour: int
    created_at: datetime
    updated_at: datetime


# -- live updates -----------------------------------------------------------------------------


class UpdateType(StrEnum):
    TRANSCRIPT_CHUNK = "transcript_chunk"
    AUDIO_METRICS = "audio_metrics"
    STATUS_CHANGE = "status_change"


class SegmentInput(_Input):
    """A transcript segment from the voice pipeline. Only final segments are stored; interim
    ones (``is_final=False``) are broadcast to listeners and later superseded by the final
    segment with the same ``segment_id``."""

    seq: int = Field(ge=0, le=MAX_INT4)
    speaker: StoredText = Field(min_length=1, max_length=64)
    text: StoredText = Field(max_length=20000)
    start_ms: int = Field(ge=0, le=MAX_INT4)
    end_ms: int = Field(ge=0, le=MAX_INT4)
    confidence: Annotated[float | None, JSON_NUMBER] = Field(default=None, ge=0, le=1)
    words: Annotated[list[dict[str, WordValue]] | None, WORDS] = None
    segment_id: StoredText | None = Field(default=None, min_length=1, max_length=200)
    is_final: bool = True

    @field_validator("end_ms")
    @classmethod
    def _after_start(cls, end_ms: int, info: Any) -> int:
        start = info.data.get("start_ms")
        if start is not None and end_ms < start:
            raise ValueError("end_ms must not be before start_ms")
        return end_ms

    def stored(self) -> dict[str, Any]:
        """The fields the database stores for a final segment."""
        return self.model_dump(exclude={"is_final"}, exclude_none=True)


class SessionUpdate(_Input):
    """One live update of a session, as a voice pipeline emits them."""

    session_id: uuid.UUID
    update_type: UpdateType
    data: Any
    timestamp: datetime = Field(default_factory=lambda: datetime.now(UTC))


class AppendResult(_Row):
    """What an append did: final segments stored now, finals already stored (replays), and
    interim segments broadcast without being stored."""

    inserted: int
    duplicates: int
    interim: int = 0


class SessionEvent(_Row):
    """One live event of a session, as a subscriber receives it.

    ``event`` is what happened: ``"transcript"`` (payload ``{"final": [...], "interim":
    [...]}``, segments as :class:`SegmentInput` fields), ``"audio_metrics"`` (the merged
    keys), ``"status"`` (``{"status", "ended_at"}``), a name given to ``broadcast_update``,
    or one the SDK adds itself, with ``kind="control"`` (every event sent through the
    database has ``kind="event"``; the database refuses these two names, in any letter case,
    so a user's event can never pass for them):

    - ``"reconnected"``: the connection was lost and is back; events sent in between were
      missed (payload ``{"attempts", "error"}``): read the current state from the tables;
    - ``"failed"``: reconnecting gave up (payload ``{"error"}``); nothing follows.

    An event too large to travel inline (over PostgreSQL's 8,000-byte notification limit) has
    ``by_reference=True``, ``payload=None`` and its size in ``bytes``: what changed is in the
    tables. ``id`` is unique per event sent (``None`` for the SDK's own).
    """

    session_id: uuid.UUID
    event: str
    payload: dict[str, Any] | None = None
    by_reference: bool = False
    bytes: int | None = None
    id: str | None = None
    kind: Literal["event", "control"] = "event"
    received_at: datetime = Field(default_factory=lambda: datetime.now(UTC))

    @property
    def is_control(self) -> bool:
        """True for the SDK's own events (``"reconnected"``, ``"failed"``)."""
        return self.kind == "control"

    @property
    def final_segments(self) -> list[SegmentInput]:
        """The final segments of a ``transcript`` event (empty for other events)."""
        return self._segments("final")

    @property
    def interim_segments(self) -> list[SegmentInput]:
        """The interim segments of a ``transcript`` event (empty for other events)."""
        return self._segments("interim")

    def _segments(self, key: str) -> list[SegmentInput]:
        if self.event != "transcript" or not self.payload:
            return []
        # A payload is whatever was broadcast: one that is not segments is reported as
        # UnexpectedResponseError, not as pydantic's ValidationError.
        from voicesessions._validation import parse_model

        items = self.payload.get(key) or []
        if not isinstance(items, list):
            items = [items]
        return [parse_model(SegmentInput, s) for s in items]


class StreamStats(_Row):
    """What a transcript stream has done so far."""

    added: int
    inserted: int
    duplicates: int
    interim: int
    batches: int
    pending: int


# -- GDPR -----------------------------------------------------------------------------------


class GDPRRequestKind(StrEnum):
    ERASURE = "erasure"
    ANONYMIZATION = "anonymization"
    EXPORT = "export"
    RETENTION = "retention"


class GDPRRequestStatus(StrEnum):
    PENDING = "pending"
    IN_PROGRESS = "in_progress"
    COMPLETED = "completed"
    FAILED = "failed"


class StorageObject(_Row):
    """A storage object a GDPR request has to delete (``request_id`` is None in a dry run)."""

    request_id: uuid.UUID | None = None
    bucket: str
    path: str


class ErasureReport(_Row):
    """What ``delete_user_session_data`` did (or, in a dry run, would do).

    ``counts`` are rows per category; ``pending_storage`` the objects still to delete after
    the call (empty once they are gone; in a dry run, the objects it would delete);
    ``storage_removed`` how many objects this call deleted; ``status`` the request's status
    (None for a dry run or a repeated erasure that had nothing left to do).
    """

    request_id: uuid.UUID | None = None
    subject_ref: str | None = None
    dry_run: bool = False
    include_account: bool = False
    already_erased: bool = False
    counts: dict[str, int] = Field(default_factory=dict)
    categories: list[str] = Field(default_factory=list)
    pending_storage: list[StorageObject] = Field(default_factory=list)
    storage_removed: int = 0
    stores: list[str] = Field(default_factory=list)
    unreachable: list[str] = Field(default_factory=list)
    status: GDPRRequestStatus | None = None


class AnonymizationReport(_Row):
    """What ``anonymize_session_data`` did; ``already_anonymized`` when nothing was left."""

    request_id: uuid.UUID | None = None
    session_id: uuid.UUID
    already_anonymized: bool = False
    counts: dict[str, int] = Field(default_factory=dict)
    categories: list[str] = Field(default_factory=list)
    personal_keys: list[str] = Field(default_factory=list)
    pending_storage: list[StorageObject] = Field(default_factory=list)
    storage_removed: int = 0
    stores: list[str] = Field(default_factory=list)
    unreachable: list[str] = Field(default_factory=list)
    status: GDPRRequestStatus | None = None


class RetentionCompanyReport(_Row):
    """Retention in one company, summed over the batches of a run."""

    company_id: uuid.UUID
    counts: dict[str, int] = Field(default_factory=dict)
    categories: list[str] = Field(default_factory=list)
    more: bool = False
    request_ids: list[uuid.UUID] = Field(default_factory=list)
    status: GDPRRequestStatus | None = None


class RetentionFailure(_Row):
    """A company whose retention failed in a run over every company: its work of that batch
    was rolled back, the other companies' went on."""

    company_id: uuid.UUID
    sqlstate: str
    message: str


class RetentionReport(_Row):
    """What ``apply_retention_policy`` did (or, in a dry run, would do in its first batch).

    ``batches`` is the number of database calls; ``more`` is true when rows are left (a dry
    run looks at one batch only).
    """

    dry_run: bool = False
    batch_size: int
    batches: int = 0
    more: bool = False
    counts: dict[str, int] = Field(default_factory=dict)
    companies: list[RetentionCompanyReport] = Field(default_factory=list)
    request_ids: list[uuid.UUID] = Field(default_factory=list)
    pending_storage: list[StorageObject] = Field(default_factory=list)
    storage_removed: int = 0
    failures: list[RetentionFailure] = Field(default_factory=list)


class GDPRRequest(_Row):
    """A row of ``gdpr_requests``: one data-subject request or retention run."""

    id: uuid.UUID
    kind: GDPRRequestKind
    subject_ref: str | None = None
    company_id: uuid.UUID | None = None
    status: GDPRRequestStatus
    requested_by: uuid.UUID | None = None
    requested_at: datetime
    due_at: datetime
    started_at: datetime | None = None
    completed_at: datetime | None = None
    details: dict[str, Any] = Field(default_factory=dict)
    error: str | None = None
    updated_at: datetime | None = None


# -- analytics ------------------------------------------------------------------------------


class AnalysisInput(_Input):
    """One analysis of a session, as :meth:`SessionRepository.record_analysis` stores it.

    ``results`` is a JSON object; the keys overall_score (0..100), skill_scores ({skill:
    0..100}), talk_time_ratio (0..1), filler_words_count, speaking_pace_wpm,
    question_count and sentiment_score (-1..1) feed the session's analytics, anything else
    is kept as it is. ``sentiment_score`` must come from the transcript's text (or describe
    the simulated buyer), never from the trainee's voice (EU AI Act Art. 5(1)(f)). The
    database checks the shape (InvalidInputError, nothing stored).
    """

    provider: StoredText = Field(min_length=1, max_length=100)
    analysis_type: str = Field(pattern=r"^[a-z][a-z0-9_]{0,63}$")
    results: Annotated[dict[str, Any], json_object(MAX_RESULTS_BYTES)]
    version: StoredText = Field(default="1", min_length=1, max_length=50)
    confidence: Annotated[Decimal | None, FINITE] = Field(default=None, ge=0, le=1)
    processing_time_ms: int | None = Field(default=None, ge=0, le=MAX_INT4)
    api_cost_usd: Annotated[Decimal | None, FINITE] = Field(default=None, ge=0, lt=1_000_000)

    @model_validator(mode="after")
    def _whole_counts(self) -> AnalysisInput:
        # As the database reads them: integers written as integers (3, not 3.0 or True).
        for key in INTEGER_RESULT_KEYS:
            value = self.results.get(key)
            if value is not None and (isinstance(value, bool) or not isinstance(value, int)):
                raise ValueError(
                    f"results.{key} must be an integer >= 0 (written 3, not 3.0), not {value!r}"
                )
        return self


#: Keys of analysis results the database reads as integers.
INTEGER_RESULT_KEYS = ("filler_words_count", "question_count")


class CompanyMetrics(_Row):
    """A company's numbers over a window of session start times (``company_metrics``).

    Counts and sums of an empty window are 0; averages of nothing are None. Minutes are
    ended sessions' durations; ``minute_cost`` sums ``sessions.minute_cost`` (billable
    minutes); ``api_cost_usd`` the cost of every analysis of the sessions.
    """

    sessions: int
    active_users: int
    scored_sessions: int
    average_score: Decimal | None = None
    total_minutes: Decimal
    minute_cost: Decimal
    api_cost_usd: Decimal
    average_talk_ratio: Decimal | None = None
    skill_averages: dict[str, Decimal] = Field(default_factory=dict)


class SkillProgress(_Row):
    """One skill's scores over a window: earliest, latest, average, number of sessions."""

    first: Decimal
    latest: Decimal
    average: Decimal
    sessions: int


class UserProgress(_Row):
    """A person's progress over a window (``user_progress``). ``trend_per_week`` is the
    least-squares slope of the overall score in points per week (None with fewer than two
    scored sessions)."""

    sessions: int
    scored_sessions: int
    first_score: int | None = None
    latest_score: int | None = None
    average_score: Decimal | None = None
    best_score: int | None = None
    trend_per_week: Decimal | None = None
    average_talk_ratio: Decimal | None = None
    first_session_at: datetime | None = None
    last_session_at: datetime | None = None
    skills: dict[str, SkillProgress] = Field(default_factory=dict)


class TeamMember(UserProgress):
    """One trainee's row of ``team_overview``: their progress, with who they are."""

    profile_id: uuid.UUID
    display_name: str


class MetricsBucket(_Row):
    """One bucket (day, week from Monday, or month; UTC) of ``metrics_timeseries``."""

    bucket_start: date
    sessions: int
    active_users: int
    scored_sessions: int
    average_score: Decimal | None = None
    total_minutes: Decimal
    api_cost_usd: Decimal
    average_talk_ratio: Decimal | None = None


class TimeBucket(StrEnum):
    DAY = "day"
    WEEK = "week"
    MONTH = "month"
