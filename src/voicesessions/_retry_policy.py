"""How often, and how patiently, the SDK retries a call that failed transiently.

:class:`RetryPolicy` is plain configuration and does no I/O, so the async core and the
generated sync face share it; ``voicesessions._async.retry.call_with_retry`` (and its sync
twin) apply it. Only :class:`~voicesessions.errors.TransientError` is ever retried, and only
for calls the caller declares idempotent.

Backoff is exponential with full jitter: before retry ``n`` (``n = 1`` after the first
failure) the SDK sleeps a random time in ``[0, min(max_backoff_s, initial_backoff_s *
2 ** (n - 1))]``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from voicesessions.errors import ConfigurationError

#: Attempts in all (the first call and three retries).
DEFAULT_MAX_ATTEMPTS = 4
#: Upper bound of the first backoff, in seconds; it doubles with each retry.
DEFAULT_INITIAL_BACKOFF_S = 0.1
#: No backoff is longer than this, in seconds.
DEFAULT_MAX_BACKOFF_S = 5.0


@dataclass(frozen=True)
class RetryPolicy:
    """Retry transient failures of idempotent calls up to ``max_attempts`` attempts in all.

    ``initial_backoff_s`` bounds the first (jittered) wait and doubles with each retry, up to
    ``max_backoff_s``. ``RetryPolicy.none()`` never retries.
    """

    max_attempts: int = DEFAULT_MAX_ATTEMPTS
    initial_backoff_s: float = DEFAULT_INITIAL_BACKOFF_S
    max_backoff_s: float = DEFAULT_MAX_BACKOFF_S

    def __post_init__(self) -> None:
        if isinstance(self.max_attempts, bool) or not isinstance(self.max_attempts, int):
            raise ConfigurationError("max_attempts must be an integer")
        if self.max_attempts < 1:
            raise ConfigurationError("max_attempts must be at least 1 (the first call)")
        for name in ("initial_backoff_s", "max_backoff_s"):
            value = getattr(self, name)
            if (
                isinstance(value, bool)
                or not isinstance(value, (int, float))
                or not math.isfinite(value)
                or value < 0
            ):
                raise ConfigurationError(f"{name} must be a finite number of seconds >= 0")
        if self.max_backoff_s < self.initial_backoff_s:
            raise ConfigurationError("max_backoff_s must not be smaller than initial_backoff_s")

    @classmethod
    def none(cls) -> RetryPolicy:
        """A policy that makes exactly one attempt."""
        return cls(max_attempts=1)

    @property
    def retries(self) -> int:
        """How many times a failed idempotent call may be tried again."""
        return self.max_attempts - 1
