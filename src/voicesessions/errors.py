"""Exceptions raised by voicesessions.

Every error the package raises derives from :class:`VoiceSessionsError`::

    VoiceSessionsError
    ├── LocalServerError      the embedded local PostgreSQL could not be found, set up or run
    └── MigrationError        a migration or the compatibility bootstrap failed to apply
"""

from __future__ import annotations


class VoiceSessionsError(Exception):
    """Base class of every error raised by voicesessions."""


class LocalServerError(VoiceSessionsError):
    """The embedded local PostgreSQL could not be found, initialised, started or stopped."""


class MigrationError(VoiceSessionsError):
    """A migration (or the Supabase-compatibility bootstrap) failed; nothing of it was kept.

    ``version`` names the migration that failed, ``sqlstate`` is PostgreSQL's error code.
    """

    def __init__(self, message: str, *, version: str | None = None, sqlstate: str | None = None):
        super().__init__(message)
        self.version = version
        self.sqlstate = sqlstate
