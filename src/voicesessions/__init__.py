"""voicesessions: voice training sessions on Supabase or any PostgreSQL.

    from voicesessions import VoiceSessions
    with VoiceSessions.from_env() as vs:
        session = vs.sessions.create(profile_id, "Discovery call")

The public API is exactly the names in ``__all__``. ``AsyncVoiceSessions`` has the same
surface with ``async`` methods. Besides these, ``voicesessions.local`` (local server and
migrations), ``voicesessions.webhooks`` (the webhook app of hosted voice platforms, extra
``webhooks``) and the ``voicesessions`` command line are public.
"""

from importlib import metadata as _metadata

from voicesessions._async.client import AsyncVoiceSessions
from voicesessions._async.live import AsyncSessionEvents, AsyncSubscription, AsyncTranscriptStream
from voicesessions._hosted import PROFILE_METADATA_KEY, ImportResult, VapiAuth
from voicesessions._identity import Identity
from voicesessions._retry_policy import (
    DEFAULT_INITIAL_BACKOFF_S,
    DEFAULT_MAX_ATTEMPTS,
    DEFAULT_MAX_BACKOFF_S,
    RetryPolicy,
)
from voicesessions._sync.client import VoiceSessions
from voicesessions._sync.live import SessionEvents, Subscription, TranscriptStream
from voicesessions.audio import AudioInfo, AudioQuality, measure
from voicesessions.errors import (
    APIError,
    ConfigurationError,
    ConflictError,
    InvalidInputError,
    LocalServerError,
    MigrationError,
    NotFoundError,
    PermissionDeniedError,
    QueryTimeoutError,
    SessionNotFound,
    StreamError,
    TransientError,
    UnexpectedResponseError,
    VoiceSessionsError,
    WebhookSignatureError,
)
from voicesessions.metrics import ConversationMetrics, SpeakerMetrics
from voicesessions.models import (
    AnalysisInput,
    AnalysisResult,
    AnonymizationReport,
    AppendResult,
    Company,
    CompanyMetrics,
    CreatedInvitation,
    ErasureReport,
    GDPRRequest,
    GDPRRequestKind,
    GDPRRequestStatus,
    Invitation,
    InvitationStatus,
    MetricsBucket,
    Onboarding,
    Page,
    Participant,
    ParticipantKind,
    ProcessingStatus,
    Profile,
    ProfileRole,
    RetentionCompanyReport,
    RetentionFailure,
    RetentionPolicy,
    RetentionReport,
    SegmentInput,
    Session,
    SessionAnalytics,
    SessionCreate,
    SessionEvent,
    SessionStatus,
    SessionUpdate,
    SkillProgress,
    Speaker,
    StorageObject,
    StreamStats,
    TeamMember,
    TimeBucket,
    Transcript,
    TranscriptHit,
    TranscriptSegment,
    UpdateType,
    UserProgress,
)

try:
    #: The installed distribution's version: pyproject.toml holds the only literal.
    __version__ = _metadata.version("voicesessions")
except _metadata.PackageNotFoundError:  # a source tree on sys.path, never installed
    __version__ = "0+unknown"

__all__ = [
    "DEFAULT_INITIAL_BACKOFF_S",
    "DEFAULT_MAX_ATTEMPTS",
    "DEFAULT_MAX_BACKOFF_S",
    "PROFILE_METADATA_KEY",
    "APIError",
    # analytics
    "AnalysisInput",
    "AnalysisResult",
    "AnonymizationReport",
    "AppendResult",
    "AsyncSessionEvents",
    "AsyncSubscription",
    "AsyncTranscriptStream",
    "AsyncVoiceSessions",
    "AudioInfo",
    "AudioQuality",
    "Company",
    "CompanyMetrics",
    "ConfigurationError",
    "ConflictError",
    "ConversationMetrics",
    "CreatedInvitation",
    "ErasureReport",
    "GDPRRequest",
    "GDPRRequestKind",
    "GDPRRequestStatus",
    "Identity",
    "ImportResult",
    "InvalidInputError",
    "Invitation",
    "InvitationStatus",
    "LocalServerError",
    "MetricsBucket",
    "MigrationError",
    "NotFoundError",
    "Onboarding",
    "Page",
    "Participant",
    "ParticipantKind",
    "PermissionDeniedError",
    "ProcessingStatus",
    "Profile",
    "ProfileRole",
    "QueryTimeoutError",
    "RetentionCompanyReport",
    "RetentionFailure",
    "RetentionPolicy",
    "RetentionReport",
    "RetryPolicy",
    "SegmentInput",
    "Session",
    "SessionAnalytics",
    "SessionCreate",
    "SessionEvent",
    "SessionEvents",
    "SessionNotFound",
    "SessionStatus",
    "SessionUpdate",
    "SkillProgress",
    "Speaker",
    "SpeakerMetrics",
    "StorageObject",
    "StreamError",
    "StreamStats",
    "Subscription",
    "TeamMember",
    "TimeBucket",
    "Transcript",
    "TranscriptHit",
    "TranscriptSegment",
    "TranscriptStream",
    "TransientError",
    "UnexpectedResponseError",
    "UpdateType",
    "UserProgress",
    "VapiAuth",
    "VoiceSessions",
    "VoiceSessionsError",
    "WebhookSignatureError",
    "__version__",
    "measure",
]
