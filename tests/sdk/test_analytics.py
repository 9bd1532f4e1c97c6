"""Analytics through the SDK over PostgresBackend, on both faces: recording analyses,
conversation metrics recorded on completion, the dashboards and their authorization."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal
from typing import Any

import pytest

from tests.sdk.conftest import Sdk, sdk
from tests.support.db import owner_rows, scalar
from voicesessions import (
    AnalysisInput,
    ConflictError,
    InvalidInputError,
    NotFoundError,
    PermissionDeniedError,
    SessionNotFound,
    SessionStatus,
    TimeBucket,
)
from voicesessions.metrics import METRICS_VERSION, conversation_metrics

# Also through PgBouncer in transaction mode (see tests/sdk/conftest.py).
pytestmark = pytest.mark.through_pooler

CALL = [
    {
        "seq": 0,
        "speaker": "trainee",
        "text": "Hi, um, who runs training?",
        "start_ms": 0,
        "end_ms": 3000,
    },
    {
        "seq": 1,
        "speaker": "buyer",
        "text": "I do. Why do you ask?",
        "start_ms": 4000,
        "end_ms": 6000,
    },
    {
        "seq": 2,
        "speaker": "trainee",
        "text": "We help reps ramp faster.",
        "start_ms": 7000,
        "end_ms": 9000,
    },
]


async def live_call(client: Sdk, key: str = "A1", **metadata: Any) -> Any:
    rep = client.user(key)
    session = await sdk(rep.sessions.create(client.world.person(key).id, "Discovery", **metadata))
    await sdk(rep.updates.append_transcript_chunk(session.id, CALL))
    return session


async def test_completing_a_call_records_its_conversation_metrics(client: Sdk) -> None:
    session = await live_call(client, language="en")
    rep = client.user("A1")
    done = await sdk(rep.sessions.complete(session.id))
    assert done.status is SessionStatus.COMPLETED  # metrics alone do not make it analyzed
    stored = owner_rows(
        client.db,
        "select provider, analysis_type, version, results from public.analysis_results"
        " where session_id = %s",
        (session.id,),
    )
    expected = conversation_metrics(CALL).analysis_results()
    assert len(stored) == 1
    assert (stored[0]["provider"], stored[0]["analysis_type"], stored[0]["version"]) == (
        "voicesessions",
        "conversation_metrics",
        METRICS_VERSION,
    )
    assert stored[0]["results"]["question_count"] == expected["question_count"] == 1
    analytics = await sdk(rep.sessions.get_analytics(session.id))
    # the trainee spoke 3 s + 2 s of the 7 s anyone spoke
    assert analytics.talk_time_ratio == Decimal("0.7143")
    assert analytics.filler_words_count == 1
    assert analytics.question_count == 1
    assert analytics.overall_score is None
    # completing again (a retry) changes nothing
    await sdk(rep.sessions.complete(session.id))
    assert (
        scalar(
            client.db,
            "select count(*) from public.analysis_results where session_id = %s",
            (session.id,),
        )
        == 1
    )


async def test_the_update_manager_records_metrics_through_the_repository(client: Sdk) -> None:
    session = await live_call(client, "A2")
    await sdk(client.user("A2").updates.update_session_status(session.id, "completed"))
    analytics = await sdk(client.vs.sessions.get_analytics(session.id))
    assert analytics.question_count == 1


async def test_a_provider_analysis_scores_the_session(client: Sdk) -> None:
    session = await live_call(client)
    await sdk(client.user("A1").sessions.complete(session.id))
    analysis = AnalysisInput(
        provider="openai",
        analysis_type="sales_scoring",
        version="gpt-x-2026-01",
        results={
            "overall_score": 84,
            "skill_scores": {"opening": 90, "closing": 70},
            "sentiment_score": 0.3,
            "summary": "Strong opener.",
        },
        confidence=Decimal("0.82"),
        processing_time_ms=2300,
        api_cost_usd=Decimal("0.0210"),
    )
    stored = await sdk(client.vs.sessions.record_analysis(session.id, analysis))
    assert stored.results["summary"] == "Strong opener."
    assert await sdk(client.vs.sessions.record_analysis(session.id, analysis)) == stored
    a = await sdk(client.user("A1").sessions.get_analytics(session.id))
    assert (a.overall_score, a.opening_score, a.closing_score) == (84, 90, 70)
    assert a.talk_time_ratio == Decimal("0.7143")  # still the conversation metrics
    assert a.api_cost_usd == Decimal("0.021")
    got = await sdk(client.vs.sessions.get(session.id))
    assert got.status is SessionStatus.ANALYZED
    changed = analysis.model_copy(update={"results": {"overall_score": 10}})
    with pytest.raises(ConflictError) as excinfo:
        await sdk(client.vs.sessions.record_analysis(session.id, changed))
    assert excinfo.value.code == "VS003"


async def test_who_may_record_and_what_is_refused(client: Sdk) -> None:
    sid = client.world.completed_session["A1"]
    fields = {"provider": "openai", "analysis_type": "sales_scoring", "results": {}}
    with pytest.raises(PermissionDeniedError):
        await sdk(client.user("A1").sessions.record_analysis(sid, **fields))
    with pytest.raises(PermissionDeniedError):
        await sdk(client.user("MA").sessions.record_analysis(sid, **fields))
    with pytest.raises(SessionNotFound):
        await sdk(client.user("B1").sessions.record_analysis(sid, **fields))
    with pytest.raises(InvalidInputError) as bad:
        await sdk(
            client.vs.sessions.record_analysis(sid, **{**fields, "results": {"overall_score": 900}})
        )
    assert "overall_score" in str(bad.value)
    with pytest.raises(ConflictError) as active:
        await sdk(client.vs.sessions.record_analysis(client.world.active_session["A1"], **fields))
    assert active.value.code == "VS004"
    with pytest.raises(InvalidInputError):
        await sdk(client.vs.sessions.record_analysis(sid, fields, provider="x"))


async def test_get_analytics_of_a_session_without_analyses(client: Sdk) -> None:
    session = await sdk(client.vs.sessions.create(client.world.person("A1").id, "No analysis"))
    with pytest.raises(NotFoundError) as excinfo:
        await sdk(client.vs.sessions.get_analytics(session.id))
    assert not isinstance(excinfo.value, SessionNotFound)
    with pytest.raises(SessionNotFound):
        await sdk(client.user("B1").sessions.get_analytics(session.id))


async def test_dashboards(client: Sdk) -> None:
    world = client.world
    company_a = world.companies["A"]
    session = await live_call(client)
    await sdk(client.user("A1").sessions.complete(session.id))
    await sdk(
        client.vs.sessions.record_analysis(
            session.id,
            provider="openai",
            analysis_type="sales_scoring",
            results={"overall_score": 90, "skill_scores": {"opening": 80}},
            api_cost_usd=Decimal("0.5"),
        )
    )
    manager = client.user("MA")

    metrics = await sdk(manager.analytics.company_metrics(company_a))
    # the world's two completed sessions (scored 70) and two active ones, and this one
    assert (metrics.sessions, metrics.active_users, metrics.scored_sessions) == (5, 2, 3)
    assert metrics.average_score == Decimal("76.67")  # (70 + 70 + 90) / 3
    assert metrics.api_cost_usd == Decimal("0.5")
    assert metrics.skill_averages == {"opening": Decimal("80")}
    future = dt.datetime.now(dt.UTC) + dt.timedelta(days=1)
    empty = await sdk(manager.analytics.company_metrics(company_a, since=future))
    assert (empty.sessions, empty.average_score, empty.total_minutes) == (0, None, 0)

    a1 = world.person("A1").id
    progress = await sdk(client.user("A1").analytics.user_progress(a1))
    assert (progress.sessions, progress.scored_sessions) == (3, 2)
    assert (progress.first_score, progress.latest_score, progress.best_score) == (70, 90, 90)
    assert progress.skills["opening"].latest == 80
    assert progress.trend_per_week is not None
    assert progress.trend_per_week > 0

    team = await sdk(manager.analytics.team_overview(company_a))
    assert [(m.display_name, m.sessions) for m in team] == [("Person A1", 3), ("Person A2", 2)]
    series = await sdk(
        manager.analytics.metrics_timeseries(company_id=company_a, bucket=TimeBucket.DAY)
    )
    assert sum(b.sessions for b in series) == 5
    mine = await sdk(client.user("A1").analytics.metrics_timeseries(profile_id=a1, bucket="month"))
    assert sum(b.sessions for b in mine) == 3


async def test_dashboards_respect_tenants_and_roles(client: Sdk) -> None:
    world = client.world
    with pytest.raises(PermissionDeniedError):
        await sdk(client.user("MA").analytics.company_metrics(world.companies["B"]))
    with pytest.raises(PermissionDeniedError):
        await sdk(client.user("MA").analytics.team_overview(world.companies["B"]))
    with pytest.raises(PermissionDeniedError):
        await sdk(client.user("A1").analytics.company_metrics(world.companies["A"]))
    with pytest.raises(PermissionDeniedError):
        await sdk(client.user("A1").analytics.user_progress(world.person("A2").id))
    with pytest.raises(PermissionDeniedError):
        await sdk(client.user("MA").analytics.metrics_timeseries(profile_id=world.person("B1").id))
    with pytest.raises(InvalidInputError):
        await sdk(
            client.vs.analytics.metrics_timeseries(
                company_id=world.companies["A"], bucket="fortnight"
            )
        )
    own = await sdk(client.user("B1").analytics.user_progress(world.person("B1").id))
    assert own.sessions == 2


# -- complete(): one write, the database measures the call -----------------------------------


async def test_complete_on_a_call_with_thousands_of_speakers_is_not_left_half_done(
    client: Sdk,
) -> None:
    rep = client.user("A1")
    session = await sdk(rep.sessions.create(client.world.person("A1").id, "Crowd"))
    segments = [
        {
            "seq": i,
            "speaker": f"voice-{i:04d}",
            "text": "word " * 40,
            "start_ms": i * 10,
            "end_ms": i * 10 + 5,
        }
        for i in range(3001)
    ]
    for start in range(0, len(segments), 1000):  # at most 1,000 finals per call
        await sdk(rep.updates.append_transcript_chunk(session.id, segments[start : start + 1000]))
    done = await sdk(rep.sessions.complete(session.id))
    assert done.status is SessionStatus.COMPLETED
    stored = owner_rows(
        client.db,
        "select results -> 'conversation' as c, octet_length(results::text) as size"
        " from public.analysis_results where session_id = %s",
        (session.id,),
    )
    assert len(stored) == 1
    assert stored[0]["c"]["segments"] == 3001
    assert stored[0]["c"]["speakers_omitted"] == 3001 - len(stored[0]["c"]["speakers"])
    assert stored[0]["size"] < 100_000


async def test_a_users_client_cannot_record_figures(client: Sdk) -> None:
    session = await live_call(client)
    rep = client.user("A1")
    await sdk(rep.sessions.complete(session.id))
    forged = conversation_metrics(CALL).analysis_results()
    forged["talk_time_ratio"] = 0.5
    for provider, version in (("voicesessions", METRICS_VERSION), ("voicesessions", "x")):
        with pytest.raises(PermissionDeniedError):
            await sdk(
                rep.sessions.record_analysis(
                    session.id,
                    provider=provider,
                    analysis_type="conversation_metrics",
                    version=version,
                    results=forged,
                    api_cost_usd=Decimal("999999.99"),
                )
            )
    analytics = await sdk(rep.sessions.get_analytics(session.id))
    assert analytics.talk_time_ratio == Decimal("0.7143")  # measured by the database
    assert analytics.api_cost_usd == 0


async def test_complete_with_an_end_beyond_the_clock_is_refused(client: Sdk) -> None:
    rep = client.user("A1")
    session = await sdk(rep.sessions.create(client.world.person("A1").id, "Timed"))
    far = dt.datetime.now(dt.UTC) + dt.timedelta(days=365 * 50)
    with pytest.raises(InvalidInputError) as excinfo:
        await sdk(rep.sessions.complete(session.id, ended_at=far))
    assert "ended_at" in str(excinfo.value)
    assert (await sdk(rep.sessions.get(session.id))).status is SessionStatus.ACTIVE
    with pytest.raises(ConflictError):  # analyzed needs an analysis
        await sdk(rep.sessions.update_status(session.id, "analyzed"))
