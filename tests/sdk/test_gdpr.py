"""GDPRSessionManager behaviour over PostgresBackend, both faces: erasure, anonymization,
export, retention and requests, with the audio in the backend's local storage store."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import Database
from tests.sdk.conftest import face_and_dsn, sdk
from tests.support.world import World
from voicesessions import (
    AnonymizationReport,
    APIError,
    AsyncVoiceSessions,
    ErasureReport,
    GDPRRequestKind,
    GDPRRequestStatus,
    InvalidInputError,
    NotFoundError,
    PermissionDeniedError,
    RetentionReport,
    SessionNotFound,
    TransientError,
    VoiceSessions,
)
from voicesessions._retry_policy import RetryPolicy

# Also through PgBouncer in transaction mode (see tests/sdk/conftest.py).
pytestmark = pytest.mark.through_pooler

BUCKET = "session-audio"


@dataclass
class Gdpr:
    """A service-role client on one face whose local storage store is ``root``."""

    vs: Any  # VoiceSessions | AsyncVoiceSessions
    world: World
    db: Database
    face: str
    root: Path

    def user(self, key: str) -> Any:
        return self.vs.as_user(self.world.person(key).id)

    def id(self, key: str) -> uuid.UUID:
        return self.world.person(key).id

    def put_audio(self, session_id: uuid.UUID, *, ext: str = "webm") -> Path:
        """Give the session an audio_path (as the owner, in SQL) and its file in the store."""
        with self.db.connect() as conn:
            row = conn.execute(
                "update public.sessions set audio_path = company_id || '/' || profile_id || '/'"
                " || id || '.' || %s::text, audio_size_bytes = 5 where id = %s"
                " returning audio_path",
                (ext, session_id),
            ).fetchone()
        assert row is not None
        path = self.root / BUCKET / str(row[0])  # type: ignore[index]
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"audio")
        return path

    def scalar(self, query: str, *params: Any) -> Any:
        with self.db.connect() as conn:
            row = conn.execute(query, params).fetchone()
        assert row is not None
        return row[0]  # type: ignore[index]


@pytest.fixture  # parametrized by face in tests/sdk/conftest.py
async def gdpr(
    request: pytest.FixtureRequest, world_db: tuple[Database, World], tmp_path: Path
) -> AsyncIterator[Gdpr]:
    db, world = world_db
    face, dsn = face_and_dsn(request, db)
    root = tmp_path / "store"
    retry = RetryPolicy(initial_backoff_s=0.01, max_backoff_s=0.02)
    if face == "sync":
        vs: Any = VoiceSessions.from_postgres(dsn, retry=retry, storage_root=root)
    else:
        vs = AsyncVoiceSessions.from_postgres(dsn, retry=retry, storage_root=root)
    try:
        yield Gdpr(vs, world, db, face, root)
    finally:
        if face == "sync":
            vs.close()
        else:
            await vs.aclose()


def sessions_of(g: Gdpr, key: str) -> int:
    return int(g.scalar("select count(*) from public.sessions where profile_id = %s", g.id(key)))


def requests_count(g: Gdpr) -> int:
    return int(g.scalar("select count(*) from public.gdpr_requests"))


# -- erasure --------------------------------------------------------------------------------


@pytest.mark.parametrize("actor", ["service", "A1", "AA"])
async def test_erasure_removes_rows_and_audio_and_completes(gdpr: Gdpr, actor: str) -> None:
    files = [
        gdpr.put_audio(gdpr.world.active_session["A1"]),
        gdpr.put_audio(gdpr.world.completed_session["A1"], ext="wav"),
    ]
    client = gdpr.vs if actor == "service" else gdpr.user(actor)
    report = await sdk(client.gdpr.delete_user_session_data(gdpr.id("A1")))
    assert isinstance(report, ErasureReport)
    assert report.counts["sessions"] == 2
    assert report.counts["profile"] == 1
    assert report.counts["account"] == 0
    assert report.already_erased is False
    assert report.stores == ["database", "storage"]
    assert report.storage_removed == 2
    assert report.pending_storage == []
    assert report.status is GDPRRequestStatus.COMPLETED
    assert not any(f.exists() for f in files)
    assert sessions_of(gdpr, "A1") == 0
    row = gdpr.scalar(
        "select status::text from public.gdpr_requests where id = %s", report.request_id
    )
    assert row == "completed"
    # The auth user stays without include_account; the other trainee is untouched.
    assert gdpr.scalar("select count(*) from auth.users where id = %s", gdpr.id("A1")) == 1
    assert sessions_of(gdpr, "A2") == 2

    # A repeat (by the service role: the subject's profile is gone) changes nothing.
    before = requests_count(gdpr)
    again = await sdk(gdpr.vs.gdpr.delete_user_session_data(gdpr.id("A1")))
    assert again.already_erased is True
    assert again.storage_removed == 0
    assert again.request_id == report.request_id
    assert requests_count(gdpr) == before


async def test_erasure_with_account_and_dry_run(gdpr: Gdpr) -> None:
    audio = gdpr.put_audio(gdpr.world.completed_session["B1"])
    before = requests_count(gdpr)
    dry = await sdk(
        gdpr.vs.gdpr.delete_user_session_data(gdpr.id("B1"), include_account=True, dry_run=True)
    )
    assert dry.dry_run is True
    assert dry.request_id is None
    assert dry.status is None
    assert dry.counts["sessions"] == 2
    assert dry.counts["account"] == 1
    assert [o.path for o in dry.pending_storage] == [
        str(audio.relative_to(gdpr.root / BUCKET)).replace("\\", "/")
    ]
    assert audio.exists()
    assert sessions_of(gdpr, "B1") == 2
    assert requests_count(gdpr) == before

    report = await sdk(gdpr.vs.gdpr.delete_user_session_data(gdpr.id("B1"), include_account=True))
    assert report.counts["account"] == 1
    assert report.status is GDPRRequestStatus.COMPLETED
    assert not audio.exists()
    assert gdpr.scalar("select count(*) from auth.users where id = %s", gdpr.id("B1")) == 0


@pytest.mark.parametrize("caller", ["MA", "A2", "B1", "AB"])
async def test_erasure_is_refused_to_others_and_changes_nothing(gdpr: Gdpr, caller: str) -> None:
    audio = gdpr.put_audio(gdpr.world.completed_session["A1"])
    before = requests_count(gdpr)
    with pytest.raises(PermissionDeniedError):
        await sdk(gdpr.user(caller).gdpr.delete_user_session_data(gdpr.id("A1")))
    assert audio.exists()
    assert sessions_of(gdpr, "A1") == 2
    assert requests_count(gdpr) == before


async def test_unknown_subject_is_not_found(gdpr: Gdpr) -> None:
    with pytest.raises(NotFoundError):
        await sdk(gdpr.vs.gdpr.delete_user_session_data(uuid.uuid4()))


async def test_input_is_validated_before_any_io(gdpr: Gdpr) -> None:
    with pytest.raises(InvalidInputError):
        await sdk(gdpr.vs.gdpr.delete_user_session_data("not-a-uuid"))
    with pytest.raises(InvalidInputError):
        await sdk(gdpr.vs.gdpr.apply_retention_policy(batch_size=0))
    with pytest.raises(InvalidInputError):
        await sdk(gdpr.vs.gdpr.list_requests(status="finished"))
    with pytest.raises(InvalidInputError):
        await sdk(
            gdpr.vs.gdpr.anonymize_session_data(
                gdpr.world.completed_session["A1"], extra_personal_keys="secret"
            )
        )


async def test_a_storage_failure_leaves_the_request_open_and_a_rerun_completes_it(
    gdpr: Gdpr,
) -> None:
    ok = gdpr.put_audio(gdpr.world.active_session["A1"])
    stuck = gdpr.put_audio(gdpr.world.completed_session["A1"])
    stuck.unlink()
    stuck.mkdir()  # a directory where the file is: it cannot be deleted as a file
    with pytest.raises(APIError) as failure:
        await sdk(gdpr.vs.gdpr.delete_user_session_data(gdpr.id("A1")))
    assert type(failure.value) is APIError  # not transient: not retried
    # The database step happened; the storage step did not finish (the other file may or may
    # not be gone, by the order of deletion): nothing is confirmed, both paths stay pending.
    assert sessions_of(gdpr, "A1") == 0
    assert stuck.exists()
    pending = gdpr.scalar(
        "select jsonb_array_length(details -> 'pending_storage') from public.gdpr_requests"
        " where kind = 'erasure' and status = 'in_progress'"
    )
    assert pending == 2

    stuck.rmdir()
    again = await sdk(gdpr.vs.gdpr.delete_user_session_data(gdpr.id("A1")))
    assert again.already_erased is True
    assert again.storage_removed == 2
    assert again.status is GDPRRequestStatus.COMPLETED
    assert again.pending_storage == []
    assert not ok.exists()
    assert (
        gdpr.scalar(
            "select count(*) from public.gdpr_requests where kind = 'erasure'"
            " and status = 'completed' and completed_at is not null"
        )
        == 1
    )


async def test_a_transient_storage_failure_is_retried(
    gdpr: Gdpr, monkeypatch: pytest.MonkeyPatch
) -> None:
    audio = gdpr.put_audio(gdpr.world.completed_session["A2"])
    backend = gdpr.vs._backend
    original = type(backend).remove_storage_objects
    calls: list[list[str]] = []

    def flaky(self: Any, bucket: str, paths: Any) -> Any:
        calls.append(list(paths))
        if len(calls) == 1:
            raise TransientError("storage is busy")
        return original(self, bucket, paths)

    monkeypatch.setattr(type(backend), "remove_storage_objects", flaky)
    report = await sdk(gdpr.vs.gdpr.delete_user_session_data(gdpr.id("A2")))
    assert len(calls) == 2
    assert report.status is GDPRRequestStatus.COMPLETED
    assert not audio.exists()


async def test_resume_pending_storage_finishes_an_interrupted_erasure(
    gdpr: Gdpr, monkeypatch: pytest.MonkeyPatch
) -> None:
    audio = gdpr.put_audio(gdpr.world.completed_session["A1"])
    backend = gdpr.vs._backend
    original = type(backend).remove_storage_objects

    def broken(self: Any, bucket: str, paths: Any) -> Any:
        raise PermissionDeniedError("storage says no")

    monkeypatch.setattr(type(backend), "remove_storage_objects", broken)
    with pytest.raises(PermissionDeniedError):
        await sdk(gdpr.vs.gdpr.delete_user_session_data(gdpr.id("A1")))
    assert audio.exists()
    monkeypatch.setattr(type(backend), "remove_storage_objects", original)
    assert await sdk(gdpr.vs.gdpr.resume_pending_storage(gdpr.id("A1"))) == 1
    assert not audio.exists()
    assert await sdk(gdpr.vs.gdpr.resume_pending_storage()) == 0
    assert (
        gdpr.scalar("select count(*) from public.gdpr_requests where status = 'in_progress'") == 0
    )


# -- anonymization --------------------------------------------------------------------------


async def test_anonymization_removes_audio_and_is_idempotent(gdpr: Gdpr) -> None:
    sid = gdpr.world.completed_session["A1"]
    audio = gdpr.put_audio(sid)
    with gdpr.db.connect() as conn:
        conn.execute(
            "update public.analysis_results set results ="
            ' \'{"score": 70, "coach": {"secret_note": "x", "ok": 1}}\' where session_id = %s',
            (sid,),
        )
    owner = gdpr.user("A1")
    report = await sdk(
        owner.gdpr.anonymize_session_data(sid, extra_personal_keys=["secret_note", 'we"ird'])
    )
    assert isinstance(report, AnonymizationReport)
    assert report.already_anonymized is False
    assert report.session_id == sid
    assert report.counts["audio"] == 1
    assert "secret_note" in report.personal_keys
    assert 'we"ird' in report.personal_keys
    assert report.storage_removed == 1
    assert report.status is GDPRRequestStatus.COMPLETED
    assert not audio.exists()
    assert gdpr.scalar("select title from public.sessions where id = %s", sid) == (
        "Anonymized session"
    )
    results = gdpr.scalar("select results from public.analysis_results where session_id = %s", sid)
    assert results == {"score": 70, "coach": {"ok": 1}}

    again = await sdk(owner.gdpr.anonymize_session_data(sid))
    assert again.already_anonymized is True
    assert again.request_id is None
    assert again.storage_removed == 0


async def test_anonymization_refusals(gdpr: Gdpr) -> None:
    sid = gdpr.world.completed_session["A1"]
    with pytest.raises(PermissionDeniedError):  # the manager sees the session
        await sdk(gdpr.user("MA").gdpr.anonymize_session_data(sid))
    for caller in ("A2", "B1"):  # who cannot see it is told it is not found
        with pytest.raises(SessionNotFound):
            await sdk(gdpr.user(caller).gdpr.anonymize_session_data(sid))
    with pytest.raises(InvalidInputError):  # still active: 23514
        await sdk(gdpr.vs.gdpr.anonymize_session_data(gdpr.world.active_session["A1"]))


# -- export ---------------------------------------------------------------------------------


async def test_export_contains_the_users_sessions(gdpr: Gdpr) -> None:
    before = requests_count(gdpr)
    document = await sdk(gdpr.user("AA").gdpr.export_user_data(gdpr.id("A1")))
    assert document["schema"] == "voicesessions.export"
    assert document["subject"]["id"] == str(gdpr.id("A1"))
    exported = {uuid.UUID(s["id"]) for s in document["sessions"]}
    assert exported == gdpr.world.sessions_of("A1")
    assert requests_count(gdpr) == before + 1
    with pytest.raises(PermissionDeniedError):
        await sdk(gdpr.user("B1").gdpr.export_user_data(gdpr.id("A1")))


# -- retention ------------------------------------------------------------------------------


async def test_retention_dry_run_then_real_run_then_nothing(gdpr: Gdpr) -> None:
    company = gdpr.world.companies["A"]
    audios = []
    for key in ("A1", "A2"):
        sid = gdpr.world.completed_session[key]
        audios.append(gdpr.put_audio(sid))
        with gdpr.db.connect() as conn:
            conn.execute(
                "update public.sessions set started_at = now() - interval '40 days',"
                " ended_at = now() - interval '40 days' + interval '10 minutes' where id = %s",
                (sid,),
            )
    with gdpr.db.connect() as conn:
        conn.execute(
            "update public.companies set audio_retention_days = 30 where id = %s", (company,)
        )
    before = requests_count(gdpr)
    dry = await sdk(gdpr.vs.gdpr.apply_retention_policy(company, dry_run=True))
    assert isinstance(dry, RetentionReport)
    assert dry.dry_run is True
    assert dry.counts["audio"] == 2
    assert len(dry.pending_storage) == 2
    assert dry.storage_removed == 0
    assert all(a.exists() for a in audios)
    assert requests_count(gdpr) == before

    report = await sdk(gdpr.user("AA").gdpr.apply_retention_policy(company, batch_size=1))
    assert report.batches >= 2
    assert report.more is False
    assert report.counts["audio"] == 2
    assert report.storage_removed == 2
    assert report.pending_storage == []
    assert [c.company_id for c in report.companies] == [company]
    assert report.companies[0].status is GDPRRequestStatus.COMPLETED
    assert len(report.request_ids) == 2
    assert not any(a.exists() for a in audios)
    assert (
        gdpr.scalar(
            "select count(*) from public.sessions where company_id = %s and audio_path is not null",
            company,
        )
        == 0
    )

    again = await sdk(gdpr.vs.gdpr.apply_retention_policy(company))
    assert sum(again.counts.values()) == 0
    assert again.request_ids == []
    with pytest.raises(PermissionDeniedError):
        await sdk(gdpr.user("AB").gdpr.apply_retention_policy(company))
    with pytest.raises(PermissionDeniedError):
        await sdk(gdpr.user("AA").gdpr.apply_retention_policy())


# -- requests -------------------------------------------------------------------------------


async def test_list_requests_overdue_and_by_status(gdpr: Gdpr) -> None:
    overdue_id = gdpr.scalar(
        "insert into public.gdpr_requests (kind, company_id, status, requested_at, due_at)"
        " values ('erasure', %s, 'pending', now() - interval '40 days',"
        " now() - interval '9 days') returning id",
        gdpr.world.companies["A"],
    )
    overdue = await sdk(gdpr.vs.gdpr.list_requests(overdue=True))
    assert [r.id for r in overdue] == [overdue_id]
    assert overdue[0].kind is GDPRRequestKind.ERASURE
    assert overdue[0].status is GDPRRequestStatus.PENDING

    everything = await sdk(gdpr.vs.gdpr.list_requests())
    assert len(everything) == requests_count(gdpr)
    pending = await sdk(gdpr.vs.gdpr.list_requests(status="pending"))
    assert overdue_id in {r.id for r in pending}
    assert all(r.status is GDPRRequestStatus.PENDING for r in pending)

    mine = await sdk(gdpr.user("AB").gdpr.list_requests(overdue=True))
    assert mine == []  # company B has none overdue
    with pytest.raises(PermissionDeniedError):
        await sdk(gdpr.user("A1").gdpr.list_requests())


# -- the local store ------------------------------------------------------------------------


async def test_local_store_refuses_escaping_paths_and_is_shared(gdpr: Gdpr) -> None:
    backend = gdpr.vs._backend
    child = gdpr.user("A1")._backend
    assert backend.storage_root == child.storage_root == gdpr.root.absolute()
    for bad in ("../outside", "/etc/passwd", "a/../../b", "", "a/./b"):
        with pytest.raises(InvalidInputError):
            await sdk(backend.remove_storage_objects(BUCKET, [bad]))
    with pytest.raises(InvalidInputError):
        await sdk(backend.remove_storage_objects("..", ["x"]))
    target = gdpr.root / BUCKET / "c" / "p" / "s.webm"
    target.parent.mkdir(parents=True)
    target.write_bytes(b"x")
    # a missing object is fine, and every path given is reported gone
    gone = await sdk(child.remove_storage_objects(BUCKET, ["c/p/s.webm", "c/p/missing.webm"]))
    assert gone == ["c/p/s.webm", "c/p/missing.webm"]
    assert not target.exists()


def test_default_storage_root_comes_from_the_environment(
    world_db: tuple[Database, World], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    db, _ = world_db
    monkeypatch.setenv("VOICESESSIONS_STORAGE_ROOT", str(tmp_path / "env-root"))
    with VoiceSessions.from_postgres(db.dsn) as vs:
        assert vs._backend.storage_root == (tmp_path / "env-root").absolute()
    monkeypatch.delenv("VOICESESSIONS_STORAGE_ROOT")
    with VoiceSessions.from_postgres(db.dsn) as vs:
        assert vs._backend.storage_root.parts[-2:] == ("voicesessions", "storage")


async def test_retention_over_every_company_reports_a_failing_company_and_goes_on(
    gdpr: Gdpr,
) -> None:
    companies = gdpr.world.companies
    old: dict[str, uuid.UUID] = {}
    with gdpr.db.connect() as conn:
        conn.execute("update public.companies set session_retention_days = 1")
        for key in ("A1", "B1"):
            row = conn.execute(
                "insert into public.sessions (profile_id, title, status, started_at)"
                " values (%s, 'old', 'completed', now() - interval '3 days') returning id",
                (gdpr.id(key),),
            ).fetchone()
            assert row is not None
            old[key] = row[0]  # type: ignore[index]
        # company B's data makes its retention fail, whatever the reason
        conn.execute(
            "create function public.refuse_b() returns trigger language plpgsql as"
            " $$ begin raise exception 'broken row' using errcode = 'XX001'; end $$"
        )
        conn.execute(
            "create trigger refuse_b before delete on public.sessions for each row"
            f" when (old.company_id = '{companies['B']}') execute function public.refuse_b()"
        )
    report = await sdk(gdpr.vs.gdpr.apply_retention_policy())
    assert [(f.company_id, f.sqlstate) for f in report.failures] == [(companies["B"], "XX001")]
    assert [c.company_id for c in report.companies] == [companies["A"]]
    assert report.counts["sessions"] == 1
    remaining = "select count(*) from public.sessions where id = %s"
    assert (gdpr.scalar(remaining, old["A1"]), gdpr.scalar(remaining, old["B1"])) == (0, 1)


@pytest.mark.parametrize("days", [0, 36501, 2**31 - 1])
async def test_retention_days_are_bounded_before_any_io(gdpr: Gdpr, days: int) -> None:
    with pytest.raises(InvalidInputError):
        await sdk(gdpr.vs.tenants.create_company("Forever", retention={"session_days": days}))


# -- a person who moves company; storage touched only once the database has authorized it ---


async def _moved_with_pending_audio(gdpr: Gdpr, monkeypatch: pytest.MonkeyPatch) -> Path:
    """B1 erased by B's admin with the audio deletion failing (B's file stays pending), then
    invited into company A by A's admin, and joined. Returns B's file."""
    audio = gdpr.put_audio(gdpr.world.completed_session["B1"])
    backend = type(gdpr.vs._backend)
    original = backend.remove_storage_objects

    def broken(self: Any, bucket: str, paths: Any) -> Any:
        raise PermissionDeniedError("storage says no")

    monkeypatch.setattr(backend, "remove_storage_objects", broken)
    with pytest.raises(PermissionDeniedError):
        await sdk(gdpr.user("AB").gdpr.delete_user_session_data(gdpr.id("B1")))
    monkeypatch.setattr(backend, "remove_storage_objects", original)
    assert audio.exists()
    invitation = await sdk(gdpr.user("AA").tenants.invite(gdpr.world.companies["A"], gdpr.id("B1")))
    joined = await sdk(gdpr.user("B1").tenants.accept_invitation(invitation.token))
    assert joined.company_id == gdpr.world.companies["A"]
    return audio


async def test_the_new_admin_never_deletes_the_old_companys_audio(
    gdpr: Gdpr, monkeypatch: pytest.MonkeyPatch
) -> None:
    audio = await _moved_with_pending_audio(gdpr, monkeypatch)
    admin = gdpr.user("AA")
    assert await sdk(admin.gdpr.resume_pending_storage(gdpr.id("B1"))) == 0
    assert await sdk(admin.gdpr.resume_pending_storage()) == 0
    report = await sdk(admin.gdpr.delete_user_session_data(gdpr.id("B1"), dry_run=True))
    assert report.pending_storage == []
    erased = await sdk(admin.gdpr.delete_user_session_data(gdpr.id("B1")))
    assert erased.storage_removed == 0
    assert audio.exists()
    assert not [
        r
        for r in await sdk(admin.gdpr.list_requests())
        if r.company_id != gdpr.world.companies["A"]
    ]
    # B's admin still finishes B's erasure.
    assert await sdk(gdpr.user("AB").gdpr.resume_pending_storage()) == 1
    assert not audio.exists()


async def test_storage_is_untouched_until_the_database_authorizes_the_caller(
    gdpr: Gdpr, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Whatever a database answer lists as pending (an older database, a bug), the SDK has
    the database authorize each request before it deletes anything: another company's
    request is PermissionDeniedError with every file still there."""
    audio = await _moved_with_pending_audio(gdpr, monkeypatch)
    own = gdpr.put_audio(gdpr.world.completed_session["A1"])
    b_request = gdpr.scalar(
        "select id from public.gdpr_requests where company_id = %s and kind = 'erasure'",
        gdpr.world.companies["B"],
    )
    b_path = str(audio.relative_to(gdpr.root / BUCKET))
    backend = type(gdpr.vs._backend)
    real_rpc = backend.rpc
    face_is_async = gdpr.face == "async"

    def with_b_entry(rows: Any) -> Any:
        return [*rows, {"request_id": str(b_request), "bucket": BUCKET, "path": b_path}]

    if face_is_async:

        async def leaky_async(self: Any, function: str, params: Any = None) -> Any:
            rows = await real_rpc(self, function, params)
            return with_b_entry(rows) if function == "gdpr_pending_storage" else rows

        monkeypatch.setattr(backend, "rpc", leaky_async)
    else:

        def leaky(self: Any, function: str, params: Any = None) -> Any:
            rows = real_rpc(self, function, params)
            return with_b_entry(rows) if function == "gdpr_pending_storage" else rows

        monkeypatch.setattr(backend, "rpc", leaky)
    with pytest.raises(PermissionDeniedError):
        await sdk(gdpr.user("AA").gdpr.resume_pending_storage(gdpr.id("B1")))
    assert audio.exists()
    assert own.exists()
