"""The database measures a completed call itself (private.conversation_metrics, recorded by the
trigger sessions_record_conversation_metrics) with the same definitions as
voicesessions.metrics: each case of tests/support/metrics_cases.py, and generated
transcripts, give the very same results on both sides."""

from __future__ import annotations

import json
import unicodedata
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from psycopg.types.json import Jsonb

from tests.conftest import Database
from tests.support.db import owner
from tests.support.metrics_cases import CASES, MetricsCase
from tests.support.world import World
from voicesessions.metrics import (
    _EDGE_PUNCTUATION,
    DEFAULT_FILLERS,
    MAX_RESULT_SPEAKERS,
    METRICS_VERSION,
    conversation_metrics,
)


@pytest.fixture(scope="module")
def conn(
    shared_world_db: tuple[Database, World],
) -> Iterator[tuple[psycopg.Connection[Any], World]]:
    db, world = shared_world_db
    with owner(db) as c:
        yield c, world


def measured(
    conn: psycopg.Connection[Any], world: World, segments: list[dict[str, Any]], language: Any
) -> dict[str, Any] | None:
    """Completes a new session of A1 holding ``segments`` (seq = position) and returns the
    results the database recorded; everything is rolled back."""
    metadata = {} if language is None else {"language": language}
    with conn.transaction(force_rollback=True):
        row = conn.execute(
            "insert into public.sessions (profile_id, title, metadata) values (%s, 'm', %s)"
            " returning id",
            (world.person("A1").id, Jsonb(metadata)),
        ).fetchone()
        assert row is not None
        sid = row[0]
        with conn.cursor() as cur:
            cur.executemany(
                "insert into public.transcript_segments (session_id, seq, speaker, text,"
                " start_ms, end_ms) values (%s, %s, %s, %s, %s, %s)",
                [
                    (sid, i, s["speaker"], s["text"], s["start_ms"], s["end_ms"])
                    for i, s in enumerate(segments)
                ],
            )
        conn.execute("update public.sessions set status = 'completed' where id = %s", (sid,))
        rows = conn.execute(
            "select provider, version, results, api_cost_usd from public.analysis_results"
            " where session_id = %s and analysis_type = 'conversation_metrics'",
            (sid,),
        ).fetchall()
    if not rows:
        return None
    assert len(rows) == 1
    provider, version, results, cost = rows[0]
    assert (provider, version, cost) == ("voicesessions", METRICS_VERSION, None)
    assert isinstance(results, dict)
    return results


def python_results(segments: list[dict[str, Any]], language: str) -> dict[str, Any] | None:
    if not segments:
        return None
    results = conversation_metrics(segments, language=language).analysis_results()
    loaded: dict[str, Any] = json.loads(json.dumps(results))
    return loaded


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.name)
def test_the_database_records_what_python_computes(
    conn: tuple[psycopg.Connection[Any], World], case: MetricsCase
) -> None:
    c, world = conn
    got = measured(c, world, case.segments, case.metadata_language)
    expected = python_results(case.segments, case.language)
    assert got == expected
    if got is not None:
        for key, value in case.expected.items():
            assert got[key] == (pytest.approx(value) if isinstance(value, float) else value)


# Text made of the pieces that matter: fillers of every language in any case, punctuation,
# question marks, every kind of whitespace, and arbitrary characters.
_FILLER_WORDS = sorted({w for ws in DEFAULT_FILLERS.values() for f in ws for w in f.split()})
_WHITESPACE = [c for c in map(chr, range(0x3001)) if c.isspace()]
_token = st.one_of(
    st.sampled_from(_FILLER_WORDS),
    st.sampled_from(_FILLER_WORDS).map(str.upper),
    st.sampled_from(_FILLER_WORDS).map(lambda w: unicodedata.normalize("NFD", w.title())),
    st.text(alphabet=_EDGE_PUNCTUATION + "?\uff1f", min_size=1, max_size=3),
    st.text(
        alphabet=st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"),
        min_size=1,
        max_size=6,
    ),
)
_text = st.lists(st.tuples(_token, st.sampled_from(_WHITESPACE)), max_size=12).map(
    lambda parts: "".join(t + w for t, w in parts)
)
_segment = st.builds(
    lambda speaker, start, length, text: {
        "speaker": speaker,
        "start_ms": start,
        "end_ms": start + length,
        "text": text,
    },
    st.sampled_from(["trainee", "buyer", "coach", "Ünïcødé 🤖"]),
    st.integers(0, 20_000),
    st.integers(0, 5_000),
    _text,
)


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    segments=st.lists(_segment, max_size=12),
    language=st.sampled_from([*sorted(DEFAULT_FILLERS), "en-GB", "PT-br", "sw"]),
)
def test_generated_transcripts_give_the_same_results(
    conn: tuple[psycopg.Connection[Any], World], segments: list[dict[str, Any]], language: str
) -> None:
    c, world = conn
    assert measured(c, world, segments, language) == python_results(segments, language)


def test_the_definitions_in_sql_are_those_of_the_python_module(
    conn: tuple[psycopg.Connection[Any], World],
) -> None:
    c, _ = conn
    row = c.execute("select private.metrics_definitions()").fetchone()
    assert row is not None
    defs = row[0]
    assert defs["version"] == METRICS_VERSION
    assert defs["max_result_speakers"] == MAX_RESULT_SPEAKERS
    assert defs["fillers"] == {k: list(v) for k, v in DEFAULT_FILLERS.items()}
    assert defs["whitespace"] == "".join(c for c in map(chr, range(0x110000)) if c.isspace())
    assert defs["edge_punctuation"] == _EDGE_PUNCTUATION
    # the folding covers every character whose lower case is one character of a filler
    alphabet = {ch for ws in DEFAULT_FILLERS.values() for f in ws for ch in f if ch != " "}
    upper = [
        ch
        for ch in map(chr, range(0x110000))
        if not 0xD800 <= ord(ch) < 0xE000
        and ch != ch.lower()
        and len(ch.lower()) == 1
        and ch.lower() in alphabet
    ]
    assert defs["fold_from"] == "".join(upper)
    assert defs["fold_to"] == "".join(ch.lower() for ch in upper)
