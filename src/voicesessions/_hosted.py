"""Hosted voice platforms after the call: reading Vapi's and Retell's end-of-call webhooks and
checking their signatures. No I/O here: ``vs.imports`` (``_async/imports.py``) stores what
this module reads.

What a webhook becomes (facts checked against vapi-server-sdk 3.0.0 and retell-sdk 6.2.13):

- **Vapi** ``{"message": {"type": "end-of-call-report", ...}}``: the transcript is
  ``artifact.messages`` (older reports: ``messages``), each with ``role`` (``user`` = the
  trainee, ``bot``/``assistant`` = the AI buyer; ``system`` and tool messages are not
  speech), ``message``, ``secondsFromStart`` (seconds) and ``time``/``endTime`` (epoch ms);
  ``startedAt``/``endedAt`` (ISO 8601, on the message or its ``call``); ``analysis``
  (``summary``, ``structuredData``, ``successEvaluation``); ``cost`` (USD) with
  ``costBreakdown``/``costs``; ``artifact.recordingUrl`` (older: ``recordingUrl``). Any other
  message type is ignored.
- **Retell** ``{"event": "call_ended" | "call_analyzed", "call": {...}}``:
  ``transcript_object`` utterances (``role`` ``user`` = the trainee, ``agent`` = the AI
  buyer; others are skipped) with ``words`` timed in seconds from the call's start;
  ``start_timestamp``/``end_timestamp`` (epoch ms); ``call_analysis``; ``call_cost``
  (``combined_cost`` in **cents**); ``recording_url``. ``call_started`` is ignored.

Signatures are checked over the raw body, in constant time (:func:`hmac.compare_digest`).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import math
import re
import time
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict

from voicesessions._validation import validate_mapping
from voicesessions._values import MAX_INT4
from voicesessions.errors import InvalidInputError, WebhookSignatureError, brief
from voicesessions.models import AnalysisInput, SegmentInput, Speaker

#: The key of a call's metadata that names the voicesessions profile the call belongs to
#: (Retell: ``call.metadata``; Vapi: ``call.metadata``, ``call.assistantOverrides.metadata``
#: or ``assistant.metadata``), used when no ``profile_id`` is passed.
PROFILE_METADATA_KEY = "voicesessions_profile_id"
#: The analysis type and version the platforms' own analyses are recorded under (provider:
#: the platform's name).
ANALYSIS_TYPE = "call_analysis"
#: Retell's signature header, and how old (or how far ahead) a signature may be.
RETELL_SIGNATURE_HEADER = "x-retell-signature"
SIGNATURE_TOLERANCE_S = 300
#: Vapi's plain server secret header (the assistant's ``server.secret``).
VAPI_SECRET_HEADER = "x-vapi-secret"
#: Largest webhook body read, in bytes.
MAX_BODY_BYTES = 16 * 1024 * 1024

Payload = bytes | str | Mapping[str, Any]
Headers = Mapping[str, str]

_RETELL_SIGNATURE = re.compile(r"v=(\d{1,15}),d=([0-9a-f]{64})")


@dataclass(frozen=True)
class VapiAuth:
    """How a Vapi server credential authenticates its webhooks.

    ``scheme="token"`` (the default): the header carries the secret itself (Vapi's
    ``server.secret``, sent as ``x-vapi-secret``; a Bearer-token credential: ``header=
    "authorization"`` with ``prefix="Bearer "``). ``scheme="hmac"``: an HMAC credential
    (Vapi's ``HMACAuthenticationPlan``): ``header`` carries ``prefix`` + the HMAC
    (``algorithm``, ``encoding``) of ``{timestamp}.{body}`` when ``timestamp_header`` is set,
    else of the body alone; the key is ``secret`` (base64-decoded first with
    ``secret_is_base64``). Set these as the credential in Vapi's dashboard is set.
    """

    secret: str
    scheme: Literal["token", "hmac"] = "token"
    header: str | None = None
    prefix: str = ""
    timestamp_header: str | None = "x-timestamp"
    algorithm: Literal["sha256", "sha512", "sha1"] = "sha256"
    encoding: Literal["hex", "base64"] = "hex"
    secret_is_base64: bool = False
    tolerance_s: int = SIGNATURE_TOLERANCE_S

    def __post_init__(self) -> None:
        if not isinstance(self.secret, str) or not self.secret:
            raise InvalidInputError("the Vapi secret must be a non-empty string")
        if self.scheme not in ("token", "hmac"):
            raise InvalidInputError(f"scheme must be 'token' or 'hmac', not {brief(self.scheme)}")

    @property
    def signature_header(self) -> str:
        if self.header:
            return self.header.lower()
        return VAPI_SECRET_HEADER if self.scheme == "token" else "x-signature"


class ImportResult(BaseModel):
    """What an import did with one webhook.

    ``status``: ``imported`` (a new session), ``duplicate`` (the call was imported before:
    what it lacked, such as Retell's analysis or the recording, was added), ``erased`` (its
    session has been erased since: nothing stored), ``ignored`` (not an end-of-call event).
    ``analysis`` / ``recording``: whether the session now has the platform's analysis and
    the recording (``recording`` is False too while a concurrent delivery of the same call
    is still storing it).
    """

    model_config = ConfigDict(frozen=True)

    platform: str
    event: str
    call_id: str | None = None
    status: Literal["imported", "duplicate", "erased", "ignored"]
    session_id: uuid.UUID | None = None
    analysis: bool = False
    recording: bool = False


@dataclass(frozen=True)
class HostedCall:
    """One finished call as a platform reported it, in our terms."""

    platform: str
    event: str
    call_id: str
    started_at: datetime
    ended_at: datetime
    segments: list[SegmentInput]
    metadata: dict[str, Any]
    source: dict[str, Any]
    analysis: AnalysisInput | None = None
    recording_url: str | None = None
    title: str | None = None
    notes: list[str] = field(default_factory=list)

    def profile_id(self) -> uuid.UUID | None:
        value = self.metadata.get(PROFILE_METADATA_KEY)
        if value is None:
            return None
        try:
            return uuid.UUID(str(value))
        except ValueError:
            raise InvalidInputError(
                f"the call's metadata {PROFILE_METADATA_KEY} is not a profile id: {brief(value)}"
            ) from None


# -- bodies -----------------------------------------------------------------------------


def read_body(payload: Payload) -> tuple[bytes | None, dict[str, Any]]:
    """The raw body (None when given already parsed) and the parsed JSON object."""
    if isinstance(payload, Mapping):
        return None, dict(payload)
    if isinstance(payload, str):
        raw = payload.encode()
    elif isinstance(payload, (bytes, bytearray, memoryview)):
        raw = bytes(payload)
    else:
        raise InvalidInputError(
            f"payload must be the webhook's body (bytes or str) or its JSON object, not"
            f" {type(payload).__name__}"
        )
    if len(raw) > MAX_BODY_BYTES:
        raise InvalidInputError(f"the webhook body has {len(raw)} bytes, at most {MAX_BODY_BYTES}")
    try:
        parsed = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InvalidInputError(f"the webhook body is not JSON: {exc}") from None
    if not isinstance(parsed, dict):
        raise InvalidInputError("the webhook body must be a JSON object")
    return raw, parsed


def _header(headers: Headers | None, name: str) -> str | None:
    if headers is None:
        return None
    wanted = name.lower()
    for key, value in headers.items():
        if key.lower() == wanted:
            return value
    return None


def _need_raw(raw: bytes | None) -> bytes:
    if raw is None:
        raise InvalidInputError(
            "checking a webhook signature needs the raw body as received (bytes or str),"
            " not parsed JSON: re-serialised JSON is different bytes"
        )
    return raw


def verify_retell(
    raw: bytes | None, headers: Headers | None, api_key: str, *, now: float | None = None
) -> None:
    """Retell's ``x-retell-signature: v=<ms>,d=<hex>``: HMAC-SHA256 keyed by the API key over
    the body followed by the timestamp's digits, at most 5 minutes away from now."""
    body = _need_raw(raw)
    signature = _header(headers, RETELL_SIGNATURE_HEADER)
    if not signature:
        raise WebhookSignatureError(f"no {RETELL_SIGNATURE_HEADER} header", http_status=401)
    match = _RETELL_SIGNATURE.fullmatch(signature.strip())
    if match is None:
        raise WebhookSignatureError(
            f"{RETELL_SIGNATURE_HEADER} is not v=<ms>,d=<hex digest>", http_status=401
        )
    stamp, digest = match.group(1), match.group(2)
    current_ms = (time.time() if now is None else now) * 1000
    if abs(current_ms - int(stamp)) > SIGNATURE_TOLERANCE_S * 1000:
        raise WebhookSignatureError(
            "the Retell signature is stale (more than 5 minutes from now)", http_status=401
        )
    expected = hmac.new(api_key.encode(), body + stamp.encode(), hashlib.sha256).hexdigest()
    if not hmac.compare_digest(expected, digest):
        raise WebhookSignatureError("the Retell signature does not match", http_status=401)


def verify_vapi(
    raw: bytes | None, headers: Headers | None, auth: VapiAuth, *, now: float | None = None
) -> None:
    """The credential of ``auth`` (see :class:`VapiAuth`)."""
    body = _need_raw(raw)
    name = auth.signature_header
    sent = _header(headers, name)
    if not sent:
        raise WebhookSignatureError(f"no {name} header", http_status=401)
    if not sent.startswith(auth.prefix):
        raise WebhookSignatureError(f"{name} does not start with {auth.prefix!r}", http_status=401)
    sent = sent[len(auth.prefix) :].strip()
    if auth.scheme == "token":
        if not hmac.compare_digest(sent.encode(), auth.secret.encode()):
            raise WebhookSignatureError(f"{name} does not match the secret", http_status=401)
        return
    message = body
    if auth.timestamp_header:
        stamp = _header(headers, auth.timestamp_header)
        if not stamp or not stamp.strip().isdigit():
            raise WebhookSignatureError(f"no valid {auth.timestamp_header} header", http_status=401)
        stamp = stamp.strip()
        seconds = int(stamp) / (1000 if len(stamp) > 11 else 1)  # ms or s since the epoch
        if abs((time.time() if now is None else now) - seconds) > auth.tolerance_s:
            raise WebhookSignatureError("the Vapi signature is stale", http_status=401)
        message = stamp.encode() + b"." + body
    try:
        key = base64.b64decode(auth.secret, validate=True) if auth.secret_is_base64 else None
    except binascii.Error:
        raise InvalidInputError("the Vapi secret is not base64") from None
    mac = hmac.new(key or auth.secret.encode(), message, auth.algorithm).digest()
    expected = mac.hex() if auth.encoding == "hex" else base64.b64encode(mac).decode()
    if not hmac.compare_digest(expected.encode(), sent.encode()):
        raise WebhookSignatureError("the Vapi signature does not match", http_status=401)


# -- reading the calls ---------------------------------------------------------------------


def _object(value: Any, name: str) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise InvalidInputError(f"{name} must be a JSON object")
    return dict(value)


def _number(value: Any, name: str) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise InvalidInputError(f"{name} must be a number, not {brief(value)}")
    return float(value)


def _ms(seconds: float) -> int:
    return min(max(round(seconds * 1000), 0), MAX_INT4)


def _iso(value: Any, name: str) -> datetime | None:
    if value is None:
        return None
    if not isinstance(value, str):
        raise InvalidInputError(f"{name} must be an ISO 8601 time, not {brief(value)}")
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        raise InvalidInputError(f"{name} is not an ISO 8601 time: {brief(value)}") from None
    return parsed if parsed.tzinfo is not None else parsed.replace(tzinfo=UTC)


def _epoch_ms(value: Any, name: str) -> datetime | None:
    number = _number(value, name)
    if number is None:
        return None
    try:
        return datetime.fromtimestamp(number / 1000, UTC)
    except (OverflowError, OSError, ValueError):
        raise InvalidInputError(f"{name} is not a time in epoch milliseconds") from None


def _call_id(value: Any, name: str) -> str:
    if not isinstance(value, str) or not value.strip() or len(value) > 200:
        raise InvalidInputError(f"{name} must be the call's id (1 to 200 characters)")
    return value


def _segment(index: int, **fields: Any) -> SegmentInput:
    return validate_mapping(SegmentInput, fields, f"segments[{index}]")


def _usd(value: float | None) -> Decimal | None:
    if value is None or value < 0:
        return None
    return Decimal(str(round(value, 6)))


def _title(platform: str, agent: Any) -> str | None:
    """The session's default title: the platform and its agent's name (sessions' titles
    have at most 255 characters)."""
    if not isinstance(agent, str) or not agent.strip():
        return None
    return f"{platform} call with {agent.strip()}"[:255]


def _drop_none(values: Mapping[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in values.items() if v is not None and v != {} and v != []}


#: Vapi's message roles that are speech, and who speaks.
_VAPI_SPEAKERS = {"user": Speaker.TRAINEE, "bot": Speaker.BUYER, "assistant": Speaker.BUYER}
#: Retell's utterance roles that are speech, and who speaks.
_RETELL_SPEAKERS = {"user": Speaker.TRAINEE, "agent": Speaker.BUYER}


def vapi_call(body: Mapping[str, Any]) -> HostedCall | str:
    """The call of a Vapi end-of-call report, or the message type when it is another
    message (to be ignored)."""
    message = _object(body.get("message"), "message")
    kind = message.get("type")
    if kind != "end-of-call-report":
        return str(kind) if isinstance(kind, str) else "unknown"
    call = _object(message.get("call"), "message.call")
    artifact = _object(message.get("artifact"), "message.artifact")
    call_id = _call_id(call.get("id"), "message.call.id")

    started = _iso(message.get("startedAt") or call.get("startedAt"), "message.startedAt")
    ended_at = _iso(message.get("endedAt") or call.get("endedAt"), "message.endedAt")
    raw_messages = artifact.get("messages") or message.get("messages") or []
    if not isinstance(raw_messages, Sequence) or isinstance(raw_messages, (str, bytes)):
        raise InvalidInputError("message.artifact.messages must be a list")
    if started is None:  # the first message's clock time, else the report's
        clocks = [
            m["time"]
            for m in raw_messages
            if isinstance(m, Mapping) and _number(m.get("time"), "message time") is not None
        ]
        stamp = min(clocks) if clocks else _number(message.get("timestamp"), "message.timestamp")
        started = _epoch_ms(stamp, "message.startedAt")
        if started is None:
            raise InvalidInputError("the report has no startedAt")
    origin_ms = started.timestamp() * 1000  # for messages timed by the clock alone
    spoken: list[tuple[Speaker, str, float, float]] = []
    for index, item in enumerate(raw_messages):
        where = f"message.artifact.messages[{index}]"
        entry = _object(item, where)
        speaker = _VAPI_SPEAKERS.get(str(entry.get("role")))
        text = entry.get("message")
        if speaker is None or not isinstance(text, str) or not text.strip():
            continue
        began = _number(entry.get("time"), f"{where}.time")
        ended = _number(entry.get("endTime"), f"{where}.endTime")
        offset = _number(entry.get("secondsFromStart"), f"{where}.secondsFromStart")
        if offset is None:
            if began is None:
                raise InvalidInputError(f"{where} has neither secondsFromStart nor time")
            offset = max(began - origin_ms, 0) / 1000
        length = 0.0
        if began is not None and ended is not None:
            length = max(ended - began, 0) / 1000
        else:
            duration = _number(entry.get("duration"), f"{where}.duration")
            length = max(duration or 0, 0) / 1000
        spoken.append((speaker, text, offset, offset + max(length, 0.0)))
    segments = [
        _segment(i, seq=i, speaker=s.value, text=text, start_ms=_ms(start), end_ms=_ms(end))
        for i, (s, text, start, end) in enumerate(spoken)
    ]

    if ended_at is None:
        last = max((s.end_ms for s in segments), default=0)
        ended_at = datetime.fromtimestamp(started.timestamp() + last / 1000, UTC)

    cost = _number(message.get("cost", call.get("cost")), "message.cost")
    breakdown = message.get("costBreakdown", call.get("costBreakdown"))
    costs = message.get("costs", call.get("costs"))
    analysis_obj = _object(message.get("analysis") or call.get("analysis"), "message.analysis")
    results = _drop_none(
        {
            "summary": analysis_obj.get("summary"),
            "structured_data": analysis_obj.get("structuredData"),
            "success_evaluation": analysis_obj.get("successEvaluation"),
            "cost_usd": cost,
            "cost_breakdown": breakdown,
            "costs": costs,
            "ended_reason": message.get("endedReason"),
        }
    )
    analysis = None
    if analysis_obj or cost is not None:
        analysis = validate_mapping(
            AnalysisInput,
            {
                "provider": "vapi",
                "analysis_type": ANALYSIS_TYPE,
                "results": results,
                "api_cost_usd": _usd(cost),
            },
            "analysis",
        )

    metadata: dict[str, Any] = {}
    assistant = _object(message.get("assistant"), "message.assistant")
    overrides = _object(call.get("assistantOverrides"), "message.call.assistantOverrides")
    for holder in (assistant, overrides, call):  # the call's own metadata wins
        metadata.update(_object(holder.get("metadata"), "metadata"))
    recording = artifact.get("recordingUrl") or message.get("recordingUrl")
    recording_obj = _object(artifact.get("recording"), "message.artifact.recording")
    if not recording:
        mono = _object(recording_obj.get("mono"), "message.artifact.recording.mono")
        recording = mono.get("combinedUrl")
    name = assistant.get("name")
    return HostedCall(
        platform="vapi",
        event="end-of-call-report",
        call_id=call_id,
        started_at=started,
        ended_at=max(ended_at, started),
        segments=segments,
        metadata=metadata,
        source=_drop_none(
            {
                "platform": "vapi",
                "call_id": call_id,
                "assistant_id": call.get("assistantId"),
                "ended_reason": message.get("endedReason"),
            }
        ),
        analysis=analysis,
        recording_url=recording if isinstance(recording, str) and recording else None,
        title=_title("Vapi", name),
    )


def retell_call(body: Mapping[str, Any]) -> HostedCall | str:
    """The call of a Retell ``call_ended`` / ``call_analyzed`` webhook, or the event's name
    when it is another event (to be ignored)."""
    event = body.get("event")
    if event not in ("call_ended", "call_analyzed"):
        return str(event) if isinstance(event, str) else "unknown"
    call = _object(body.get("call"), "call")
    call_id = _call_id(call.get("call_id"), "call.call_id")
    started = _epoch_ms(call.get("start_timestamp"), "call.start_timestamp")
    if started is None:
        raise InvalidInputError("call.start_timestamp is required")
    ended_at = _epoch_ms(call.get("end_timestamp"), "call.end_timestamp")
    if ended_at is None:
        duration = _number(call.get("duration_ms"), "call.duration_ms") or 0
        ended_at = datetime.fromtimestamp(started.timestamp() + duration / 1000, UTC)

    utterances = call.get("transcript_object") or []
    if not isinstance(utterances, Sequence) or isinstance(utterances, (str, bytes)):
        raise InvalidInputError("call.transcript_object must be a list")
    segments: list[SegmentInput] = []
    previous_end = 0
    for index, item in enumerate(utterances):
        where = f"call.transcript_object[{index}]"
        entry = _object(item, where)
        speaker = _RETELL_SPEAKERS.get(str(entry.get("role")))
        text = entry.get("content")
        if speaker is None or not isinstance(text, str) or not text.strip():
            continue
        raw_words = entry.get("words") or []
        if not isinstance(raw_words, Sequence) or isinstance(raw_words, (str, bytes)):
            raise InvalidInputError(f"{where}.words must be a list")
        words: list[dict[str, Any]] = []
        for w_index, w in enumerate(raw_words):
            word = _object(w, f"{where}.words[{w_index}]")
            start = _number(word.get("start"), f"{where}.words[{w_index}].start")
            end = _number(word.get("end"), f"{where}.words[{w_index}].end")
            if start is None or end is None or not isinstance(word.get("word"), str):
                continue
            words.append(
                {"word": word["word"], "start_ms": _ms(start), "end_ms": max(_ms(end), _ms(start))}
            )
        start_ms = words[0]["start_ms"] if words else previous_end
        end_ms = max(max((w["end_ms"] for w in words), default=start_ms), start_ms)
        previous_end = end_ms
        seq = len(segments)
        segments.append(
            _segment(
                seq,
                seq=seq,
                speaker=speaker.value,
                text=text,
                start_ms=start_ms,
                end_ms=end_ms,
                words=words or None,
            )
        )

    cost = _object(call.get("call_cost"), "call.call_cost")
    cents = _number(cost.get("combined_cost"), "call.call_cost.combined_cost")
    cost_usd = None if cents is None else cents / 100
    analysis_obj = _object(call.get("call_analysis"), "call.call_analysis")
    analysis = None
    if analysis_obj:
        results = _drop_none(
            {
                **analysis_obj,
                "cost_usd": cost_usd,
                "product_costs": cost.get("product_costs"),
                "disconnection_reason": call.get("disconnection_reason"),
            }
        )
        analysis = validate_mapping(
            AnalysisInput,
            {
                "provider": "retell",
                "analysis_type": ANALYSIS_TYPE,
                "results": results,
                "api_cost_usd": _usd(cost_usd),
            },
            "analysis",
        )
    recording = call.get("recording_url")
    name = call.get("agent_name")
    return HostedCall(
        platform="retell",
        event=str(event),
        call_id=call_id,
        started_at=started,
        ended_at=max(ended_at, started),
        segments=segments,
        metadata=_object(call.get("metadata"), "call.metadata"),
        source=_drop_none(
            {"platform": "retell", "call_id": call_id, "agent_id": call.get("agent_id")}
        ),
        analysis=analysis,
        recording_url=recording if isinstance(recording, str) and recording else None,
        title=_title("Retell", name),
    )
