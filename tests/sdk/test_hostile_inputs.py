"""The value policy through the SDK, with generated inputs against the real database.

- The SDK's verdict on a JSON document (voicesessions._values) is the database's
  (private.jsonb_problem), and the size it computes is PostgreSQL's octet_length(doc::text).
- A chunk with one hostile value anywhere is refused before any I/O, naming segments[i],
  and nothing is stored (all or nothing: no half-stored chunk).
- Documents at the limits, stored by SQL, are read back by the SDK as written.

Hypothesis is deterministic here (derandomize, a modest number of examples).
"""

from __future__ import annotations

import inspect
import json
import math
from decimal import Decimal
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.conftest import Database
from tests.sdk.conftest import Sdk, sdk
from tests.support.db import owner, scalar, unchanged
from tests.support.segments import segment
from tests.support.world import World
from voicesessions import InvalidInputError, VoiceSessions
from voicesessions._query import jsonable
from voicesessions._sync.repository import SessionRepository
from voicesessions._values import (
    MAX_JSON_DEPTH,
    MAX_JSON_MAGNITUDE,
    MAX_METADATA_BYTES,
    MIN_JSON_MAGNITUDE,
    json_number_problem,
    json_problem,
    json_size,
)

CI = settings(
    derandomize=True,
    max_examples=40,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)

# Numbers around every edge of the policy, and ordinary ones.
NUMBERS = st.one_of(
    st.integers(min_value=-(2**60), max_value=2**60),
    st.sampled_from([2**53 - 1, 2**53, -(2**53 - 1), -(2**53), 0, -0.0, 1e-20, 9.99e-21]),
    st.floats(allow_nan=False, allow_infinity=False),
    st.floats(min_value=1e-25, max_value=1e-15),
)
TEXT = st.text(st.characters(codec="utf-8", exclude_characters="\x00"), max_size=20)
SCALARS = st.one_of(st.none(), st.booleans(), NUMBERS, TEXT)
DOCS = st.recursive(
    SCALARS,
    lambda children: st.one_of(
        st.lists(children, max_size=4), st.dictionaries(TEXT, children, max_size=4)
    ),
    max_leaves=30,
)


def _deep(levels: int) -> Any:
    doc: Any = 1
    for _ in range(levels):
        doc = [doc]
    return doc


@CI
@given(doc=st.one_of(DOCS, st.integers(1, 40).map(_deep)))
def test_the_sdk_and_the_database_judge_documents_alike(
    shared_world_db: tuple[Database, World], doc: Any
) -> None:
    db, _ = shared_world_db
    sdk_verdict = json_problem(doc, max_depth=MAX_JSON_DEPTH, max_bytes=2000)
    text = json.dumps(doc)
    with owner(db) as conn:
        row = conn.execute(
            "select private.jsonb_problem(%s::jsonb, %s, 2000),"
            " private.jsonb_problem(%s::jsonb, %s, null) is null,"
            " octet_length(%s::jsonb::text)",
            (text, MAX_JSON_DEPTH, text, MAX_JSON_DEPTH, text),
        ).fetchone()
    assert row is not None
    db_verdict, db_storable, db_size = row
    assert (sdk_verdict is None) == (db_verdict is None), (sdk_verdict, db_verdict)
    if db_storable:
        assert json_size(doc) == db_size


@settings(derandomize=True, max_examples=2000, database=None)
@given(
    value=st.one_of(
        st.floats(allow_nan=False, allow_infinity=False),
        st.floats(min_value=1e-21, max_value=1e-18),
        st.floats(min_value=8e15, max_value=1e16),
    )
)
def test_a_float_is_judged_by_the_decimal_text_the_database_parses(value: float) -> None:
    """The fast path for floats far from both bounds answers as the exact check does."""
    magnitude = abs(Decimal(repr(value)))
    inside = magnitude == 0 or MIN_JSON_MAGNITUDE <= magnitude <= MAX_JSON_MAGNITUDE
    assert (json_number_problem(value) is None) == inside


@pytest.mark.parametrize(
    "value",
    [
        float("nan"),
        float("inf"),
        -float("inf"),
        Decimal("NaN"),
        Decimal("Infinity"),
        1e300,
        10**5000,
        1e-50,
        "nul\x00",
        "lone \ud800",
        b"bytes",
        {1, 2},
        _deep(MAX_JSON_DEPTH + 5),
        _deep(5000),
    ],
    ids=lambda v: type(v).__name__,
)
async def test_hostile_metadata_is_refused_before_any_io(client: Sdk, value: Any) -> None:
    owner_id = client.world.person("A1").id
    rep = client.user("A1")
    with unchanged(client.db), pytest.raises(InvalidInputError, match=r"metadata"):
        await sdk(rep.sessions.create(owner_id, "hostile", notes={"deep": [value]}))


async def test_oversized_metadata_is_refused_naming_the_cap(client: Sdk) -> None:
    owner_id = client.world.person("A1").id
    with unchanged(client.db), pytest.raises(InvalidInputError, match=str(MAX_METADATA_BYTES)):
        await sdk(client.vs.sessions.create(owner_id, "big", blob="x" * MAX_METADATA_BYTES))


HOSTILE_SEGMENT_FIELDS = st.sampled_from(
    [
        ("text", "a NUL \x00 here", "text"),
        ("text", "half \udc80 a pair", "text"),
        ("speaker", "\x00", "speaker"),
        ("segment_id", "id\ud800", "segment_id"),
        ("confidence", float("nan"), "confidence"),
        ("confidence", 1e-50, "confidence"),
        ("words", [1, "two", None], "words"),
        ("words", [{"word": "x", "start_ms": 3.0}], "words"),
        ("words", [{"word": {"nested": 1}}], "words"),
        ("words", [{"w": 1e5000}], "words"),
        ("words", [{"w": "y" * 70_000}], "words"),
        ("seq", 2**31, "seq"),
        ("text", "z" * 20_001, "text"),
    ]
)


@CI
@given(size=st.integers(1, 1000), where=st.floats(0, 1), hostile=HOSTILE_SEGMENT_FIELDS)
def test_a_chunk_with_one_hostile_value_is_refused_whole(
    shared_world_db: tuple[Database, World], size: int, where: float, hostile: Any
) -> None:
    db, world = shared_world_db
    field, value, named = hostile
    index = min(size - 1, int(where * size))
    chunk = [segment(20_000 + i) for i in range(size)]
    chunk[index] = {**chunk[index], field: value}
    sid = world.active_session["A2"]
    before = scalar(db, "select count(*) from transcript_segments where session_id = %s", (sid,))
    with VoiceSessions.from_postgres(db.dsn) as vs, pytest.raises(InvalidInputError) as caught:
        vs.as_user(world.person("A2").id).updates.append_transcript_chunk(sid, chunk)
    assert f"segments[{index}]" in str(caught.value)
    assert named in str(caught.value)
    after = scalar(db, "select count(*) from transcript_segments where session_id = %s", (sid,))
    assert after == before


async def test_a_nul_in_segment_550_of_600_stores_nothing(client: Sdk) -> None:
    sid = client.world.active_session["A2"]
    chunk = [segment(3000 + i) for i in range(600)]
    chunk[550] = {**chunk[550], "text": "bad \x00 byte"}
    with unchanged(client.db), pytest.raises(InvalidInputError, match=r"segments\[550\]"):
        await sdk(client.user("A2").updates.append_transcript_chunk(sid, chunk))


@pytest.mark.parametrize(
    ("fields", "match"),
    [
        ({"results": {"overall_score": float("nan")}}, "results"),
        ({"results": {"overall_score": float("inf")}}, "results"),
        ({"results": {"nested": {"x": [float("nan")]}}}, r"results"),
        ({"results": {"price": Decimal("NaN")}}, "results"),
        ({"results": {"price": Decimal("Infinity")}}, "results"),
        ({"results": {"question_count": 3.0}}, "question_count"),
        ({"results": {"filler_words_count": True}}, "filler_words_count"),
        ({"results": {}, "confidence": Decimal("NaN")}, "confidence"),
        ({"results": {}, "api_cost_usd": Decimal("NaN")}, "api_cost_usd"),
        ({"results": {}, "api_cost_usd": Decimal("Infinity")}, "api_cost_usd"),
        ({"results": {}, "provider": "nul\x00"}, "provider"),
        ({"results": {"deep": _deep(3000)}}, "results"),
    ],
)
async def test_hostile_analyses_are_refused_before_any_io(
    client: Sdk, fields: dict[str, Any], match: str
) -> None:
    sid = client.world.completed_session["A1"]
    analysis = {"provider": "ai", "analysis_type": "scoring", **fields}
    with unchanged(client.db), pytest.raises(InvalidInputError, match=match):
        await sdk(client.vs.sessions.record_analysis(sid, analysis))


@pytest.mark.parametrize(
    "when",
    ["1999-12-31T23:59:59+00:00", "2100-01-01T00:00:00+00:00", "0001-01-01T00:00:00+00:00"],
)
async def test_timestamps_outside_the_window_are_refused_before_any_io(
    client: Sdk, when: str
) -> None:
    from datetime import datetime

    moment = datetime.fromisoformat(when)
    owner_id = client.world.person("A1").id
    with unchanged(client.db):
        with pytest.raises(InvalidInputError, match="started_at"):
            await sdk(client.user("A1").sessions.create(owner_id, "t", started_at=moment))
        with pytest.raises(InvalidInputError, match="ended_at"):
            await sdk(
                client.user("A1").sessions.complete(
                    client.world.active_session["A1"], ended_at=moment
                )
            )


# -- round trips at the limits ---------------------------------------------------------------

EDGE_DOC = {
    "max": MAX_JSON_MAGNITUDE,
    "min": -MAX_JSON_MAGNITUDE,
    "tiny": 1e-20,
    "neg_tiny": -1e-20,
    "zero": 0,
    "float": 0.1 + 0.2,
    "deep": _deep(MAX_JSON_DEPTH - 2),
    "text": 'ünïcödé 😀 \n\t"\\ \x01',
}
EDGE_WORDS = [
    {"word": "hi", "start_ms": 0, "end_ms": 2_147_483_647, "confidence": 1e-20},
    {"word": "", "speaker": 1, "flag": True, "none": None, "k" * 64: MAX_JSON_MAGNITUDE},
]


async def test_documents_at_the_limits_read_back_as_stored(client: Sdk) -> None:
    sid = client.world.active_session["A2"]
    padding = MAX_METADATA_BYTES - json_size({**EDGE_DOC, "pad": ""})
    metadata = {**EDGE_DOC, "pad": "p" * padding}
    assert json_size(metadata) == MAX_METADATA_BYTES
    with owner(client.db) as conn:
        conn.execute(
            "update sessions set metadata = %s::jsonb, audio_quality = %s::jsonb,"
            " started_at = '2000-01-01 00:00:00+00' where id = %s",
            (json.dumps(metadata), json.dumps(EDGE_DOC), sid),
        )
        conn.execute(
            "update session_participants set persona = %s::jsonb where session_id = %s",
            (json.dumps(EDGE_DOC), sid),
        )
        conn.execute(
            "update transcript_segments set words = %s::jsonb where session_id = %s",
            (json.dumps(EDGE_WORDS), sid),
        )
    session = await sdk(client.user("MA").sessions.get(sid))
    assert session.metadata == metadata
    assert session.audio_quality == EDGE_DOC
    assert session.started_at.year == 2000
    transcript = await sdk(client.user("MA").sessions.get_transcript(sid))
    assert transcript.segments
    for stored in transcript.segments:
        assert stored.words == EDGE_WORDS
    listed = await sdk(client.user("MA").sessions.list())
    assert sid in {s.id for s in listed.items}
    # an analysis at the limits, read by its reader and by the GDPR export
    done = client.world.completed_session["A2"]
    with owner(client.db) as conn:
        conn.execute(
            "insert into analysis_results (session_id, provider, analysis_type, results)"
            " values (%s, 'edge', 'edges', %s::jsonb)",
            (done, json.dumps(EDGE_DOC)),
        )
    export = await sdk(client.vs.gdpr.export_user_data(client.world.person("A2").id))
    assert EDGE_DOC in [a["results"] for a in _all_values(export, "results")]


# create()'s own parameters cannot be metadata keys given as keyword arguments
_CREATE_PARAMETERS = frozenset(inspect.signature(SessionRepository.create).parameters)


@CI
@given(doc=st.dictionaries(TEXT.filter(lambda k: k not in _CREATE_PARAMETERS), DOCS, max_size=5))
def test_storable_metadata_round_trips_through_the_sdk(
    shared_world_db: tuple[Database, World], doc: dict[str, Any]
) -> None:
    db, world = shared_world_db
    owner_id = world.person("A1").id
    with VoiceSessions.from_postgres(db.dsn) as vs:
        rep = vs.as_user(owner_id)
        if json_problem(doc, max_bytes=MAX_METADATA_BYTES) is not None:
            with pytest.raises(InvalidInputError):
                rep.sessions.create(owner_id, "generated", **doc)
            return
        created = rep.sessions.create(owner_id, "generated", **doc)
        read = rep.sessions.get(created.id)
    assert read.metadata == _normalized(doc)


def _normalized(value: Any) -> Any:
    """What JSON gives back: -0.0 as PostgreSQL prints numeric zero, dict keys as given."""
    if isinstance(value, dict):
        return {k: _normalized(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_normalized(v) for v in value]
    if isinstance(value, float) and value == 0 and math.copysign(1, value) < 0:
        return 0.0
    return value


@pytest.mark.parametrize(
    "value", [float("nan"), float("inf"), Decimal("NaN"), Decimal("-Infinity"), Decimal("sNaN")]
)
def test_nothing_non_finite_is_ever_sent(value: Any) -> None:
    # The last line before either backend: both send what jsonable returns.
    with pytest.raises(InvalidInputError, match="finite"):
        jsonable({"a": [{"b": value}]})


@pytest.mark.parametrize(
    "metrics",
    [
        {"snr_db": float("nan")},
        {"snr_db": Decimal("Infinity")},
        {"x": 1e-50},
        {"x": 10**20},
        {"x": _deep(40)},
        {"x": "\x00"},
        {"x": "y" * 70_000},
    ],
    ids=lambda m: next(iter(m)),
)
async def test_hostile_audio_metrics_are_refused_before_any_io(
    client: Sdk, metrics: dict[str, Any]
) -> None:
    sid = client.world.active_session["A1"]
    with unchanged(client.db), pytest.raises(InvalidInputError, match=r"metrics"):
        await sdk(client.user("A1").updates.update_audio_metrics(sid, metrics))


def _all_values(doc: Any, key: str) -> list[dict[str, Any]]:
    """Every mapping in ``doc`` (at any depth) that has ``key``."""
    found: list[dict[str, Any]] = []
    stack = [doc]
    while stack:
        item = stack.pop()
        if isinstance(item, dict):
            if key in item:
                found.append(item)
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
    return found
