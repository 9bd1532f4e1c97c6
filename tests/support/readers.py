"""Every SDK reader of one company's data of the two-company world (tests/support/world.py):
as the trainee who owns it, as the company's admin (a manager reads through the same calls),
as the service role. Hostile-input tests run them all after storing something, since a
stored value any one of them cannot read breaks that reader for everyone."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from tests.support.world import World
from voicesessions import VoiceSessions

Reader = tuple[str, Callable[[], Any]]


def sdk_readers(vs: VoiceSessions, world: World, company: str) -> list[Reader]:
    """(name, call) for each reader of company ``company``'s ("A" or "B") data."""
    trainee_key = f"{company}1"
    trainee = world.person(trainee_key).id
    active = world.active_session[trainee_key]
    completed = world.completed_session[trainee_key]
    company_id = world.companies[company]
    owner = vs.as_user(trainee)
    admin = vs.as_user(world.person(f"A{company}").id)
    return [
        ("owner sessions.list", lambda: owner.sessions.list()),
        ("owner sessions.get(active)", lambda: owner.sessions.get(active)),
        ("owner sessions.get(completed)", lambda: owner.sessions.get(completed)),
        ("owner get_transcript(active)", lambda: owner.sessions.get_transcript(active)),
        ("owner get_transcript(completed)", lambda: owner.sessions.get_transcript(completed)),
        ("owner get_analytics(completed)", lambda: owner.sessions.get_analytics(completed)),
        ("owner search_transcripts", lambda: owner.sessions.search_transcripts("hello")),
        ("owner get_profile", lambda: owner.tenants.get_profile(trainee)),
        ("owner user_progress", lambda: owner.analytics.user_progress(trainee)),
        ("admin sessions.list", lambda: admin.sessions.list(company_id=company_id)),
        ("admin company_metrics", lambda: admin.analytics.company_metrics(company_id)),
        ("admin team_overview", lambda: admin.analytics.team_overview(company_id)),
        (
            "admin metrics_timeseries",
            lambda: admin.analytics.metrics_timeseries(company_id=company_id),
        ),
        ("admin list_profiles", lambda: admin.tenants.list_profiles(company_id)),
        ("admin get_company", lambda: admin.tenants.get_company(company_id)),
        ("admin gdpr list_requests", lambda: admin.gdpr.list_requests()),
        ("service gdpr export", lambda: vs.gdpr.export_user_data(trainee)),
    ]


def one_line(error: BaseException) -> str:
    """An exception as one short line for a failure message."""
    return f"{type(error).__name__}: {' | '.join(str(error).split(chr(10)))[:200]}"


def reader_failures(vs: VoiceSessions, world: World, company: str) -> list[str]:
    """Run every reader of ``company``'s data; one line per reader that raised."""
    problems: list[str] = []
    for name, read in sdk_readers(vs, world, company):
        try:
            read()
        except Exception as error:  # any failure to read is the finding
            problems.append(f"{company}: {name} fails: {one_line(error)}")
    return problems
