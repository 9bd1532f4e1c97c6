"""voicesessions.webhooks: the ASGI app, through httpx's ASGITransport, over a real
PostgreSQL and a local Storage folder, recordings from a local HTTP server."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import Database
from tests.sdk.conftest import files
from tests.support import audio as gen
from tests.support.hosted import (
    RecordingServer,
    body,
    recording_server,
    retell_event,
    retell_signature,
    vapi_report,
)
from tests.support.world import World
from voicesessions import AsyncVoiceSessions, ConfigurationError
from voicesessions.webhooks import create_app

API_KEY = "key_webhooks_7d1e"
SECRET = "vapi-secret-5c0a"


@pytest.fixture(scope="module")
def wav(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    tone = gen.sine(hz=440, dbfs=-12, seconds=1.0)
    return gen.write(
        tone, tmp_path_factory.mktemp("webhooks"), "call", gen.FORMATS["wav"]
    ).read_bytes()


@pytest.fixture
def server(wav: bytes) -> Iterator[RecordingServer]:
    with recording_server() as served:
        served.files["/rec.wav"] = (200, wav)
        yield served


@pytest.fixture
async def vs(world_db: tuple[Database, World], tmp_path: Path) -> AsyncIterator[AsyncVoiceSessions]:
    client = AsyncVoiceSessions.from_postgres(world_db[0].dsn, storage_root=tmp_path / "store")
    try:
        yield client
    finally:
        await client.aclose()


def http(app: Any) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://app")


def count(db: Database, table: str = "sessions") -> int:
    with db.connect() as conn:
        row = conn.execute(f"select count(*) from public.{table}").fetchone()
    assert row is not None
    return int(row[0])  # type: ignore[call-overload]


async def test_both_webhooks_are_stored_once(
    vs: AsyncVoiceSessions,
    world_db: tuple[Database, World],
    server: RecordingServer,
    tmp_path: Path,
) -> None:
    db, world = world_db
    a1 = world.person("A1").id
    app = create_app(vs, vapi_secret=SECRET, retell_api_key=API_KEY, profile_id=a1)
    vapi_raw = body(vapi_report("vapi-call-1", recording_url=server.url("/rec.wav")))
    retell_raw = body(retell_event("call_analyzed", "retell-call-1"))
    before = count(db)
    async with http(app) as client:
        for _ in range(2):
            answer = await client.post("/vapi", content=vapi_raw, headers={"x-vapi-secret": SECRET})
            assert answer.status_code == 200, answer.text
        assert answer.json()["status"] == "duplicate"
        assert answer.json()["recording"] is True
        first = await client.post(
            "/retell",
            content=retell_raw,
            headers={"x-retell-signature": retell_signature(retell_raw, API_KEY)},
        )
        assert (first.status_code, first.json()["status"]) == (200, "imported")
        assert first.json()["analysis"] is True
    assert count(db) == before + 2
    assert server.hits["/rec.wav"] == 1
    assert len(files(tmp_path / "store")) == 1


@pytest.mark.parametrize(
    ("path", "headers", "content", "status"),
    [
        ("/vapi", {}, None, 401),
        ("/vapi", {"x-vapi-secret": "wrong"}, None, 401),
        ("/retell", {"x-retell-signature": "v=1,d=" + "0" * 64}, None, 401),
        ("/vapi", {"x-vapi-secret": SECRET}, b"{oops", 422),
        ("/vapi", {"x-vapi-secret": SECRET}, b'{"message": {"type": "end-of-call-report"}}', 422),
        ("/retell", {"x-retell-signature": "sign"}, b'{"event": "call_ended", "call": {}}', 422),
        ("/vapi", {"x-vapi-secret": SECRET}, b'{"message": {"type": "status-update"}}', 200),
    ],
    ids=[
        "vapi-unsigned",
        "vapi-wrong",
        "retell-wrong",
        "not-json",
        "no-call",
        "retell-no-call",
        "ignored",
    ],
)
async def test_refusals_store_nothing(
    vs: AsyncVoiceSessions,
    world_db: tuple[Database, World],
    path: str,
    headers: dict[str, str],
    content: bytes | None,
    status: int,
) -> None:
    db, world = world_db
    app = create_app(
        vs, vapi_secret=SECRET, retell_api_key=API_KEY, profile_id=world.person("A1").id
    )
    raw = (
        content
        if content is not None
        else body(
            vapi_report("c-refused") if path == "/vapi" else retell_event("call_ended", "c-refused")
        )
    )
    if headers.get("x-retell-signature") == "sign":
        headers = {"x-retell-signature": retell_signature(raw, API_KEY)}
    before = (count(db), count(db, "transcript_segments"))
    async with http(app) as client:
        answer = await client.post(path, content=raw, headers=headers)
        wrong_method = await client.get(path)
    assert answer.status_code == status, answer.text
    assert wrong_method.status_code == 405
    assert (count(db), count(db, "transcript_segments")) == before


async def test_routes_without_a_secret_are_closed(
    vs: AsyncVoiceSessions, world_db: tuple[Database, World], monkeypatch: pytest.MonkeyPatch
) -> None:
    db, world = world_db
    for name in ("VAPI_WEBHOOK_SECRET", "RETELL_API_KEY", "VOICESESSIONS_WEBHOOK_PROFILE_ID"):
        monkeypatch.delenv(name, raising=False)
    with pytest.raises(ConfigurationError, match="unsigned"):
        create_app(vs)
    app = create_app(vs, retell_api_key=API_KEY)
    async with http(app) as client:
        answer = await client.post("/vapi", content=body(vapi_report("c-closed")))
    assert answer.status_code == 404
    # From the environment, with the profile of every call.
    monkeypatch.setenv("VAPI_WEBHOOK_SECRET", SECRET)
    monkeypatch.setenv("VOICESESSIONS_WEBHOOK_PROFILE_ID", str(world.person("B1").id))
    before = count(db)
    async with http(create_app(vs)) as client:
        answer = await client.post(
            "/vapi", content=body(vapi_report("c-env")), headers={"x-vapi-secret": SECRET}
        )
    assert answer.status_code == 200, answer.text
    assert count(db) == before + 1


async def test_a_conflicting_redelivery_is_409_and_an_oversized_body_413(
    vs: AsyncVoiceSessions, world_db: tuple[Database, World]
) -> None:
    db, world = world_db
    app = create_app(vs, allow_unsigned=True, profile_id=world.person("A1").id)
    first = retell_event("call_analyzed", "c-conflict")
    changed = retell_event("call_analyzed", "c-conflict")
    changed["call"]["call_analysis"]["call_summary"] = "Another summary."
    async with http(app) as client:
        assert (await client.post("/retell", content=body(first))).status_code == 200
        assert (await client.post("/retell", content=body(changed))).status_code == 409
        huge = await client.post("/retell", content=b" " * (16 * 1024 * 1024 + 1))
    assert huge.status_code == 413
    with db.connect() as conn:
        summaries = conn.execute(
            "select results ->> 'call_summary' from public.analysis_results"
            " where provider = 'retell'"
        ).fetchall()
    assert summaries == [(first["call"]["call_analysis"]["call_summary"],)]
