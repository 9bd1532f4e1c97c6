"""What a live event may carry, checked before any I/O, so that a write is never followed by
a broadcast the database refuses (the limits are the database's: the hardening_live
migration, ``private.session_event_problem``), and how a transcript chunk is cut into events
small enough for every transport."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from voicesessions.errors import InvalidInputError

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
