"""vs.imports over the Supabase backend, both faces: the PostgREST calls an import makes
(``rpc/import_call`` with its exact arguments, ``rpc/record_analysis``, the session read),
the recording fetched from its URL and uploaded to Storage, then recorded.

respx answers every request, the recording's download included; nothing leaves the process.
"""

from __future__ import annotations

import inspect
import json
import uuid
from pathlib import Path
from typing import Any

import pytest
import respx

from tests.contract.conftest import BASE, COMPANY, NOW, SECRET, SERVICE_KEY, USER_A, Face
from tests.contract.test_storage_audio import multipart_file
from tests.support import audio as gen
from tests.support.hosted import CALL, body, retell_event
from voicesessions import AsyncVoiceSessions, VoiceSessions

SESSION = uuid.UUID("5e551011-0000-4000-8000-0000000000aa")
RECORDING = "https://recordings.test/call.wav"
PATH = f"{COMPANY}/{USER_A}/{SESSION}.wav"


async def call(result: Any) -> Any:
    return await result if inspect.isawaitable(result) else result


@pytest.fixture(scope="module")
def wav(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    tone = gen.sine(hz=300, dbfs=-15, seconds=1.0)
    return gen.write(
        tone, tmp_path_factory.mktemp("imports"), "call", gen.FORMATS["wav"]
    ).read_bytes()


def client(face: Face) -> Any:
    cls: Any = AsyncVoiceSessions if face.name == "async" else VoiceSessions
    return cls.from_supabase(BASE, SERVICE_KEY, jwt_secret=SECRET)


async def test_a_retell_call_over_supabase(api: respx.MockRouter, face: Face, wav: bytes) -> None:
    payload = retell_event("call_analyzed", "call_contract", recording_url=RECORDING)
    imported = api.post("/rest/v1/rpc/import_call").respond(
        200, json=[{"session_id": str(SESSION), "created": True}]
    )
    analysed = api.post("/rest/v1/rpc/record_analysis").respond(
        200,
        json={
            "id": str(uuid.uuid4()),
            "session_id": str(SESSION),
            "profile_id": str(USER_A),
            "company_id": str(COMPANY),
            "provider": "retell",
            "analysis_type": "call_analysis",
            "version": "1",
            "results": {},
            "confidence": None,
            "processing_time_ms": None,
            "api_cost_usd": 0.075,
            "created_at": NOW,
        },
    )
    session = {
        "id": str(SESSION),
        "profile_id": str(USER_A),
        "company_id": str(COMPANY),
        "title": "Retell call",
        "status": "analyzed",
        "started_at": NOW,
        "ended_at": NOW,
        "created_at": NOW,
        "updated_at": NOW,
        "audio_path": None,
    }
    api.get("/rest/v1/sessions").respond(200, json=[session])
    download = api.get(RECORDING).respond(200, content=wav)
    upload = api.post(f"/storage/v1/object/session-audio/{PATH}").respond(
        200, json={"Key": f"session-audio/{PATH}", "Id": str(uuid.uuid4())}
    )
    recorded = api.post("/rest/v1/rpc/record_session_audio").respond(
        200, json={"audio_path": PATH, "audio_size_bytes": len(wav), "replaced_path": None}
    )
    vs = client(face)
    try:
        result = await call(vs.imports.retell(body(payload), profile_id=USER_A))
    finally:
        await call(vs.aclose() if face.name == "async" else vs.close())

    assert (result.status, result.session_id, result.analysis, result.recording) == (
        "imported",
        SESSION,
        True,
        True,
    )
    sent = json.loads(imported.calls.last.request.content)
    assert imported.calls.last.request.headers["apikey"] == SERVICE_KEY
    assert set(sent) == {
        "platform",
        "call_id",
        "profile_id",
        "title",
        "started_at",
        "ended_at",
        "segments",
        "metadata",
    }
    assert (sent["platform"], sent["call_id"], sent["profile_id"]) == (
        "retell",
        "call_contract",
        str(USER_A),
    )
    assert sent["title"] == "Retell call with Dana (Globex buyer)"
    assert [(s["seq"], s["speaker"], s["text"]) for s in sent["segments"]] == [
        (i, "buyer" if role == "assistant" else "trainee", text)
        for i, (role, text, _, _) in enumerate(CALL)
    ]
    assert sent["metadata"] == {
        "source": {"platform": "retell", "call_id": "call_contract", "agent_id": "agent_1"}
    }
    analysis = json.loads(analysed.calls.last.request.content)
    assert (analysis["provider"], analysis["analysis_type"]) == ("retell", "call_analysis")
    assert analysis["api_cost_usd"] == "0.075"  # a Decimal, sent exactly
    assert download.call_count == 1
    assert multipart_file(upload.calls.last.request) == ("audio/wav", wav)
    assert json.loads(recorded.calls.last.request.content)["path"] == PATH


async def test_a_duplicate_with_its_recording_fetches_nothing(
    api: respx.MockRouter, face: Face, tmp_path: Path
) -> None:
    payload = retell_event("call_ended", "call_again", recording_url=RECORDING)
    api.post("/rest/v1/rpc/import_call").respond(
        200, json=[{"session_id": str(SESSION), "created": False}]
    )
    api.get("/rest/v1/analysis_results").respond(200, json=[])
    api.get("/rest/v1/sessions").respond(
        200,
        json=[
            {
                "id": str(SESSION),
                "profile_id": str(USER_A),
                "company_id": str(COMPANY),
                "title": "Retell call",
                "status": "completed",
                "started_at": NOW,
                "ended_at": NOW,
                "created_at": NOW,
                "updated_at": NOW,
                "audio_path": PATH,
            }
        ],
    )
    download = api.get(RECORDING).respond(200, content=b"")
    vs = client(face)
    try:
        result = await call(vs.imports.retell(body(payload), profile_id=USER_A))
    finally:
        await call(vs.aclose() if face.name == "async" else vs.close())
    assert (result.status, result.analysis, result.recording) == ("duplicate", False, True)
    assert download.call_count == 0
