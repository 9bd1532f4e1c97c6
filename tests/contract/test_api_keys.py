"""What each kind of Supabase API key sends, for every kind of request the backend makes.

Both key generations: legacy JWT keys (``anon`` / ``service_role``) and the new opaque keys
(``sb_publishable_...`` / ``sb_secret_...``). The key always goes in ``apikey``;
``Authorization`` carries a JWT (a user's token, or a legacy JWT key as supabase-py sends it)
or is absent. It never carries an ``sb_`` key: the API gateway and PostgREST read it as a JWT
("Expected 3 parts in JWT", PGRST301; supabase-py issue 1230).
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import httpx
import jwt
import pytest
import respx

from tests.contract.conftest import (
    ANON_KEY,
    AUTH_API_VERSION,
    SECRET,
    SERVICE_KEY,
    USER_A,
    Face,
)
from voicesessions import errors
from voicesessions._identity import Identity

pytestmark = pytest.mark.asyncio(loop_scope="session")

SB_SECRET = "sb_secret_N7UND0UgjKTVK-Uodkm0Hg_xSvEMPvz"
SB_PUBLISHABLE = "sb_publishable_ACJWlzQHlZjBrEguHvfOxg_3BJgxAaH"
USER_TOKEN = jwt.encode(
    {"sub": str(USER_A), "role": "authenticated", "aud": "authenticated"}, SECRET, "HS256"
)


@dataclass(frozen=True)
class Setup:
    """A key, how the backend is built with it, and what its requests must carry."""

    key: str
    options: dict[str, Any]
    as_user: bool
    identity: Identity
    #: the expected ``Authorization`` header: a fixed value, "minted" or None (absent)
    authorization: str | None


SETUPS = {
    "legacy-service": Setup(
        SERVICE_KEY, {}, False, Identity.service_role(), f"Bearer {SERVICE_KEY}"
    ),
    "legacy-anon": Setup(ANON_KEY, {}, False, Identity.anon(), f"Bearer {ANON_KEY}"),
    "secret": Setup(SB_SECRET, {}, False, Identity.service_role(), None),
    "publishable": Setup(SB_PUBLISHABLE, {}, False, Identity.anon(), None),
    "publishable+user-token": Setup(
        SB_PUBLISHABLE,
        {"access_token": USER_TOKEN},
        False,
        Identity.user(USER_A),
        f"Bearer {USER_TOKEN}",
    ),
    "secret+as_user": Setup(
        SB_SECRET, {"jwt_secret": SECRET}, True, Identity.user(USER_A), "minted"
    ),
    "legacy-service+as_user": Setup(
        SERVICE_KEY, {"jwt_secret": SECRET}, True, Identity.user(USER_A), "minted"
    ),
}


def _select(backend: Any) -> Callable[[], Any]:
    return lambda: backend.select("sessions")


def _rpc(backend: Any) -> Callable[[], Any]:
    return lambda: backend.rpc("f", {"a": 1})


def _storage_remove(backend: Any) -> Callable[[], Any]:
    return lambda: backend.remove_storage_objects("audio", ["a/b.wav"])


def _storage_download(backend: Any) -> Callable[[], Any]:
    return lambda: backend.download_storage_object("audio", "a/b.wav")


def _storage_upload(backend: Any) -> Callable[[], Any]:
    return lambda: backend.upload_storage_object(
        "audio", "a/b.wav", b"RIFF", content_type="audio/wav"
    )


def _insert(backend: Any) -> Callable[[], Any]:
    return lambda: backend.insert("sessions", [{"a": 1}])


def _storage_sign(backend: Any) -> Callable[[], Any]:
    return lambda: backend.storage_object_url("audio", "a/b.wav", expires_in=60)


def _auth_admin(backend: Any) -> Callable[[], Any]:
    return lambda: backend.create_auth_user("a@example.com", user_id=USER_A)


def _auth_user(user_id: uuid.UUID) -> dict[str, Any]:
    return {
        "id": str(user_id),
        "aud": "authenticated",
        "role": "authenticated",
        "email": "a@example.com",
        "app_metadata": {},
        "user_metadata": {},
        "created_at": "2026-01-02T03:04:05Z",
    }


#: request kind -> (route it hits, its response, the backend call)
REQUESTS: dict[str, tuple[tuple[str, str], httpx.Response, Callable[[Any], Callable[[], Any]]]] = {
    "rest-select": (("GET", "/rest/v1/sessions"), httpx.Response(200, json=[]), _select),
    "rest-insert": (("POST", "/rest/v1/sessions"), httpx.Response(201, json=[{"a": 1}]), _insert),
    "rpc": (("POST", "/rest/v1/rpc/f"), httpx.Response(200, json=1), _rpc),
    "storage-sign": (
        ("POST", "/storage/v1/object/sign/audio/a/b.wav"),
        httpx.Response(200, json={"signedURL": "/object/sign/audio/a/b.wav?token=t"}),
        _storage_sign,
    ),
    "storage-remove": (
        ("DELETE", "/storage/v1/object/audio"),
        httpx.Response(200, json=[]),
        _storage_remove,
    ),
    "storage-download": (
        ("GET", "/storage/v1/object/audio/a/b.wav"),
        httpx.Response(200, content=b"RIFF"),
        _storage_download,
    ),
    "storage-upload": (
        ("POST", "/storage/v1/object/audio/a/b.wav"),
        httpx.Response(200, json={"Key": "audio/a/b.wav", "Id": str(USER_A)}),
        _storage_upload,
    ),
    "auth-admin": (
        ("POST", "/auth/v1/admin/users"),
        httpx.Response(200, json=_auth_user(USER_A), headers=AUTH_API_VERSION),
        _auth_admin,
    ),
}


@pytest.fixture
async def build(face: Face) -> AsyncIterator[Callable[..., Any]]:
    made: list[Any] = []

    def make(key: str, **options: Any) -> Any:
        backend = face.build(key, **options)
        made.append(backend)
        return backend

    yield make
    for backend in made:
        await face.close(backend)


@pytest.mark.parametrize("request_kind", list(REQUESTS))
@pytest.mark.parametrize("setup_name", list(SETUPS))
async def test_the_key_goes_in_apikey_and_authorization_is_a_jwt_or_absent(
    face: Face,
    api: respx.MockRouter,
    build: Callable[..., Any],
    setup_name: str,
    request_kind: str,
) -> None:
    setup = SETUPS[setup_name]
    (method, path), response, call = REQUESTS[request_kind]
    route = api.route(method=method, path=path).mock(return_value=response)
    backend = build(setup.key, **setup.options)
    if setup.as_user:
        backend = backend.as_user(USER_A)
    assert backend.identity == setup.identity

    result: Awaitable[Any] | Any = call(backend)()
    await face.call(lambda: result)

    assert route.call_count == 1
    request = route.calls.last.request
    assert request.headers["apikey"] == setup.key
    sent = request.headers.get("Authorization")
    if setup.authorization is None:
        assert sent is None
    elif setup.authorization == "minted":
        assert sent is not None
        scheme, _, token = sent.partition(" ")
        assert scheme == "Bearer"
        claims = jwt.decode(token, SECRET, algorithms=["HS256"], audience="authenticated")
        assert claims["sub"] == str(USER_A)
    else:
        assert sent == setup.authorization
    # whatever the setup, no sb_ key in any header but apikey
    for name, value in request.headers.items():
        if name.lower() != "apikey":
            assert "sb_" not in value, name


@pytest.mark.parametrize(
    ("key", "message"),
    [
        pytest.param("opaque-key", "sb_publishable_", id="opaque"),
        pytest.param("sbp_0123456789abcdef0123456789abcdef01234567", "personal access", id="pat"),
        pytest.param("sb_other_abc", "sb_publishable_", id="unknown-sb-kind"),
    ],
)
async def test_a_key_of_no_known_kind_is_a_configuration_error_naming_the_kinds(
    face: Face, key: str, message: str
) -> None:
    with pytest.raises(errors.ConfigurationError, match=message):
        face.build(key)


@pytest.mark.parametrize(
    ("token", "message"),
    [
        pytest.param(
            "sbp_0123456789abcdef0123456789abcdef01234567",
            "personal access token",
            id="cli-personal-access-token",
        ),
        pytest.param(SB_SECRET, "API key", id="secret-key-as-token"),
        pytest.param(SB_PUBLISHABLE, "API key", id="publishable-key-as-token"),
    ],
)
async def test_a_non_jwt_passed_as_user_token_says_what_it_is(
    face: Face, token: str, message: str
) -> None:
    with pytest.raises(errors.ConfigurationError, match=message):
        face.build(SB_PUBLISHABLE, access_token=token)
