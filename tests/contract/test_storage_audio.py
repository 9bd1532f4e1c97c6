"""The Supabase backend's Storage contract for recordings, both faces: upload, download and
signed URL requests, ``attach_audio`` over them (including removing the upload when the
database write fails), and ``voicesessions gdpr export --with-audio`` downloading through
Storage.

respx answers every request; nothing leaves the process. The recording is real speech
(espeak-ng) encoded by PyAV.
"""

from __future__ import annotations

import inspect
import json
import uuid
import zipfile
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import respx
from click.testing import CliRunner

from tests.contract.conftest import BASE, SECRET, SERVICE_KEY, USER_A, Face
from tests.support import audio as gen
from voicesessions import AsyncVoiceSessions, VoiceSessions, errors
from voicesessions.cli import cli

BUCKET = "session-audio"
COMPANY = uuid.UUID("c0c0c0c0-0000-4000-8000-0000000000c0")
SESSION = uuid.UUID("5e551011-0000-4000-8000-000000000001")
PATH = f"{COMPANY}/{USER_A}/{SESSION}.webm"
OBJECT_URL = f"{BASE}/storage/v1/object/{BUCKET}/{PATH}"
SIGN_URL = f"{BASE}/storage/v1/object/sign/{BUCKET}/{PATH}"
REMOVE_URL = f"{BASE}/storage/v1/object/{BUCKET}"


async def call(result: Any) -> Any:
    return await result if inspect.isawaitable(result) else result


@pytest.fixture(scope="module")
def recording(tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory = tmp_path_factory.mktemp("contract-audio")
    return gen.write(gen.speech(directory), directory, "speech", gen.FORMATS["webm"])


@pytest.fixture(scope="module")
def content(recording: Path) -> bytes:
    return recording.read_bytes()


@pytest.fixture
async def backend(face: Face) -> AsyncIterator[Any]:
    made = face.build(SERVICE_KEY, jwt_secret=SECRET)
    try:
        yield made
    finally:
        await face.close(made)


def multipart_file(request: httpx.Request) -> tuple[str, bytes]:
    """The content type and bytes of the ``file`` part of a multipart upload."""
    boundary = request.headers["content-type"].split("boundary=", 1)[1].encode()
    for part in request.content.split(b"--" + boundary):
        head, _, body = part.partition(b"\r\n\r\n")
        if b'name="file"' in head:
            kind = next(
                line.split(b":", 1)[1].strip().decode()
                for line in head.split(b"\r\n")
                if line.lower().startswith(b"content-type:")
            )
            return kind, body.removesuffix(b"\r\n")
    raise AssertionError("no file part in the upload")


def uploaded(request: httpx.Request) -> httpx.Response:
    return httpx.Response(200, json={"Key": f"{BUCKET}/{PATH}", "Id": str(uuid.uuid4())})


# -- the primitives -----------------------------------------------------------------------


@pytest.mark.parametrize("overwrite", [False, True])
async def test_the_upload_request_is_pinned(
    api: respx.MockRouter, backend: Any, content: bytes, overwrite: bool
) -> None:
    route = api.post(OBJECT_URL).mock(side_effect=uploaded)
    data = content
    await call(
        backend.upload_storage_object(
            BUCKET, PATH, data, content_type="audio/webm", overwrite=overwrite
        )
    )
    request = route.calls[0].request
    assert request.method == "POST"
    assert request.headers["apikey"] == SERVICE_KEY
    assert request.headers["Authorization"] == f"Bearer {SERVICE_KEY}"
    assert request.headers["x-upsert"] == ("true" if overwrite else "false")
    assert multipart_file(request) == ("audio/webm", data)


async def test_a_file_is_streamed_from_disk(
    api: respx.MockRouter, backend: Any, recording: Path, content: bytes
) -> None:
    route = api.post(OBJECT_URL).mock(side_effect=uploaded)
    with recording.open("rb") as handle:
        await call(backend.upload_storage_object(BUCKET, PATH, handle, content_type="audio/webm"))
    assert multipart_file(route.calls[0].request)[1] == content


async def test_an_existing_object_is_a_conflict(api: respx.MockRouter, backend: Any) -> None:
    api.post(OBJECT_URL).mock(
        return_value=httpx.Response(
            400,
            json={
                "statusCode": "409",
                "error": "Duplicate",
                "message": "The resource already exists",
            },
        )
    )
    with pytest.raises(errors.ConflictError):
        await call(backend.upload_storage_object(BUCKET, PATH, b"x", content_type="audio/webm"))


async def test_download(api: respx.MockRouter, backend: Any) -> None:
    route = api.get(OBJECT_URL).mock(return_value=httpx.Response(200, content=b"RIFF...."))
    assert await call(backend.download_storage_object(BUCKET, PATH)) == b"RIFF...."
    assert route.calls[0].request.headers["Authorization"] == f"Bearer {SERVICE_KEY}"
    api.get(OBJECT_URL).mock(
        return_value=httpx.Response(
            400, json={"statusCode": "404", "error": "not_found", "message": "Object not found"}
        )
    )
    with pytest.raises(errors.NotFoundError):
        await call(backend.download_storage_object(BUCKET, PATH))


async def test_the_sign_request_is_pinned(api: respx.MockRouter, backend: Any) -> None:
    route = api.post(SIGN_URL).mock(
        return_value=httpx.Response(
            200, json={"signedURL": f"/object/sign/{BUCKET}/{PATH}?token=abc"}
        )
    )
    user = backend.as_user(USER_A)
    url = await call(user.storage_object_url(BUCKET, PATH, expires_in=600))
    assert url == f"{BASE}/storage/v1/object/sign/{BUCKET}/{PATH}?token=abc"
    request = route.calls[0].request
    assert json.loads(request.content) == {"expiresIn": "600"}
    assert request.headers["Authorization"] != f"Bearer {SERVICE_KEY}"  # the user's token
    with pytest.raises(errors.InvalidInputError):
        await call(user.storage_object_url(BUCKET, PATH, expires_in=0))
    assert route.call_count == 1


# -- attach_audio over Supabase ---------------------------------------------------------------


def session_row(audio_path: str | None = None) -> dict[str, Any]:
    return {
        "id": str(SESSION),
        "profile_id": str(USER_A),
        "company_id": str(COMPANY),
        "title": "Call",
        "status": "active",
        "started_at": "2026-01-02T03:04:05+00:00",
        "created_at": "2026-01-02T03:04:05+00:00",
        "updated_at": "2026-01-02T03:04:05+00:00",
        "audio_path": audio_path,
    }


def client(face: Face) -> Any:
    cls: Any = AsyncVoiceSessions if face.name == "async" else VoiceSessions
    return cls.from_supabase(BASE, SERVICE_KEY, jwt_secret=SECRET)


async def close(face: Face, vs: Any) -> None:
    await call(vs.aclose() if face.name == "async" else vs.close())


async def test_attach_audio_uploads_then_records(
    api: respx.MockRouter, face: Face, recording: Path, content: bytes
) -> None:
    api.get(f"{BASE}/rest/v1/sessions").mock(return_value=httpx.Response(200, json=[session_row()]))
    upload = api.post(OBJECT_URL).mock(side_effect=uploaded)
    record = api.post(f"{BASE}/rest/v1/rpc/record_session_audio").mock(
        return_value=httpx.Response(
            200, json={"audio_path": PATH, "audio_size_bytes": 1, "replaced_path": None}
        )
    )
    vs = client(face)
    try:
        info = await call(vs.sessions.attach_audio(SESSION, recording))
    finally:
        await close(face, vs)
    assert info.path == PATH
    assert upload.call_count == record.call_count == 1
    assert multipart_file(upload.calls[0].request) == ("audio/webm", content)
    body = json.loads(record.calls[0].request.content)
    assert body["path"] == PATH
    assert body["size_bytes"] == len(content)
    assert body["quality"]["codec"] == "opus"
    assert body["replace"] is False


async def test_a_failed_database_write_removes_the_upload(
    api: respx.MockRouter, face: Face, recording: Path
) -> None:
    api.get(f"{BASE}/rest/v1/sessions").mock(return_value=httpx.Response(200, json=[session_row()]))
    upload = api.post(OBJECT_URL).mock(side_effect=uploaded)
    api.post(f"{BASE}/rest/v1/rpc/record_session_audio").mock(
        return_value=httpx.Response(
            409,
            json={
                "code": "23505",
                "message": "session already has a recording",
                "details": None,
                "hint": None,
            },
        )
    )
    remove = api.delete(REMOVE_URL).mock(return_value=httpx.Response(200, json=[]))
    vs = client(face)
    try:
        with pytest.raises(errors.ConflictError):
            await call(vs.sessions.attach_audio(SESSION, recording))
    finally:
        await close(face, vs)
    assert upload.call_count == 1
    assert remove.call_count == 1
    assert json.loads(remove.calls[0].request.content) == {"prefixes": [PATH]}


async def test_a_refused_upload_records_nothing(
    api: respx.MockRouter, face: Face, recording: Path
) -> None:
    api.get(f"{BASE}/rest/v1/sessions").mock(return_value=httpx.Response(200, json=[session_row()]))
    api.post(OBJECT_URL).mock(
        return_value=httpx.Response(
            400,
            json={
                "statusCode": "403",
                "error": "Unauthorized",
                "message": "new row violates row-level security policy",
            },
        )
    )
    record = api.post(f"{BASE}/rest/v1/rpc/record_session_audio")
    vs = client(face)
    try:
        with pytest.raises(errors.PermissionDeniedError):
            await call(vs.sessions.attach_audio(SESSION, recording))
    finally:
        await close(face, vs)
    assert record.call_count == 0


async def test_bad_audio_sends_nothing(api: respx.MockRouter, face: Face) -> None:
    vs = client(face)
    try:
        with pytest.raises(errors.InvalidInputError):
            await call(vs.sessions.attach_audio(SESSION, b"not audio" * 50))
    finally:
        await close(face, vs)
    assert len(api.calls) == 0


async def test_audio_url_and_remove_audio(api: respx.MockRouter, face: Face) -> None:
    api.get(f"{BASE}/rest/v1/sessions").mock(
        return_value=httpx.Response(200, json=[session_row(PATH)])
    )
    api.post(SIGN_URL).mock(
        return_value=httpx.Response(200, json={"signedURL": "/object/sign/x?token=t"})
    )
    clear = api.post(f"{BASE}/rest/v1/rpc/clear_session_audio").mock(
        return_value=httpx.Response(200, json=True)
    )
    remove = api.delete(REMOVE_URL).mock(return_value=httpx.Response(200, json=[]))
    vs = client(face)
    try:
        assert (
            await call(vs.sessions.audio_url(SESSION)) == f"{BASE}/storage/v1/object/sign/x?token=t"
        )
        assert await call(vs.sessions.remove_audio(SESSION)) is True
    finally:
        await close(face, vs)
    bodies = [json.loads(c.request.content) for c in clear.calls]
    assert bodies == [
        {"session_id": str(SESSION), "path": PATH, "check_only": True},
        {"session_id": str(SESSION), "path": PATH},
    ]
    assert json.loads(remove.calls[0].request.content) == {"prefixes": [PATH]}


# -- gdpr export --with-audio over Supabase ------------------------------------------------


def test_cli_export_with_audio_downloads_through_storage(
    api: respx.MockRouter, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    gone = f"{COMPANY}/{USER_A}/gone.wav"
    api.post(f"{BASE}/rest/v1/rpc/gdpr_export_user").mock(
        return_value=httpx.Response(
            200,
            json={
                "schema": "voicesessions.gdpr_export",
                "version": 1,
                "request_id": str(uuid.uuid4()),
                "sessions": [session_row(PATH)],
                "storage_objects": [{"bucket": BUCKET, "path": gone}],
            },
        )
    )
    download = api.get(OBJECT_URL).mock(return_value=httpx.Response(200, content=b"webm bytes"))
    api.get(f"{BASE}/storage/v1/object/{BUCKET}/{gone}").mock(
        return_value=httpx.Response(
            400, json={"statusCode": "404", "error": "not_found", "message": "Object not found"}
        )
    )
    monkeypatch.delenv("VOICESESSIONS_DSN", raising=False)
    monkeypatch.setenv("SUPABASE_URL", BASE)
    monkeypatch.setenv("SUPABASE_SERVICE_ROLE_KEY", SERVICE_KEY)
    out = tmp_path / "a.zip"
    result = CliRunner().invoke(
        cli, ["gdpr", "export", "--user", str(USER_A), "-o", str(out), "--with-audio", "--json"]
    )
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert summary["audio_files"] == [f"{BUCKET}/{PATH}"]
    assert summary["missing_audio"] == [f"{BUCKET}/{gone}"]
    assert download.calls[0].request.headers["Authorization"] == f"Bearer {SERVICE_KEY}"
    with zipfile.ZipFile(out) as archive:
        assert archive.read(f"audio/{BUCKET}/{PATH}") == b"webm bytes"
