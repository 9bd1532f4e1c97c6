"""The SDK over SupabaseBackend against a real, running Supabase (``supabase start``).

Opt-in: runs only when the environment names a project (what is read, and in which order,
is in :mod:`tests.support.live_project`, pinned by ``test_live_configuration.py``):
``SUPABASE_URL``, ``SUPABASE_SECRET_KEY`` and ``SUPABASE_PUBLISHABLE_KEY`` (else the legacy
``SUPABASE_SERVICE_ROLE_KEY`` and ``SUPABASE_ANON_KEY``), and what ``as_user`` signs users'
tokens with: ``VOICESESSIONS_SIGNING_KEY`` (a private ES256/RS256 JWK the project trusts, or
a key set such as the CLI's ``signing_keys.json``, with ``VOICESESSIONS_SIGNING_KEY_ID``),
else the legacy ``SUPABASE_JWT_SECRET``. For the local stack with an ES256 signing key::

    # supabase/config.toml, under [auth]: signing_keys_path = "./signing_keys.json"
    echo '[]' > supabase/signing_keys.json        # CLI 3.1 wants the file to exist
    supabase gen signing-key --algorithm ES256    # writes the private JWK into that list
    supabase start   # applies supabase/migrations and supabase/seed.sql
    SUPABASE_URL=http://127.0.0.1:54321 \\
    SUPABASE_SECRET_KEY=<Secret key printed by supabase start> \\
    SUPABASE_PUBLISHABLE_KEY=<Publishable key printed by supabase start> \\
    VOICESESSIONS_SIGNING_KEY="$(cat supabase/signing_keys.json)" \\
    pytest tests/live -m live

(or ``SUPABASE_JWT_SECRET=super-secret-jwt-token-with-at-least-32-characters-long`` instead
of the signing key, for a stack still on the legacy HS256 secret).

Otherwise every test is skipped, and the reason names each missing variable. Each test runs
on both faces (``VoiceSessions`` and ``AsyncVoiceSessions``) and only through the SDK: two
companies, their users and profiles are provisioned with ``vs.tenants`` (emails are unique per
run), then users act through ``as_user`` (or their own access token with the publishable
key) and RLS, grants and triggers answer for real.

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
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import jwt
import pytest

from tests.support.jwks import verify_as_supabase
from tests.support.live_project import LiveProject, skip_reason
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

#: Why the suite skips here ("" when the environment names a live project).
SKIP_REASON = skip_reason(os.environ)

pytestmark = [pytest.mark.live, pytest.mark.skipif(bool(SKIP_REASON), reason=SKIP_REASON)]


async def call(value: Any) -> Any:
    """The result of an SDK call on either face."""
    if inspect.isawaitable(value):
        return await value
    return value


@dataclass
class Created:
    """What a test made, deleted afterwards (see the module docstring)."""

    users: list[uuid.UUID] = field(default_factory=list)
    companies: list[uuid.UUID] = field(default_factory=list)

    def delete(self, project: LiveProject) -> None:
        key = project.secret_key
        headers = {"apikey": key}
        if not key.startswith("sb_"):  # an sb_ key is no JWT: never in Authorization
            headers["Authorization"] = f"Bearer {key}"
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
    project: LiveProject
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

    def client(self, key: str, **options: Any) -> Any:
        cls: Any = AsyncVoiceSessions if self.face == "async" else VoiceSessions
        return cls.from_supabase(self.project.url, key, **options)


def unique(label: str) -> str:
    return f"vs-live-{label}-{uuid.uuid4().hex}"


async def close(vs: Any) -> None:
    await call(vs.aclose() if isinstance(vs, AsyncVoiceSessions) else vs.close())


@pytest.fixture(params=["sync", "async"])
async def world(request: pytest.FixtureRequest) -> AsyncIterator[World]:
    """Two fresh companies and three people, provisioned through ``vs.tenants``."""
    project = LiveProject.from_environ(os.environ)
    cls: Any = AsyncVoiceSessions if request.param == "async" else VoiceSessions
    service = cls.from_supabase(project.url, project.secret_key, **project.signing_options())
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


async def test_the_project_trusts_the_key_as_user_signs_with(world: World) -> None:
    """The token ``as_user`` sends verifies against the project's own JWKS, as GoTrue and
    PostgREST verify it (or, on the legacy HS256 secret, with that secret): a signing key the
    project has not imported, or has revoked, fails here by name instead of as PGRST301."""
    project = world.project
    token = world.trainee._backend._bearer()
    if project.signing_key is None:
        assert project.jwt_secret is not None
        claims = jwt.decode(
            token, project.jwt_secret, algorithms=["HS256"], audience="authenticated"
        )
    else:
        async with httpx.AsyncClient(timeout=30) as http:
            response = await http.get(
                f"{project.url}/auth/v1/.well-known/jwks.json",
                headers={"apikey": project.publishable_key},
            )
        response.raise_for_status()
        claims = verify_as_supabase(token, response.json())
    assert claims["sub"] == str(world.trainee_id)


async def test_a_users_own_access_token_acts_as_that_user(world: World) -> None:
    """As a browser does: the publishable key, and the user's token from Supabase Auth."""
    session = await new_session(world)
    project = world.project
    by_token = world.client(
        project.publishable_key, access_token=project.user_token(world.trainee_id)
    )
    anonymous = world.client(project.publishable_key)
    try:
        assert by_token.identity.user_id == world.trainee_id
        listed = await call(by_token.sessions.list())
        assert [s.id for s in listed.items] == [session.id]
        completed = await call(by_token.sessions.complete(session.id))
        assert completed.status is SessionStatus.COMPLETED
        assert anonymous.identity.role == "anon"
        assert (await call(anonymous.sessions.list())).items == []  # RLS: anon sees nothing
    finally:
        await close(by_token)
        await close(anonymous)


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


# -- live updates, recordings, analytics, GDPR ------------------------------------------------


def _segment(seq: int, *, final: bool = True) -> dict[str, Any]:
    start = 5_000 + seq * 2_000
    speaker = "trainee" if seq % 2 == 0 else "buyer"
    text = f"is this line {seq} a question?" if speaker == "trainee" else f"answer {seq}"
    return {
        "seq": seq,
        "speaker": speaker,
        "text": text,
        "start_ms": start,
        "end_ms": start + 1_500,
        "segment_id": f"s{seq}",
        "is_final": final,
    }


async def test_a_trainee_watches_their_call_through_realtime(world: World) -> None:
    from tests.support.live import entered, next_event

    session = await new_session(world)
    async with entered(world.trainee.updates.events(session.id)) as feed:
        await call(
            world.service.updates.append_transcript_chunk(
                session.id, [_segment(0), _segment(1, final=False)]
            )
        )
        event = await next_event(feed, within=30)
    assert event.event == "transcript"
    assert [s.seq for s in event.final_segments] == [0]
    assert [s.seq for s in event.interim_segments] == [1]
    transcript = await call(world.trainee.sessions.get_transcript(session.id))
    assert [s.seq for s in transcript.segments] == [0]  # the interim was never stored


async def test_another_company_cannot_watch_a_call(world: World) -> None:
    from tests.support.live import entered

    session = await new_session(world)
    with pytest.raises((SessionNotFound, PermissionDeniedError)):
        async with entered(world.outsider.updates.events(session.id)):
            pass


async def test_a_stream_stores_every_segment_once_in_order(world: World) -> None:
    from tests.support.live import entered

    session = await new_session(world)
    async with entered(world.trainee.updates.stream(session.id, max_batch=7)) as stream:
        for seq in [*range(30), *range(29, -1, -1)]:  # each twice, the second time reversed
            await call(stream.add(_segment(seq)))
    transcript = await call(world.trainee.sessions.get_transcript(session.id))
    assert [s.seq for s in transcript.segments] == list(range(30))


async def test_completion_records_metrics_and_dashboards_count_them(world: World) -> None:
    session = await new_session(world)
    await call(
        world.trainee.updates.append_transcript_chunk(
            session.id, [_segment(seq) for seq in range(6)]
        )
    )
    await call(world.trainee.sessions.complete(session.id))
    measured = await call(world.trainee.sessions.get_analytics(session.id))
    assert measured.question_count == 3  # the trainee's three lines end with "?"
    await call(
        world.service.sessions.record_analysis(
            session.id,
            provider="live-test",
            analysis_type="coaching",
            results={"overall_score": 80, "skill_scores": {"questioning": 70}},
        )
    )
    assert (await call(world.trainee.sessions.get(session.id))).status is SessionStatus.ANALYZED
    numbers = await call(world.manager.analytics.company_metrics(world.company_a))
    assert numbers.sessions == 1
    assert numbers.average_score == 80
    with pytest.raises(PermissionDeniedError):
        await call(world.outsider.analytics.company_metrics(world.company_a))


async def test_a_recording_is_stored_signed_and_removed(world: World, tmp_path: Any) -> None:
    from tests.support import audio as gen

    session = await new_session(world)
    wav = gen.write(gen.sine(hz=440, dbfs=-12, seconds=2.0), tmp_path, "tone", gen.FORMATS["wav"])
    info = await call(world.trainee.sessions.attach_audio(session.id, wav))
    assert info.path == f"{world.company_a}/{world.trainee_id}/{session.id}.wav"
    assert abs(info.quality.duration_s - 2.0) < 0.01
    url = await call(world.manager.sessions.audio_url(session.id, expires_in=60))
    async with httpx.AsyncClient(timeout=30) as http:
        fetched = await http.get(url)
    assert fetched.status_code == 200
    assert fetched.content == wav.read_bytes()
    with pytest.raises((SessionNotFound, PermissionDeniedError)):
        await call(world.outsider.sessions.audio_url(session.id))
    await call(world.trainee.sessions.remove_audio(session.id))
    assert (await call(world.trainee.sessions.get(session.id))).audio_path is None


async def test_erasure_removes_the_trainee_and_their_recording(world: World, tmp_path: Any) -> None:
    from tests.support import audio as gen

    session = await new_session(world)
    wav = gen.write(gen.sine(hz=440, dbfs=-12, seconds=1.0), tmp_path, "tone", gen.FORMATS["wav"])
    await call(world.trainee.sessions.attach_audio(session.id, wav))
    report = await call(world.service.gdpr.delete_user_session_data(world.trainee_id))
    assert report.counts["sessions"] == 1
    assert report.pending_storage == []  # the object is gone from Storage
    with pytest.raises(SessionNotFound):
        await call(world.service.sessions.get(session.id))
