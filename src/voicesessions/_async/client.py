"""AsyncVoiceSessions: the entry point of the SDK (the sync ``VoiceSessions`` is generated).

vs = AsyncVoiceSessions.from_postgres(dsn)            # service_role by default
vs = AsyncVoiceSessions.from_supabase(url, key)       # or access_token=<user JWT>
vs = AsyncVoiceSessions.from_env()
user_vs = vs.as_user(auth_uid)                        # same API, RLS as that user
await vs.sessions.create(profile_id, "Cold call")
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Mapping, Sequence
from typing import Any

from voicesessions._arguments import checked_arguments
from voicesessions._async.analytics import AsyncAnalyticsRepository
from voicesessions._async.backends.base import AsyncBackend
from voicesessions._async.backends.postgres import AsyncPostgresBackend
from voicesessions._async.backends.supabase import AsyncSupabaseBackend
from voicesessions._async.gdpr import AsyncGDPRSessionManager
from voicesessions._async.imports import AsyncCallImports
from voicesessions._async.repository import AsyncSessionRepository
from voicesessions._async.tenants import AsyncTenantRepository
from voicesessions._async.updates import AsyncSessionUpdateManager
from voicesessions._identity import Identity
from voicesessions._retry_policy import RetryPolicy
from voicesessions._validation import as_uuid
from voicesessions.errors import ConfigurationError, InvalidInputError
from voicesessions.local.server import LocalPostgres

from .backends.supabase import _resolve_identity, _signer, _token_identity

#: Environment variables read by :meth:`AsyncVoiceSessions.from_env`.
ENV_DSN = "VOICESESSIONS_DSN"
#: A read replica of ``VOICESESSIONS_DSN`` for the reads that tolerate lag.
ENV_READ_DSN = "VOICESESSIONS_READ_DSN"
ENV_SUPABASE_URL = "SUPABASE_URL"
#: The API URL of a read replica of the ``SUPABASE_URL`` project.
ENV_READ_URL = "VOICESESSIONS_READ_URL"
#: The API key: the first of these that is set (the new key names before the legacy ones).
ENV_SUPABASE_KEYS = (
    "SUPABASE_SECRET_KEY",
    "SUPABASE_PUBLISHABLE_KEY",
    "SUPABASE_SERVICE_ROLE_KEY",
    "SUPABASE_KEY",
    "SUPABASE_ANON_KEY",
)
#: The role each key variable promises (SUPABASE_KEY may hold either kind).
_ENV_KEY_ROLES = {
    "SUPABASE_SECRET_KEY": "service_role",
    "SUPABASE_PUBLISHABLE_KEY": "anon",
    "SUPABASE_SERVICE_ROLE_KEY": "service_role",
    "SUPABASE_ANON_KEY": "anon",
}
#: What to set instead, for a person reading an error from ``from_env`` or the CLI.
_ENV_KEY_ADVICE = (
    "set SUPABASE_SECRET_KEY=sb_secret_... (the project's secret key, to act as the service"
    " role) or SUPABASE_PUBLISHABLE_KEY=sb_publishable_... (to act as anon), from the"
    " dashboard (Project Settings > API Keys) or `supabase status`; a legacy JWT key goes"
    " in SUPABASE_SERVICE_ROLE_KEY (service_role) or SUPABASE_ANON_KEY (anon)"
)
#: A signed-in user's JWT (the user every call then runs as).
ENV_ACCESS_TOKEN = "VOICESESSIONS_ACCESS_TOKEN"
#: The Supabase CLI's personal access token (``sbp_...``): not ours, never used as a user's.
ENV_SUPABASE_CLI_ACCESS_TOKEN = "SUPABASE_ACCESS_TOKEN"
ENV_SUPABASE_JWT_SECRET = "SUPABASE_JWT_SECRET"
#: The private JWK of a signing key the project imported into Supabase Auth (for as_user),
#: or a JWKS / list of JWKs holding it, as JSON.
ENV_SIGNING_KEY = "VOICESESSIONS_SIGNING_KEY"
#: The ``kid`` of the key to sign with, when ``VOICESESSIONS_SIGNING_KEY`` holds several.
ENV_SIGNING_KEY_ID = "VOICESESSIONS_SIGNING_KEY_ID"


@checked_arguments
class AsyncVoiceSessions:
    """Typed access to voice sessions over Supabase (PostgREST) or PostgreSQL.

    Use it as an async context manager, or call :meth:`aclose` when done. Clients made by
    :meth:`as_user` share the parent's connections; closing them releases nothing, closing
    the parent releases everything.
    """

    def __init__(
        self,
        backend: AsyncBackend,
        *,
        retry: RetryPolicy | None = None,
        owns_backend: bool = True,
    ) -> None:
        if not isinstance(backend, AsyncBackend):
            raise InvalidInputError(f"backend must be a backend, not {type(backend).__name__}")
        if retry is not None and not isinstance(retry, RetryPolicy):
            raise InvalidInputError(f"retry must be a RetryPolicy, not {type(retry).__name__}")
        self._backend = backend
        self._retry = retry if retry is not None else RetryPolicy()
        self._owns_backend = owns_backend
        self.sessions = AsyncSessionRepository(backend, self._retry)
        self.tenants = AsyncTenantRepository(backend, self._retry)
        self.updates = AsyncSessionUpdateManager(backend, self._retry, self.sessions)
        self.gdpr = AsyncGDPRSessionManager(backend, self._retry)
        self.analytics = AsyncAnalyticsRepository(backend, self._retry)
        self.imports = AsyncCallImports(backend, self._retry, self.sessions)

    # -- construction ---------------------------------------------------------------------

    @classmethod
    def from_postgres(
        cls,
        dsn: str,
        *,
        read_dsn: str | None = None,
        retry: RetryPolicy | None = None,
        **pool_options: Any,
    ) -> AsyncVoiceSessions:
        """Connect to PostgreSQL directly (a Supabase database, its pooler, or local mode).

        Acts as ``service_role`` (use :meth:`as_user` for a user). ``pool_options`` go to the
        Postgres backend (``min_size``, ``max_size``, ``timeout``, ``storage_root``,
        ``listen_dsn``, ...). ``read_dsn`` names a read replica of ``dsn``: dashboards
        (``analytics``), ``sessions.list`` and ``sessions.search_transcripts`` are served by
        it and may lag behind the latest writes; everything else stays on ``dsn``. An
        unreachable replica sends those reads to ``dsn`` (with a logged warning) until it is
        back. ``dsn`` may be a transaction-mode pooler (Supabase's on port 6543): live events
        then need ``listen_dsn`` (or ``VOICESESSIONS_LISTEN_DSN``), a direct or session-mode
        DSN to ``LISTEN`` on, and are refused with ConfigurationError without it.
        """
        if not dsn:
            raise ConfigurationError("a PostgreSQL DSN is required")
        backend = AsyncPostgresBackend.from_dsn(dsn, read_dsn=read_dsn or None, **pool_options)
        return cls(backend, retry=retry)

    @classmethod
    def from_supabase(
        cls,
        url: str,
        key: str,
        *,
        access_token: str | None = None,
        jwt_secret: str | None = None,
        signing_key: str | Mapping[str, Any] | Sequence[Mapping[str, Any]] | None = None,
        signing_key_id: str | None = None,
        read_url: str | None = None,
        retry: RetryPolicy | None = None,
        **options: Any,
    ) -> AsyncVoiceSessions:
        """Talk to a Supabase project through its API with a project key.

        With ``access_token`` (a user's JWT) every call runs as that user. ``signing_key``
        (the private JWK, ES256 or RS256 with its ``kid``, of a signing key the project
        imported into Supabase Auth, or a JWKS / list of JWKs holding it) or ``jwt_secret``
        (the legacy HS256 JWT secret) lets :meth:`as_user` act as any user from a service
        key. From a key set, ``signing_key_id`` names the key to sign with (by ``kid``);
        without it, the first private key that may sign. ``read_url`` is the API URL of a
        read replica of the project: the same lag-tolerant reads as ``from_postgres``'s
        ``read_dsn`` go there.
        """
        if not url or not key:
            raise ConfigurationError("a Supabase URL and an API key are required")
        backend = AsyncSupabaseBackend(
            url,
            key,
            access_token=access_token,
            jwt_secret=jwt_secret,
            signing_key=signing_key,
            signing_key_id=signing_key_id,
            read_url=read_url or None,
            **options,
        )
        return cls(backend, retry=retry)

    @classmethod
    def from_env(cls, *, retry: RetryPolicy | None = None) -> AsyncVoiceSessions:
        """From the environment: ``VOICESESSIONS_DSN`` (PostgreSQL, with its read replica
        ``VOICESESSIONS_READ_DSN`` if set; live events listen on ``VOICESESSIONS_LISTEN_DSN``
        when set), else ``SUPABASE_URL``
        with the first key set of ``SUPABASE_SECRET_KEY``, ``SUPABASE_PUBLISHABLE_KEY``,
        ``SUPABASE_SERVICE_ROLE_KEY``, ``SUPABASE_KEY``, ``SUPABASE_ANON_KEY``, and optionally
        ``VOICESESSIONS_READ_URL`` (the API URL of a read replica),
        ``VOICESESSIONS_ACCESS_TOKEN`` (a user's JWT), ``VOICESESSIONS_SIGNING_KEY`` (a private
        JWK, or a JWKS / list of JWKs, as JSON) with ``VOICESESSIONS_SIGNING_KEY_ID`` (the
        ``kid`` to sign with) and ``SUPABASE_JWT_SECRET``; with none
        of them set, the local server of ``voicesessions local start`` if it is running
        (``VOICESESSIONS_HOME`` chooses which).

        ``SUPABASE_ACCESS_TOKEN`` is the Supabase CLI's personal access token (``sbp_...``)
        and is ignored; holding anything else (a user's JWT, as it did before) without
        ``VOICESESSIONS_ACCESS_TOKEN``, it is refused rather than dropped, since dropping it
        would act as the key's role instead of that user."""
        dsn = os.environ.get(ENV_DSN)
        if dsn:
            return cls.from_postgres(dsn, read_dsn=os.environ.get(ENV_READ_DSN), retry=retry)
        url = os.environ.get(ENV_SUPABASE_URL)
        key_var = next((k for k in ENV_SUPABASE_KEYS if os.environ.get(k)), None)
        key = os.environ[key_var] if key_var else None
        if url and key_var and key:
            _check_env_key(key_var, key)
            access_token = os.environ.get(ENV_ACCESS_TOKEN) or None
            if access_token is not None:
                try:
                    _token_identity(access_token)
                except ConfigurationError as exc:
                    raise ConfigurationError(f"{ENV_ACCESS_TOKEN}: {exc}") from None
            signing_key = os.environ.get(ENV_SIGNING_KEY) or None
            signing_key_id = os.environ.get(ENV_SIGNING_KEY_ID) or None
            if signing_key is not None:
                try:
                    _signer(signing_key, signing_key_id)
                except ConfigurationError as exc:
                    names = ENV_SIGNING_KEY + (f" / {ENV_SIGNING_KEY_ID}" if signing_key_id else "")
                    raise ConfigurationError(f"{names}: {exc}") from None
            cli_token = os.environ.get(ENV_SUPABASE_CLI_ACCESS_TOKEN) or ""
            if access_token is None and cli_token and not cli_token.startswith("sbp_"):
                raise ConfigurationError(
                    f"{ENV_SUPABASE_CLI_ACCESS_TOKEN} is the Supabase CLI's personal access"
                    " token (sbp_...), and voicesessions no longer reads a user's JWT from it:"
                    f" put the user's JWT in {ENV_ACCESS_TOKEN}"
                )
            return cls.from_supabase(
                url,
                key,
                access_token=access_token,
                jwt_secret=os.environ.get(ENV_SUPABASE_JWT_SECRET) or None,
                signing_key=signing_key,
                signing_key_id=signing_key_id,
                read_url=os.environ.get(ENV_READ_URL) or None,
                retry=retry,
            )
        if url and not key:
            raise ConfigurationError(
                f"{ENV_SUPABASE_URL} is set but no key: {_ENV_KEY_ADVICE}"
                f" (read in this order: {', '.join(ENV_SUPABASE_KEYS)})"
            )
        local = LocalPostgres().status()
        if local is not None:
            return cls.from_postgres(local.dsn, retry=retry)
        raise ConfigurationError(
            f"set {ENV_DSN} (a PostgreSQL DSN), or {ENV_SUPABASE_URL} and"
            f" {ENV_SUPABASE_KEYS[0]}, or run `voicesessions local start`"
        )

    def as_user(self, auth_uid: uuid.UUID | str) -> AsyncVoiceSessions:
        """The same API acting as the authenticated user ``auth_uid``: RLS applies as for
        that user's own requests."""
        uid = as_uuid(auth_uid, "auth_uid")
        return AsyncVoiceSessions(self._backend.as_user(uid), retry=self._retry, owns_backend=False)

    # -- introspection and lifecycle -------------------------------------------------------

    @property
    def identity(self) -> Identity:
        """Who this client acts as."""
        return self._backend.identity

    @property
    def retry_policy(self) -> RetryPolicy:
        return self._retry

    async def aclose(self) -> None:
        """Release connections (only those this client created). Idempotent."""
        if self._owns_backend:
            await self._backend.aclose()

    async def __aenter__(self) -> AsyncVoiceSessions:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    def __repr__(self) -> str:
        backend = type(self._backend).__name__
        return f"{type(self).__name__}(backend={backend}, identity={self.identity.role})"


def _check_env_key(name: str, key: str) -> None:
    """Refuse, naming the variable ``name`` and what to set instead, a key of a kind the SDK
    does not know or of the other kind than the variable's name promises (a publishable
    key in ``SUPABASE_SECRET_KEY`` would act as anon; a secret key in
    ``SUPABASE_PUBLISHABLE_KEY`` would bypass RLS as the service role)."""
    try:
        role = _resolve_identity(key, None, None).role
    except ConfigurationError:
        if key.startswith("sbp_"):
            what = "a Supabase CLI personal access token (sbp_...), not a project API key"
        elif key.count(".") == 2:
            what = (
                "a JWT that is neither the anon nor the service_role key (a signed-in user's"
                f" JWT goes in {ENV_ACCESS_TOKEN})"
            )
        else:
            what = "neither an sb_secret_ / sb_publishable_ key nor a legacy JWT key"
        raise ConfigurationError(f"{name} holds {what}: {_ENV_KEY_ADVICE}") from None
    promised = _ENV_KEY_ROLES.get(name)
    if promised is not None and role != promised:
        kind = "secret (service_role)" if role == "service_role" else "publishable (anon)"
        raise ConfigurationError(
            f"{name} holds a {kind} key, which would act as {role}, not {promised}:"
            f" {_ENV_KEY_ADVICE}"
        )
