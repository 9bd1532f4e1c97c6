"""The arguments of every public SDK method, checked against its type hints in one place.

:func:`checked_arguments` decorates a public SDK class (``vs.sessions``, ``vs.tenants``, the
client, a stream...): each public method then checks its arguments before its body runs,
so a wrongly typed argument is an :class:`~voicesessions.errors.InvalidInputError` naming
the argument, before any I/O, instead of a ``TypeError``, ``AttributeError`` or a half-done
call. The async core is decorated; unasyncd carries the decorator to the sync face.

What the hints mean here (shallow, cheap checks; the models and the database check values):

- ``int`` is an int and not a bool; ``float`` an int or a float (not a bool); ``str``,
  ``bool``, ``uuid.UUID`` and classes are ``isinstance`` checks;
- ``datetime`` must be timezone-aware (naive datetimes are refused everywhere alike);
- ``Mapping[str, ...]`` / ``dict[str, ...]`` is a mapping whose keys are strings;
- ``Iterable[X]`` / ``Sequence[X]`` / ``list[X]`` is an iterable that is not a string, bytes
  or a mapping, whose items fit ``X``; a one-shot iterable (a generator) is read into a list
  once, and the method receives that list;
- ``Callable`` is callable, ``os.PathLike`` a path object, ``IO[bytes]`` has ``read``;
- ``Any`` and ``**kwargs`` are not checked here.

The checkers of a method are built once, on its first call; a call then costs one small
function per argument (about a microsecond or two per call for the usual signatures).
"""

from __future__ import annotations

import collections.abc
import datetime
import enum
import functools
import inspect
import os
import types
import typing
import uuid
from collections.abc import Callable
from typing import Any, TypeVar

from voicesessions.errors import InvalidInputError, brief

C = TypeVar("C", bound=type)

#: A checker returns the value to pass on (the value itself, or a list read from a one-shot
#: iterable) or raises _Wrong.
Checker = Callable[[Any], Any]


class _Wrong(Exception):
    """An argument does not fit its hint; ``where`` is the path inside it ("" at the top)."""

    def __init__(self, expected: str, value: Any, where: str = "") -> None:
        super().__init__(expected)
        self.expected = expected
        self.value = value
        self.where = where


def checked_arguments(cls: C) -> C:
    """Class decorator: check the arguments of every public method (and classmethod) of
    ``cls`` against its type hints, raising InvalidInputError before the method runs."""
    for name, attr in list(vars(cls).items()):
        if name.startswith("_"):
            continue
        if isinstance(attr, classmethod):
            setattr(cls, name, classmethod(_checked(attr.__func__, skip_first=True)))
        elif isinstance(attr, staticmethod):
            setattr(cls, name, staticmethod(_checked(attr.__func__, skip_first=False)))
        elif inspect.isfunction(attr):
            setattr(cls, name, _checked(attr, skip_first=True))
    return cls


class _Signature:
    """The checkers of one function's parameters, built on first use."""

    def __init__(self, function: Callable[..., Any], skip_first: bool) -> None:
        self.function = function
        self.skip_first = skip_first
        self.ready = False
        self.positional: list[str] = []
        self.checkers: dict[str, Checker] = {}
        self.required: frozenset[str] = frozenset()
        self.keywords: frozenset[str] = frozenset()
        self.extra_keywords = False
        self.qualname = function.__qualname__

    def build(self) -> None:
        params = list(inspect.signature(self.function).parameters.values())
        if self.skip_first and params:
            params = params[1:]
        required = set()
        keywords = set()
        hints = _hints(self.function)
        for param in params:
            if param.kind is param.VAR_KEYWORD:
                self.extra_keywords = True
                continue
            if param.kind is param.VAR_POSITIONAL:
                continue
            if param.kind in (param.POSITIONAL_ONLY, param.POSITIONAL_OR_KEYWORD):
                self.positional.append(param.name)
            if param.kind is not param.POSITIONAL_ONLY:
                keywords.add(param.name)
            if param.default is param.empty:
                required.add(param.name)
            checker = _compile(hints.get(param.name, Any))
            if checker is not None:
                self.checkers[param.name] = checker
        self.required = frozenset(required)
        self.keywords = frozenset(keywords)
        self.ready = True

    def check(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> tuple[Any, ...]:
        """Check the arguments (after ``self``/``cls``); return the positional ones to pass."""
        if not self.ready:
            self.build()
        if len(args) > len(self.positional):
            raise InvalidInputError(
                f"{self.qualname}() takes {len(self.positional)} positional argument(s),"
                f" {len(args)} given"
            )
        checkers = self.checkers
        replaced: list[Any] | None = None
        for index, value in enumerate(args):
            name = self.positional[index]
            checker = checkers.get(name)
            if checker is not None:
                checked = self._run(checker, name, value)
                if checked is not value:
                    replaced = replaced if replaced is not None else list(args)
                    replaced[index] = checked
        for name, value in kwargs.items():
            checker = checkers.get(name)
            if checker is None:
                if name not in self.keywords and not self.extra_keywords:
                    raise InvalidInputError(
                        f"{self.qualname}() got an unexpected argument {brief(name, 80)}"
                    )
                continue
            checked = self._run(checker, name, value)
            if checked is not value:
                kwargs[name] = checked
        if len(args) < len(self.required) or kwargs.keys() < self.required:
            given = set(self.positional[: len(args)]) | kwargs.keys()
            missing = sorted(self.required - given)
            if missing:
                raise InvalidInputError(
                    f"{self.qualname}() is missing the argument(s) {', '.join(missing)}"
                )
        return tuple(replaced) if replaced is not None else args

    def _run(self, checker: Checker, name: str, value: Any) -> Any:
        try:
            return checker(value)
        except _Wrong as wrong:
            raise InvalidInputError(
                f"{self.qualname}(): {name}{wrong.where} must be {wrong.expected},"
                f" not {_kind(wrong.value)}"
            ) from None


def _checked(function: Callable[..., Any], *, skip_first: bool) -> Callable[..., Any]:
    signature = _Signature(function, skip_first)
    if inspect.iscoroutinefunction(function):

        @functools.wraps(function)
        async def checked_coroutine(*args: Any, **kwargs: Any) -> Any:
            if skip_first:
                rest = signature.check(args[1:], kwargs)
                return await function(args[0], *rest, **kwargs)
            return await function(*signature.check(args, kwargs), **kwargs)

        return checked_coroutine

    @functools.wraps(function)
    def checked(*args: Any, **kwargs: Any) -> Any:
        if skip_first:
            rest = signature.check(args[1:], kwargs)
            return function(args[0], *rest, **kwargs)
        return function(*signature.check(args, kwargs), **kwargs)

    return checked


def _hints(function: Callable[..., Any]) -> dict[str, Any]:
    """The evaluated type hints of a function (Any for a hint that cannot be evaluated, e.g.
    a name only imported for type checkers)."""
    try:
        return inspect.get_annotations(function, eval_str=True)
    except Exception:
        hints: dict[str, Any] = {}
        for name, annotation in inspect.get_annotations(function).items():
            try:
                hints[name] = inspect.get_annotations(
                    _Annotated(function, {name: annotation}), eval_str=True
                )[name]
            except Exception:
                hints[name] = Any
        return hints


class _Annotated:
    """A function's globals with a single annotation, to evaluate one hint at a time."""

    def __init__(self, function: Callable[..., Any], annotations: dict[str, Any]) -> None:
        self.__annotations__ = annotations
        self.__globals__ = getattr(function, "__globals__", {})

    def __call__(self) -> None:  # inspect.get_annotations reads callables only
        return None


def _kind(value: Any) -> str:
    """How an error message names a wrong value: its type, and a short repr."""
    if isinstance(value, datetime.datetime) and value.tzinfo is None:
        return f"a naive datetime ({value.isoformat()})"
    if value is None:
        return "None"
    return f"{type(value).__name__} {brief(value, 60)}"


# -- checkers -------------------------------------------------------------------------------


def _compile(hint: Any) -> Checker | None:
    """The checker of a hint; None when any value passes."""
    if hint is Any or hint is object or isinstance(hint, TypeVar):
        return None
    if hint is None or hint is type(None):
        return _exact(lambda v: v is None, "None")
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        return _union(hint, args)
    if origin is typing.Literal:
        allowed = args
        return _exact(lambda v: v in allowed, " or ".join(repr(a) for a in allowed))
    if hint is bool:
        return _exact(lambda v: isinstance(v, bool), "a bool")
    if hint is int:
        return _exact(lambda v: isinstance(v, int) and not isinstance(v, bool), "an int")
    if hint is float:
        return _exact(lambda v: isinstance(v, (int, float)) and not isinstance(v, bool), "a number")
    if hint is str:
        return _exact(lambda v: isinstance(v, str), "a str")
    if hint is datetime.datetime:
        return _exact(
            lambda v: isinstance(v, datetime.datetime) and v.utcoffset() is not None,
            "a timezone-aware datetime",
        )
    if origin in (dict, collections.abc.Mapping) or hint in (dict, collections.abc.Mapping):
        return _mapping(args)
    if origin in (list, tuple, collections.abc.Iterable, collections.abc.Sequence) or hint in (
        list,
        tuple,
    ):
        return _iterable(args)
    if origin is collections.abc.Callable or hint is collections.abc.Callable:
        return _exact(callable, "callable")
    if origin is os.PathLike:
        return _exact(lambda v: isinstance(v, os.PathLike), "a path")
    if origin is typing.IO or hint in (typing.BinaryIO, typing.IO):
        return _exact(lambda v: hasattr(v, "read"), "a binary file object")
    if isinstance(hint, type):
        name = _name(hint)
        return _exact(lambda v: isinstance(v, hint), name)
    return None


def _exact(test: Callable[[Any], bool], expected: str) -> Checker:
    def check(value: Any) -> Any:
        if not test(value):
            raise _Wrong(expected, value)
        return value

    check.expected = expected  # type: ignore[attr-defined]
    check.test = test  # type: ignore[attr-defined]  # a plain predicate: unions use it
    return check


def _union(hint: Any, args: tuple[Any, ...]) -> Checker | None:
    members = [_compile(a) for a in args]
    if any(m is None for m in members):
        return None
    checkers = [m for m in members if m is not None]
    expected = " or ".join(
        getattr(m, "expected", _name(a)) for m, a in zip(members, args, strict=True)
    )
    # Plain predicates first, without exceptions (the common case costs a few isinstance
    # calls); containers after, whose checks can say which item is wrong.
    tests = tuple(m.test for m in checkers if hasattr(m, "test"))
    deep = [m for m in checkers if not hasattr(m, "test")]
    explain = deep + [m for m in checkers if hasattr(m, "test")]

    def check(value: Any) -> Any:
        for test in tests:
            if test(value):
                return value
        wrong_item: _Wrong | None = None
        for checker in explain:  # the slow path: which member came closest, and why
            try:
                return checker(value)
            except _Wrong as wrong:
                if wrong.where and wrong_item is None:
                    wrong_item = wrong  # the value had the container type; an item was wrong
        if wrong_item is not None:
            raise wrong_item
        raise _Wrong(expected, value)

    check.expected = expected  # type: ignore[attr-defined]
    return check


def _mapping(args: tuple[Any, ...]) -> Checker:
    string_keys = bool(args) and args[0] is str
    values = _compile(args[1]) if len(args) == 2 else None

    def test(value: Any) -> bool:  # the fast path, for unions: no exception
        if not isinstance(value, collections.abc.Mapping):
            return False
        if string_keys:
            for key in value:
                if not isinstance(key, str):
                    return False
        return True

    def check(value: Any) -> Any:
        if not isinstance(value, collections.abc.Mapping):
            raise _Wrong("a mapping", value)
        for key in value:
            if string_keys and not isinstance(key, str):
                raise _Wrong("a str", key, " key")
            if values is not None:
                try:
                    values(value[key])
                except _Wrong as wrong:
                    raise _Wrong(wrong.expected, wrong.value, f"[{brief(key, 40)}]") from None
        return value

    check.expected = "a mapping"  # type: ignore[attr-defined]
    if values is None:
        check.test = test  # type: ignore[attr-defined]
    return check


def _iterable(args: tuple[Any, ...]) -> Checker:
    items = _compile(args[0]) if len(args) == 1 or (len(args) == 2 and args[1] is ...) else None

    def check(value: Any) -> Any:
        if isinstance(value, (str, bytes, bytearray, memoryview, collections.abc.Mapping)):
            raise _Wrong("a list", value)
        if not isinstance(value, (list, tuple)):
            if not isinstance(value, collections.abc.Iterable):
                raise _Wrong("a list", value)
            value = list(value)  # a one-shot iterable: read once, passed on as a list
        if items is not None:
            for index, item in enumerate(value):
                try:
                    items(item)
                except _Wrong as wrong:
                    raise _Wrong(wrong.expected, wrong.value, f"[{index}]{wrong.where}") from None
        return value

    check.expected = "a list"  # type: ignore[attr-defined]
    return check


def _name(hint: Any) -> str:
    if hint is uuid.UUID:
        return "a UUID"
    if isinstance(hint, type):
        if issubclass(hint, enum.Enum):
            return f"a {hint.__name__}"
        return f"a {hint.__name__}"
    return str(hint)
