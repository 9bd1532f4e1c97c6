"""Webhook bodies of hosted voice platforms, their signatures, and a recording server.

The bodies follow the platforms' published examples and are checked against their SDKs'
types (``vapi-server-sdk``, ``retell-sdk``): :func:`vapi_report` and :func:`retell_event`
parse what they build with those types, so a body the SDKs would not read fails here first.
Times are recent (the database refuses sessions that start in the future, and a call's end
must not lie past the server's clock).

:class:`RecordingServer` serves files over HTTP on 127.0.0.1 (no network) and counts the
requests each path received.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import threading
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from retell.lib.webhook_auth import symmetric as retell_webhooks
from retell.types import PhoneCallResponse
from vapi.types import ServerMessageEndOfCallReport

#: One practice call: (role on the platform, text, start s, end s).
CALL: tuple[tuple[str, str, float, float], ...] = (
    ("assistant", "Hello, this is Dana from Globex. You called about invoicing?", 0.4, 3.9),
    ("user", "Yes, thanks for taking the call. How do you handle invoices today?", 4.5, 8.2),
    ("assistant", "Mostly by hand. It eats two days every month.", 8.9, 11.6),
    ("user", "What would it mean for your team to get those two days back?", 12.3, 15.8),
)


def call_times(seconds: float = 20.0) -> tuple[datetime, datetime]:
    """A call that started a minute ago and lasted ``seconds``."""
    start = datetime.now(UTC).replace(microsecond=0) - timedelta(minutes=1)
    return start, start + timedelta(seconds=seconds)


def _iso(when: datetime) -> str:
    return when.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def vapi_report(
    call_id: str,
    *,
    recording_url: str | None = None,
    metadata: dict[str, Any] | None = None,
    legacy: bool = False,
    started: datetime | None = None,
) -> dict[str, Any]:
    """A Vapi ``end-of-call-report`` server message (``legacy``: the older shape, with the
    messages and the recording URL on the message instead of in ``artifact``)."""
    start, end = call_times() if started is None else (started, started + timedelta(seconds=20))
    epoch_ms = start.timestamp() * 1000
    messages: list[dict[str, Any]] = [
        {
            "role": "system",
            "message": "You are Dana, a buyer at Globex.",
            "time": epoch_ms,
            "secondsFromStart": 0,
        },
    ]
    for role, text, begin, finish in CALL:
        messages.append(
            {
                "role": "bot" if role == "assistant" else "user",
                "message": text,
                "time": epoch_ms + begin * 1000,
                "endTime": epoch_ms + finish * 1000,
                "secondsFromStart": begin,
                "duration": (finish - begin) * 1000,
            }
        )
    artifact: dict[str, Any] = {"messages": [] if legacy else messages, "transcript": "..."}
    message: dict[str, Any] = {
        "type": "end-of-call-report",
        "endedReason": "customer-ended-call",
        "timestamp": end.timestamp() * 1000,
        "startedAt": _iso(start),
        "endedAt": _iso(end),
        "cost": 0.1234,
        "costBreakdown": {
            "transport": 0.01,
            "stt": 0.02,
            "llm": 0.05,
            "tts": 0.04,
            "vapi": 0.0034,
            "total": 0.1234,
        },
        "call": {
            "id": call_id,
            "orgId": "org-1",
            "type": "webCall",
            "assistantId": "asst-1",
            "createdAt": _iso(start),
            "updatedAt": _iso(end),
            "startedAt": _iso(start),
            "endedAt": _iso(end),
            **({"metadata": metadata} if metadata else {}),
        },
        "assistant": {"name": "Dana (Globex buyer)"},
        "analysis": {
            "summary": "The rep asked open questions about invoicing.",
            "structuredData": {"asked_about_budget": False, "next_step": "demo"},
            "successEvaluation": "8",
        },
        "artifact": artifact,
    }
    if legacy:
        message["messages"] = messages
        if recording_url:
            message["recordingUrl"] = recording_url
    elif recording_url:
        artifact["recordingUrl"] = recording_url
    parsed = ServerMessageEndOfCallReport.model_validate(message)  # the SDK reads it
    assert parsed.type == "end-of-call-report"
    assert parsed.analysis.summary == message["analysis"]["summary"]
    if not legacy:
        assert parsed.artifact.recording_url == recording_url
        assert len(parsed.artifact.messages or []) == len(messages)
    return {"message": message}


def retell_event(
    event: str,
    call_id: str,
    *,
    recording_url: str | None = None,
    metadata: dict[str, Any] | None = None,
    analyzed: bool | None = None,
) -> dict[str, Any]:
    """A Retell webhook (``call_ended``, ``call_analyzed``, ``call_started``) of one phone
    call; ``call_analysis`` only with ``call_analyzed`` (or ``analyzed=True``)."""
    start, end = call_times()
    transcript = []
    for role, text, begin, finish in CALL:
        words = text.split()
        step = (finish - begin) / len(words)
        transcript.append(
            {
                "role": "agent" if role == "assistant" else "user",
                "content": text,
                "words": [
                    {
                        "word": w,
                        "start": round(begin + i * step, 3),
                        "end": round(begin + (i + 1) * step, 3),
                    }
                    for i, w in enumerate(words)
                ],
            }
        )
    call: dict[str, Any] = {
        "call_type": "phone_call",
        "call_id": call_id,
        "agent_id": "agent_1",
        "agent_version": 1,
        "agent_name": "Dana (Globex buyer)",
        "call_status": "ended",
        "direction": "outbound",
        "from_number": "+14155550100",
        "to_number": "+14155550101",
        "start_timestamp": int(start.timestamp() * 1000),
        "end_timestamp": int(end.timestamp() * 1000),
        "duration_ms": int((end - start).total_seconds() * 1000),
        "disconnection_reason": "user_hangup",
        "transcript": "\n".join(f"{u['role']}: {u['content']}" for u in transcript),
        "transcript_object": transcript,
        "call_cost": {
            "combined_cost": 7.5,
            "product_costs": [
                {"product": "retell_platform", "unit_price": 0.1, "cost": 2.0},
                {"product": "elevenlabs_tts", "unit_price": 0.2, "cost": 5.5},
            ],
            "total_duration_seconds": 20,
            "total_duration_unit_price": 0.375,
        },
        "metadata": metadata or {},
    }
    if recording_url:
        call["recording_url"] = recording_url
    if analyzed if analyzed is not None else event == "call_analyzed":
        call["call_analysis"] = {
            "call_summary": "The rep asked open questions about invoicing.",
            "call_successful": True,
            "user_sentiment": "Positive",
            "in_voicemail": False,
            "custom_analysis_data": {"next_step": "demo"},
        }
    parsed = PhoneCallResponse.model_validate(call)  # the SDK reads it
    assert parsed.call_id == call_id
    assert len(parsed.transcript_object or []) == len(CALL)
    return {"event": event, "call": call}


def body(payload: dict[str, Any]) -> bytes:
    """A webhook body as the platform sends it (compact JSON, UTF-8)."""
    return json.dumps(payload, separators=(",", ":"), ensure_ascii=False).encode()


def retell_signature(raw: bytes, api_key: str, *, timestamp_ms: int | None = None) -> str:
    """``x-retell-signature`` as retell-sdk signs it."""
    signed: str = retell_webhooks["sign"](raw.decode(), api_key, timestamp_ms)
    return signed


def retell_sdk_accepts(raw: bytes, api_key: str, signature: str) -> bool:
    """retell-sdk's own verdict on a signature."""
    return bool(retell_webhooks["verify"](raw.decode(), api_key, signature))


def vapi_hmac(
    raw: bytes,
    secret: str,
    timestamp: str | None,
    *,
    algorithm: str = "sha256",
    encoding: str = "hex",
) -> str:
    """An HMAC signature as Vapi's HMAC credential computes it by default
    (``{timestamp}.{body}``, or the body alone without a timestamp)."""
    message = raw if timestamp is None else f"{timestamp}.".encode() + raw
    mac = hmac.new(secret.encode(), message, getattr(hashlib, algorithm)).digest()
    return mac.hex() if encoding == "hex" else base64.b64encode(mac).decode()


@dataclass
class RecordingServer:
    """Files served over HTTP on 127.0.0.1: ``files[path] = (status, body)``."""

    files: dict[str, tuple[int, bytes]] = field(default_factory=dict)
    hits: Counter[str] = field(default_factory=Counter)
    port: int = 0

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"


@contextmanager
def recording_server() -> Iterator[RecordingServer]:
    """A :class:`RecordingServer` running in a thread for the ``with`` block."""
    served = RecordingServer()

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            served.hits[self.path] += 1
            status, content = served.files.get(self.path, (404, b"not found"))
            self.send_response(status)
            self.send_header("Content-Type", "audio/wav" if status == 200 else "text/plain")
            self.send_header("Content-Length", str(len(content)))
            self.end_headers()
            self.wfile.write(content)

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    served.port = server.server_address[1]
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield served
    finally:
        server.shutdown()
        server.server_close()
        thread.join()
