"""What does the SDK add to a request? ``vs.sessions.get`` / ``list`` vs a raw client.

The same request, made by the SDK and by a raw client, in interleaved rounds (SDK then raw,
raw then SDK, ...), each round timing ``--calls`` calls in a row; the ratio is the SDK's
median over the raw client's median. Both faces of the SDK (sync and async) over both
backends:

- **Postgres**: the SDK's ``from_postgres(dsn).as_user(trainee)`` against raw psycopg on one
  connection sending the same SQL in the same request context (a READ ONLY transaction
  that first sets ``role``, ``request.jwt.claims``, ... as PostgREST and the Postgres
  backend do: :func:`voicesessions._request.request_context`).
- **Supabase** (no network): the SDK's ``from_supabase`` against raw postgrest-py (the
  ``postgrest`` package supabase-py uses), both over an ``httpx.MockTransport`` answering
  with the same JSON, recorded from the database (what PostgREST would answer). This is
  the SDK's own cost per call: building the request, reading the answer, typed models.

``get`` reads one session by id; ``list`` reads the first page (50 sessions: 51 rows asked,
to know whether a next page exists) of a trainee holding ``--sessions`` sessions.

    python -m benchmarks.sdk_overhead [--sessions 120] [--rounds 30] [--calls 40] [--quick]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import statistics
import sys
import time
import uuid
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import jwt
import postgrest
import psycopg
from psycopg.rows import dict_row

from benchmarks._compare import Comparison, Goal, Report
from benchmarks._server import migrated_database
from voicesessions import AsyncVoiceSessions, VoiceSessions
from voicesessions._identity import Identity
from voicesessions._request import request_context

GOAL = Goal("max", 1.3)
PAGE = 50  # the SDK's default page size: it asks for PAGE + 1 rows
BASE = "http://supabase.bench"
JWT_SECRET = "benchmark-jwt-secret-of-at-least-32-characters"
SERVICE_KEY = jwt.encode({"role": "service_role", "iss": "supabase-bench"}, JWT_SECRET)

# What the Postgres backend sends for ``get`` (a GET of /sessions) and for ``list`` (POST
# /rpc/list_sessions with every argument named: the JSON body read into the declared types).
GET_SQL = 'select * from "public"."sessions" where "id" = %s limit 1'
LIST_SQL = (
    '\nselect pg_catalog.to_jsonb(r) as value\nfrom pg_catalog.json_to_record(%s::json) as _("'
    'company_id" "pg_catalog"."uuid", "profile_id" "pg_catalog"."uuid", "status"'
    ' "public"."session_status", "started_after" "pg_catalog"."timestamptz",'
    ' "started_before" "pg_catalog"."timestamptz", "max_rows" "pg_catalog"."int4")\ncross'
    ' join lateral (select * from "public"."list_sessions"("company_id" => _."company_id",'
    ' "profile_id" => _."profile_id", "status" => _."status", "started_after" =>'
    ' _."started_after", "started_before" => _."started_before", "max_rows" =>'
    ' _."max_rows")) as r\n'
)
LIST_ARGS: dict[str, Any] = {
    "company_id": None,
    "profile_id": None,
    "status": None,
    "started_after": None,
    "started_before": None,
    "max_rows": PAGE + 1,
}


DETAILS = """\
The *note* column gives the client's own CPU time per call (this thread's), which a loaded
machine disturbs much less than wall-clock time: on a shared machine compare those.

Where the SDK's time goes (cProfile with a CPU-time timer, SDK against raw, function by
function):

- Fixed per call, and reduced: every call used to build tenacity's retry machinery even
  when the first attempt succeeded (about 15 µs); the first attempt now runs outside it and
  tenacity takes over only after a transient failure (same attempts, backoffs and logs).
  The Postgres backend composed each statement with `psycopg.sql` on every call; it now
  keeps the text per shape of call (table, columns, filter columns and operators, order,
  limit; per overload and argument names for `rpc`), and sets the transaction mode only
  when it changes. `Page[Session]` is made once (pydantic keeps parametrized generics only
  weakly, so writing it in the method could rebuild the class). Left: the pool's checkout
  and return (psycopg_pool), the argument checks (`checked_arguments`), the request context.
- Per row: each of the 51 rows is read into a typed `Session` (3 UUIDs, 4 timestamps, 2
  enums, a Decimal, 3 JSON objects). Over the mock transport a call is little more than the
  JSON decoding plus httpx's and postgrest-py's request handling, so this used to put
  Supabase `list` at 1.7x: the SDK decoded the body (as the raw client does) and then
  validated 51 dicts, about 136 µs of CPU on top of the 160 µs of `json.loads`. The
  Supabase backend now reads a set-returning call's rows straight from the answer's bytes
  (`Backend.rpc_rows` -> `_validation.parse_rows_json`: one `TypeAdapter(list[Session])`,
  built once, `validate_json`): about 220 µs for the page, against 165 µs for `json.loads`
  alone, so the typed page costs the SDK about 55 µs more than the raw client's dicts.
  postgrest-py's `execute()` always decodes the body, so the backend sends the request
  itself (`query.request.send`, what `execute()` does with retries off) and raises
  postgrest-py's `APIError` as `execute()` would. The Postgres backend still reads rows as
  psycopg returns them (decoded dicts), one `parse_model` each.
- Also cheaper per call: `jsonable` passes `str` / `int` / `bool` / `None` and `str` keys
  through without converting them. Looked at and left (each a few µs, or none): the
  argument checks, the retry wrapper, `Page` construction (`revalidate_instances` is
  pydantic's default `'never'`: an isinstance check per row), the cursor, the models'
  config (no `validate_assignment`, no `defer_build`; `cache_strings` variants measured no
  faster).
- Left on the Supabase `list` row: a typed page allocates about twice the objects the
  garbage collector tracks (a model, its `__dict__` and fields-set per row, a `UUID` per id
  column) that the raw client's dicts do, so the collector runs more often; in this
  process, whose heap holds the Postgres rounds' objects too, that is a visible share of
  the remaining gap (with `gc` disabled the sync ratio measured about 0.3x lower).
"""


@dataclass(frozen=True)
class World:
    dsn: str
    trainee: uuid.UUID
    session: uuid.UUID
    get_json: bytes  # what PostgREST answers GET /rest/v1/sessions?id=eq.<id>&limit=1
    list_json: bytes  # ... and POST /rest/v1/rpc/list_sessions


def seed(dsn: str, sessions: int) -> World:
    """One company, one trainee holding ``sessions`` sessions (every other one completed,
    with audio metrics and metadata as a live pipeline leaves them)."""
    with VoiceSessions.from_postgres(dsn) as vs:
        company = vs.tenants.create_company("Bench Sales")
        trainee = vs.tenants.create_user("trainee@bench.test")
        vs.tenants.create_profile(trainee, company.id, display_name="Bench Trainee")
        start = datetime.now(UTC) - timedelta(hours=sessions)
        ids = []
        for n in range(sessions):
            session = vs.sessions.create(
                trainee,
                f"Discovery call {n}",
                started_at=start + timedelta(hours=n),
                scenario="cold-call",
                persona={"name": "Dana Buyer", "mood": "skeptical", "seniority": "VP"},
                pipeline={"stt": "deepgram-nova-3", "llm": "gpt-4o", "tts": "cartesia"},
            )
            if n % 2 == 0 and n < sessions - 1:
                vs.updates.update_audio_metrics(
                    session.id, {"snr_db": 31.5, "lufs": -19.8, "clipping_ratio": 0.0}
                )
                vs.sessions.complete(session.id, ended_at=session.started_at + timedelta(0, 600))
            ids.append(session.id)
    with psycopg.connect(dsn) as conn:
        cur = conn.cursor()
        _context(cur, trainee, "GET", "/sessions")
        cur.execute(
            "select pg_catalog.jsonb_agg(s)::text from public.sessions s where s.id = %s",
            (ids[-1],),
        )
        get_json = _one(cur).encode()
        conn.rollback()
        _context(cur, trainee, "POST", "/rpc/list_sessions")
        cur.execute(
            "select pg_catalog.jsonb_agg(r)::text from public.list_sessions(max_rows => %s) r",
            (PAGE + 1,),
        )
        list_json = _one(cur).encode()
        conn.rollback()
    return World(dsn, trainee, ids[-1], get_json, list_json)


def _context(cur: psycopg.Cursor[Any], user: uuid.UUID, method: str, path: str) -> None:
    identity = Identity.user(user)
    cur.execute(*request_context(identity.role, identity.claims, method=method, path=path))


def _one(cur: psycopg.Cursor[Any]) -> str:
    row = cur.fetchone()
    if row is None or not isinstance(row[0], str):
        raise RuntimeError("the recording query returned no JSON")
    return row[0]


# -- the timing loop -------------------------------------------------------------------------


@dataclass
class Timing:
    """Median wall-clock and CPU (this thread's) µs per call of ours and of the baseline."""

    ours: float
    baseline: float
    ours_cpu: float
    baseline_cpu: float


class _Rounds:
    def __init__(self) -> None:
        self.wall: tuple[list[float], list[float]] = ([], [])
        self.cpu: tuple[list[float], list[float]] = ([], [])

    def start(self) -> tuple[int, int]:
        return time.perf_counter_ns(), time.thread_time_ns()

    def stop(self, side: int, started: tuple[int, int], calls: int) -> None:
        self.wall[side].append((time.perf_counter_ns() - started[0]) / calls / 1000)
        self.cpu[side].append((time.thread_time_ns() - started[1]) / calls / 1000)

    def timing(self) -> Timing:
        m = statistics.median
        return Timing(m(self.wall[0]), m(self.wall[1]), m(self.cpu[0]), m(self.cpu[1]))


def interleaved(
    ours: Callable[[], Any], baseline: Callable[[], Any], rounds: int, calls: int
) -> Timing:
    """Time ``ours`` and ``baseline`` in alternating rounds of ``calls`` calls each."""
    ours(), baseline()  # warm: pools open, caches filled
    timed = _Rounds()
    for r in range(rounds):
        order = ((0, ours), (1, baseline)) if r % 2 == 0 else ((1, baseline), (0, ours))
        for side, fn in order:
            started = timed.start()
            for _ in range(calls):
                fn()
            timed.stop(side, started, calls)
    return timed.timing()


async def interleaved_async(
    ours: Callable[[], Awaitable[Any]],
    baseline: Callable[[], Awaitable[Any]],
    rounds: int,
    calls: int,
) -> Timing:
    """:func:`interleaved` for coroutine functions, on the running event loop."""
    await ours()
    await baseline()
    timed = _Rounds()
    for r in range(rounds):
        order = ((0, ours), (1, baseline)) if r % 2 == 0 else ((1, baseline), (0, ours))
        for side, fn in order:
            started = timed.start()
            for _ in range(calls):
                await fn()
            timed.stop(side, started, calls)
    return timed.timing()


# -- the raw clients -------------------------------------------------------------------------


class RawPostgres:
    """psycopg on one connection: per request a READ ONLY transaction, the request context,
    the statement, the rows (as dicts, like the SDK's)."""

    def __init__(self, dsn: str, user: uuid.UUID) -> None:
        self.conn = psycopg.connect(dsn, row_factory=dict_row)
        self.conn.read_only = True
        self.identity = Identity.user(user)

    def request(self, path: str, query: str, params: tuple[Any, ...]) -> list[dict[str, Any]]:
        method = "GET" if path == "/sessions" else "POST"
        with self.conn.transaction(), self.conn.cursor() as cur:
            cur.execute(
                *request_context(self.identity.role, self.identity.claims, method=method, path=path)
            )
            cur.execute(query, params)
            return cur.fetchall()

    def get(self, session_id: uuid.UUID) -> list[dict[str, Any]]:
        return self.request("/sessions", GET_SQL, (session_id,))

    def list(self) -> list[dict[str, Any]]:
        return self.request("/rpc/list_sessions", LIST_SQL, (json.dumps(LIST_ARGS),))


class RawPostgresAsync:
    def __init__(self, conn: psycopg.AsyncConnection[Any], user: uuid.UUID) -> None:
        self.conn = conn
        self.identity = Identity.user(user)

    @classmethod
    async def connect(cls, dsn: str, user: uuid.UUID) -> RawPostgresAsync:
        conn = await psycopg.AsyncConnection.connect(dsn, row_factory=dict_row)
        await conn.set_read_only(True)
        return cls(conn, user)

    async def request(self, path: str, query: str, params: tuple[Any, ...]) -> list[dict[str, Any]]:
        method = "GET" if path == "/sessions" else "POST"
        async with self.conn.transaction(), self.conn.cursor() as cur:
            await cur.execute(
                *request_context(self.identity.role, self.identity.claims, method=method, path=path)
            )
            await cur.execute(query, params)
            return await cur.fetchall()

    async def get(self, session_id: uuid.UUID) -> list[dict[str, Any]]:
        return await self.request("/sessions", GET_SQL, (session_id,))

    async def list(self) -> list[dict[str, Any]]:
        return await self.request("/rpc/list_sessions", LIST_SQL, (json.dumps(LIST_ARGS),))


def recorded(world: World) -> Callable[[httpx.Request], httpx.Response]:
    """The mock PostgREST: the recorded answer of each request the benchmark makes."""
    headers = {"content-type": "application/json; charset=utf-8"}

    def answer(request: httpx.Request) -> httpx.Response:
        if request.url.path.endswith("/rpc/list_sessions"):
            return httpx.Response(200, content=world.list_json, headers=headers)
        return httpx.Response(200, content=world.get_json, headers=headers)

    return answer


def _raw_headers() -> dict[str, str]:
    # What supabase-py sends with a legacy JWT key: the key as apikey and as bearer token.
    return {
        "Accept": "application/json",
        "Content-Type": "application/json",
        "apikey": SERVICE_KEY,
        "Authorization": f"Bearer {SERVICE_KEY}",
    }


@contextlib.contextmanager
def sdk_over_mock(world: World) -> Iterator[VoiceSessions]:
    """The SDK's Supabase face with its HTTP client's transport replaced by the mock."""
    with VoiceSessions.from_supabase(BASE, SERVICE_KEY) as vs:
        vs._backend._shared.http._transport = httpx.MockTransport(recorded(world))  # type: ignore[attr-defined]
        yield vs


# -- the comparisons -------------------------------------------------------------------------


def measure(world: World, rounds: int, calls: int) -> list[Comparison]:
    results: list[Comparison] = []

    def add(question: str, timing: Timing, baseline: str) -> None:
        note = (
            f"client CPU {timing.ours_cpu:.0f} vs {timing.baseline_cpu:.0f} µs/call"
            f" ({timing.ours_cpu / timing.baseline_cpu:.2f}x)"
        )
        results.append(
            Comparison(question, timing.ours, timing.baseline, "µs/call", GOAL, baseline, note)
        )
        print(
            f"  {question}: {timing.ours:.0f} vs {timing.baseline:.0f} µs/call"
            f" ({timing.ours / timing.baseline:.2f}x); {note}",
            flush=True,
        )

    # Postgres, sync face
    raw = RawPostgres(world.dsn, world.trainee)
    with VoiceSessions.from_postgres(world.dsn) as service:
        vs = service.as_user(world.trainee)
        check_same_answer(vs.sessions.get(world.session), raw.get(world.session))
        check_same_page(vs.sessions.list(), raw.list())
        sid = world.session
        add(
            "Postgres `get`, sync: SDK / raw psycopg",
            interleaved(lambda: vs.sessions.get(sid), lambda: raw.get(sid), rounds, calls),
            "raw psycopg, same SQL and request context",
        )
        add(
            "Postgres `list` (50 rows), sync: SDK / raw psycopg",
            interleaved(vs.sessions.list, raw.list, rounds, calls),
            "raw psycopg, same SQL and request context",
        )
    raw.conn.close()

    # Postgres, async face
    async def postgres_async() -> None:
        raw = await RawPostgresAsync.connect(world.dsn, world.trainee)
        async with AsyncVoiceSessions.from_postgres(world.dsn) as service:
            vs = service.as_user(world.trainee)
            sid = world.session
            add(
                "Postgres `get`, async: SDK / raw psycopg",
                await interleaved_async(
                    lambda: vs.sessions.get(sid), lambda: raw.get(sid), rounds, calls
                ),
                "raw psycopg (async), same SQL and request context",
            )
            add(
                "Postgres `list` (50 rows), async: SDK / raw psycopg",
                await interleaved_async(vs.sessions.list, raw.list, rounds, calls),
                "raw psycopg (async), same SQL and request context",
            )
        await raw.conn.close()

    asyncio.run(postgres_async())

    # Supabase, sync face: both over the same mock transport
    http = httpx.Client(transport=httpx.MockTransport(recorded(world)))
    rest = postgrest.SyncPostgrestClient(
        f"{BASE}/rest/v1", headers=_raw_headers(), http_client=http, retry_enabled=False
    )
    sid_text = str(world.session)

    def raw_get() -> Any:
        return rest.from_("sessions").select("*").eq("id", sid_text).limit(1).execute().data

    def raw_list() -> Any:
        return rest.rpc("list_sessions", LIST_ARGS).execute().data

    with sdk_over_mock(world) as vs:
        check_same_answer(vs.sessions.get(world.session), raw_get())
        check_same_page(vs.sessions.list(), raw_list())
        sid = world.session
        add(
            "Supabase `get` (mock transport), sync: SDK / raw postgrest-py",
            interleaved(lambda: vs.sessions.get(sid), raw_get, rounds, calls),
            "raw postgrest-py, same mock transport and answer",
        )
        add(
            "Supabase `list` (50 rows, mock transport), sync: SDK / raw postgrest-py",
            interleaved(vs.sessions.list, raw_list, rounds, calls),
            "raw postgrest-py, same mock transport and answer",
        )
    http.close()

    # Supabase, async face
    async def supabase_async() -> None:
        http = httpx.AsyncClient(transport=httpx.MockTransport(recorded(world)))
        rest = postgrest.AsyncPostgrestClient(
            f"{BASE}/rest/v1", headers=_raw_headers(), http_client=http, retry_enabled=False
        )

        async def raw_get() -> Any:
            query = rest.from_("sessions").select("*").eq("id", sid_text).limit(1)
            return (await query.execute()).data

        async def raw_list() -> Any:
            return (await rest.rpc("list_sessions", LIST_ARGS).execute()).data

        async with AsyncVoiceSessions.from_supabase(BASE, SERVICE_KEY) as vs:
            vs._backend._shared.http._transport = httpx.MockTransport(recorded(world))  # type: ignore[attr-defined]
            sid = world.session
            add(
                "Supabase `get` (mock transport), async: SDK / raw postgrest-py",
                await interleaved_async(lambda: vs.sessions.get(sid), raw_get, rounds, calls),
                "raw postgrest-py (async), same mock transport and answer",
            )
            add(
                "Supabase `list` (50 rows, mock transport), async: SDK / raw postgrest-py",
                await interleaved_async(vs.sessions.list, raw_list, rounds, calls),
                "raw postgrest-py (async), same mock transport and answer",
            )
        await http.aclose()

    asyncio.run(supabase_async())
    return results


def check_same_answer(session: Any, rows: list[dict[str, Any]]) -> None:
    """The SDK and the raw client read the same session (the comparison is fair)."""
    if len(rows) != 1 or str(rows[0]["id"]) != str(session.id):
        raise RuntimeError("the SDK and the raw client did not read the same session")


def check_same_page(page: Any, rows: list[Any]) -> None:
    values = [r.get("value", r) for r in rows]
    same = [str(v["id"]) for v in values[:PAGE]] == [str(s.id) for s in page.items]
    if len(values) != PAGE + 1 or len(page.items) != PAGE or not same:
        raise RuntimeError("the SDK and the raw client did not read the same page")


def comparisons(quick: bool) -> Report:
    """The SDK's overhead, for ``python -m benchmarks`` (``quick``: a few rounds)."""
    return run(sessions=120, rounds=6 if quick else 30, calls=10 if quick else 40)


def run(*, sessions: int, rounds: int, calls: int) -> Report:
    with migrated_database() as (_info, dsn):
        world = seed(dsn, sessions)
        with psycopg.connect(dsn) as conn:
            version = conn.execute("show server_version").fetchone()
        results = measure(world, rounds, calls)
    return Report(
        title="The SDK's own cost per call (`benchmarks/sdk_overhead.py`)",
        command=(
            f"python -m benchmarks.sdk_overhead --sessions {sessions} --rounds {rounds}"
            f" --calls {calls}"
        ),
        data=(
            f"One trainee holding {sessions} sessions (half completed, with audio metrics and"
            " metadata); `get` reads one by id, `list` the first page (50 sessions, 51 rows"
            " asked). PostgreSQL"
            f" {version[0] if version else '?'}, server and client on the same machine."
            f" {rounds} interleaved rounds of {calls} calls each (SDK then raw, raw then"
            " SDK, ...); times are medians of the rounds, in µs per call. The Postgres"
            " baseline is raw psycopg on one connection sending the statement the SDK sends"
            " in the same request context (READ ONLY transaction, `role` and"
            " `request.jwt.claims` set locally); the Supabase baseline is raw postgrest-py,"
            " both over an `httpx.MockTransport` answering the JSON recorded from the"
            " database (no network: the SDK's own cost per call)."
        ),
        comparisons=results,
        details=DETAILS,
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else "")
    parser.add_argument("--sessions", type=int, default=120)
    parser.add_argument("--rounds", type=int, default=30)
    parser.add_argument("--calls", type=int, default=40)
    parser.add_argument("--quick", action="store_true", help="6 rounds of 10 calls")
    args = parser.parse_args()
    if args.quick:
        args.rounds, args.calls = 6, 10
    report = run(sessions=args.sessions, rounds=args.rounds, calls=args.calls)
    print()
    for c in report.comparisons:
        print(f"{c.question}: {c.ratio:.2f}x (goal {c.goal}) {'met' if c.met else 'MISSED'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
