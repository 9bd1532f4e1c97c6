"""Every public SDK call refuses a wrongly typed argument with InvalidInputError, before any
I/O, and never echoes a huge argument back.

Generated from the public signatures: every public method of every public SDK class (the
client's constructors and ``as_user``, ``vs.sessions``, ``vs.tenants``, ``vs.updates``,
``vs.analytics``, ``vs.gdpr``, ``vs.imports``, a transcript stream, an event feed), on both
faces, each parameter fed values of the wrong type (None where it is not optional, a str for
an int, a list for a mapping, bytes, a naive datetime, plain objects...). Which values are wrong is
decided here from the type hints by :func:`accepts`, independently of the SDK's own checks.
"""

from __future__ import annotations

import collections.abc
import datetime as dt
import inspect
import os
import types
import typing
import uuid
from collections.abc import Callable
from typing import Any

import pytest

from tests.conftest import Database
from tests.sdk.conftest import Sdk, sdk
from tests.support.db import unchanged
from tests.support.world import World
from voicesessions import (
    AsyncVoiceSessions,
    InvalidInputError,
    RetryPolicy,
    VoiceSessions,
    VoiceSessionsError,
)
from voicesessions._async.analytics import AsyncAnalyticsRepository
from voicesessions._async.gdpr import AsyncGDPRSessionManager
from voicesessions._async.imports import AsyncCallImports
from voicesessions._async.live import AsyncSessionEvents, AsyncTranscriptStream
from voicesessions._async.repository import AsyncSessionRepository
from voicesessions._async.tenants import AsyncTenantRepository
from voicesessions._async.updates import AsyncSessionUpdateManager
from voicesessions._sync.analytics import AnalyticsRepository
from voicesessions._sync.gdpr import GDPRSessionManager
from voicesessions._sync.imports import CallImports
from voicesessions._sync.live import SessionEvents, TranscriptStream
from voicesessions._sync.repository import SessionRepository
from voicesessions._sync.tenants import TenantRepository
from voicesessions._sync.updates import SessionUpdateManager

#: The resources of a client (``vs.<name>``), per face.
RESOURCES: dict[str, dict[str, type]] = {
    "async": {
        "sessions": AsyncSessionRepository,
        "tenants": AsyncTenantRepository,
        "updates": AsyncSessionUpdateManager,
        "analytics": AsyncAnalyticsRepository,
        "gdpr": AsyncGDPRSessionManager,
        "imports": AsyncCallImports,
    },
    "sync": {
        "sessions": SessionRepository,
        "tenants": TenantRepository,
        "updates": SessionUpdateManager,
        "analytics": AnalyticsRepository,
        "gdpr": GDPRSessionManager,
        "imports": CallImports,
    },
}
CLIENTS = {"async": AsyncVoiceSessions, "sync": VoiceSessions}
STREAMS = {"async": AsyncTranscriptStream, "sync": TranscriptStream}
FEEDS = {"async": AsyncSessionEvents, "sync": SessionEvents}

#: Methods that take no argument worth testing, or only close things.
NOT_CALLED = {"close", "aclose"}


class Opaque:
    """A plain object of no type any SDK method takes."""

    def __repr__(self) -> str:
        return "Opaque()"


#: Values of many types; each is tried on every parameter whose hint does not accept it.
HOSTILE: list[tuple[str, Any]] = [
    ("none", None),
    ("str", "10"),
    ("int", 10),
    ("float", 10.5),
    ("bool", True),
    ("bytes", b"\xff\xfe"),
    ("list", [1, 2]),
    ("dict", {"k": 1}),
    ("object", Opaque()),
    ("naive-datetime", dt.datetime(2026, 1, 1, 12, 0)),
    ("uuid", uuid.UUID(int=7)),
    ("set", {"a"}),
]


def accepts(hint: Any, value: Any) -> bool:
    """Whether ``value`` fits the type hint ``hint`` (the test's own reading of the hints:
    datetimes must be timezone-aware, iterables are lists or tuples of fitting items)."""
    if hint is Any or hint is object:
        return True
    if hint is None or hint is type(None):
        return value is None
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        return any(accepts(a, value) for a in args)
    if hint is bool:
        return isinstance(value, bool)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if hint is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if hint is dt.datetime:
        return isinstance(value, dt.datetime) and value.tzinfo is not None
    if origin in (dict, collections.abc.Mapping) or hint in (dict, collections.abc.Mapping):
        if not isinstance(value, collections.abc.Mapping):
            return False
        return not args or all(accepts(args[0], k) for k in value)
    if origin in (list, tuple, collections.abc.Iterable, collections.abc.Sequence):
        ordered = isinstance(value, (list, tuple))
        if not (ordered or (origin is collections.abc.Iterable and isinstance(value, set))):
            return False
        return not args or all(accepts(args[0], item) for item in value)
    if origin is collections.abc.Callable or hint is collections.abc.Callable:
        return callable(value)
    if origin is os.PathLike:
        return isinstance(value, os.PathLike)
    if origin is typing.IO or hint is typing.BinaryIO:
        return hasattr(value, "read")
    if isinstance(hint, type):
        return isinstance(value, hint)
    return True  # a hint this reading does not know: no value counts as wrong


VALID: list[Any] = [
    uuid.UUID(int=1),  # no row has this id
    dt.datetime(2026, 1, 1, tzinfo=dt.UTC),
    "valid",
    1,
    1.5,
    False,
    {},
    [],
    RetryPolicy.none(),
    lambda *args: None,
    b"",
]


def valid(hint: Any) -> Any:
    """A value of the right type for ``hint`` (not necessarily a meaningful one)."""
    for value in VALID:
        if accepts(hint, value):
            return value
    raise AssertionError(f"no valid value for {hint}")


def parameters(function: Callable[..., Any]) -> list[tuple[inspect.Parameter, Any]]:
    """The named parameters of a public function with their resolved type hints."""
    hints = typing.get_type_hints(function)
    found = []
    for name, param in inspect.signature(function).parameters.items():
        if name in ("self", "cls") or param.kind in (param.VAR_KEYWORD, param.VAR_POSITIONAL):
            continue
        found.append((param, hints.get(name, Any)))
    return found


def public_methods(cls: type) -> list[str]:
    names = []
    for name, attr in inspect.getmembers(cls):
        if name.startswith("_") or name in NOT_CALLED:
            continue
        if isinstance(inspect.getattr_static(cls, name), property):
            continue
        if callable(attr) and not isinstance(attr, type):
            names.append(name)
    return names


def cases_of(function: Callable[..., Any]) -> list[tuple[str, dict[str, Any], str]]:
    """Calls of ``function`` (keyword arguments) where exactly one argument has a wrong type:
    (parameter name, arguments, kind of the wrong value)."""
    params = parameters(function)
    base = {p.name: valid(h) for p, h in params if p.default is inspect.Parameter.empty}
    cases = []
    for param, hint in params:
        for kind, value in HOSTILE:
            if not accepts(hint, value):
                cases.append((param.name, {**base, param.name: value}, kind))
    return cases


# -- the table of calls -------------------------------------------------------------------


def resource_methods() -> list[tuple[str, str, str]]:
    return [
        (face, resource, method)
        for face, resources in RESOURCES.items()
        for resource, cls in resources.items()
        for method in public_methods(cls)
    ]


def test_the_table_covers_every_resource_of_a_client(world_db: tuple[Database, World]) -> None:
    db, _ = world_db
    with VoiceSessions.from_postgres(db.dsn) as vs:
        found = {
            name: type(value)
            for name, value in vars(vs).items()
            if not name.startswith("_") and not callable(value)
        }
    assert found == RESOURCES["sync"]
    assert len(resource_methods()) > 60  # the generation found the methods


async def assert_refused(call: Callable[[], Any], what: str) -> None:
    message = ""
    try:
        result = await sdk(call())
    except InvalidInputError as exc:
        message = str(exc)
    except VoiceSessionsError as exc:
        pytest.fail(f"{what}: {type(exc).__name__} instead of InvalidInputError: {exc}")
    except Exception as exc:
        pytest.fail(f"{what}: raw {type(exc).__name__}: {exc}")
    else:
        if hasattr(result, "aclose"):
            await sdk(result.aclose())
        elif hasattr(result, "close"):
            result.close()
        pytest.fail(f"{what}: accepted")
    assert len(message) < 1000, what


@pytest.mark.parametrize(("face", "resource", "method"), resource_methods())
async def test_wrong_types_are_invalid_input_and_write_nothing(
    face: str, resource: str, method: str, world_db: tuple[Database, World]
) -> None:
    db, _ = world_db
    cls = CLIENTS[face]
    vs = cls.from_postgres(db.dsn, retry=RetryPolicy.none())
    try:
        target = getattr(getattr(vs, resource), method)
        cases = cases_of(target)
        assert cases, f"{resource}.{method} has no parameter to test"
        with unchanged(db):
            for name, kwargs, kind in cases:
                await assert_refused(
                    lambda kwargs=kwargs: target(**kwargs),
                    f"{face} {resource}.{method}({name}=<{kind}>)",
                )
    finally:
        await sdk(vs.aclose() if face == "async" else vs.close())


@pytest.mark.parametrize("face", sorted(CLIENTS))
async def test_client_constructors_refuse_wrong_types(face: str) -> None:
    cls = CLIENTS[face]
    for name in ("from_postgres", "from_supabase", "from_env"):
        constructor = getattr(cls, name)
        for param, kwargs, kind in cases_of(constructor):
            await assert_refused(
                lambda c=constructor, k=kwargs: c(**k), f"{face} {name}({param}=<{kind}>)"
            )


async def test_as_user_refuses_wrong_types(client: Sdk) -> None:
    for param, kwargs, kind in cases_of(client.vs.as_user):
        await assert_refused(lambda k=kwargs: client.vs.as_user(**k), f"as_user({param}=<{kind}>)")


async def test_stream_and_feed_methods_refuse_wrong_types(client: Sdk) -> None:
    sid = client.world.active_session["A1"]
    owner = client.user("A1")
    with unchanged(client.db):
        stream = owner.updates.stream(sid)
        await sdk(stream.__aenter__() if client.face == "async" else stream.__enter__())
        try:
            for method in public_methods(STREAMS[client.face]):
                target = getattr(stream, method)
                for param, kwargs, kind in cases_of(target):
                    await assert_refused(
                        lambda t=target, k=kwargs: t(**k), f"stream.{method}({param}=<{kind}>)"
                    )
        finally:
            if client.face == "async":
                await stream.__aexit__(None, None, None)
            else:
                stream.__exit__(None, None, None)
        feed = owner.updates.events(sid)
        for param, kwargs, kind in cases_of(feed.get):
            await assert_refused(lambda k=kwargs: feed.get(**k), f"events.get({param}=<{kind}>)")


# -- JSON documents: what is not JSON is refused before any I/O ---------------------------

NOT_JSON: list[tuple[str, Any]] = [
    ("bytes", b"\xff\xfe"),
    ("object", Opaque()),
    ("set", {1, 2}),
    ("complex", 1j),
    ("function", print),
]


def deep(levels: int) -> dict[str, Any]:
    doc: dict[str, Any] = {}
    for _ in range(levels):
        doc = {"k": doc}
    return doc


def json_calls(vs: Any, world: World) -> dict[str, Callable[[Any], Any]]:
    """SDK calls taking a JSON document, each sending ``value`` somewhere inside it."""
    sid = world.active_session["A1"]
    done = world.completed_session["A1"]
    owner = vs.as_user(world.person("A1").id)
    return {
        "sessions.create(metadata)": lambda v: vs.sessions.create(
            world.person("A1").id, "t", scenario={"x": [v]}
        ),
        "sessions.record_analysis(results)": lambda v: vs.sessions.record_analysis(
            done, provider="p", analysis_type="overall", results={"summary": {"x": [v]}}
        ),
        "updates.update_audio_metrics": lambda v: owner.updates.update_audio_metrics(
            sid, {"snr_db": {"x": v}}
        ),
        "updates.append_transcript_chunk(words)": lambda v: owner.updates.append_transcript_chunk(
            sid,
            [
                {
                    "seq": 90,
                    "speaker": "trainee",
                    "text": "hi",
                    "start_ms": 0,
                    "end_ms": 5,
                    "words": [{"w": v}],
                }
            ],
        ),
        "updates.broadcast_update(data)": lambda v: owner.updates.broadcast_update(
            {"session_id": sid, "update_type": "audio_metrics", "data": {"x": [v]}}
        ),
        "tenants.create_company(retention)": lambda v: vs.tenants.create_company(
            "Acme", retention={"audio_days": v}
        ),
    }


@pytest.mark.parametrize(("kind", "value"), [*NOT_JSON, ("nested-3000", deep(3000))])
async def test_values_that_are_not_json_are_invalid_input(
    client: Sdk, kind: str, value: Any
) -> None:
    with unchanged(client.db):
        for name, call in json_calls(client.vs, client.world).items():
            await assert_refused(lambda c=call: c(value), f"{name} with {kind}")


# -- error messages quote at most a little of what they were given ------------------------

HUGE = "x" * 1_000_000


@pytest.mark.parametrize(("face", "resource", "method"), resource_methods())
async def test_errors_never_echo_a_huge_argument(
    face: str, resource: str, method: str, world_db: tuple[Database, World]
) -> None:
    db, _ = world_db
    vs = CLIENTS[face].from_postgres(db.dsn, retry=RetryPolicy.none())
    try:
        target = getattr(getattr(vs, resource), method)
        params = parameters(target)
        base = {p.name: valid(h) for p, h in params if p.default is inspect.Parameter.empty}
        for param, hint in params:
            if accepts(hint, "s"):
                huge = HUGE
            elif accepts(hint, {}):
                huge = {"k": HUGE}
            elif accepts(hint, []):
                huge = [HUGE]
            else:
                continue
            try:
                result = await sdk(target(**{**base, param.name: huge}))
            except VoiceSessionsError as exc:
                text = str(exc) + repr(exc)
                assert len(text) < 10_000, f"{resource}.{method}({param.name}=<1 MB>)"
            else:
                if hasattr(result, "aclose"):
                    await sdk(result.aclose())
    finally:
        await sdk(vs.aclose() if face == "async" else vs.close())
