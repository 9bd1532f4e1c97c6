"""PostgresBackend on a real PostgreSQL, both faces: each scenario runs over the async
``AsyncPostgresBackend`` and the generated sync ``PostgresBackend``.

Scenarios are written once: they ``await done(...)`` on whatever a backend method returns
(the value itself on the sync face). They run against a clone of the two-company world
(tests/support/world.py) with a few test-only views and functions added by ``db``.
"""

from __future__ import annotations

import asyncio
import datetime
import inspect
import socket
import time
import uuid
from collections.abc import AsyncIterator, Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import bcrypt
import pytest
from psycopg.conninfo import make_conninfo
from pydantic import BaseModel

from tests.conftest import Database
from tests.support.world import World
from voicesessions._async.backends.postgres import (
    DEFAULT_APPLICATION_NAME,
    DEFAULT_CONNECT_TIMEOUT_S,
    DEFAULT_MAX_POOL_SIZE,
    DEFAULT_MIN_POOL_SIZE,
    AsyncPostgresBackend,
)
from voicesessions._async.retry import call_with_retry as async_call_with_retry
from voicesessions._identity import Identity
from voicesessions._query import Filter, Order, eq
from voicesessions._retry_policy import RetryPolicy
from voicesessions._sync.backends.postgres import PostgresBackend
from voicesessions.errors import (
    APIError,
    ConfigurationError,
    ConflictError,
    InvalidInputError,
    NotFoundError,
    PermissionDeniedError,
    QueryTimeoutError,
    TransientError,
    UnexpectedResponseError,
)

# Async fixtures live on the session loop (asyncio_default_fixture_loop_scope): run the
# tests there too, so a pool opened in a test is closed on the loop it was opened on.
pytestmark = pytest.mark.asyncio(loop_scope="session")

FACES = {"async": AsyncPostgresBackend, "sync": PostgresBackend}

# Test-only objects: a view that reports the request context a select runs in, and
# functions of every result shape rpc() must decode.
TEST_OBJECTS = """
create view public.vs_test_request as
  select current_setting('transaction_read_only') as read_only,
         current_user::text as role,
         auth.uid() as uid,
         current_setting('request.method', true) as method,
         current_setting('request.path', true) as path;
grant select on public.vs_test_request to anon, authenticated, service_role;

create function public.vs_test_request_rpc() returns jsonb language sql as $$
  select to_jsonb(r) from public.vs_test_request r
$$;
create function public.vs_test_scalar(a integer, b integer default 1) returns integer
  language sql immutable as $$ select a + b $$;
create function public.vs_test_json(doc jsonb) returns jsonb
  language sql immutable as $$ select doc || '{"seen": true}'::jsonb $$;
create function public.vs_test_series(n integer) returns setof integer
  language sql immutable as $$ select generate_series(1, n) $$;
create function public.vs_test_table(n integer) returns table (i integer, label text)
  language sql immutable as $$ select g, 'row ' || g from generate_series(1, n) g $$;
create function public.vs_test_one_column(n integer) returns table (i integer)
  language sql immutable as $$ select generate_series(1, n) $$;
create type public.vs_test_pair as (x integer, y text);
create function public.vs_test_pair() returns public.vs_test_pair
  language sql immutable as $$ select 7, 'seven' $$;
create function public.vs_test_void() returns void language sql as $$ select $$;
create function public.vs_test_uid() returns uuid language sql stable as $$ select auth.uid() $$;
create function public.vs_test_sleep(seconds double precision) returns integer
  language sql as $$ select pg_sleep(seconds); select pg_backend_pid() $$;
create table public.vs_test_log (n serial primary key, role text not null default current_user);
grant insert, select on public.vs_test_log to anon, authenticated, service_role;
grant usage on sequence public.vs_test_log_n_seq to anon, authenticated, service_role;
create function public.vs_test_write() returns integer language sql as $$
  insert into public.vs_test_log default values returning n
$$;
create function public.vs_test_write_then_fail() returns integer language plpgsql as $$
begin
  insert into public.vs_test_log default values;
  raise exception 'failing after a write' using errcode = 'P0001';
end $$;
create view public.vs_test_writer as select public.vs_test_write() as n;
grant select on public.vs_test_writer to anon, authenticated, service_role;
create function public.vs_test_message() returns boolean language sql as $$
  select now() = statement_timestamp()
$$;
grant execute on all functions in schema public to anon, authenticated, service_role;
"""


async def done(value: Any) -> Any:
    """The result of a backend call on either face."""
    if inspect.isawaitable(value):
        return await value
    return value


async def close(backend: Any) -> None:
    """Close a backend of either face."""
    await done(backend.aclose() if hasattr(backend, "aclose") else backend.close())


async def concurrently(face: str, calls: list[Callable[[], Any]]) -> list[Any]:
    """Run the calls at the same time: as tasks on the async face, threads on the sync one."""
    if face == "async":
        return list(await asyncio.gather(*(call() for call in calls)))
    with ThreadPoolExecutor(len(calls)) as pool:
        return list(pool.map(lambda call: call(), calls))


def closed_port() -> int:
    """A local TCP port nobody listens on (connections to it are refused at once)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


@dataclass
class Env:
    """One face's backends over a world database."""

    face: str
    db: Database
    world: World
    made: list[Any]

    def backend(self, dsn: str | None = None, **options: Any) -> Any:
        """A service-role backend (closed after the test)."""
        made = FACES[self.face].from_dsn(dsn or self.db.dsn, **options)
        self.made.append(made)
        return made

    def user(self, key: str, backend: Any | None = None) -> Any:
        """A backend acting as a person of the world (A1, B1, ...)."""
        return (backend or self.backend()).as_user(self.world.person(key).id)

    def sql(self, query: str, params: Any = None) -> list[tuple[Any, ...]]:
        """Run SQL as the superuser, outside any backend."""
        with self.db.connect() as conn:
            cur = conn.execute(query, params)
            return cur.fetchall() if cur.description else []  # type: ignore[return-value]


@pytest.fixture
def db(world_db: tuple[Database, World]) -> tuple[Database, World]:
    database, world = world_db
    with database.connect() as conn:
        conn.execute(TEST_OBJECTS)
    return database, world


@pytest.fixture(params=sorted(FACES))
async def env(request: pytest.FixtureRequest, db: tuple[Database, World]) -> AsyncIterator[Env]:
    database, world = db
    made: list[Any] = []
    yield Env(request.param, database, world, made)
    for backend in reversed(made):
        await close(backend)


# -- select ------------------------------------------------------------------------------


async def test_service_role_sees_every_session_and_only_asked_columns(env: Env) -> None:
    backend = env.backend()
    rows = await done(backend.select("sessions", columns=("id", "title")))
    assert {r["id"] for r in rows} == env.world.sessions_in("A") | env.world.sessions_in("B")
    assert all(set(r) == {"id", "title"} for r in rows)


async def test_rls_hides_company_a_from_b1(env: Env) -> None:
    b1 = env.user("B1")
    assert {r["id"] for r in await done(b1.select("sessions"))} == env.world.sessions_of("B1")
    a1_session = env.world.active_session["A1"]
    assert await done(b1.select("sessions", filters=[eq("id", a1_session)])) == []
    assert await done(b1.select("transcript_segments")) != []
    segments = await done(b1.select("transcript_segments", filters=[eq("session_id", a1_session)]))
    assert segments == []


@pytest.mark.parametrize(
    ("filters", "expected"),
    [
        ([Filter("seq", "eq", 1)], [1]),
        ([Filter("seq", "neq", 1)], [0, 2]),
        ([Filter("seq", "gt", 0)], [1, 2]),
        ([Filter("seq", "gte", 1)], [1, 2]),
        ([Filter("seq", "lt", 2)], [0, 1]),
        ([Filter("seq", "lte", 0)], [0]),
        ([Filter("seq", "in", [0, 2, 9])], [0, 2]),
        ([Filter("speaker", "in", ("buyer",))], [1]),
        ([Filter("confidence", "is", None)], []),
        ([Filter("seq", "gt", 0), Filter("speaker", "eq", "trainee")], [2]),
    ],
)
async def test_select_filters(env: Env, filters: list[Filter], expected: list[int]) -> None:
    session = eq("session_id", env.world.active_session["A1"])
    rows = await done(
        env.backend().select(
            "transcript_segments",
            columns=("seq",),
            filters=[session, *filters],
            order=[Order("seq")],
        )
    )
    assert [r["seq"] for r in rows] == expected


async def test_select_is_true_false_and_null(env: Env) -> None:
    backend = env.backend()
    active = await done(backend.select("sessions", filters=[Filter("ended_at", "is", None)]))
    assert {r["id"] for r in active} == set(env.world.active_session.values())
    a1_done = env.world.completed_session["A1"]
    env.sql(
        "update public.transcripts set is_anonymized = true, anonymized_at = now()"
        " where session_id = %s",
        (a1_done,),
    )
    anonymized = await done(
        backend.select("transcripts", filters=[Filter("is_anonymized", "is", True)])
    )
    assert [r["session_id"] for r in anonymized] == [a1_done]
    kept = await done(backend.select("transcripts", filters=[Filter("is_anonymized", "is", False)]))
    assert len(kept) == 2
    admins = await done(backend.select("profiles", filters=[Filter("role", "in", ["admin"])]))
    assert {r["id"] for r in admins} == {env.world.person("AA").id, env.world.person("AB").id}


async def test_select_order_and_limit(env: Env) -> None:
    session = eq("session_id", env.world.active_session["A1"])
    backend = env.backend()
    rows = await done(
        backend.select(
            "transcript_segments", filters=[session], order=[Order("seq", descending=True)], limit=2
        )
    )
    assert [r["seq"] for r in rows] == [2, 1]
    assert await done(backend.select("transcript_segments", limit=0)) == []


async def test_select_runs_read_only_as_a_get_of_the_identity(env: Env) -> None:
    a1 = env.world.person("A1")
    (row,) = await done(env.user("A1").select("vs_test_request"))
    assert row == {
        "read_only": "on",
        "role": "authenticated",
        "uid": a1.id,
        "method": "GET",
        "path": "/vs_test_request",
    }
    (service,) = await done(env.backend().select("vs_test_request"))
    assert (service["role"], service["uid"], service["read_only"]) == ("service_role", None, "on")


async def test_rpc_runs_read_write_as_a_post(env: Env) -> None:
    result = await done(env.user("A1").rpc("vs_test_request_rpc"))
    assert result == {
        "read_only": "off",
        "role": "authenticated",
        "uid": str(env.world.person("A1").id),
        "method": "POST",
        "path": "/rpc/vs_test_request_rpc",
    }


async def test_the_authenticator_login_gets_the_same_rls(env: Env) -> None:
    backend = env.backend(env.db.authenticator_dsn)
    b1 = backend.as_user(env.world.person("B1").id)
    assert {r["id"] for r in await done(b1.select("sessions"))} == env.world.sessions_of("B1")
    everyone = await done(backend.select("sessions"))
    assert len(everyone) == 6


# -- insert ------------------------------------------------------------------------------


async def test_user_inserts_own_sessions_in_one_statement(env: Env) -> None:
    a1 = env.world.person("A1")
    rows = await done(
        env.user("A1").insert(
            "sessions",
            [
                {"profile_id": a1.id, "title": "first", "metadata": {"scenario": "cold call"}},
                {"profile_id": a1.id, "title": "second", "metadata": {"tags": ["a", "b"]}},
            ],
        )
    )
    assert [r["title"] for r in rows] == ["first", "second"]
    assert {r["company_id"] for r in rows} == {env.world.companies["A"]}  # set by the database
    assert rows[0]["metadata"] == {"scenario": "cold call"}
    assert rows[1]["metadata"] == {"tags": ["a", "b"]}
    assert env.sql("select count(*) from public.sessions where profile_id = %s", (a1.id,)) == [(4,)]


async def test_insert_for_another_user_is_denied(env: Env) -> None:
    a2 = env.world.person("A2")
    with pytest.raises(PermissionDeniedError) as caught:
        await done(env.user("A1").insert("sessions", [{"profile_id": a2.id, "title": "not mine"}]))
    assert caught.value.code == "42501"
    assert env.sql("select count(*) from public.sessions where title = 'not mine'") == [(0,)]


async def test_forged_company_is_denied_with_the_database_hint(env: Env) -> None:
    row = {
        "profile_id": env.world.person("A1").id,
        "company_id": env.world.companies["B"],
        "title": "forged",
    }
    with pytest.raises(PermissionDeniedError) as caught:
        await done(env.user("A1").insert("sessions", [row]))
    assert caught.value.code == "42501"
    assert caught.value.hint is not None
    assert "Omit company_id" in caught.value.hint


async def test_check_violation_is_invalid_input_and_nothing_is_kept(env: Env) -> None:
    a1 = env.world.person("A1").id
    rows = [{"profile_id": a1, "title": "fine"}, {"profile_id": a1, "title": "   "}]
    with pytest.raises(InvalidInputError) as caught:
        await done(env.user("A1").insert("sessions", rows))
    assert caught.value.code == "23514"
    assert env.sql("select count(*) from public.sessions where title = 'fine'") == [(0,)]


async def test_duplicate_is_a_conflict(env: Env) -> None:
    existing = env.world.active_session["A1"]
    row = {"id": existing, "profile_id": env.world.person("A1").id, "title": "again"}
    with pytest.raises(ConflictError) as caught:
        await done(env.backend().insert("sessions", [row]))
    assert caught.value.code == "23505"


async def test_on_conflict_ignore_skips_and_does_not_return_duplicates(env: Env) -> None:
    a1 = env.world.person("A1").id
    existing = env.world.active_session["A1"]
    new = uuid.uuid4()
    rows = [
        {"id": existing, "profile_id": a1, "title": "replayed"},
        {"id": new, "profile_id": a1, "title": "new"},
    ]
    inserted = await done(
        env.user("A1").insert("sessions", rows, on_conflict=("id",), ignore_duplicates=True)
    )
    assert [r["id"] for r in inserted] == [new]
    assert env.sql("select title from public.sessions where id = %s", (existing,)) == [
        ("A1 live call",)
    ]
    assert env.sql("select count(*) from public.sessions where profile_id = %s", (a1,)) == [(3,)]


async def test_on_conflict_without_ignore_is_refused_not_an_upsert(env: Env) -> None:
    existing = env.world.active_session["A1"]
    row = {"id": existing, "profile_id": env.world.person("A1").id, "title": "renamed"}
    with pytest.raises(InvalidInputError, match="together"):
        await done(env.backend().insert("sessions", [row], on_conflict=["id"]))
    assert env.sql("select title from public.sessions where id = %s", (existing,)) == [
        ("A1 live call",)
    ]


async def test_insert_rejects_bad_shapes_before_any_io(env: Env) -> None:
    backend = env.backend(make_conninfo(env.db.dsn, port=closed_port()))  # would fail on I/O
    assert await done(backend.insert("sessions", [])) == []
    bad_calls: list[Callable[[], Any]] = [
        lambda: backend.insert("sessions", [{"title": "a"}, {"name": "b"}]),
        lambda: backend.insert("sessions", [{}]),
        lambda: backend.insert("sessions", [{"title": "a"}], ignore_duplicates=True),
        lambda: backend.insert("sessions", [{"id": 1}], on_conflict=["id"]),
        lambda: backend.insert("sessions", [{"title": "a"}], on_conflict="id"),
        lambda: backend.insert("sessions; drop table x", [{"title": "a"}]),
        lambda: backend.insert("sessions", [{'title"': "a"}]),
        lambda: backend.update("sessions", {"title": "a"}, filters=[]),
        lambda: backend.update("sessions", {}, filters=[eq("id", 1)]),
        lambda: backend.select("sessions", columns=()),
        lambda: backend.select("sessions", columns=("id", "*")),
        lambda: backend.select("sessions", limit=-1),
        lambda: backend.select("sessions", order=[Order("title desc")]),
        lambda: backend.rpc("vs_test_scalar()", {}),
        lambda: backend.rpc("vs_test_scalar", {"a; select 1": 1}),
    ]
    for call in bad_calls:
        with pytest.raises(InvalidInputError):
            await done(call())


async def test_values_that_are_not_json_are_invalid_input(env: Env) -> None:
    row = {"profile_id": env.world.person("A1").id, "title": "t", "metadata": {"x": object()}}
    with pytest.raises(InvalidInputError, match="not JSON"):
        await done(env.backend().insert("sessions", [row]))
    with pytest.raises(InvalidInputError, match="cannot adapt"):
        await done(env.backend().select("sessions", filters=[eq("title", object())]))


# -- update ------------------------------------------------------------------------------


async def test_owner_updates_only_visible_rows(env: Env) -> None:
    a1 = env.user("A1")
    own = env.world.active_session["A1"]
    (row,) = await done(
        a1.update("sessions", {"title": "renamed", "metadata": {"k": 1}}, filters=[eq("id", own)])
    )
    assert (row["id"], row["title"], row["metadata"]) == (own, "renamed", {"k": 1})
    other = env.world.active_session["B1"]
    assert await done(a1.update("sessions", {"title": "x"}, filters=[eq("id", other)])) == []
    assert env.sql("select title from public.sessions where id = %s", (other,)) == [
        ("B1 live call",)
    ]


async def test_illegal_transition_is_a_conflict_with_vs001(env: Env) -> None:
    done_session = env.world.completed_session["A1"]
    with pytest.raises(ConflictError) as caught:
        await done(
            env.user("A1").update(
                "sessions", {"status": "active"}, filters=[eq("id", done_session)]
            )
        )
    assert caught.value.code == "VS001"
    assert caught.value.hint is not None


# -- rpc ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("function", "params", "expected"),
    [
        ("vs_test_scalar", {"a": 2}, 3),
        ("vs_test_scalar", {"a": 2, "b": 5}, 7),
        ("vs_test_json", {"doc": {"a": [1, 2]}}, {"a": [1, 2], "seen": True}),
        ("vs_test_series", {"n": 3}, [1, 2, 3]),
        ("vs_test_series", {"n": 0}, []),
        ("vs_test_table", {"n": 2}, [{"i": 1, "label": "row 1"}, {"i": 2, "label": "row 2"}]),
        ("vs_test_one_column", {"n": 2}, [{"i": 1}, {"i": 2}]),
        ("vs_test_pair", None, {"x": 7, "y": "seven"}),
        ("vs_test_void", {}, None),
        ("vs_test_uid", None, None),
    ],
)
async def test_rpc_returns_what_postgrest_would(
    env: Env, function: str, params: dict[str, Any] | None, expected: Any
) -> None:
    assert await done(env.backend().rpc(function, params)) == expected


async def test_rpc_runs_as_the_user(env: Env) -> None:
    assert await done(env.user("B1").rpc("vs_test_uid")) == str(env.world.person("B1").id)


async def test_rpc_of_a_missing_function_is_not_found(env: Env) -> None:
    with pytest.raises(NotFoundError) as caught:
        await done(env.backend().rpc("vs_test_missing", {"a": 1}))
    # PostgREST's answer: the function is not in its schema cache (404).
    assert (caught.value.code, caught.value.http_status) == ("PGRST202", 404)
    assert caught.value.message == (
        "Could not find the function public.vs_test_missing(a) in the schema cache"
    )


async def test_rpc_without_execute_privilege_is_denied(env: Env) -> None:
    # PUBLIC holds EXECUTE on a new function by PostgreSQL's default: revoke both.
    env.sql(
        "revoke execute on function public.vs_test_scalar(integer, integer)"
        " from public, authenticated"
    )
    with pytest.raises(PermissionDeniedError):
        await done(env.user("A1").rpc("vs_test_scalar", {"a": 1}))
    assert await done(env.backend().rpc("vs_test_scalar", {"a": 1})) == 2


# -- rpc_rows: a set-returning call's rows read as models from their JSON text -----------


class _Labelled(BaseModel):
    i: int
    label: str


class _Strict(BaseModel):
    i: int
    label: int  # 'row 1' does not fit


async def test_rpc_rows_are_the_models_of_what_rpc_returns(env: Env) -> None:
    backend = env.backend()
    rows = await done(backend.rpc("vs_test_table", {"n": 3}))
    models = await done(backend.rpc_rows("vs_test_table", {"n": 3}, _Labelled))
    assert models == [_Labelled.model_validate(row) for row in rows]
    assert [m.label for m in models] == ["row 1", "row 2", "row 3"]
    assert await done(backend.rpc_rows("vs_test_table", {"n": 0}, _Labelled)) == []
    # Text that JSON escapes, read back unchanged
    env.sql(
        "create function public.vs_test_escapes() returns table (i integer, label text)"
        " language sql immutable as $$ select 1, e'quote \" back\\\\slash \\n tab\\t \u00e9' $$;"
        " grant execute on function public.vs_test_escapes() to service_role"
    )
    (escaped,) = await done(backend.rpc_rows("vs_test_escapes", None, _Labelled))
    assert escaped.label == 'quote " back\\slash \n tab\t \u00e9'
    assert escaped.label == (await done(backend.rpc("vs_test_escapes")))[0]["label"]


async def test_rpc_rows_that_do_not_fit_the_model_say_where(env: Env) -> None:
    with pytest.raises(UnexpectedResponseError, match=r"\[0\]\.label"):
        await done(env.backend().rpc_rows("vs_test_table", {"n": 2}, _Strict))


async def test_rpc_rows_of_a_call_that_returns_no_rows_is_unexpected(env: Env) -> None:
    # One composite value, not a set of rows: as the base class reads rpc()'s answer.
    with pytest.raises(UnexpectedResponseError, match="expected rows"):
        await done(env.backend().rpc_rows("vs_test_pair", None, _Labelled))


async def test_rpc_rows_run_as_the_identity_and_map_errors_as_rpc(env: Env) -> None:
    mine = await done(env.user("B1").rpc_rows("list_sessions", {}, _SessionIds))
    assert mine
    assert {row.profile_id for row in mine} == {env.world.person("B1").id}
    with pytest.raises(NotFoundError):
        await done(env.backend().rpc_rows("vs_test_missing", {}, _Labelled))


class _SessionIds(BaseModel):
    id: uuid.UUID
    profile_id: uuid.UUID


# -- pool, identities, lifecycle ---------------------------------------------------------


async def test_defaults_are_named_constants() -> None:
    assert (DEFAULT_MIN_POOL_SIZE, DEFAULT_MAX_POOL_SIZE) == (1, 10)
    assert DEFAULT_CONNECT_TIMEOUT_S > 0
    backend = AsyncPostgresBackend.from_dsn("postgresql://localhost/none")
    assert backend.identity == Identity.service_role()
    assert repr(backend) == "AsyncPostgresBackend(identity='service_role', closed=False)"
    await backend.aclose()


async def test_max_size_bounds_the_connections(env: Env) -> None:
    backend = env.backend(max_size=2)
    calls = [lambda: backend.rpc("vs_test_sleep", {"seconds": 0.15}) for _ in range(6)]
    pids = await concurrently(env.face, calls)
    assert len(pids) == 6
    assert len(set(pids)) == 2


async def test_min_size_connections_are_opened(env: Env) -> None:
    name = f"vs-test-{uuid.uuid4().hex[:8]}"
    backend = env.backend(make_conninfo(env.db.dsn, application_name=name), min_size=3, max_size=5)
    query = "select count(*) from pg_stat_activity where application_name = %s"

    def count() -> int:
        ((n,),) = env.sql(query, (name,))
        return int(n)

    assert count() == 0  # nothing before the first use
    await done(backend.open())
    for _ in range(500):  # the pool fills up in the background: poll for up to 5 s
        if count() >= 3:
            break
        await asyncio.sleep(0.01)
    # (it may have grown by one for the connection open() borrowed before the others came)
    assert 3 <= count() <= 5


async def test_connections_are_named_after_the_package(env: Env) -> None:
    backend = env.backend()
    pid = await done(backend.rpc("vs_test_sleep", {"seconds": 0}))
    rows = env.sql("select application_name from pg_stat_activity where pid = %s", (pid,))
    assert rows == [(DEFAULT_APPLICATION_NAME,)]


async def test_as_user_shares_the_pool_and_closing_is_scoped(env: Env) -> None:
    parent = env.backend(max_size=1)
    child = env.user("A1", parent)
    assert child.identity == Identity.user(env.world.person("A1").id)
    assert parent.identity == Identity.service_role()
    parent_pid = await done(parent.rpc("vs_test_sleep", {"seconds": 0}))
    assert await done(child.rpc("vs_test_sleep", {"seconds": 0})) == parent_pid
    await close(child)
    await close(child)  # idempotent
    assert child.closed
    with pytest.raises(ConfigurationError, match="closed"):
        await done(child.select("sessions"))
    assert await done(parent.rpc("vs_test_sleep", {"seconds": 0})) == parent_pid
    sibling = env.user("B1", parent)
    await close(parent)
    await close(parent)
    assert parent.closed
    assert sibling.closed
    with pytest.raises(ConfigurationError, match="closed"):
        await done(sibling.select("sessions"))
    with pytest.raises(ConfigurationError, match="closed"):
        parent.as_user(uuid.uuid4())


async def test_context_manager_closes(env: Env) -> None:
    backend = env.backend()
    if env.face == "async":
        async with backend as entered:
            assert await entered.select("companies", columns=("id",), limit=1) != []
    else:
        with backend as entered:
            assert entered.select("companies", columns=("id",), limit=1) != []
    assert backend.closed


@pytest.mark.parametrize(
    "options",
    [
        {"min_size": 3, "max_size": 2},
        {"max_size": 0},
        {"min_size": -1},
        {"timeout": 0},
        {"statement_timeout": -1.0},
        {"read_dsn": ""},
        {"read_dsn": "host=x port"},
        {"read_dsn": "host=replica", "replica_retry_after": -1},
        {"read_dsn": "host=replica", "replica_retry_after": float("nan")},
        {"read_dsn": "host=replica", "replica_retry_after": True},
    ],
)
async def test_invalid_pool_settings_are_configuration_errors(options: dict[str, Any]) -> None:
    for cls in FACES.values():
        with pytest.raises(ConfigurationError):
            cls.from_dsn("postgresql://localhost/x", **options)


async def test_invalid_dsn_is_a_configuration_error() -> None:
    for cls in FACES.values():
        with pytest.raises(ConfigurationError):
            cls.from_dsn("")
        with pytest.raises(ConfigurationError):
            cls.from_dsn("host=x port")


# -- failures ----------------------------------------------------------------------------


async def test_unreachable_database_is_transient_and_quick(env: Env) -> None:
    backend = env.backend(make_conninfo(env.db.dsn, port=closed_port()), timeout=0.3)
    started = time.monotonic()
    with pytest.raises(TransientError) as caught:
        await done(backend.select("sessions"))
    assert time.monotonic() - started < 2
    assert caught.value.__cause__ is not None  # the psycopg error, kept as the cause only
    with pytest.raises(TransientError):
        await done(backend.open())


async def test_statement_timeout_fails_at_once_and_is_not_retried(env: Env) -> None:
    """57014 is QueryTimeoutError, not transient: the default retry policy makes one attempt
    (retrying would only take as long again, four times over)."""
    backend = env.backend(statement_timeout=0.1)
    calls = 0

    async def attempt() -> Any:
        nonlocal calls
        calls += 1
        return await done(backend.rpc("vs_test_sleep", {"seconds": 5}))

    with pytest.raises(QueryTimeoutError) as caught:
        await async_call_with_retry(RetryPolicy(), attempt, idempotent=True)
    assert caught.value.code == "57014"
    assert not isinstance(caught.value, TransientError)
    assert calls == 1
    assert await done(backend.rpc("vs_test_sleep", {"seconds": 0})) > 0  # the pool recovers


async def test_a_killed_connection_is_transient_and_replaced(env: Env) -> None:
    name = f"vs-test-{uuid.uuid4().hex[:8]}"
    backend = env.backend(make_conninfo(env.db.dsn, application_name=name), max_size=1)
    first = await done(backend.rpc("vs_test_sleep", {"seconds": 0}))
    env.sql(
        "select pg_terminate_backend(pid) from pg_stat_activity where application_name = %s",
        (name,),
    )
    with pytest.raises(TransientError):
        await done(backend.select("companies"))
    second = await done(backend.rpc("vs_test_sleep", {"seconds": 0}))
    assert second != first


# -- auth users --------------------------------------------------------------------------


def has_pgcrypto(env: Env) -> bool:
    return env.sql("select count(*) from pg_extension where extname = 'pgcrypto'") == [(1,)]


async def test_create_auth_user(env: Env) -> None:
    backend = env.backend()
    user_id = await done(backend.create_auth_user("  New.User@Example.TEST "))
    assert isinstance(user_id, uuid.UUID)
    rows = env.sql(
        "select email, aud, role, email_confirmed_at is not null, raw_app_meta_data,"
        " encrypted_password from auth.users where id = %s",
        (user_id,),
    )
    assert rows == [
        (
            "new.user@example.test",
            "authenticated",
            "authenticated",
            True,
            {"provider": "email", "providers": ["email"]},
            None,
        )
    ]
    identities = env.sql(
        "select provider, provider_id, identity_data ->> 'email' from auth.identities"
        " where user_id = %s",
        (user_id,),
    )
    assert identities == [("email", str(user_id), "new.user@example.test")]
    chosen = uuid.uuid4()
    assert await done(backend.create_auth_user("chosen@example.test", user_id=chosen)) == chosen
    # the new user can act at once
    assert await done(backend.as_user(user_id).select("sessions")) == []


async def test_create_auth_user_with_a_password(env: Env) -> None:
    backend = env.backend()
    if not has_pgcrypto(env):
        with pytest.raises(ConfigurationError, match="pgcrypto"):
            await done(backend.create_auth_user("pw@example.test", password="s3cret-pw"))
        return
    user_id = await done(backend.create_auth_user("pw@example.test", password="s3cret-pw"))
    ((hashed,),) = env.sql("select encrypted_password from auth.users where id = %s", (user_id,))
    assert hashed.startswith("$2")
    assert bcrypt.checkpw(b"s3cret-pw", hashed.encode())
    assert not bcrypt.checkpw(b"wrong", hashed.encode())


async def test_create_auth_user_with_a_password_needs_pgcrypto(env: Env) -> None:
    env.sql("drop extension if exists pgcrypto")
    with pytest.raises(ConfigurationError, match="pgcrypto"):
        await done(env.backend().create_auth_user("nopw@example.test", password="s3cret-pw"))
    assert env.sql("select count(*) from auth.users where email = 'nopw@example.test'") == [(0,)]


async def test_create_auth_user_duplicates_are_conflicts(env: Env) -> None:
    backend = env.backend()
    with pytest.raises(ConflictError) as caught:
        await done(backend.create_auth_user("A1@example.test"))  # the world's a1@example.test
    assert caught.value.code == "23505"
    with pytest.raises(ConflictError):
        await done(
            backend.create_auth_user("other@example.test", user_id=env.world.person("A1").id)
        )
    assert env.sql("select count(*) from auth.users where email = 'other@example.test'") == [(0,)]


async def test_create_auth_user_needs_the_service_role(env: Env) -> None:
    with pytest.raises(PermissionDeniedError):
        await done(env.user("AA").create_auth_user("by-admin@example.test"))
    # ... and a login role that may write auth.users: PostgREST's authenticator may not
    with pytest.raises(PermissionDeniedError):
        await done(env.backend(env.db.authenticator_dsn).create_auth_user("x@example.test"))
    created = (
        "select count(*) from auth.users where email in ('by-admin@example.test', 'x@example.test')"
    )
    assert env.sql(created) == [(0,)]


# -- rpc: arguments read into the declared types, overloads, the cache (as PostgREST) ----

# Functions whose parameters need more than JSON-as-jsonb: arrays, uuids, jsonb of either
# shape, scalars; overloads told apart by their parameter names, and one PostgREST cannot
# tell apart; a single unnamed jsonb parameter; a STABLE function.
RPC_OBJECTS = """
create function public.vs_test_typed(
  tags text[] default null, ids uuid[] default null, doc jsonb default null,
  items jsonb default null, n integer default null, at timestamptz default null,
  flag boolean default null
) returns jsonb language sql immutable as $$
  select jsonb_build_object(
    'tags', to_jsonb(tags), 'tag_count', cardinality(tags),
    'ids', to_jsonb(ids), 'second_id', ids[2],
    'doc_kind', jsonb_typeof(doc), 'doc', doc,
    'items_kind', jsonb_typeof(items), 'items', items,
    'n_plus_one', n + 1, 'epoch', extract(epoch from at), 'not_flag', not flag)
$$;
create function public.vs_test_over(a integer) returns text
  language sql immutable as $$ select 'a integer' $$;
create function public.vs_test_over(a integer, b text) returns text
  language sql immutable as $$ select 'a integer, b text' $$;
create function public.vs_test_over(c text default 'c default') returns text
  language sql immutable as $$ select c $$;
create function public.vs_test_twins(a integer) returns text
  language sql immutable as $$ select 'integer' $$;
create function public.vs_test_twins(a text) returns text
  language sql immutable as $$ select 'text' $$;
create function public.vs_test_body(jsonb) returns jsonb
  language sql immutable as $$ select $1 $$;
create function public.vs_test_stable() returns text
  language sql stable as $$ select current_setting('transaction_read_only') $$;
grant execute on all functions in schema public to anon, authenticated, service_role;
"""


@pytest.fixture
def rpc_env(env: Env) -> Env:
    env.sql(RPC_OBJECTS)
    return env


async def test_rpc_reads_lists_uuids_and_json_into_the_declared_types(rpc_env: Env) -> None:
    first, second = uuid.uuid4(), uuid.uuid4()
    at = datetime.datetime(2026, 1, 2, 3, 4, 5, tzinfo=datetime.UTC)
    tags = ["plain", 'with "quotes"', "{braces}, commas", "back\\slash"]
    result = await done(
        rpc_env.backend().rpc(
            "vs_test_typed",
            {
                "tags": tags,  # text[]
                "ids": [first, str(second)],  # uuid[], from UUIDs or strings
                "doc": {"name": "x", "nested": [1, {"k": None}]},  # jsonb object
                "items": [1, "two", {"three": 3}],  # jsonb array
                "n": 41,
                "at": at,
                "flag": True,
            },
        )
    )
    assert result == {
        "tags": tags,
        "tag_count": 4,
        "ids": [str(first), str(second)],
        "second_id": str(second),
        "doc_kind": "object",
        "doc": {"name": "x", "nested": [1, {"k": None}]},
        "items_kind": "array",
        "items": [1, "two", {"three": 3}],
        "n_plus_one": 42,
        "epoch": at.timestamp(),
        "not_flag": False,
    }


async def test_rpc_empty_lists_and_nulls(rpc_env: Env) -> None:
    backend = rpc_env.backend()
    empty = await done(backend.rpc("vs_test_typed", {"tags": [], "ids": [], "items": []}))
    assert (empty["tags"], empty["tag_count"], empty["ids"]) == ([], 0, [])
    assert (empty["items_kind"], empty["items"]) == ("array", [])
    nulls = await done(backend.rpc("vs_test_typed", {"tags": None, "doc": None}))
    assert (nulls["tags"], nulls["tag_count"], nulls["doc"]) == (None, None, None)


async def test_rpc_a_value_its_type_cannot_read_is_invalid_input(rpc_env: Env) -> None:
    backend = rpc_env.backend()
    with pytest.raises(InvalidInputError) as caught:
        await done(backend.rpc("vs_test_typed", {"ids": [str(uuid.uuid4()), "not-a-uuid"]}))
    assert caught.value.code == "22P02"
    with pytest.raises(InvalidInputError):
        await done(backend.rpc("vs_test_typed", {"n": 1.5}))
    with pytest.raises(InvalidInputError, match="not JSON"):
        await done(backend.rpc("vs_test_typed", {"doc": {"x": object()}}))


async def test_rpc_with_an_unknown_argument_name_is_pgrst202(rpc_env: Env) -> None:
    backend = rpc_env.backend()
    with pytest.raises(NotFoundError) as caught:
        await done(backend.rpc("vs_test_scalar", {"a": 1, "c": 2}))
    error = caught.value
    assert (error.code, error.http_status) == ("PGRST202", 404)
    assert error.message == (
        "Could not find the function public.vs_test_scalar(a, c) in the schema cache"
    )
    assert error.hint == "Perhaps you meant to call the function public.vs_test_scalar(a, b)"
    # a parameter without a default left out is no match either
    with pytest.raises(NotFoundError) as caught:
        await done(backend.rpc("vs_test_scalar", {"b": 2}))
    assert caught.value.code == "PGRST202"
    with pytest.raises(NotFoundError, match="vs_test_scalar without parameters"):
        await done(backend.rpc("vs_test_scalar"))


@pytest.mark.parametrize(
    ("params", "expected"),
    [
        ({"a": 1}, "a integer"),
        ({"a": 1, "b": "x"}, "a integer, b text"),
        ({"c": "given"}, "given"),
        ({}, "c default"),
    ],
)
async def test_rpc_picks_the_overload_by_argument_names(
    rpc_env: Env, params: dict[str, Any], expected: str
) -> None:
    assert await done(rpc_env.backend().rpc("vs_test_over", params)) == expected


async def test_rpc_overloads_it_cannot_tell_apart(rpc_env: Env) -> None:
    backend = rpc_env.backend()
    with pytest.raises(NotFoundError) as missing:
        await done(backend.rpc("vs_test_over", {"a": 1, "c": "x"}))
    assert missing.value.code == "PGRST202"
    # same names, different types: PostgREST does not guess (300, PGRST203)
    with pytest.raises(APIError) as ambiguous:
        await done(backend.rpc("vs_test_twins", {"a": 1}))
    error = ambiguous.value
    assert type(error) is APIError
    assert (error.code, error.http_status) == ("PGRST203", 300)
    assert error.message == (
        "Could not choose the best candidate function between:"
        " public.vs_test_twins(a => integer), public.vs_test_twins(a => text)"
    )


async def test_rpc_a_single_unnamed_jsonb_parameter_takes_the_body(rpc_env: Env) -> None:
    body = {"anything": [1, 2], "at": "all"}
    assert await done(rpc_env.backend().rpc("vs_test_body", body)) == body


async def test_rpc_of_a_stable_function_runs_read_only(rpc_env: Env) -> None:
    backend = rpc_env.backend()
    assert await done(backend.rpc("vs_test_stable")) == "on"
    assert (await done(backend.rpc("vs_test_request_rpc")))["read_only"] == "off"


async def test_rpc_looks_overloads_up_once_per_pool(
    rpc_env: Env, monkeypatch: pytest.MonkeyPatch
) -> None:
    backend = rpc_env.backend()
    lookups: list[str] = []
    original = type(backend)._rpc_overloads

    def spy(self: Any, function: str) -> Any:
        lookups.append(function)
        return original(self, function)  # a coroutine on the async face: rpc awaits it

    monkeypatch.setattr(type(backend), "_rpc_overloads", spy)
    for n in (1, 2, 3):
        assert await done(backend.rpc("vs_test_scalar", {"a": n})) == n + 1
    assert await done(rpc_env.user("A1", backend).rpc("vs_test_scalar", {"a": 1})) == 2
    assert lookups == ["vs_test_scalar"]


async def test_rpc_follows_a_function_replaced_after_it_was_cached(rpc_env: Env) -> None:
    backend = rpc_env.backend()
    assert await done(backend.rpc("vs_test_scalar", {"a": 1})) == 2  # cached: (a int, b int)
    rpc_env.sql(
        "drop function public.vs_test_scalar(integer, integer);"
        " create function public.vs_test_scalar(a text, b text default '!') returns text"
        "  language sql immutable as $$ select a || b $$;"
        " grant execute on function public.vs_test_scalar(text, text) to service_role"
    )
    assert await done(backend.rpc("vs_test_scalar", {"a": "same names"})) == "same names!"
    rpc_env.sql(
        "drop function public.vs_test_scalar(text, text);"
        " create function public.vs_test_scalar(renamed integer) returns integer"
        "  language sql immutable as $$ select renamed * 10 $$;"
        " grant execute on function public.vs_test_scalar(integer) to service_role"
    )
    assert await done(backend.rpc("vs_test_scalar", {"renamed": 4})) == 40
    with pytest.raises(NotFoundError) as caught:  # the old name is gone for good
        await done(backend.rpc("vs_test_scalar", {"a": 1}))
    assert caught.value.code == "PGRST202"


# -- one round trip per call ----------------------------------------------------------------
# A one-statement call is one simple Query message (the request context, then the
# statement) on an autocommit connection: one implicit transaction.


async def test_a_call_is_one_message_and_one_transaction(env: Env) -> None:
    """statement_timestamp() is when the latest message arrived, now() when the transaction
    began: equal only if no BEGIN or context statement came in a message of its own."""
    assert await done(env.user("A1").rpc("vs_test_message")) is True
    assert await done(env.backend().rpc("vs_test_message")) is True


@pytest.mark.parametrize("who", ["service", "A1"])
async def test_a_failed_call_leaves_nothing_written_and_no_state(env: Env, who: str) -> None:
    backend = env.backend(max_size=1)  # every call on the same connection
    caller = backend if who == "service" else env.user(who, backend)
    with pytest.raises(APIError) as caught:
        await done(caller.rpc("vs_test_write_then_fail"))
    assert caught.value.code == "P0001"
    # A write in a read-only call (a GET) is refused, and rolled back with its context.
    with pytest.raises(PermissionDeniedError) as refused:
        await done(caller.select("vs_test_writer"))
    assert refused.value.code == "25006"
    assert env.sql("select count(*) from public.vs_test_log") == [(0,)]
    # The next calls on the connection: read-write again, the identity each one sets.
    assert isinstance(await done(caller.rpc("vs_test_write")), int)
    (row,) = await done(env.user("B1", backend).select("vs_test_request"))
    assert (row["role"], row["uid"], row["read_only"]) == (
        "authenticated",
        env.world.person("B1").id,
        "on",
    )
    assert await done(backend.rpc("vs_test_request_rpc")) == {
        "read_only": "off",
        "role": "service_role",
        "uid": None,
        "method": "POST",
        "path": "/rpc/vs_test_request_rpc",
    }
    role = "service_role" if who == "service" else "authenticated"
    assert env.sql("select role from public.vs_test_log") == [(role,)]


async def test_nothing_of_a_call_outlives_it_on_the_connection(
    db: tuple[Database, World],
) -> None:
    """After calls that succeed, fail and time out, the pooled connection is idle, outside
    any transaction, as the login role, with no claims and not read only."""
    database, world = db
    backend = AsyncPostgresBackend.from_dsn(database.dsn, max_size=1, statement_timeout=0.2)
    try:
        a1 = backend.as_user(world.person("A1").id)
        await a1.select("vs_test_request")
        with pytest.raises(QueryTimeoutError):
            await a1.rpc("vs_test_sleep", {"seconds": 5})
        with pytest.raises(APIError):
            await a1.rpc("vs_test_write_then_fail")
        await a1.rpc("vs_test_request_rpc")
        async with backend._shared.pool.connection() as conn:
            assert conn.info.transaction_status.name == "IDLE"
            cur = await conn.execute(
                "select current_user::text, session_user::text,"
                " coalesce(current_setting('request.jwt.claims', true), ''),"
                " coalesce(current_setting('request.method', true), ''),"
                " current_setting('transaction_read_only')"
            )
            current, login, claims, method, read_only = await cur.fetchone() or ()
            assert current == login
            assert (claims, method, read_only) == ("", "", "off")
    finally:
        await backend.aclose()
