"""Hostile values in every column of every table, written by every identity, the way
PostgREST writes them: each one refused with a documented error, or stored and then read
back faithfully by every reader.

**The matrix.** Tables: every table of the schemas an API exposes (``public``, ``storage``,
``realtime``), checked against the catalog, in a database shaped like a Supabase project
(Supabase Realtime created before the migrations, GoTrue's audit log:
tests/support/supabase.py). Identities: anon, trainee A1, manager MA, admin AA of company A,
trainee B1 of company B, service_role (the world of tests/support/world.py); each writes rows
of its own side (A1's for company A's people, anon and service_role, B1's for B1).
Operations: insert and update. Values, per column type:

- text: NUL, a lone surrogate (as the raw invalid UTF-8 bytes ED A0 80, and as the JSON
  escape ``\\ud800``), 1 MB, empty;
- numeric, real: ``"NaN"``, ``"Infinity"``, ``"-Infinity"``, 1e308, -1, 1e20, 1e-50;
- smallint, integer, bigint: -1, the type's maximum, one past it, 3.0;
- jsonb: the number 1e5000 (alone and in an object), nesting 100, 1,000 and 3,000 deep,
  10 MB, ``"NaN"``/``"Infinity"`` strings, an array, a string and a number where an object is
  expected;
- timestamp(tz), date: -infinity, infinity, 0001-01-01 BC, 2090;
- uuid: the other company's id, its trainee's user id and active session id, a missing id;
- text[]: an element with NUL, a 1 MB element.

Generated and identity columns (never written by a client) and enum/boolean/tsvector columns
(no hostile value beyond an invalid label, which input parsing refuses) are left out. Where
an identity's role has no privilege to write a column at all, PostgreSQL refuses before it
reads a value: that combination sends one value (which must be refused), not all of them.
In ``storage`` and ``realtime`` (``SUPABASE_OWNED``) the service role is Supabase's own
services writing their own tables, beyond what the migrations can constrain: there only the
API users are probed (the migrations' policies decide what they may write).

Each write is one request as PostgREST sends it (tests/support/api.py): the JSON body as a
text parameter, read with ``json_to_record`` into the columns' types, inside one
transaction with ``role`` and ``request.jwt.claims`` set; ``insert ... select`` for insert,
``update ... from`` with a primary-key filter for update.

**What each probe must show.**

- Refused: with an SQLSTATE of the README's error table, i.e. class 22 or 23, 42501,
  P0002 or VS001-VS004, and not one of the raw failures: 54xxx (stack depth, program
  limits), XX000, 2200H, or 22P02 raised by a cast inside a function or trigger (22P02
  while reading the request body is input validation and fine). Every request is rolled
  back, and the whole database is compared (:class:`tests.support.db.Snapshot`) after each
  table's probes: nothing may remain.
- Stored (the request returned rows), for each (column, operation, value) once, by the
  least privileged identity that got it stored:

  1. committed alone, the owner reads the column back equal to what was sent (the
     database may put its own clock stamps and owner ids in timestamp and uuid columns, and
     derives a few columns itself: ``DATABASE_DERIVED``; numerics are compared after the
     column's scale). A non-finite number stored is a failure in itself (issue 11 class 4),
     so is 10 MB stored by an API user (class 9, size caps), and so is a user's row landing
     in another company's data;
  2. the probes that passed 1 are committed together, and every SDK reader of the written
     companies' data must still work (tests/support/readers.py: sessions, transcripts,
     analytics, the four dashboards, profiles, company, GDPR export and requests, as the
     owner, the admin and the service role), and so must the functions that process that
     data (completing the live session, anonymizing the finished one, erasing the trainee,
     retention for all companies; as the service role, rolled back). When something fails
     the group is halved until the failure is pinned on one probe.

  The snapshot is restored after each commit.

A request that changed no row (an update RLS hides) is neither and passes.

Failures are collected per table and reported together: table, column, identity,
operation, value and what went wrong. One world database serves the module.
"""

from __future__ import annotations

import datetime as dt
import json
import math
import re
import struct
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

import psycopg
import pytest
from psycopg import sql
from psycopg.adapt import Dumper
from psycopg.rows import TupleRow

from tests.conftest import Database
from tests.support.api import Api
from tests.support.db import Snapshot, data_tables, owner
from tests.support.readers import one_line, reader_failures
from tests.support.supabase import AUTH_AUDIT_LOG_DDL, supabase_world
from tests.support.world import PUBLIC_TABLES, World
from voicesessions import VoiceSessions

WorldDb = tuple[Database, World]

EXPOSED_SCHEMAS = ("public", "storage", "realtime")
TABLES = (
    *(f"public.{t}" for t in PUBLIC_TABLES),
    "storage.buckets",
    "storage.objects",
    "realtime.messages",
)
IDENTITIES = ("anon", "A1", "B1", "MA", "AA", "service_role")  # least privileged first
#: Schemas Supabase's own services own and write as the service role (the Storage API, the
#: Realtime server): what the service role stores there is theirs, out of the migrations'
#: reach (on hosted Supabase those tables are not even the migration role's); what API
#: users can write there is governed by the migrations' policies and is probed.
SUPABASE_OWNED = ("storage", "realtime")
OPERATIONS = ("insert", "update")
DOCUMENTED_STATES = frozenset({"42501", "P0002", "VS001", "VS002", "VS003", "VS004"})
UNDOCUMENTED_STATES = frozenset({"2200H", "XX000"})


# -- the request body, sent as PostgREST sends it --------------------------------------------


class RawText(bytes):
    """A request body: bytes sent to the server as a text parameter, unvalidated, as
    PostgREST passes the body it received (invalid UTF-8 is then the server's to refuse)."""


class _RawTextDumper(Dumper):
    oid = psycopg.adapters.types["text"].oid

    def dump(self, obj: Any) -> bytes:
        return bytes(obj)


psycopg.adapters.register_dumper(RawText, _RawTextDumper)


@dataclass(frozen=True)
class Value:
    """A hostile value: its label (for messages) and its JSON text, as bytes (a body may hold
    bytes that are not UTF-8)."""

    label: str
    json: bytes


def _v(label: str, text: str | bytes) -> Value:
    return Value(label, text if isinstance(text, bytes) else text.encode())


MB = 1_000_000
TEXT_VALUES = (
    _v("NUL", '"a\\u0000b"'),
    _v("lone surrogate (invalid UTF-8 bytes)", b'"a\xed\xa0\x80b"'),
    _v("lone surrogate (JSON escape)", '"a\\ud800b"'),
    _v("1 MB string", '"' + "x" * MB + '"'),
    _v("empty string", '""'),
)
NUMERIC_VALUES = (
    _v("NaN", '"NaN"'),
    _v("Infinity", '"Infinity"'),
    _v("-Infinity", '"-Infinity"'),
    _v("1e308", "1e308"),
    _v("-1", "-1"),
    _v("1e20", "100000000000000000000"),
    _v("1e-50", "1e-50"),
)
INTEGER_MAX = {"smallint": 2**15 - 1, "integer": 2**31 - 1, "bigint": 2**63 - 1}


def integer_values(type_name: str) -> tuple[Value, ...]:
    top = INTEGER_MAX[type_name]
    return (
        _v("-1", "-1"),
        _v(f"{type_name} max", str(top)),
        _v(f"{type_name} max + 1", str(top + 1)),
        _v("integral float 3.0", "3.0"),
    )


def _nested(depth: int) -> str:
    return '{"a":' * depth + "1" + "}" * depth


JSONB_VALUES = (
    _v("number 1e5000", "1e5000"),
    _v("object holding 1e5000", '{"a": 1e5000}'),
    _v("nested 100 deep", _nested(100)),
    _v("nested 1000 deep", _nested(1000)),
    _v("nested 3000 deep", _nested(3000)),
    _v("10 MB object", '{"a": "' + "x" * (10 * MB) + '"}'),
    _v("NaN/Infinity strings", '{"a": "NaN", "b": "Infinity", "c": "-Infinity"}'),
    _v("array instead of object", "[1, 2, 3]"),
    _v("string instead of object", '"text"'),
    _v("number instead of object", "42"),
)
TIMESTAMP_VALUES = (
    _v("-infinity", '"-infinity"'),
    _v("infinity", '"infinity"'),
    _v("0001-01-01 BC", '"0001-01-01 00:00:00+00 BC"'),
    _v("2090", '"2090-01-01T00:00:00+00:00"'),
)
DATE_VALUES = (
    _v("-infinity", '"-infinity"'),
    _v("infinity", '"infinity"'),
    _v("0001-01-01 BC", '"0001-01-01 BC"'),
    _v("2090", '"2090-01-01"'),
)
TEXT_ARRAY_VALUES = (
    _v("element with NUL", '["a\\u0000b"]'),
    _v("1 MB element", '["' + "x" * MB + '"]'),
)


# -- the world each identity writes in ------------------------------------------------------


@dataclass(frozen=True)
class Column:
    name: str
    type: str  # format_type(), e.g. "numeric(12,6)"
    base_type: str  # the type without modifiers, e.g. "numeric"


@dataclass
class Table:
    name: str  # schema.table
    columns: dict[str, Column]
    primary_key: tuple[str, ...]

    @property
    def ident(self) -> sql.Identifier:
        schema, table = self.name.split(".", 1)
        return sql.Identifier(schema, table)


@dataclass
class Side:
    """One company's rows that its people (and anon, service_role) write: ids for bodies and
    filters, and the other company's ids for the uuid values."""

    company: str
    company_id: uuid.UUID
    trainee: uuid.UUID
    active: uuid.UUID
    completed: uuid.UUID
    participant: uuid.UUID
    object_name: str
    message: uuid.UUID  # a Realtime broadcast on the active session's topic


def side_of(who: str) -> str:
    return "B" if who == "B1" else "A"


def make_sides(db: Database, world: World) -> dict[str, Side]:
    sides: dict[str, Side] = {}
    with owner(db) as conn:
        for company, trainee_key in (("A", "A1"), ("B", "B1")):
            trainee = world.person(trainee_key).id
            active = world.active_session[trainee_key]
            participant = conn.execute(
                "select id from public.session_participants where session_id = %s"
                " and kind = 'ai_buyer'",
                (active,),
            ).fetchone()
            assert participant is not None
            name = f"{world.companies[company]}/{trainee}/{active}.webm"
            conn.execute(
                "insert into storage.objects (bucket_id, name, owner, owner_id, metadata)"
                " values ('session-audio', %s, %s, %s, '{\"size\": 1}')",
                (name, trainee, str(trainee)),
            )
            message = conn.execute(
                "insert into realtime.messages (topic, extension, event, payload, private)"
                " values (%s, 'broadcast', 'transcript_chunk', '{\"text\": \"hello\"}', true)"
                " returning id",
                (f"session:{active}",),
            ).fetchone()
            assert message is not None
            sides[company] = Side(
                company,
                world.companies[company],
                trainee,
                active,
                world.completed_session[trainee_key],
                participant[0],
                name,
                message[0],
            )
    return sides


def other(sides: dict[str, Side], who: str) -> Side:
    return sides["A" if side_of(who) == "B" else "B"]


def base_row(table: str, side: Side, world: World) -> dict[str, Any]:
    """A valid row of ``table`` on ``side``: the body a probe puts its hostile value into."""
    s = side
    rows: dict[str, dict[str, Any]] = {
        "public.companies": {"name": "Probe Co"},
        "public.profiles": {
            "id": str(world.spare_user),
            "company_id": str(s.company_id),
            "role": "trainee",
            "display_name": "Probe",
        },
        "public.sessions": {"profile_id": str(s.trainee), "title": "probe"},
        "public.session_participants": {
            "session_id": str(s.active),
            "kind": "ai_buyer",
            "speaker_label": "probe_buyer",
            "display_name": "Probe",
            "persona": {},
        },
        "public.transcript_segments": {
            "session_id": str(s.active),
            "seq": 1000,
            "speaker": "trainee",
            "text": "probe",
            "start_ms": 5000,
            "end_ms": 5100,
            "confidence": 0.5,
        },
        "public.transcripts": {"session_id": str(s.active), "content": "probe", "word_count": 1},
        "public.analysis_results": {
            "session_id": str(s.completed),
            "provider": "probe",
            "analysis_type": "overall",
            "results": {},
        },
        "public.session_analytics": {"session_id": str(s.active)},
        "public.audit_log": {
            "action": "probe",
            "entity_type": "probe",
            "actor_role": "probe",
            "company_id": str(s.company_id),
            "details": {},
        },
        "public.gdpr_requests": {
            "kind": "export",
            "company_id": str(s.company_id),
            "subject_ref": "probe",
        },
        "public.company_invitations": {
            "company_id": str(s.company_id),
            "role": "trainee",
            "email": "probe@example.test",
            "token_hash": "0" * 64,
            "expires_at": (dt.datetime.now(dt.UTC) + dt.timedelta(days=1)).isoformat(),
        },
        "storage.buckets": {"id": "probe-bucket", "name": "probe-bucket"},
        "storage.objects": {
            "bucket_id": "session-audio",
            "name": f"{s.company_id}/{s.trainee}/{uuid.uuid4()}.webm",
            "owner": str(s.trainee),
            "owner_id": str(s.trainee),
        },
        "realtime.messages": {
            "topic": f"session:{s.active}",
            "extension": "broadcast",
            "event": "probe",
            "payload": {},
            "private": True,
        },
    }
    return rows[table]


def target(table: str, side: Side) -> dict[str, Any]:
    """The existing row of ``table`` on ``side`` that an update probe aims at."""
    s = side
    targets: dict[str, dict[str, Any]] = {
        "public.companies": {"id": s.company_id},
        "public.profiles": {"id": s.trainee},
        "public.sessions": {"id": s.active},
        "public.session_participants": {"id": s.participant},
        "public.transcript_segments": {"session_id": s.active, "seq": 0},
        "public.transcripts": {"session_id": s.completed},
        "public.analysis_results": {"session_id": s.completed},
        "public.session_analytics": {"session_id": s.completed},
        "public.audit_log": {"company_id": s.company_id},
        "public.gdpr_requests": {"company_id": s.company_id},
        "public.company_invitations": {"company_id": s.company_id},
        "storage.buckets": {"id": "session-audio"},
        "storage.objects": {"bucket_id": "session-audio", "name": s.object_name},
        "realtime.messages": {"id": s.message},
    }
    return targets[table]


def values_for(column: Column, foreign: Side) -> tuple[Value, ...]:
    t = column.base_type
    if t in ("text", "character varying"):
        return TEXT_VALUES
    if t in ("numeric", "real", "double precision"):
        return NUMERIC_VALUES
    if t in INTEGER_MAX:
        return integer_values(t)
    if t in ("jsonb", "json"):
        return JSONB_VALUES
    if t in ("timestamp with time zone", "timestamp without time zone"):
        return TIMESTAMP_VALUES
    if t == "date":
        return DATE_VALUES
    if t == "uuid":
        return (
            _v("other company's id", f'"{foreign.company_id}"'),
            _v("other company's trainee id", f'"{foreign.trainee}"'),
            _v("other company's session id", f'"{foreign.active}"'),
            _v("missing id", f'"{uuid.UUID(int=0xDEAD)}"'),
        )
    if t == "text[]":
        return TEXT_ARRAY_VALUES
    return ()


def load_tables(conn: psycopg.Connection[TupleRow]) -> dict[str, Table]:
    tables: dict[str, Table] = {}
    found = conn.execute(
        "select n.nspname || '.' || c.relname, a.attname, format_type(a.atttypid, a.atttypmod),"
        " format_type(a.atttypid, null), a.attgenerated <> '' or a.attidentity <> ''"
        " from pg_class c join pg_namespace n on n.oid = c.relnamespace"
        " join pg_attribute a on a.attrelid = c.oid and a.attnum > 0 and not a.attisdropped"
        " where n.nspname = any(%s) and c.relkind in ('r', 'p') and not c.relispartition"
        " order by 1, a.attnum",
        (list(EXPOSED_SCHEMAS),),
    ).fetchall()
    for name, column, type_, base, generated in found:
        table = tables.setdefault(name, Table(name, {}, ()))
        if not generated:
            table.columns[column] = Column(column, type_, base)
    for name, table in tables.items():
        pk = conn.execute(
            "select a.attname from pg_index i join pg_attribute a on a.attrelid = i.indrelid"
            " and a.attnum = any(i.indkey) where i.indrelid = %s::regclass and i.indisprimary"
            " order by a.attnum",
            (name,),
        ).fetchall()
        table.primary_key = tuple(str(r[0]) for r in pk)
    return tables


# -- requests as PostgREST sends them ---------------------------------------------------------


def _record_type(table: Table, columns: list[str]) -> sql.Composed:
    return sql.SQL(", ").join(
        sql.SQL("{} {}").format(sql.Identifier(c), sql.SQL(table.columns[c].type)) for c in columns
    )


def _returning(table: Table) -> sql.Composed:
    extra = ["company_id"] if "company_id" in table.columns else []
    if table.name == "storage.objects":
        extra = ["name"]
    if table.name == "realtime.messages":
        extra = ["topic"]
    cols = list(dict.fromkeys([*table.primary_key, *extra]))
    return sql.SQL(", ").join(
        sql.SQL("{}.{}::text as {}").format(table.ident, sql.Identifier(c), sql.Identifier(c))
        for c in cols
    )


def insert_request(table: Table, columns: list[str]) -> sql.Composed:
    return sql.SQL(
        "insert into {t} ({cols}) select {cols} from json_to_record(%s::json) as _({rec})"
        " returning {ret}"
    ).format(
        t=table.ident,
        cols=sql.SQL(", ").join(sql.Identifier(c) for c in columns),
        rec=_record_type(table, columns),
        ret=_returning(table),
    )


def update_request(table: Table, column: str, where: dict[str, Any]) -> sql.Composed:
    return sql.SQL(
        "update {t} set {col} = pgrst_body.{col} from (select %s::json as json_data) pgrst_payload,"
        " lateral (select {col} from json_to_record(pgrst_payload.json_data) as _({rec}))"
        " pgrst_body where {filter} returning {ret}"
    ).format(
        t=table.ident,
        col=sql.Identifier(column),
        rec=_record_type(table, [column]),
        filter=sql.SQL(" and ").join(
            sql.SQL("{}.{} = {}::{}").format(
                table.ident, sql.Identifier(k), sql.Placeholder(), sql.SQL(table.columns[k].type)
            )
            for k in where
        ),
        ret=_returning(table),
    )


def body(row: dict[str, Any], column: str, value: Value) -> RawText:
    """The JSON body ``row`` with ``column`` set to ``value``'s JSON text, byte for byte."""
    parts = [
        json.dumps(k).encode() + b":" + json.dumps(v).encode()
        for k, v in row.items()
        if k != column
    ]
    parts.append(json.dumps(column).encode() + b":" + value.json)
    return RawText(b"{" + b",".join(parts) + b"}")


@dataclass(frozen=True)
class Probe:
    table: str
    column: str
    who: str
    operation: str
    value: Value

    def __str__(self) -> str:
        return f"{self.table}.{self.column} {self.operation} as {self.who} = {self.value.label}"


@dataclass
class Request:
    query: sql.Composed
    params: tuple[Any, ...]


def request_for(probe: Probe, table: Table, sides: dict[str, Side], world: World) -> Request:
    side = sides[side_of(probe.who)]
    if probe.operation == "insert":
        row = base_row(probe.table, side, world)
        columns = [c for c in row if c != probe.column] + [probe.column]
        return Request(insert_request(table, columns), (body(row, probe.column, probe.value),))
    where = target(probe.table, side)
    return Request(
        update_request(table, probe.column, where),
        (body({}, probe.column, probe.value), *(str(v) for v in where.values())),
    )


def documented_refusal(error: psycopg.Error) -> bool:
    state = error.sqlstate or ""
    if state in UNDOCUMENTED_STATES or state.startswith("54"):
        return False
    if state == "22P02" and "function" in (error.diag.context or ""):
        return False  # a cast inside a function or trigger, not the request body
    return state[:2] in ("22", "23") or state in DOCUMENTED_STATES


def describe(error: psycopg.Error) -> str:
    text = f"{error.sqlstate} {str(error).splitlines()[0][:200]}"
    if error.diag.context:
        text += f" [context: {error.diag.context.splitlines()[0][:160]}]"
    return text


# -- reading back -----------------------------------------------------------------------------


def expected(column: Column, value: Value) -> Any:
    """What the owner should read back for ``value`` (psycopg's Python value)."""
    text = value.json.decode("utf-8", errors="surrogatepass")
    parsed = json.loads(text, parse_float=Decimal)
    t = column.base_type
    if t in ("jsonb", "json"):
        return json.loads(text)
    if t == "numeric":
        number = Decimal(str(parsed))
        scale = re.fullmatch(r"numeric\(\d+,(\d+)\)", column.type)
        if scale and number.is_finite():
            return number.quantize(Decimal(1).scaleb(-int(scale[1])))  # typmod rounding
        return number
    if t in ("real", "double precision"):
        number = float(parsed)
        return struct.unpack("f", struct.pack("f", number))[0] if t == "real" else number
    if t in INTEGER_MAX:
        return int(parsed)
    if t == "uuid":
        return uuid.UUID(parsed)
    if t == "timestamp with time zone":
        return dt.datetime.fromisoformat(parsed)
    if t == "date":
        return dt.date.fromisoformat(parsed)
    return parsed


#: Types whose sent value the database may replace by its own (clock stamps, the owner's
#: ids): for these the owner must read the column back, not necessarily what was sent.
DATABASE_STAMPED = frozenset(
    {"timestamp with time zone", "timestamp without time zone", "date", "uuid"}
)
#: Columns the database derives itself whatever is sent (README: session_analytics' date and
#: hour are those of the session).
DATABASE_DERIVED = frozenset({"public.session_analytics.session_hour"})
#: Values no API user may store, whatever reads them: issue 11 asks for size caps in SQL.
OVER_ANY_CAP = frozenset({"10 MB object"})


def not_finite(stored: Any) -> bool:
    if isinstance(stored, Decimal):
        return not stored.is_finite()
    return isinstance(stored, float) and not math.isfinite(stored)


def processors(side: Side) -> list[tuple[str, str, tuple[Any, ...]]]:
    """Database functions that must process whatever was stored (service role, rolled back)."""
    return [
        (
            "completing the live session",
            "update public.sessions set status = 'completed' where id = %s",
            (side.active,),
        ),
        (
            "gdpr_anonymize_session(completed)",
            "select public.gdpr_anonymize_session(%s)",
            (side.completed,),
        ),
        (
            "gdpr_erase_user(trainee)",
            "select public.gdpr_erase_user(%s, false, false)",
            (side.trainee,),
        ),
        ("gdpr_apply_retention(all)", "select public.gdpr_apply_retention(null, false)", ()),
    ]


# -- the run ----------------------------------------------------------------------------------


@dataclass
class Matrix:
    db: Database
    world: World
    api: Api
    vs: VoiceSessions
    snapshot: Snapshot
    tables: dict[str, Table]
    sides: dict[str, Side]
    reader: psycopg.Connection[TupleRow]  # the owner's, for reading rows back


@pytest.fixture(scope="module")
def supabase_world_db(template_db: Database) -> Iterator[WorldDb]:
    """The world in a database shaped like a Supabase project (Realtime before the
    migrations, GoTrue's audit log), so that realtime.messages is probed and the functions
    take their Supabase branches."""
    for db, world in supabase_world(template_db):
        with owner(db) as conn:
            conn.execute(AUTH_AUDIT_LOG_DDL)
        yield db, world


@pytest.fixture(scope="module")
def matrix(supabase_world_db: WorldDb) -> Iterator[Matrix]:
    db, world = supabase_world_db
    sides = make_sides(db, world)
    with owner(db) as conn:
        tables = load_tables(conn)
    snapshot = Snapshot(db)
    vs = VoiceSessions.from_postgres(db.dsn)
    api = Api(db.authenticator_dsn)
    reader = owner(db)
    try:
        yield Matrix(db, world, api, vs, snapshot, tables, sides, reader)
    finally:
        reader.close()
        api.close()
        vs.close()
        snapshot.close()


def test_the_matrix_covers_every_exposed_table(matrix: Matrix) -> None:
    with owner(matrix.db) as conn:
        catalog = {f"{s}.{t}" for s, t in data_tables(conn) if s in EXPOSED_SCHEMAS}
    assert catalog == set(TABLES)
    assert set(matrix.tables) == catalog


def run_probe(m: Matrix, probe: Probe) -> tuple[str, Any]:
    """("refused", error) / ("stored", rows) / ("no-op", None), nothing committed."""
    request = request_for(probe, m.tables[probe.table], m.sides, m.world)
    try:
        result = m.api.run(m.world.identity(probe.who), request.query, request.params)
    except psycopg.Error as error:
        return "refused", error
    return ("stored", result.rows) if result.rows else ("no-op", None)


def check_row(m: Matrix, probe: Probe, row: dict[str, Any]) -> list[str]:
    """The stored row as its owner reads it: the value sent, in the writer's company."""
    table = m.tables[probe.table]
    column = table.columns[probe.column]
    problems: list[str] = []
    company = row.get("company_id")
    if probe.table == "storage.objects":
        company = str(row.get("name", "")).split("/", 1)[0]
    if probe.table == "realtime.messages":
        found = m.reader.execute(
            "select company_id::text from public.sessions where 'session:' || id::text = %s",
            (row.get("topic"),),
        ).fetchone()
        company = found[0] if found else f"no session ({row.get('topic')})"
    mine = str(m.sides[side_of(probe.who)].company_id)
    if probe.who != "service_role" and company not in (None, mine):
        problems.append(f"stored in another company's data ({company})")
    key = {k: row[k] for k in table.primary_key}
    where = sql.SQL(" and ").join(
        sql.SQL("{}::text = {}").format(sql.Identifier(k), sql.Placeholder()) for k in key
    )
    try:
        with m.reader.transaction():
            stored = m.reader.execute(
                sql.SQL("select {} from {} where {}").format(
                    sql.Identifier(probe.column), table.ident, where
                ),
                tuple(key.values()),
            ).fetchone()
        assert stored is not None, f"row {key} not found"
        if not_finite(stored[0]):
            problems.append(f"non-finite number stored: {stored[0]!r}")
        elif (
            column.base_type not in DATABASE_STAMPED
            and f"{probe.table}.{probe.column}" not in DATABASE_DERIVED
        ):
            want = expected(column, probe.value)
            if stored[0] != want:
                problems.append(f"read back as {str(stored[0])[:80]!r}, not {str(want)[:80]!r}")
    except Exception as error:  # any failure to read back is the finding
        problems.append(f"owner cannot read it back: {one_line(error)}")
    if probe.who != "service_role" and probe.value.label in OVER_ANY_CAP:
        problems.append("no size cap: an API user stored it")
    return problems


def check_readers(m: Matrix, sides: list[Side]) -> list[str]:
    """Every SDK reader and processing function of ``sides``' data; what failed."""
    problems: list[str] = []
    for side in sides:
        problems += reader_failures(m.vs, m.world, side.company)
        for name, query, params in processors(side):
            try:
                m.api.run(m.world.identity("service_role"), query, params)
            except psycopg.Error as error:
                problems.append(f"{side.company}: {name} fails: {describe(error)}")
    return problems


def commit(m: Matrix, probe: Probe) -> list[dict[str, Any]]:
    """Send ``probe`` again and commit it; the rows it returned."""
    request = request_for(probe, m.tables[probe.table], m.sides, m.world)
    result = m.api.run(m.world.identity(probe.who), request.query, request.params, commit=True)
    return result.rows


def check_owner_reads(m: Matrix, probe: Probe) -> list[str]:
    """Commit ``probe`` alone, read the row back as its owner, restore."""
    try:
        rows = commit(m, probe)
        return [p for row in rows for p in check_row(m, probe, row)]
    except psycopg.Error as error:
        return [f"refused when committed alone: {describe(error)}"]
    finally:
        m.snapshot.restore()


def check_readers_of(m: Matrix, probes: list[Probe]) -> dict[Probe, list[str]]:
    """Commit ``probes`` together, run every reader and processor, restore; when something
    fails, halve the group until each failure is pinned on one probe. A probe that cannot be
    committed after the others (a unique key, a session no longer active) goes on alone."""
    committed: list[Probe] = []
    later: list[Probe] = []
    try:
        for probe in probes:
            try:
                commit(m, probe)
            except psycopg.Error as error:
                if len(probes) == 1:
                    return {probe: [f"refused when committed alone: {describe(error)}"]}
                later.append(probe)
                continue
            committed.append(probe)
        sides = sorted({side_of(p.who) for p in committed})
        failed = check_readers(m, [m.sides[s] for s in sides]) if committed else []
    finally:
        m.snapshot.restore()
    problems: dict[Probe, list[str]] = {}
    if failed and len(committed) == 1:
        problems[committed[0]] = failed
    elif failed:
        half = len(committed) // 2
        problems.update(check_readers_of(m, committed[:half]))
        problems.update(check_readers_of(m, committed[half:]))
    for probe in later:
        problems.update(check_readers_of(m, [probe]))
    return problems


def check_stored(m: Matrix, probes: list[Probe]) -> dict[Probe, list[str]]:
    """What is wrong with each stored probe: first each one alone as its owner reads it (a
    row its owner cannot read back as sent fails there, without running the readers), then
    the others together through every reader."""
    problems = {probe: check_owner_reads(m, probe) for probe in probes}
    readable = [probe for probe in probes if not problems[probe]]
    if readable:
        for probe, found in check_readers_of(m, readable).items():
            problems[probe] += found
    return problems


def batches(stored: list[Probe]) -> list[list[Probe]]:
    """Stored probes grouped so that no two in a group write the same column the same way
    (a later one would overwrite the earlier before the readers run)."""
    groups: list[list[Probe]] = []
    for probe in stored:
        for group in groups:
            if all((p.column, p.operation) != (probe.column, probe.operation) for p in group):
                group.append(probe)
                break
        else:
            groups.append([probe])
    return groups


def probes_of(m: Matrix, table_name: str) -> Iterator[Probe]:
    """Every column x identity x value x operation of ``table_name``. Where the identity's
    role has no privilege to write the column at all, PostgreSQL refuses before reading any
    value: one value is sent (and must be refused) instead of all of them."""
    table = m.tables[table_name]
    identities = IDENTITIES
    if table_name.split(".", 1)[0] in SUPABASE_OWNED:
        identities = tuple(who for who in IDENTITIES if who != "service_role")
    for column in table.columns.values():
        for who in identities:
            role = m.world.identity(who).role
            for operation in OPERATIONS:
                allowed = m.reader.execute(
                    "select has_column_privilege(%s, %s, %s, %s)",
                    (role, table_name, column.name, operation),
                ).fetchone()
                values = values_for(column, other(m.sides, who))
                if not (allowed and allowed[0]):
                    values = values[:1]
                for value in values:
                    yield Probe(table_name, column.name, who, operation, value)


@pytest.mark.parametrize("table_name", TABLES)
def test_hostile_values(matrix: Matrix, table_name: str) -> None:
    m = matrix
    if table_name not in m.tables:
        pytest.fail(f"{table_name} is not in the catalog")
    failures: list[str] = []
    stored: dict[tuple[str, str, str], Probe] = {}
    count = 0
    for probe in probes_of(m, table_name):
        count += 1
        outcome, detail = run_probe(m, probe)
        if outcome == "refused" and not documented_refusal(detail):
            failures.append(f"{probe}: refused with an undocumented error {describe(detail)}")
        elif outcome == "stored":
            key = (probe.column, probe.operation, probe.value.label)
            stored.setdefault(key, probe)  # by the least privileged identity
    changed = m.snapshot.changed()
    if changed:
        failures.append(f"requests left changes behind in {changed}")
        m.snapshot.restore()
    for group in batches(list(stored.values())):
        for probe, problems in check_stored(m, group).items():
            failures += [f"{probe}: stored, then {p}" for p in problems]
    assert count > 0
    assert not failures, (
        f"{len(failures)} failure(s) of {count} probes on {table_name}"
        f" ({len(stored)} stored and read back):\n" + "\n".join(failures)
    )
