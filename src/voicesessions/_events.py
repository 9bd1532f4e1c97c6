"""Live events on the wire, for both faces and both backends.

Sending: what a live event may carry, checked before any I/O, so that a write is never
followed by a broadcast the database refuses (the limits are the database's: the
hardening_live migration, ``private.session_event_problem``), and how a transcript chunk is
cut into events small enough for every transport.

Receiving over PostgreSQL: :class:`EventVerifier` keeps the notifications the database
signed for one session (``vs1:<session id>:<hex HMAC-SHA-256>:<JSON body>``)."""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import uuid
from collections.abc import Mapping
from typing import Any

from voicesessions.errors import InvalidInputError

logger = logging.getLogger("voicesessions")

#: The NOTIFY channel of ``public.broadcast_session_event``.
EVENTS_CHANNEL = "vs_session_events"
#: The version tag that starts every signed notification: ``vs1:<session id>:<hmac>:<body>``.
NOTIFY_VERSION = "vs1"

#: Deepest nesting of objects and arrays in a payload, the payload itself included.
MAX_EVENT_DEPTH = 32
#: Largest payload, in bytes of its JSON text.
MAX_EVENT_BYTES = 1_048_576
#: Size a transcript event is kept under when a chunk is split into several events: below
#: Supabase Realtime's smallest message limit (256 KB on the Free plan).
TRANSCRIPT_EVENT_BYTES = 200_000


def too_deep(value: Any) -> bool:
    """Whether ``value`` nests objects/arrays more than :data:`MAX_EVENT_DEPTH` levels
    (iteratively: any depth, even a cycle, is answered without recursion)."""
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        item, level = stack.pop()
        if isinstance(item, Mapping):
            children: Any = item.values()
        elif isinstance(item, list | tuple):
            children = item
        else:
            continue
        if level > MAX_EVENT_DEPTH:
            return True
        stack.extend((child, level + 1) for child in children)
    return False


def json_bytes(value: Any) -> int:
    """Size of ``value`` as PostgreSQL prints a jsonb (", " and ": " separators, UTF-8),
    near enough for the limits (numbers may print slightly differently). Call after
    :func:`too_deep`."""
    text = json.dumps(value, ensure_ascii=False, separators=(", ", ": "), default=str)
    return len(text.encode("utf-8", "surrogatepass"))


def check_event_payload(payload: Mapping[str, Any], what: str) -> None:
    """InvalidInputError, before any I/O, if the database would refuse to broadcast
    ``payload`` (``what`` names it in the message)."""
    if too_deep(payload):
        raise InvalidInputError(
            f"{what} is nested more than {MAX_EVENT_DEPTH} levels deep"
            f" (at most {MAX_EVENT_DEPTH} levels can be broadcast)"
        )
    size = json_bytes(payload)
    if size > MAX_EVENT_BYTES:
        raise InvalidInputError(
            f"{what} has {size} bytes as JSON, at most {MAX_EVENT_BYTES} can be broadcast"
        )


def transcript_events(
    finals: list[dict[str, Any]], interims: list[dict[str, Any]]
) -> list[dict[str, list[dict[str, Any]]]]:
    """The ``transcript`` event payloads ``{"final": [...], "interim": [...]}`` of one chunk:
    one event unless it would exceed :data:`TRANSCRIPT_EVENT_BYTES`, else consecutive
    segments in order, each event as large as fits. InvalidInputError (before any I/O) if
    one segment alone cannot be broadcast."""
    tagged = [("final", s) for s in finals] + [("interim", s) for s in interims]
    events: list[dict[str, list[dict[str, Any]]]] = []
    current: dict[str, list[dict[str, Any]]] = {"final": [], "interim": []}
    size = json_bytes(current)
    for index, (kind, segment) in enumerate(tagged):
        what = f"segments[{index}]"
        if too_deep({kind: [segment]}):
            raise InvalidInputError(
                f"{what} is nested more than {MAX_EVENT_DEPTH} levels deep in its"
                f" transcript event (at most {MAX_EVENT_DEPTH} levels can be broadcast)"
            )
        added = json_bytes(segment) + 2
        if added > MAX_EVENT_BYTES - 64:
            raise InvalidInputError(
                f"{what} has {added} bytes as JSON, at most {MAX_EVENT_BYTES - 64} can be"
                " broadcast in a transcript event"
            )
        if size + added > TRANSCRIPT_EVENT_BYTES and (current["final"] or current["interim"]):
            events.append(current)
            current = {"final": [], "interim": []}
            size = json_bytes(current)
        current[kind].append(segment)
        size += added
    if current["final"] or current["interim"] or not events:
        events.append(current)
    return events


#: How much older than the feed, or than the newest event it received, an event may be (a
#: transaction may commit a while after it broadcast), in milliseconds.
REPLAY_WINDOW_MS = 600_000
#: How many event ids a feed remembers to drop replayed notifications.
_SEEN_IDS = 4096


class EventVerifier:
    """Keeps the notifications of one session that the database signed: the session id is
    matched on a fixed-length prefix and the HMAC checked before anything is decoded, so
    another session's payload (however hostile) costs a string comparison, and a forged
    one an HMAC. What passes is decoded defensively: no notification can end the feed.

    A genuine notification sent again by someone who saw it (NOTIFY is heard by every
    listener) is dropped: by its id among the last :data:`_SEEN_IDS`, and by its send time
    when it is more than :data:`REPLAY_WINDOW_MS` older than the feed or than the newest
    event received (both on the database's clock)."""

    def __init__(self, key: bytes, session_id: uuid.UUID, since_ms: int) -> None:
        """``since_ms``: the database's clock (epoch milliseconds) when listening started."""
        self.session_id = str(session_id)
        self._newest_ms = since_ms
        self._prefix = f"{NOTIFY_VERSION}:{self.session_id}:"
        self._mac = hmac.new(key, digestmod=hashlib.sha256)
        self._seen: dict[str, None] = {}
        #: Notifications with this session's prefix that were dropped.
        self.dropped = 0

    def event(self, payload: str) -> dict[str, Any] | None:
        """The event a notification carries, or None if it is not a genuine event of this
        session (another session's, forged, replayed or malformed). Never raises."""
        try:
            return self._event(payload)
        except Exception as exc:  # a bug here must not end the feed either
            return self._dropped(f"unreadable ({type(exc).__name__})")

    def _event(self, payload: str) -> dict[str, Any] | None:
        prefix = self._prefix
        if not payload.startswith(prefix):
            return None  # another session's, or not ours at all: not even decoded
        start = len(prefix)
        signature = payload[start : start + 64]
        body = payload[start + 65 :]
        if payload[start + 64 : start + 65] != ":":
            return self._dropped("malformed")
        mac = self._mac.copy()
        mac.update((prefix + body).encode("utf-8", "surrogatepass"))
        expected = mac.hexdigest().encode()
        if not hmac.compare_digest(expected, signature.encode("utf-8", "surrogatepass")):
            return self._dropped("not signed by the database")
        try:
            event = json.loads(body)
        except (ValueError, RecursionError, MemoryError):
            return self._dropped("undecodable")
        if (
            not isinstance(event, dict)
            or event.get("session_id") != self.session_id
            or not isinstance(event.get("event"), str)
            or not isinstance(event.get("id"), str)
        ):
            return self._dropped("malformed")
        sent_ms = event.get("at_ms")
        if not isinstance(sent_ms, int) or isinstance(sent_ms, bool):
            return self._dropped("malformed")
        if event["id"] in self._seen or sent_ms < self._newest_ms - REPLAY_WINDOW_MS:
            return self._dropped("replayed")
        self._newest_ms = max(self._newest_ms, sent_ms)
        self._seen[event["id"]] = None
        if len(self._seen) > _SEEN_IDS:
            del self._seen[next(iter(self._seen))]
        return event

    def _dropped(self, why: str) -> dict[str, Any] | None:
        """Log a dropped notification: the first few, then one in a thousand (a flood of
        forgeries must not flood the log)."""
        self.dropped += 1
        if self.dropped <= 10 or self.dropped % 1000 == 0:
            logger.warning(
                "dropped notification #%d for session %s on %s: %s",
                self.dropped,
                self.session_id,
                EVENTS_CHANNEL,
                why,
            )
        return None
