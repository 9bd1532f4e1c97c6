"""The value policy (migration 20261128000100_hardening_values.sql), table-driven from the
catalog: every jsonb, numeric/real and timestamp/date column of the public tables crossed with
hostile values is refused by a CHECK naming the column, leaving nothing changed; values at
the edges are accepted. Then the validating functions (append_transcript_segments,
record_analysis) as PostgREST calls them: 22023 naming the segment index and the field.

Columns are read from pg_attribute, so a column added later without the policy fails here.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest
from psycopg import sql
from psycopg.types.json import Jsonb

from tests.conftest import Database
from tests.db.test_migrations import empty_conn, empty_dsn  # noqa: F401 (fixtures)
from tests.support.db import owner, owner_rows, scalar, unchanged
from tests.support.segments import segment
from tests.support.world import World
from voicesessions.local import migrations

#: Size cap (bytes of JSON) of every jsonb column of the public tables; None: no size cap
#: (documents only the database's own functions write). Mirrors the migration's header.
JSON_CAPS: dict[tuple[str, str], int | None] = {
    ("sessions", "metadata"): 65_536,
    ("sessions", "audio_quality"): 65_536,
    ("sessions", "analytics_summary"): 65_536,
    ("session_participants", "persona"): 65_536,
    ("transcript_segments", "words"): 65_536,
    ("analysis_results", "results"): 1_000_000,
    ("session_analytics", "skill_scores"): 1_000_000,
    ("session_analytics", "retained"): 65_536,
    ("transcripts", "structured_content"): None,
    ("audit_log", "details"): None,
    ("gdpr_requests", "details"): None,
}


def _columns(db: Database, types: tuple[str, ...]) -> list[tuple[str, str]]:
    rows = owner_rows(
        db,
        "select c.relname as tbl, a.attname as col from pg_attribute a"
        " join pg_class c on c.oid = a.attrelid"
        " where c.relnamespace = 'public'::regnamespace and c.relkind in ('r', 'p')"
        " and a.attnum > 0 and not a.attisdropped"
        " and format_type(a.atttypid, null) = any(%s) order by 1, 2",
        (list(types),),
    )
    return [(r["tbl"], r["col"]) for r in rows]


def _deep(levels: int, leaf: Any = 1) -> Any:
    doc = leaf
    for _ in range(levels):
        doc = {"d": doc}
    return doc


def _stored(number: int, **fields: Any) -> dict[str, Any]:
    """A final segment as the database function takes it (no ``is_final``)."""
    found = {k: v for k, v in segment(number).items() if k != "is_final"}
    return {**found, **fields}


def _shaped(kind: str, value: Any) -> Any:
    """A document of the column's shape (object, or array of objects) holding ``value``."""
    return [{"k": value}] if kind == "array" else {"k": value}


@pytest.fixture
def writer(world_db: tuple[Database, World]) -> Iterator[tuple[Database, psycopg.Connection[Any]]]:
    """The owner with triggers off (session_replication_role = replica): what is tested is
    the CHECK constraints alone, whoever writes (lifecycle and append-only triggers aside)."""
    db, _ = world_db
    with owner(db) as conn:
        conn.execute("set session_replication_role = replica")
        # every table with a tested column has a row to update
        if not conn.execute("select 1 from public.audit_log limit 1").fetchone():
            conn.execute(
                "insert into public.audit_log (action, entity_type, actor_role, details)"
                " values ('test.row', 'test', 'service_role', '{}')"
            )
        yield db, conn


def _try_update(
    conn: psycopg.Connection[Any], table: str, column: str, value: Any, cast: str
) -> psycopg.Error | None:
    """Set ``column`` of one row of ``table`` to ``value`` (rolled back); the error or None.
    The table's other CHECK constraints are dropped for the try (rolled back too), so what
    is tested is that the column's own constraints decide, whatever else the row holds."""
    others = conn.execute(
        "select conname from pg_constraint where conrelid = %s::regclass and contype = 'c'"
        " and not starts_with(conname, %s)",
        (f"public.{table}", f"{table}_{column}_"),
    ).fetchall()
    query = sql.SQL(
        # (tableoid, ctid): a ctid alone names a row only within one partition.
        "update public.{t} set {c} = %s::{cast} where (tableoid, ctid) ="
        " (select tableoid, ctid from public.{t} limit 1)"
    ).format(t=sql.Identifier(table), c=sql.Identifier(column), cast=sql.SQL(cast))
    try:
        with conn.transaction(force_rollback=True):
            for (name,) in others:
                conn.execute(
                    sql.SQL("alter table public.{} drop constraint {}").format(
                        sql.Identifier(table), sql.Identifier(name)
                    )
                )
            cur = conn.execute(query, (value,))
            assert cur.rowcount == 1, f"no row of {table} to try {column} on"
    except psycopg.Error as exc:
        return exc
    return None


def _assert_refused_by_column(
    exc: psycopg.Error | None, table: str, column: str, what: str, states: set[str]
) -> None:
    assert exc is not None, f"{table}.{column} accepted {what}"
    assert exc.sqlstate in states, f"{table}.{column} {what}: {exc.sqlstate} {exc}"
    if exc.sqlstate == "23514":
        name = exc.diag.constraint_name or ""
        assert name.startswith(f"{table}_{column}_"), f"{what} refused by {name}"


# -- the catalog: every column is covered ----------------------------------------------------


def test_every_jsonb_column_has_a_validated_json_policy(template_db: Database) -> None:
    columns = _columns(template_db, ("jsonb",))
    assert set(columns) == set(JSON_CAPS), "document the new jsonb column's cap here"
    for table, column in columns:
        name = f"{table}_{column}_json_policy"
        assert scalar(
            template_db,
            "select convalidated from pg_constraint where conname = %s and conrelid = %s::regclass",
            (name, f"public.{table}"),
        ), name


@pytest.mark.parametrize(
    ("types", "suffix"),
    [
        (("numeric", "real", "double precision"), "finite"),
        (("timestamp with time zone", "date", "timestamp without time zone"), "in_window"),
    ],
)
def test_every_number_and_time_column_has_its_check(
    template_db: Database, types: tuple[str, ...], suffix: str
) -> None:
    columns = _columns(template_db, types)
    assert columns
    missing = [
        f"{t}.{c}"
        for t, c in columns
        if not scalar(
            template_db,
            "select count(*) from pg_constraint where conname = %s and convalidated",
            (f"{t}_{c}_{suffix}",),
        )
    ]
    assert not missing


#: Text columns without a length cap: written only by the database, from capped inputs.
UNCAPPED_TEXT = {("transcripts", "content")}


def test_every_text_column_has_a_length_or_pattern_cap(template_db: Database) -> None:
    uncapped = {
        (r["tbl"], r["col"])
        for r in owner_rows(
            template_db,
            "select c.relname as tbl, a.attname as col from pg_attribute a"
            " join pg_class c on c.oid = a.attrelid"
            " where c.relnamespace = 'public'::regnamespace and c.relkind in ('r', 'p')"
            " and a.attnum > 0 and not a.attisdropped and a.atttypid = 'text'::regtype"
            " and not exists (select 1 from pg_constraint k where k.conrelid = c.oid"
            "   and k.contype = 'c' and a.attnum = any(k.conkey)"
            "   and pg_get_constraintdef(k.oid) ~ '(char_length|~ )')",
        )
    }
    assert uncapped == UNCAPPED_TEXT


# -- hostile values on every column ------------------------------------------------------------

HOSTILE_NUMBERS = ["NaN", "Infinity", "-Infinity"]
HOSTILE_TIMES = [
    "-infinity",
    "infinity",
    "0001-01-01 00:00:00+00 BC",
    "1999-12-31 23:59:59+00",
    "2100-01-01 00:00:00+00",
    "20000-01-01 00:00:00+00",
]
EDGE_TIMES = ["2000-01-01 00:00:00+00", "2099-12-31 23:59:59+00"]


def test_numbers_that_are_not_finite_are_refused_everywhere(
    writer: tuple[Database, psycopg.Connection[Any]],
) -> None:
    db, conn = writer
    columns = _columns(db, ("numeric", "real", "double precision"))
    with unchanged(db):
        for table, column in columns:
            for value in HOSTILE_NUMBERS:
                exc = _try_update(conn, table, column, value, "numeric")
                _assert_refused_by_column(exc, table, column, value, {"23514", "22003"})


def test_timestamps_outside_the_window_are_refused_everywhere(
    writer: tuple[Database, psycopg.Connection[Any]],
) -> None:
    db, conn = writer
    columns = _columns(db, ("timestamp with time zone", "date"))
    with unchanged(db):
        for table, column in columns:
            for value in HOSTILE_TIMES:
                exc = _try_update(conn, table, column, value, "timestamptz")
                # 22008, 22003 (0A000 on PostgreSQL 17+, which has infinite intervals): the
                # generated duration cannot even be computed from it (triggers are off here)
                _assert_refused_by_column(
                    exc, table, column, value, {"23514", "22008", "22003", "0A000"}
                )
            for value in EDGE_TIMES:
                exc = _try_update(conn, table, column, value, "timestamptz")
                # another rule of the row may refuse it (ended_at >= started_at), the window not
                assert exc is None or not (exc.diag.constraint_name or "").endswith("_in_window"), (
                    f"{table}.{column} refused the edge {value}"
                )


def _hostile_documents(kind: str, cap: int | None) -> list[tuple[str, str]]:
    docs = [
        ("1e5000", '{"k": 1e5000}' if kind == "object" else '[{"k": 1e5000}]'),
        ("-1e5000", '{"k": -1e5000}' if kind == "object" else '[{"k": -1e5000}]'),
        ("1e-50", '{"k": 1e-50}' if kind == "object" else '[{"k": 1e-50}]'),
        ("2^53", json.dumps(_shaped(kind, 2**53))),
        ("deep", json.dumps(_shaped(kind, _deep(40)))),
        ("800 deep", json.dumps(_shaped(kind, _deep(800)))),
    ]
    if cap is not None:
        docs.append(("over the cap", json.dumps(_shaped(kind, "x" * cap))))
    return docs


def test_hostile_documents_are_refused_on_every_jsonb_column(
    writer: tuple[Database, psycopg.Connection[Any]],
) -> None:
    db, conn = writer
    with unchanged(db):
        for (table, column), cap in JSON_CAPS.items():
            kind = scalar(
                db,
                sql.SQL(
                    "select coalesce((select jsonb_typeof({c}) from public.{t}"
                    " where {c} is not null limit 1), 'array')"
                )
                .format(c=sql.Identifier(column), t=sql.Identifier(table))
                .as_string(),
            )
            for what, doc in _hostile_documents(kind or "array", cap):
                exc = _try_update(conn, table, column, doc, "jsonb")
                _assert_refused_by_column(exc, table, column, what, {"23514"})


def test_documents_at_the_limits_are_accepted_on_every_jsonb_column(
    writer: tuple[Database, psycopg.Connection[Any]],
) -> None:
    db, conn = writer
    for (table, column), cap in JSON_CAPS.items():
        if column == "words":
            continue  # flat word objects: test_segment_words_have_a_typed_shape
        kind = scalar(
            db,
            sql.SQL(
                "select coalesce((select jsonb_typeof({c}) from public.{t}"
                " where {c} is not null limit 1), 'array')"
            )
            .format(c=sql.Identifier(column), t=sql.Identifier(table))
            .as_string(),
        )
        edges = [2**53 - 1, -(2**53 - 1), 1e-20, -1e-20, 0, 0.5]
        docs = [_shaped(kind or "array", edges), _shaped(kind or "array", _deep(30))]
        if cap is not None:
            filler = _shaped(kind or "array", "")
            room = cap - len(json.dumps(filler, ensure_ascii=False).encode())
            docs.append(_shaped(kind or "array", "x" * room))
        for doc in docs:
            exc = _try_update(conn, table, column, json.dumps(doc), "jsonb")
            assert exc is None, f"{table}.{column}: {exc}"


@pytest.mark.parametrize(
    ("words", "refused"),
    [
        ([1, "two", None], True),
        ([{"word": "hi", "start_ms": 0, "end_ms": 10, "confidence": 0.9}], False),
        ([{"word": "hi", "speaker": 1, "punctuated_word": "Hi!", "x": None, "y": True}], False),
        ([{"word": 3}], True),
        ([{"start_ms": 1.5}], True),
        ([{"start_ms": 3.0}], True),
        ([{"end_ms": -1}], True),
        ([{"confidence": 2}], True),
        ([{"w": {"nested": 1}}], True),
        ([{"w": [1]}], True),
        ([{"": 1}], True),
        ([{"k" * 65: 1}], True),
        ([{"confidence": None}], False),
        ([], False),
    ],
)
def test_segment_words_have_a_typed_shape(
    writer: tuple[Database, psycopg.Connection[Any]], words: Any, refused: bool
) -> None:
    _, conn = writer
    exc = _try_update(conn, "transcript_segments", "words", json.dumps(words), "jsonb")
    if refused:
        _assert_refused_by_column(exc, "transcript_segments", "words", str(words), {"23514"})
    else:
        assert exc is None, exc


# -- the validating functions, as PostgREST calls them -----------------------------------------


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("confidence", 1e-50, r"segments\[1\]\.confidence holds the number"),
        ("seq", "1e5000", r"segments\[1\]\.seq holds the number 1000"),
        ("start_ms", 2**53, r"segments\[1\]\.start_ms holds the number"),
        ("words", [1, "two", None], r"segments\[1\]: words\[0\] must be an object"),
        ("words", [{"w": _deep(3)}], r"segments\[1\]\.words is nested more than 2"),
        ("words", [{"w": "x" * 70_000}], r"segments\[1\]: words has \d+ bytes"),
        ("text", "x" * 20_001, r"segments\[1\]: text has 20001 characters"),
    ],
)
def test_append_refuses_hostile_segments_naming_index_and_field(
    world_db: tuple[Database, World], field: str, value: Any, message: str
) -> None:
    db, world = world_db
    bad = _stored(901, **{field: value})
    body = json.dumps([_stored(900), bad]).replace('"1e5000"', "1e5000")
    with unchanged(db), db.api() as api, pytest.raises(psycopg.Error, match=message) as caught:
        api.run(
            world.identity("A1"),
            "select public.append_transcript_segments(%s, %s::jsonb)",
            (world.active_session["A1"], body),
            commit=True,
        )
    assert caught.value.sqlstate == "22023"


def test_append_caps_a_call_at_8_mib(world_db: tuple[Database, World]) -> None:
    db, world = world_db
    batch = [_stored(1000 + i, text="y" * 19_000) for i in range(450)]  # ~8.6 MB
    with (
        unchanged(db),
        db.api() as api,
        pytest.raises(psycopg.Error, match="at most 8388608") as caught,
    ):
        api.run(
            world.identity("A1"),
            "select public.append_transcript_segments(%s, %s)",
            (world.active_session["A1"], Jsonb(batch)),
            commit=True,
        )
    assert caught.value.sqlstate == "22023"


@pytest.mark.parametrize(
    ("results", "message"),
    [
        ({"question_count": 3.0}, r"results\.question_count must be an integer"),
        ({"filler_words_count": 2.0}, r"results\.filler_words_count must be an integer"),
        ({"overall_score": "1e5000"}, r"results holds the number"),
        ({"notes": {"deep": _deep(40)}}, r"results is nested more than 32"),
        ({"x": "x" * 1_000_001}, r"results has \d+ bytes"),
    ],
)
def test_record_analysis_refuses_hostile_results(
    world_db: tuple[Database, World], results: dict[str, Any], message: str
) -> None:
    db, world = world_db
    body = json.dumps(results).replace('"1e5000"', "1e5000")
    with unchanged(db), db.api() as api, pytest.raises(psycopg.Error, match=message) as caught:
        api.run(
            world.identity("service_role"),
            "select public.record_analysis(%s, 'ai', 'scoring', %s::jsonb)",
            (world.completed_session["A1"], body),
            commit=True,
        )
    assert caught.value.sqlstate == "22023"


@pytest.mark.parametrize("column", ["confidence", "api_cost_usd"])
@pytest.mark.parametrize("value", ["NaN", "Infinity"])
def test_record_analysis_refuses_non_finite_figures(
    world_db: tuple[Database, World], column: str, value: str
) -> None:
    db, world = world_db
    with unchanged(db), db.api() as api, pytest.raises(psycopg.Error) as caught:
        api.run(
            world.identity("service_role"),
            sql.SQL(
                "select public.record_analysis(%s, 'ai', 'scoring', '{{}}'::jsonb,"
                " {c} => %s::numeric)"
            ).format(c=sql.Identifier(column)),
            (world.completed_session["A1"], value),
            commit=True,
        )
    assert caught.value.sqlstate in ("22023", "23514", "22003")


# -- the migration over existing data ------------------------------------------------------

VALUES_MIGRATION = "20261128000100"


def test_the_migration_keeps_existing_bad_rows_and_still_checks_new_ones(
    empty_conn: psycopg.Connection[Any],  # noqa: F811 (the fixture imported above)
) -> None:
    files = migrations.load_migrations()
    before = [m for m in files if m.version < VALUES_MIGRATION]
    migrations.migrate(empty_conn, before)
    conn = empty_conn
    conn.execute("set session_replication_role = replica")
    company = conn.execute("insert into companies (name) values ('Old') returning id").fetchone()
    user = conn.execute(
        "insert into auth.users (id, email) values (gen_random_uuid(), 'o@x') returning id"
    ).fetchone()
    assert company is not None
    assert user is not None
    conn.execute(
        "insert into profiles (id, company_id, role, display_name) values (%s, %s, 'trainee',"
        " 'Old')",
        (user[0], company[0]),
    )
    conn.execute(
        "insert into sessions (profile_id, company_id, title, metadata, minute_cost)"
        " values (%s, %s, 'old', '{\"n\": 1e5000}', 'NaN')",
        (user[0], company[0]),
    )
    conn.execute("set session_replication_role = origin")
    migrations.migrate(empty_conn)  # does not fail on the old rows
    states = dict(
        conn.execute(
            "select conname, convalidated from pg_constraint where conname = any(%s)",
            (
                [
                    "sessions_metadata_json_policy",
                    "sessions_minute_cost_finite",
                    "sessions_audio_quality_json_policy",
                ],
            ),
        ).fetchall()
    )
    assert states == {
        "sessions_metadata_json_policy": False,
        "sessions_minute_cost_finite": False,
        "sessions_audio_quality_json_policy": True,
    }
    with pytest.raises(psycopg.Error, match="metadata") as caught:
        conn.execute(
            "insert into sessions (profile_id, title, metadata) values (%s, 'new',"
            " '{\"n\": 1e5000}')",
            (user[0],),
        )
    assert caught.value.sqlstate in ("22023", "23514")


def test_a_later_table_gets_the_policy_from_apply_value_policy(
    world_db: tuple[Database, World],
) -> None:
    db, _ = world_db
    with owner(db) as conn:
        conn.execute("create table public.later (id int, doc jsonb, at timestamptz, n real)")
        conn.execute("insert into public.later values (1, '{}', now(), 1)")
        conn.execute("select private.apply_value_policy()")
        conn.execute("select private.apply_value_policy()")  # idempotent
        for column, value, cast in (
            ("doc", '{"k": 1e5000}', "jsonb"),
            ("doc", json.dumps({"k": "x" * 65_536}), "jsonb"),
            ("at", "-infinity", "timestamptz"),
            ("n", "NaN", "real"),
        ):
            exc = _try_update(conn, "later", column, value, cast)
            _assert_refused_by_column(exc, "later", column, value[:20], {"23514"})


@pytest.mark.parametrize(
    ("column", "value", "message"),
    [
        ("metadata", '{"n": 1e5000}', r"sessions\.metadata holds the number"),
        ("metadata", json.dumps({"x": "x" * 70_000}), r"sessions\.metadata has \d+ bytes.*65536"),
        ("audio_quality", json.dumps(_deep(40)), r"sessions\.audio_quality is nested more than 32"),
        ("started_at", "-infinity", r"sessions\.started_at must be from 2000-01-01"),
        (
            "started_at",
            "2100-01-01 00:00:00+00",
            # the clock bound of 20261128000300 speaks first
            r"sessions\.started_at must be from 2000|started_at .* is in the future",
        ),
    ],
)
def test_a_direct_write_is_told_the_column_and_the_limit(
    world_db: tuple[Database, World], column: str, value: str, message: str
) -> None:
    db, world = world_db
    with (
        unchanged(db),
        db.api() as api,
        pytest.raises(psycopg.Error, match=message) as caught,
    ):
        api.run(
            # end users may not move started_at: the service role may, within the window
            world.identity("service_role" if column == "started_at" else "A1"),
            sql.SQL("update public.sessions set {} = %s where id = %s").format(
                sql.Identifier(column)
            ),
            (value, world.active_session["A1"]),
            commit=True,
        )
    assert caught.value.sqlstate == "22023"
