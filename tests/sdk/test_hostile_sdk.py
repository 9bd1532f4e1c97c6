"""Generated hostile input through the SDK (Postgres backend, sync face) against the real
database: every call either raises :class:`~voicesessions.InvalidInputError` with nothing
written, or stores what it was given and every reader reads it back faithfully.

Inputs are hypothesis strategies that mix valid values with hostile ones: text with NUL,
lone surrogates, 1 MB; numbers NaN, ±Infinity, ``Decimal('NaN')``, 1e308, 1e-320,
integral floats, ints of 4,000 digits, ``Decimal('1e5000')``; JSON nested up to 3,000 deep,
10 MB, with values JSON cannot hold (bytes, sets); Python types a signature does not take.
The calls: ``sessions.create`` (title, metadata), ``updates.append_transcript_chunk``
(segments), ``updates.update_audio_metrics``, ``sessions.record_analysis`` (results, as the
service role and as the owner), ``tenants.create_company``/``create_profile`` (names).

After each call:

- refused: the exception is ``InvalidInputError`` (any other exception, a
  ``VoiceSessionsError`` or not, is a failure: issue 11 class 6) and no table changed;
- accepted: the value reads back equal to what was sent through the call's own reader
  (``get``, ``get_transcript``, ``get_company``, the returned analysis) and every SDK reader
  of the company's data (tests/support/readers.py) still works.

Deterministic: the settings below derandomize hypothesis (same examples every run, no
example database), with a modest number of examples and no deadline. One world database
serves the module; :class:`tests.support.db.Snapshot` puts its rows back after each example.
"""

from __future__ import annotations

import math
import struct
import uuid
from collections.abc import Callable, Iterator
from datetime import date, time
from decimal import Decimal
from typing import Any

import pytest
from hypothesis import HealthCheck, Phase, example, given, settings
from hypothesis import strategies as st
from pydantic import BaseModel, ConfigDict

from tests.conftest import Database
from tests.support.db import Snapshot
from tests.support.readers import one_line, reader_failures
from tests.support.world import World
from voicesessions import InvalidInputError, PermissionDeniedError, VoiceSessions
from voicesessions._query import json_scalar
from voicesessions._retry_policy import RetryPolicy

HOSTILE = settings(
    derandomize=True,
    database=None,
    max_examples=40,
    deadline=None,
    # no shrinking: the failure message names the input, and shrinking a database round
    # trip costs minutes
    phases=(Phase.explicit, Phase.reuse, Phase.generate),
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)

MB = 1_000_000

# -- strategies -------------------------------------------------------------------------------


class Big:
    """A hostile value too large or too deep to print: hypothesis shows its label, the test
    builds it (:func:`build`)."""

    def __init__(self, label: str, make: Callable[[], Any]):
        self.label = label
        self.make = make

    def __repr__(self) -> str:
        return f"<{self.label}>"


def build(value: Any) -> Any:
    """``value`` with every :class:`Big` inside replaced by what it stands for."""
    if isinstance(value, Big):
        return value.make()
    if isinstance(value, dict):
        return {build(k): build(v) for k, v in value.items()}
    if isinstance(value, list):
        return [build(v) for v in value]
    return value


def nested(depth: int) -> Big:
    def make() -> dict[str, Any]:
        value: dict[str, Any] = {"leaf": 1}
        for _ in range(depth):
            value = {"a": value}
        return value

    return Big(f"object nested {depth} deep", make)


def blob(size: int) -> Big:
    return Big(f"{size:,} bytes", lambda: "x" * size)


HOSTILE_STRINGS: tuple[Any, ...] = (
    "",
    " ",
    "\x00",
    "a\x00b",
    "\ud800",
    "a\udfffb",
    blob(MB),
    "\u202eevil",
    "é" * 100,
    "'; drop table public.sessions; --",
)
text = st.one_of(st.text(max_size=30), st.sampled_from(HOSTILE_STRINGS))

HOSTILE_NUMBERS: tuple[Any, ...] = (
    float("nan"),
    float("inf"),
    float("-inf"),
    Decimal("NaN"),
    Decimal("Infinity"),
    Decimal("1e5000"),
    Decimal("-1e-5000"),
    Big("an int of 4,000 digits", lambda: 10**4000),
    1e308,
    1e-320,
    3.0,
    -0.0,
)
numbers = st.one_of(
    st.integers(min_value=-(10**20), max_value=10**20),
    st.floats(),
    st.decimals(),
    st.sampled_from(HOSTILE_NUMBERS),
)
NOT_JSON: tuple[Any, ...] = (b"bytes", {1, 2}, object(), uuid.UUID(int=1), 1j)
DEPTHS = (10, 100, 800, 1000, 2500, 3000)

leaves = st.one_of(st.none(), st.booleans(), numbers, text)
json_values = st.recursive(
    leaves,
    lambda children: st.one_of(
        st.lists(children, max_size=3), st.dictionaries(text, children, max_size=3)
    ),
    max_leaves=8,
)
hostile_objects = st.one_of(
    st.dictionaries(text, json_values, max_size=4),
    st.sampled_from(DEPTHS).map(lambda d: {"deep": nested(d)}),
    st.sampled_from((MB, 10 * MB)).map(lambda n: {"blob": blob(n)}),
    st.dictionaries(text, st.sampled_from(NOT_JSON), min_size=1, max_size=2),
)
segment_words = st.one_of(
    st.none(),
    st.lists(
        st.fixed_dictionaries(
            {"word": text, "start_ms": numbers, "end_ms": numbers, "confidence": numbers}
        ),
        max_size=3,
    ),
    st.lists(json_values, max_size=3),
    st.sampled_from(DEPTHS).map(lambda d: [nested(d)]),
)
ints = st.one_of(
    st.integers(min_value=0, max_value=10_000),
    st.sampled_from((-1, 2**31 - 1, 2**31, 2**63, 3.0, True, "7", None)),
)
segment = st.fixed_dictionaries(
    {
        "speaker": st.one_of(st.sampled_from(("trainee", "buyer")), text),
        "text": text,
        "start_ms": ints,
        "end_ms": ints,
    },
    optional={
        "confidence": st.one_of(st.floats(min_value=0, max_value=1), numbers),
        "words": segment_words,
        "segment_id": text,
        "is_final": st.booleans(),
    },
)


# -- the world --------------------------------------------------------------------------------


class Env:
    """The module's world database, its service-role client and its snapshot (a plain class:
    hypothesis prints dataclasses field by field in every failure report)."""

    def __init__(self, db: Database, world: World, vs: VoiceSessions, snapshot: Snapshot):
        self.db = db
        self.world = world
        self.vs = vs
        self.snapshot = snapshot

    def user(self, key: str) -> VoiceSessions:
        return self.vs.as_user(self.world.person(key).id)

    def __repr__(self) -> str:
        return "<the world of tests/support/world.py>"


@pytest.fixture(scope="module")
def env(shared_world_db: tuple[Database, World]) -> Iterator[Env]:
    db, world = shared_world_db
    vs = VoiceSessions.from_postgres(db.dsn, retry=RetryPolicy.none())
    snapshot = Snapshot(db)
    try:
        yield Env(db, world, vs, snapshot)
    finally:
        vs.close()
        snapshot.close()


def attempt(
    env: Env,
    what: str,
    call: Callable[[], Any],
    read_back: Callable[[Any], None],
    refusals: tuple[type[Exception], ...] = (InvalidInputError,),
) -> None:
    """Run ``call``: one of ``refusals`` (InvalidInputError) with nothing written, or read
    back faithfully (``read_back`` asserts) and every reader of company A still working."""
    try:
        try:
            result = call()
        except refusals:
            changed = env.snapshot.changed()
            assert not changed, f"{what}: refused, yet {changed} changed"
            return
        except Exception as error:
            expected = " or ".join(r.__name__ for r in refusals)
            pytest.fail(f"{what}: raised {one_line(error)}, not {expected}")
        try:
            read_back(result)
        except AssertionError:
            raise
        except Exception as error:
            pytest.fail(f"{what}: stored, then reading it back failed: {one_line(error)}")
        broken = reader_failures(env.vs, env.world, "A")
        assert not broken, f"{what}: stored, then:\n" + "\n".join(broken)
    finally:
        env.snapshot.restore()


def f32(value: float) -> float:
    """A float as PostgreSQL's ``real`` keeps it."""
    return float(struct.unpack("f", struct.pack("f", value))[0])


def same(got: Any, sent: Any) -> bool:
    """Equal as a faithful JSON round trip must be: same types of number, same structure."""
    if isinstance(sent, (uuid.UUID, Decimal, date, time)):
        # sent as JSON carries them (voicesessions._query.json_scalar): strings
        return got == json_scalar(sent)
    if isinstance(sent, bool) or sent is None or isinstance(sent, str):
        return type(got) is type(sent) and got == sent
    if isinstance(sent, (int, float, Decimal)):
        if isinstance(got, bool) or not isinstance(got, (int, float, Decimal)):
            return False
        if isinstance(sent, float) and not math.isfinite(sent):
            return False
        return bool(got == sent) and isinstance(got, int) == isinstance(sent, int)
    if isinstance(sent, dict):
        return (
            isinstance(got, dict)
            and got.keys() == sent.keys()
            and all(same(got[k], sent[k]) for k in sent)
        )
    if isinstance(sent, list):
        return (
            isinstance(got, list)
            and len(got) == len(sent)
            and all(same(g, s) for g, s in zip(got, sent, strict=True))
        )
    return False


# -- the calls --------------------------------------------------------------------------------


class _Stripped(BaseModel):
    model_config = ConfigDict(str_strip_whitespace=True)
    value: str


def stripped(value: str) -> str:
    """``value`` as the SDK's input models normalize a string (pydantic's whitespace strip,
    which is not Python's ``str.strip``)."""
    return _Stripped(value=value).value


def short(spec: Any, size: int = 200) -> str:
    """A generated input as a failure message shows it (Big values by their label)."""
    return repr(spec)[:size]


@HOSTILE
@given(title=text, metadata=st.dictionaries(text, json_values, max_size=3) | hostile_objects)
def test_create_session(env: Env, title: Any, metadata: dict[Any, Any]) -> None:
    a1 = env.user("A1")
    owner_id = env.world.person("A1").id
    title_v, metadata_v = build(title), build(metadata)

    def read_back(session: Any) -> None:
        got = a1.sessions.get(session.id)
        assert got.title == stripped(title_v), f"title read back as {got.title[:40]!r}"
        assert same(got.metadata, metadata_v), f"metadata read back as {short(got.metadata)}"

    attempt(
        env,
        f"sessions.create(title={short(title, 60)}, metadata={short(metadata)})",
        lambda: a1.sessions.create(owner_id, title_v, **metadata_v),
        read_back,
    )


@HOSTILE
@given(segments=st.lists(segment, min_size=1, max_size=4))
def test_append_transcript_chunk(env: Env, segments: list[dict[str, Any]]) -> None:
    a1 = env.user("A1")
    active = env.world.active_session["A1"]
    sent: list[dict[str, Any]] = build(segments)
    for index, seg in enumerate(sent):
        seg.setdefault("seq", 100 + index)

    def read_back(_: Any) -> None:
        stored = {s.seq: s for s in a1.sessions.get_transcript(active).segments}
        for seg in sent:
            if not seg.get("is_final", True):
                continue
            got = stored.get(seg["seq"])
            assert got is not None, f"segment {seg['seq']} not stored"
            assert got.text == stripped(seg["text"]), f"text read back as {got.text[:40]!r}"
            assert got.speaker == stripped(str(seg["speaker"]))
            assert (got.start_ms, got.end_ms) == (int(seg["start_ms"]), int(seg["end_ms"]))
            if seg.get("confidence") is not None:
                assert got.confidence == f32(float(seg["confidence"]))
            if seg.get("words") is not None:
                assert same(got.words, seg["words"]), f"words read back as {short(got.words)}"

    attempt(
        env,
        f"append_transcript_chunk({short(segments, 400)})",
        lambda: a1.updates.append_transcript_chunk(active, sent),
        read_back,
    )


@HOSTILE
@given(metrics=hostile_objects)
def test_update_audio_metrics(env: Env, metrics: dict[Any, Any]) -> None:
    a1 = env.user("A1")
    active = env.world.active_session["A1"]
    sent = build(metrics)

    def read_back(_: Any) -> None:
        got = a1.sessions.get(active).audio_quality
        for key, value in sent.items():
            assert key in got, f"{key!r} not stored"
            assert same(got[key], value), f"{key!r} read back as {short(got[key])}"

    attempt(
        env,
        f"update_audio_metrics({short(metrics)})",
        lambda: a1.updates.update_audio_metrics(active, sent),
        read_back,
    )


@HOSTILE
@given(
    as_owner=st.booleans(),
    results=hostile_objects,
    confidence=st.one_of(st.none(), numbers),
    cost=st.one_of(st.none(), numbers),
    version=text,
)
def test_record_analysis(
    env: Env, as_owner: bool, results: dict[Any, Any], confidence: Any, cost: Any, version: Any
) -> None:
    completed = env.world.completed_session["A1"]
    client = env.user("A1") if as_owner else env.vs
    spec: dict[str, Any] = {
        "provider": "voicesessions" if as_owner else "hostile",
        "analysis_type": "conversation_metrics" if as_owner else "overall",
        "results": results,
        "confidence": confidence,
        "api_cost_usd": cost,
    }
    if version:
        spec["version"] = version
    fields = build(spec)

    def read_back(stored: Any) -> None:
        # Only the service role records analyses (the database measures the owner's call).
        assert not as_owner, "a session's owner recorded an analysis"
        assert same(stored.results, fields["results"]), (
            f"results read back as {short(stored.results)}"
        )
        env.vs.sessions.get_analytics(completed)

    attempt(
        env,
        f"record_analysis(as_owner={as_owner}, {short(spec, 300)})",
        lambda: client.sessions.record_analysis(completed, **fields),
        read_back,
        (InvalidInputError, PermissionDeniedError) if as_owner else (InvalidInputError,),
    )


@HOSTILE
@given(name=text)
def test_company_name(env: Env, name: Any) -> None:
    sent = build(name)

    def read_back(company: Any) -> None:
        got = env.vs.tenants.get_company(company.id).name
        assert got == stripped(sent), f"name read back as {got[:40]!r}"

    attempt(
        env,
        f"create_company({short(name, 60)})",
        lambda: env.vs.tenants.create_company(sent),
        read_back,
    )


@HOSTILE
@given(display_name=text)
# Python's str.strip() removes \x1c-\x1f, Unicode's White_Space (the models') does not
@example(display_name="name\x8d\x1e")
def test_profile_display_name(env: Env, display_name: Any) -> None:
    sent = build(display_name)
    user, company = env.world.spare_user, env.world.companies["A"]

    def read_back(profile: Any) -> None:
        got = env.user("AA").tenants.get_profile(profile.id).display_name
        assert got == stripped(sent), f"display name read back as {got[:40]!r}"

    attempt(
        env,
        f"create_profile(display_name={short(display_name, 60)})",
        lambda: env.vs.tenants.create_profile(user, company, display_name=sent),
        read_back,
    )
