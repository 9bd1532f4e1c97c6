"""The SDK over SupabaseBackend against a real, running Supabase (``supabase start``).

Opt-in: runs only when ``SUPABASE_URL``, ``SUPABASE_SERVICE_ROLE_KEY`` and
``SUPABASE_JWT_SECRET`` are all set, e.g. for the local stack::

    supabase start   # applies supabase/migrations and supabase/seed.sql
    SUPABASE_URL=http://127.0.0.1:54321 \\
    SUPABASE_SERVICE_ROLE_KEY=<service_role key printed by supabase start> \\
    SUPABASE_JWT_SECRET=super-secret-jwt-token-with-at-least-32-characters-long \\
    pytest tests/live -m live

Otherwise every test is skipped. Each test runs on both faces (``VoiceSessions`` and
``AsyncVoiceSessions``) and only through the SDK: two companies, their users and profiles
are provisioned with ``vs.tenants`` (emails are unique per run), then users act through
``as_user`` (or their own access token) and RLS, grants and triggers answer for real.

What it leaves behind: the SDK cannot delete anything (users cannot even delete their own
sessions), so after each test the auth users it made are deleted with the Auth admin API
and its companies with PostgREST, both with the service key; profiles, sessions and
everything hanging off them go by cascade. A run that is interrupted leaves its companies,
users and sessions (all named ``vs-live-<uuid>``) in the project: meant for a throwaway
local project, where ``supabase db reset`` clears them.
"""

from __future__ import annotations

import inspect
import os
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import jwt
import pytest

from voicesessions import (
    AsyncVoiceSessions,
    ConflictError,
    NotFoundError,
    PermissionDeniedError,
    ProfileRole,
    SessionNotFound,
    SessionStatus,
    VoiceSessions,
)

LIVE_VARIABLES = ("SUPABASE_URL", "SUPABASE_SERVICE_ROLE_KEY", "SUPABASE_JWT_SECRET")
SKIP_REASON = (
    "skipped: no live Supabase (set SUPABASE_URL, SUPABASE_SERVICE_ROLE_KEY and"
    " SUPABASE_JWT_SECRET to run)"
)
LIVE = all(os.environ.get(name) for name in LIVE_VARIABLES)

pytestmark = [pytest.mark.live, pytest.mark.skipif(not LIVE, reason=SKIP_REASON)]


async def call(value: Any) -> Any:
    """The result of an SDK call on either face."""
    if inspect.isawaitable(value):
        return await value
    return value


@dataclass(frozen=True)
class Project:
    url: str
    key: str
    jwt_secret: str

    @classmethod
    def from_env(cls) -> Project:
        url, key, secret = (os.environ[name] for name in LIVE_VARIABLES)
        return cls(url.rstrip("/"), key, secret)

    def user_token(self, user_id: uuid.UUID) -> str:
        """A user's access token, as Supabase Auth would sign it."""
        now = int(time.time())
        claims = {
            "iss": f"{self.url}/auth/v1",
            "sub": str(user_id),
            "aud": "authenticated",
            "role": "authenticated",
            "iat": now,
            "exp": now + 600,
        }
        return jwt.encode(claims, self.jwt_secret, algorithm="HS256")


@dataclass
class Created:
    """What a test made, deleted afterwards (see the module docstring)."""

    users: list[uuid.UUID] = field(default_factory=list)
    companies: list[uuid.UUID] = field(default_factory=list)

    def delete(self, project: Project) -> None:
        headers = {"apikey": project.key, "Authorization": f"Bearer {project.key}"}
        with httpx.Client(base_url=project.url, headers=headers, timeout=30) as http:
            for user_id in self.users:
                response = http.delete(f"/auth/v1/admin/users/{user_id}")
                if response.status_code != httpx.codes.NOT_FOUND:
                    response.raise_for_status()
            if self.companies:
                ids = ",".join(str(c) for c in self.companies)
                http.delete("/rest/v1/companies", params={"id": f"in.({ids})"}).raise_for_status()


@dataclass
class World:
    """Company A (a trainee and a manager) and company B (a trainee), with a client per
    person on the face under test."""

    face: str
    project: Project
    service: Any  # VoiceSessions | AsyncVoiceSessions, as service_role
    company_a: uuid.UUID
    company_b: uuid.UUID
    trainee_id: uuid.UUID
    manager_id: uuid.UUID
    outsider_id: uuid.UUID

    @property
    def trainee(self) -> Any:
        return self.service.as_user(self.trainee_id)

    @property
    def manager(self) -> Any:
        return self.service.as_user(self.manager_id)

    @property
    def outsider(self) -> Any:
        """The trainee of company B."""
        return self.service.as_user(self.outsider_id)

    def client(self, **options: Any) -> Any:
        cls: Any = AsyncVoiceSessions if self.face == "async" else VoiceSessions
        return cls.from_supabase(self.project.url, self.project.key, **options)


def unique(label: str) -> str:
    return f"vs-live-{label}-{uuid.uuid4().hex}"


async def close(vs: Any) -> None:
    await call(vs.aclose() if isinstance(vs, AsyncVoiceSessions) else vs.close())


@pytest.fixture(params=["sync", "async"])
async def world(request: pytest.FixtureRequest) -> AsyncIterator[World]:
    """Two fresh companies and three people, provisioned through ``vs.tenants``."""
    project = Project.from_env()
    cls: Any = AsyncVoiceSessions if request.param == "async" else VoiceSessions
    service = cls.from_supabase(project.url, project.key, jwt_secret=project.jwt_secret)
    created = Created()
    try:
        tenants = service.tenants

        async def company(label: str) -> uuid.UUID:
            made = await call(tenants.create_company(unique(label)))
            created.companies.append(made.id)
            return made.id

        async def person(company_id: uuid.UUID, label: str, role: ProfileRole) -> uuid.UUID:
            user_id = await call(tenants.create_user(f"{unique(label)}@example.com"))
            created.users.append(user_id)
            await call(tenants.create_profile(user_id, company_id, role=role, display_name=label))
            return user_id

        company_a, company_b = await company("a"), await company("b")
        yield World(
            face=request.param,
            project=project,
            service=service,
            company_a=company_a,
            company_b=company_b,
            trainee_id=await person(company_a, "trainee", ProfileRole.TRAINEE),
            manager_id=await person(company_a, "manager", ProfileRole.MANAGER),
            outsider_id=await person(company_b, "outsider", ProfileRole.TRAINEE),
        )
    finally:
        await close(service)
        created.delete(project)


async def new_session(world: World, title: str = "Discovery call", **kwargs: Any) -> Any:
    return await call(world.trainee.sessions.create(world.trainee_id, title, **kwargs))


# -- sessions -----------------------------------------------------------------------------


async def test_a_trainee_creates_lists_completes_and_archives(world: World) -> None:
    trainee = world.trainee
    first = await new_session(world, scenario="cold-call", level=2)
    assert first.status is SessionStatus.ACTIVE
    assert (first.profile_id, first.company_id) == (world.trainee_id, world.company_a)
    assert first.metadata == {"scenario": "cold-call", "level": 2}
    assert first.ended_at is None
    earlier = datetime.now(UTC) - timedelta(hours=1)
    second = await new_session(world, "Follow-up", started_at=earlier)
    assert second.started_at == earlier
    assert await call(trainee.sessions.get(first.id)) == first

    # Newest first, and a keyset cursor walks the same list one row at a time.
    listed = await call(trainee.sessions.list())
    assert [s.id for s in listed.items] == [first.id, second.id]
    assert listed.next_cursor is None
    page_one = await call(trainee.sessions.list(limit=1))
    assert [s.id for s in page_one.items] == [first.id]
    page_two = await call(trainee.sessions.list(limit=1, cursor=page_one.next_cursor))
    assert [s.id for s in page_two.items] == [second.id]
    assert page_two.next_cursor is None
    window = await call(
        trainee.sessions.list(
            company_id=world.company_a,
            profile_id=world.trainee_id,
            status=SessionStatus.ACTIVE,
            started_after=earlier - timedelta(minutes=1),
            started_before=earlier + timedelta(minutes=1),
        )
    )
    assert [s.id for s in window.items] == [second.id]

    completed = await call(trainee.sessions.complete(first.id))
    assert completed.status is SessionStatus.COMPLETED
    assert completed.ended_at is not None
    assert completed.duration_seconds is not None
    assert completed.duration_seconds >= 0
    again = await call(trainee.sessions.complete(first.id))  # safe to retry
    assert again.ended_at == completed.ended_at
    archived = await call(trainee.sessions.archive(first.id))
    assert archived.status is SessionStatus.ARCHIVED
    only_archived = await call(trainee.sessions.list(status="archived"))
    assert [s.id for s in only_archived.items] == [first.id]
    transcript = await call(trainee.sessions.get_transcript(first.id))
    assert transcript.session_id == first.id
    assert transcript.segments == []


async def test_another_company_gets_session_not_found(world: World) -> None:
    session = await new_session(world)
    outsider = world.outsider
    with pytest.raises(SessionNotFound):
        await call(outsider.sessions.get(session.id))
    with pytest.raises(SessionNotFound):
        await call(outsider.sessions.complete(session.id))
    with pytest.raises(SessionNotFound):
        await call(outsider.sessions.get_transcript(session.id))
    assert (await call(outsider.sessions.list())).items == []
    assert (await call(outsider.sessions.list(company_id=world.company_a))).items == []
    still = await call(world.service.sessions.get(session.id))
    assert still.status is SessionStatus.ACTIVE


async def test_a_manager_sees_the_trainees_sessions_but_cannot_complete_them(
    world: World,
) -> None:
    session = await new_session(world)
    manager = world.manager
    assert (await call(manager.sessions.get(session.id))).id == session.id
    listed = await call(manager.sessions.list(profile_id=world.trainee_id))
    assert [s.id for s in listed.items] == [session.id]
    company = await call(manager.sessions.list(company_id=world.company_a))
    assert session.id in {s.id for s in company.items}
    with pytest.raises(PermissionDeniedError) as denied:
        await call(manager.sessions.complete(session.id))
    assert denied.value.code == "42501"
    assert (await call(world.service.sessions.get(session.id))).status is SessionStatus.ACTIVE


async def test_an_illegal_transition_is_a_conflict_vs001(world: World) -> None:
    trainee = world.trainee
    session = await new_session(world)
    with pytest.raises(ConflictError) as skipped:  # active -> archived skips completed
        await call(trainee.sessions.archive(session.id))
    assert skipped.value.code == "VS001"
    await call(trainee.sessions.complete(session.id))
    with pytest.raises(ConflictError) as backwards:
        await call(trainee.sessions.update_status(session.id, SessionStatus.ACTIVE))
    assert backwards.value.code == "VS001"
    got = await call(trainee.sessions.get(session.id))
    assert got.status is SessionStatus.COMPLETED


async def test_search_transcripts_finds_nothing_for_a_fresh_user(world: World) -> None:
    await new_session(world)
    assert await call(world.trainee.sessions.search_transcripts("pricing")) == []
    assert await call(world.outsider.sessions.search_transcripts('"next steps" OR budget')) == []


async def test_a_users_own_access_token_acts_as_that_user(world: World) -> None:
    session = await new_session(world)
    by_token = world.client(access_token=world.project.user_token(world.trainee_id))
    try:
        assert by_token.identity.user_id == world.trainee_id
        listed = await call(by_token.sessions.list())
        assert [s.id for s in listed.items] == [session.id]
        completed = await call(by_token.sessions.complete(session.id))
        assert completed.status is SessionStatus.COMPLETED
    finally:
        await close(by_token)


# -- tenants ------------------------------------------------------------------------------


async def test_tenants_as_provisioned(world: World) -> None:
    service, manager, trainee = world.service, world.manager, world.trainee
    company = await call(service.tenants.get_company(world.company_a))
    assert company.name.startswith("vs-live-a-")
    assert (await call(trainee.tenants.get_company(world.company_a))).id == world.company_a
    profile = await call(trainee.tenants.get_profile(world.trainee_id))
    assert (profile.company_id, profile.role) == (world.company_a, ProfileRole.TRAINEE)
    assert profile.display_name == "trainee"

    everyone = await call(manager.tenants.list_profiles(world.company_a))
    assert {p.id for p in everyone} == {world.trainee_id, world.manager_id}
    trainees = await call(manager.tenants.list_profiles(world.company_a, role="trainee"))
    assert [p.id for p in trainees] == [world.trainee_id]
    assert await call(world.outsider.tenants.list_profiles(world.company_a)) == []
    with pytest.raises(NotFoundError):
        await call(world.outsider.tenants.get_company(world.company_a))

    # Creating a profile again is a no-op that returns the existing one.
    again = await call(service.tenants.create_profile(world.trainee_id, world.company_a))
    assert again == profile
    with pytest.raises(PermissionDeniedError):  # nobody changes their own role
        await call(trainee.tenants.set_role(world.trainee_id, ProfileRole.ADMIN))
    promoted = await call(service.tenants.set_role(world.trainee_id, "manager"))
    assert promoted.role is ProfileRole.MANAGER


async def test_an_email_is_taken_once(world: World) -> None:
    email = f"{unique('twice')}@example.com"
    created = Created()
    try:
        created.users.append(await call(world.service.tenants.create_user(email)))
        with pytest.raises(ConflictError):
            await call(world.service.tenants.create_user(email))
    finally:
        created.delete(world.project)
