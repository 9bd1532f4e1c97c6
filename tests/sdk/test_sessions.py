"""SessionRepository behaviour over PostgresBackend, as service_role and as users of two
companies. RLS shows through the SDK: what a user may not see is SessionNotFound."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import psycopg
import pytest

from tests.sdk.conftest import Sdk, sdk
from voicesessions import (
    ConflictError,
    InvalidInputError,
    PermissionDeniedError,
    Session,
    SessionNotFound,
    SessionStatus,
    VoiceSessions,
)

# Also through PgBouncer in transaction mode (see tests/sdk/conftest.py).
pytestmark = pytest.mark.through_pooler


async def test_create_as_owner_sets_company_and_metadata(client: Sdk) -> None:
    a1 = client.world.person("A1")
    session = await sdk(
        client.user("A1").sessions.create(a1.id, "Discovery call", scenario="cold", level=2)
    )
    assert isinstance(session, Session)
    assert session.profile_id == a1.id
    assert session.company_id == client.world.companies["A"]
    assert session.status is SessionStatus.ACTIVE
    assert session.metadata == {"scenario": "cold", "level": 2}
    assert session.ended_at is None
    assert session.duration_seconds is None
    again = await sdk(client.user("A1").sessions.get(session.id))
    assert again == session


async def test_create_with_started_at(client: Sdk) -> None:
    started = datetime.now(UTC) - timedelta(minutes=30)
    session = await sdk(
        client.vs.sessions.create(client.world.person("A2").id, "Backfilled", started_at=started)
    )
    assert session.started_at == started


@pytest.mark.parametrize(
    ("title", "started_at"),
    [
        ("", None),
        ("x" * 256, None),
        ("ok", datetime(2026, 1, 1)),  # naive datetime
    ],
)
async def test_invalid_input_is_rejected_before_any_io(
    title: str, started_at: datetime | None
) -> None:
    # A client whose database does not exist: any I/O would fail with TransientError.
    vs = VoiceSessions.from_postgres("postgresql://nobody@127.0.0.1:1/nothing")
    try:
        with pytest.raises(InvalidInputError):
            vs.sessions.create(uuid.uuid4(), title, started_at=started_at)
        with pytest.raises(InvalidInputError):
            vs.sessions.get("not-a-uuid")
        with pytest.raises(InvalidInputError):
            vs.sessions.update_status(uuid.uuid4(), "finished")
        with pytest.raises(InvalidInputError):
            vs.sessions.list(limit=0)
        with pytest.raises(InvalidInputError):
            vs.sessions.list(cursor="%%%")
        with pytest.raises(InvalidInputError):
            vs.sessions.search_transcripts("   ")
    finally:
        vs.close()


async def test_creating_for_someone_else_is_denied_and_leaves_nothing(client: Sdk) -> None:
    before = await sdk(client.vs.sessions.list(profile_id=client.world.person("A2").id))
    with pytest.raises(PermissionDeniedError) as exc:
        await sdk(client.user("A1").sessions.create(client.world.person("A2").id, "Not mine"))
    assert exc.value.code == "42501"
    after = await sdk(client.vs.sessions.list(profile_id=client.world.person("A2").id))
    assert after.items == before.items


async def test_get_respects_tenancy(client: Sdk) -> None:
    world = client.world
    own = world.active_session["A1"]
    assert (await sdk(client.user("A1").sessions.get(own))).id == own
    assert (await sdk(client.user("MA").sessions.get(own))).id == own  # manager, same company
    for who in ("A2", "B1"):
        with pytest.raises(SessionNotFound):
            await sdk(client.user(who).sessions.get(own))
    with pytest.raises(SessionNotFound):
        await sdk(client.vs.sessions.get(uuid.uuid4()))


async def test_list_shows_exactly_what_each_identity_may_see(client: Sdk) -> None:
    world = client.world

    async def ids(who: str | None, **filters: object) -> set[uuid.UUID]:
        vs = client.vs if who is None else client.user(who)
        page = await sdk(vs.sessions.list(**filters))
        return {s.id for s in page.items}

    assert await ids("A1") == world.sessions_of("A1")
    assert await ids("MA") == world.sessions_in("A")
    assert await ids("AA") == world.sessions_in("A")
    assert await ids("B1") == world.sessions_of("B1")
    assert await ids(None) == world.sessions_in("A") | world.sessions_in("B")
    assert await ids(None, company_id=world.companies["B"]) == world.sessions_in("B")
    assert await ids("A1", company_id=world.companies["B"]) == set()
    assert await ids("MA", profile_id=world.person("A2").id) == world.sessions_of("A2")
    assert await ids(None, status="completed") == set(world.completed_session.values())
    assert await ids(None, status=SessionStatus.ACTIVE) == set(world.active_session.values())


async def test_list_pages_are_stable_and_complete(client: Sdk) -> None:
    a2 = client.world.person("A2")
    base = datetime.now(UTC) - timedelta(days=1)
    # Several sessions share a start time: the id breaks ties, so no page repeats a row.
    for i in range(7):
        await sdk(
            client.vs.sessions.create(
                a2.id, f"Call {i}", started_at=base + timedelta(minutes=i // 2)
            )
        )
    seen: list[Session] = []
    cursor = None
    pages = 0
    while True:
        page = await sdk(client.vs.sessions.list(profile_id=a2.id, limit=3, cursor=cursor))
        pages += 1
        seen.extend(page.items)
        cursor = page.next_cursor
        if cursor is None:
            break
    total = 7 + len(client.world.sessions_of("A2"))
    assert len(seen) == total
    assert pages == -(-total // 3)
    assert len({s.id for s in seen}) == total
    keys = [(s.started_at, s.id) for s in seen]
    assert keys == sorted(keys, reverse=True)


async def test_list_time_window(client: Sdk) -> None:
    a1 = client.world.person("A1")
    old = await sdk(
        client.vs.sessions.create(a1.id, "Old", started_at=datetime(2025, 1, 10, tzinfo=UTC))
    )
    page = await sdk(
        client.vs.sessions.list(
            profile_id=a1.id,
            started_after=datetime(2025, 1, 1, tzinfo=UTC),
            started_before=datetime(2025, 2, 1, tzinfo=UTC),
        )
    )
    assert [s.id for s in page.items] == [old.id]
    assert page.next_cursor is None


async def test_lifecycle_through_the_sdk(client: Sdk) -> None:
    owner = client.user("A1")
    sid = client.world.active_session["A1"]
    completed = await sdk(owner.sessions.complete(sid))
    assert completed.status is SessionStatus.COMPLETED
    assert completed.ended_at is not None
    assert completed.duration_seconds is not None
    # Completing again changes nothing (safe to retry).
    assert (await sdk(owner.sessions.complete(sid))).ended_at == completed.ended_at
    # analyzed means "an analysis exists": not reachable by a status change alone
    with pytest.raises(ConflictError) as refused:
        await sdk(client.vs.sessions.update_status(sid, "analyzed"))
    assert refused.value.code == "VS001"
    await sdk(
        client.vs.sessions.record_analysis(
            sid, provider="scorer", analysis_type="sales_scoring", results={"overall_score": 80}
        )
    )
    analyzed = await sdk(client.vs.sessions.get(sid))
    assert analyzed.status is SessionStatus.ANALYZED
    archived = await sdk(owner.sessions.archive(sid))
    assert archived.status is SessionStatus.ARCHIVED
    with pytest.raises(ConflictError) as exc:
        await sdk(owner.sessions.update_status(sid, SessionStatus.ACTIVE))
    assert exc.value.code == "VS001"
    assert (await sdk(owner.sessions.get(sid))).status is SessionStatus.ARCHIVED


async def test_complete_with_explicit_end(client: Sdk) -> None:
    a1 = client.world.person("A1")
    start = datetime.now(UTC) - timedelta(minutes=10)
    session = await sdk(client.vs.sessions.create(a1.id, "Timed", started_at=start))
    done = await sdk(
        client.vs.sessions.complete(session.id, ended_at=start + timedelta(seconds=95))
    )
    assert done.duration_seconds == 95
    with pytest.raises(InvalidInputError):
        await sdk(client.vs.sessions.complete(session.id, ended_at=datetime(2026, 1, 1)))


async def test_only_the_owner_changes_status(client: Sdk) -> None:
    sid = client.world.active_session["A1"]
    with pytest.raises(PermissionDeniedError):
        await sdk(client.user("MA").sessions.complete(sid))  # may read, may not write
    with pytest.raises(SessionNotFound):
        await sdk(client.user("B1").sessions.complete(sid))  # may not even read
    assert (await sdk(client.vs.sessions.get(sid))).status is SessionStatus.ACTIVE


async def test_transcript_segments_are_ordered_by_audio_offset(client: Sdk) -> None:
    sid = client.world.active_session["B1"]
    with psycopg.connect(client.db.dsn, autocommit=True) as conn:
        # Arrival order differs from audio order; seq 11 starts before seq 10.
        conn.execute(
            "insert into transcript_segments (session_id, seq, speaker, text, start_ms, end_ms)"
            " values (%s, 10, 'buyer', 'later', 9000, 9500),"
            " (%s, 11, 'trainee', 'earlier', 8000, 8500)",
            (sid, sid),
        )
    transcript = await sdk(client.user("B1").sessions.get_transcript(sid))
    starts = [(s.start_ms, s.seq) for s in transcript.segments]
    assert starts == sorted(starts)
    assert [s.text for s in transcript.segments][-2:] == ["earlier", "later"]
    assert transcript.content is None  # not assembled while the session is active
    assert "trainee: earlier" in transcript.text
    with pytest.raises(SessionNotFound):
        await sdk(client.user("A1").sessions.get_transcript(sid))


async def test_transcript_of_a_completed_session(client: Sdk) -> None:
    sid = client.world.completed_session["A1"]
    transcript = await sdk(client.user("MA").sessions.get_transcript(sid))
    assert transcript.content == "hello there, how can I help"
    assert transcript.word_count == 6
    assert transcript.text == transcript.content


async def test_search_transcripts_is_ranked_language_aware_and_tenant_scoped(client: Sdk) -> None:
    world = client.world
    with psycopg.connect(client.db.dsn, autocommit=True) as conn:
        conn.execute(
            "update transcripts set language = 'de',"
            " content = 'Wir verkaufen Versicherungen an kleine Unternehmen' where session_id = %s",
            (world.completed_session["A2"],),
        )
        conn.execute(
            "update transcripts set content = 'pricing pricing and more pricing talk'"
            " where session_id = %s",
            (world.completed_session["B1"],),
        )
    # German stemming: "Versicherung" finds "Versicherungen".
    hits = await sdk(client.vs.sessions.search_transcripts("Versicherung"))
    assert [h.session_id for h in hits] == [world.completed_session["A2"]]
    assert "**" in hits[0].snippet
    assert hits[0].language == "de"
    # Tenancy: A1 cannot find B1's transcript; B1 can.
    assert await sdk(client.user("A1").sessions.search_transcripts("pricing")) == []
    found = await sdk(client.user("B1").sessions.search_transcripts("pricing"))
    assert [h.session_id for h in found] == [world.completed_session["B1"]]
    # Ranking: the transcript that says it more often ranks first.
    both = await sdk(client.vs.sessions.search_transcripts("help OR pricing", limit=10))
    assert both[0].session_id == world.completed_session["B1"]
    assert [h.rank for h in both] == sorted((h.rank for h in both), reverse=True)
    assert len(await sdk(client.vs.sessions.search_transcripts("help", limit=1))) == 1
