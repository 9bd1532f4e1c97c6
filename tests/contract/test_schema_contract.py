"""The schema contract: everything the SDK names when it talks to PostgREST exists in the
migrated database, with a type that accepts what the SDK sends.

Nothing here is listed by hand. Every public method of ``VoiceSessions`` /
``AsyncVoiceSessions.from_supabase(...)`` runs (as the service role, as users made with
``as_user`` and with a user's own access token) against a respx router that answers each
request with plausible JSON built from the request and from the migrated catalog. From each
request the router *records* what the SDK named: the table of ``/rest/v1/<table>``, the
columns of ``select=``, the filter and ``order`` columns of the query string, the keys and
values of an insert or update body, the ``on_conflict`` and ``columns`` lists, and for
``/rest/v1/rpc/<fn>`` the function and its parameters with their JSON values. The tests then
hold the recording against the catalog of ``template_db`` (information_schema, pg_proc,
pg_enum, pg_index), and replay the recorded RPC calls on it the way PostgREST calls a
function (``json_to_record`` + named arguments, as the identity that sent them, each call
rolled back; both functions are read-only).
"""

from __future__ import annotations

import contextlib
import datetime
import decimal
import inspect
import json
import re
import sys
import uuid
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

import httpx
import jwt
import psycopg
import pytest
import respx
from psycopg import sql
from pydantic import BaseModel

from tests.conftest import Database
from tests.support.api import Identity as ApiIdentity
from voicesessions import (
    AsyncVoiceSessions,
    ConflictError,
    PermissionDeniedError,
    ProfileRole,
    RetentionPolicy,
    SessionStatus,
    VoiceSessions,
    _validation,
)
from voicesessions._async.repository import MAX_PAGE_SIZE, MAX_SEARCH_LIMIT

BASE = "http://supabase.test"
HOST = "supabase.test"
SECRET = "super-secret-jwt-token-with-at-least-32-characters-long"
SERVICE_KEY = jwt.encode({"iss": "supabase-demo", "role": "service_role"}, SECRET, "HS256")
ANON_KEY = jwt.encode({"iss": "supabase-demo", "role": "anon"}, SECRET, "HS256")
NOW = datetime.datetime(2026, 3, 4, 5, 6, 7, tzinfo=datetime.UTC)

#: The only endpoint outside PostgREST the SDK may call.
AUTH_ADMIN_USERS = ("POST", "/auth/v1/admin/users")
#: What the SDK is known to use; the recording must have seen at least this much.
EXPECTED_TABLES = {
    "sessions",
    "transcript_segments",
    "transcripts",
    "companies",
    "profiles",
    "session_analytics",
}
EXPECTED_FUNCTIONS = {
    "list_sessions",
    "search_transcripts",
    "record_analysis",
    "company_metrics",
    "user_progress",
    "team_overview",
    "metrics_timeseries",
}
#: A key the fake project adds to each row it returns, naming the table or function it came
#: from (row models ignore unknown keys), so the rows the SDK parses can be traced back.
SOURCE = "__source__"
#: Filter operators the recorder understands (``not.`` may precede any of them).
OPERATORS = {"eq", "neq", "gt", "gte", "lt", "lte", "in", "is", "like", "ilike"}


# -- the catalog of the migrated database -------------------------------------------------


@dataclass(frozen=True)
class PgType:
    """A column or parameter type, domains resolved to their base type."""

    schema: str
    name: str  # pg_type.typname: uuid, timestamptz, int4, jsonb, _text, session_status...
    labels: tuple[str, ...] | None = None  # the labels of an enum

    def __str__(self) -> str:
        return self.name if self.schema == "pg_catalog" else f"{self.schema}.{self.name}"


@dataclass(frozen=True)
class Column:
    name: str
    type: PgType
    nullable: bool
    generated: bool  # GENERATED ALWAYS (stored expression or identity): never writable


@dataclass(frozen=True)
class Function:
    """One overload of a function of schema public."""

    name: str
    signature: str  # pg_get_function_arguments
    params: dict[str, PgType]  # input parameters by name, in order
    sql_types: dict[str, str]  # the same, spelled as SQL (schema-qualified)
    required: frozenset[str]  # input parameters without a default
    returns_set: bool
    result: dict[str, PgType]  # the columns of the rows it returns (its table's, or its OUT)


@dataclass
class Catalog:
    tables: dict[str, dict[str, Column]]
    functions: dict[str, list[Function]]
    unique_keys: dict[str, list[frozenset[str]]]
    enums: dict[tuple[str, str], tuple[str, ...]]


_COLUMNS = """
select c.table_name, c.column_name, c.udt_schema, c.udt_name,
       c.is_nullable = 'YES' as nullable,
       c.is_generated = 'ALWAYS' or coalesce(c.identity_generation = 'ALWAYS', false)
         as generated
from information_schema.columns c
where c.table_schema = 'public'
order by c.table_name, c.ordinal_position
"""

_TABLES = """
select table_name from information_schema.tables where table_schema = 'public'
"""

_FUNCTIONS = """
select p.oid::bigint as oid, p.proname, p.pronargs, p.pronargdefaults, p.proretset,
       pg_catalog.pg_get_function_arguments(p.oid) as signature,
       (select c.relname from pg_catalog.pg_type rt
          join pg_catalog.pg_class c on c.oid = rt.typrelid
         where rt.oid = p.prorettype and c.relnamespace = 'public'::pg_catalog.regnamespace
           and c.relkind in ('r', 'p', 'v')) as returns_table,
       a.n, a.name, a.mode, bn.nspname as type_schema, b.typname as type_name,
       pg_catalog.format_type(t.oid, null) as sql_type
from pg_catalog.pg_proc p
left join lateral unnest(
  coalesce(p.proallargtypes, p.proargtypes::oid[]),
  p.proargnames,
  coalesce(p.proargmodes, array_fill('i'::"char", array[p.pronargs::int]))
) with ordinality as a(type, name, mode, n) on true
left join pg_catalog.pg_type t on t.oid = a.type
left join pg_catalog.pg_type b on b.oid = coalesce(nullif(t.typbasetype, 0), t.oid)
left join pg_catalog.pg_namespace bn on bn.oid = b.typnamespace
where p.pronamespace = 'public'::pg_catalog.regnamespace
order by p.oid, a.n
"""

_ENUMS = """
select n.nspname, t.typname, array_agg(e.enumlabel order by e.enumsortorder) as labels
from pg_catalog.pg_enum e
join pg_catalog.pg_type t on t.oid = e.enumtypid
join pg_catalog.pg_namespace n on n.oid = t.typnamespace
group by n.nspname, t.typname
"""

# Unique indexes an ``on conflict (...)`` can use: no expression, no predicate.
_UNIQUE_KEYS = """
select c.relname, array_agg(a.attname order by a.attname) as columns
from pg_catalog.pg_index i
join pg_catalog.pg_class c on c.oid = i.indrelid
join pg_catalog.pg_attribute a on a.attrelid = i.indrelid and a.attnum = any(i.indkey::int2[])
where c.relnamespace = 'public'::pg_catalog.regnamespace and i.indisunique
  and i.indpred is null and not (0 = any(i.indkey::int2[]))
group by i.indexrelid, c.relname
"""


def read_catalog(db: Database) -> Catalog:
    """The migrated schema as plain data (the connection is closed before returning, so the
    template can still be cloned)."""
    with db.connect() as conn:
        conn.execute("set search_path = ''")  # format_type then qualifies every name
        enum_rows = conn.execute(_ENUMS).fetchall()
        table_rows = conn.execute(_TABLES).fetchall()
        column_rows = conn.execute(_COLUMNS).fetchall()
        function_rows = conn.execute(_FUNCTIONS).fetchall()
        key_rows = conn.execute(_UNIQUE_KEYS).fetchall()
    enums: dict[tuple[str, str], tuple[str, ...]] = {
        (schema, name): tuple(labels) for schema, name, labels in enum_rows
    }

    def pg_type(schema: str, name: str) -> PgType:
        return PgType(schema, name, enums.get((schema, name)))

    tables: dict[str, dict[str, Column]] = {name: {} for (name,) in table_rows}
    for table, column, schema, name, nullable, generated in column_rows:
        tables[table][column] = Column(column, pg_type(schema, name), nullable, generated)

    functions: dict[str, list[Function]] = {}
    by_oid: dict[int, list[Any]] = {}
    for row in function_rows:
        by_oid.setdefault(row[0], []).append(row)
    for rows in by_oid.values():
        _, name, nargs, ndefaults, returns_set, signature, returns_table = rows[0][:7]
        args = [
            (arg_name or "", mode, pg_type(type_schema, type_name), sql_type)
            for *_, n, arg_name, mode, type_schema, type_name, sql_type in rows
            if n is not None
        ]
        inputs = [(a, t, spelled) for a, mode, t, spelled in args if mode in ("i", "b", "v")]
        if returns_table is not None:
            result = {c.name: c.type for c in tables[returns_table].values()}
        else:
            result = {a: t for a, mode, t, _ in args if mode in ("o", "t", "b")}
        # The last pronargdefaults input parameters have defaults.
        required = frozenset(arg for arg, _, _ in inputs[: nargs - ndefaults])
        functions.setdefault(name, []).append(
            Function(
                name=name,
                signature=signature,
                params={arg: t for arg, t, _ in inputs},
                sql_types={arg: spelled for arg, _, spelled in inputs},
                required=required,
                returns_set=returns_set,
                result=result,
            )
        )

    unique_keys: dict[str, list[frozenset[str]]] = {}
    for table, columns in key_rows:
        unique_keys.setdefault(table, []).append(frozenset(columns))
    return Catalog(tables, functions, unique_keys, enums)


# -- values against types -----------------------------------------------------------------

_INT_RANGES = {"int2": 2**15, "int4": 2**31, "int8": 2**63}
_TEXT_TYPES = {"text", "varchar", "bpchar", "citext", "name"}
_FLOAT_TYPES = {"numeric", "float4", "float8"}


def _parse_timestamp(text: str) -> datetime.datetime:
    return datetime.datetime.fromisoformat(text.replace("Z", "+00:00"))


def json_problem(value: Any, pg: PgType) -> str | None:
    """Why the JSON ``value`` does not fit a column or parameter of type ``pg`` (None: it
    does). JSON null fits every type (nullability is the database's own business)."""
    if value is None:
        return None
    if pg.name.startswith("_"):  # an array
        if not isinstance(value, list):
            return f"expected a JSON array for {pg}, got {type(value).__name__}"
        element = PgType(pg.schema, pg.name[1:])
        return next((p for v in value if (p := json_problem(v, element))), None)
    if pg.labels is not None:
        if isinstance(value, str) and value in pg.labels:
            return None
        return f"{value!r} is not a label of enum {pg} {list(pg.labels)}"
    kind = pg.name
    if kind in ("json", "jsonb"):
        if isinstance(value, (dict, list)):
            return None
        return f"expected a JSON object or array for {kind}, got {type(value).__name__}"
    if kind in _INT_RANGES:
        if isinstance(value, int) and not isinstance(value, bool):
            bound = _INT_RANGES[kind]
            return None if -bound <= value < bound else f"{value} is out of range for {kind}"
        return f"expected an integer for {kind}, got {value!r}"
    if kind in _FLOAT_TYPES:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return None
        return text_problem(value, pg) if isinstance(value, str) else f"{value!r} for {kind}"
    if kind == "bool":
        return None if isinstance(value, bool) else f"expected a boolean, got {value!r}"
    if not isinstance(value, str):
        return f"expected a string for {kind}, got {type(value).__name__} {value!r}"
    return text_problem(value, pg)


def text_problem(text: str, pg: PgType) -> str | None:
    """Why ``text`` (a JSON string or a query-string value) cannot be read as type ``pg``."""
    if pg.labels is not None:
        return None if text in pg.labels else f"{text!r} is not a label of enum {pg}"
    kind = pg.name
    try:
        if kind == "uuid":
            uuid.UUID(text)
        elif kind == "timestamptz":
            if _parse_timestamp(text).tzinfo is None:
                return f"{text!r} has no time zone, for a timestamptz"
        elif kind == "timestamp":
            _parse_timestamp(text)
        elif kind == "date":
            datetime.date.fromisoformat(text)
        elif kind in _INT_RANGES:
            int(text)
        elif kind in _FLOAT_TYPES:
            decimal.Decimal(text)
        elif kind == "bool":
            if text not in ("true", "false"):
                return f"{text!r} is not a boolean"
        elif kind in ("json", "jsonb"):
            json.loads(text)
        elif kind not in _TEXT_TYPES:
            return f"no rule for type {pg}: teach tests/contract/test_schema_contract.py"
    except (ValueError, decimal.InvalidOperation) as exc:
        return f"{text!r} is not a valid {kind}: {exc}"
    return None


# -- recording ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Filter:
    column: str
    operator: str
    values: tuple[str, ...]  # one value, or the members of ``in.(...)``


@dataclass
class Recorded:
    """What one request named."""

    method: str
    host: str
    path: str
    role: str | None  # the role of the Authorization JWT
    table: str | None = None
    function: str | None = None
    select: list[str] = field(default_factory=list)
    filters: list[Filter] = field(default_factory=list)
    order: list[str] = field(default_factory=list)
    on_conflict: list[str] = field(default_factory=list)
    columns: list[str] = field(default_factory=list)
    body: Any = None
    unknown: list[str] = field(default_factory=list)  # what the recorder could not read

    @property
    def written_rows(self) -> list[dict[str, Any]]:
        """The rows of an insert or the values of an update (empty for reads)."""
        if self.table is None or self.method not in ("POST", "PATCH"):
            return []
        rows = self.body if isinstance(self.body, list) else [self.body]
        return [row for row in rows if isinstance(row, dict)]

    def shape(self) -> tuple[Any, ...]:
        """The request without its values: what the two faces must agree on."""
        body_keys = (
            tuple(sorted(self.body)) if isinstance(self.body, dict) else (),
            tuple(sorted({k for row in self.written_rows for k in row})),
        )
        return (
            self.method,
            self.path,
            self.role,
            tuple(self.select),
            tuple((f.column, f.operator) for f in self.filters),
            tuple(self.order),
            tuple(self.on_conflict),
            tuple(sorted(self.columns)),
            body_keys,
        )


def _split_top_level(text: str) -> list[str]:
    """Split on commas outside quotes and parentheses."""
    parts, depth, quoted, current = [], 0, False, ""
    for char in text:
        if char == '"':
            quoted = not quoted
        elif not quoted and char == "(":
            depth += 1
        elif not quoted and char == ")":
            depth -= 1
        if char == "," and depth == 0 and not quoted:
            parts.append(current)
            current = ""
        else:
            current += char
    if current:
        parts.append(current)
    return parts


def _column_name(item: str) -> str:
    """``alias:column::cast`` -> ``column`` (quotes removed)."""
    name = item.split(":", 1)[1] if ":" in item.split("::", 1)[0] else item
    return name.split("::", 1)[0].strip().strip('"')


def record(request: httpx.Request) -> Recorded:
    """Read what ``request`` names; anything it cannot read goes to ``unknown``."""
    path = request.url.path
    rec = Recorded(
        method=request.method,
        host=request.url.host,
        path=path,
        role=_claims(request).get("role"),
    )
    if request.content:
        rec.body = json.loads(request.content)
    if path.startswith("/rest/v1/rpc/"):
        rec.function = path.removeprefix("/rest/v1/rpc/")
    elif path.startswith("/rest/v1/"):
        rec.table = path.removeprefix("/rest/v1/")
    else:
        return rec
    for name, value in request.url.params.multi_items():
        if name == "select":
            for item in _split_top_level(value):
                if "(" in item:
                    rec.unknown.append(f"embedded resource in select: {item}")
                elif item.strip() != "*":
                    rec.select.append(_column_name(item))
        elif name == "order":
            rec.order.extend(_column_name(part.split(".", 1)[0]) for part in value.split(","))
        elif name == "on_conflict":
            rec.on_conflict.extend(_column_name(c) for c in value.split(","))
        elif name == "columns":
            rec.columns.extend(_column_name(c) for c in value.split(","))
        elif name in ("limit", "offset"):
            continue
        elif name in ("or", "and", "not.or", "not.and"):
            rec.unknown.append(f"logical filter {name}={value}")
        else:
            rec.filters.append(_filter(name, value, rec.unknown))
    return rec


def _filter(column: str, value: str, unknown: list[str]) -> Filter:
    operator, _, operand = value.partition(".")
    if operator == "not":
        operator, _, operand = operand.partition(".")
    if operator not in OPERATORS:
        unknown.append(f"filter operator {operator!r} in {column}={value}")
    if operator == "in":
        members = _split_top_level(operand.removeprefix("(").removesuffix(")"))
        return Filter(column, operator, tuple(m.strip('"') for m in members))
    return Filter(column, operator, (operand,))


def _claims(request: httpx.Request) -> dict[str, Any]:
    scheme, _, token = request.headers.get("Authorization", "").partition(" ")
    if scheme != "Bearer":
        return {}
    try:
        claims: dict[str, Any] = jwt.decode(
            token, SECRET, algorithms=["HS256"], options={"verify_aud": False}
        )
    except jwt.PyJWTError:
        return {}
    return claims


# -- the fake project: plausible answers built from the request and the catalog ------------


def plausible(pg: PgType) -> Any:
    """A value PostgREST could return for a non-null column of type ``pg``."""
    if pg.name.startswith("_"):
        return []
    if pg.labels:
        return pg.labels[0]
    if pg.name == "uuid":
        return str(uuid.uuid4())
    if pg.name in ("timestamptz", "timestamp", "date"):
        value = NOW if pg.name == "timestamptz" else NOW.replace(tzinfo=None)
        return (value.date() if pg.name == "date" else value).isoformat()
    if pg.name in _INT_RANGES or pg.name in _FLOAT_TYPES:
        return 0
    if pg.name == "bool":
        return False
    if pg.name in ("json", "jsonb"):
        return {}
    return "x"


class FakeProject:
    """Answers every request like PostgREST or Supabase Auth would, and records it.

    Rows come from the catalog (every column of the table, null where nullable) overlaid with
    what the request says (``eq`` filters, inserted rows, updated values), so the SDK parses
    real shapes. A table or function missing from the catalog is a 404, as PostgREST answers
    it (the scenario then stops with PostgREST's message); everything else is answered and
    left to the tests to judge. With ``empty_writes`` inserts and updates return no row (a
    duplicate was skipped, or RLS hid the row), which drives the SDK down its read-back
    paths.
    """

    def __init__(self, catalog: Catalog) -> None:
        self.catalog = catalog
        self.recorded: list[Recorded] = []
        self.empty_writes = False

    def __call__(self, request: httpx.Request) -> httpx.Response:
        rec = record(request)
        self.recorded.append(rec)
        if (rec.method, rec.path) == AUTH_ADMIN_USERS:
            return httpx.Response(200, json=_auth_user(rec.body))
        if rec.function is not None and rec.function not in self.catalog.functions:
            return _not_found("PGRST202", f"Could not find the function public.{rec.function}")
        if rec.function is not None:
            return httpx.Response(200, json=self._rpc(rec))
        if rec.table not in self.catalog.tables:
            return _not_found("PGRST205", f"Could not find the table 'public.{rec.table}'")
        if rec.method == "GET":
            row = self._row(rec.table, _equalities(rec))
            return httpx.Response(200, json=[_project(row, rec.select)])
        if self.empty_writes:
            return httpx.Response(201 if rec.method == "POST" else 200, json=[])
        if rec.method == "POST":
            return httpx.Response(201, json=[self._row(rec.table, r) for r in rec.written_rows])
        if rec.method == "PATCH":
            values = {**_equalities(rec), **rec.written_rows[0]}
            return httpx.Response(200, json=[self._row(rec.table, values)])
        return httpx.Response(405, json={"message": f"unexpected {rec.method}"})

    def _row(self, table: str, values: dict[str, Any]) -> dict[str, Any]:
        columns = self.catalog.tables.get(table, {})
        row = {c.name: None if c.nullable else plausible(c.type) for c in columns.values()}
        # Echo what the request said, unless the database would not have stored it (the
        # tests report that; the scenario goes on).
        fitting = {
            k: v for k, v in values.items() if k in columns and not json_problem(v, columns[k].type)
        }
        return {SOURCE: table, **row, **fitting}

    def _rpc(self, rec: Recorded) -> list[dict[str, Any]] | dict[str, Any]:
        """Three rows of the function's result (so a page of two has a next page), with the
        parameters that name a result column echoed; one such row, as an object, for a
        function returning one row of a table; [] for an unknown function."""
        params = rec.body if isinstance(rec.body, dict) else {}
        overloads = self.catalog.functions.get(rec.function or "", [])
        function = _overload(self.catalog, rec.function or "", params) or next(
            iter(overloads), None
        )
        if function is None or not (function.returns_set or function.result):
            return []
        echoed = {k: v for k, v in params.items() if k in function.result and v is not None}
        rows = [
            {
                SOURCE: f"rpc/{function.name}",
                **{name: plausible(t) for name, t in function.result.items()},
                **echoed,
            }
            for _ in range(3)
        ]
        return rows if function.returns_set else rows[0]


def _not_found(code: str, message: str) -> httpx.Response:
    """PostgREST's answer for a table or function that is not in its schema cache."""
    return httpx.Response(
        404, json={"code": code, "message": message, "details": None, "hint": None}
    )


def _equalities(rec: Recorded) -> dict[str, Any]:
    return {f.column: f.values[0] for f in rec.filters if f.operator == "eq"}


def _project(row: dict[str, Any], columns: list[str]) -> dict[str, Any]:
    return {k: v for k, v in row.items() if k in (SOURCE, *columns)} if columns else row


def _auth_user(body: Any) -> dict[str, Any]:
    return {
        "id": body.get("id") or str(uuid.uuid4()),
        "aud": "authenticated",
        "role": "authenticated",
        "email": body.get("email"),
        "email_confirmed_at": NOW.isoformat(),
        "app_metadata": {"provider": "email", "providers": ["email"]},
        "user_metadata": {},
        "created_at": NOW.isoformat(),
        "updated_at": NOW.isoformat(),
    }


# -- the scenario: every public method, on both faces --------------------------------------


async def call(value: Any) -> Any:
    """The result of an SDK call on either face."""
    if inspect.isawaitable(value):
        return await value
    return value


async def close(vs: Any) -> None:
    await call(vs.aclose() if isinstance(vs, AsyncVoiceSessions) else vs.close())


async def exercise_sessions(vs: Any, owner: uuid.UUID, company_id: uuid.UUID) -> None:
    """Every method of ``vs.sessions``, with every filter of ``list``, a cursor and the
    largest accepted page and search."""
    sessions = vs.sessions
    started = NOW - datetime.timedelta(hours=1)
    session = await call(
        sessions.create(
            owner,
            "Discovery call",
            started_at=started,
            scenario="cold-call",
            persona={"name": "Bob", "mood": "sceptical"},
            level=2,
        )
    )
    await call(sessions.create(str(owner), "Follow-up"))
    await call(sessions.get(session.id))
    await call(sessions.list())
    filters: dict[str, Any] = {
        "company_id": company_id,
        "profile_id": owner,
        "status": SessionStatus.ACTIVE,
        "started_after": started - datetime.timedelta(days=7),
        "started_before": NOW,
    }
    page = await call(sessions.list(**filters, limit=2))
    if page.next_cursor is not None:  # else test_the_recording_saw_everything... fails
        await call(sessions.list(**filters, limit=2, cursor=page.next_cursor))
    await call(sessions.list(status="completed", profile_id=str(owner)))
    await call(sessions.list(limit=MAX_PAGE_SIZE))
    await call(sessions.update_status(session.id, "completed"))
    await call(sessions.complete(session.id, ended_at=started + datetime.timedelta(minutes=12)))
    await call(sessions.complete(session.id))
    await call(sessions.update_status(session.id, SessionStatus.ANALYZED))
    await call(sessions.archive(session.id))
    await call(sessions.get_transcript(session.id))
    await call(sessions.search_transcripts('pricing "next steps" -discount'))
    await call(sessions.search_transcripts("pricing", limit=MAX_SEARCH_LIMIT))
    await call(
        sessions.record_analysis(
            session.id,
            provider="openai",
            analysis_type="sales_scoring",
            results={"overall_score": 81, "skill_scores": {"opening": 70}, "summary": "ok"},
            version="2",
            confidence=0.9,
            processing_time_ms=1200,
            api_cost_usd="0.0125",
        )
    )
    await call(
        sessions.record_analysis(session.id, {"provider": "p", "analysis_type": "x", "results": {}})
    )
    await call(sessions.get_analytics(session.id))
    analytics = vs.analytics
    window = {"since": started, "until": started + datetime.timedelta(days=30)}
    await call(analytics.company_metrics(company_id, **window))
    await call(analytics.company_metrics(str(company_id)))
    await call(analytics.user_progress(owner, **window))
    await call(analytics.user_progress(owner))
    await call(analytics.team_overview(company_id, **window))
    await call(analytics.metrics_timeseries(company_id=company_id, bucket="month", **window))
    await call(analytics.metrics_timeseries(profile_id=owner))


async def exercise(face: str, project: FakeProject) -> None:
    """Every public method of the client, as the service role and as users."""
    cls: Any = AsyncVoiceSessions if face == "async" else VoiceSessions
    vs = cls.from_supabase(BASE, SERVICE_KEY, jwt_secret=SECRET)
    clients = [vs]
    try:
        tenants = vs.tenants
        company = await call(
            tenants.create_company(
                "Acme Sales",
                retention={
                    "audio_days": 30,
                    "transcript_days": 90,
                    "analysis_days": 180,
                    "session_days": 365,
                },
            )
        )
        await call(tenants.create_company("Beta Corp", retention=RetentionPolicy(audio_days=7)))
        await call(tenants.create_company("Plain Co"))
        await call(tenants.get_company(company.id))
        trainee = await call(
            tenants.create_user("rep@acme.test", password="correct-horse", user_id=uuid.uuid4())
        )
        admin = await call(tenants.create_user("admin@acme.test"))
        await call(tenants.create_profile(trainee, company.id, display_name="Riley Rep"))
        await call(tenants.create_profile(admin, company.id, role=ProfileRole.ADMIN))
        await call(tenants.get_profile(trainee))
        await call(tenants.list_profiles(company.id))
        await call(tenants.list_profiles(company.id, role="trainee"))
        await call(tenants.set_role(trainee, "manager"))

        as_admin = vs.as_user(admin)
        await call(as_admin.tenants.get_company(company.id))
        await call(as_admin.tenants.create_profile(uuid.uuid4(), company.id, role="trainee"))
        await call(as_admin.tenants.get_profile(trainee))
        await call(as_admin.tenants.list_profiles(company.id, role=ProfileRole.MANAGER))
        await call(as_admin.tenants.set_role(trainee, ProfileRole.TRAINEE))

        token = jwt.encode(
            {
                "sub": str(trainee),
                "role": "authenticated",
                "aud": "authenticated",
                "exp": int(datetime.datetime.now(datetime.UTC).timestamp()) + 600,
            },
            SECRET,
            "HS256",
        )
        by_token = cls.from_supabase(BASE, ANON_KEY, access_token=token)
        clients.append(by_token)
        for client in (vs, vs.as_user(trainee), by_token):
            await exercise_sessions(client, trainee, company.id)

        # Writes that return no row: a skipped duplicate, or a row RLS hides from the caller.
        project.empty_writes = True
        await call(vs.sessions.create(trainee, "Replayed"))
        await call(tenants.create_company("Replayed Co"))
        with contextlib.suppress(ConflictError):  # the row read back differs: a conflict
            await call(tenants.create_profile(trainee, company.id))
        with pytest.raises(PermissionDeniedError):
            await call(vs.as_user(admin).sessions.complete(uuid.uuid4()))
        with pytest.raises(PermissionDeniedError):
            await call(as_admin.tenants.set_role(trainee, "admin"))
    finally:
        project.empty_writes = False
        for client in reversed(clients):
            await close(client)


@dataclass
class Recording:
    face: str
    requests: list[Recorded]
    #: (where the row came from, the model the SDK parsed it into) for every row it parsed
    parsed: list[tuple[str | None, type[BaseModel]]]

    @property
    def rest(self) -> list[Recorded]:
        return [r for r in self.requests if r.table is not None or r.function is not None]

    def tables(self) -> set[str]:
        return {r.table for r in self.requests if r.table is not None}

    def functions(self) -> set[str]:
        return {r.function for r in self.requests if r.function is not None}

    def columns(self) -> set[tuple[str, str]]:
        """Every (table, column) the SDK named."""
        return {(r.table, column) for r, column, _ in self.named_columns()}

    def named_columns(self) -> Iterator[tuple[Recorded, str, str]]:
        """(request, column, where it was named) for every column named by a table request."""
        for r in self.requests:
            if r.table is None:
                continue
            for column in r.select:
                yield r, column, "select="
            for f in r.filters:
                yield r, f.column, "a filter"
            for column in r.order:
                yield r, column, "order="
            for column in r.on_conflict:
                yield r, column, "on_conflict="
            for column in r.columns:
                yield r, column, "columns="
            for row in r.written_rows:
                for column in row:
                    yield r, column, "the body"

    def parameters(self) -> set[tuple[str, str]]:
        return {
            (r.function, p)
            for r in self.requests
            if r.function is not None and isinstance(r.body, dict)
            for p in r.body
        }


@pytest.fixture(scope="module")
def catalog(template_db: Database) -> Catalog:
    return read_catalog(template_db)


@contextlib.contextmanager
def spy_on_parse_model(parsed: list[tuple[str | None, type[BaseModel]]]) -> Iterator[None]:
    """Record which model each row is parsed into, wherever the SDK imported the entry
    points that read rows: ``parse_model`` (one decoded row) and ``parse_rows_json`` (the
    rows of a JSON answer, validated from its bytes: decoded here only to trace them)."""
    original_row = _validation.parse_model
    original_json = _validation.parse_rows_json

    def spy_row(model: type[BaseModel], row: Any) -> Any:
        parsed.append((row.get(SOURCE) if isinstance(row, dict) else None, model))
        return original_row(model, row)

    def spy_json(model: type[BaseModel], body: bytes, **kwargs: Any) -> Any:
        rows = json.loads(body) if body.strip() else None
        for row in rows if isinstance(rows, list) else []:
            parsed.append((row.get(SOURCE) if isinstance(row, dict) else None, model))
        return original_json(model, body, **kwargs)

    spies = {"parse_model": (original_row, spy_row), "parse_rows_json": (original_json, spy_json)}
    with pytest.MonkeyPatch.context() as patch:
        for name, module in list(sys.modules.items()):
            if not name.startswith("voicesessions"):
                continue
            for attribute, (original, spy) in spies.items():
                if vars(module).get(attribute) is original:
                    patch.setattr(module, attribute, spy)
        yield


@pytest.fixture(scope="module")
async def recordings(catalog: Catalog) -> dict[str, Recording]:
    """What each face of the SDK sent while every public method ran."""
    result: dict[str, Recording] = {}
    for face in ("async", "sync"):
        project = FakeProject(catalog)
        parsed: list[tuple[str | None, type[BaseModel]]] = []
        with respx.mock(assert_all_called=False) as router, spy_on_parse_model(parsed):
            router.route().mock(side_effect=project)
            await exercise(face, project)
        result[face] = Recording(face, project.recorded, parsed)
    return result


@pytest.fixture(params=["async", "sync"])
def recording(request: pytest.FixtureRequest, recordings: dict[str, Recording]) -> Recording:
    return recordings[request.param]


def _where(r: Recorded) -> str:
    return f"{r.method} {r.path} (as {r.role})"


# -- the recording is real ----------------------------------------------------------------


def test_the_recording_saw_everything_the_sdk_uses(recording: Recording) -> None:
    assert recording.tables() >= EXPECTED_TABLES
    assert recording.functions() >= EXPECTED_FUNCTIONS
    methods = {(r.method, r.table is not None) for r in recording.rest}
    assert methods >= {("GET", True), ("POST", True), ("PATCH", True), ("POST", False)}
    assert {r.role for r in recording.rest} >= {"service_role", "authenticated"}
    assert len(recording.columns()) >= 25
    assert len(recording.parameters()) >= 10
    assert all(r.on_conflict for r in recording.rest if r.method == "POST" and r.table)
    assert any(r.select for r in recording.rest), "no request named its columns"
    assert any(r.order for r in recording.rest), "no request ordered its rows"
    # sessions.list with every filter and a cursor: a call where no parameter is null
    assert any(None not in r.body.values() for r in recording.rest if r.function == "list_sessions")
    assert [r for r in recording.rest if r.unknown] == [], "the recorder missed something"


def test_auth_admin_users_is_the_only_endpoint_outside_postgrest(recording: Recording) -> None:
    assert {r.host for r in recording.requests} == {HOST}
    outside = {(r.method, r.path) for r in recording.requests if not r.path.startswith("/rest/v1/")}
    assert outside == {AUTH_ADMIN_USERS}
    for r in recording.rest:
        assert re.fullmatch(r"/rest/v1/(rpc/)?[a-z_][a-z0-9_]*", r.path), r.path
        assert (r.method == "POST") if r.function else r.method in ("GET", "POST", "PATCH")


def test_both_faces_send_the_same_requests(recordings: dict[str, Recording]) -> None:
    shapes = {face: [r.shape() for r in rec.requests] for face, rec in recordings.items()}
    assert shapes["sync"] == shapes["async"]


# -- tables and columns -------------------------------------------------------------------


def test_every_table_exists(recording: Recording, catalog: Catalog) -> None:
    assert sorted(recording.tables() - set(catalog.tables)) == []


def test_every_column_exists(recording: Recording, catalog: Catalog) -> None:
    missing = sorted(
        {
            f"{r.table}.{column} (named in {where} of {_where(r)})"
            for r, column, where in recording.named_columns()
            if column not in catalog.tables.get(r.table or "", {})
        }
    )
    assert missing == []


def test_written_values_fit_their_columns(recording: Recording, catalog: Catalog) -> None:
    problems = []
    for r in recording.rest:
        columns = catalog.tables.get(r.table or "", {})
        for row in r.written_rows:
            for name, value in row.items():
                if name in columns and (problem := json_problem(value, columns[name].type)):
                    problems.append(f"{r.table}.{name} in {_where(r)}: {problem}")
    assert problems == []


def test_filter_values_fit_their_columns(recording: Recording, catalog: Catalog) -> None:
    problems = []
    for r in recording.rest:
        columns = catalog.tables.get(r.table or "", {})
        for f in r.filters:
            if f.column not in columns:
                continue
            if f.operator == "is":
                ok = f.values[0] in ("null", "true", "false", "unknown")
                problem = None if ok else f"is.{f.values[0]}"
            else:
                column_type = columns[f.column].type
                problem = next((p for v in f.values if (p := text_problem(v, column_type))), None)
            if problem:
                problems.append(f"{r.table}.{f.column} {f.operator} in {_where(r)}: {problem}")
    assert problems == []


def test_generated_columns_are_never_written(recording: Recording, catalog: Catalog) -> None:
    written = {
        f"{r.table}.{name}"
        for r in recording.rest
        for row in r.written_rows
        for name in row
        if (column := catalog.tables.get(r.table or "", {}).get(name)) and column.generated
    }
    assert sorted(written) == []


def test_on_conflict_targets_a_unique_key(recording: Recording, catalog: Catalog) -> None:
    targets = {(r.table, frozenset(r.on_conflict)) for r in recording.rest if r.on_conflict}
    assert targets, "no insert named its conflict target"
    bad = sorted(
        f"{table}({', '.join(sorted(cols))})"
        for table, cols in targets
        if cols not in catalog.unique_keys.get(table or "", [])
    )
    assert bad == []


def test_row_models_read_only_columns_that_exist(recording: Recording, catalog: Catalog) -> None:
    """Every field of a row model the SDK parsed a table's (or a function's) rows into is a
    column of those rows: a renamed column cannot turn into a silent default."""
    traced = {(source, model) for source, model in recording.parsed if source is not None}
    assert {source for source, _ in traced} >= {f"rpc/{f}" for f in EXPECTED_FUNCTIONS}
    assert len({model for _, model in traced}) >= 5
    problems = []
    for source, model in sorted(traced, key=lambda item: (item[0], item[1].__name__)):
        if source.startswith("rpc/"):
            name = source.removeprefix("rpc/")
            columns = {c for f in catalog.functions.get(name, []) for c in f.result}
        else:
            columns = set(catalog.tables.get(source, {}))
        missing = sorted(set(model.model_fields) - columns)
        if missing:
            problems.append(f"{model.__name__} from {source}: no column {missing}")
    assert problems == []


# -- functions ----------------------------------------------------------------------------


def _overload(catalog: Catalog, name: str, params: Iterable[str]) -> Function | None:
    """The overload PostgREST would call with these named parameters (None: no such one)."""
    names = set(params)
    for candidate in catalog.functions.get(name, []):
        if names <= set(candidate.params) and candidate.required <= names:
            return candidate
    return None


def test_every_rpc_function_takes_the_parameters_sent(
    recording: Recording, catalog: Catalog
) -> None:
    problems = []
    for r in recording.rest:
        if r.function is None:
            continue
        if not isinstance(r.body, dict):
            problems.append(f"{r.function}: the body is not a JSON object: {r.body!r}")
        elif r.function not in catalog.functions:
            problems.append(f"public.{r.function} does not exist")
        elif _overload(catalog, r.function, r.body) is None:
            signatures = [f.signature for f in catalog.functions[r.function]]
            problems.append(f"public.{r.function} takes none of {sorted(r.body)}: {signatures}")
        if r.filters or r.order or r.select:
            problems.append(f"{r.function}: filters on an rpc are not checked by this test")
    assert sorted(set(problems)) == []


def test_rpc_values_fit_their_parameters(recording: Recording, catalog: Catalog) -> None:
    problems = []
    for r in recording.rest:
        if r.function is None or not isinstance(r.body, dict):
            continue
        overload = _overload(catalog, r.function, r.body)
        for name, value in r.body.items():
            if overload and (problem := json_problem(value, overload.params[name])):
                problems.append(f"{r.function}({name}) in {_where(r)}: {problem}")
    assert problems == []


def _rpc_sql(function: Function, params: dict[str, Any]) -> sql.Composed:
    """The call as PostgREST makes it: the body read with ``json_to_record`` into the
    parameters' types, passed as named arguments."""
    names = list(params)
    record_type = sql.SQL(", ").join(
        sql.SQL("{} {}").format(sql.Identifier(n), sql.SQL(function.sql_types[n])) for n in names
    )
    arguments = sql.SQL(", ").join(sql.SQL("{0} := _.{0}").format(sql.Identifier(n)) for n in names)
    return sql.SQL(
        "select pgrst_call.* from json_to_record(%s::json) as _({}),"
        " lateral {}.{}({}) as pgrst_call"
    ).format(record_type, sql.Identifier("public"), sql.Identifier(function.name), arguments)


#: Answers about data rather than about the call: the replay runs on an empty template, as
#: a random user, so a session, company or person the fake project made up is not found
#: (P0002) or not the caller's (42501). Every function checks its arguments first, so a
#: value it refuses still fails the replay with 22023 / 22004.
DATA_ANSWERS = {"P0002", "42501"}


def _replay_failures(recording: Recording, catalog: Catalog, db: Database) -> dict[str, str]:
    """Run every recorded RPC call on ``db`` as the identity that sent it (one rolled-back
    transaction each); return the calls that failed, with the database's error."""
    failures: dict[str, str] = {}
    with db.api() as api:
        for r in recording.rest:
            if r.function is None or not isinstance(r.body, dict):
                continue
            overload = _overload(catalog, r.function, r.body)
            if overload is None:
                continue  # reported by test_every_rpc_function_takes_the_parameters_sent
            who = (
                ApiIdentity.user(uuid.uuid4())
                if r.role == "authenticated"
                else ApiIdentity.service_role()
            )
            try:
                api.run(
                    who,
                    _rpc_sql(overload, r.body),
                    (json.dumps(r.body),),
                    path=f"/rpc/{r.function}",
                )
            except psycopg.Error as exc:
                if exc.sqlstate in DATA_ANSWERS:
                    continue
                failures[f"{r.function}({json.dumps(r.body)}) as {r.role}"] = (
                    f"{exc.sqlstate}: {exc}"
                )
    return failures


@pytest.mark.parametrize("face", ["async", "sync"])
def test_recorded_rpc_calls_run_on_the_database(
    recordings: dict[str, Recording], catalog: Catalog, template_db: Database, face: str
) -> None:
    """Values that fit the parameter types can still be refused by the function (a range
    check, a pairing rule): every call the SDK made must run."""
    assert _replay_failures(recordings[face], catalog, template_db) == {}


def test_the_replay_is_not_trivial(recordings: dict[str, Recording]) -> None:
    calls = [r for rec in recordings.values() for r in rec.rest if r.function]
    assert {r.function for r in calls} >= EXPECTED_FUNCTIONS
    assert {r.role for r in calls} >= {"service_role", "authenticated"}
