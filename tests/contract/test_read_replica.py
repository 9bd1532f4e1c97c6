"""The HTTP contract of read replicas over the Supabase backend, on both faces.

With ``read_url`` (the API URL of a Supabase read replica) the calls the SDK marks
lag-tolerant (dashboards, ``sessions.list``, search) go to that URL with the identity's
``apikey`` / ``Authorization``; everything else goes to the project URL. A replica that
cannot be reached (network error, 502/503/504) sends the call to the project URL, logs a
warning and is tried again ``replica_retry_after`` seconds later; other errors are raised.
"""

from __future__ import annotations

import inspect
import json
import logging
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import httpx
import jwt
import pytest
import respx

from tests.contract.conftest import (
    BASE,
    COMPANY,
    NOW,
    SECRET,
    SERVICE_KEY,
    SESSION,
    USER_A,
    Face,
    session_row,
)
from voicesessions import AsyncVoiceSessions, RetryPolicy, VoiceSessions, errors
from voicesessions._query import Filter

pytestmark = pytest.mark.asyncio(loop_scope="session")

READ = "http://replica.supabase.test"


async def call(value: Any) -> Any:
    return await value if inspect.isawaitable(value) else value


@pytest.fixture
def hosts() -> Iterator[respx.MockRouter]:
    """The project and its replica; a request without a route fails the test."""
    with respx.mock(assert_all_called=False) as router:
        yield router


METRICS = {
    "sessions": 3,
    "active_users": 2,
    "scored_sessions": 2,
    "average_score": 71.5,
    "total_minutes": 30.25,
    "minute_cost": 12,
    "api_cost_usd": 0.05,
    "average_talk_ratio": 0.45,
    "skill_averages": {},
}
PROGRESS = {"sessions": 4, "scored_sessions": 3, "skills": {}}
HIT = {
    "session_id": str(SESSION),
    "title": "call",
    "started_at": NOW,
    "language": "en",
    "rank": 0.5,
    "snippet": "**pricing**",
}


# -- the backend: which request goes where ---------------------------------------------------


async def test_marked_reads_go_to_the_read_url_everything_else_to_the_project(
    face: Face, hosts: respx.MockRouter
) -> None:
    replica_select = hosts.get(f"{READ}/rest/v1/sessions").respond(200, json=[session_row()])
    primary_select = hosts.get(f"{BASE}/rest/v1/sessions").respond(200, json=[session_row()])
    replica_rpc = hosts.post(f"{READ}/rest/v1/rpc/list_sessions").respond(200, json=[session_row()])
    primary_rpc = hosts.post(f"{BASE}/rest/v1/rpc/list_sessions").respond(200, json=[session_row()])
    insert = hosts.post(f"{BASE}/rest/v1/sessions").respond(201, json=[session_row()])
    update = hosts.patch(f"{BASE}/rest/v1/sessions").respond(200, json=[session_row()])
    backend = face.build(read_url=f"{READ}/", jwt_secret=SECRET)
    try:
        await face.call(backend.select, "sessions", replica_ok=True)
        await face.call(backend.rpc, "list_sessions", {"max_rows": 2}, replica_ok=True)
        await face.call(backend.rpc_rows, "list_sessions", {"max_rows": 2}, dict, replica_ok=True)
        assert (replica_select.call_count, replica_rpc.call_count) == (1, 2)
        assert (primary_select.call_count, primary_rpc.call_count) == (0, 0)

        await face.call(backend.select, "sessions")
        await face.call(backend.rpc, "list_sessions", {"max_rows": 2})
        await face.call(backend.insert, "sessions", [{"title": "x"}])
        await face.call(backend.update, "sessions", {"title": "y"}, filters=[Filter("id", "eq", 1)])
        assert (primary_select.call_count, primary_rpc.call_count) == (1, 1)
        assert (insert.call_count, update.call_count) == (1, 1)
        assert (replica_select.call_count, replica_rpc.call_count) == (1, 2)

        for sent in (replica_select.calls.last.request, replica_rpc.calls.last.request):
            assert sent.headers["apikey"] == SERVICE_KEY
            assert sent.headers["Authorization"] == f"Bearer {SERVICE_KEY}"
        assert json.loads(replica_rpc.calls.last.request.content) == {"max_rows": 2}

        # A user's backend reads the replica with the user's JWT.
        await face.call(backend.as_user(USER_A).select, "sessions", replica_ok=True)
        sent = replica_select.calls.last.request
        token = sent.headers["Authorization"].removeprefix("Bearer ")
        claims = jwt.decode(token, SECRET, algorithms=["HS256"], audience="authenticated")
        assert claims["sub"] == str(USER_A)
        assert replica_select.call_count == 2
    finally:
        await face.close(backend)


async def test_without_a_read_url_marked_reads_go_to_the_project(
    face: Face, hosts: respx.MockRouter
) -> None:
    primary = hosts.get(f"{BASE}/rest/v1/sessions").respond(200, json=[])
    backend = face.build()
    try:
        assert await face.call(backend.select, "sessions", replica_ok=True) == []
        assert primary.call_count == 1
    finally:
        await face.close(backend)


@pytest.mark.parametrize("read_url", ["replica.supabase.test", "ftp://replica", ""])
async def test_a_read_url_must_be_http(face: Face, read_url: str) -> None:
    with pytest.raises(errors.ConfigurationError, match="read replica URL"):
        face.build(read_url=read_url)


# -- the SDK: which calls tolerate lag --------------------------------------------------------


@pytest.fixture(params=["async", "sync"])
async def vs(request: pytest.FixtureRequest) -> AsyncIterator[Any]:
    cls: Any = AsyncVoiceSessions if request.param == "async" else VoiceSessions
    client = cls.from_supabase(BASE, SERVICE_KEY, read_url=READ, retry=RetryPolicy.none())
    try:
        yield client
    finally:
        await call(client.aclose() if request.param == "async" else client.close())


#: (SDK call, HTTP method, path, answer, whether it tolerates lag).
CALLS: list[tuple[str, Callable[[Any], Any], str, str, Any, bool]] = [
    ("company_metrics", lambda vs: vs.analytics.company_metrics(COMPANY), "POST",
     "/rest/v1/rpc/company_metrics", [METRICS], True),
    ("user_progress", lambda vs: vs.analytics.user_progress(USER_A), "POST",
     "/rest/v1/rpc/user_progress", [PROGRESS], True),
    ("team_overview", lambda vs: vs.analytics.team_overview(COMPANY), "POST",
     "/rest/v1/rpc/team_overview", [{**PROGRESS, "profile_id": str(USER_A),
                                     "display_name": "A"}], True),
    ("metrics_timeseries", lambda vs: vs.analytics.metrics_timeseries(company_id=COMPANY),
     "POST", "/rest/v1/rpc/metrics_timeseries", [], True),
    ("sessions.list", lambda vs: vs.sessions.list(), "POST", "/rest/v1/rpc/list_sessions",
     [session_row()], True),
    ("search", lambda vs: vs.sessions.search_transcripts("pricing"), "POST",
     "/rest/v1/rpc/search_transcripts", [HIT], True),
    ("sessions.get", lambda vs: vs.sessions.get(SESSION), "GET", "/rest/v1/sessions",
     [session_row()], False),
    ("gdpr export", lambda vs: vs.gdpr.export_user_data(USER_A), "POST",
     "/rest/v1/rpc/gdpr_export_user", {"schema_version": 1}, False),
]  # fmt: skip


@pytest.mark.parametrize(
    ("name", "sdk_call", "method", "path", "answer", "lagging"),
    CALLS,
    ids=[c[0] for c in CALLS],
)
async def test_each_sdk_call_goes_where_its_lag_tolerance_says(
    vs: Any,
    hosts: respx.MockRouter,
    name: str,
    sdk_call: Callable[[Any], Any],
    method: str,
    path: str,
    answer: Any,
    lagging: bool,
) -> None:
    replica = hosts.route(method=method, url=f"{READ}{path}").respond(200, json=answer)
    primary = hosts.route(method=method, url=f"{BASE}{path}").respond(200, json=answer)
    await call(sdk_call(vs))
    assert (replica.call_count, primary.call_count) == ((1, 0) if lagging else (0, 1)), name


# -- an unreachable replica --------------------------------------------------------------------


def _down(kind: str) -> Any:
    """A replica route's answer when it is unreachable in the way ``kind`` says."""
    if kind == "refused":
        return httpx.ConnectError("connection refused")
    if kind == "connect timeout":
        return httpx.ConnectTimeout("timed out")
    return httpx.Response(int(kind), json={"message": "upstream unavailable"})


@pytest.mark.parametrize("kind", ["refused", "connect timeout", "502", "503", "504"])
async def test_an_unreachable_replica_sends_reads_to_the_project_then_is_tried_again(
    face: Face, hosts: respx.MockRouter, caplog: pytest.LogCaptureFixture, kind: str
) -> None:
    caplog.set_level(logging.INFO, logger="voicesessions")
    replica = hosts.get(f"{READ}/rest/v1/sessions")
    down = _down(kind)
    if isinstance(down, Exception):
        replica.side_effect = down
    else:
        replica.return_value = down
    primary = hosts.get(f"{BASE}/rest/v1/sessions").respond(200, json=[session_row()])
    patient = face.build(read_url=READ)  # the default: tried again 10 s later
    eager = face.build(read_url=READ, replica_retry_after=0)
    try:
        for backend in (patient, eager):
            rows = await face.call(backend.select, "sessions", replica_ok=True)
            assert rows == [session_row()]
        assert (replica.call_count, primary.call_count) == (2, 2)
        warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
        assert len(warnings) == 2
        assert all("unreachable" in w and READ in w for w in warnings)

        # The replica is back: the patient backend does not know yet, the eager one does.
        replica.side_effect = None
        replica.return_value = httpx.Response(200, json=[])
        assert await face.call(patient.select, "sessions", replica_ok=True) == [session_row()]
        assert await face.call(eager.select, "sessions", replica_ok=True) == []
        assert (replica.call_count, primary.call_count) == (3, 3)
        assert any("reachable again" in r.getMessage() for r in caplog.records)
    finally:
        await face.close(patient)
        await face.close(eager)


@pytest.mark.parametrize(
    ("answer", "error"),
    [
        (httpx.ReadTimeout("slow query"), errors.TransientError),  # slow, not unreachable
        (
            httpx.Response(404, json={"code": "PGRST202", "message": "no such function"}),
            errors.NotFoundError,
        ),
        (
            httpx.Response(500, json={"code": "40001", "message": "conflict with recovery"}),
            errors.TransientError,
        ),
    ],
)
async def test_other_replica_errors_are_raised_not_sent_to_the_project(
    face: Face, hosts: respx.MockRouter, answer: Any, error: type[Exception]
) -> None:
    replica = hosts.post(f"{READ}/rest/v1/rpc/company_metrics")
    if isinstance(answer, Exception):
        replica.side_effect = answer
    else:
        replica.return_value = answer
    primary = hosts.post(f"{BASE}/rest/v1/rpc/company_metrics").respond(200, json=[METRICS])
    backend = face.build(read_url=READ)
    try:
        with pytest.raises(error):
            await face.call(backend.rpc, "company_metrics", {"company_id": 1}, replica_ok=True)
        assert (replica.call_count, primary.call_count) == (1, 0)
    finally:
        await face.close(backend)


@pytest.mark.parametrize("retry_after", [-1, float("nan"), True, "10"])
async def test_the_retry_interval_must_be_seconds(face: Face, retry_after: Any) -> None:
    with pytest.raises(errors.ConfigurationError, match="replica_retry_after"):
        face.build(read_url=READ, replica_retry_after=retry_after)
