"""The Supabase backend's Storage contract (``remove_storage_objects``), on both faces.

respx intercepts httpx inside supabase-py / storage3: nothing leaves the process. Pinned:
the method, URL, ``apikey`` / ``Authorization`` headers and JSON body of the delete request,
chunking at 1,000 paths, and how Storage errors (whose ``statusCode`` is in the body, not
necessarily the HTTP status) become ``voicesessions.errors`` exceptions.
"""

from __future__ import annotations

import inspect
import json
import uuid
from collections.abc import AsyncIterator
from typing import Any

import httpx
import jwt
import pytest
import respx

from tests.contract.conftest import BASE, SECRET, SERVICE_KEY, USER_A, Face
from voicesessions import errors
from voicesessions._async.backends.supabase import MAX_STORAGE_PATHS_PER_REQUEST

pytestmark = pytest.mark.asyncio(loop_scope="session")

BUCKET = "session-audio"
URL = f"{BASE}/storage/v1/object/{BUCKET}"


async def call(result: Any) -> Any:
    return await result if inspect.isawaitable(result) else result


@pytest.fixture
async def backend(face: Face) -> AsyncIterator[Any]:
    made = face.build(SERVICE_KEY, jwt_secret=SECRET)
    try:
        yield made
    finally:
        await face.close(made)


def deleted(paths: list[str]) -> list[dict[str, Any]]:
    """Storage's answer: the objects it deleted (missing ones are simply not listed)."""
    return [{"name": p, "bucket_id": BUCKET, "id": str(uuid.uuid4())} for p in paths]


def echo(request: httpx.Request) -> httpx.Response:
    return httpx.Response(200, json=deleted(json.loads(request.content)["prefixes"]))


async def test_the_delete_request_is_pinned(api: respx.MockRouter, backend: Any) -> None:
    route = api.delete(URL).mock(side_effect=echo)
    paths = ["c/p/s1.webm", "c/p/s2.wav"]
    gone = await call(backend.remove_storage_objects(BUCKET, paths))
    assert gone == paths
    assert route.call_count == 1
    request = route.calls[0].request
    assert request.method == "DELETE"
    assert str(request.url) == URL
    assert request.headers["apikey"] == SERVICE_KEY
    assert request.headers["Authorization"] == f"Bearer {SERVICE_KEY}"
    assert request.headers["content-type"].startswith("application/json")
    assert json.loads(request.content) == {"prefixes": paths}


async def test_objects_already_gone_count_as_removed(
    api: respx.MockRouter,
    backend: Any,
) -> None:
    api.delete(URL).mock(return_value=httpx.Response(200, json=[]))
    assert await call(backend.remove_storage_objects(BUCKET, ["c/p/gone.webm"])) == [
        "c/p/gone.webm"
    ]


async def test_nothing_to_remove_sends_nothing(api: respx.MockRouter, backend: Any) -> None:
    route = api.delete(URL).mock(side_effect=echo)
    assert await call(backend.remove_storage_objects(BUCKET, [])) == []
    assert route.call_count == 0


async def test_a_user_backend_sends_the_users_token(
    api: respx.MockRouter,
    backend: Any,
) -> None:
    route = api.delete(URL).mock(side_effect=echo)
    user = backend.as_user(USER_A)
    await call(user.remove_storage_objects(BUCKET, ["x/y/z.webm"]))
    request = route.calls[0].request
    assert request.headers["apikey"] == SERVICE_KEY
    scheme, token = request.headers["Authorization"].split(" ", 1)
    assert scheme == "Bearer"
    claims = jwt.decode(token, SECRET, algorithms=["HS256"], audience="authenticated")
    assert claims["sub"] == str(USER_A)
    assert claims["role"] == "authenticated"


async def test_paths_are_sent_in_chunks_of_1000(api: respx.MockRouter, backend: Any) -> None:
    assert MAX_STORAGE_PATHS_PER_REQUEST == 1000
    route = api.delete(URL).mock(side_effect=echo)
    paths = [f"c/p/{i:05d}.webm" for i in range(2500)]
    gone = await call(backend.remove_storage_objects(BUCKET, paths))
    assert gone == paths
    sent = [json.loads(c.request.content)["prefixes"] for c in route.calls]
    assert [len(chunk) for chunk in sent] == [1000, 1000, 500]
    assert [p for chunk in sent for p in chunk] == paths


async def test_a_failing_chunk_raises_after_the_earlier_ones(
    api: respx.MockRouter,
    backend: Any,
) -> None:
    answers = iter(
        [
            httpx.Response(200, json=[]),
            httpx.Response(500, json={"statusCode": "500", "error": "internal", "message": "boom"}),
        ]
    )
    route = api.delete(URL).mock(side_effect=lambda request: next(answers))
    with pytest.raises(errors.TransientError):
        await call(backend.remove_storage_objects(BUCKET, [f"p{i}" for i in range(1500)]))
    assert route.call_count == 2


ERRORS: list[tuple[int, Any, type[errors.APIError], int | None]] = [
    # Storage answers 400 with the real status in the body (its not-found convention).
    (
        400,
        {"statusCode": "404", "error": "not_found", "message": "Object not found"},
        errors.NotFoundError,
        404,
    ),
    (
        400,
        {"statusCode": "400", "error": "InvalidKey", "message": "Invalid key: a\\b"},
        errors.InvalidInputError,
        400,
    ),
    (
        403,
        {"statusCode": "403", "error": "Unauthorized", "message": "violates row-level security"},
        errors.PermissionDeniedError,
        403,
    ),
    (
        404,
        {"statusCode": "404", "error": "Bucket not found", "message": "Bucket not found"},
        errors.NotFoundError,
        404,
    ),
    (
        500,
        {"statusCode": "500", "error": "internal", "message": "Internal Server Error"},
        errors.TransientError,
        500,
    ),
    # A body that is not Storage's JSON: the HTTP status decides.
    (502, "Bad Gateway", errors.TransientError, 502),
]


@pytest.mark.parametrize(("status", "body", "expected", "reported"), ERRORS)
async def test_storage_errors_are_mapped(
    api: respx.MockRouter,
    backend: Any,
    status: int,
    body: Any,
    expected: type[errors.APIError],
    reported: int | None,
) -> None:
    response = (
        httpx.Response(status, json=body)
        if isinstance(body, dict)
        else httpx.Response(status, text=body)
    )
    api.delete(URL).mock(return_value=response)
    with pytest.raises(expected) as caught:
        await call(backend.remove_storage_objects(BUCKET, ["c/p/s.webm"]))
    assert type(caught.value) is expected
    assert caught.value.http_status == reported
    if isinstance(body, dict):
        assert body["message"] in caught.value.message
        assert caught.value.code == body["error"]


async def test_a_transport_failure_is_transient(api: respx.MockRouter, backend: Any) -> None:
    api.delete(URL).mock(side_effect=httpx.ConnectError("refused"))
    with pytest.raises(errors.TransientError):
        await call(backend.remove_storage_objects(BUCKET, ["c/p/s.webm"]))


@pytest.mark.parametrize("paths", ["c/p/s.webm", [""], [None]])
async def test_bad_input_is_refused_before_any_request(
    api: respx.MockRouter,
    backend: Any,
    paths: Any,
) -> None:
    route = api.delete(URL).mock(side_effect=echo)
    with pytest.raises(errors.InvalidInputError):
        await call(backend.remove_storage_objects(BUCKET, paths))
    with pytest.raises(errors.InvalidInputError):
        await call(backend.remove_storage_objects("a/b", ["x"]))
    assert route.call_count == 0
