"""What voicesessions reads of supabase-py's internals, in one place: one function per need.

realtime-py and supabase-auth offer no public API for three things the SDK must do, so the
functions below read attributes those packages do not document (most of them private):

- :func:`realtime_listener`: the task that reads the Realtime socket, to notice that it died
  (``AsyncRealtimeClient.is_connected`` stays true when an exception ends it);
- :func:`realtime_tasks`: every task a Realtime client and its channels started, to end them
  all when a feed closes (``AsyncRealtimeClient.close()`` cancels two without waiting for
  them and leaves the others running: the rejoin timer, the reply timeouts of pushes, the
  background sends; ``remove_all_channels()`` even starts new ones, the leave pushes'
  timeouts);
- :func:`auth_header_copies`: the copies of the headers that a supabase-py client's Auth and
  Auth admin clients keep, to keep an ``sb_`` key out of ``Authorization`` (the headers are
  copied when the client is built; supabase-py itself writes ``auth._headers``).

Every read is checked: an attribute that is missing or of another type raises
:class:`~voicesessions.errors.ConfigurationError` naming it and the installed version, instead
of leaking tasks or sending a key where it must not go.
``tests/contract/test_upstream.py`` pins each read against the installed packages, so an upgrade
that renames or removes one fails there, by name, before it reaches a user.
"""

from __future__ import annotations

import asyncio
from importlib import metadata
from typing import Any

from realtime import AsyncRealtimeClient

from voicesessions.errors import ConfigurationError


def realtime_listener(client: AsyncRealtimeClient) -> asyncio.Task[Any] | None:
    """The task reading ``client``'s socket (``_listen_task``), None before ``connect()``
    and after ``close()``."""
    return _task(_read("realtime", client, "_listen_task", _TASK, "the socket's reader"))


def realtime_tasks(client: AsyncRealtimeClient) -> list[asyncio.Task[Any]]:
    """Every task ``client`` and its channels have started and not forgotten: the socket's
    listener and heartbeat, and for each channel its rejoin timer, its background sends and
    the reply timeouts of its join, of the pushes awaiting a reply and of those waiting for
    the join. Read them before ``close()``, which forgets the first two."""
    found: list[asyncio.Task[Any] | None] = [
        realtime_listener(client),
        _task(_read("realtime", client, "_heartbeat_task", _TASK, "the heartbeat")),
    ]
    channels = _read("realtime", client, "channels", (dict,), "the client's channels")
    for channel in list(channels.values()):
        timer = _read("realtime", channel, "rejoin_timer", "AsyncTimer", "the rejoin timer")
        found.append(_task(_read("realtime", timer, "timer", _TASK, "a scheduled rejoin")))
        join = _read("realtime", channel, "join_push", "AsyncPush", "the join push")
        waiting = _read(
            "realtime", channel, "messages_waiting_for_ack", (dict,), "pushes awaiting a reply"
        )
        buffered = _read("realtime", channel, "_push_buffer", (list,), "pushes before the join")
        for push in (join, *list(waiting.values()), *buffered):
            found.append(
                _task(_read("realtime", push, "timeout_task", _TASK, "a push's reply timeout"))
            )
        background = _read("realtime", channel, "_background_tasks", (set,), "background sends")
        found.extend(_task(task) for task in list(background))
    return [task for task in found if task is not None]


def auth_header_copies(client: Any) -> list[dict[str, str]]:
    """The header dictionaries of a supabase-py client's Auth client and Auth admin client
    (``auth._headers``, ``auth.admin._headers``), each a copy made when the client was built:
    what their requests send. ``client`` is a ``supabase.AsyncClient`` or ``supabase.Client``."""
    auth = client.auth
    return [
        _read("supabase-auth", auth, "_headers", (dict,), "the Auth client's headers"),
        _read("supabase-auth", auth.admin, "_headers", (dict,), "the Auth admin's headers"),
    ]


# -- checked reads ----------------------------------------------------------------------

_TASK = (asyncio.Task, type(None))


def _read(
    distribution: str, owner: object, name: str, kind: tuple[type, ...] | str, what: str
) -> Any:
    """``owner.<name>``, which must be of a type in ``kind`` or, for a class the package
    does not export, of the class so named; else a ConfigurationError that says what changed
    (``what`` says what the attribute holds)."""
    missing = object()
    value = getattr(owner, name, missing)
    if isinstance(kind, str):
        fits = any(cls.__name__ == kind for cls in type(value).__mro__)
    else:
        fits = isinstance(value, kind)
    if value is missing or not fits:
        found = "is missing" if value is missing else f"is a {type(value).__name__}"
        raise _changed(distribution, f"{type(owner).__name__}.{name} ({what}) {found}")
    return value


def _task(value: object) -> asyncio.Task[Any] | None:
    if value is not None and not isinstance(value, asyncio.Task):
        raise _changed("realtime", f"a task of realtime-py is a {type(value).__name__}")
    return value


def _changed(distribution: str, what: str) -> ConfigurationError:
    try:
        version = metadata.version(distribution)
    except metadata.PackageNotFoundError:  # pragma: no cover - it was imported
        version = "(version unknown)"
    return ConfigurationError(
        f"{distribution} {version} is not a version voicesessions works with: {what}."
        f" Install a {distribution} version in the range voicesessions declares (the"
        " Requires-Dist of its metadata; pip keeps to it unless told otherwise); if it is in"
        " that range already, this is a bug of voicesessions"
    )
