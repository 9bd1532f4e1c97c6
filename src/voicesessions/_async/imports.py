"""Calls imported from hosted voice platforms after they ended (``vs.imports``).

A platform's end-of-call webhook (Vapi's ``end-of-call-report``, Retell's ``call_ended`` /
``call_analyzed``) becomes one completed session: its final segments with their timings
(the human caller is the trainee, the platform's agent the AI buyer), the platform's
analysis with the call's cost, and the recording, downloaded, measured and stored like any
``attach_audio``. What the webhooks say is read by :mod:`voicesessions._hosted`.

Idempotent on the platform's call id, in the database (``public.import_call``): a webhook
delivered twice, or twice at once, stores one session; a later webhook of the same call
(Retell's ``call_analyzed`` after ``call_ended``, or before it) adds what the session lacks
(the analysis, the recording) and nothing twice.
"""

from __future__ import annotations

import tempfile
import uuid
from collections.abc import Mapping
from typing import IO, Any

import httpx

from voicesessions._arguments import checked_arguments
from voicesessions._async.backends.base import AsyncBackend
from voicesessions._async.repository import AsyncSessionRepository
from voicesessions._hosted import (
    ANALYSIS_TYPE,
    PROFILE_METADATA_KEY,
    HostedCall,
    ImportResult,
    VapiAuth,
    read_body,
    retell_call,
    vapi_call,
    verify_retell,
    verify_vapi,
)
from voicesessions._query import eq
from voicesessions._retry_policy import RetryPolicy
from voicesessions._validation import as_uuid, reading
from voicesessions._validation import rows_of as _rows
from voicesessions._values import MAX_METADATA_BYTES, check_json
from voicesessions.errors import ConflictError, InvalidInputError, TransientError, brief

from .resource import Resource

#: Largest recording downloaded, in bytes (a longer call: raise it per call).
DEFAULT_MAX_RECORDING_BYTES = 256 * 1024 * 1024
#: Timeouts of the recording's download, in seconds: to connect, and between two reads.
RECORDING_CONNECT_TIMEOUT_S = 10.0
RECORDING_READ_TIMEOUT_S = 60.0
#: A downloaded recording stays in memory up to this size, then goes to a temporary file.
_SPOOL_BYTES = 8 * 1024 * 1024


@checked_arguments
class AsyncCallImports(Resource):
    """Import finished calls of hosted voice platforms as sessions (service role)."""

    def __init__(
        self, backend: AsyncBackend, retry: RetryPolicy, sessions: AsyncSessionRepository
    ) -> None:
        super().__init__(backend, retry)
        self._sessions = sessions

    async def vapi(
        self,
        payload: bytes | str | Mapping[str, Any],
        *,
        headers: Mapping[str, str] | None = None,
        secret: str | VapiAuth | None = None,
        profile_id: uuid.UUID | str | None = None,
        title: str | None = None,
        metadata: Mapping[str, Any] | None = None,
        recording: bool = True,
        max_recording_bytes: int = DEFAULT_MAX_RECORDING_BYTES,
    ) -> ImportResult:
        """Store a Vapi ``end-of-call-report`` (the webhook's raw body, or its JSON object
        when no ``secret`` is checked) as one completed session; other message types are
        ``ignored``.

        With ``secret`` (a string: Vapi's server secret, sent as ``x-vapi-secret``; or a
        :class:`VapiAuth` for another header or an HMAC credential) the request's
        ``headers`` are checked first: a missing or wrong signature is
        :class:`~voicesessions.errors.WebhookSignatureError` and nothing is stored. The call
        belongs to ``profile_id``, or to the profile named by ``voicesessions_profile_id`` in
        the call's metadata (``call.metadata``, ``call.assistantOverrides.metadata`` or
        ``assistant.metadata``). See :meth:`retell` for what is stored.
        """
        raw, body = read_body(payload)
        if secret is not None:
            verify_vapi(raw, headers, secret if isinstance(secret, VapiAuth) else VapiAuth(secret))
        call = vapi_call(body)
        if isinstance(call, str):
            return ImportResult(platform="vapi", event=call, status="ignored")
        return await self._store(call, profile_id, title, metadata, recording, max_recording_bytes)

    async def retell(
        self,
        payload: bytes | str | Mapping[str, Any],
        *,
        headers: Mapping[str, str] | None = None,
        api_key: str | None = None,
        profile_id: uuid.UUID | str | None = None,
        title: str | None = None,
        metadata: Mapping[str, Any] | None = None,
        recording: bool = True,
        max_recording_bytes: int = DEFAULT_MAX_RECORDING_BYTES,
    ) -> ImportResult:
        """Store a Retell ``call_ended`` or ``call_analyzed`` webhook as one completed
        session (``call_started`` and other events are ``ignored``).

        With ``api_key`` (the Retell API key the webhooks are signed with) the
        ``x-retell-signature`` header is checked over the raw body first (HMAC-SHA256, at
        most 5 minutes old): a missing, stale or wrong one is
        :class:`~voicesessions.errors.WebhookSignatureError` and nothing is stored. The call
        belongs to ``profile_id``, or to the profile named by ``voicesessions_profile_id`` in
        ``call.metadata`` (set when creating the call); neither is InvalidInputError.

        Stored, in order: the session with its final segments (``user`` = trainee, ``agent``
        = buyer, timed from the words), started and completed at the call's times, with
        ``metadata`` plus ``source`` (platform, call id) as its metadata, and ``title`` (by
        default the agent's name) — one database transaction, idempotent on the call id;
        then the platform's analysis (``call_analysis`` analysis of provider ``retell``,
        with the call's cost in USD as its ``api_cost_usd``); then the recording (unless
        ``recording=False``), downloaded (at most ``max_recording_bytes``) and attached like
        :meth:`~AsyncSessionRepository.attach_audio`. A redelivery adds whatever an earlier
        delivery could not (a failed download is TransientError: the session is stored, the
        platform's retry attaches the recording).
        """
        raw, body = read_body(payload)
        if api_key is not None:
            if not api_key:
                raise InvalidInputError("api_key is empty")
            verify_retell(raw, headers, api_key)
        call = retell_call(body)
        if isinstance(call, str):
            return ImportResult(platform="retell", event=call, status="ignored")
        return await self._store(call, profile_id, title, metadata, recording, max_recording_bytes)

    # -- storing ----------------------------------------------------------------------------

    async def _store(
        self,
        call: HostedCall,
        profile_id: uuid.UUID | str | None,
        title: str | None,
        metadata: Mapping[str, Any] | None,
        recording: bool,
        max_recording_bytes: int,
    ) -> ImportResult:
        if max_recording_bytes <= 0:
            raise InvalidInputError("max_recording_bytes must be positive")
        owner = as_uuid(profile_id, "profile_id") if profile_id is not None else call.profile_id()
        if owner is None:
            raise InvalidInputError(
                f"which profile is this {call.platform} call for? Pass profile_id=, or set"
                f" {PROFILE_METADATA_KEY} in the call's metadata"
            )
        extra = dict(metadata) if metadata is not None else {}
        session_metadata = check_json(
            {**extra, "source": call.source}, "metadata", max_bytes=MAX_METADATA_BYTES
        )
        params = {
            "platform": call.platform,
            "call_id": call.call_id,
            "profile_id": owner,
            "title": title or call.title or f"{call.platform.capitalize()} call",
            "started_at": call.started_at,
            "ended_at": call.ended_at,
            "segments": [s.stored() for s in call.segments],
            "metadata": session_metadata,
        }
        answer = await self._call(lambda: self._backend.rpc("import_call", params), idempotent=True)
        with reading("import_call"):
            row = _rows(answer)[0]
            created = bool(row["created"])
            sid = None if row["session_id"] is None else uuid.UUID(str(row["session_id"]))
        if sid is None:
            return ImportResult(
                platform=call.platform, event=call.event, call_id=call.call_id, status="erased"
            )

        if call.analysis is not None:
            await self._sessions.record_analysis(sid, call.analysis)
            analysed = True
        else:
            analysed = await self._has_analysis(sid, call.platform)

        attached = False
        if recording and call.recording_url:
            session = await self._sessions.get(sid)
            attached = session.audio_path is not None or await self._attach(
                sid, call.recording_url, max_recording_bytes
            )
        return ImportResult(
            platform=call.platform,
            event=call.event,
            call_id=call.call_id,
            status="imported" if created else "duplicate",
            session_id=sid,
            analysis=analysed,
            recording=attached,
        )

    async def _has_analysis(self, session_id: uuid.UUID, platform: str) -> bool:
        rows = await self._call(
            lambda: self._backend.select(
                "analysis_results",
                columns=("id",),
                filters=(
                    eq("session_id", session_id),
                    eq("provider", platform),
                    eq("analysis_type", ANALYSIS_TYPE),
                ),
                limit=1,
            ),
            idempotent=True,
        )
        return bool(rows)

    async def _attach(self, session_id: uuid.UUID, url: str, max_bytes: int) -> bool:
        with await self._call(lambda: _download(url, max_bytes), idempotent=True) as audio:
            try:
                await self._sessions.attach_audio(session_id, audio)
            except ConflictError:
                # Another delivery of the call attached it meanwhile (recorded: True), or is
                # attaching it right now (its object exists, not yet recorded: False; should
                # that one fail, it removes its object and the platform's retry attaches it).
                session = await self._sessions.get(session_id)
                return session.audio_path is not None
        return True


async def _download(url: str, max_bytes: int) -> IO[bytes]:
    """The recording at ``url``, at most ``max_bytes``, in a spooled temporary file."""
    if not url.startswith(("https://", "http://")):
        raise InvalidInputError(f"the recording URL is not http(s): {brief(url)}")
    spool: IO[bytes] = tempfile.SpooledTemporaryFile(max_size=_SPOOL_BYTES)  # noqa: SIM115
    too_large = InvalidInputError(
        f"the recording has more than {max_bytes} bytes (raise max_recording_bytes)"
    )
    timeout = httpx.Timeout(RECORDING_READ_TIMEOUT_S, connect=RECORDING_CONNECT_TIMEOUT_S)
    try:
        async with (
            httpx.AsyncClient(timeout=timeout, follow_redirects=True) as http,
            http.stream("GET", url) as response,
        ):
            status = response.status_code
            if status >= 400:
                transient = status >= 500 or status in (408, 429)
                raise (TransientError if transient else InvalidInputError)(
                    f"the recording URL answered HTTP {status}: {brief(url)}", http_status=status
                )
            declared = response.headers.get("content-length", "")
            if declared.isdigit() and int(declared) > max_bytes:
                raise too_large
            size = 0
            async for chunk in response.aiter_bytes():
                size += len(chunk)
                if size > max_bytes:
                    raise too_large
                spool.write(chunk)
    except httpx.HTTPError as exc:
        spool.close()
        raise TransientError(f"could not download the recording {brief(url)}: {exc}") from None
    except BaseException:
        spool.close()
        raise
    spool.seek(0)
    return spool
