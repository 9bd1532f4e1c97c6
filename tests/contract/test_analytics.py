"""The HTTP contract of analytics over the Supabase backend, on both faces of the client.

respx stands in for the Supabase project. Pinned for ``record_analysis``, ``get_analytics``,
the metrics recorded by ``complete`` and every ``vs.analytics`` method: the PostgREST path,
the method, the ``apikey`` / ``Authorization`` headers (service key, or the user's JWT) and
the exact JSON body; and how the database's answers (VS003, VS004, P0002, 42501, 22023)
become exceptions.
"""

from __future__ import annotations

import datetime
import inspect
import json
import uuid
from collections.abc import AsyncIterator
from decimal import Decimal
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
    session_row,
)
from voicesessions import (
    AnalysisInput,
    AsyncVoiceSessions,
    CompanyMetrics,
    ConflictError,
    InvalidInputError,
    PermissionDeniedError,
    RetryPolicy,
    SessionNotFound,
    VoiceSessions,
)

pytestmark = pytest.mark.asyncio(loop_scope="session")

SINCE = datetime.datetime(2026, 1, 1, tzinfo=datetime.UTC)
UNTIL = datetime.datetime(2026, 2, 1, tzinfo=datetime.UTC)


async def call(value: Any) -> Any:
    return await value if inspect.isawaitable(value) else value


@pytest.fixture(params=["async", "sync"])
async def vs(request: pytest.FixtureRequest) -> AsyncIterator[Any]:
    cls: Any = AsyncVoiceSessions if request.param == "async" else VoiceSessions
    client = cls.from_supabase(BASE, SERVICE_KEY, jwt_secret=SECRET, retry=RetryPolicy.none())
    try:
        yield client
    finally:
        await call(client.aclose() if request.param == "async" else client.close())


def body(request: httpx.Request) -> Any:
    return json.loads(request.content)


def assert_service(request: httpx.Request) -> None:
    assert request.headers["apikey"] == SERVICE_KEY
    assert request.headers["Authorization"] == f"Bearer {SERVICE_KEY}"


def analysis_row(**values: Any) -> dict[str, Any]:
    return {
        "id": str(uuid.uuid4()),
        "session_id": str(SESSION),
        "profile_id": str(USER_A),
        "company_id": str(COMPANY),
        "provider": "openai",
        "analysis_type": "sales_scoring",
        "version": "1",
        "results": {},
        "confidence": None,
        "processing_time_ms": None,
        "api_cost_usd": None,
        "created_at": NOW,
        **values,
    }


# -- record_analysis ---------------------------------------------------------------------------


async def test_record_analysis_posts_every_field(api: respx.MockRouter, vs: Any) -> None:
    results = {"overall_score": 82, "skill_scores": {"opening": 75}, "summary": "good"}
    route = api.post("/rest/v1/rpc/record_analysis").respond(
        200, json=analysis_row(results=results, version="3", api_cost_usd=0.0125)
    )
    stored = await call(
        vs.sessions.record_analysis(
            SESSION,
            provider="openai",
            analysis_type="sales_scoring",
            results=results,
            version="3",
            confidence=0.9,
            processing_time_ms=1500,
            api_cost_usd=Decimal("0.0125"),
        )
    )
    assert stored.results == results
    assert stored.api_cost_usd == Decimal("0.0125")
    request = route.calls.last.request
    assert request.method == "POST"
    assert request.url.path == "/rest/v1/rpc/record_analysis"
    assert str(request.url.query, "ascii") == ""
    assert "Prefer" not in request.headers
    assert_service(request)
    assert body(request) == {
        "session_id": str(SESSION),
        "provider": "openai",
        "analysis_type": "sales_scoring",
        "results": results,
        "version": "3",
        "confidence": "0.9",
        "processing_time_ms": 1500,
        "api_cost_usd": "0.0125",
    }


async def test_record_analysis_takes_a_model_and_sends_nulls_for_what_is_not_given(
    api: respx.MockRouter, vs: Any
) -> None:
    route = api.post("/rest/v1/rpc/record_analysis").respond(200, json=analysis_row())
    analysis = AnalysisInput(provider="openai", analysis_type="sales_scoring", results={})
    await call(vs.as_user(USER_A).sessions.record_analysis(str(SESSION), analysis))
    request = route.calls.last.request
    assert body(request) == {
        "session_id": str(SESSION),
        "provider": "openai",
        "analysis_type": "sales_scoring",
        "results": {},
        "version": "1",
        "confidence": None,
        "processing_time_ms": None,
        "api_cost_usd": None,
    }
    claims = jwt.decode(
        request.headers["Authorization"].removeprefix("Bearer "),
        SECRET,
        algorithms=["HS256"],
        audience="authenticated",
    )
    assert (claims["sub"], claims["role"]) == (str(USER_A), "authenticated")


@pytest.mark.parametrize(
    ("status", "code", "exception"),
    [
        (400, "VS003", ConflictError),
        (400, "VS004", ConflictError),
        (400, "22023", InvalidInputError),
        (403, "42501", PermissionDeniedError),
        (400, "P0002", SessionNotFound),
    ],
)
async def test_record_analysis_errors(
    api: respx.MockRouter, vs: Any, status: int, code: str, exception: type[Exception]
) -> None:
    api.post("/rest/v1/rpc/record_analysis").respond(
        status, json={"code": code, "message": "refused", "details": None, "hint": None}
    )
    # A refusal (42501) is checked against the session's visibility: this caller sees it.
    api.get("/rest/v1/sessions").respond(200, json=[{"id": str(SESSION)}])
    with pytest.raises(exception) as excinfo:
        await call(
            vs.sessions.record_analysis(SESSION, provider="p", analysis_type="t", results={})
        )
    assert excinfo.value.code == code  # type: ignore[attr-defined]


async def test_a_refusal_about_an_invisible_session_is_not_found(
    api: respx.MockRouter, vs: Any
) -> None:
    api.post("/rest/v1/rpc/record_analysis").respond(
        403, json={"code": "42501", "message": "refused", "details": None, "hint": None}
    )
    visible = api.get("/rest/v1/sessions").respond(200, json=[])
    with pytest.raises(SessionNotFound) as excinfo:
        await call(
            vs.sessions.record_analysis(SESSION, provider="p", analysis_type="t", results={})
        )
    assert str(excinfo.value) == f"[P0002] session {SESSION} not found"
    assert visible.call_count == 1


async def test_a_bad_analysis_is_refused_before_any_request(api: respx.MockRouter, vs: Any) -> None:
    route = api.post("/rest/v1/rpc/record_analysis").respond(200, json=analysis_row())
    for fields in (
        {"provider": "", "analysis_type": "t", "results": {}},
        {"provider": "p", "analysis_type": "Bad Type", "results": {}},
        {"provider": "p", "analysis_type": "t", "results": {}, "confidence": 2},
        {"provider": "p", "analysis_type": "t", "results": {}, "typo": 1},
    ):
        with pytest.raises(InvalidInputError):
            await call(vs.sessions.record_analysis(SESSION, **fields))
    assert route.call_count == 0


async def test_get_analytics_reads_one_row(api: respx.MockRouter, vs: Any) -> None:
    row = {
        "session_id": str(SESSION),
        "profile_id": str(USER_A),
        "company_id": str(COMPANY),
        "overall_score": 77,
        "skill_scores": {"opening": 70},
        "api_cost_usd": 0.5,
        "session_date": "2026-01-02",
        "session_hour": 3,
        "created_at": NOW,
        "updated_at": NOW,
    }
    route = api.get("/rest/v1/session_analytics").respond(200, json=[row])
    result = await call(vs.sessions.get_analytics(SESSION))
    assert (result.overall_score, result.api_cost_usd) == (77, Decimal("0.5"))
    request = route.calls.last.request
    assert sorted(request.url.params.multi_items()) == [
        ("limit", "1"),
        ("select", "*"),
        ("session_id", f"eq.{SESSION}"),
    ]
    assert_service(request)


# -- completion: one write, the database measures the call ---------------------------------


async def test_complete_is_one_write_and_sends_no_figures(api: respx.MockRouter, vs: Any) -> None:
    # The database measures the call when the status changes (in that transaction): the SDK
    # neither reads the segments nor records any analysis, so nothing is left half-done.
    patch = api.patch("/rest/v1/sessions").respond(
        200, json=[session_row(metadata={"language": "de"})]
    )
    read = api.get("/rest/v1/transcript_segments").respond(200, json=[])
    rpc = api.post("/rest/v1/rpc/record_analysis").respond(200, json=analysis_row())
    session = await call(vs.sessions.complete(SESSION))
    assert session.status.value == "completed"
    assert body(patch.calls.last.request) == {"status": "completed"}
    await call(vs.sessions.update_status(SESSION, "completed"))
    assert body(patch.calls.last.request) == {"status": "completed"}
    assert (patch.call_count, read.call_count, rpc.call_count) == (2, 0, 0)


# -- dashboards -----------------------------------------------------------------------------


def metrics_row() -> dict[str, Any]:
    return {
        "sessions": 3,
        "active_users": 2,
        "scored_sessions": 2,
        "average_score": 71.5,
        "total_minutes": 30.25,
        "minute_cost": 12,
        "api_cost_usd": 0.05,
        "average_talk_ratio": 0.45,
        "skill_averages": {"opening": 70.5},
    }


def progress_row(**extra: Any) -> dict[str, Any]:
    return {
        "sessions": 4,
        "scored_sessions": 3,
        "first_score": 60,
        "latest_score": 80,
        "average_score": 70,
        "best_score": 80,
        "trend_per_week": 2.5,
        "average_talk_ratio": 0.5,
        "first_session_at": NOW,
        "last_session_at": NOW,
        "skills": {"opening": {"first": 50, "latest": 70, "average": 60, "sessions": 2}},
        **extra,
    }


@pytest.mark.parametrize(
    ("method", "args", "kwargs", "function", "sent", "answer"),
    [
        (
            "company_metrics",
            (COMPANY,),
            {"since": SINCE, "until": UNTIL},
            "company_metrics",
            {"company_id": str(COMPANY), "since": SINCE.isoformat(), "until": UNTIL.isoformat()},
            [metrics_row()],
        ),
        (
            "company_metrics",
            (str(COMPANY),),
            {},
            "company_metrics",
            {"company_id": str(COMPANY)},
            [metrics_row()],
        ),
        (
            "user_progress",
            (USER_A,),
            {"since": SINCE},
            "user_progress",
            {"profile_id": str(USER_A), "since": SINCE.isoformat()},
            [progress_row()],
        ),
        (
            "team_overview",
            (COMPANY,),
            {"until": UNTIL},
            "team_overview",
            {"company_id": str(COMPANY), "until": UNTIL.isoformat()},
            [progress_row(profile_id=str(USER_A), display_name="Riley")],
        ),
        (
            "metrics_timeseries",
            (),
            {"company_id": COMPANY, "bucket": "month"},
            "metrics_timeseries",
            {"company_id": str(COMPANY), "bucket": "month"},
            [],
        ),
        (
            "metrics_timeseries",
            (),
            {"profile_id": USER_A, "since": SINCE, "until": UNTIL},
            "metrics_timeseries",
            {
                "profile_id": str(USER_A),
                "bucket": "week",
                "since": SINCE.isoformat(),
                "until": UNTIL.isoformat(),
            },
            [
                {
                    "bucket_start": "2026-01-05",
                    "sessions": 0,
                    "active_users": 0,
                    "scored_sessions": 0,
                    "average_score": None,
                    "total_minutes": 0,
                    "api_cost_usd": 0,
                    "average_talk_ratio": None,
                }
            ],
        ),
    ],
)
async def test_dashboards_post_their_parameters(
    api: respx.MockRouter,
    vs: Any,
    method: str,
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
    function: str,
    sent: dict[str, Any],
    answer: list[dict[str, Any]],
) -> None:
    route = api.post(f"/rest/v1/rpc/{function}").respond(200, json=answer)
    result = await call(getattr(vs.analytics, method)(*args, **kwargs))
    request = route.calls.last.request
    assert request.method == "POST"
    assert str(request.url.query, "ascii") == ""
    assert_service(request)
    assert body(request) == sent
    if isinstance(result, CompanyMetrics):
        assert result.skill_averages == {"opening": Decimal("70.5")}
        assert result.total_minutes == Decimal("30.25")
    elif isinstance(result, list):
        assert len(result) == len(answer)
    else:
        assert result.skills["opening"].latest == 70


async def test_dashboard_arguments_are_checked_before_any_request(
    api: respx.MockRouter, vs: Any
) -> None:
    route = api.post(url__regex=r"/rest/v1/rpc/.*").respond(200, json=[])
    naive = datetime.datetime(2026, 1, 1)
    for bad in (
        lambda: vs.analytics.company_metrics(COMPANY, since=naive),
        lambda: vs.analytics.company_metrics(COMPANY, since=UNTIL, until=SINCE),
        lambda: vs.analytics.company_metrics("not-a-uuid"),
        lambda: vs.analytics.metrics_timeseries(),
        lambda: vs.analytics.metrics_timeseries(company_id=COMPANY, profile_id=USER_A),
        lambda: vs.analytics.metrics_timeseries(company_id=COMPANY, bucket="year"),
    ):
        with pytest.raises(InvalidInputError):
            await call(bad())
    assert route.call_count == 0


async def test_a_refused_dashboard_is_permission_denied(api: respx.MockRouter, vs: Any) -> None:
    api.post("/rest/v1/rpc/company_metrics").respond(
        403, json={"code": "42501", "message": "only managers", "details": None, "hint": None}
    )
    with pytest.raises(PermissionDeniedError):
        await call(vs.as_user(USER_A).analytics.company_metrics(COMPANY))
