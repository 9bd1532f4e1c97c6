"""vs.imports: Vapi and Retell end-of-call webhooks stored as sessions, both faces, over the
Postgres backend and its local Storage; the recording served by a local HTTP server.

Each scenario reads back what the database holds: one session per call id, its segments and
speakers in order, the platform's analysis with the call's cost, the measured recording.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import Database
from tests.sdk.conftest import Sdk, files, sdk
from tests.support import audio as gen
from tests.support.hosted import (
    CALL,
    RecordingServer,
    body,
    recording_server,
    retell_event,
    retell_sdk_accepts,
    retell_signature,
    vapi_hmac,
    vapi_report,
)
from voicesessions import (
    PROFILE_METADATA_KEY,
    ConflictError,
    ImportResult,
    InvalidInputError,
    TransientError,
    VapiAuth,
    WebhookSignatureError,
)

API_KEY = "key_test_3f9c2a"
VAPI_SECRET = "vapi-server-secret-81b2"


@pytest.fixture(scope="module")
def wav(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    directory = tmp_path_factory.mktemp("hosted")
    tone = gen.sine(hz=330, dbfs=-14, seconds=2.0)
    return gen.write(tone, directory, "call", gen.FORMATS["wav"]).read_bytes()


@pytest.fixture
def server(wav: bytes) -> Iterator[RecordingServer]:
    with recording_server() as served:
        served.files["/rec.wav"] = (200, wav)
        served.files["/gone.wav"] = (404, b"gone")
        served.files["/broken.wav"] = (503, b"try later")
        served.files["/noise.wav"] = (200, b"not audio at all" * 64)
        yield served


def call_id() -> str:
    return f"call_{uuid.uuid4().hex}"


def sessions_of_call(db: Database, cid: str) -> list[dict[str, Any]]:
    with db.connect() as conn:
        rows = conn.execute(
            "select s.id, s.status::text, s.profile_id, s.title, s.started_at, s.ended_at,"
            " s.audio_path, s.audio_size_bytes, s.audio_quality, s.metadata"
            " from public.sessions s where s.metadata -> 'source' ->> 'call_id' = %s",
            (cid,),
        ).fetchall()
    keys = (
        "id",
        "status",
        "profile_id",
        "title",
        "started_at",
        "ended_at",
        "audio_path",
        "audio_size_bytes",
        "audio_quality",
        "metadata",
    )
    return [dict(zip(keys, r, strict=True)) for r in rows]


def segments(db: Database, sid: uuid.UUID) -> list[tuple[Any, ...]]:
    with db.connect() as conn:
        return [
            tuple(r)
            for r in conn.execute(
                "select seq, speaker, text, start_ms, end_ms, words from public.transcript_segments"
                " where session_id = %s order by seq",
                (sid,),
            ).fetchall()
        ]


def analyses(db: Database, sid: uuid.UUID) -> dict[str, tuple[Any, ...]]:
    with db.connect() as conn:
        rows = conn.execute(
            "select provider, analysis_type, results, api_cost_usd from public.analysis_results"
            " where session_id = %s",
            (sid,),
        ).fetchall()
    return {f"{r[0]}/{r[1]}": tuple(r[2:]) for r in rows}


def session_count(db: Database) -> int:
    with db.connect() as conn:
        row = conn.execute("select count(*) from public.sessions").fetchone()
    assert row is not None
    return int(row[0])  # type: ignore[call-overload]


def expected_segments() -> list[tuple[str, str, int, int]]:
    return [
        ("buyer" if role == "assistant" else "trainee", text, round(b * 1000), round(e * 1000))
        for role, text, b, e in CALL
    ]


# -- Vapi -------------------------------------------------------------------------------------


@pytest.mark.parametrize("legacy", [False, True], ids=["artifact", "legacy"])
async def test_a_vapi_report_becomes_one_complete_session(
    store: tuple[Sdk, Path], server: RecordingServer, legacy: bool
) -> None:
    client, root = store
    a1 = client.world.person("A1").id
    cid = call_id()
    report = vapi_report(cid, recording_url=server.url("/rec.wav"), legacy=legacy)
    result = await sdk(client.vs.imports.vapi(body(report), profile_id=a1))

    assert isinstance(result, ImportResult)
    assert (result.status, result.analysis, result.recording) == ("imported", True, True)
    [session] = sessions_of_call(client.db, cid)
    assert session["id"] == result.session_id
    assert session["profile_id"] == a1
    assert session["status"] == "analyzed"  # completed, then the platform's analysis
    assert session["title"] == "Vapi call with Dana (Globex buyer)"
    message = report["message"]
    assert session["started_at"].isoformat().startswith(message["startedAt"][:19])
    assert session["ended_at"].isoformat().startswith(message["endedAt"][:19])
    assert session["metadata"]["source"] == {
        "platform": "vapi",
        "call_id": cid,
        "assistant_id": "asst-1",
        "ended_reason": "customer-ended-call",
    }
    stored = [s[1:5] for s in segments(client.db, session["id"])]
    assert stored == expected_segments()  # the system prompt is no segment
    found = analyses(client.db, session["id"])
    results, cost = found["vapi/call_analysis"]
    assert cost == Decimal("0.1234")
    assert results["summary"] == message["analysis"]["summary"]
    assert results["structured_data"] == {"asked_about_budget": False, "next_step": "demo"}
    assert results["success_evaluation"] == "8"
    assert results["cost_breakdown"]["total"] == 0.1234
    assert "voicesessions/conversation_metrics" in found  # measured when it completed
    # The recording: downloaded once, stored, measured.
    assert server.hits["/rec.wav"] == 1
    assert files(root) == [session["audio_path"]]
    assert session["audio_size_bytes"] == len(server.files["/rec.wav"][1])
    assert session["audio_quality"]["container"] == "wav"
    assert session["audio_quality"]["duration_s"] == pytest.approx(2.0, abs=0.05)


async def test_the_profile_can_come_from_the_calls_metadata(
    store: tuple[Sdk, Path], server: RecordingServer
) -> None:
    client, _ = store
    b1 = client.world.person("B1").id
    cid = call_id()
    report = vapi_report(cid, metadata={PROFILE_METADATA_KEY: str(b1)})
    result = await sdk(client.vs.imports.vapi(report, metadata={"language": "en"}))
    [session] = sessions_of_call(client.db, cid)
    assert (session["profile_id"], result.recording) == (b1, False)
    assert session["metadata"]["language"] == "en"

    nobody = vapi_report(call_id())
    with pytest.raises(InvalidInputError, match=PROFILE_METADATA_KEY):
        await sdk(client.vs.imports.vapi(nobody))
    with pytest.raises(InvalidInputError, match="not a profile id"):
        await sdk(
            client.vs.imports.vapi(
                vapi_report(call_id(), metadata={PROFILE_METADATA_KEY: "someone"})
            )
        )


async def test_a_duplicate_delivery_stores_once(
    store: tuple[Sdk, Path], server: RecordingServer
) -> None:
    client, root = store
    a1 = client.world.person("A1").id
    cid = call_id()
    raw = body(vapi_report(cid, recording_url=server.url("/rec.wav")))
    first = await sdk(client.vs.imports.vapi(raw, profile_id=a1))
    again = await sdk(client.vs.imports.vapi(raw, profile_id=a1))
    assert (first.status, again.status) == ("imported", "duplicate")
    assert again.session_id == first.session_id
    assert (again.analysis, again.recording) == (True, True)
    assert len(sessions_of_call(client.db, cid)) == 1
    assert len(segments(client.db, first.session_id)) == len(CALL)
    assert server.hits["/rec.wav"] == 1  # the recording it has is not fetched again
    assert len(files(root)) == 1


async def test_racing_deliveries_store_one_session(
    store: tuple[Sdk, Path], server: RecordingServer
) -> None:
    client, root = store
    a1 = client.world.person("A1").id
    cid = call_id()
    raw = body(vapi_report(cid, recording_url=server.url("/rec.wav")))
    if client.face == "async":
        results = await asyncio.gather(
            *(client.vs.imports.vapi(raw, profile_id=a1) for _ in range(4))
        )
    else:
        with ThreadPoolExecutor(4) as pool:
            results = list(pool.map(lambda _: client.vs.imports.vapi(raw, profile_id=a1), range(4)))
    assert sorted(r.status for r in results) == ["duplicate"] * 3 + ["imported"]
    assert len({r.session_id for r in results}) == 1
    assert all(r.analysis for r in results)
    # Whoever uploaded first stored it; a delivery that found the upload under way says so.
    assert any(r.recording for r in results)
    [session] = sessions_of_call(client.db, cid)
    assert len(segments(client.db, session["id"])) == len(CALL)
    assert set(analyses(client.db, session["id"])) == {
        "voicesessions/conversation_metrics",
        "vapi/call_analysis",
    }
    assert files(root) == [session["audio_path"]]


async def test_other_vapi_messages_are_ignored(store: tuple[Sdk, Path]) -> None:
    client, _ = store
    before = session_count(client.db)
    for kind in ("status-update", "transcript", "speech-update", "conversation-update"):
        result = await sdk(client.vs.imports.vapi({"message": {"type": kind}}))
        assert (result.status, result.event, result.session_id) == ("ignored", kind, None)
    assert session_count(client.db) == before


# -- Retell -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "order",
    [("call_ended", "call_analyzed"), ("call_analyzed", "call_ended")],
    ids=["ended-first", "analyzed-first"],
)
async def test_retell_ended_and_analyzed_make_one_session(
    store: tuple[Sdk, Path], server: RecordingServer, order: tuple[str, str]
) -> None:
    client, root = store
    a2 = client.world.person("A2").id
    cid = call_id()
    url = server.url("/rec.wav")
    first = await sdk(
        client.vs.imports.retell(
            body(retell_event(order[0], cid, recording_url=url)), profile_id=a2
        )
    )
    if order[0] == "call_ended":
        [session] = sessions_of_call(client.db, cid)
        assert session["status"] == "completed"  # no analysis yet
        assert first.analysis is False
    second = await sdk(
        client.vs.imports.retell(
            body(retell_event(order[1], cid, recording_url=url)), profile_id=a2
        )
    )
    assert (first.status, second.status) == ("imported", "duplicate")
    assert first.session_id == second.session_id
    assert (second.analysis, second.recording) == (True, True)

    [session] = sessions_of_call(client.db, cid)
    assert session["status"] == "analyzed"
    assert session["title"] == "Retell call with Dana (Globex buyer)"
    stored = segments(client.db, session["id"])
    assert [s[1:5] for s in stored] == expected_segments()
    words = stored[0][5]
    assert words[0] == {"word": "Hello,", "start_ms": 400, "end_ms": 750}
    assert words[-1]["end_ms"] == 3900
    found = analyses(client.db, session["id"])
    results, cost = found["retell/call_analysis"]
    assert cost == Decimal("0.075")  # 7.5 cents
    assert results["call_summary"].startswith("The rep asked")
    assert results["call_successful"] is True
    assert results["cost_usd"] == 0.075
    assert server.hits["/rec.wav"] == 1
    assert files(root) == [session["audio_path"]]


async def test_retell_call_started_is_ignored(store: tuple[Sdk, Path]) -> None:
    client, _ = store
    before = session_count(client.db)
    result = await sdk(client.vs.imports.retell(retell_event("call_started", call_id())))
    assert (result.status, result.event) == ("ignored", "call_started")
    assert session_count(client.db) == before


# -- signatures -------------------------------------------------------------------------------


def _retell_cases(raw: bytes) -> list[tuple[str, dict[str, str], bytes]]:
    now_ms = int(time.time() * 1000)
    good = retell_signature(raw, API_KEY)
    digest = good.split(",d=")[1]
    return [
        ("missing", {}, raw),
        ("wrong key", {"x-retell-signature": retell_signature(raw, "key_other")}, raw),
        ("tampered body", {"X-Retell-Signature": good}, raw.replace(b"Dana", b"Dina")),
        (
            "stale",
            {
                "x-retell-signature": retell_signature(
                    raw, API_KEY, timestamp_ms=now_ms - 6 * 60_000
                )
            },
            raw,
        ),
        (
            "ahead",
            {
                "x-retell-signature": retell_signature(
                    raw, API_KEY, timestamp_ms=now_ms + 6 * 60_000
                )
            },
            raw,
        ),
        ("malformed", {"x-retell-signature": f"d={digest}"}, raw),
        ("uppercase digest", {"x-retell-signature": good.upper().replace("V=", "v=")}, raw),
        ("other timestamp", {"x-retell-signature": f"v={now_ms - 1},d={digest}"}, raw),
    ]


async def test_retell_signatures_agree_with_retell_sdk(store: tuple[Sdk, Path]) -> None:
    client, _ = store
    a1 = client.world.person("A1").id
    raw = body(retell_event("call_ended", call_id()))
    before = session_count(client.db)
    for name, headers, sent in _retell_cases(raw):
        signature = headers.get("x-retell-signature") or headers.get("X-Retell-Signature")
        assert not (signature and retell_sdk_accepts(sent, API_KEY, signature)), name
        with pytest.raises(WebhookSignatureError) as caught:
            await sdk(
                client.vs.imports.retell(sent, headers=headers, api_key=API_KEY, profile_id=a1)
            )
        assert caught.value.http_status == 401, name
    assert session_count(client.db) == before  # nothing stored by a refused webhook

    signature = retell_signature(raw, API_KEY)
    assert retell_sdk_accepts(raw, API_KEY, signature)
    result = await sdk(
        client.vs.imports.retell(
            raw, headers={"X-Retell-Signature": signature}, api_key=API_KEY, profile_id=a1
        )
    )
    assert result.status == "imported"
    # A signature needs the bytes as received: parsed JSON cannot be checked.
    with pytest.raises(InvalidInputError, match="raw body"):
        await sdk(
            client.vs.imports.retell(
                json.loads(raw),
                headers={"x-retell-signature": signature},
                api_key=API_KEY,
                profile_id=a1,
            )
        )


async def test_vapi_secrets_and_hmac(store: tuple[Sdk, Path]) -> None:
    client, _ = store
    a1 = client.world.person("A1").id
    raw = body(vapi_report(call_id()))
    stamp = str(int(time.time() * 1000))
    hmac_auth = VapiAuth(VAPI_SECRET, scheme="hmac")
    body_only = VapiAuth(
        VAPI_SECRET,
        scheme="hmac",
        header="x-vapi-signature",
        timestamp_header=None,
        prefix="sha256=",
    )
    b64 = VapiAuth(VAPI_SECRET, scheme="hmac", algorithm="sha512", encoding="base64")
    refused: list[tuple[str, Any, dict[str, str]]] = [
        ("no header", VAPI_SECRET, {}),
        ("wrong secret", VAPI_SECRET, {"x-vapi-secret": "guess"}),
        ("secret as prefix", VAPI_SECRET, {"x-vapi-secret": VAPI_SECRET + "x"}),
        (
            "hmac of another secret",
            hmac_auth,
            {"x-signature": vapi_hmac(raw, "other", stamp), "x-timestamp": stamp},
        ),
        (
            "hmac without its timestamp",
            hmac_auth,
            {"x-signature": vapi_hmac(raw, VAPI_SECRET, stamp)},
        ),
        (
            "hmac of another timestamp",
            hmac_auth,
            {"x-signature": vapi_hmac(raw, VAPI_SECRET, stamp), "x-timestamp": str(int(stamp) + 1)},
        ),
        (
            "stale hmac",
            hmac_auth,
            {
                "x-signature": vapi_hmac(raw, VAPI_SECRET, "1000000000000"),
                "x-timestamp": "1000000000000",
            },
        ),
        ("missing prefix", body_only, {"x-vapi-signature": vapi_hmac(raw, VAPI_SECRET, None)}),
        (
            "hex for base64",
            b64,
            {
                "x-signature": vapi_hmac(raw, VAPI_SECRET, stamp, algorithm="sha512"),
                "x-timestamp": stamp,
            },
        ),
    ]
    before = session_count(client.db)
    for name, secret, headers in refused:
        with pytest.raises(WebhookSignatureError):
            await sdk(client.vs.imports.vapi(raw, headers=headers, secret=secret, profile_id=a1))
        assert session_count(client.db) == before, name

    accepted: list[tuple[Any, dict[str, str]]] = [
        (VAPI_SECRET, {"X-Vapi-Secret": VAPI_SECRET}),
        (
            VapiAuth(VAPI_SECRET, header="Authorization", prefix="Bearer "),
            {"authorization": f"Bearer {VAPI_SECRET}"},
        ),
        (hmac_auth, {"x-signature": vapi_hmac(raw, VAPI_SECRET, stamp), "x-timestamp": stamp}),
        (body_only, {"x-vapi-signature": "sha256=" + vapi_hmac(raw, VAPI_SECRET, None)}),
        (
            b64,
            {
                "x-signature": vapi_hmac(
                    raw, VAPI_SECRET, stamp, algorithm="sha512", encoding="base64"
                ),
                "x-timestamp": stamp,
            },
        ),
    ]
    statuses = []
    for secret, headers in accepted:
        result = await sdk(
            client.vs.imports.vapi(raw, headers=headers, secret=secret, profile_id=a1)
        )
        statuses.append(result.status)
    assert statuses == ["imported"] + ["duplicate"] * 4


# -- bad input, erased calls, failed recordings ----------------------------------------------


@pytest.mark.parametrize(
    ("payload", "match"),
    [
        (b"{not json", "not JSON"),
        (b"[1, 2]", "JSON object"),
        (b'{"message": {"type": "end-of-call-report"}}', "call's id"),
        (
            b'{"message": {"type": "end-of-call-report", "call": {"id": "c"}, "artifact":'
            b' {"messages": [{"role": "user", "message": "hi"}]},'
            b' "startedAt": "2026-01-01T00:00:00Z"}}',
            "neither secondsFromStart nor time",
        ),
        (
            b'{"message": {"type": "end-of-call-report", "call": {"id": "c"},'
            b' "startedAt": "yesterday"}}',
            "ISO 8601",
        ),
        (
            b'{"message": {"type": "end-of-call-report", "call": {"id": "c"}, "cost": "free",'
            b' "startedAt": "2026-01-01T00:00:00Z"}}',
            "must be a number",
        ),
        (
            b'{"message": {"type": "end-of-call-report", "call": {"id": "c"}, "artifact":'
            b' {"messages": [{"role": "user", "message": "' + b"x" * 20001 + b'",'
            b' "secondsFromStart": 1}]}, "startedAt": "2026-01-01T00:00:00Z"}}',
            r"segments\[0\]",
        ),
    ],
    ids=["not-json", "not-object", "no-call-id", "untimed", "bad-time", "bad-cost", "long-text"],
)
async def test_bad_bodies_are_refused_with_nothing_stored(
    store: tuple[Sdk, Path], payload: bytes, match: str
) -> None:
    client, _ = store
    before = session_count(client.db)
    with pytest.raises(InvalidInputError, match=match):
        await sdk(client.vs.imports.vapi(payload, profile_id=client.world.person("A1").id))
    assert session_count(client.db) == before


async def test_an_unknown_profile_and_a_future_call_store_nothing(store: tuple[Sdk, Path]) -> None:
    client, _ = store
    before = session_count(client.db)
    with pytest.raises(ConflictError, match="does not exist"):  # 23503
        await sdk(client.vs.imports.vapi(vapi_report(call_id()), profile_id=uuid.uuid4()))
    ahead = vapi_report(call_id(), started=datetime.now(UTC) + timedelta(hours=2))
    with pytest.raises(InvalidInputError):
        await sdk(client.vs.imports.vapi(ahead, profile_id=client.world.person("A1").id))
    assert session_count(client.db) == before


async def test_an_erased_call_is_not_imported_again(store: tuple[Sdk, Path]) -> None:
    client, _ = store
    a1 = client.world.person("A1").id
    cid = call_id()
    raw = body(retell_event("call_analyzed", cid))
    first = await sdk(client.vs.imports.retell(raw, profile_id=a1))
    with client.db.connect() as conn:  # as GDPR erasure or retention would
        conn.execute("delete from public.sessions where id = %s", (first.session_id,))
    again = await sdk(client.vs.imports.retell(raw, profile_id=a1))
    assert (again.status, again.session_id) == ("erased", None)
    assert sessions_of_call(client.db, cid) == []


@pytest.mark.parametrize(
    ("path", "error", "limit"),
    [
        ("/gone.wav", InvalidInputError, None),
        ("/broken.wav", TransientError, None),
        ("/noise.wav", InvalidInputError, None),
        ("/rec.wav", InvalidInputError, 1000),
    ],
    ids=["404", "503", "not-audio", "too-large"],
)
async def test_a_recording_that_cannot_be_stored_is_added_by_a_redelivery(
    store: tuple[Sdk, Path],
    server: RecordingServer,
    path: str,
    error: type[Exception],
    limit: int | None,
) -> None:
    client, root = store
    a1 = client.world.person("A1").id
    cid = call_id()
    options: dict[str, Any] = {} if limit is None else {"max_recording_bytes": limit}
    with pytest.raises(error):
        await sdk(
            client.vs.imports.retell(
                body(retell_event("call_analyzed", cid, recording_url=server.url(path))),
                profile_id=a1,
                **options,
            )
        )
    [session] = sessions_of_call(client.db, cid)  # the call itself is stored
    assert (session["audio_path"], files(root)) == (None, [])
    again = await sdk(
        client.vs.imports.retell(
            body(retell_event("call_analyzed", cid, recording_url=server.url("/rec.wav"))),
            profile_id=a1,
        )
    )
    assert (again.status, again.recording) == ("duplicate", True)
    [session] = sessions_of_call(client.db, cid)
    assert files(root) == [session["audio_path"]]
