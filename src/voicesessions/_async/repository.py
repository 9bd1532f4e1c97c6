"""SessionRepository: sessions, their lifecycle and their transcripts.

Every rule (who may see or change a session, which status transitions are legal, which
company a session belongs to) is enforced by the database; this class validates input
before any I/O, calls the backend, retries what the database makes idempotent, and turns
rows into typed models.
"""

from __future__ import annotations

import builtins
import contextlib
import io
import logging
import os
import re
import shutil
import tempfile
import uuid
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import voicesessions.audio
from voicesessions._arguments import checked_arguments
from voicesessions._query import Order, eq
from voicesessions._validation import (
    as_uuid,
    decode_cursor,
    encode_cursor,
    parse_model,
    reading,
    validate,
    validate_mapping,
)
from voicesessions._validation import rows_of as _rows
from voicesessions._values import check_text, check_timestamp
from voicesessions.audio import (
    SESSION_AUDIO_FORMATS,
    AudioInfo,
    AudioSource,
)
from voicesessions.errors import (
    ConflictError,
    InvalidInputError,
    NotFoundError,
    PermissionDeniedError,
    brief,
)
from voicesessions.models import (
    AnalysisInput,
    AnalysisResult,
    Page,
    Session,
    SessionAnalytics,
    SessionCreate,
    SessionStatus,
    Transcript,
    TranscriptHit,
    TranscriptSegment,
)

from .backends.base import Row
from .resource import Resource, session_not_found

#: Default and largest page size of :meth:`AsyncSessionRepository.list`.
DEFAULT_PAGE_SIZE = 50
MAX_PAGE_SIZE = 500
#: Default and largest number of hits of :meth:`AsyncSessionRepository.search_transcripts`.
DEFAULT_SEARCH_LIMIT = 20
MAX_SEARCH_LIMIT = 100
#: The private bucket of session recordings (paths ``<company>/<profile>/<session>.<ext>``).
AUDIO_BUCKET = "session-audio"
#: Default lifetime of :meth:`AsyncSessionRepository.audio_url`, in seconds.
DEFAULT_AUDIO_URL_EXPIRY_S = 3600

logger = logging.getLogger("voicesessions")

#: The page class of sessions, made once: pydantic keeps parametrized generics only weakly,
#: so ``Page[Session]`` written in a method may rebuild the class on a later call.
_SessionPage = Page[Session]

_CONTENT_TYPE = re.compile(r"[a-z]+/[a-z0-9][a-z0-9.+-]*")


@checked_arguments
class AsyncSessionRepository(Resource):
    """Create, read, list and move sessions through their lifecycle.

    A session another company owns, or one RLS hides from the caller, is
    :class:`~voicesessions.errors.SessionNotFound`, never an empty success.
    """

    async def create(
        self,
        profile_id: uuid.UUID | str,
        title: str,
        *,
        started_at: datetime | None = None,
        **metadata: Any,
    ) -> Session:
        """Start a session for ``profile_id`` (status ``active``); keyword arguments become its
        ``metadata``. The database sets ``company_id`` from the owner's profile.

        Safe to retry: the id is chosen here, so a retried insert finds the first one.
        """
        data = validate(
            SessionCreate,
            profile_id=profile_id,
            title=title,
            started_at=started_at,
            metadata=metadata,
        )
        row: dict[str, Any] = {
            "id": uuid.uuid4(),
            "profile_id": data.profile_id,
            "title": data.title,
            "metadata": data.metadata,
        }
        if data.started_at is not None:
            row["started_at"] = data.started_at
        inserted = await self._call(
            lambda: self._backend.insert(
                "sessions", [row], on_conflict=("id",), ignore_duplicates=True
            ),
            idempotent=True,
        )
        if inserted:
            return parse_model(Session, inserted[0])
        return await self.get(row["id"])

    async def get(self, session_id: uuid.UUID | str) -> Session:
        """The session, or SessionNotFound when it does not exist or is not visible."""
        sid = as_uuid(session_id, "session_id")
        rows = await self._call(
            lambda: self._backend.select("sessions", filters=(eq("id", sid),), limit=1),
            idempotent=True,
        )
        if not rows:
            raise session_not_found(sid)
        return parse_model(Session, rows[0])

    async def list(
        self,
        *,
        company_id: uuid.UUID | str | None = None,
        profile_id: uuid.UUID | str | None = None,
        status: SessionStatus | str | None = None,
        started_after: datetime | None = None,
        started_before: datetime | None = None,
        limit: int = DEFAULT_PAGE_SIZE,
        cursor: str | None = None,
    ) -> Page[Session]:
        """Visible sessions, newest first (started_at, then id: a total, stable order).

        Keyset pagination: pass the returned ``next_cursor`` to get the following page;
        rows inserted meanwhile never make a page skip or repeat a row. Served by the read
        replica when the client has one (``read_dsn`` / ``read_url``): a session created
        or changed a moment ago may not be listed yet, or listed as it was (:meth:`get`
        reads the primary).
        """
        if not 1 <= limit <= MAX_PAGE_SIZE:
            raise InvalidInputError(f"limit must be between 1 and {MAX_PAGE_SIZE}, not {limit}")
        params: dict[str, Any] = {
            "company_id": None if company_id is None else as_uuid(company_id, "company_id"),
            "profile_id": None if profile_id is None else as_uuid(profile_id, "profile_id"),
            "status": None if status is None else _status(status).value,
            "started_after": started_after,
            "started_before": started_before,
            "max_rows": limit + 1,
        }
        if cursor is not None:
            params["after_started_at"], params["after_id"] = decode_cursor(cursor)
        items = await self._call(
            lambda: self._backend.rpc_rows("list_sessions", params, Session, replica_ok=True),
            idempotent=True,
        )
        next_cursor = None
        if len(items) > limit:
            items = items[:limit]
            next_cursor = encode_cursor(items[-1].started_at, items[-1].id)
        return _SessionPage(items=items, next_cursor=next_cursor)

    async def update_status(
        self, session_id: uuid.UUID | str, status: SessionStatus | str
    ) -> Session:
        """Move the session to ``status`` along its lifecycle. An illegal transition is a
        :class:`~voicesessions.errors.ConflictError` with code ``VS001``; so is ``analyzed``
        for a session without an analysis (recording one moves it there). Setting the status
        it already has changes nothing. Moving it to ``completed`` is :meth:`complete`."""
        return await self._set(session_id, {"status": _status(status).value})

    async def complete(
        self,
        session_id: uuid.UUID | str,
        *,
        ended_at: datetime | None = None,
    ) -> Session:
        """End an active session: one database write.

        ``ended_at`` defaults to the server's clock (capped at 12 hours after the start); one
        given must lie between ``started_at`` and 5 minutes after the server's clock, at most
        12 hours after the start (InvalidInputError otherwise), and is fixed from then on.
        In the same transaction the database assembles the transcript and measures the call
        (:mod:`voicesessions.metrics`, over its stored segments, with the default fillers of
        ``metadata["language"]``), recording the ``conversation_metrics`` analysis of
        provider ``voicesessions`` that dashboards read; a session without segments gets
        none. Safe to retry: completing a completed session changes nothing.
        """
        values: dict[str, Any] = {"status": SessionStatus.COMPLETED.value}
        if ended_at is not None:
            values["ended_at"] = check_timestamp(ended_at, "ended_at")
        return await self._set(session_id, values)

    async def archive(self, session_id: uuid.UUID | str) -> Session:
        """Archive a completed or analyzed session."""
        return await self._set(session_id, {"status": SessionStatus.ARCHIVED.value})

    async def get_transcript(self, session_id: uuid.UUID | str) -> Transcript:
        """The session's final segments ordered by audio offset (start_ms, then seq), with the
        assembled transcript once the session has completed."""
        session = await self.get(session_id)
        segments = await self._call(
            lambda: self._backend.select(
                "transcript_segments",
                columns=_SEGMENT_COLUMNS,
                filters=(eq("session_id", session.id),),
                order=(Order("start_ms"), Order("seq")),
            ),
            idempotent=True,
        )
        assembled = await self._call(
            lambda: self._backend.select(
                "transcripts", filters=(eq("session_id", session.id),), limit=1
            ),
            idempotent=True,
        )
        extra: Row = {}
        if assembled:
            row = assembled[0]
            extra = {
                k: row.get(k)
                for k in (
                    "content",
                    "language",
                    "word_count",
                    "confidence",
                    "is_anonymized",
                    "anonymized_at",
                )
            }
        return parse_model(
            Transcript,
            {
                "session_id": session.id,
                "segments": [parse_model(TranscriptSegment, s) for s in segments],
                **extra,
            },
        )

    async def search_transcripts(
        self, query: str, *, limit: int = DEFAULT_SEARCH_LIMIT
    ) -> builtins.list[TranscriptHit]:
        """Completed sessions whose transcript matches ``query`` (web-search syntax: words,
        "quoted phrases", or, -exclusion), each matched in its transcript's language, best
        first, with a snippet where matches are wrapped in ``**``. RLS applies. Served by
        the read replica when the client has one (may lag behind the latest writes)."""
        if not query or not query.strip():
            raise InvalidInputError("the search query is empty")
        check_text(query, "query")
        if not 1 <= limit <= MAX_SEARCH_LIMIT:
            raise InvalidInputError(f"limit must be between 1 and {MAX_SEARCH_LIMIT}, not {limit}")
        rows = await self._call(
            lambda: self._backend.rpc(
                "search_transcripts", {"query": query, "max_results": limit}, replica_ok=True
            ),
            idempotent=True,
        )
        return [parse_model(TranscriptHit, r) for r in _rows(rows)]

    async def record_analysis(
        self,
        session_id: uuid.UUID | str,
        analysis: AnalysisInput | dict[str, Any] | None = None,
        **fields: Any,
    ) -> AnalysisResult:
        """Store a provider's analysis of an ended session and return the stored row.

        Pass an :class:`~voicesessions.AnalysisInput` (or its fields as a dict or as keyword
        arguments): ``provider``, ``analysis_type``, ``results``, ``version`` ("1"),
        ``confidence``, ``processing_time_ms``, ``api_cost_usd``. In the same transaction the
        database rebuilds the session's analytics (the newest analysis of each type wins)
        and moves a completed session to ``analyzed`` (not for ``conversation_metrics``).
        At most 100 analyses and 5,000,000 bytes of results per session.

        Idempotent on (session, analysis_type, provider, version): recording the same
        results again returns the stored row; different results under the same key are a
        :class:`~voicesessions.errors.ConflictError` (``VS003``), an active session too
        (``VS004``). A malformed ``results`` is an InvalidInputError naming the key; nothing
        is stored. Only the service role records analyses (anyone else:
        :class:`~voicesessions.errors.PermissionDeniedError` for a session they can see,
        :class:`~voicesessions.errors.SessionNotFound` otherwise); provider
        ``voicesessions`` is the database's own (its conversation metrics, measured when a
        call completes) and refused to everyone.
        """
        sid = as_uuid(session_id, "session_id")
        if analysis is not None and fields:
            raise InvalidInputError("pass the analysis or its fields, not both")
        if isinstance(analysis, AnalysisInput):
            data = analysis
        else:
            data = validate_mapping(
                AnalysisInput, analysis if analysis is not None else fields, "analysis"
            )
        params = {"session_id": sid, **data.model_dump()}  # sent as JSON by the backend
        row = await self._session_call(sid, lambda: self._backend.rpc("record_analysis", params))
        return parse_model(AnalysisResult, row)

    async def get_analytics(self, session_id: uuid.UUID | str) -> SessionAnalytics:
        """The session's analytics row (scores, talk ratio, fillers, pace, questions, API
        cost). NotFoundError when no analysis has been recorded yet; SessionNotFound when the
        session does not exist or is not visible."""
        sid = as_uuid(session_id, "session_id")
        rows = await self._call(
            lambda: self._backend.select(
                "session_analytics", filters=(eq("session_id", sid),), limit=1
            ),
            idempotent=True,
        )
        if rows:
            return parse_model(SessionAnalytics, rows[0])
        await self.get(sid)  # SessionNotFound when the session itself is not visible
        raise NotFoundError(f"session {sid} has no analytics yet", code="PGRST116")

    async def _set(self, session_id: uuid.UUID | str, values: dict[str, Any]) -> Session:
        sid = as_uuid(session_id, "session_id")
        # Setting the same status (and ended_at) again changes nothing: safe to retry.
        rows = await self._call(
            lambda: self._backend.update("sessions", values, filters=(eq("id", sid),)),
            idempotent=True,
        )
        if rows:
            return parse_model(Session, rows[0])
        # Nothing updated: either invisible (not found) or visible but not the caller's.
        await self.get(sid)
        raise PermissionDeniedError(f"session {sid} can only be changed by its owner", code="42501")

    # -- audio ----------------------------------------------------------------------------

    async def attach_audio(
        self,
        session_id: uuid.UUID | str,
        source: AudioSource,
        *,
        content_type: str | None = None,
        replace: bool = False,
    ) -> AudioInfo:
        """Measure a recording, store it, and record it on the session, in one step.

        ``source`` is a path, the file's bytes or a binary file object (read from its
        current position; a non-seekable one is copied to a temporary file first). In order:

        1. the audio is measured (:func:`voicesessions.audio.measure`): unsupported or
           corrupt input is InvalidInputError and nothing is uploaded;
        2. it is uploaded to the private ``session-audio`` bucket at
           ``<company_id>/<profile_id>/<session_id>.<ext>`` (ext and content type from the
           container: wav, flac, ogg, mp3, webm, m4a; ``content_type`` overrides the type).
           A failed upload records nothing;
        3. the database records the path (not a URL), size and metrics
           (``record_session_audio``: ``audio_quality`` gets the metrics merged in). If this
           fails the upload is removed again, then the error is raised.

        A session that already has a recording is ConflictError unless ``replace``: then
        the new file overwrites an object at the same path (its old bytes are kept in memory
        meanwhile and put back if the database write fails), and an old object at another
        path (another extension) is deleted once the new one is recorded. Only the session's
        owner (or the service role) may attach audio; on Supabase the Storage policies of
        the bucket apply as well.
        """
        sid = as_uuid(session_id, "session_id")
        if content_type is not None and not _CONTENT_TYPE.fullmatch(content_type):
            raise InvalidInputError(f"not a content type: {brief(content_type)}")
        with _AudioInput(source) as audio:
            quality = await voicesessions.audio.measure_in_thread(audio.measurable())
            fmt = SESSION_AUDIO_FORMATS.get(quality.container)
            if fmt is None:
                accepted = ", ".join(sorted(SESSION_AUDIO_FORMATS))
                raise InvalidInputError(
                    f"{quality.container} files are not accepted as session audio"
                    f" (accepted containers: {accepted})"
                )
            ext, default_type = fmt
            session = await self.get(sid)
            if session.audio_path is not None and not replace:
                raise ConflictError(
                    f"session {sid} already has a recording ({session.audio_path})",
                    code="23505",
                    hint="Remove it first (remove_audio), or pass replace=True.",
                )
            path = f"{session.company_id}/{session.profile_id}/{sid}.{ext}"
            kind = content_type or default_type

            async def upload() -> None:
                with audio.payload() as data:
                    await self._backend.upload_storage_object(
                        AUDIO_BUCKET, path, data, content_type=kind, overwrite=replace
                    )

            # Overwriting the recorded object in place: keep its bytes, to put them back if
            # the database then refuses the new recording (else the old one would be lost).
            backup = None
            if replace and session.audio_path == path:
                backup = await self._download_or_none(path)
            # Without overwrite a retried upload that had in fact succeeded would conflict.
            await self._call(upload, idempotent=replace)
            params = {
                "session_id": sid,
                "path": path,
                "size_bytes": audio.size,
                "quality": quality.as_json(),
                "replace": replace,
            }
            try:
                recorded = await self._call(
                    lambda: self._backend.rpc("record_session_audio", params), idempotent=True
                )
            except BaseException as exc:
                try:
                    if backup is None:
                        await self._remove_objects([path])
                    else:
                        await self._call(
                            lambda: self._backend.upload_storage_object(
                                AUDIO_BUCKET,
                                path,
                                backup,
                                content_type=default_type,
                                overwrite=True,
                            ),
                            idempotent=True,
                        )
                except Exception as cleanup:
                    what = "is left" if backup is None else "could not be restored"
                    exc.add_note(f"the object {AUDIO_BUCKET}/{path} {what}: {cleanup}")
                raise
        with reading("record_session_audio"):
            replaced = recorded.get("replaced_path") if isinstance(recorded, dict) else None
        if replaced and replaced != path:
            try:
                await self._remove_objects([str(replaced)])
            except Exception as exc:  # the new recording stands; GDPR erasure finds orphans
                logger.warning("could not delete the replaced recording %s: %s", replaced, exc)
        return AudioInfo(
            session_id=sid,
            bucket=AUDIO_BUCKET,
            path=path,
            size_bytes=audio.size,
            content_type=kind,
            quality=quality,
        )

    async def _download_or_none(self, path: str) -> bytes | None:
        """The stored object ``path`` of the audio bucket, or None if there is none."""
        try:
            return await self._call(
                lambda: self._backend.download_storage_object(AUDIO_BUCKET, path),
                idempotent=True,
            )
        except NotFoundError:
            return None

    async def audio_url(
        self, session_id: uuid.UUID | str, *, expires_in: int = DEFAULT_AUDIO_URL_EXPIRY_S
    ) -> str:
        """A URL reading the session's recording for ``expires_in`` seconds (a Storage
        signed URL; a ``file://`` URL for the local store of the Postgres backend, which does
        not expire). Whoever can read the session may ask; NotFoundError when it has no
        recording."""
        if isinstance(expires_in, bool) or not isinstance(expires_in, int) or expires_in <= 0:
            raise InvalidInputError("expires_in must be a positive number of seconds")
        session = await self.get(session_id)
        path = session.audio_path
        if path is None:
            raise NotFoundError(f"session {session.id} has no recording")
        return await self._call(
            lambda: self._backend.storage_object_url(AUDIO_BUCKET, path, expires_in=expires_in),
            idempotent=True,
        )

    async def remove_audio(self, session_id: uuid.UUID | str) -> bool:
        """Delete the session's recording (the object, then the session's audio_path and
        audio_size_bytes; the measured audio_quality stays). Returns False when the session
        had no recording. Safe to repeat: a call interrupted between the two steps is
        finished by the next one. Only the owner (or the service role) may remove it."""
        session = await self.get(session_id)
        path = session.audio_path
        if path is None:
            return False
        params: dict[str, Any] = {"session_id": session.id, "path": path}
        # The database authorizes first (42501 for a manager who can only read it): the
        # local store of the Postgres backend checks nobody, so the check must come before.
        await self._call(
            lambda: self._backend.rpc("clear_session_audio", {**params, "check_only": True}),
            idempotent=True,
        )
        await self._remove_objects([path])
        cleared = await self._call(
            lambda: self._backend.rpc("clear_session_audio", params), idempotent=True
        )
        return bool(cleared)

    async def _remove_objects(self, paths: builtins.list[str]) -> None:
        await self._call(
            lambda: self._backend.remove_storage_objects(AUDIO_BUCKET, paths), idempotent=True
        )


_SEGMENT_COLUMNS = (
    "session_id",
    "seq",
    "speaker",
    "text",
    "start_ms",
    "end_ms",
    "confidence",
    "words",
    "segment_id",
    "created_at",
)


def _status(value: SessionStatus | str) -> SessionStatus:
    try:
        return SessionStatus(value)
    except ValueError as exc:
        allowed = ", ".join(s.value for s in SessionStatus)
        raise InvalidInputError(f"status must be one of {allowed}, not {brief(value)}") from exc


class _AudioInput:
    """A recording given as a path, bytes or a binary file object, read twice: once to
    measure it, once (or once per upload attempt) to upload it.

    A non-seekable file object is first copied to a temporary file (removed on exit).
    """

    def __init__(self, source: AudioSource) -> None:
        self._source = source
        self._temporary: Path | None = None
        self._start = 0
        self.size = 0

    def __enter__(self) -> _AudioInput:
        source = self._source
        if isinstance(source, (bytes, bytearray, memoryview)):
            self._source = bytes(source)
            self.size = len(self._source)
        elif isinstance(source, (str, os.PathLike)):
            path = Path(source)
            try:
                self.size = path.stat().st_size if path.is_file() else 0
            except OSError as exc:  # e.g. a name too long for the file system
                raise InvalidInputError(
                    f"cannot read the audio file {brief(str(path))}: {exc.strerror or exc}"
                ) from None
            self._source = path
        elif hasattr(source, "read"):
            if _seekable(source):
                self._start = source.tell()
                self.size = source.seek(0, io.SEEK_END) - self._start
                source.seek(self._start)
            else:
                fd, name = tempfile.mkstemp(prefix="voicesessions-audio-")
                self._temporary = Path(name)
                with os.fdopen(fd, "wb") as out:
                    shutil.copyfileobj(source, out)
                self._source = self._temporary
                self.size = self._temporary.stat().st_size
        return self

    def __exit__(self, *exc: object) -> None:
        if self._temporary is not None:
            self._temporary.unlink(missing_ok=True)

    def measurable(self) -> AudioSource:
        """The source for measuring (a file object is rewound to where it started)."""
        if hasattr(self._source, "read"):
            self._source.seek(self._start)  # type: ignore[union-attr]
        return self._source

    @contextlib.contextmanager
    def payload(self) -> Iterator[Any]:
        """The content for one upload attempt: bytes, a freshly opened file, or the caller's
        file object rewound to where it started."""
        source = self._source
        if isinstance(source, bytes):
            yield source
        elif isinstance(source, Path):
            with source.open("rb") as handle:
                yield handle
        else:
            source.seek(self._start)  # type: ignore[union-attr]
            yield source


def _seekable(source: Any) -> bool:
    try:
        return bool(source.seekable())
    except (AttributeError, OSError, ValueError):
        return False
