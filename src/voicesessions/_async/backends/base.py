"""The backend interface: the few operations the SDK needs from a database.

Two implementations: ``SupabaseBackend`` (PostgREST, Storage and Realtime through
supabase-py) and ``PostgresBackend`` (psycopg, each call one transaction with the request
context PostgREST would set). Repositories are written once, above this interface; no query
or rule is written twice.

Contract for every implementation
- Every call runs as ``self.identity``: RLS, grants and ``auth.uid()`` apply exactly as they
  do behind PostgREST for that identity.
- Every call is atomic: one HTTP request, or one database transaction.
- Errors are raised only as ``voicesessions.errors`` exceptions (mapped with
  ``voicesessions.errors.from_sqlstate`` / ``from_postgrest``), never the library's own.
- No retries here: the retry policy lives above (``voicesessions._async.retry``), because only the
  caller knows whether a write is idempotent.

Read replicas
- ``select``, ``rpc`` and ``rpc_rows`` take ``replica_ok``: the caller (a repository, which
  alone knows whether the call tolerates replication lag: dashboards, lists, search) allows
  the backend to answer from a read replica. A backend without one ignores it; a backend
  with one never sends anything else there (writes, read-your-writes reads, live events).
- A replica found unreachable is not an error: the read goes to the primary, a warning is
  logged, and the replica is tried again :attr:`ReplicaHealth.retry_after` seconds later
  (:class:`ReplicaHealth`). Any other error of the replica is raised as it is.
"""

from __future__ import annotations

import abc
import contextlib
import logging
import time
import uuid
from collections.abc import AsyncIterator, Mapping, Sequence
from typing import Any, BinaryIO, TypeVar

from pydantic import BaseModel

from voicesessions._identity import Identity
from voicesessions._query import Filter, Order
from voicesessions._validation import parse_rows
from voicesessions.errors import ConfigurationError

Row = dict[str, Any]
M = TypeVar("M", bound=BaseModel)

logger = logging.getLogger("voicesessions")

#: Seconds a read replica found unreachable is left alone (its reads go to the primary)
#: before it is tried again.
DEFAULT_REPLICA_RETRY_S = 10.0


class ReplicaHealth:
    """Whether to send lag-tolerant reads to a backend's read replica now.

    Shared by a backend and the backends its ``as_user`` made. After :meth:`failed` (the
    replica could not be reached) reads go to the primary for ``retry_after`` seconds, then
    the next read tries the replica again; :meth:`succeeded` ends the outage.
    """

    def __init__(self, name: str, retry_after: float = DEFAULT_REPLICA_RETRY_S) -> None:
        if (
            isinstance(retry_after, bool)
            or not isinstance(retry_after, (int, float))
            or not retry_after >= 0
        ):
            raise ConfigurationError("replica_retry_after must be a number of seconds >= 0")
        self.name = name
        self.retry_after = float(retry_after)
        #: When the current outage began (``time.monotonic()``), None while reachable.
        self.down_since: float | None = None
        self._retry_at = 0.0

    def usable(self) -> bool:
        """Whether the next lag-tolerant read should try the replica."""
        return self.down_since is None or time.monotonic() >= self._retry_at

    @property
    def recovering(self) -> bool:
        """True while an outage is on: the next try should check the replica first."""
        return self.down_since is not None

    def failed(self, error: BaseException) -> None:
        """The replica could not be reached: primary only for :attr:`retry_after` seconds."""
        now = time.monotonic()
        if self.down_since is None:
            self.down_since = now
        self._retry_at = now + self.retry_after
        logger.warning(
            "read replica %s unreachable (%s): reads go to the primary, replica tried again"
            " in %.0f s",
            self.name,
            error,
            self.retry_after,
        )

    def succeeded(self) -> None:
        """A read was answered by the replica."""
        if self.down_since is not None:
            logger.info(
                "read replica %s reachable again after %.0f s: lag-tolerant reads go to it",
                self.name,
                time.monotonic() - self.down_since,
            )
            self.down_since = None


class AsyncBackend(abc.ABC):
    """What the SDK needs from a database. See the module docstring for the contract."""

    identity: Identity

    @abc.abstractmethod
    async def select(
        self,
        table: str,
        *,
        columns: Sequence[str] = ("*",),
        filters: Sequence[Filter] = (),
        order: Sequence[Order] = (),
        limit: int | None = None,
        replica_ok: bool = False,
    ) -> list[Row]:
        """Rows of ``table`` (schema public) visible to the identity, filtered and ordered.
        ``replica_ok``: the caller tolerates lag, a read replica may answer."""

    @abc.abstractmethod
    async def insert(
        self,
        table: str,
        rows: Sequence[Mapping[str, Any]],
        *,
        on_conflict: Sequence[str] | None = None,
        ignore_duplicates: bool = False,
    ) -> list[Row]:
        """Insert ``rows`` (all with the same keys) and return the inserted rows.

        ``on_conflict`` and ``ignore_duplicates=True`` go together
        (``voicesessions._query.conflict_target``): rows that conflict on those columns are
        skipped (``on conflict (...) do nothing``) and not returned. There is no upsert.
        """

    @abc.abstractmethod
    async def update(
        self, table: str, values: Mapping[str, Any], *, filters: Sequence[Filter]
    ) -> list[Row]:
        """Update the visible rows matching ``filters`` (at least one filter) and return them."""

    @abc.abstractmethod
    async def rpc(
        self,
        function: str,
        params: Mapping[str, Any] | None = None,
        *,
        replica_ok: bool = False,
    ) -> Any:
        """Call ``public.<function>`` with named parameters; return its JSON-decoded result
        (a list of rows for a set-returning function). ``replica_ok``: the caller tolerates
        lag and the function only reads (STABLE), a read replica may answer."""

    async def rpc_rows(
        self,
        function: str,
        params: Mapping[str, Any] | None,
        model: type[M],
        *,
        replica_ok: bool = False,
    ) -> list[M]:
        """Call the set-returning ``public.<function>`` as :meth:`rpc` does; return its rows
        read as ``model`` (UnexpectedResponseError for an answer that does not fit). A
        backend that receives the answer as JSON text may read the rows from it directly
        (:func:`voicesessions._validation.parse_rows_json`)."""
        return parse_rows(model, await self.rpc(function, params, replica_ok=replica_ok))

    @abc.abstractmethod
    def session_events(
        self, session_id: uuid.UUID
    ) -> contextlib.AbstractAsyncContextManager[AsyncIterator[Row | None]]:
        """Listen to the live events of one session (what ``broadcast_session_event`` sends).

        Entering the context connects and starts listening, so every event sent after it was
        entered is received; leaving it disconnects. The iterator yields each event as a dict
        ``{"id", "session_id", "event", "payload"}``, or, for one too large to carry inline,
        ``{"id", "session_id", "event", "ref": True, "bytes": n}``, in the order they were
        sent. It also yields ``None`` when nothing arrived for about a second, so a consumer
        can check whether to stop. A lost connection raises
        :class:`~voicesessions.errors.TransientError`; reconnecting is the caller's job (it
        alone knows how to tell its consumers that events may have been missed).

        Authorization is the backend's: Supabase Realtime checks the identity's RLS when the
        channel is joined; a PostgreSQL ``LISTEN`` has no per-listener authorization, so the
        caller checks the session is visible first.
        """

    @abc.abstractmethod
    async def create_auth_user(
        self,
        email: str,
        *,
        password: str | None = None,
        user_id: uuid.UUID | None = None,
    ) -> uuid.UUID:
        """Create an auth user (Supabase Auth admin API, or an ``auth.users`` row on plain
        PostgreSQL) with a confirmed email; return its id. Needs the service role."""

    @abc.abstractmethod
    async def remove_storage_objects(self, bucket: str, paths: Sequence[str]) -> list[str]:
        """Delete the objects ``paths`` of ``bucket`` (Supabase Storage, or the local store of
        the Postgres backend) and return the paths now gone, in the order given: removal is
        idempotent, so paths that were already absent are returned too. Several HTTP
        requests (or file deletions) may be needed; a failure raises after the earlier ones
        succeeded, and calling again with the same paths finishes the job."""

    @abc.abstractmethod
    async def upload_storage_object(
        self,
        bucket: str,
        path: str,
        data: bytes | BinaryIO,
        *,
        content_type: str,
        overwrite: bool = False,
    ) -> None:
        """Store ``data`` (bytes, or a binary file object read from its position to its end)
        as the object ``path`` of ``bucket`` with ``content_type``. An existing object is
        ConflictError unless ``overwrite``. Runs as the identity (Storage policies apply on
        Supabase); on failure nothing is stored."""

    @abc.abstractmethod
    async def download_storage_object(self, bucket: str, path: str) -> bytes:
        """The content of the object ``path`` of ``bucket`` (NotFoundError when absent or not
        visible to the identity)."""

    @abc.abstractmethod
    async def storage_object_url(self, bucket: str, path: str, *, expires_in: int) -> str:
        """A URL that reads the object for ``expires_in`` seconds without further
        credentials (a Storage signed URL; a ``file://`` URL for the local store, which does
        not expire). NotFoundError when the object is absent."""

    @abc.abstractmethod
    def as_user(self, user_id: uuid.UUID) -> AsyncBackend:
        """The same backend acting as the authenticated user ``user_id`` (shares resources
        with this one; closing the parent closes it)."""

    @abc.abstractmethod
    async def aclose(self) -> None:
        """Release connections and clients. Idempotent."""

    async def __aenter__(self) -> AsyncBackend:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()
