"""The few concurrency primitives the live-update helpers need, once per face.

The async core is written once and the sync face generated from it by ``unasyncd``, which
can turn ``await x`` into ``x`` but not an asyncio task into a thread. So the two things that
differ between the faces live here, side by side with the same interface, and unasyncd maps
each ``Async*`` name to its twin (``[tool.unasyncd.add_replacements]`` in pyproject.toml):

- :class:`AsyncWorker` / :class:`Worker`: run a function in the background (an asyncio task /
  a daemon thread) and wait for it to end;
- :class:`AsyncCondition` / :class:`Condition`: a condition variable whose ``wait`` takes a
  timeout (``asyncio.Condition`` / ``threading.Condition``);
- :func:`async_resolve` / :func:`resolve`: the result of a user callback, awaited if the
  async face was given a coroutine function.

Nothing else may depend on the face; keep this module that small.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import threading
from collections.abc import Callable, Coroutine
from types import TracebackType
from typing import Any


class AsyncWorker:
    """Run ``target()`` as an asyncio task; :meth:`join` waits for it to end."""

    def __init__(self, target: Callable[[], Coroutine[Any, Any, None]], name: str) -> None:
        self._target = target
        self._name = name
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._target(), name=self._name)

    def cancel(self) -> None:
        """Interrupt the worker at its next ``await`` (threads cannot be interrupted: the
        sync twin does nothing, its target must watch a flag)."""
        if self._task is not None:
            self._task.cancel()

    async def join(self) -> None:
        if self._task is None:
            return
        try:
            await self._task
        except asyncio.CancelledError:
            if not self._task.cancelled():  # we are cancelled ourselves: pass it on
                raise


class Worker:
    """Run ``target()`` in a daemon thread; :meth:`join` waits for it to end."""

    def __init__(self, target: Callable[[], None], name: str) -> None:
        self._thread = threading.Thread(target=target, name=name, daemon=True)

    def start(self) -> None:
        self._thread.start()

    def cancel(self) -> None:
        """Threads cannot be interrupted; the target watches a flag instead."""

    def join(self) -> None:
        if self._thread.ident is not None and self._thread is not threading.current_thread():
            self._thread.join()


class AsyncCondition:
    """``asyncio.Condition`` with a ``wait`` that gives up after ``timeout`` seconds."""

    def __init__(self) -> None:
        self._condition = asyncio.Condition()

    async def __aenter__(self) -> None:
        await self._condition.acquire()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._condition.release()

    async def wait(self, seconds: float | None = None) -> None:
        """Release the lock until notified or ``seconds`` passed; hold it again."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._condition.wait(), seconds)

    def notify_all(self) -> None:
        self._condition.notify_all()


class Condition:
    """``threading.Condition`` with the interface of :class:`AsyncCondition`."""

    def __init__(self) -> None:
        self._condition = threading.Condition()

    def __enter__(self) -> None:
        self._condition.acquire()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._condition.release()

    def wait(self, seconds: float | None = None) -> None:
        self._condition.wait(seconds)

    def notify_all(self) -> None:
        self._condition.notify_all()


async def async_resolve(value: Any) -> Any:
    """``value``, awaited first if it is awaitable (a callback may be a coroutine function)."""
    if inspect.isawaitable(value):
        return await value
    return value


def resolve(value: Any) -> Any:
    """``value`` as it is: the sync face calls plain functions."""
    return value
