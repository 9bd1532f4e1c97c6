"""A ready-made ASGI app that receives Vapi's and Retell's end-of-call webhooks and stores
each call as a session (``pip install 'voicesessions[webhooks]'``, which adds Starlette).

    from voicesessions.webhooks import create_app
    app = create_app(vapi_secret="...", retell_api_key="...")   # uvicorn module:app

``POST /vapi`` and ``POST /retell`` hand the raw body and headers to ``vs.imports.vapi`` /
``vs.imports.retell`` (the async SDK: the event loop is never blocked; measuring a
recording runs in a worker thread). Answers:

==========  ======================================================================
200         stored, already stored (a redelivery), erased, or not an end-of-call
            event; the JSON body is the :class:`~voicesessions.ImportResult`
401         missing or wrong signature: nothing stored
413         a body over 16 MiB
422         a body that is not a well-formed end-of-call webhook, or names no profile
409         conflicts with what is stored (e.g. the analysis recorded with other
            results, a profile that does not exist)
503         a transient failure (database, recording download): the platform's retry
            completes the import
500         anything else
==========  ======================================================================

A route is served only with its secret (``vapi_secret``, ``retell_api_key``); without,
it answers 404, unless ``allow_unsigned=True`` (local trials only: anyone who can reach
the app could then store calls for any profile named in the body).
"""

from __future__ import annotations

import contextlib
import logging
import os
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, MutableMapping
from typing import Any

from voicesessions._async.client import AsyncVoiceSessions
from voicesessions._hosted import MAX_BODY_BYTES, ImportResult, VapiAuth
from voicesessions.errors import (
    ConfigurationError,
    ConflictError,
    InvalidInputError,
    NotFoundError,
    TransientError,
    VoiceSessionsError,
    WebhookSignatureError,
)

logger = logging.getLogger("voicesessions.webhooks")

#: Environment variables read by :func:`create_app` when no values are passed.
ENV_VAPI_SECRET = "VAPI_WEBHOOK_SECRET"
ENV_RETELL_API_KEY = "RETELL_API_KEY"
ENV_PROFILE_ID = "VOICESESSIONS_WEBHOOK_PROFILE_ID"

Importer = Callable[[bytes, dict[str, str]], Awaitable[ImportResult]]
#: An ASGI application (what :func:`create_app` returns: a Starlette app).
ASGIApp = Callable[
    [MutableMapping[str, Any], Callable[[], Awaitable[Any]], Callable[[Any], Awaitable[None]]],
    Awaitable[None],
]


def _starlette() -> Any:
    """Starlette's module, imported when the app is made (the ``webhooks`` extra)."""
    try:
        import starlette.applications
        import starlette.responses
        import starlette.routing
    except ImportError as exc:  # depends on the installed extras
        raise ConfigurationError(
            "voicesessions.webhooks needs Starlette: pip install 'voicesessions[webhooks]'"
        ) from exc
    return starlette


def create_app(
    vs: AsyncVoiceSessions | None = None,
    *,
    vapi_secret: str | VapiAuth | None = None,
    retell_api_key: str | None = None,
    profile_id: uuid.UUID | str | None = None,
    allow_unsigned: bool = False,
    recording: bool = True,
) -> ASGIApp:
    """The webhook app. ``vs`` is a service-role client (default:
    ``AsyncVoiceSessions.from_env()``, opened at startup and closed at shutdown).
    ``vapi_secret`` / ``retell_api_key`` default to ``VAPI_WEBHOOK_SECRET`` /
    ``RETELL_API_KEY``; ``profile_id`` (default ``VOICESESSIONS_WEBHOOK_PROFILE_ID``) is the
    profile every call belongs to, else each call names its own in its metadata
    (``voicesessions_profile_id``)."""
    starlette = _starlette()
    vapi_secret = vapi_secret or os.environ.get(ENV_VAPI_SECRET) or None
    retell_api_key = retell_api_key or os.environ.get(ENV_RETELL_API_KEY) or None
    profile = profile_id or os.environ.get(ENV_PROFILE_ID) or None
    if vapi_secret is None and retell_api_key is None and not allow_unsigned:
        raise ConfigurationError(
            f"set {ENV_VAPI_SECRET} and/or {ENV_RETELL_API_KEY} (or pass vapi_secret=,"
            " retell_api_key=): the app refuses unsigned webhooks (allow_unsigned=True for"
            " local trials)"
        )
    state: dict[str, AsyncVoiceSessions] = {}
    if vs is not None:
        state["vs"] = vs

    @contextlib.asynccontextmanager
    async def lifespan(app: Any) -> AsyncIterator[None]:
        owned = "vs" not in state
        if owned:
            state["vs"] = AsyncVoiceSessions.from_env()
        try:
            yield
        finally:
            if owned:
                await state.pop("vs").aclose()

    def client() -> AsyncVoiceSessions:
        if "vs" not in state:
            state["vs"] = AsyncVoiceSessions.from_env()
        return state["vs"]

    async def vapi(raw: bytes, headers: dict[str, str]) -> ImportResult:
        return await client().imports.vapi(
            raw, headers=headers, secret=vapi_secret, profile_id=profile, recording=recording
        )

    async def retell(raw: bytes, headers: dict[str, str]) -> ImportResult:
        return await client().imports.retell(
            raw, headers=headers, api_key=retell_api_key, profile_id=profile, recording=recording
        )

    route = starlette.routing.Route
    routes = [
        route(
            "/vapi",
            _endpoint("vapi", vapi, vapi_secret is not None or allow_unsigned),
            methods=["POST"],
        ),
        route(
            "/retell",
            _endpoint("retell", retell, retell_api_key is not None or allow_unsigned),
            methods=["POST"],
        ),
    ]
    app: ASGIApp = starlette.applications.Starlette(routes=routes, lifespan=lifespan)
    return app


def _endpoint(platform: str, importer: Importer, enabled: bool) -> Callable[[Any], Awaitable[Any]]:
    async def endpoint(request: Any) -> Any:
        if not enabled:
            return _error(404, f"no secret is configured for {platform} webhooks")
        declared = request.headers.get("content-length", "")
        if declared.isdigit() and int(declared) > MAX_BODY_BYTES:
            return _error(413, f"the body is over {MAX_BODY_BYTES} bytes")
        raw = bytearray()
        async for chunk in request.stream():
            raw += chunk
            if len(raw) > MAX_BODY_BYTES:
                return _error(413, f"the body is over {MAX_BODY_BYTES} bytes")
        try:
            result = await importer(bytes(raw), dict(request.headers))
        except WebhookSignatureError as exc:
            logger.warning("%s webhook refused: %s", platform, exc)
            return _error(401, "invalid signature")
        except (InvalidInputError, NotFoundError) as exc:
            return _error(422, str(exc))
        except ConflictError as exc:
            return _error(409, str(exc))
        except TransientError as exc:
            logger.warning("%s webhook not stored yet (transient): %s", platform, exc)
            return _error(503, str(exc), retry=True)
        except VoiceSessionsError:
            logger.exception("%s webhook failed", platform)
            return _error(500, "the webhook could not be stored")
        logger.info(
            "%s %s call %s: %s (session %s)",
            platform,
            result.event,
            result.call_id,
            result.status,
            result.session_id,
        )
        return _starlette().responses.JSONResponse(result.model_dump(mode="json"))

    return endpoint


def _error(status: int, message: str, *, retry: bool = False) -> Any:
    headers = {"Retry-After": "30"} if retry else {}
    return _starlette().responses.JSONResponse(
        {"error": message}, status_code=status, headers=headers
    )
