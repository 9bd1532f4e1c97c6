"""The Supabase backend: PostgREST and the Auth admin API through supabase-py.

One supabase-py client per identity. A supabase-py client is shared mutable state (its
``Authorization`` header changes on auth events and is copied into each sub-client), so a
client is never reused for another user: :meth:`AsyncSupabaseBackend.as_user` builds a new
one whose header carries a short-lived JWT for that user. What *is* shared between a backend
and the backends it derives is the HTTP connection pool (one ``httpx.AsyncClient``), which
holds no identity: supabase-py sends ``apikey`` and ``Authorization`` with every request, and
the pool keeps no cookies.

How the traps of supabase-py 2.34 are handled
- postgrest-py retries GET/HEAD on 503/520 and network errors, sleeping 1, 2, 4 s: turned off
  (``postgrest_client_retry=False``); the retry policy lives above the backend.
- Without an ``httpx_client``, supabase-py hands postgrest-py the deprecated ``timeout`` and
  ``verify`` arguments (a ``DeprecationWarning`` on first use): the backend always passes its
  own HTTP client, which also carries the timeout.
- ``postgrest.APIError`` has no HTTP status (and for a non-JSON body puts it in ``code``): an
  HTTP response hook records the status of the request in flight, so every error is mapped
  with both its code and its status by :func:`voicesessions.errors.from_postgrest`.
- ``execute()`` always decodes a success into Python objects: :meth:`rpc_rows` sends the
  request itself (``query.request.send``, what ``execute()`` does with retries off) and
  validates the rows from the body's bytes; its failures become ``postgrest.APIError``
  exactly as in ``execute()``, so they map the same way.
- Passing ``headers=`` replaces supabase-py's defaults: the backend passes them back, plus the
  identity's ``Authorization``; supabase-py adds ``apikey``.
- supabase-py sends its key as ``Authorization: Bearer <key>`` whenever no other
  ``Authorization`` is given, also an ``sb_publishable_`` / ``sb_secret_`` key, which is not
  a JWT: the gateway and PostgREST then refuse the request (PGRST301 "Expected 3 parts in
  JWT", supabase-py issue 1230). With such a key and no user JWT the backend removes
  ``Authorization`` from the client's headers (REST, Storage) and from its Auth and Auth admin
  clients' copies: the key travels in ``apikey`` alone, and Supabase's gateway turns it into
  the role's JWT.

Read replicas: with ``read_url`` (the API URL of a Supabase read replica), every identity
has a second supabase-py client for that URL, over the same HTTP connection pool, with the
same key and ``Authorization``. Calls marked ``replica_ok`` (``select``, ``rpc``,
``rpc_rows``) go through it; a replica that cannot be reached (a network error, or the
gateway or its PostgREST answering 502, 503 or 504) sends them to the project URL
instead (see :class:`~voicesessions._async.backends.base.ReplicaHealth`).
"""

from __future__ import annotations

import contextlib
import contextvars
import functools
import io
import json
import threading
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from http.cookiejar import CookieJar, DefaultCookiePolicy
from typing import Any, BinaryIO, TypeVar, cast

import httpx
import jwt
import postgrest
import pydantic
from postgrest.base_request_builder import BaseFilterRequestBuilder, RequestConfig
from postgrest.exceptions import APIErrorFromJSON, generate_default_error_message
from storage3.exceptions import StorageApiError
from storage3.types import FileOptions
from supabase.lib.client_options import DEFAULT_HEADERS
from supabase_auth.errors import AuthError, AuthRetryableError
from supabase_auth.types import AdminUserAttributes

import supabase
from voicesessions import errors
from voicesessions._async.backends.base import (
    DEFAULT_REPLICA_RETRY_S,
    AsyncBackend,
    ReplicaHealth,
)
from voicesessions._identity import Identity
from voicesessions._query import Filter, Order, conflict_target
from voicesessions._query import json_scalar as _scalar
from voicesessions._query import jsonable as _jsonable
from voicesessions._realtime import async_session_feed
from voicesessions._upstream import auth_header_copies
from voicesessions._validation import parse_rows_json

#: Timeout of one HTTP request (connect, read, write, pool) unless the caller picks another.
DEFAULT_TIMEOUT = httpx.Timeout(30.0, connect=10.0)
#: Lifetime in seconds of the JWT minted for a user by ``as_user``.
USER_TOKEN_LIFETIME = 300
#: A minted JWT is replaced when it has fewer seconds than this left to live.
USER_TOKEN_REFRESH_MARGIN = 60
#: Most object paths sent in one Storage delete request.
MAX_STORAGE_PATHS_PER_REQUEST = 1000
#: Supabase requires JWT secrets of at least this many characters.
MIN_JWT_SECRET_LENGTH = 32

_T = TypeVar("_T")
_B = TypeVar("_B", bound=BaseFilterRequestBuilder[Any])
_M = TypeVar("_M", bound=pydantic.BaseModel)


@dataclass
class _Exchange:
    """The HTTP status of the request made by one backend call (``None`` until a response)."""

    status: int | None = None


#: The exchange of the backend call running in this context; the response hook fills it in.
_EXCHANGE: contextvars.ContextVar[_Exchange | None] = contextvars.ContextVar(
    "voicesessions_supabase_exchange", default=None
)


async def _record_status(response: httpx.Response) -> None:
    """httpx response hook: remember the status for the call in flight (its error mapping)."""
    exchange = _EXCHANGE.get()
    if exchange is not None:
        exchange.status = response.status_code


@dataclass(frozen=True)
class _Signer:
    """A project's asymmetric JWT signing key: the private key, its algorithm and ``kid``."""

    key: Any
    algorithm: str
    kid: str


#: What ``signing_key`` may be: one private JWK, a JWKS (``{"keys": [...]}``) or a list of
#: JWKs (the Supabase CLI's ``signing_keys.json``, GoTrue's ``GOTRUE_JWT_KEYS``), as Python
#: objects or as their JSON text.
SigningKey = str | Mapping[str, Any] | Sequence[Mapping[str, Any]]

#: The algorithm of each JWK key type a Supabase project can sign user tokens with.
_SIGNING_ALGORITHMS = {"EC": "ES256", "RSA": "RS256"}
#: The smallest RSA modulus accepted (Supabase's RS256 signing keys are RSA 2048).
MIN_RSA_KEY_BITS = 2048


def _signer(signing_key: SigningKey, kid: str | None = None) -> _Signer:
    """The signer of ``signing_key``, checked before any use.

    One JWK is used as it is (and must carry ``kid`` if one is given). From a key set, the
    key whose ``kid`` is ``kid``; without ``kid``, the first private key whose ``key_ops``
    include ``"sign"``, else the first private key without ``key_ops`` (public keys, and keys
    whose ``key_ops`` or ``use`` rule out signing, are passed over): GoTrue signs with the key
    of ``GOTRUE_JWT_KEYS`` whose ``key_ops`` include ``"sign"``, the Supabase CLI with the
    first key of its ``signing_keys.json``.
    """
    document: Any = signing_key
    if isinstance(signing_key, str):
        try:
            document = json.loads(signing_key)
        except ValueError as exc:
            raise errors.ConfigurationError(
                "the signing key is not JSON: pass the private JWK of the project's signing"
                " key, or a JWKS / list of JWKs holding it"
            ) from exc
    if kid is not None and (not isinstance(kid, str) or not kid):
        raise errors.ConfigurationError("the signing key id (kid) must be a non-empty string")
    if isinstance(document, Mapping) and "keys" in document:
        keys = document["keys"]
        if not isinstance(keys, list):
            raise errors.ConfigurationError("the signing key set's 'keys' must be a list of JWKs")
    elif isinstance(document, Mapping):
        jwk = document
        if kid is not None and jwk.get("kid") != kid:
            raise errors.ConfigurationError(
                f"the signing key's kid is {errors.brief(jwk.get('kid'))},"
                f" not {errors.brief(kid)} (the signing key id asked for)"
            )
        return _checked_signer(jwk)
    elif isinstance(document, list | tuple):
        keys = list(document)
    else:
        raise errors.ConfigurationError(
            "the signing key must be a JWK (a JSON object), a JWKS or a list of JWKs"
        )
    for index, entry in enumerate(keys):
        if not isinstance(entry, Mapping):
            raise errors.ConfigurationError(
                f"entry {index} of the signing key set is not a JWK (a JSON object)"
            )
    if not keys:
        raise errors.ConfigurationError("the signing key set holds no key")
    kids = [entry.get("kid") for entry in keys]
    if kid is not None:
        matches = [entry for entry in keys if entry.get("kid") == kid]
        if not matches:
            raise errors.ConfigurationError(
                f"no key of the signing key set has kid {errors.brief(kid)}"
                f" (the set holds the kids {errors.brief(kids)})"
            )
        if len(matches) > 1:
            raise errors.ConfigurationError(
                f"{len(matches)} keys of the signing key set have kid {errors.brief(kid)}"
            )
        return _checked_signer(matches[0])
    candidates = [entry for entry in keys if _is_private(entry) and _may_sign(entry)]
    if not candidates:
        raise errors.ConfigurationError(
            "the signing key set holds no private key that may sign (only public or"
            f" verify-only keys, kids {errors.brief(kids)}): pass the private JWK of the project's"
            " current signing key"
        )
    marked = [entry for entry in candidates if "sign" in (entry.get("key_ops") or ())]
    return _checked_signer((marked or candidates)[0])


def _is_private(jwk: Mapping[str, Any]) -> bool:
    """True for a JWK with private material (``d``; ``k`` for a shared secret)."""
    return "d" in jwk or (jwk.get("kty") == "oct" and "k" in jwk)


def _may_sign(jwk: Mapping[str, Any]) -> bool:
    """True unless the JWK's ``key_ops`` / ``use`` say it is not for signing."""
    key_ops = jwk.get("key_ops")
    if key_ops is not None and (not isinstance(key_ops, list) or "sign" not in key_ops):
        return False
    return bool(jwk.get("use", "sig") == "sig")


def _checked_signer(jwk: Mapping[str, Any]) -> _Signer:
    """The signer of one private JWK; every way it cannot sign Supabase tokens is refused."""
    kty = jwk.get("kty")
    if kty == "oct":
        raise errors.ConfigurationError(
            "the signing key is an HS256 shared secret (kty 'oct'), not an asymmetric signing"
            " key: for the legacy JWT secret pass jwt_secret=... (SUPABASE_JWT_SECRET);"
            " Supabase recommends an ES256 (or RS256) signing key instead"
        )
    algorithm = _SIGNING_ALGORITHMS.get(str(kty))
    if algorithm is None:
        raise errors.ConfigurationError(
            f"the signing key's key type (kty) {errors.brief(kty)} is not supported: it must be"
            " an ES256 (kty EC, crv P-256) or RS256 (kty RSA) JWK;"
            " for the legacy HS256 secret pass jwt_secret=..."
        )
    if "d" not in jwk:
        raise errors.ConfigurationError(
            "the signing key is the public half of a key: pass the private JWK (with 'd')"
        )
    kid = jwk.get("kid")
    if not isinstance(kid, str) or not kid:
        raise errors.ConfigurationError(
            "the signing key has no 'kid': Supabase finds the public key by it"
        )
    if not _may_sign(jwk):
        raise errors.ConfigurationError(
            f"the signing key {errors.brief(kid)} is not for signing (its key_ops or use say"
            " so): pass the project's current signing key"
        )
    if algorithm == "ES256" and jwk.get("crv") != "P-256":
        raise errors.ConfigurationError("an EC signing key must be on curve P-256 (ES256)")
    if jwk.get("alg", algorithm) != algorithm:
        raise errors.ConfigurationError(
            f"the signing key's alg {errors.brief(jwk.get('alg'))} does not match its"
            f" key type ({algorithm})"
        )
    try:
        key = jwt.PyJWK(dict(jwk), algorithm=algorithm).key
    except (jwt.PyJWTError, ValueError, TypeError, KeyError) as exc:
        raise errors.ConfigurationError(f"unusable signing key: {errors.brief(str(exc))}") from exc
    if algorithm == "RS256" and key.key_size < MIN_RSA_KEY_BITS:
        raise errors.ConfigurationError(
            f"the RSA signing key has {key.key_size} bits; RS256 signing keys have at least"
            f" {MIN_RSA_KEY_BITS}"
        )
    return _Signer(key, algorithm, kid)


@dataclass
class _Shared:
    """What a backend shares with the backends derived from it by ``as_user``."""

    url: str
    key: str
    jwt_secret: str | None
    http: httpx.AsyncClient
    signer: _Signer | None = None
    closed: bool = False
    #: The read replica's API URL and whether it is reachable (None without a replica).
    read_url: str | None = None
    replica: ReplicaHealth | None = None


class AsyncSupabaseBackend(AsyncBackend):
    """The backend over a Supabase project's HTTP APIs (PostgREST, Auth admin).

    ``url`` is the project URL (``https://<ref>.supabase.co`` or ``http://127.0.0.1:54321``),
    ``key`` its anon (publishable) or service_role (secret) key, sent as ``apikey`` on every
    request. The backend acts as:

    - the key's role (read from a legacy JWT key's ``role`` claim, or from an
      ``sb_publishable_`` / ``sb_secret_`` prefix), with ``Authorization: Bearer <key>``;
    - the user of ``access_token`` (a user's Supabase JWT, decoded without verification only
      to read its ``sub``), with ``Authorization: Bearer <access_token>``.

    ``signing_key`` (the private JWK, ES256 or RS256 with its ``kid``, of a signing key the
    project imported into Supabase Auth; or a JWKS / list of such JWKs, e.g. the Supabase
    CLI's ``signing_keys.json``; as Python objects or JSON text) or ``jwt_secret`` (the
    legacy HS256 JWT secret) lets :meth:`as_user` sign tokens for any user; with both, the
    signing key is used. From a key set, ``signing_key_id`` picks the key by its ``kid``;
    without it, the first private key that may sign (see :func:`_signer`). Rotating keys is
    then a change of ``signing_key_id`` once the project has made that key its current one.
    ``timeout`` is a number of seconds, an ``httpx.Timeout``, or ``None`` for no timeout.
    ``identity`` states who the backend acts as when the key does not tell (it must agree
    with the key or token when they do). ``read_url`` is the API URL of a read replica of
    the project (``https://<ref>-rr-<region>-<id>.supabase.co``): the reads the SDK marks
    lag-tolerant go there, and to ``url`` for ``replica_retry_after`` seconds after the
    replica could not be reached (a warning is logged).

    Every call is one HTTP request; errors come out as :mod:`voicesessions.errors`
    exceptions; nothing is retried here.
    """

    def __init__(
        self,
        url: str,
        key: str,
        *,
        access_token: str | None = None,
        jwt_secret: str | None = None,
        signing_key: SigningKey | None = None,
        signing_key_id: str | None = None,
        timeout: float | httpx.Timeout | None = DEFAULT_TIMEOUT,
        identity: Identity | None = None,
        read_url: str | None = None,
        replica_retry_after: float = DEFAULT_REPLICA_RETRY_S,
    ) -> None:
        if not url.startswith(("http://", "https://")):
            raise errors.ConfigurationError(
                f"the Supabase URL must start with http:// or https://, not {errors.brief(url)}"
            )
        if not key:
            raise errors.ConfigurationError("the Supabase API key is empty")
        if read_url is not None and (
            not isinstance(read_url, str) or not read_url.startswith(("http://", "https://"))
        ):
            raise errors.ConfigurationError(
                "the read replica URL must start with http:// or https://,"
                f" not {errors.brief(read_url)}"
            )
        replica = (
            None if read_url is None else ReplicaHealth(read_url.rstrip("/"), replica_retry_after)
        )
        if jwt_secret is not None and len(jwt_secret) < MIN_JWT_SECRET_LENGTH:
            raise errors.ConfigurationError(
                f"the JWT secret is shorter than {MIN_JWT_SECRET_LENGTH} characters;"
                " pass the project's JWT secret (Project Settings > API)"
            )
        if signing_key is None and signing_key_id is not None:
            raise errors.ConfigurationError(
                "a signing key id (kid) was given without a signing key to pick it from"
            )
        signer = _signer(signing_key, signing_key_id) if signing_key is not None else None
        self.identity = _resolve_identity(key, access_token, identity)
        http = httpx.AsyncClient(
            timeout=timeout,
            http2=True,
            # Identity lives only in the headers of each request: keep no cookies.
            cookies=CookieJar(policy=DefaultCookiePolicy(allowed_domains=[])),
            event_hooks={"response": [_record_status]},
        )
        self._shared = _Shared(
            url.rstrip("/"),
            key,
            jwt_secret,
            http,
            signer,
            read_url=None if read_url is None else read_url.rstrip("/"),
            replica=replica,
        )
        self._owns_shared = True
        self._closed = False
        self._user_id: uuid.UUID | None = None
        self._session_id = uuid.uuid4()
        self._refresh_at = float("inf")
        self._refresh_lock = threading.Lock()
        self._client = self._new_client(access_token or _legacy_jwt_key(key))

    # -- the interface -----------------------------------------------------------------

    async def select(
        self,
        table: str,
        *,
        columns: Sequence[str] = ("*",),
        filters: Sequence[Filter] = (),
        order: Sequence[Order] = (),
        limit: int | None = None,
        replica_ok: bool = False,
    ) -> list[dict[str, Any]]:
        """Rows of ``table`` visible to the identity: ``GET /rest/v1/<table>?select=...``
        (to the read replica's URL, if there is one, with ``replica_ok``)."""

        def request(client: supabase.AsyncClient) -> Callable[[], Awaitable[Any]]:
            query = client.table(table).select(*columns)
            query = _apply_filters(query, filters)
            for item in order:
                query = query.order(item.column, desc=item.descending)
            if limit is not None:
                query = query.limit(limit)
            return query.execute

        response, status = await self._send_read(request, replica_ok)
        return _rows(response.data, status)

    async def insert(
        self,
        table: str,
        rows: Sequence[Mapping[str, Any]],
        *,
        on_conflict: Sequence[str] | None = None,
        ignore_duplicates: bool = False,
    ) -> list[dict[str, Any]]:
        """Insert ``rows`` with ``POST /rest/v1/<table>`` and ``Prefer: return=representation``.

        With ``on_conflict`` and ``ignore_duplicates=True`` (always together) the request adds
        ``Prefer: resolution=ignore-duplicates`` and ``on_conflict=<columns>`` (``on conflict
        (...) do nothing``): skipped rows are not returned.
        """
        try:
            conflict = conflict_target(on_conflict, ignore_duplicates)
        except ValueError as exc:
            raise errors.InvalidInputError(str(exc)) from exc
        body = [_jsonable(row) for row in rows]
        if not body:
            return []
        builder = self._supabase().table(table)
        if conflict is not None:
            query = builder.upsert(body, ignore_duplicates=True, on_conflict=",".join(conflict))
        else:
            query = builder.insert(body)
        response, status = await self._send(query.execute)
        return _rows(response.data, status)

    async def update(
        self, table: str, values: Mapping[str, Any], *, filters: Sequence[Filter]
    ) -> list[dict[str, Any]]:
        """Update the matching rows with ``PATCH /rest/v1/<table>?<filters>``; return them."""
        if not filters:
            raise errors.InvalidInputError(
                f"an update of {table!r} needs at least one filter (it would touch every row)"
            )
        # insert, upsert and update send ``Prefer: return=representation`` by default
        query = self._supabase().table(table).update(_jsonable(values))
        query = _apply_filters(query, filters)
        response, status = await self._send(query.execute)
        return _rows(response.data, status)

    async def rpc(
        self,
        function: str,
        params: Mapping[str, Any] | None = None,
        *,
        replica_ok: bool = False,
    ) -> Any:
        """Call ``public.<function>`` with ``POST /rest/v1/rpc/<function>``; return its JSON
        (``None`` for a function returning void). With ``replica_ok`` (the caller's promise
        that the function only reads: PostgREST runs a STABLE one READ ONLY, which a replica
        serves), to the read replica's URL if there is one."""
        body = _jsonable(params or {})

        def request(client: supabase.AsyncClient) -> Callable[[], Awaitable[Any]]:
            return client.rpc(function, body).execute

        response, status = await self._send_read(request, replica_ok)
        if status == httpx.codes.NO_CONTENT:
            return None
        return response.data

    async def rpc_rows(
        self,
        function: str,
        params: Mapping[str, Any] | None,
        model: type[_M],
        *,
        replica_ok: bool = False,
    ) -> list[_M]:
        """:meth:`rpc` for a set-returning function, its rows validated as ``model`` straight
        from the bytes of the answer (:func:`voicesessions._validation.parse_rows_json`):
        postgrest-py's ``execute()`` would first decode the whole body into dicts."""
        body = _jsonable(params or {})

        def request(client: supabase.AsyncClient) -> Callable[[], Awaitable[httpx.Response]]:
            return functools.partial(_fetch, client.rpc(function, body).request)

        response, status = await self._send_read(request, replica_ok)
        if status == httpx.codes.NO_CONTENT:
            return []
        return parse_rows_json(model, response.content, http_status=status)

    async def create_auth_user(
        self,
        email: str,
        *,
        password: str | None = None,
        user_id: uuid.UUID | None = None,
    ) -> uuid.UUID:
        """Create a confirmed user with ``POST /auth/v1/admin/users``; return its id.

        Needs the service role key; Supabase Auth answers 422 ``email_exists``
        (:class:`~voicesessions.errors.ConflictError`) when the email is taken.
        """
        attributes: dict[str, Any] = {"email": email, "email_confirm": True}
        if password is not None:
            attributes["password"] = password
        if user_id is not None:
            attributes["id"] = str(user_id)
        create = functools.partial(
            self._supabase().auth.admin.create_user, cast("AdminUserAttributes", attributes)
        )
        response, status = await self._send(create)
        try:
            return uuid.UUID(response.user.id)
        except (AttributeError, TypeError, ValueError) as exc:
            raise errors.UnexpectedResponseError(
                "Supabase Auth answered without a user id", http_status=status
            ) from exc

    async def remove_storage_objects(self, bucket: str, paths: Sequence[str]) -> list[str]:
        """Delete objects with ``DELETE /storage/v1/object/<bucket>`` and the body
        ``{"prefixes": [...]}``, at most :data:`MAX_STORAGE_PATHS_PER_REQUEST` paths per
        request; return the paths now gone (all of them: Storage skips missing objects).

        The request runs as the identity (Storage policies apply to users; the service key
        bypasses them). A Storage error (``StorageApiError``, whose ``status`` is the one in
        the response body) becomes the :mod:`voicesessions.errors` exception for that status;
        the chunks sent before it stay deleted.
        """
        if not isinstance(bucket, str) or not bucket or "/" in bucket:
            raise errors.InvalidInputError(f"not a valid storage bucket: {errors.brief(bucket)}")
        if isinstance(paths, str):
            raise errors.InvalidInputError("paths must be a sequence of object paths")
        names = list(paths)
        for name in names:
            if not isinstance(name, str) or not name:
                raise errors.InvalidInputError(f"not a valid storage path: {errors.brief(name)}")
        removed: list[str] = []
        for start in range(0, len(names), MAX_STORAGE_PATHS_PER_REQUEST):
            chunk = names[start : start + MAX_STORAGE_PATHS_PER_REQUEST]
            remove = functools.partial(self._supabase().storage.from_(bucket).remove, chunk)
            try:
                await self._send(remove)
            except StorageApiError as exc:
                raise _storage_error(exc) from exc
            removed.extend(chunk)
        return removed

    def session_events(
        self, session_id: uuid.UUID
    ) -> contextlib.AbstractAsyncContextManager[AsyncIterator[dict[str, Any] | None]]:
        """Realtime Broadcast on the private channel ``session:<id>``, joined with this
        identity's JWT (RLS on ``realtime.messages`` decides; a refusal raises
        PermissionDeniedError). On the sync face the async Realtime client runs on an event
        loop in a thread of its own. See :meth:`AsyncBackend.session_events`."""
        self._check_open()
        return async_session_feed(self._shared.url, self._shared.key, self._bearer, session_id)

    async def upload_storage_object(
        self,
        bucket: str,
        path: str,
        data: bytes | BinaryIO,
        *,
        content_type: str,
        overwrite: bool = False,
    ) -> None:
        """Upload with ``POST /storage/v1/object/<bucket>/<path>`` (multipart form: the file
        with ``content_type`` and ``cacheControl``), header ``x-upsert: false`` (or ``true``
        with ``overwrite``). Storage answers an existing object with status 409
        (ConflictError) and a policy refusal with 403 (PermissionDeniedError).

        Bytes and real files (``io.BufferedReader`` / ``io.FileIO``, e.g. ``open(p, "rb")``)
        are streamed by httpx; any other file object is read into memory first.
        """
        _check_storage_name(bucket, path)
        if not isinstance(content_type, str) or not content_type:
            raise errors.InvalidInputError("a content type is required")
        body: bytes | io.BufferedReader | io.FileIO
        if isinstance(data, (bytes, io.BufferedReader, io.FileIO)):
            body = data
        elif isinstance(data, (bytearray, memoryview)):
            body = bytes(data)
        else:
            body = data.read()
        options: dict[str, str] = {
            "content-type": content_type,
            "upsert": "true" if overwrite else "false",
        }
        upload = functools.partial(
            self._supabase().storage.from_(bucket).upload,
            path,
            body,
            cast("FileOptions", options),
        )
        try:
            await self._send(upload)
        except StorageApiError as exc:
            raise _storage_error(exc) from exc

    async def download_storage_object(self, bucket: str, path: str) -> bytes:
        """The object's bytes: ``GET /storage/v1/object/<bucket>/<path>`` as the identity."""
        _check_storage_name(bucket, path)
        download = functools.partial(self._supabase().storage.from_(bucket).download, path)
        try:
            content, _ = await self._send(download)
        except StorageApiError as exc:
            raise _storage_error(exc) from exc
        return content

    async def storage_object_url(self, bucket: str, path: str, *, expires_in: int) -> str:
        """A signed URL: ``POST /storage/v1/object/sign/<bucket>/<path>`` with the body
        ``{"expiresIn": <seconds>}``; Storage answers
        ``{"signedURL": "/object/sign/...?token=..."}``, returned absolute
        (``<url>/storage/v1/object/sign/...``). Signing needs read access to
        the object (Storage policies apply to users); anyone holding the URL can read the
        object until it expires."""
        _check_storage_name(bucket, path)
        if isinstance(expires_in, bool) or not isinstance(expires_in, int) or expires_in <= 0:
            raise errors.InvalidInputError("expires_in must be a positive number of seconds")
        sign = functools.partial(
            self._supabase().storage.from_(bucket).create_signed_url, path, expires_in
        )
        try:
            signed, status = await self._send(sign)
        except StorageApiError as exc:
            raise _storage_error(exc) from exc
        url = signed.get("signedURL") or signed.get("signedUrl")
        if not url:
            raise errors.UnexpectedResponseError(
                "Storage answered without a signed URL", http_status=status
            )
        return str(url)

    def as_user(self, user_id: uuid.UUID) -> AsyncSupabaseBackend:
        """A backend acting as the authenticated user ``user_id``.

        Its requests carry ``Authorization: Bearer <JWT>``, a token signed with the signing
        key (ES256/RS256, header ``kid``) or else the legacy JWT secret (HS256), with the
        claims of a Supabase Auth access token (``sub``, ``role`` and ``aud`` =
        authenticated, ``iss``, ``iat``, ``exp``, ``session_id``, ``is_anonymous``), valid
        :data:`USER_TOKEN_LIFETIME` seconds and replaced before it expires.
        It has its own supabase-py client and shares this backend's connections: closing
        this backend closes it.
        """
        self._check_open()
        if self._shared.jwt_secret is None and self._shared.signer is None:
            raise errors.ConfigurationError(
                "as_user() signs a token for the user, and nothing to sign it with was given."
                " Act as a user in one of three ways: with the user's own token,"
                " from_supabase(url, key, access_token=<the user's JWT>); with a signing key"
                " the project imported into Supabase Auth, signing_key=<its private JWK>"
                " (or the legacy jwt_secret=...); or through the database,"
                " from_postgres(dsn).as_user(...)"
            )
        uid = uuid.UUID(str(user_id))
        child = type(self).__new__(type(self))
        child.identity = Identity.user(uid)
        child._shared = self._shared
        child._owns_shared = False
        child._closed = False
        child._user_id = uid
        child._session_id = uuid.uuid4()  # one sign-in: the same session_id across refreshes
        child._refresh_at = float("-inf")
        child._refresh_lock = threading.Lock()
        child._client = child._supabase()
        return child

    async def aclose(self) -> None:
        """Close the HTTP connections (also those of the backends made by ``as_user``).

        A backend made by ``as_user`` owns no connection: closing it only stops its use.
        Idempotent.
        """
        if self._closed:
            return
        self._closed = True
        if self._owns_shared:
            self._shared.closed = True
            await self._shared.http.aclose()

    # -- internals ---------------------------------------------------------------------

    def _bearer(self) -> str | None:
        """The JWT this identity's requests carry now (refreshed first for ``as_user``), or
        None for a new-style key without a user (the key alone, in ``apikey``).
        Also called from the thread of a sync-face Realtime feed, hence the lock."""
        with self._refresh_lock:
            self._supabase_locked()
            return self._token

    def _new_client(self, bearer: str | None) -> supabase.AsyncClient:
        """A supabase-py client whose requests carry ``Authorization: Bearer <bearer>``, or
        no ``Authorization`` at all when ``bearer`` is None (see the module docstring); the
        read replica's client (``self._read_client``) is made anew with it."""
        self._token = bearer
        read_url = self._shared.read_url
        self._read_client = None if read_url is None else self._client_for(read_url, bearer)
        return self._client_for(self._shared.url, bearer)

    def _client_for(self, url: str, bearer: str | None) -> supabase.AsyncClient:
        """The client of :meth:`_new_client` for the API at ``url``."""
        headers = dict(DEFAULT_HEADERS)
        if bearer is not None:
            headers["Authorization"] = f"Bearer {bearer}"
        options = supabase.AsyncClientOptions(
            headers=headers,
            auto_refresh_token=False,
            persist_session=False,
            postgrest_client_retry=False,
            httpx_client=self._shared.http,
        )
        client = supabase.AsyncClient(url, self._shared.key, options)
        if bearer is None:
            _drop_authorization(client)
        return client

    def _supabase(self) -> supabase.AsyncClient:
        """This identity's client; for ``as_user``, rebuilt with a new JWT before expiry."""
        with self._refresh_lock:
            return self._supabase_locked()

    def _supabase_locked(self) -> supabase.AsyncClient:
        self._check_open()
        if self._user_id is not None and time.time() >= self._refresh_at:
            self._client = self._new_client(self._mint_token(self._user_id))
        return self._client

    def _read_supabase(self) -> supabase.AsyncClient | None:
        """This identity's client for the read replica (None without one), refreshed as
        :meth:`_supabase` is."""
        with self._refresh_lock:
            self._supabase_locked()
            return self._read_client

    async def _send_read(
        self,
        request: Callable[[supabase.AsyncClient], Callable[[], Awaitable[_T]]],
        replica_ok: bool,
    ) -> tuple[_T, int | None]:
        """:meth:`_send` of the request ``request`` builds on a client: the read replica's
        with ``replica_ok`` when there is one and it is reachable, else the project's."""
        health = self._shared.replica
        if replica_ok and health is not None and health.usable():
            client = self._read_supabase()
            if client is not None:
                try:
                    result = await self._send(request(client))
                except errors.TransientError as exc:
                    if not _unreachable(exc):
                        raise
                    health.failed(exc)
                else:
                    health.succeeded()
                    return result
        return await self._send(request(self._supabase()))

    def _mint_token(self, user_id: uuid.UUID) -> str:
        issued_at = int(time.time())
        self._refresh_at = issued_at + USER_TOKEN_LIFETIME - USER_TOKEN_REFRESH_MARGIN
        claims = {
            "iss": f"{self._shared.url}/auth/v1",
            "sub": str(user_id),
            "aud": "authenticated",
            "role": "authenticated",
            "iat": issued_at,
            "exp": issued_at + USER_TOKEN_LIFETIME,
            "session_id": str(self._session_id),
            "is_anonymous": False,
        }
        signer = self._shared.signer
        if signer is not None:
            return jwt.encode(
                claims, signer.key, algorithm=signer.algorithm, headers={"kid": signer.kid}
            )
        secret = self._shared.jwt_secret
        if secret is None:  # as_user() checked it; kept for the type checker
            raise errors.ConfigurationError("nothing to sign a user's token with")
        return jwt.encode(claims, secret, algorithm="HS256")

    def _check_open(self) -> None:
        if self._closed or self._shared.closed:
            raise errors.ConfigurationError("this Supabase backend has been closed")

    async def _send(self, call: Callable[[], Awaitable[_T]]) -> tuple[_T, int | None]:
        """Make one request; return its result and HTTP status. The one place where errors of
        httpx, postgrest-py and supabase-auth become :mod:`voicesessions.errors`."""
        exchange = _Exchange()
        token = _EXCHANGE.set(exchange)
        try:
            return await call(), exchange.status
        except Exception as exc:
            mapped = _map_error(exc, exchange.status)
            if mapped is None:
                raise
            raise mapped from exc
        finally:
            _EXCHANGE.reset(token)


# -- helpers (shared by both faces: no I/O) ---------------------------------------------


def _map_error(exc: Exception, http_status: int | None) -> errors.APIError | None:
    """The voicesessions error for an exception of a request, or None if it is not one."""
    if isinstance(exc, postgrest.APIError):
        body = {"code": exc.code, "message": exc.message, "details": exc.details, "hint": exc.hint}
        return errors.from_postgrest(body, http_status=http_status)
    if isinstance(exc, AuthError):
        status = getattr(exc, "status", None) or http_status
        if isinstance(exc, AuthRetryableError):
            return errors.TransientError(exc.message, code=exc.code, http_status=status)
        return errors.from_sqlstate(exc.code, exc.message, http_status=status)
    if isinstance(exc, httpx.TransportError):  # timeouts, connection and protocol errors
        return errors.TransientError(f"the request to Supabase failed: {type(exc).__name__}: {exc}")
    if isinstance(exc, httpx.HTTPError):
        return errors.APIError(f"the request to Supabase failed: {type(exc).__name__}: {exc}")
    if isinstance(exc, (TypeError, ValueError, RecursionError)):
        if http_status is None:  # raised while building the request: the input
            return errors.InvalidInputError(
                f"cannot send this value to Supabase: {errors.brief(str(exc))}"
            )
        return errors.UnexpectedResponseError(
            f"unreadable response from Supabase: {errors.brief(str(exc))}",
            http_status=http_status,
        )
    return None


#: Network failures that mean the replica's API could not be reached (a slow answer,
#: ``ReadTimeout``, is not one of them: sending the query to the primary would not help).
_UNREACHABLE_TRANSPORT = (httpx.NetworkError, httpx.ConnectTimeout, httpx.RemoteProtocolError)
#: Answers of a gateway or a PostgREST that cannot reach or use its database.
_UNREACHABLE_STATUSES = frozenset({502, 503, 504})


def _unreachable(exc: errors.TransientError) -> bool:
    """Whether a failed request says the API could not be reached or could not reach its
    database, rather than that one query failed (for the retry policy)."""
    return (
        isinstance(exc.__cause__, _UNREACHABLE_TRANSPORT)
        or exc.http_status in _UNREACHABLE_STATUSES
    )


def _storage_error(exc: StorageApiError) -> errors.APIError:
    """The voicesessions error for a Storage API error (by the status in its body)."""
    try:
        status: int | None = int(str(exc.status))
    except ValueError:
        status = None
    cls = errors.error_class_for_code(None, status) if status is not None else errors.APIError
    message = f"Storage: {exc.message}"
    return cls(message, code=str(exc.code) if exc.code else None, http_status=status)


def _check_storage_name(bucket: object, path: object) -> None:
    """Refuse an empty or nested bucket name and an empty path before any request."""
    if not isinstance(bucket, str) or not bucket or "/" in bucket:
        raise errors.InvalidInputError(f"not a valid storage bucket: {errors.brief(bucket)}")
    if not isinstance(path, str) or not path or path.startswith("/"):
        raise errors.InvalidInputError(f"not a valid storage path: {errors.brief(path)}")


async def _fetch(request: RequestConfig[httpx.AsyncClient]) -> httpx.Response:
    """Send a PostgREST request as ``execute()`` does (retries are off), keeping the body of a
    success as bytes; a failure raises ``postgrest.APIError`` built as ``execute()`` builds
    it (PostgREST's JSON error, or the status and text of any other body)."""
    response = await request.send(httpx.Headers())
    if response.is_success:
        return response
    try:
        error = APIErrorFromJSON.model_validate_json(response.content)
    except pydantic.ValidationError as exc:
        raise postgrest.APIError(generate_default_error_message(response)) from exc
    raise postgrest.APIError(dict(error))


def _rows(data: Any, http_status: int | None) -> list[dict[str, Any]]:
    if isinstance(data, list) and all(isinstance(row, dict) for row in data):
        return data
    raise errors.UnexpectedResponseError(
        f"PostgREST answered {type(data).__name__} where rows were expected",
        http_status=http_status,
    )


def _apply_filters(query: _B, filters: Sequence[Filter]) -> _B:
    for item in filters:
        column, value = item.column, item.value
        if item.op == "in":
            query = query.in_(column, [_scalar(v) for v in value])
        elif item.op == "is":
            query = query.is_(column, value)
        elif item.op == "eq":
            query = query.eq(column, _scalar(value))
        elif item.op == "neq":
            query = query.neq(column, _scalar(value))
        elif item.op == "gt":
            query = query.gt(column, _scalar(value))
        elif item.op == "gte":
            query = query.gte(column, _scalar(value))
        elif item.op == "lt":
            query = query.lt(column, _scalar(value))
        elif item.op == "lte":
            query = query.lte(column, _scalar(value))
        else:  # Filter validates its operator; a new one must be added here
            raise errors.InvalidInputError(f"unsupported filter operator {item.op!r}")
    return query


def _unverified_claims(token: str) -> dict[str, Any] | None:
    """The claims of a JWT, read without verifying it (None if it is not a JWT)."""
    try:
        claims = jwt.decode(token, options={"verify_signature": False})
    except jwt.PyJWTError:
        return None
    return claims if isinstance(claims, dict) else None


def _legacy_jwt_key(key: str) -> str | None:
    """The key if it is a legacy JWT key (sent as ``Authorization`` too), else None."""
    return key if _unverified_claims(key) is not None else None


def _drop_authorization(client: supabase.AsyncClient) -> None:
    """Remove the ``Authorization: Bearer <key>`` supabase-py adds for its key from every
    copy of its headers: the client's (REST and Storage clients are built from them on first
    use) and those of its Auth and Auth admin clients (each holds a copy, which only
    :func:`voicesessions._upstream.auth_header_copies` reaches)."""
    client.options.headers.pop("Authorization", None)
    for headers in auth_header_copies(client):
        headers.pop("Authorization", None)


#: What a Supabase CLI personal access token starts with (``supabase login``).
_PERSONAL_ACCESS_TOKEN_PREFIX = "sbp_"
_KEY_KINDS = (
    "a publishable key (sb_publishable_...) or a secret key (sb_secret_...), from the"
    " dashboard (Project Settings > API Keys) or `supabase status`, or a legacy anon or"
    " service_role JWT key"
)


def _resolve_identity(key: str, access_token: str | None, given: Identity | None) -> Identity:
    derived: Identity | None
    if key.startswith(_PERSONAL_ACCESS_TOKEN_PREFIX):
        raise errors.ConfigurationError(
            "the API key is a Supabase CLI personal access token (sbp_...), which manages"
            f" your account, not a project's API: pass {_KEY_KINDS}"
        )
    if access_token is not None:
        derived = _token_identity(access_token)
    elif key.startswith("sb_secret_"):
        derived = Identity.service_role()
    elif key.startswith("sb_publishable_"):
        derived = Identity.anon()
    else:
        role = (_unverified_claims(key) or {}).get("role")
        derived = {"service_role": Identity.service_role(), "anon": Identity.anon()}.get(str(role))
    if given is None:
        if derived is None:
            raise errors.ConfigurationError(
                f"the API key is not of a kind voicesessions knows: pass {_KEY_KINDS}"
                " (a custom key: state its role with identity=Identity.anon() or"
                " identity=Identity.service_role())"
            )
        return derived
    if derived is not None and (derived.role, derived.user_id) != (given.role, given.user_id):
        raise errors.ConfigurationError(
            f"identity={given!r} contradicts the key or access token, which act as"
            f" {derived.role} {derived.user_id or ''}".rstrip()
        )
    return given


def _token_identity(access_token: str) -> Identity:
    if access_token.startswith(_PERSONAL_ACCESS_TOKEN_PREFIX):
        raise errors.ConfigurationError(
            "the access token is a Supabase CLI personal access token (sbp_..., what"
            " SUPABASE_ACCESS_TOKEN holds for the CLI), not a signed-in user's JWT: pass the"
            " access_token of the user's Supabase Auth session"
        )
    if access_token.startswith("sb_"):
        raise errors.ConfigurationError(
            "the access token is an API key (sb_...), not a signed-in user's JWT: pass the key"
            " as the key, and the access_token of the user's Supabase Auth session as the token"
        )
    claims = _unverified_claims(access_token)
    if claims is None:
        raise errors.ConfigurationError("the access token is not a JWT")
    role = claims.get("role", "authenticated")
    if role != "authenticated":
        raise errors.ConfigurationError(
            f"the access token is for role {role!r}, not a signed-in user ('authenticated');"
            " pass an API key as the key instead"
        )
    try:
        user_id = uuid.UUID(str(claims["sub"]))
    except (KeyError, ValueError) as exc:
        raise errors.ConfigurationError("the access token has no user id ('sub' claim)") from exc
    extra = {k: v for k, v in claims.items() if k not in ("sub", "role")}
    return Identity.user(user_id, **extra)
