"""The Supabase backend's HTTP contract, pinned request by request, on both faces.

respx intercepts httpx inside supabase-py: nothing leaves the process. Every test runs over
the async ``AsyncSupabaseBackend`` and over the ``SupabaseBackend`` generated from it (the
``face`` fixture); a test is written once and awaits ``face.call(...)``, which is simply the
result on the sync face. Pinned: method, path, query string, the ``apikey`` /
``Authorization`` / ``Prefer`` headers and the JSON body of every backend method, and how
every PostgREST, Auth and transport failure becomes a ``voicesessions.errors`` exception.
"""

from __future__ import annotations

import asyncio
import datetime
import decimal
import json
import time
import uuid
from collections.abc import AsyncIterator, Callable
from typing import Any

import httpx
import jwt
import pytest
import respx

from tests.contract.conftest import (
    ANON_KEY,
    AUTH_API_VERSION,
    BASE,
    SECRET,
    SERVICE_KEY,
    SESSION,
    STARTED,
    USER_A,
    USER_B,
    Face,
    Status,
)
from voicesessions import errors
from voicesessions._async.backends import supabase as async_supabase
from voicesessions._identity import Identity
from voicesessions._query import Filter, Order
from voicesessions.models import Session

# Async fixtures live on the session loop (asyncio_default_fixture_loop_scope): run the
# tests there too, so a backend is created, used and closed on one loop.
pytestmark = pytest.mark.asyncio(loop_scope="session")


@pytest.fixture
async def backends(face: Face) -> AsyncIterator[Callable[..., Any]]:
    """Build backends of the face under test; all are closed afterwards."""
    made: list[Any] = []

    def build(key: str = SERVICE_KEY, **options: Any) -> Any:
        backend = face.build(key, **options)
        made.append(backend)
        return backend

    yield build
    for backend in made:
        await face.close(backend)


@pytest.fixture
def service(backends: Callable[..., Any]) -> Any:
    """A service-role backend that can act as users (it has the JWT secret)."""
    return backends(jwt_secret=SECRET)


# -- helpers ------------------------------------------------------------------------------


def query(request: httpx.Request) -> list[tuple[str, str]]:
    """The query string as sorted (name, value) pairs (repeated names kept)."""
    return sorted(request.url.params.multi_items())


def body(request: httpx.Request) -> Any:
    return json.loads(request.content)


def bearer(request: httpx.Request) -> str:
    scheme, _, token = request.headers["Authorization"].partition(" ")
    assert scheme == "Bearer"
    return token


def user_claims(request: httpx.Request, *, verify_exp: bool = True) -> dict[str, Any]:
    """The claims of the request's user JWT, after checking its HS256 signature (and, unless
    told otherwise, that it is valid now)."""
    claims: dict[str, Any] = jwt.decode(
        bearer(request),
        SECRET,
        algorithms=["HS256"],
        audience="authenticated",
        options={"verify_exp": verify_exp, "verify_iat": verify_exp},
    )
    return claims


def inserted_columns(request: httpx.Request) -> set[str]:
    """postgrest-py's ``columns`` parameter: quoted names, in set order."""
    return {name.strip('"') for name in request.url.params["columns"].split(",")}


def auth_user(user_id: uuid.UUID, email: str) -> dict[str, Any]:
    """A user object as Supabase Auth returns it."""
    return {
        "id": str(user_id),
        "aud": "authenticated",
        "role": "authenticated",
        "email": email,
        "email_confirmed_at": "2026-01-02T03:04:05Z",
        "app_metadata": {"provider": "email", "providers": ["email"]},
        "user_metadata": {},
        "created_at": "2026-01-02T03:04:05Z",
        "updated_at": "2026-01-02T03:04:05Z",
    }


# -- select -------------------------------------------------------------------------------


async def test_select_sends_columns_filters_order_and_limit(
    face: Face, api: respx.MockRouter, service: Any
) -> None:
    rows = [{"id": "s1", "status": "active"}, {"id": "s2", "status": "active"}]
    route = api.get("/rest/v1/sessions").respond(200, json=rows)

    result = await face.call(
        service.select,
        "sessions",
        columns=("id", "status"),
        filters=[
            Filter("status", "eq", Status.ACTIVE),
            Filter("owner_id", "neq", USER_A),
            Filter("started_at", "gte", STARTED),
            Filter("started_at", "lt", datetime.date(2026, 2, 1)),
            Filter("duration_seconds", "gt", 10),
            Filter("cost", "lte", decimal.Decimal("99.50")),
            Filter("id", "in", [SESSION, "a,b"]),
            Filter("ended_at", "is", None),
            Filter("archived", "is", False),
        ],
        order=[Order("started_at", descending=True), Order("id", descending=True)],
        limit=10,
    )

    assert result == rows
    assert route.call_count == 1
    request = route.calls.last.request
    assert request.method == "GET"
    assert request.url.path == "/rest/v1/sessions"
    assert query(request) == sorted(
        [
            ("select", "id,status"),
            ("status", "eq.active"),
            ("owner_id", f"neq.{USER_A}"),
            ("started_at", "gte.2026-01-02T03:04:05+00:00"),
            ("started_at", "lt.2026-02-01"),
            ("duration_seconds", "gt.10"),
            ("cost", "lte.99.50"),
            ("id", f'in.({SESSION},"a,b")'),
            ("ended_at", "is.null"),
            ("archived", "is.false"),
            ("order", "started_at.desc,id.desc"),
            ("limit", "10"),
        ]
    )
    assert request.headers["apikey"] == SERVICE_KEY
    assert request.headers["Authorization"] == f"Bearer {SERVICE_KEY}"
    assert request.headers["Accept-Profile"] == "public"
    assert "Prefer" not in request.headers
    assert request.content == b""


async def test_select_defaults_to_every_column_in_any_order(
    face: Face, api: respx.MockRouter, service: Any
) -> None:
    route = api.get("/rest/v1/companies").respond(200, json=[])

    assert await face.call(service.select, "companies") == []
    assert query(route.calls.last.request) == [("select", "*")]


async def test_select_ascending_order_and_true(
    face: Face, api: respx.MockRouter, service: Any
) -> None:
    route = api.get("/rest/v1/transcript_segments").respond(200, json=[])

    await face.call(
        service.select,
        "transcript_segments",
        filters=[Filter("session_id", "eq", SESSION), Filter("is_final", "is", True)],
        order=[Order("seq")],
    )

    assert query(route.calls.last.request) == sorted(
        [
            ("select", "*"),
            ("session_id", f"eq.{SESSION}"),
            ("is_final", "is.true"),
            ("order", "seq.asc"),
        ]
    )


# -- insert -------------------------------------------------------------------------------


async def test_insert_posts_the_rows_and_asks_for_them_back(
    face: Face, api: respx.MockRouter, service: Any
) -> None:
    returned = [{"session_id": str(SESSION), "seq": 1}, {"session_id": str(SESSION), "seq": 2}]
    route = api.post("/rest/v1/transcript_segments").respond(201, json=returned)
    rows = [
        {
            "session_id": SESSION,
            "seq": seq,
            "speaker": Status.ACTIVE,
            "started_at": STARTED,
            "confidence": decimal.Decimal("0.93"),
            "words": [{"w": "hello", "at": STARTED}],
        }
        for seq in (1, 2)
    ]

    result = await face.call(service.insert, "transcript_segments", rows)

    assert result == returned
    assert route.call_count == 1
    request = route.calls.last.request
    assert request.method == "POST"
    assert request.url.path == "/rest/v1/transcript_segments"
    assert [name for name, _ in query(request)] == ["columns"]
    assert inserted_columns(request) == {
        "session_id",
        "seq",
        "speaker",
        "started_at",
        "confidence",
        "words",
    }
    assert request.headers["Prefer"] == "return=representation"
    assert request.headers["Content-Type"] == "application/json"
    assert request.headers["apikey"] == SERVICE_KEY
    assert request.headers["Authorization"] == f"Bearer {SERVICE_KEY}"
    assert body(request) == [
        {
            "session_id": str(SESSION),
            "seq": seq,
            "speaker": "active",
            "started_at": "2026-01-02T03:04:05+00:00",
            "confidence": "0.93",
            "words": [{"w": "hello", "at": "2026-01-02T03:04:05+00:00"}],
        }
        for seq in (1, 2)
    ]


async def test_insert_ignoring_duplicates_on_the_conflict_columns(
    face: Face, api: respx.MockRouter, service: Any
) -> None:
    route = api.post("/rest/v1/transcript_segments").respond(201, json=[])
    rows = [{"session_id": str(SESSION), "seq": 1, "text": "hi"}]

    result = await face.call(
        service.insert,
        "transcript_segments",
        rows,
        on_conflict=("session_id", "seq"),
        ignore_duplicates=True,
    )

    assert result == []
    request = route.calls.last.request
    assert request.method == "POST"
    assert request.headers["Prefer"] == "return=representation,resolution=ignore-duplicates"
    params = dict(request.url.params.multi_items())
    assert params.keys() == {"on_conflict", "columns"}
    assert params["on_conflict"] == "session_id,seq"
    assert inserted_columns(request) == {"session_id", "seq", "text"}
    assert body(request) == rows


async def test_insert_with_on_conflict_alone_is_refused_before_any_request(
    face: Face, api: respx.MockRouter, service: Any
) -> None:
    with pytest.raises(errors.InvalidInputError, match="together"):
        await face.call(service.insert, "sessions", [{"title": "t"}], on_conflict=("id",))
    with pytest.raises(errors.InvalidInputError, match="together"):
        await face.call(service.insert, "sessions", [{"title": "t"}], ignore_duplicates=True)
    assert len(api.calls) == 0


async def test_insert_of_no_rows_sends_nothing(
    face: Face, api: respx.MockRouter, service: Any
) -> None:
    assert await face.call(service.insert, "sessions", []) == []
    assert len(api.calls) == 0


async def test_a_value_json_cannot_carry_is_invalid_input_before_any_request(
    face: Face, api: respx.MockRouter, service: Any
) -> None:
    with pytest.raises(errors.InvalidInputError) as info:
        await face.call(service.insert, "sessions", [{"metadata": {"blob": object()}}])

    assert info.value.http_status is None
    assert len(api.calls) == 0


# -- update -------------------------------------------------------------------------------


async def test_update_patches_the_filtered_rows_and_returns_them(
    face: Face, api: respx.MockRouter, service: Any
) -> None:
    returned = [{"id": str(SESSION), "status": "completed"}]
    route = api.patch("/rest/v1/sessions").respond(200, json=returned)

    result = await face.call(
        service.update,
        "sessions",
        {"status": Status.COMPLETED, "ended_at": STARTED},
        filters=[Filter("id", "eq", SESSION), Filter("status", "eq", "active")],
    )

    assert result == returned
    request = route.calls.last.request
    assert request.method == "PATCH"
    assert request.url.path == "/rest/v1/sessions"
    assert query(request) == sorted([("id", f"eq.{SESSION}"), ("status", "eq.active")])
    assert request.headers["Prefer"] == "return=representation"
    assert request.headers["apikey"] == SERVICE_KEY
    assert body(request) == {"status": "completed", "ended_at": "2026-01-02T03:04:05+00:00"}


async def test_update_without_a_filter_is_refused_before_any_request(
    face: Face, api: respx.MockRouter, service: Any
) -> None:
    with pytest.raises(errors.InvalidInputError, match="at least one filter"):
        await face.call(service.update, "sessions", {"title": "x"}, filters=[])

    assert len(api.calls) == 0


# -- rpc ----------------------------------------------------------------------------------


async def test_rpc_posts_the_named_parameters(
    face: Face, api: respx.MockRouter, service: Any
) -> None:
    returned = [{"seq": 1, "inserted": True}, {"seq": 2, "inserted": False}]
    route = api.post("/rest/v1/rpc/append_transcript_segments").respond(200, json=returned)

    result = await face.call(
        service.rpc,
        "append_transcript_segments",
        {"p_session_id": SESSION, "p_segments": [{"seq": 1, "at": STARTED}]},
    )

    assert result == returned
    request = route.calls.last.request
    assert request.method == "POST"
    assert request.url.path == "/rest/v1/rpc/append_transcript_segments"
    assert query(request) == []
    assert request.headers["apikey"] == SERVICE_KEY
    assert request.headers["Authorization"] == f"Bearer {SERVICE_KEY}"
    assert "Prefer" not in request.headers
    assert body(request) == {
        "p_session_id": str(SESSION),
        "p_segments": [{"seq": 1, "at": "2026-01-02T03:04:05+00:00"}],
    }


@pytest.mark.parametrize(
    ("response", "expected"),
    [
        pytest.param(httpx.Response(200, json=42), 42, id="scalar"),
        pytest.param(httpx.Response(200, json={"a": [1]}), {"a": [1]}, id="json"),
        pytest.param(
            httpx.Response(200, content=b"null", headers={"Content-Type": "application/json"}),
            None,
            id="void-null",
        ),
        pytest.param(httpx.Response(204), None, id="void-204"),
    ],
)
async def test_rpc_returns_the_decoded_json(
    face: Face, api: respx.MockRouter, service: Any, response: httpx.Response, expected: Any
) -> None:
    route = api.post("/rest/v1/rpc/f").mock(return_value=response)

    assert await face.call(service.rpc, "f") == expected
    assert body(route.calls.last.request) == {}


# -- create_auth_user ---------------------------------------------------------------------


async def test_create_auth_user_posts_to_the_admin_api(
    face: Face, api: respx.MockRouter, service: Any
) -> None:
    route = api.post("/auth/v1/admin/users").respond(
        200, json=auth_user(USER_A, "a@example.com"), headers=AUTH_API_VERSION
    )

    user_id = await face.call(
        service.create_auth_user, "a@example.com", password="s3cret-pass", user_id=USER_A
    )

    assert user_id == USER_A
    assert route.call_count == 1
    request = route.calls.last.request
    assert request.method == "POST"
    assert request.url.path == "/auth/v1/admin/users"
    assert query(request) == []
    assert request.headers["apikey"] == SERVICE_KEY
    assert request.headers["Authorization"] == f"Bearer {SERVICE_KEY}"
    assert body(request) == {
        "email": "a@example.com",
        "password": "s3cret-pass",
        "email_confirm": True,
        "id": str(USER_A),
    }


async def test_create_auth_user_without_password_or_id(
    face: Face, api: respx.MockRouter, service: Any
) -> None:
    route = api.post("/auth/v1/admin/users").respond(
        200, json=auth_user(USER_B, "b@example.com"), headers=AUTH_API_VERSION
    )

    assert await face.call(service.create_auth_user, "b@example.com") == USER_B
    assert body(route.calls.last.request) == {"email": "b@example.com", "email_confirm": True}


# -- identities and headers ---------------------------------------------------------------


async def test_as_user_signs_a_short_lived_jwt_for_the_user(
    face: Face, api: respx.MockRouter, service: Any
) -> None:
    route = api.get("/rest/v1/sessions").respond(200, json=[])
    before = int(time.time())  # as_user() may mint the token already
    as_a = service.as_user(USER_A)
    await face.call(as_a.select, "sessions")
    after = int(time.time())

    assert as_a.identity == Identity.user(USER_A)
    request = route.calls.last.request
    assert request.headers["apikey"] == SERVICE_KEY
    assert jwt.get_unverified_header(bearer(request))["alg"] == "HS256"
    claims = user_claims(request)
    assert claims["sub"] == str(USER_A)
    assert claims["role"] == "authenticated"
    assert claims["aud"] == "authenticated"
    assert claims["iss"] == f"{BASE}/auth/v1"
    assert before <= claims["iat"] <= after
    assert claims["exp"] - claims["iat"] == face.module.USER_TOKEN_LIFETIME
    assert face.module.USER_TOKEN_LIFETIME <= 3600


async def test_two_users_and_the_service_never_share_headers(
    face: Face, api: respx.MockRouter, service: Any
) -> None:
    route = api.get("/rest/v1/profiles").respond(200, json=[])
    as_a, as_b = service.as_user(USER_A), service.as_user(USER_B)

    for backend in (as_a, as_b, service, as_a, as_b, service):
        await face.call(backend.select, "profiles")

    requests = [call.request for call in route.calls]
    assert len(requests) == 6
    assert [user_claims(requests[i])["sub"] for i in (0, 3)] == [str(USER_A)] * 2
    assert [user_claims(requests[i])["sub"] for i in (1, 4)] == [str(USER_B)] * 2
    assert [requests[i].headers["Authorization"] for i in (2, 5)] == [f"Bearer {SERVICE_KEY}"] * 2
    assert all(request.headers["apikey"] == SERVICE_KEY for request in requests)
    assert service.identity == Identity.service_role()


async def test_no_cookie_carries_over_between_requests(
    face: Face, api: respx.MockRouter, service: Any
) -> None:
    route = api.get("/rest/v1/profiles").respond(
        200, json=[], headers={"Set-Cookie": "session=user-a; Path=/"}
    )
    as_a = service.as_user(USER_A)

    await face.call(as_a.select, "profiles")
    await face.call(service.select, "profiles")

    assert "Cookie" not in route.calls.last.request.headers


async def test_access_token_acts_as_its_user(
    face: Face, api: respx.MockRouter, backends: Callable[..., Any]
) -> None:
    token = jwt.encode(
        {"sub": str(USER_B), "role": "authenticated", "aud": "authenticated", "email": "b@x"},
        "a-secret-this-test-does-not-know-not-even-32-chars",
        "HS256",
    )
    backend = backends(ANON_KEY, access_token=token)
    route = api.get("/rest/v1/sessions").respond(200, json=[])

    await face.call(backend.select, "sessions")

    assert backend.identity.role == "authenticated"
    assert backend.identity.user_id == USER_B
    assert backend.identity.claims["email"] == "b@x"
    request = route.calls.last.request
    assert request.headers["apikey"] == ANON_KEY
    assert request.headers["Authorization"] == f"Bearer {token}"


async def test_as_user_without_the_jwt_secret_is_a_configuration_error(
    face: Face, api: respx.MockRouter, backends: Callable[..., Any]
) -> None:
    backend = backends()

    with pytest.raises(errors.ConfigurationError) as info:
        backend.as_user(USER_A)

    assert "jwt_secret" in str(info.value)
    assert "access_token" in str(info.value)
    assert len(api.calls) == 0


async def test_the_minted_jwt_is_replaced_before_it_expires(
    face: Face, api: respx.MockRouter, service: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    class Clock:
        now = float(int(time.time()))

        def time(self) -> float:
            return self.now

    clock = Clock()
    monkeypatch.setattr(face.module, "time", clock)
    route = api.get("/rest/v1/sessions").respond(200, json=[])
    lifetime, margin = face.module.USER_TOKEN_LIFETIME, face.module.USER_TOKEN_REFRESH_MARGIN
    as_a = service.as_user(USER_A)

    await face.call(as_a.select, "sessions")
    clock.now += lifetime - margin - 1
    await face.call(as_a.select, "sessions")
    clock.now += 1
    await face.call(as_a.select, "sessions")

    first, second, third = (user_claims(c.request, verify_exp=False) for c in route.calls)
    assert second == first
    assert third["iat"] == first["iat"] + lifetime - margin
    assert third["exp"] == third["iat"] + lifetime
    assert third["sub"] == str(USER_A)


@pytest.mark.parametrize(
    ("key", "options", "expected"),
    [
        pytest.param(SERVICE_KEY, {}, Identity.service_role(), id="legacy-service-key"),
        pytest.param(ANON_KEY, {}, Identity.anon(), id="legacy-anon-key"),
        pytest.param("sb_secret_abc123", {}, Identity.service_role(), id="secret-key"),
        pytest.param("sb_publishable_abc123", {}, Identity.anon(), id="publishable-key"),
        pytest.param(
            "opaque-key", {"identity": Identity.anon()}, Identity.anon(), id="stated-identity"
        ),
        pytest.param(
            SERVICE_KEY,
            {"identity": Identity.service_role()},
            Identity.service_role(),
            id="agreeing-identity",
        ),
    ],
)
async def test_the_identity_comes_from_the_key(
    face: Face, backends: Callable[..., Any], key: str, options: Any, expected: Identity
) -> None:
    assert backends(key, **options).identity == expected


@pytest.mark.parametrize(
    ("url", "key", "options", "message"),
    [
        pytest.param("supabase.test", SERVICE_KEY, {}, "http", id="url-without-scheme"),
        pytest.param(BASE, "", {}, "empty", id="empty-key"),
        pytest.param(BASE, SERVICE_KEY, {"jwt_secret": "short"}, "32", id="short-secret"),
        pytest.param(BASE, "opaque-key", {}, "identity=", id="unknown-key-role"),
        pytest.param(
            BASE,
            SERVICE_KEY,
            {"identity": Identity.user(USER_A)},
            "contradicts",
            id="identity-contradicts-key",
        ),
        pytest.param(BASE, ANON_KEY, {"access_token": "not-a-jwt"}, "not a JWT", id="bad-token"),
        pytest.param(
            BASE,
            ANON_KEY,
            {"access_token": jwt.encode({"role": "authenticated"}, SECRET, "HS256")},
            "sub",
            id="token-without-sub",
        ),
        pytest.param(
            BASE, ANON_KEY, {"access_token": SERVICE_KEY}, "service_role", id="token-not-a-user"
        ),
    ],
)
async def test_contradictory_or_missing_settings_are_configuration_errors(
    face: Face, url: str, key: str, options: Any, message: str
) -> None:
    cls = face.module.AsyncSupabaseBackend if face.name == "async" else face.module.SupabaseBackend

    with pytest.raises(errors.ConfigurationError, match=message):
        cls(url, key, **options)


# -- closing ------------------------------------------------------------------------------


async def test_close_is_idempotent_and_closes_the_derived_backends(
    face: Face, api: respx.MockRouter, backends: Callable[..., Any]
) -> None:
    parent = backends(jwt_secret=SECRET)
    child = parent.as_user(USER_A)

    await face.close(parent)
    await face.close(parent)

    for backend in (parent, child):
        with pytest.raises(errors.ConfigurationError, match="closed"):
            await face.call(backend.select, "sessions")
    with pytest.raises(errors.ConfigurationError, match="closed"):
        parent.as_user(USER_B)
    assert len(api.calls) == 0


async def test_closing_a_derived_backend_leaves_its_parent_open(
    face: Face, api: respx.MockRouter, service: Any
) -> None:
    route = api.get("/rest/v1/sessions").respond(200, json=[])
    child = service.as_user(USER_A)

    await face.close(child)
    await face.close(child)

    with pytest.raises(errors.ConfigurationError, match="closed"):
        await face.call(child.select, "sessions")
    assert await face.call(service.select, "sessions") == []
    assert route.call_count == 1


# -- PostgREST errors ---------------------------------------------------------------------


def _pgrst(code: str, message: str, details: str | None = None, hint: str | None = None) -> Any:
    return {"code": code, "message": message, "details": details, "hint": hint}


POSTGREST_JSON_ERRORS = [
    pytest.param(
        406,
        _pgrst(
            "PGRST116",
            "JSON object requested, multiple (or no) rows returned",
            "The result contains 0 rows",
        ),
        errors.NotFoundError,
        id="406-PGRST116",
    ),
    pytest.param(
        401,
        _pgrst("PGRST301", "JWSError JWSInvalidSignature"),
        errors.PermissionDeniedError,
        id="401-PGRST301",
    ),
    pytest.param(
        403,
        _pgrst("42501", 'new row violates row-level security policy for table "sessions"'),
        errors.PermissionDeniedError,
        id="403-42501",
    ),
    pytest.param(
        409,
        _pgrst(
            "23505",
            'duplicate key value violates unique constraint "transcript_segments_pkey"',
            "Key (session_id, seq)=(1, 1) already exists.",
        ),
        errors.ConflictError,
        id="409-23505",
    ),
    pytest.param(
        409,
        _pgrst("23503", "insert or update violates foreign key"),
        errors.ConflictError,
        id="409-23503",
    ),
    pytest.param(
        400,
        _pgrst("VS001", "invalid status transition: active -> analyzed", None, "complete it first"),
        errors.ConflictError,
        id="400-VS001",
    ),
    pytest.param(
        400, _pgrst("VS002", "session is not active"), errors.ConflictError, id="400-VS002"
    ),
    pytest.param(
        400,
        _pgrst("23514", 'new row violates check constraint "sessions_ended_after_started"'),
        errors.InvalidInputError,
        id="400-23514",
    ),
    pytest.param(
        400,
        _pgrst("22P02", 'invalid input syntax for type uuid: "nope"'),
        errors.InvalidInputError,
        id="400-22P02",
    ),
    pytest.param(
        404, _pgrst("PGRST205", "Could not find the table"), errors.NotFoundError, id="404-PGRST205"
    ),
    pytest.param(500, _pgrst("XX000", "internal error"), errors.TransientError, id="500-XX000"),
    pytest.param(
        502,
        {"message": "An invalid response was received from the upstream server"},
        errors.TransientError,
        id="502-json-without-code",
    ),
    pytest.param(
        503, _pgrst("PGRST001", "Database client error"), errors.TransientError, id="503-PGRST001"
    ),
    pytest.param(
        504,
        _pgrst("PGRST003", "Timed out acquiring connection"),
        errors.TransientError,
        id="504-PGRST003",
    ),
]


@pytest.mark.parametrize(("status", "error", "expected"), POSTGREST_JSON_ERRORS)
async def test_postgrest_json_errors_map_to_our_exceptions(
    face: Face,
    api: respx.MockRouter,
    service: Any,
    status: int,
    error: dict[str, Any],
    expected: type[errors.APIError],
) -> None:
    route = api.get("/rest/v1/sessions").respond(status, json=error)

    with pytest.raises(errors.APIError) as info:
        await face.call(service.select, "sessions")

    exc = info.value
    assert type(exc) is expected
    assert exc.code == error.get("code")
    assert exc.message == error["message"]
    assert exc.details == error.get("details")
    assert exc.hint == error.get("hint")
    assert exc.http_status == status
    assert route.call_count == 1  # postgrest-py's own retry is off


HTML = "<html><head><title>{status}</title></head><body>upstream trouble</body></html>"


@pytest.mark.parametrize("status", [500, 502, 503, 504, 520])
async def test_non_json_5xx_bodies_are_transient(
    face: Face, api: respx.MockRouter, service: Any, status: int
) -> None:
    page = HTML.format(status=status)
    route = api.get("/rest/v1/sessions").respond(
        status, text=page, headers={"Content-Type": "text/html"}
    )

    with pytest.raises(errors.TransientError) as info:
        await face.call(service.select, "sessions")

    exc = info.value
    assert exc.code == str(status)
    assert exc.http_status == status
    assert exc.details == page
    assert exc.message  # the reason phrase, or "Request failed with status 520"
    assert exc.hint is None
    assert route.call_count == 1


async def test_a_non_json_error_keeps_postgrest_s_proxy_status_code(
    face: Face, api: respx.MockRouter, service: Any
) -> None:
    api.get("/rest/v1/sessions").respond(
        503, text="", headers={"Proxy-Status": "PostgREST; error=PGRST001"}
    )

    with pytest.raises(errors.TransientError) as info:
        await face.call(service.select, "sessions")

    assert info.value.code == "PGRST001"
    assert info.value.http_status == 503


@pytest.mark.parametrize(
    "method",
    [
        pytest.param(("get", "/rest/v1/sessions", "select", ("sessions",), {}), id="select"),
        pytest.param(
            ("post", "/rest/v1/sessions", "insert", ("sessions", [{"title": "t"}]), {}),
            id="insert",
        ),
        pytest.param(
            (
                "patch",
                "/rest/v1/sessions",
                "update",
                ("sessions", {"title": "t"}),
                {"filters": [Filter("id", "eq", SESSION)]},
            ),
            id="update",
        ),
        pytest.param(("post", "/rest/v1/rpc/f", "rpc", ("f", {"a": 1}), {}), id="rpc"),
    ],
)
async def test_every_postgrest_method_maps_its_errors(
    face: Face, api: respx.MockRouter, service: Any, method: Any
) -> None:
    http_method, path, name, args, kwargs = method
    error = _pgrst("23505", "duplicate key value", "Key (id)=(1) already exists.", "use another")
    route = api.route(method=http_method.upper(), path=path).respond(409, json=error)

    with pytest.raises(errors.ConflictError) as info:
        await face.call(getattr(service, name), *args, **kwargs)

    assert (info.value.code, info.value.details, info.value.hint) == (
        "23505",
        "Key (id)=(1) already exists.",
        "use another",
    )
    assert info.value.http_status == 409
    assert route.call_count == 1


@pytest.mark.parametrize("status", [503, 520])
async def test_postgrest_py_never_retries_a_read(
    face: Face, api: respx.MockRouter, service: Any, status: int
) -> None:
    # postgrest-py would retry a GET on 503/520 after 1, 2 and 4 s; the retry layer is ours.
    route = api.get("/rest/v1/sessions").respond(status, json=_pgrst("PGRST001", "down"))

    started = time.monotonic()
    with pytest.raises(errors.TransientError):
        await face.call(service.select, "sessions")

    assert route.call_count == 1
    assert "X-Retry-Count" not in route.calls.last.request.headers
    assert time.monotonic() - started < 0.5


@pytest.mark.parametrize(
    "failure",
    [httpx.ConnectTimeout, httpx.ReadTimeout, httpx.ConnectError, httpx.RemoteProtocolError],
)
async def test_transport_failures_are_transient_and_not_retried(
    face: Face, api: respx.MockRouter, service: Any, failure: type[httpx.TransportError]
) -> None:
    route = api.get("/rest/v1/sessions").mock(side_effect=failure)

    with pytest.raises(errors.TransientError) as info:
        await face.call(service.select, "sessions")

    assert failure.__name__ in info.value.message
    assert info.value.http_status is None
    assert isinstance(info.value.__cause__, failure)
    assert route.call_count == 1


@pytest.mark.parametrize(
    "response",
    [
        pytest.param(httpx.Response(200, text="<html>captive portal</html>"), id="html"),
        pytest.param(httpx.Response(200, json={"not": "rows"}), id="object"),
    ],
)
async def test_a_success_that_is_not_rows_is_an_api_error(
    face: Face, api: respx.MockRouter, service: Any, response: httpx.Response
) -> None:
    api.get("/rest/v1/sessions").mock(return_value=response)

    with pytest.raises(errors.APIError) as info:
        await face.call(service.select, "sessions")

    assert type(info.value) is errors.UnexpectedResponseError
    assert info.value.http_status == 200


async def test_concurrent_calls_each_map_their_own_http_status() -> None:
    # The HTTP status reaches the error mapping through a context variable set per call.
    # respx answers without ever yielding between a response's headers and its body, so
    # this one test talks HTTP to a loopback server instead: A's headers (502) arrive, then
    # B's whole response (400) while A still waits for its body. Async face only: the
    # question is whether concurrent tasks on one connection pool see each other's status.
    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1")
        token = next(
            line.split(" ", 2)[2]
            for line in head.split("\r\n")
            if line.lower().startswith("authorization:")
        )
        is_a = jwt.decode(token, SECRET, algorithms=["HS256"], audience="authenticated")[
            "sub"
        ] == str(USER_A)
        payload = json.dumps({"message": "upstream" if is_a else "bad"}).encode()
        status = b"502 Bad Gateway" if is_a else b"400 Bad Request"
        headers = (
            b"HTTP/1.1 " + status + b"\r\nContent-Type: application/json\r\n"
            b"Connection: close\r\nContent-Length: " + str(len(payload)).encode() + b"\r\n\r\n"
        )
        if is_a:
            writer.write(headers)
            await writer.drain()
            await asyncio.sleep(0.2)
        else:
            await asyncio.sleep(0.05)
            writer.write(headers)
        writer.write(payload)
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    backend = async_supabase.AsyncSupabaseBackend(
        f"http://127.0.0.1:{port}", SERVICE_KEY, jwt_secret=SECRET
    )
    as_a, as_b = backend.as_user(USER_A), backend.as_user(USER_B)
    try:
        error_a, error_b = await asyncio.gather(
            as_a.select("sessions"), as_b.select("sessions"), return_exceptions=True
        )
    finally:
        await backend.aclose()
        server.close()
        await server.wait_closed()

    assert isinstance(error_a, errors.TransientError)
    assert (error_a.message, error_a.http_status) == ("upstream", 502)
    assert isinstance(error_b, errors.InvalidInputError)
    assert (error_b.message, error_b.http_status) == ("bad", 400)


# -- Auth errors --------------------------------------------------------------------------


AUTH_ERRORS = [
    pytest.param(
        422,
        {
            "code": "email_exists",
            "message": "A user with this email address has already been registered",
        },
        AUTH_API_VERSION,
        errors.ConflictError,
        "email_exists",
        id="422-email_exists",
    ),
    pytest.param(
        422,
        {
            "code": 422,
            "error_code": "email_exists",
            "msg": "A user with this email address has already been registered",
        },
        {},
        errors.ConflictError,
        "email_exists",
        id="422-email_exists-legacy-body",
    ),
    pytest.param(
        401,
        {"code": "no_authorization", "message": "This endpoint requires a Bearer token"},
        AUTH_API_VERSION,
        errors.PermissionDeniedError,
        "no_authorization",
        id="401-no_authorization",
    ),
    pytest.param(
        403,
        {"code": "not_admin", "message": "User not allowed"},
        AUTH_API_VERSION,
        errors.PermissionDeniedError,
        "not_admin",
        id="403-not_admin",
    ),
    pytest.param(
        422,
        {
            "code": "weak_password",
            "message": "Password is too weak",
            "weak_password": {"reasons": ["length"]},
        },
        AUTH_API_VERSION,
        errors.InvalidInputError,
        "weak_password",
        id="422-weak_password",
    ),
    pytest.param(
        400,
        {
            "code": "validation_failed",
            "message": "Unable to validate email address: invalid format",
        },
        AUTH_API_VERSION,
        errors.InvalidInputError,
        "validation_failed",
        id="400-validation_failed",
    ),
    pytest.param(
        429,
        {"code": "over_request_rate_limit", "message": "Request rate limit reached"},
        AUTH_API_VERSION,
        errors.TransientError,
        "over_request_rate_limit",
        id="429-over_request_rate_limit",
    ),
    pytest.param(
        500,
        {"code": "unexpected_failure", "message": "Database error creating new user"},
        AUTH_API_VERSION,
        errors.TransientError,
        "unexpected_failure",
        id="500-unexpected_failure",
    ),
]


@pytest.mark.parametrize(("status", "error", "headers", "expected", "code"), AUTH_ERRORS)
async def test_auth_errors_map_to_our_exceptions(
    face: Face,
    api: respx.MockRouter,
    service: Any,
    status: int,
    error: dict[str, Any],
    headers: dict[str, str],
    expected: type[errors.APIError],
    code: str,
) -> None:
    route = api.post("/auth/v1/admin/users").respond(status, json=error, headers=headers)

    with pytest.raises(errors.APIError) as info:
        await face.call(service.create_auth_user, "a@example.com", password="pw")

    exc = info.value
    assert type(exc) is expected
    assert exc.code == code
    assert exc.message == error.get("message", error.get("msg"))
    assert exc.http_status == status
    assert route.call_count == 1


@pytest.mark.parametrize("status", [502, 503, 504])
async def test_auth_gateway_failures_are_transient(
    face: Face, api: respx.MockRouter, service: Any, status: int
) -> None:
    api.post("/auth/v1/admin/users").respond(
        status, text=HTML.format(status=status), headers={"Content-Type": "text/html"}
    )

    with pytest.raises(errors.TransientError) as info:
        await face.call(service.create_auth_user, "a@example.com")

    assert info.value.http_status == status


@pytest.mark.parametrize("failure", [httpx.ConnectTimeout, httpx.ReadTimeout, httpx.ConnectError])
async def test_auth_transport_failures_are_transient(
    face: Face, api: respx.MockRouter, service: Any, failure: type[httpx.TransportError]
) -> None:
    route = api.post("/auth/v1/admin/users").mock(side_effect=failure)

    with pytest.raises(errors.TransientError) as info:
        await face.call(service.create_auth_user, "a@example.com")

    assert info.value.http_status is None
    assert route.call_count == 1


# -- rpc_rows: rows validated from the answer's bytes ---------------------------------------


def _session_json(n: int) -> dict[str, Any]:
    """A row of ``sessions`` as PostgREST answers it (every column, JSON-typed)."""
    at = (STARTED + datetime.timedelta(minutes=n)).isoformat()
    return {
        "id": str(uuid.UUID(int=n + 1)),
        "profile_id": str(USER_A),
        "company_id": str(uuid.UUID(int=999)),
        "title": f"call {n}",
        "status": "completed",
        "started_at": at,
        "ended_at": at,
        "duration_seconds": 60,
        "audio_path": None,
        "audio_size_bytes": None,
        "audio_quality": {"snr_db": 31.5},
        "minute_cost": 0.25,
        "processing_status": "pending",
        "analytics_summary": {},
        "metadata": {"scenario": "cold-call"},
        "created_at": at,
        "updated_at": at,
    }


async def test_rpc_rows_reads_the_rows_as_models_from_the_same_request_as_rpc(
    face: Face, api: respx.MockRouter, service: Any
) -> None:
    rows = [_session_json(n) for n in range(3)]
    route = api.post("/rest/v1/rpc/list_sessions").respond(200, json=rows)
    params = {"profile_id": USER_A, "started_after": STARTED, "max_rows": 4}

    sessions = await face.call(service.rpc_rows, "list_sessions", params, Session)
    decoded = await face.call(service.rpc, "list_sessions", params)

    assert sessions == [Session.model_validate(row) for row in decoded]
    assert [s.id for s in sessions] == [uuid.UUID(row["id"]) for row in rows]
    assert sessions[0].minute_cost == decimal.Decimal("0.25")
    first, second = route.calls
    assert (
        body(first.request)
        == body(second.request)
        == {
            "profile_id": str(USER_A),
            "started_after": "2026-01-02T03:04:05+00:00",
            "max_rows": 4,
        }
    )
    assert first.request.headers["Authorization"] == second.request.headers["Authorization"]


@pytest.mark.parametrize(
    "response",
    [
        pytest.param(httpx.Response(200, json=[]), id="empty-array"),
        pytest.param(
            httpx.Response(200, content=b"null", headers={"Content-Type": "application/json"}),
            id="null",
        ),
        pytest.param(httpx.Response(204), id="204"),
    ],
)
async def test_rpc_rows_of_no_rows_is_an_empty_list(
    face: Face, api: respx.MockRouter, service: Any, response: httpx.Response
) -> None:
    api.post("/rest/v1/rpc/list_sessions").mock(return_value=response)

    assert await face.call(service.rpc_rows, "list_sessions", {}, Session) == []


@pytest.mark.parametrize(("status", "error", "expected"), POSTGREST_JSON_ERRORS)
async def test_rpc_rows_maps_postgrest_errors_as_rpc_does(
    face: Face,
    api: respx.MockRouter,
    service: Any,
    status: int,
    error: dict[str, Any],
    expected: type[errors.APIError],
) -> None:
    route = api.post("/rest/v1/rpc/list_sessions").respond(status, json=error)

    with pytest.raises(errors.APIError) as info:
        await face.call(service.rpc_rows, "list_sessions", {}, Session)
    with pytest.raises(errors.APIError) as by_rpc:
        await face.call(service.rpc, "list_sessions", {})

    exc = info.value
    assert type(exc) is expected is type(by_rpc.value)
    assert (exc.code, exc.message, exc.details, exc.hint, exc.http_status) == (
        error.get("code"),
        error["message"],
        error.get("details"),
        error.get("hint"),
        status,
    )
    assert route.call_count == 2  # postgrest-py's own retry is off


@pytest.mark.parametrize(
    "response",
    [
        pytest.param(httpx.Response(503, text=HTML.format(status=503)), id="html-503"),
        pytest.param(
            httpx.Response(503, text="", headers={"Proxy-Status": "PostgREST; error=PGRST001"}),
            id="proxy-status",
        ),
    ],
)
async def test_rpc_rows_maps_non_json_errors_as_rpc_does(
    face: Face, api: respx.MockRouter, service: Any, response: httpx.Response
) -> None:
    api.post("/rest/v1/rpc/list_sessions").mock(return_value=response)

    with pytest.raises(errors.TransientError) as info:
        await face.call(service.rpc_rows, "list_sessions", {}, Session)
    with pytest.raises(errors.TransientError) as by_rpc:
        await face.call(service.rpc, "list_sessions", {})

    fields = ("code", "message", "details", "hint", "http_status")
    assert [getattr(info.value, f) for f in fields] == [getattr(by_rpc.value, f) for f in fields]
    assert info.value.http_status == 503


async def test_rpc_rows_transport_failures_are_transient(
    face: Face, api: respx.MockRouter, service: Any
) -> None:
    api.post("/rest/v1/rpc/list_sessions").mock(side_effect=httpx.ReadTimeout)

    with pytest.raises(errors.TransientError) as info:
        await face.call(service.rpc_rows, "list_sessions", {}, Session)

    assert info.value.http_status is None
    assert isinstance(info.value.__cause__, httpx.ReadTimeout)


def _bad_status(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    rows[2]["status"] = "paused"
    return rows


@pytest.mark.parametrize(
    ("content", "where"),
    [
        pytest.param(b"<html>captive portal</html>", "input: Invalid JSON", id="html"),
        pytest.param(b'{"not": "rows"}', "input: Input should be a valid array", id="object"),
        pytest.param(
            json.dumps(_bad_status([_session_json(n) for n in range(3)])).encode(),
            "[2].status: Input should be",
            id="bad-row",
        ),
        pytest.param(
            json.dumps([_session_json(0), {"id": str(SESSION)}]).encode(),
            "[1].profile_id: Field required",
            id="missing-column",
        ),
    ],
)
async def test_rpc_rows_of_an_answer_that_does_not_fit_say_where(
    face: Face, api: respx.MockRouter, service: Any, content: bytes, where: str
) -> None:
    api.post("/rest/v1/rpc/list_sessions").respond(200, content=content)

    with pytest.raises(errors.APIError) as info:
        await face.call(service.rpc_rows, "list_sessions", {}, Session)

    assert type(info.value) is errors.UnexpectedResponseError
    assert info.value.http_status == 200
    assert str(info.value).startswith("cannot read the answer as Session rows: ")
    assert where in str(info.value)
