"""Helpers for tests of live reading on either face: enter an event feed with ``async with``
or ``with``, take its next event, wait for a condition without blocking the event loop."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import inspect
import json
from collections.abc import AsyncIterator, Callable
from typing import Any

import psycopg

from voicesessions import SessionEvent


@contextlib.asynccontextmanager
async def entered(manager: Any) -> AsyncIterator[Any]:
    """``async with`` or ``with``, whichever face ``manager`` belongs to."""
    if hasattr(manager, "__aenter__"):
        async with manager as value:
            yield value
    else:
        with manager as value:
            yield value


async def next_event(events: Any, within: float = 15) -> SessionEvent:
    """The next event of a feed of either face; fails the test if none came in time."""
    event = events.get(timeout=within)
    if inspect.isawaitable(event):
        event = await event
    assert event is not None, f"no event within {within} s"
    assert isinstance(event, SessionEvent)
    return event


async def eventually(check: Callable[[], bool], within: float = 15) -> None:
    """Wait until ``check()`` is true, polling; fails the test after ``within`` seconds."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    while not check():
        assert loop.time() < deadline, "condition not met in time"
        await asyncio.sleep(0.01)


# -- signed notifications (the Postgres transport) ---------------------------------------------

#: Prefix and signature before a notification's JSON body: "vs1:" + uuid + ":" + 64 hex + ":".
NOTIFY_HEADER_BYTES = 4 + 36 + 1 + 64 + 1


def events_key(source: str | psycopg.Connection[Any]) -> bytes:
    """The key the database signs its event notifications with, read as the owner through a
    DSN or an open (autocommit) connection of the owner."""
    query = "select value from private.secrets where name = 'session_events_key'"
    if isinstance(source, str):
        with psycopg.connect(source, autocommit=True) as conn:
            row = conn.execute(query).fetchone()
    else:
        row = source.execute(query).fetchone()
    assert row is not None
    return bytes.fromhex(str(row[0]))


def sign(key: bytes, session_id: str, body: str) -> str:
    """A notification as the database writes it: ``vs1:<session id>:<hmac>:<body>``."""
    prefix = f"vs1:{session_id}:"
    mac = hmac.new(key, (prefix + body).encode(), hashlib.sha256).hexdigest()
    return f"{prefix}{mac}:{body}"


def opened(key: bytes, notification: str) -> dict[str, Any]:
    """The JSON body of a notification, after checking its signature and session prefix."""
    version, session_id, _signature, body = notification.split(":", 3)
    assert version == "vs1"
    assert sign(key, session_id, body) == notification, "bad signature"
    message = json.loads(body)
    assert isinstance(message, dict)
    assert message["session_id"] == session_id
    return message
