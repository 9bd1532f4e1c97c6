"""attach_audio / audio_url / remove_audio over PostgresBackend and its local store, both
faces, on real speech (espeak-ng) encoded by PyAV."""

from __future__ import annotations

import io
import uuid
from pathlib import Path
from typing import Any
from urllib.parse import urlparse
from urllib.request import url2pathname

import pytest

from tests.conftest import Database
from tests.sdk.conftest import Sdk, files, sdk
from tests.support import audio as gen
from voicesessions import (
    APIError,
    AudioInfo,
    ConflictError,
    InvalidInputError,
    NotFoundError,
    PermissionDeniedError,
    SessionNotFound,
)

BUCKET = "session-audio"


@pytest.fixture(scope="module")
def recordings(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    directory = tmp_path_factory.mktemp("recordings")
    speech = gen.speech(directory)
    return {name: gen.write(speech, directory, "speech", fmt) for name, fmt in gen.FORMATS.items()}


def read_url(url: str) -> bytes:
    return Path(url2pathname(urlparse(url).path)).read_bytes()


def row(db: Database, sid: uuid.UUID) -> tuple[Any, ...]:
    with db.connect() as conn:
        found = conn.execute(
            "select audio_path, audio_size_bytes, audio_quality from public.sessions where id = %s",
            (sid,),
        ).fetchone()
    assert found is not None
    return tuple(found)  # type: ignore[arg-type]


@pytest.mark.parametrize("fmt", list(gen.FORMATS))
async def test_attach_measures_stores_and_records(
    store: tuple[Sdk, Path], recordings: dict[str, Path], fmt: str
) -> None:
    client, root = store
    owner = client.user("A1")
    sid = client.world.active_session["A1"]
    source = recordings[fmt]
    info = await sdk(owner.sessions.attach_audio(sid, source))
    assert isinstance(info, AudioInfo)
    a1 = client.world.person("A1")
    ext = gen.FORMATS[fmt].ext
    assert info.path == f"{client.world.companies['A']}/{a1.id}/{sid}.{ext}"
    assert info.bucket == BUCKET
    assert info.content_type == gen.FORMATS[fmt].content_type
    assert info.size_bytes == source.stat().st_size
    assert info.quality.container == fmt
    assert files(root) == [info.path]
    assert (root / BUCKET / info.path).read_bytes() == source.read_bytes()
    path, size, quality = row(client.db, sid)
    assert (path, size) == (info.path, info.size_bytes)
    assert quality == info.quality.as_json()
    session = await sdk(owner.sessions.get(sid))
    assert session.audio_path == info.path
    assert session.audio_quality["integrated_lufs"] == info.quality.integrated_lufs


async def test_sources_as_bytes_and_file_objects(
    store: tuple[Sdk, Path], recordings: dict[str, Path]
) -> None:
    client, root = store
    data = recordings["webm"].read_bytes()
    first = await sdk(client.vs.sessions.attach_audio(client.world.active_session["A1"], data))
    handle = io.BytesIO(b"xx" + data)
    handle.read(2)  # read from the current position
    second = await sdk(
        client.vs.sessions.attach_audio(
            client.world.active_session["A2"], handle, content_type="video/webm"
        )
    )
    assert first.size_bytes == second.size_bytes == len(data)
    assert second.content_type == "video/webm"
    assert first.quality == second.quality
    assert (root / BUCKET / second.path).read_bytes() == data


async def test_live_metrics_survive_and_measured_ones_replace(
    store: tuple[Sdk, Path], recordings: dict[str, Path]
) -> None:
    client, _ = store
    sid = client.world.active_session["A1"]
    await sdk(client.vs.updates.update_audio_metrics(sid, {"latency_ms": 120, "snr_db": 1.0}))
    info = await sdk(client.vs.sessions.attach_audio(sid, recordings["wav"]))
    quality = row(client.db, sid)[2]
    assert quality["latency_ms"] == 120
    assert quality["snr_db"] == info.quality.snr_db


BAD_AUDIO = [b"not audio" * 100, b"", b"RIFF\x00\x00\x00\x00WAVE"]


@pytest.mark.parametrize("data", BAD_AUDIO)
async def test_bad_audio_uploads_and_records_nothing(store: tuple[Sdk, Path], data: bytes) -> None:
    client, root = store
    sid = client.world.active_session["A1"]
    with pytest.raises(InvalidInputError):
        await sdk(client.user("A1").sessions.attach_audio(sid, data))
    assert files(root) == []
    assert row(client.db, sid)[:2] == (None, None)


async def test_a_failed_database_write_removes_the_upload(
    store: tuple[Sdk, Path], recordings: dict[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    client, root = store
    sid = client.world.active_session["A1"]
    seen: list[list[str]] = []
    backend = client.vs._backend
    original_rpc = type(backend).rpc

    def failing(self: Any, function: str, params: Any = None) -> Any:
        if function == "record_session_audio":
            seen.append(files(root))  # the object was uploaded before the database write
            raise APIError("the database is gone", code="XX000")
        return original_rpc(self, function, params)

    monkeypatch.setattr(type(backend), "rpc", _same_face(client, failing))
    with pytest.raises(APIError, match="the database is gone"):
        await sdk(client.user("A1").sessions.attach_audio(sid, recordings["flac"]))
    assert len(seen) == 1
    assert len(seen[0]) == 1
    assert files(root) == []
    assert row(client.db, sid)[:2] == (None, None)


async def test_a_failed_database_write_puts_back_the_recording_it_replaced(
    store: tuple[Sdk, Path],
    recordings: dict[str, Path],
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    client, root = store
    sid = client.world.active_session["A1"]
    owner = client.user("A1").sessions
    await sdk(owner.attach_audio(sid, recordings["wav"]))
    (stored,) = files(root)
    before_bytes = (root / BUCKET / stored).read_bytes()
    before_row = row(client.db, sid)
    tone = gen.write(gen.sine(hz=440, dbfs=-12, seconds=1.5), tmp_path, "tone", gen.FORMATS["wav"])
    backend = client.vs._backend
    original_rpc = type(backend).rpc

    def failing(self: Any, function: str, params: Any = None) -> Any:
        if function == "record_session_audio":
            assert (root / BUCKET / stored).read_bytes() != before_bytes  # overwritten by now
            raise APIError("the database is gone", code="XX000")
        return original_rpc(self, function, params)

    monkeypatch.setattr(type(backend), "rpc", _same_face(client, failing))
    with pytest.raises(APIError, match="the database is gone"):
        await sdk(owner.attach_audio(sid, tone, replace=True))  # same path: <sid>.wav
    assert files(root) == [stored]
    assert (root / BUCKET / stored).read_bytes() == before_bytes  # the old recording is back
    assert row(client.db, sid) == before_row


async def test_a_failed_upload_records_nothing(
    store: tuple[Sdk, Path], recordings: dict[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    client, root = store
    sid = client.world.active_session["A1"]
    backend = client.vs._backend

    def failing(self: Any, *args: Any, **kwargs: Any) -> Any:
        raise PermissionDeniedError("storage says no")

    monkeypatch.setattr(type(backend), "upload_storage_object", _same_face(client, failing))
    with pytest.raises(PermissionDeniedError):
        await sdk(client.vs.sessions.attach_audio(sid, recordings["wav"]))
    assert row(client.db, sid)[:2] == (None, None)
    assert files(root) == []


def _same_face(client: Sdk, fn: Any) -> Any:
    """``fn`` as a method of the client's face (a coroutine function for the async one)."""
    if client.face == "sync":
        return fn

    async def wrapper(self: Any, *args: Any, **kwargs: Any) -> Any:
        result = fn(self, *args, **kwargs)
        return await result if hasattr(result, "__await__") else result

    return wrapper


async def test_a_second_recording_conflicts_unless_replaced(
    store: tuple[Sdk, Path], recordings: dict[str, Path]
) -> None:
    client, root = store
    sid = client.world.active_session["A1"]
    owner = client.user("A1").sessions
    first = await sdk(owner.attach_audio(sid, recordings["wav"]))
    with pytest.raises(ConflictError):
        await sdk(owner.attach_audio(sid, recordings["ogg"]))
    assert files(root) == [first.path]
    second = await sdk(owner.attach_audio(sid, recordings["ogg"], replace=True))
    assert files(root) == [second.path]  # the .wav object was deleted
    assert row(client.db, sid)[0] == second.path
    third = await sdk(owner.attach_audio(sid, recordings["ogg"], replace=True))
    assert third.path == second.path
    assert files(root) == [second.path]


async def test_only_the_owner_attaches(
    store: tuple[Sdk, Path], recordings: dict[str, Path]
) -> None:
    client, root = store
    sid = client.world.active_session["A1"]
    with pytest.raises(PermissionDeniedError):
        await sdk(client.user("MA").sessions.attach_audio(sid, recordings["wav"]))
    with pytest.raises(SessionNotFound):
        await sdk(client.user("B1").sessions.attach_audio(sid, recordings["wav"]))
    with pytest.raises(SessionNotFound):
        await sdk(client.user("A2").sessions.attach_audio(sid, recordings["wav"]))
    assert files(root) == []


async def test_audio_url_and_remove(store: tuple[Sdk, Path], recordings: dict[str, Path]) -> None:
    client, root = store
    sid = client.world.completed_session["A1"]
    info = await sdk(client.user("A1").sessions.attach_audio(sid, recordings["mp3"]))
    for who in ("A1", "MA", "AA"):
        url = await sdk(client.user(who).sessions.audio_url(sid, expires_in=60))
        assert url.startswith("file://")
        assert read_url(url) == recordings["mp3"].read_bytes()
    with pytest.raises(SessionNotFound):
        await sdk(client.user("B1").sessions.audio_url(sid))
    with pytest.raises(InvalidInputError):
        await sdk(client.user("A1").sessions.audio_url(sid, expires_in=0))
    # A manager can read it but not remove it: nothing is deleted.
    with pytest.raises(PermissionDeniedError):
        await sdk(client.user("MA").sessions.remove_audio(sid))
    assert files(root) == [info.path]
    assert await sdk(client.user("A1").sessions.remove_audio(sid)) is True
    assert files(root) == []
    path, size, quality = row(client.db, sid)
    assert (path, size) == (None, None)
    assert quality["codec"].startswith("mp3")  # the metrics of the call stay
    assert await sdk(client.user("A1").sessions.remove_audio(sid)) is False
    with pytest.raises(NotFoundError):
        await sdk(client.user("A1").sessions.audio_url(sid))


async def test_gdpr_erasure_deletes_an_attached_recording(
    store: tuple[Sdk, Path], recordings: dict[str, Path]
) -> None:
    client, root = store
    sid = client.world.completed_session["A1"]
    await sdk(client.vs.sessions.attach_audio(sid, recordings["webm"]))
    report = await sdk(client.vs.gdpr.delete_user_session_data(client.world.person("A1").id))
    assert report.storage_removed == 1
    assert files(root) == []
