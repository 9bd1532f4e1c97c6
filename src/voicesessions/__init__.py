"""voicesessions: voice training sessions on Supabase or any PostgreSQL.

The public API is exactly the names in ``__all__``; every other module is an implementation
detail, except the command line (``voicesessions``) and ``voicesessions.local`` (local server
and migration tooling).
"""

from voicesessions.errors import LocalServerError, MigrationError, VoiceSessionsError

__version__ = "0.1.0"

__all__ = [
    "LocalServerError",
    "MigrationError",
    "VoiceSessionsError",
    "__version__",
]
