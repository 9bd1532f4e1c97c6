"""``vs.gdpr`` over the Supabase backend: the HTTP calls it makes, pinned, on both faces.

respx answers every request (tests/contract/conftest.py); nothing leaves the process. For
each GDPR operation the tests pin the sequence of calls (the PostgREST function, then the
Storage API deletions, then the confirmation), their method and path, the JSON body, the
``apikey`` / ``Authorization`` headers of the identity (service role, a user's minted JWT,
a user's own access token), and how PostgREST and Storage errors become our exceptions
(and whether they are retried).

The bodies are also held against the real SQL: after every test, each ``/rest/v1/rpc/<fn>``
request the SDK sent must name exactly the parameters of an overload of ``public.<fn>`` in
the migrated template database, with JSON values that fit their declared types (the
catalog and checks of test_schema_contract.py), and must run there the way PostgREST runs
it (``json_to_record`` into the declared types, as the service role, rolled back): the call
may be refused by the function's own checks for the made-up ids (P0002), never for its
arguments.
"""

from __future__ import annotations

import datetime
import json
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import httpx
import jwt
import psycopg
import pytest
import respx

from tests.conftest import Database
from tests.contract.conftest import (
    ANON_KEY,
    BASE,
    SECRET,
    SERVICE_KEY,
    SESSION,
    USER_A,
    Face,
)
from tests.contract.test_schema_contract import (
    Catalog,
    _overload,
    _rpc_sql,
    json_problem,
    read_catalog,
)
from tests.support.api import Identity as ApiIdentity
from voicesessions import AsyncVoiceSessions, GDPRRequest, VoiceSessions, errors
from voicesessions._retry_policy import RetryPolicy

pytestmark = pytest.mark.asyncio(loop_scope="session")

RPC = "/rest/v1/rpc/"
AUDIO = "session-audio"
OTHER_BUCKET = "session-exports"
COMPANY = uuid.UUID("c0c0c0c0-0000-4000-8000-00000000000c")
REQUEST = uuid.UUID("4e4e4e4e-0000-4000-8000-000000000001")
REQUEST_2 = uuid.UUID("4e4e4e4e-0000-4000-8000-000000000002")
NOW = datetime.datetime(2026, 5, 6, 7, 8, 9, tzinfo=datetime.UTC)
#: Retries without waiting, so that the tests can count attempts.
RETRY = RetryPolicy(max_attempts=3, initial_backoff_s=0, max_backoff_s=0)


def storage_path(bucket: str) -> str:
    return f"/storage/v1/object/{bucket}"


def audio(name: str) -> str:
    """An object path in the person's folder, as the migrations lay audio out."""
    return f"{COMPANY}/{USER_A}/{name}"


# -- the real signatures ------------------------------------------------------------------


@pytest.fixture(scope="module")
def catalog(template_db: Database) -> Catalog:
    return read_catalog(template_db)


def signature_problems(catalog: Catalog, request: httpx.Request) -> list[str]:
    """Why the body of an rpc request does not match ``public.<fn>`` (empty: it does)."""
    function = request.url.path.removeprefix(RPC)
    body = json.loads(request.content)
    if not isinstance(body, dict):
        return [f"{function}: the body is not a JSON object: {body!r}"]
    overload = _overload(catalog, function, body)
    if overload is None:
        signatures = [f.signature for f in catalog.functions.get(function, [])]
        return [f"public.{function} takes none of {sorted(body)}: {signatures}"]
    problems = [
        f"{function}({name}): {problem}"
        for name, value in body.items()
        if (problem := json_problem(value, overload.params[name]))
    ]
    if set(body) != set(overload.params):  # a default must not decide silently
        problems.append(f"{function}: sent {sorted(body)}, declared {list(overload.params)}")
    return problems


def replay_failures(catalog: Catalog, db: Database, requests: list[httpx.Request]) -> list[str]:
    """Run each rpc body on ``db`` as PostgREST would (service role, rolled back); the
    calls that failed for another reason than the function's own "no such id" (P0002)."""
    failures = []
    with db.api() as api:
        for request in requests:
            function = request.url.path.removeprefix(RPC)
            body = json.loads(request.content)
            overload = _overload(catalog, function, body)
            assert overload is not None  # signature_problems reports it otherwise
            try:
                api.run(
                    ApiIdentity.service_role(),
                    _rpc_sql(overload, body),
                    (json.dumps(body),),
                    path=f"/rpc/{function}",
                )
            except psycopg.Error as exc:
                if exc.sqlstate != "P0002":
                    failures.append(f"{function}({request.content.decode()}): {exc.sqlstate} {exc}")
    return failures


@pytest.fixture
def project(api: respx.MockRouter, catalog: Catalog, template_db: Database) -> Iterator[Any]:
    """The mocked project; afterwards every rpc body sent must fit and run on the real SQL.
    gdpr_check_storage_removal answers, unless a test says otherwise, that every path asked
    about is still pending and the caller may remove it."""
    api.post(RPC + "gdpr_check_storage_removal").mock(side_effect=checked)
    yield api
    requests = [c.request for c in api.calls if c.request.url.path.startswith(RPC)]
    assert requests, "the test made no rpc call"
    assert [p for r in requests for p in signature_problems(catalog, r)] == []
    assert replay_failures(catalog, template_db, requests) == []


# -- clients ------------------------------------------------------------------------------


@pytest.fixture
async def clients(face: Face) -> AsyncIterator[Callable[..., Any]]:
    """Build ``VoiceSessions.from_supabase`` clients of the face under test; all closed
    afterwards."""
    made: list[Any] = []

    def build(key: str = SERVICE_KEY, **options: Any) -> Any:
        cls: Any = AsyncVoiceSessions if face.name == "async" else VoiceSessions
        options.setdefault("retry", RETRY)
        client = cls.from_supabase(BASE, key, **options)
        made.append(client)
        return client

    yield build
    for client in made:
        await face.call(client.aclose if face.name == "async" else client.close)


@pytest.fixture
def vs(clients: Callable[..., Any]) -> Any:
    """A service-role client that can act as users (it has the JWT secret)."""
    return clients(jwt_secret=SECRET)


def calls(api: respx.MockRouter) -> list[tuple[str, str]]:
    """Every request made, in order, as (method, path)."""
    return [(c.request.method, c.request.url.path) for c in api.calls]


def body(request: httpx.Request) -> Any:
    return json.loads(request.content)


def sent_as(request: httpx.Request) -> tuple[str, str | None]:
    """(apikey, role or user id) of a request; checks the Bearer token's signature."""
    scheme, _, token = request.headers["Authorization"].partition(" ")
    assert scheme == "Bearer"
    claims = jwt.decode(token, SECRET, algorithms=["HS256"], options={"verify_aud": False})
    who = claims["sub"] if claims["role"] == "authenticated" else claims["role"]
    return request.headers["apikey"], who


def removed(request: httpx.Request) -> httpx.Response:
    """Storage's answer to a delete: the objects it deleted."""
    paths = body(request)["prefixes"]
    bucket = request.url.path.rsplit("/", 1)[1]
    return httpx.Response(
        200, json=[{"name": p, "bucket_id": bucket, "id": str(uuid.uuid4())} for p in paths]
    )


def checked(request: httpx.Request) -> httpx.Response:
    """gdpr_check_storage_removal's answer: every path asked about may be removed."""
    return httpx.Response(200, json=body(request)["paths"])


def confirmed(kind: str) -> Callable[[httpx.Request], httpx.Response]:
    """gdpr_confirm_storage_removed's answer: every confirmed path removed, none left."""

    def answer(request: httpx.Request) -> httpx.Response:
        sent = body(request)
        return httpx.Response(
            200,
            json={
                "request_id": sent["request_id"],
                "kind": kind,
                "removed": len(sent["paths"]),
                "not_pending": 0,
                "remaining": [],
                "status": "completed",
            },
        )

    return answer


def pending(request_id: uuid.UUID | None, *paths: str, bucket: str = AUDIO) -> list[Any]:
    rid = None if request_id is None else str(request_id)
    return [{"request_id": rid, "bucket": bucket, "path": p} for p in paths]


def pgrst(code: str, message: str, hint: str | None = None) -> dict[str, Any]:
    return {"code": code, "message": message, "details": None, "hint": hint}


ERASURE_COUNTS = {
    "sessions": 2,
    "participants": 2,
    "segments": 40,
    "transcripts": 2,
    "analyses": 1,
    "analytics": 2,
    "broadcasts": 0,
    "profile": 1,
    "account": 0,
    "identities": 0,
    "auth_audit_entries": 0,
}


def erasure_report(
    storage: list[Any], *, dry_run: bool = False, include_account: bool = False
) -> dict[str, Any]:
    """What gdpr_erase_user answers (its documented shape)."""
    return {
        "request_id": None if dry_run else str(REQUEST),
        "subject_ref": "3f1c0d9e",
        "dry_run": dry_run,
        "include_account": include_account,
        "already_erased": False,
        "counts": {**ERASURE_COUNTS, "account": int(include_account)},
        "categories": ["sessions", "segments", "transcripts", "analyses", "profile"],
        "pending_storage": storage,
        "stores": ["database", "storage"],
        "unreachable": [],
        "status": None if dry_run else "in_progress",
    }


# -- delete_user_session_data -------------------------------------------------------------


@pytest.mark.parametrize("include_account", [False, True])
async def test_erasure_calls_the_function_deletes_the_audio_then_confirms(
    face: Face, project: respx.MockRouter, vs: Any, include_account: bool
) -> None:
    paths = [audio("s1.webm"), audio("s2.wav")]
    erase = project.post(RPC + "gdpr_erase_user").respond(
        200, json=erasure_report(pending(REQUEST, *paths), include_account=include_account)
    )
    delete = project.delete(storage_path(AUDIO)).mock(side_effect=removed)
    confirm = project.post(RPC + "gdpr_confirm_storage_removed").mock(
        side_effect=confirmed("erasure")
    )

    report = await face.call(
        vs.gdpr.delete_user_session_data, USER_A, include_account=include_account
    )

    assert calls(project) == [
        ("POST", RPC + "gdpr_erase_user"),
        ("POST", RPC + "gdpr_check_storage_removal"),  # authorized before Storage is touched
        ("DELETE", storage_path(AUDIO)),
        ("POST", RPC + "gdpr_confirm_storage_removed"),
    ]
    assert body(erase.calls.last.request) == {
        "subject_id": str(USER_A),
        "include_account": include_account,
        "dry_run": False,
    }
    assert body(delete.calls.last.request) == {"prefixes": paths}
    assert body(confirm.calls.last.request) == {"request_id": str(REQUEST), "paths": paths}
    for call in project.calls:
        assert sent_as(call.request) == (SERVICE_KEY, "service_role")
        assert call.request.headers["content-type"].startswith("application/json")
    assert report.request_id == REQUEST
    assert report.status == "completed"
    assert (report.storage_removed, report.pending_storage) == (2, [])
    assert report.counts["account"] == int(include_account)


async def test_an_erasure_dry_run_is_one_call_and_deletes_nothing(
    face: Face, project: respx.MockRouter, vs: Any
) -> None:
    paths = [audio("s1.webm")]
    erase = project.post(RPC + "gdpr_erase_user").respond(
        200, json=erasure_report(pending(None, *paths), dry_run=True)
    )

    report = await face.call(vs.gdpr.delete_user_session_data, str(USER_A), dry_run=True)

    assert calls(project) == [("POST", RPC + "gdpr_erase_user")]
    assert body(erase.calls.last.request) == {
        "subject_id": str(USER_A),
        "include_account": False,
        "dry_run": True,
    }
    assert report.dry_run
    assert [(o.request_id, o.bucket, o.path) for o in report.pending_storage] == [
        (None, AUDIO, paths[0])
    ]
    assert report.storage_removed == 0


async def test_an_erasure_as_the_user_sends_the_users_jwt_everywhere(
    face: Face, project: respx.MockRouter, vs: Any
) -> None:
    project.post(RPC + "gdpr_erase_user").respond(
        200, json=erasure_report(pending(REQUEST, audio("s1.webm")))
    )
    project.delete(storage_path(AUDIO)).mock(side_effect=removed)
    project.post(RPC + "gdpr_confirm_storage_removed").mock(side_effect=confirmed("erasure"))

    await face.call(vs.as_user(USER_A).gdpr.delete_user_session_data, USER_A)

    assert len(project.calls) == 4
    for call in project.calls:  # the function, the check, Storage, the confirmation: all as A
        assert sent_as(call.request) == (SERVICE_KEY, str(USER_A))


async def test_an_erasure_with_the_users_own_access_token(
    face: Face, project: respx.MockRouter, clients: Callable[..., Any]
) -> None:
    token = jwt.encode(
        {
            "sub": str(USER_A),
            "role": "authenticated",
            "aud": "authenticated",
            "exp": int(NOW.timestamp()) + 10 * 365 * 86400,
        },
        SECRET,
        "HS256",
    )
    project.post(RPC + "gdpr_erase_user").respond(
        200, json=erasure_report(pending(REQUEST, audio("s1.webm")))
    )
    project.delete(storage_path(AUDIO)).mock(side_effect=removed)
    project.post(RPC + "gdpr_confirm_storage_removed").mock(side_effect=confirmed("erasure"))

    vs = clients(ANON_KEY, access_token=token)
    await face.call(vs.gdpr.delete_user_session_data, USER_A)

    assert len(project.calls) == 4
    for call in project.calls:
        assert call.request.headers["apikey"] == ANON_KEY
        assert call.request.headers["Authorization"] == f"Bearer {token}"


# -- anonymize_session_data ---------------------------------------------------------------


def anonymization_report(storage: list[Any], *, already: bool = False) -> dict[str, Any]:
    """What gdpr_anonymize_session answers (its documented shape)."""
    counts = dict.fromkeys(
        ("audio", "broadcasts", "transcripts", "segments", "sessions", "participants", "analyses"),
        0 if already else 1,
    )
    return {
        "request_id": None if already else str(REQUEST),
        "session_id": str(SESSION),
        "already_anonymized": already,
        "counts": counts,
        "categories": [] if already else ["transcripts", "segments", "audio"],
        "personal_keys": ["name", "email", "ssn"],
        "pending_storage": storage,
        "stores": ["database"] if already else ["database", "storage"],
        "unreachable": [],
        "status": None if already else "in_progress",
    }


@pytest.mark.parametrize(
    ("keys", "sent"),
    [
        pytest.param(lambda: (), [], id="default-keys"),
        pytest.param(lambda: ("ssn", 'odd "key", {x}'), ["ssn", 'odd "key", {x}'], id="extra-keys"),
        pytest.param(lambda: iter(["phone"]), ["phone"], id="an-iterable"),
    ],
)
async def test_anonymization_sends_the_extra_keys_as_a_json_array(
    face: Face,
    project: respx.MockRouter,
    vs: Any,
    keys: Callable[[], Any],
    sent: list[str],
) -> None:
    path = audio(f"{SESSION}.webm")
    anonymize = project.post(RPC + "gdpr_anonymize_session").respond(
        200, json=anonymization_report(pending(REQUEST, path))
    )
    delete = project.delete(storage_path(AUDIO)).mock(side_effect=removed)
    confirm = project.post(RPC + "gdpr_confirm_storage_removed").mock(
        side_effect=confirmed("anonymization")
    )

    report = await face.call(vs.gdpr.anonymize_session_data, SESSION, extra_personal_keys=keys())

    assert calls(project) == [
        ("POST", RPC + "gdpr_anonymize_session"),
        ("POST", RPC + "gdpr_check_storage_removal"),
        ("DELETE", storage_path(AUDIO)),
        ("POST", RPC + "gdpr_confirm_storage_removed"),
    ]
    assert body(anonymize.calls.last.request) == {
        "session_id": str(SESSION),
        "extra_personal_keys": sent,
    }
    assert body(delete.calls.last.request) == {"prefixes": [path]}
    assert body(confirm.calls.last.request) == {"request_id": str(REQUEST), "paths": [path]}
    assert (report.session_id, report.status, report.storage_removed) == (
        SESSION,
        "completed",
        1,
    )


async def test_an_anonymized_session_is_one_call(
    face: Face, project: respx.MockRouter, vs: Any
) -> None:
    project.post(RPC + "gdpr_anonymize_session").respond(
        200, json=anonymization_report([], already=True)
    )

    report = await face.call(vs.gdpr.anonymize_session_data, str(SESSION))

    assert calls(project) == [("POST", RPC + "gdpr_anonymize_session")]
    assert report.already_anonymized
    assert report.status is None


# -- export_user_data ---------------------------------------------------------------------


async def test_export_posts_the_subject_and_returns_the_document(
    face: Face, project: respx.MockRouter, vs: Any
) -> None:
    document = {
        "schema_version": 1,
        "subject_id": str(USER_A),
        "exported_at": NOW.isoformat(),
        "profile": {"id": str(USER_A), "display_name": "Riley"},
        "sessions": [{"id": str(SESSION), "segments": [{"seq": 1, "text": "hello"}]}],
    }
    export = project.post(RPC + "gdpr_export_user").respond(200, json=document)

    result = await face.call(vs.as_user(USER_A).gdpr.export_user_data, USER_A)

    assert result == document
    assert calls(project) == [("POST", RPC + "gdpr_export_user")]
    assert body(export.calls.last.request) == {"subject_id": str(USER_A)}
    assert sent_as(export.calls.last.request) == (SERVICE_KEY, str(USER_A))


# -- apply_retention_policy ---------------------------------------------------------------


def retention_batch(
    storage: list[Any], *, more: bool, count: int, dry_run: bool = False
) -> dict[str, Any]:
    """What gdpr_apply_retention answers for one batch (its documented shape)."""
    counts = {"sessions": count, "audio": count, "transcripts": 0, "segments": 0, "analyses": 0}
    request_id = None if dry_run or not count else str(REQUEST)
    companies = (
        [
            {
                "company_id": str(COMPANY),
                "counts": counts,
                "categories": ["sessions", "audio"],
                "more": more,
                "request_id": request_id,
                "status": None if request_id is None else "in_progress",
            }
        ]
        if count
        else []
    )
    return {
        "dry_run": dry_run,
        "batch_size": 2,
        "more": more,
        "counts": counts,
        "companies": companies,
        "request_ids": [] if request_id is None else [request_id],
        "pending_storage": storage,
    }


async def test_a_retention_dry_run_is_one_call_and_deletes_nothing(
    face: Face, project: respx.MockRouter, vs: Any
) -> None:
    retention = project.post(RPC + "gdpr_apply_retention").respond(
        200,
        json=retention_batch(pending(None, audio("old.webm")), more=True, count=2, dry_run=True),
    )

    report = await face.call(vs.gdpr.apply_retention_policy, dry_run=True)

    assert calls(project) == [("POST", RPC + "gdpr_apply_retention")]
    assert body(retention.calls.last.request) == {
        "company_id": None,
        "dry_run": True,
        "batch_size": 500,
    }
    assert (report.dry_run, report.batches, report.more, report.storage_removed) == (
        True,
        1,
        True,
        0,
    )
    assert [o.path for o in report.pending_storage] == [audio("old.webm")]


async def test_retention_runs_batches_until_nothing_is_left(
    face: Face, project: respx.MockRouter, vs: Any
) -> None:
    paths = [audio("old1.webm"), audio("old2.webm")]
    batches = iter(
        [
            httpx.Response(200, json=retention_batch(pending(REQUEST, *paths), more=True, count=2)),
            httpx.Response(200, json=retention_batch([], more=False, count=0)),
        ]
    )
    retention = project.post(RPC + "gdpr_apply_retention").mock(
        side_effect=lambda request: next(batches)
    )
    # Nothing left pending by earlier (scheduled) runs.
    project.post(RPC + "gdpr_pending_storage").respond(200, json=[])
    delete = project.delete(storage_path(AUDIO)).mock(side_effect=removed)
    confirm = project.post(RPC + "gdpr_confirm_storage_removed").mock(
        side_effect=confirmed("retention")
    )

    report = await face.call(
        vs.as_user(USER_A).gdpr.apply_retention_policy, str(COMPANY), batch_size=2
    )

    assert calls(project) == [
        ("POST", RPC + "gdpr_apply_retention"),
        ("POST", RPC + "gdpr_check_storage_removal"),
        ("DELETE", storage_path(AUDIO)),
        ("POST", RPC + "gdpr_confirm_storage_removed"),
        ("POST", RPC + "gdpr_apply_retention"),
        ("POST", RPC + "gdpr_pending_storage"),
    ]
    expected = {"company_id": str(COMPANY), "dry_run": False, "batch_size": 2}
    assert [body(c.request) for c in retention.calls] == [expected, expected]
    assert body(delete.calls.last.request) == {"prefixes": paths}
    assert body(confirm.calls.last.request) == {"request_id": str(REQUEST), "paths": paths}
    assert all(sent_as(c.request) == (SERVICE_KEY, str(USER_A)) for c in project.calls)
    assert (report.batches, report.more, report.storage_removed) == (2, False, 2)
    assert report.counts["sessions"] == 2
    assert report.request_ids == [REQUEST]
    (company,) = report.companies
    assert (company.company_id, company.status, company.request_ids) == (
        COMPANY,
        "completed",
        [REQUEST],
    )


async def test_retention_finishes_the_audio_earlier_runs_of_its_scope_left_pending(
    face: Face, project: respx.MockRouter, vs: Any
) -> None:
    """What a scheduled run (private.retention_tick) recorded as pending is deleted by the
    next apply_retention_policy: retention requests of the company only, never an erasure's
    or another company's."""
    elsewhere = uuid.UUID("c0c0c0c0-0000-4000-8000-0000000000cb")
    project.post(RPC + "gdpr_apply_retention").respond(
        200, json=retention_batch([], more=False, count=0)
    )
    rows = [
        {**pending_row(REQUEST, AUDIO, audio("scheduled.webm")), "kind": "retention"},
        pending_row(REQUEST_2, AUDIO, audio("erased.webm")),
        {
            **pending_row(REQUEST_2, AUDIO, audio("elsewhere.webm")),
            "kind": "retention",
            "company_id": str(elsewhere),
        },
    ]
    listed = project.post(RPC + "gdpr_pending_storage").respond(200, json=rows)
    delete = project.delete(storage_path(AUDIO)).mock(side_effect=removed)
    confirm = project.post(RPC + "gdpr_confirm_storage_removed").mock(
        side_effect=confirmed("retention")
    )

    report = await face.call(vs.gdpr.apply_retention_policy, str(COMPANY))

    assert calls(project) == [
        ("POST", RPC + "gdpr_apply_retention"),
        ("POST", RPC + "gdpr_pending_storage"),
        ("POST", RPC + "gdpr_check_storage_removal"),
        ("DELETE", storage_path(AUDIO)),
        ("POST", RPC + "gdpr_confirm_storage_removed"),
    ]
    assert body(listed.calls.last.request) == {"subject_id": None}
    assert body(delete.calls.last.request) == {"prefixes": [audio("scheduled.webm")]}
    assert body(confirm.calls.last.request) == {
        "request_id": str(REQUEST),
        "paths": [audio("scheduled.webm")],
    }
    assert (report.storage_removed, report.pending_storage) == (1, [])


# -- list_requests and resume_pending_storage ---------------------------------------------


def request_row(request_id: uuid.UUID, status: str) -> dict[str, Any]:
    """A row of gdpr_requests as PostgREST serialises it."""
    return {
        "id": str(request_id),
        "kind": "erasure",
        "subject_ref": "3f1c0d9e",
        "company_id": str(COMPANY),
        "status": status,
        "requested_by": str(USER_A),
        "requested_at": NOW.isoformat(),
        "due_at": (NOW + datetime.timedelta(days=30)).isoformat(),
        "started_at": NOW.isoformat(),
        "completed_at": None,
        "details": {"pending_storage": []},
        "error": None,
        "updated_at": NOW.isoformat(),
    }


@pytest.mark.parametrize(
    ("options", "sent"),
    [
        pytest.param({}, {"status": None, "overdue": False}, id="all"),
        pytest.param(
            {"status": "in_progress", "overdue": True},
            {"status": "in_progress", "overdue": True},
            id="overdue-in-progress",
        ),
    ],
)
async def test_list_requests_posts_the_filters_and_parses_the_rows(
    face: Face, project: respx.MockRouter, vs: Any, options: dict[str, Any], sent: Any
) -> None:
    rows = [request_row(REQUEST, "in_progress"), request_row(REQUEST_2, "in_progress")]
    listed = project.post(RPC + "gdpr_list_requests").respond(200, json=rows)

    requests = await face.call(vs.gdpr.list_requests, **options)

    assert body(listed.calls.last.request) == sent
    assert [type(r) for r in requests] == [GDPRRequest, GDPRRequest]
    assert [(r.id, r.kind, r.status, r.company_id) for r in requests] == [
        (REQUEST, "erasure", "in_progress", COMPANY),
        (REQUEST_2, "erasure", "in_progress", COMPANY),
    ]
    assert requests[0].due_at == NOW + datetime.timedelta(days=30)


def pending_row(request_id: uuid.UUID, bucket: str, path: str) -> dict[str, Any]:
    """A row of gdpr_pending_storage."""
    return {
        "request_id": str(request_id),
        "kind": "erasure",
        "status": "in_progress",
        "company_id": str(COMPANY),
        "requested_at": NOW.isoformat(),
        "due_at": (NOW + datetime.timedelta(days=30)).isoformat(),
        "bucket": bucket,
        "path": path,
    }


async def test_resume_deletes_per_bucket_and_confirms_per_request(
    face: Face, project: respx.MockRouter, vs: Any
) -> None:
    rows = [
        pending_row(REQUEST, AUDIO, audio("a.webm")),
        pending_row(REQUEST, OTHER_BUCKET, audio("a.zip")),
        pending_row(REQUEST_2, AUDIO, audio("b.webm")),
    ]
    listed = project.post(RPC + "gdpr_pending_storage").respond(200, json=rows)
    delete_audio = project.delete(storage_path(AUDIO)).mock(side_effect=removed)
    delete_other = project.delete(storage_path(OTHER_BUCKET)).mock(side_effect=removed)
    confirm = project.post(RPC + "gdpr_confirm_storage_removed").mock(
        side_effect=confirmed("erasure")
    )

    assert await face.call(vs.gdpr.resume_pending_storage, USER_A) == 3

    assert body(listed.calls.last.request) == {"subject_id": str(USER_A)}
    assert body(delete_audio.calls.last.request) == {"prefixes": [audio("a.webm"), audio("b.webm")]}
    assert body(delete_other.calls.last.request) == {"prefixes": [audio("a.zip")]}
    assert [body(c.request) for c in confirm.calls] == [
        {"request_id": str(REQUEST), "paths": [audio("a.webm"), audio("a.zip")]},
        {"request_id": str(REQUEST_2), "paths": [audio("b.webm")]},
    ]
    assert calls(project)[0] == ("POST", RPC + "gdpr_pending_storage")
    assert calls(project)[-2:] == [("POST", RPC + "gdpr_confirm_storage_removed")] * 2


async def test_resume_without_a_subject_lists_every_open_request(
    face: Face, project: respx.MockRouter, vs: Any
) -> None:
    listed = project.post(RPC + "gdpr_pending_storage").respond(200, json=[])

    assert await face.call(vs.gdpr.resume_pending_storage) == 0

    assert calls(project) == [("POST", RPC + "gdpr_pending_storage")]
    assert body(listed.calls.last.request) == {"subject_id": None}


# -- errors -------------------------------------------------------------------------------

NOT_ALLOWED = pgrst(
    "42501",
    "not allowed: only the data subject, an admin of their company or the service role may do this",
)
NO_SUBJECT = pgrst(
    "P0002",
    f"no data subject {USER_A}",
    "Nothing in this database is about that id: no profile, no auth user, no GDPR request.",
)
STILL_ACTIVE = pgrst(
    "23514",
    f"session {SESSION} is still active",
    "Complete the session first: segments may still arrive while it is active.",
)
NO_FUNCTION = pgrst(
    "PGRST202",
    "Could not find the function public.gdpr_erase_user(dry_run, include_account, subject_id)"
    " in the schema cache",
)

#: (the SDK call, the function it calls, PostgREST's status and body, the exception).
ERRORS = [
    pytest.param(
        ("delete_user_session_data", USER_A),
        "gdpr_erase_user",
        403,
        NOT_ALLOWED,
        errors.PermissionDeniedError,
        id="erase-403-42501",
    ),
    pytest.param(
        ("delete_user_session_data", USER_A),
        "gdpr_erase_user",
        500,  # PostgREST answers P0002 (no_data_found) with 500: the code decides
        NO_SUBJECT,
        errors.NotFoundError,
        id="erase-500-P0002",
    ),
    pytest.param(
        ("delete_user_session_data", USER_A),
        "gdpr_erase_user",
        404,
        NO_FUNCTION,
        errors.NotFoundError,
        id="erase-404-PGRST202",
    ),
    pytest.param(
        ("anonymize_session_data", SESSION),
        "gdpr_anonymize_session",
        400,
        STILL_ACTIVE,
        errors.InvalidInputError,
        id="anonymize-400-23514",
    ),
    pytest.param(
        ("export_user_data", USER_A),
        "gdpr_export_user",
        403,
        NOT_ALLOWED,
        errors.PermissionDeniedError,
        id="export-403-42501",
    ),
    pytest.param(
        ("apply_retention_policy", COMPANY),
        "gdpr_apply_retention",
        500,
        pgrst("P0002", f"no company {COMPANY}"),
        errors.NotFoundError,
        id="retention-500-P0002",
    ),
    pytest.param(
        ("list_requests",),
        "gdpr_list_requests",
        403,
        pgrst("42501", "not allowed: only admins and the service role may list GDPR requests"),
        errors.PermissionDeniedError,
        id="list-403-42501",
    ),
    pytest.param(
        ("resume_pending_storage",),
        "gdpr_pending_storage",
        403,
        pgrst(
            "42501",
            "not allowed: only admins and the service role may list every pending object",
            "Pass subject_id to list the objects pending for yourself.",
        ),
        errors.PermissionDeniedError,
        id="resume-403-42501",
    ),
]


@pytest.mark.parametrize(("call", "function", "status", "error", "expected"), ERRORS)
async def test_postgrest_errors_become_typed_errors_and_nothing_follows(
    face: Face,
    project: respx.MockRouter,
    vs: Any,
    call: tuple[Any, ...],
    function: str,
    status: int,
    error: dict[str, Any],
    expected: type[errors.APIError],
) -> None:
    route = project.post(RPC + function).respond(status, json=error)
    method, *args = call

    with pytest.raises(errors.APIError) as caught:
        await face.call(getattr(vs.as_user(USER_A).gdpr, method), *args)

    exc = caught.value
    assert type(exc) is expected
    assert (exc.code, exc.message, exc.hint, exc.http_status) == (
        error["code"],
        error["message"],
        error["hint"],
        status,
    )
    assert route.call_count == 1  # not transient: never retried
    assert calls(project) == [("POST", RPC + function)]  # no Storage call, no confirmation


async def test_a_storage_failure_leaves_the_request_unconfirmed(
    face: Face, project: respx.MockRouter, vs: Any
) -> None:
    project.post(RPC + "gdpr_erase_user").respond(
        200, json=erasure_report(pending(REQUEST, audio("s1.webm")))
    )
    project.delete(storage_path(AUDIO)).respond(
        403, json={"statusCode": "403", "error": "Unauthorized", "message": "new row violates"}
    )
    confirm = project.post(RPC + "gdpr_confirm_storage_removed").mock(
        side_effect=confirmed("erasure")
    )

    with pytest.raises(errors.PermissionDeniedError) as caught:
        await face.call(vs.gdpr.delete_user_session_data, USER_A)

    assert caught.value.http_status == 403
    assert confirm.call_count == 0  # the request stays open; resuming finishes it
    assert calls(project) == [
        ("POST", RPC + "gdpr_erase_user"),
        ("POST", RPC + "gdpr_check_storage_removal"),
        ("DELETE", storage_path(AUDIO)),
    ]


async def test_a_refused_check_touches_no_storage_object(
    face: Face, project: respx.MockRouter, vs: Any
) -> None:
    """The database refuses the caller for a request (another company's): nothing is
    deleted, nothing confirmed, and the caller gets PermissionDeniedError."""
    project.post(RPC + "gdpr_pending_storage").respond(
        200, json=[pending_row(REQUEST, AUDIO, audio("theirs.webm"))]
    )
    project.post(RPC + "gdpr_check_storage_removal").respond(
        403,
        json=pgrst(
            "42501",
            "not allowed: only the request's subject, an admin of its company or the service"
            " role may do this",
        ),
    )
    delete = project.delete(storage_path(AUDIO)).mock(side_effect=removed)

    with pytest.raises(errors.PermissionDeniedError):
        await face.call(vs.as_user(USER_A).gdpr.resume_pending_storage, USER_A)

    assert delete.call_count == 0
    assert calls(project) == [
        ("POST", RPC + "gdpr_pending_storage"),
        ("POST", RPC + "gdpr_check_storage_removal"),
    ]


async def test_a_refused_confirmation_is_permission_denied(
    face: Face, project: respx.MockRouter, vs: Any
) -> None:
    project.post(RPC + "gdpr_erase_user").respond(
        200, json=erasure_report(pending(REQUEST, audio("s1.webm")))
    )
    delete = project.delete(storage_path(AUDIO)).mock(side_effect=removed)
    project.post(RPC + "gdpr_confirm_storage_removed").respond(
        403,
        json=pgrst(
            "42501",
            "not allowed: only the request's subject, an admin of its company or the service"
            " role may do this",
        ),
    )

    with pytest.raises(errors.PermissionDeniedError) as caught:
        await face.call(vs.as_user(USER_A).gdpr.delete_user_session_data, USER_A)

    assert caught.value.code == "42501"
    assert delete.call_count == 1


UNAVAILABLE = httpx.Response(503, json=pgrst("PGRST001", "Database client error"))


async def test_an_erasure_is_retried_after_a_transient_failure(
    face: Face, project: respx.MockRouter, vs: Any
) -> None:
    answers = iter([UNAVAILABLE, httpx.Response(200, json=erasure_report([]))])
    erase = project.post(RPC + "gdpr_erase_user").mock(side_effect=lambda request: next(answers))

    report = await face.call(vs.gdpr.delete_user_session_data, USER_A)

    assert erase.call_count == 2  # idempotent: a repeat finds nothing left to change
    assert body(erase.calls[0].request) == body(erase.calls[1].request)
    assert report.request_id == REQUEST


async def test_an_export_is_not_retried(face: Face, project: respx.MockRouter, vs: Any) -> None:
    export = project.post(RPC + "gdpr_export_user").mock(return_value=UNAVAILABLE)

    with pytest.raises(errors.TransientError):
        await face.call(vs.gdpr.export_user_data, USER_A)

    assert export.call_count == 1  # each export writes a request and an audit entry


# -- what the SDK reads back exists --------------------------------------------------------


async def test_the_rows_the_sdk_parses_are_what_the_functions_return(catalog: Catalog) -> None:
    """GDPRRequest is read from gdpr_list_requests, pending objects from
    gdpr_pending_storage: every field the SDK reads is a column of those results."""
    (listing,) = catalog.functions["gdpr_list_requests"]
    assert sorted(set(GDPRRequest.model_fields) - set(listing.result)) == []
    (storage,) = catalog.functions["gdpr_pending_storage"]
    assert {"request_id", "bucket", "path"} <= set(storage.result)


# -- invitations (vs.tenants), the same way: bodies checked and replayed on the SQL ----------


async def test_invitations_call_their_functions_with_named_arguments(
    face: Face, project: respx.MockRouter, vs: Any
) -> None:
    now = datetime.datetime.now(datetime.UTC)
    row = {
        "id": str(REQUEST),
        "company_id": str(COMPANY),
        "role": "manager",
        "email": "new.hire@example.test",
        "invitee_id": None,
        "invited_by": None,
        "created_at": now.isoformat(),
        "expires_at": (now + datetime.timedelta(days=2)).isoformat(),
        "accepted_at": None,
        "accepted_by": None,
        "revoked_at": None,
    }
    create = project.post(RPC + "create_invitation").respond(
        200, json={**row, "token": "vsi_" + "a" * 64}
    )
    revoke = project.post(RPC + "revoke_invitation").respond(200, json=True)

    made = await face.call(
        vs.tenants.invite,
        COMPANY,
        "New.Hire@Example.test",
        role="manager",
        expires_in=datetime.timedelta(days=2),
    )
    by_user = await face.call(vs.tenants.invite, COMPANY, USER_A)
    revoked = await face.call(vs.tenants.revoke_invitation, made.id)

    assert made.token == "vsi_" + "a" * 64
    assert by_user.id == REQUEST
    assert revoked is True
    assert [body(c.request) for c in create.calls] == [
        {
            "company_id": str(COMPANY),
            "role": "manager",
            "expires_in_seconds": 172800,
            "email": "new.hire@example.test",
            "invitee_id": None,
        },
        {
            "company_id": str(COMPANY),
            "role": "trainee",
            "expires_in_seconds": 604800,
            "email": None,
            "invitee_id": str(USER_A),
        },
    ]
    assert body(revoke.calls.last.request) == {"invitation_id": str(REQUEST)}
    assert calls(project) == [
        ("POST", RPC + "create_invitation"),
        ("POST", RPC + "create_invitation"),
        ("POST", RPC + "revoke_invitation"),
    ]
