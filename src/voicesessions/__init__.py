"""voicesessions: voice training sessions on Supabase or any PostgreSQL.

    from voicesessions import VoiceSessions
    with VoiceSessions.from_env() as vs:
        session = vs.sessions.create(profile_id, "Discovery call")

The public API is exactly the names in ``__all__``. ``AsyncVoiceSessions`` has the same
surface with ``async`` methods. Besides these, ``voicesessions.local`` (local server and
migrations) and the ``voicesessions`` command line are public.
"""

from voicesessions._async.client import AsyncVoiceSessions
from voicesessions._async.live import AsyncSessionEvents, AsyncSubscription, AsyncTranscriptStream
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
    SessionNotFound,
    StreamError,
    TransientError,
    VoiceSessionsError,
)
from voicesessions.models import (
    AnalysisResult,
    AnonymizationReport,
    AppendResult,
    Company,
    ErasureReport,
    GDPRRequest,
    GDPRRequestKind,
    GDPRRequestStatus,
    Page,
    Participant,
    ParticipantKind,
    ProcessingStatus,
    Profile,
    ProfileRole,
    RetentionCompanyReport,
    RetentionPolicy,
    RetentionReport,
    SegmentInput,
    Session,
    SessionAnalytics,
    SessionCreate,
    SessionEvent,
    SessionStatus,
    SessionUpdate,
    Speaker,
    StorageObject,
    StreamStats,
    Transcript,
    TranscriptHit,
    TranscriptSegment,
    UpdateType,
)

__version__ = "0.1.0"

__all__ = [
    "DEFAULT_INITIAL_BACKOFF_S",
    "DEFAULT_MAX_ATTEMPTS",
    "DEFAULT_MAX_BACKOFF_S",
    "APIError",
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
    "ConfigurationError",
    "ConflictError",
    "ErasureReport",
    "GDPRRequest",
    "GDPRRequestKind",
    "GDPRRequestStatus",
    "Identity",
    "InvalidInputError",
    "LocalServerError",
    "MigrationError",
    "NotFoundError",
    "Page",
    "Participant",
    "ParticipantKind",
    "PermissionDeniedError",
    "ProcessingStatus",
    "Profile",
    "ProfileRole",
    "RetentionCompanyReport",
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
    "Speaker",
    "StorageObject",
    "StreamError",
    "StreamStats",
    "Subscription",
    "Transcript",
    "TranscriptHit",
    "TranscriptSegment",
    "TranscriptStream",
    "TransientError",
    "UpdateType",
    "VoiceSessions",
    "VoiceSessionsError",
    "__version__",
    "measure",
]
