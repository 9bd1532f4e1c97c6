"""Helpers for tests of live reading on either face: enter an event feed with ``async with``
or ``with``, take its next event, wait for a condition without blocking the event loop."""

from __future__ import annotations

import asyncio
import contextlib
import inspect
from collections.abc import AsyncIterator, Callable
from typing import Any

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
