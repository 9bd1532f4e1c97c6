"""AsyncPostgresBackend: the backend interface over PostgreSQL, through psycopg and a pool.

Every call is one transaction on a pooled connection, run the way PostgREST runs a request:
first the request context of :mod:`voicesessions._request` (``role``,
``request.jwt.claims``, ``request.method``, ...; all transaction-local), then one
statement. The login role of the DSN may be a superuser, ``postgres`` or ``authenticator``:
switching ``role`` inside the transaction makes grants, RLS and ``auth.uid()`` apply as
they do behind Supabase's API. A call of one statement is ONE round trip: the context and
the statement go as one multi-statement simple Query message on an autocommit connection
(one implicit transaction; parameters bound on the client, no prepared statements).

Nothing outlives a transaction on the server, so the DSN may be a transaction-mode pooler
(Supabase's pooler on port 6543, Supavisor, PgBouncer ``pool_mode = transaction``), where
consecutive transactions of one client run on different server connections shared with
other clients: no server-side prepared statements (``prepare_threshold=None`` on every
connection), the request context and ``statement_timeout`` set with
``set_config(..., true)`` in each call's transaction, no session-level ``SET``. Only live
events need a session of their own (``LISTEN``): see :meth:`AsyncPostgresBackend.session_events`
and ``listen_dsn``.

- ``select`` is a GET: its transaction is READ ONLY, as PostgREST's is.
- ``insert`` and ``rpc`` are POSTs, ``update`` a PATCH: READ WRITE; but ``rpc`` of a
  STABLE or IMMUTABLE function runs READ ONLY, as PostgREST runs it.
- ``rpc`` picks and calls the function as PostgREST does: the overload of ``public.<name>``
  whose parameter names fit the argument names (every name known, every parameter without
  a default given; else PGRST202, NotFoundError, or PGRST203 when several fit), and the
  arguments travel as one JSON object read with ``json_to_record`` into the parameters'
  declared types (a list becomes a ``text[]`` or ``uuid[]``, or stays JSON for ``jsonb``).
  The overloads of each function are looked up once per pool (looked up again when a call
  finds the function changed).
- ``rpc`` returns what PostgREST would put in its JSON body, decoded: the database turns
  the result into ``jsonb`` (``to_jsonb``), so values are JSON types (uuids and timestamps
  as strings). A set-returning function gives a list (of dicts for rows, of values for
  ``setof <scalar>``), any other function one value (a dict for a composite), ``void`` None.
- ``create_auth_user`` writes ``auth.users`` as the login role itself (no role switch),
  which must be allowed to: ``postgres`` on Supabase, the owner or a superuser locally.
- With a ``read_dsn`` (a streaming replica), a second pool serves the reads marked
  ``replica_ok`` (``select``, and ``rpc`` of a STABLE or IMMUTABLE function); everything
  else, and any read when the replica cannot be reached, uses the pool of ``dsn`` (see
  :class:`~voicesessions._async.backends.base.ReplicaHealth`).

SQL is composed only with :mod:`psycopg.sql` (identifiers quoted, values always bound as
parameters); names are also checked against a plain identifier pattern. ``dict`` and
``list`` values of rows and filters are sent as ``jsonb``. Every psycopg or pool error is
converted by :func:`_api_error` into a :mod:`voicesessions.errors` exception.
"""

from __future__ import annotations

import contextlib
import copy
import json
import math
import os
import re
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any, BinaryIO, TypeVar

import platformdirs
import psycopg
from psycopg import sql
from psycopg.adapt import Buffer, Loader
from psycopg.conninfo import conninfo_to_dict
from psycopg.rows import DictRow, dict_row, scalar_row
from psycopg.types.json import Jsonb
from psycopg_pool import AsyncConnectionPool, PoolTimeout
from pydantic import BaseModel

from voicesessions._async.backends.base import (
    DEFAULT_REPLICA_RETRY_S,
    AsyncBackend,
    ReplicaHealth,
)
from voicesessions._events import EVENTS_CHANNEL, EventVerifier
from voicesessions._identity import Identity
from voicesessions._query import SQL_OPERATORS, Filter, Order, conflict_target, jsonable
from voicesessions._request import request_context
from voicesessions._validation import parse_rows, parse_rows_json
from voicesessions.errors import (
    APIError,
    ConfigurationError,
    InvalidInputError,
    NotFoundError,
    PermissionDeniedError,
    TransientError,
    VoiceSessionsError,
    brief,
    from_sqlstate,
)

_M = TypeVar("_M", bound=BaseModel)

#: Connections the pool keeps open even when idle.
DEFAULT_MIN_POOL_SIZE = 1
#: Most connections the pool opens; further calls wait for a free one.
DEFAULT_MAX_POOL_SIZE = 10
#: Longest wait for a connection (from the pool, or a new one), in seconds.
DEFAULT_CONNECT_TIMEOUT_S = 10.0
#: Longest a statement may run before PostgreSQL cancels it (57014), in seconds.
DEFAULT_STATEMENT_TIMEOUT_S = 30.0
#: ``application_name`` of the connections, unless the DSN names one.
DEFAULT_APPLICATION_NAME = "voicesessions"

#: How long, in seconds, a listener waits for a notification before it yields ``None``.
LISTEN_TICK_S = 1.0

#: Environment variable naming the DSN live events listen on (a direct or session-mode
#: connection), when ``listen_dsn`` is not given: see :meth:`AsyncPostgresBackend.from_dsn`.
ENV_LISTEN_DSN = "VOICESESSIONS_LISTEN_DSN"

#: How long, in seconds, a new listening connection waits for its test notification (sent
#: through the pool) before it is judged to be behind a transaction-mode pooler.
LISTEN_PROBE_TIMEOUT_S = 5.0

#: Connection options that name a server, database or login: those of ``connect_kwargs``
#: are not applied to ``listen_dsn``, which names its own.
_WHO_AND_WHERE = frozenset(
    {"host", "hostaddr", "port", "dbname", "user", "password", "passfile", "service"}
)

#: Supabase's transaction-mode pooler (Supavisor on ``*.pooler.supabase.com``, the
#: dedicated PgBouncer on ``db.<ref>.supabase.co``) listens on this port; 5432 is direct or
#: the pooler's session mode.
SUPABASE_TRANSACTION_POOLER_PORT = 6543

#: Environment variable naming the directory of the local storage store.
ENV_STORAGE_ROOT = "VOICESESSIONS_STORAGE_ROOT"

#: Bytes copied at a time from a file object into the local storage store.
STORAGE_COPY_CHUNK = 1 << 20

#: PostgreSQL accepts at most this many bound parameters in one statement.
MAX_PARAMETERS = 65535

#: Table, column, function and parameter names the backend accepts (a second guard: every
#: name is also quoted with ``sql.Identifier``).
_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,62}")

#: Key of the advisory lock that serialises the creation of auth users with one email
#: (the first half of a two-key lock; the second is the hash of the address).
_AUTH_EMAIL_LOCK_KEY = 0x7653  # "vS"

_PGCRYPTO_AVAILABLE = sql.SQL(
    "select pg_catalog.to_regprocedure('extensions.crypt(text, text)') is not null"
    " and pg_catalog.to_regprocedure('extensions.gen_salt(text)') is not null as available"
)

_LOCK_EMAIL = sql.SQL(
    "select pg_catalog.pg_advisory_xact_lock({}, pg_catalog.hashtext(%(email)s))"
).format(sql.Literal(_AUTH_EMAIL_LOCK_KEY))

# A confirmed email user as GoTrue's admin API creates it: the user and its email identity.
# Token columns are '' rather than NULL because GoTrue cannot read NULL there.
_CREATE_AUTH_USER = """
with new_user as (
  insert into auth.users (
    instance_id, id, aud, role, email, encrypted_password, email_confirmed_at,
    raw_app_meta_data, raw_user_meta_data, confirmation_token, recovery_token,
    email_change_token_new, email_change, created_at, updated_at
  )
  select '00000000-0000-0000-0000-000000000000', %(id)s, 'authenticated', 'authenticated',
         %(email)s::text, {password}, now(), %(app_meta)s, %(user_meta)s, '', '', '', '', now(),
         now()
  where not exists (select 1 from auth.users u where u.email = %(email)s::text)
  returning id, email
)
insert into auth.identities (
  provider_id, user_id, identity_data, provider, last_sign_in_at, created_at, updated_at
)
select n.id::text, n.id,
       pg_catalog.jsonb_build_object(
         'sub', n.id::text, 'email', n.email, 'email_verified', true, 'phone_verified', false
       ),
       'email', now(), now(), now()
from new_user n
returning user_id as id
"""

# Every overload of ``public.<name>`` as PostgREST's schema cache knows it: its input
# parameters in order (name, type, variadic), how many have defaults, and its result shape.
_RPC_OVERLOADS = """
select pg_catalog.pg_get_function_identity_arguments(p.oid) as signature,
  p.pronargdefaults as defaults,
  p.proretset as returns_set,
  p.provolatile in ('i', 's') as read_only,
  p.prorettype = 'pg_catalog.void'::pg_catalog.regtype as returns_void,
  p.prorettype <> 'pg_catalog.record'::pg_catalog.regtype and rt.typtype <> 'c'
    and not coalesce(p.proargmodes && array['o', 't']::"char"[], false) as returns_scalar,
  coalesce((
    select pg_catalog.jsonb_agg(
             pg_catalog.jsonb_build_array(coalesce(a.name, ''), tn.nspname, t.typname,
                                          pg_catalog.format_type(t.oid, null), a.mode = 'v')
             order by a.n)
    from unnest(coalesce(p.proallargtypes, p.proargtypes::pg_catalog.oid[]), p.proargnames,
                coalesce(p.proargmodes,
                         pg_catalog.array_fill('i'::"char", array[p.pronargs::integer])))
         with ordinality as a(type, name, mode, n)
    join pg_catalog.pg_type t on t.oid = a.type
    join pg_catalog.pg_namespace tn on tn.oid = t.typnamespace
    where a.mode in ('i', 'b', 'v')
  ), '[]'::jsonb) as params
from pg_catalog.pg_proc p
join pg_catalog.pg_type rt on rt.oid = p.prorettype
where p.pronamespace = 'public'::pg_catalog.regnamespace and p.proname = %s
  and p.prokind = 'f'
order by p.oid
"""

# The call as PostgREST makes it: the JSON body read into the parameters' declared types
# (``json_to_record``), passed by name; the result serialised by the database.
_RPC_CALL_WITH_ARGUMENTS = """
select pg_catalog.to_jsonb(r) as value
from pg_catalog.json_to_record(%s::json) as _({columns})
cross join lateral (select * from {function}({arguments})) as r
"""
_RPC_CALL = """
select pg_catalog.to_jsonb(r) as value from (select * from {function}({argument})) as r
"""


#: First statement of a READ ONLY call (see ``_fetch``): in the implicit transaction of a
#: multi-statement Query message, it makes the rest of the message read only (25006).
_READ_ONLY = "set transaction read only; "


class _SharedPool:
    """A connection pool shared by a backend and the backends its ``as_user`` made.

    The pool is created closed and opened on first use (``psycopg_pool`` wants an async pool
    opened explicitly, inside the event loop). Only the backend that created it closes it.
    """

    def __init__(
        self,
        pool: AsyncConnectionPool[psycopg.AsyncConnection[Any]],
        dsn: str,
        connect_kwargs: dict[str, Any],
        listen: tuple[str, dict[str, Any]] | None = None,
    ) -> None:
        self.pool = pool
        self.dsn = dsn
        self.connect_kwargs = connect_kwargs
        #: The DSN and connection options of listening connections (LISTEN), if given
        #: apart from the pool's.
        self.listen = listen
        self.opened = False
        self.closed = False
        #: After a connection attempt timed out: until when (``time.monotonic()``) new
        #: attempts fail at once with its message instead of waiting again.
        self.timed_out: tuple[float, str] | None = None
        #: The overloads of each function ``rpc`` called, by name (PostgREST's schema cache).
        self.functions: dict[str, tuple[_Overload, ...]] = {}

    async def ensure_open(self) -> None:
        if not self.opened:
            # One connection first, outside the pool: a wrong password, a missing database
            # or an unknown host fails now with its own message, instead of the pool
            # retrying it in the background until the caller's timeout ("couldn't get a
            # connection"). A refused or timed-out connection is TransientError.
            await self.check_connection()
            await self.pool.open()  # idempotent, and serialised by the pool's own lock
            self.opened = True

    async def check_connection(self) -> None:
        """Connect once with the pool's settings and disconnect; raise why it failed.

        A refused connection, or a server starting up, is a TransientError the caller's
        RetryPolicy may retry (each attempt fails in milliseconds). An attempt that timed out
        (a host that does not answer) already waited ``connect_timeout``: for the pool's
        ``timeout`` after it, attempts fail at once with the same TransientError, so a
        retried call waits for one connect timeout, not one per attempt."""
        if self.timed_out is not None:
            until, message = self.timed_out
            if time.monotonic() < until:
                raise TransientError(f"{message} (not tried again yet)")
            self.timed_out = None
        try:
            conn = await psycopg.AsyncConnection.connect(self.dsn, **self.connect_kwargs)
        except psycopg.Error as exc:
            error = _connect_error(exc, self.dsn, self.connect_kwargs)
            if isinstance(error, TransientError) and _timed_out(exc):
                self.timed_out = (time.monotonic() + self.pool.timeout, str(error))
            raise error from exc
        await conn.close()

    async def aclose(self) -> None:
        self.closed = True
        await self.pool.close()


class AsyncPostgresBackend(AsyncBackend):
    """The backend over a PostgreSQL DSN: a Supabase database (direct, or through its
    pooler in session or transaction mode), a local server, the test cluster.

    Build it with :meth:`from_dsn`. It acts as ``identity`` (``service_role`` by default);
    :meth:`as_user` gives a backend acting as a user over the same pool. Close it with
    :meth:`aclose` (or ``async with``); closing a backend made by :meth:`as_user` releases
    nothing, closing the one made by :meth:`from_dsn` closes the pool for all of them.
    """

    def __init__(
        self,
        dsn: str,
        *,
        min_size: int = DEFAULT_MIN_POOL_SIZE,
        max_size: int = DEFAULT_MAX_POOL_SIZE,
        timeout: float = DEFAULT_CONNECT_TIMEOUT_S,
        statement_timeout: float | None = DEFAULT_STATEMENT_TIMEOUT_S,
        identity: Identity | None = None,
        connect_kwargs: Mapping[str, Any] | None = None,
        storage_root: Path | str | None = None,
        read_dsn: str | None = None,
        replica_retry_after: float = DEFAULT_REPLICA_RETRY_S,
        listen_dsn: str | None = None,
    ) -> None:
        """See :meth:`from_dsn`."""
        if not isinstance(dsn, str) or not dsn.strip():
            raise ConfigurationError("a PostgreSQL DSN is required")
        try:
            dsn_params = conninfo_to_dict(dsn)
        except psycopg.Error as exc:
            raise ConfigurationError(f"invalid PostgreSQL DSN: {exc}") from None
        for name, size in (("min_size", min_size), ("max_size", max_size)):
            if isinstance(size, bool) or not isinstance(size, int) or size < 0:
                raise ConfigurationError(f"{name} must be an integer >= 0")
        if max_size < max(min_size, 1):
            raise ConfigurationError("max_size must be at least 1 and at least min_size")
        if not _positive_seconds(timeout):
            raise ConfigurationError("timeout must be a positive number of seconds")
        if statement_timeout is not None and not _positive_seconds(statement_timeout):
            raise ConfigurationError(
                "statement_timeout must be a positive number of seconds, or None"
            )

        listen_dsn = _listen_dsn(listen_dsn)
        kwargs = _connect_kwargs(dsn_params, timeout, connect_kwargs)
        listen = None
        if listen_dsn is not None:
            # The caller's options but those naming another server, database or login.
            options = {k: v for k, v in (connect_kwargs or {}).items() if k not in _WHO_AND_WHERE}
            listen = (listen_dsn, _connect_kwargs(conninfo_to_dict(listen_dsn), timeout, options))

        #: Set in every call's transaction (set_config(..., true)), never on the session: a
        #: transaction-mode pooler hands the session to other clients between transactions.
        self._settings: dict[str, str] = {}
        if statement_timeout is not None:
            self._settings["statement_timeout"] = str(max(1, round(statement_timeout * 1000)))
        #: The same as the first statement of a message that sets no request context.
        self._settings_prefix = _settings_literal(self._settings)

        async def configure(conn: psycopg.AsyncConnection[Any]) -> None:
            # Autocommit: a call of one statement is one simple Query message (see _fetch);
            # calls of several statements open their own transaction (conn.transaction()).
            # Client-side only: nothing is sent to the server (it may be a pooler's).
            await conn.set_autocommit(True)

        pool: AsyncConnectionPool[psycopg.AsyncConnection[Any]] = AsyncConnectionPool(
            dsn,
            kwargs=kwargs,
            min_size=min_size,
            max_size=max_size,
            timeout=timeout,
            configure=configure,
            open=False,
        )
        self.identity = identity if identity is not None else Identity.service_role()
        self._shared = _SharedPool(pool, dsn, kwargs, listen)
        self._replica = _replica_pool(
            read_dsn, kwargs, connect_kwargs, pool, configure, replica_retry_after
        )
        self._storage_root = _storage_root(storage_root)
        self._owns_pool = True
        self._closed = False

    @classmethod
    def from_dsn(
        cls,
        dsn: str,
        *,
        min_size: int = DEFAULT_MIN_POOL_SIZE,
        max_size: int = DEFAULT_MAX_POOL_SIZE,
        timeout: float = DEFAULT_CONNECT_TIMEOUT_S,
        statement_timeout: float | None = DEFAULT_STATEMENT_TIMEOUT_S,
        identity: Identity | None = None,
        connect_kwargs: Mapping[str, Any] | None = None,
        storage_root: Path | str | None = None,
        read_dsn: str | None = None,
        replica_retry_after: float = DEFAULT_REPLICA_RETRY_S,
        listen_dsn: str | None = None,
    ) -> AsyncPostgresBackend:
        """A backend over ``dsn`` with a pool of ``min_size`` to ``max_size`` connections.

        ``timeout`` bounds the wait for a connection (TransientError after it);
        ``statement_timeout`` is set in every call's transaction (None leaves the server's
        own); ``identity`` defaults to ``service_role``; ``connect_kwargs`` go to
        ``psycopg.AsyncConnection.connect`` (the default ``prepare_threshold=None``, no
        server-side prepared statements, is what lets ``dsn`` be a transaction-mode
        pooler such as Supabase's on port 6543; the backend's own calls bind parameters
        on the client and gain nothing from preparing). ``listen_dsn`` (default:
        ``$VOICESESSIONS_LISTEN_DSN``) is where live events listen (:meth:`session_events`)
        when ``dsn`` is a transaction-mode pooler: a direct connection or a session-mode
        pooler of the same database. ``storage_root`` is the directory of the local storage
        store, where the object ``<path>`` of ``<bucket>`` is the file
        ``<storage_root>/<bucket>/<path>`` (default: ``$VOICESESSIONS_STORAGE_ROOT``, else
        ``<user data dir>/voicesessions/storage``); backends made by :meth:`as_user` share
        it. No connection is made until the first call or :meth:`open`.

        ``read_dsn`` names a read replica (a hot standby of ``dsn``) for the reads that
        tolerate lag: it gets a pool of its own, with the same sizes and settings (keywords
        its DSN sets are its own). A replica that cannot be reached (refused, timed out,
        shutting down or starting up) is not an error: those reads go to ``dsn``, a warning
        is logged, and the replica is tried again after ``replica_retry_after`` seconds.
        The replica's pool opens on the first read it serves (:meth:`open` opens the
        primary's). Without ``read_dsn`` there is one pool and nothing changes.
        """
        return cls(
            dsn,
            min_size=min_size,
            max_size=max_size,
            timeout=timeout,
            statement_timeout=statement_timeout,
            identity=identity,
            connect_kwargs=connect_kwargs,
            storage_root=storage_root,
            read_dsn=read_dsn,
            replica_retry_after=replica_retry_after,
            listen_dsn=listen_dsn,
        )

    # -- lifecycle --------------------------------------------------------------------------

    async def open(self) -> None:
        """Open the pool now and check that a connection is ready within ``timeout``
        (TransientError otherwise; the pool keeps trying in the background). Optional:
        calls open the pool on first use. The pool fills up to ``min_size`` meanwhile.
        """
        shared = self._usable()
        try:
            await shared.ensure_open()
            async with shared.pool.connection():
                pass
        except psycopg.Error as exc:
            raise _api_error(exc) from exc

    def as_user(self, user_id: uuid.UUID) -> AsyncPostgresBackend:
        """This backend acting as the authenticated user ``user_id``, over the same pool."""
        self._usable()
        child = copy.copy(self)
        child.identity = Identity.user(user_id)
        child._owns_pool = False
        child._closed = False
        return child

    async def aclose(self) -> None:
        """Close this backend; the pool too if this backend created it. Idempotent."""
        if self._closed:
            return
        self._closed = True
        if self._owns_pool:
            await self._shared.aclose()
            if self._replica is not None:
                await self._replica.shared.aclose()

    @property
    def storage_root(self) -> Path:
        """The directory of the local storage store (shared with ``as_user`` backends)."""
        return self._storage_root

    @property
    def closed(self) -> bool:
        """True once this backend, or the backend that owns its pool, is closed."""
        return self._closed or self._shared.closed

    def __repr__(self) -> str:
        return f"{type(self).__name__}(identity={self.identity.role!r}, closed={self.closed})"

    # -- the interface ----------------------------------------------------------------------

    async def select(
        self,
        table: str,
        *,
        columns: Sequence[str] = ("*",),
        filters: Sequence[Filter] = (),
        order: Sequence[Order] = (),
        limit: int | None = None,
        replica_ok: bool = False,
    ) -> list[dict[str, Any]]:
        """Rows of ``public.<table>`` visible to the identity, in a READ ONLY transaction
        (on the read replica, if there is one, with ``replica_ok``).

        The statement of each shape of call (table, columns, filter columns and operators,
        order, limit) is composed once and reused: only the parameters change per call."""
        if isinstance(columns, str):
            raise InvalidInputError("columns must be a sequence of column names")
        for f in filters:
            if not isinstance(f, Filter):
                raise InvalidInputError(f"not a Filter: {f!r}")
        # Typed where values compare equal across types (True == 1 == 1.0), so that a valid
        # shape never stands for an invalid one.
        shape = (
            table,
            tuple(columns),
            tuple(
                (f.column, f.op, (type(f.value), f.value) if f.op == "is" else None)
                for f in filters
            ),
            tuple((o.column, bool(o.descending)) for o in order),
            (type(limit), limit),
        )
        try:
            query = _SELECT_STATEMENTS[shape]
        except (KeyError, TypeError):  # new, or not hashable (then invalid: refused below)
            query = _select_statement(table, columns, filters, order, limit)
            with contextlib.suppress(TypeError):
                _remember(_SELECT_STATEMENTS, shape, query)
        params = _where_params(filters)
        if replica_ok:
            return await self._fetch_lagging("GET", f"/{table}", query, params)
        return await self._fetch("GET", f"/{table}", query, params, read_only=True)

    async def insert(
        self,
        table: str,
        rows: Sequence[Mapping[str, Any]],
        *,
        on_conflict: Sequence[str] | None = None,
        ignore_duplicates: bool = False,
    ) -> list[dict[str, Any]]:
        """Insert ``rows`` with one multi-row ``INSERT ... RETURNING *``.

        With ``on_conflict`` and ``ignore_duplicates=True`` (always together), conflicting
        rows are skipped (``on conflict (...) do nothing``) and not returned.
        """
        target = _table(table)
        try:
            conflict = conflict_target(on_conflict, ignore_duplicates)
        except ValueError as exc:
            raise InvalidInputError(str(exc)) from exc
        if isinstance(rows, Mapping):
            raise InvalidInputError("rows must be a sequence of mappings")
        if not rows:
            return []
        keys = list(rows[0].keys())
        if not keys:
            raise InvalidInputError("rows to insert need at least one column")
        if any(set(row.keys()) != set(keys) for row in rows):
            raise InvalidInputError("every row to insert must have the same columns")
        if len(keys) * len(rows) > MAX_PARAMETERS:
            raise InvalidInputError(
                f"one insert takes at most {MAX_PARAMETERS} values; split the rows into batches"
            )
        names = [_identifier(k, "column") for k in keys]
        one_row = sql.SQL("({})").format(sql.SQL(", ").join([sql.Placeholder()] * len(keys)))
        query = sql.SQL("insert into {} ({}) values {}").format(
            target, sql.SQL(", ").join(names), sql.SQL(", ").join([one_row] * len(rows))
        )
        if conflict is not None:
            query += sql.SQL(" on conflict ({}) do nothing").format(
                sql.SQL(", ").join(_identifier(c, "column") for c in conflict)
            )
        query += sql.SQL(" returning *")
        params = [_param(row[k]) for row in rows for k in keys]
        return await self._fetch("POST", f"/{table}", query, params)

    async def update(
        self, table: str, values: Mapping[str, Any], *, filters: Sequence[Filter]
    ) -> list[dict[str, Any]]:
        """Update the visible rows matching ``filters`` (at least one) and return them."""
        target = _table(table)
        if not values:
            raise InvalidInputError("nothing to update: values is empty")
        if not filters:
            raise InvalidInputError("an update needs at least one filter")
        assignments = sql.SQL(", ").join(
            sql.SQL("{} = {}").format(_identifier(k, "column"), sql.Placeholder()) for k in values
        )
        where, where_params = _where(filters)
        query = (
            sql.SQL("update {} set {}").format(target, assignments)
            + where
            + sql.SQL(" returning *")
        )
        params = [_param(v) for v in values.values()] + where_params
        return await self._fetch("PATCH", f"/{table}", query, params)

    async def rpc(
        self,
        function: str,
        params: Mapping[str, Any] | None = None,
        *,
        replica_ok: bool = False,
    ) -> Any:
        """Call ``public.<function>`` with named arguments as PostgREST does and return its
        JSON-decoded result: a list for a set-returning function, else one value (None for
        ``void``). With ``replica_ok``, a STABLE or IMMUTABLE function is called on the read
        replica, if there is one (a VOLATILE one, which may write, always on the primary).

        The overload is the one whose parameters fit the argument names; each argument is
        read from JSON into its parameter's declared type (see the module docstring). No
        fitting overload: NotFoundError ``PGRST202``; several: APIError ``PGRST203``.
        """
        rows, overload = await self._call(function, params, replica_ok=replica_ok)
        return _rpc_result(rows, overload)

    async def rpc_rows(
        self,
        function: str,
        params: Mapping[str, Any] | None,
        model: type[_M],
        *,
        replica_ok: bool = False,
    ) -> list[_M]:
        """:meth:`rpc` for a set-returning function, its rows validated as ``model`` in one
        pass straight from their JSON text (:func:`voicesessions._validation.parse_rows_json`,
        as the Supabase backend reads PostgREST's answer): the rows are not decoded into
        dicts first."""
        texts, overload = await self._call(function, params, replica_ok=replica_ok, as_text=True)
        if not overload.returns_set or overload.returns_scalar:
            decoded = [{"value": json.loads(text)} for text in texts]
            return parse_rows(model, _rpc_result(decoded, overload))
        return parse_rows_json(model, b"[" + b",".join(texts) + b"]")

    async def _call(
        self,
        function: str,
        params: Mapping[str, Any] | None,
        *,
        replica_ok: bool,
        as_text: bool = False,
    ) -> tuple[list[Any], _Overload]:
        """The result rows of calling ``public.<function>`` (see :meth:`rpc`), and the
        overload called; ``as_text``: each row is the JSON text of its ``value`` (bytes)."""
        _identifier(function, "function")
        arguments = dict(params or {})
        for name in arguments:
            _identifier(name, "parameter")
        body = _json_dumps(jsonable(arguments))
        names = frozenset(arguments)
        cached = self._usable().functions.get(function)
        overloads = cached if cached is not None else await self._rpc_overloads(function)
        while True:
            try:
                overload = _resolve_overload(function, overloads, names)
                query, values = _rpc_query(function, overload, names, body)
                path = f"/rpc/{function}"
                if replica_ok and overload.read_only:
                    rows = await self._fetch_lagging("POST", path, query, values, as_text=as_text)
                else:
                    rows = await self._fetch(
                        "POST", path, query, values, read_only=overload.read_only, as_text=as_text
                    )
                return rows, overload
            except APIError as exc:
                if cached is None or isinstance(exc, TransientError):
                    raise
                # The cached overloads may be stale (the function was replaced): if so, call
                # again with the current ones (the failed call's transaction was rolled back).
                latest = await self._rpc_overloads(function)
                if latest == overloads:
                    raise
                overloads, cached = latest, None

    @contextlib.asynccontextmanager
    async def session_events(
        self, session_id: uuid.UUID
    ) -> AsyncIterator[AsyncIterator[dict[str, Any] | None]]:
        """``LISTEN`` on the channel ``broadcast_session_event`` notifies, on a connection of
        its own (outside the pool, as the login role of ``listen_dsn``, else of the DSN),
        keeping the events of ``session_id``: notifications signed by the database
        (HMAC-SHA-256 with the key ``private.session_events_key()`` gives service_role), for
        that session, checked before they are decoded; anything else is dropped. See
        :meth:`AsyncBackend.session_events`.

        ``LISTEN`` needs a session that stays with its client, which a transaction-mode
        pooler does not give. Such a listening DSN is refused with ConfigurationError naming
        the fix (``listen_dsn=`` or ``$VOICESESSIONS_LISTEN_DSN``): at once for Supabase's
        pooler port 6543, otherwise when a test notification, sent through the pool on a
        channel of its own before listening starts, does not arrive within
        :data:`LISTEN_PROBE_TIMEOUT_S` (on a working connection it costs three short round
        trips when the feed starts: LISTEN, the notification, UNLISTEN)."""
        shared = self._usable()
        dsn, connect_kwargs = shared.listen or (shared.dsn, shared.connect_kwargs)
        if _is_supabase_transaction_pooler(dsn, connect_kwargs):
            raise _no_listening_through(dsn, connect_kwargs, "is Supabase's transaction pooler")
        try:
            conn = await psycopg.AsyncConnection.connect(dsn, autocommit=True, **connect_kwargs)
        except psycopg.Error as exc:
            raise _connect_error(exc, dsn, connect_kwargs) from exc
        try:
            try:
                key, now_ms = await _events_key(conn)
                await self._check_notifications_arrive(conn, dsn, connect_kwargs)
                await conn.execute(sql.SQL("listen {}").format(sql.Identifier(EVENTS_CHANNEL)))
            except psycopg.Error as exc:
                raise _api_error(exc) from exc
            yield _notifications(conn, EventVerifier(key, session_id, now_ms))
        finally:
            await conn.close()

    async def create_auth_user(
        self,
        email: str,
        *,
        password: str | None = None,
        user_id: uuid.UUID | None = None,
    ) -> uuid.UUID:
        """Insert a confirmed email user into ``auth.users`` (and its ``auth.identities``
        row) as the login role; return its id.

        Needs the service-role identity (PermissionDeniedError otherwise). The email is
        lower-cased as Supabase Auth does; an existing email or id raises ConflictError. A
        password is stored as a bcrypt hash made by pgcrypto (``extensions.crypt``); without
        pgcrypto, passwords raise ConfigurationError.
        """
        if self.identity.role != "service_role":
            raise PermissionDeniedError("creating auth users needs the service role", code="42501")
        address = email.strip().lower()
        if not address:
            raise InvalidInputError("an email address is required")
        uid = user_id if user_id is not None else uuid.uuid4()
        password_sql = (
            sql.SQL("extensions.crypt(%(password)s, extensions.gen_salt('bf'))")
            if password is not None
            else sql.SQL("null")
        )
        query = sql.SQL(_CREATE_AUTH_USER).format(password=password_sql)
        params = {
            "id": uid,
            "email": address,
            "password": password,
            "app_meta": Jsonb({"provider": "email", "providers": ["email"]}),
            "user_meta": Jsonb({}),
        }
        if password is not None:
            check = await self._message(self._settings_prefix + _PGCRYPTO_AVAILABLE.as_string(None))
            if not (check and check[0]["available"]):
                raise ConfigurationError(
                    "storing a password needs the pgcrypto extension in schema"
                    " 'extensions' (or use the Supabase backend, whose Auth API hashes it)"
                )
        # One message, one implicit transaction: the lock on the address, then the insert.
        text = self._settings_prefix + _LOCK_EMAIL.as_string(None) + "; " + query.as_string(None)
        created = await self._message(text, params)
        if not created:
            raise from_sqlstate("23505", f"a user with email {brief(address)} already exists")
        new_id = created[0]["id"]
        assert isinstance(new_id, uuid.UUID)
        return new_id

    async def remove_storage_objects(self, bucket: str, paths: Sequence[str]) -> list[str]:
        """Delete the files ``<storage_root>/<bucket>/<path>`` of the local store; return the
        paths now gone (all of them: a missing file counts as removed).

        Every path is checked before anything is deleted: an empty, absolute or escaping
        (``..``) bucket or path is InvalidInputError. A file that cannot be deleted (a
        directory in its place, no permission) raises APIError (PermissionDeniedError for a
        permission problem) after the earlier paths were deleted. The store is a plain
        directory: the identity is not checked here (the GDPR functions authorize the call
        that hands out the paths).
        """
        self._usable()
        if isinstance(paths, str):
            raise InvalidInputError("paths must be a sequence of object paths, not one string")
        bucket_dir = self._storage_root / _storage_part(bucket, "bucket")
        targets = [(path, bucket_dir / _storage_part(path, "path")) for path in paths]
        removed: list[str] = []
        for path, target in targets:
            try:
                target.unlink(missing_ok=True)
            except PermissionError as exc:
                raise PermissionDeniedError(
                    f"cannot delete storage object {bucket}/{path}: {exc.strerror}"
                ) from exc
            except OSError as exc:
                raise APIError(
                    f"cannot delete storage object {bucket}/{path}: {exc.strerror or exc}"
                ) from exc
            removed.append(path)
        return removed

    async def upload_storage_object(
        self,
        bucket: str,
        path: str,
        data: bytes | BinaryIO,
        *,
        content_type: str,
        overwrite: bool = False,
    ) -> None:
        """Write ``data`` to ``<storage_root>/<bucket>/<path>`` (directories made as needed).

        The bytes go to a temporary file in the target directory first, then take the
        object's name in one step: ``os.link`` (fails if the object exists: ConflictError)
        or, with ``overwrite``, ``os.replace``. A reader never sees half a file, and a
        failure leaves nothing behind. File objects are copied in chunks of
        :data:`STORAGE_COPY_CHUNK` bytes. The content type is not kept (a plain directory has
        no metadata); the identity is not checked here (the repository's database calls
        authorize the session first).
        """
        self._usable()
        target = self._storage_root / _storage_part(bucket, "bucket") / _storage_part(path, "path")
        if not isinstance(content_type, str) or not content_type:
            raise InvalidInputError("a content type is required")
        _write_object(target, data, overwrite=overwrite, name=f"{bucket}/{path}")

    async def download_storage_object(self, bucket: str, path: str) -> bytes:
        """The bytes of ``<storage_root>/<bucket>/<path>`` (NotFoundError when absent)."""
        self._usable()
        target = self._storage_root / _storage_part(bucket, "bucket") / _storage_part(path, "path")
        try:
            return target.read_bytes()
        except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
            raise NotFoundError(f"storage object {bucket}/{path} not found") from None
        except OSError as exc:
            raise _storage_os_error("read", f"{bucket}/{path}", exc) from exc

    async def storage_object_url(self, bucket: str, path: str, *, expires_in: int) -> str:
        """The ``file://`` URL of ``<storage_root>/<bucket>/<path>``.

        Honest limits of a local directory: the URL does not expire (``expires_in`` is only
        validated) and it grants nothing by itself: whoever can read the file system can
        read the file. It is meant for local development and tests. NotFoundError when the
        file is absent.
        """
        self._usable()
        if isinstance(expires_in, bool) or not isinstance(expires_in, int) or expires_in <= 0:
            raise InvalidInputError("expires_in must be a positive number of seconds")
        target = self._storage_root / _storage_part(bucket, "bucket") / _storage_part(path, "path")
        if not target.is_file():
            raise NotFoundError(f"storage object {bucket}/{path} not found")
        return target.as_uri()

    # -- plumbing ---------------------------------------------------------------------------

    def _usable(self) -> _SharedPool:
        if self.closed:
            raise ConfigurationError(f"this {type(self).__name__} is closed")
        return self._shared

    @contextlib.asynccontextmanager
    async def _transaction(
        self, method: str | None, path: str, *, read_only: bool = False
    ) -> AsyncIterator[psycopg.AsyncCursor[DictRow]]:
        """One transaction on a pooled connection. With a ``method``, PostgREST's request
        context for the identity is set first; without, it runs as the login role."""
        shared = self._usable()
        try:
            await shared.ensure_open()
            async with shared.pool.connection() as conn:
                if conn.read_only is not read_only:  # BEGIN [READ ONLY] is rebuilt on a change
                    await conn.set_read_only(read_only)
                async with conn.transaction(), conn.cursor(row_factory=dict_row) as cur:
                    if method is not None:
                        await cur.execute(
                            *request_context(
                                self.identity.role,
                                self.identity.claims,
                                method=method,
                                path=path,
                                settings=self._settings,
                            )
                        )
                    elif self._settings_prefix:
                        await cur.execute(self._settings_prefix.removesuffix("; "))
                    yield cur
        except PoolTimeout as exc:
            # No connection within the timeout: say why a new one cannot be made, if it
            # cannot (e.g. the password was changed since the pool opened).
            await shared.check_connection()
            raise _api_error(exc) from exc
        except psycopg.Error as exc:
            raise _api_error(exc) from exc

    async def _fetch(
        self,
        method: str,
        path: str,
        query: str | sql.Composed,
        params: Sequence[Any],
        *,
        read_only: bool = False,
        pool: _SharedPool | None = None,
        as_text: bool = False,
    ) -> list[Any]:
        """Run one statement as the identity, in ONE round trip (on ``pool``, by default the
        primary's): the request context and
        the statement travel as one multi-statement simple Query message on an autocommit
        connection, which PostgreSQL runs as one implicit transaction (the context's
        ``set_config(..., true)`` holds for the statement, an error rolls back both, and
        nothing outlives the message; ``statement_timeout`` is set in the context, so it
        applies to the statement). Parameters are bound on the client (``ClientCursor``: no
        server-side prepared statement, fine behind a transaction-mode pooler). The rows
        are dicts; with ``as_text``, the JSON text (bytes) of the first column of each."""
        context, context_params = request_context(
            self.identity.role,
            self.identity.claims,
            method=method,
            path=path,
            settings=self._settings,
        )
        statement = query if isinstance(query, str) else query.as_string(None)
        text = (_READ_ONLY if read_only else "") + context + "; " + statement
        return await self._message(text, (*context_params, *params), pool=pool, as_text=as_text)

    async def _message(
        self,
        text: str,
        params: Sequence[Any] | Mapping[str, Any] = (),
        *,
        pool: _SharedPool | None = None,
        as_text: bool = False,
    ) -> list[Any]:
        """Send ``text`` (statements separated by ``;``) as one simple Query message with
        its parameters bound on the client, on an autocommit connection of ``pool`` (by
        default the primary's): one round trip, one implicit transaction. The rows of the
        last statement, as dicts; with ``as_text``, the first column of each, a ``json`` or
        ``jsonb`` one as its text (bytes), not decoded."""
        shared = self._usable() if pool is None else pool
        try:
            await shared.ensure_open()
            async with shared.pool.connection() as conn:
                if not conn.autocommit:  # a connection the caller changed: not ours to use
                    await conn.set_autocommit(True)
                cur: psycopg.AsyncClientCursor[Any]
                if as_text:
                    cur = psycopg.AsyncClientCursor(conn, row_factory=scalar_row)
                    cur.adapters.register_loader("json", _JsonText)
                    cur.adapters.register_loader("jsonb", _JsonText)
                else:
                    cur = psycopg.AsyncClientCursor(conn, row_factory=dict_row)
                async with cur:
                    await cur.execute(text, params)
                    while cur.nextset():  # to the last result: the statement's
                        pass
                    return await cur.fetchall()
        except PoolTimeout as exc:
            await shared.check_connection()
            raise _api_error(exc) from exc
        except psycopg.Error as exc:
            raise _api_error(exc) from exc

    async def _fetch_lagging(
        self,
        method: str,
        path: str,
        query: str | sql.Composed,
        params: Sequence[Any],
        *,
        as_text: bool = False,
    ) -> list[Any]:
        """:meth:`_fetch` of a READ ONLY call that tolerates lag: on the read replica when
        there is one and it is reachable, else on the primary (see :class:`ReplicaHealth`)."""
        replica = self._replica
        if replica is not None and replica.health.usable():
            self._usable()
            try:
                if replica.health.recovering:
                    await replica.reconnect()
                rows = await self._fetch(
                    method,
                    path,
                    query,
                    params,
                    read_only=True,
                    pool=replica.shared,
                    as_text=as_text,
                )
            except TransientError as exc:
                if not _unreachable(exc):
                    raise
                replica.health.failed(exc)
            else:
                replica.health.succeeded()
                return rows
        return await self._fetch(method, path, query, params, read_only=True, as_text=as_text)

    async def _check_notifications_arrive(
        self, conn: psycopg.AsyncConnection[Any], dsn: str, connect_kwargs: Mapping[str, Any]
    ) -> None:
        """Listen on a channel of this connection's own, notify it through the pool, and
        refuse the connection (ConfigurationError) unless the notification arrives within
        :data:`LISTEN_PROBE_TIMEOUT_S`. Behind a transaction-mode pooler it never does: the
        server connection that ran ``LISTEN`` went back to the pooler's pool, and whoever
        holds it then gets the notification (or nobody). It is sent from another client
        because a connection notifying itself would get it back even there."""
        channel = f"voicesessions_probe_{uuid.uuid4().hex}"
        nonce = uuid.uuid4().hex
        await conn.execute(sql.SQL("listen {}").format(sql.Identifier(channel)))
        # As the login role (pg_notify is granted to PUBLIC), in one message.
        await self._message(
            self._settings_prefix + "select pg_catalog.pg_notify(%s, %s)", (channel, nonce)
        )
        arrived = False
        async for notify in conn.notifies(timeout=LISTEN_PROBE_TIMEOUT_S):
            if notify.channel == channel and notify.payload == nonce:
                arrived = True
                break
        await conn.execute(sql.SQL("unlisten {}").format(sql.Identifier(channel)))
        if not arrived:
            raise _no_listening_through(
                dsn,
                connect_kwargs,
                "did not deliver a test notification within"
                f" {LISTEN_PROBE_TIMEOUT_S:g} s: it looks like a transaction-mode pooler",
            )

    async def _rpc_overloads(self, function: str) -> tuple[_Overload, ...]:
        """Look up the overloads of ``public.<function>`` (as the login role: the catalog is
        readable by all) and cache them for every backend of the pool."""
        async with self._transaction(None, "", read_only=True) as cur:
            await cur.execute(_RPC_OVERLOADS, (function,))
            rows = await cur.fetchall()
        overloads = tuple(_Overload.from_row(row) for row in rows)
        self._usable().functions[function] = overloads
        return overloads


# -- helpers -------------------------------------------------------------------------------


@dataclass
class _ReplicaPool:
    """The read replica's pool and whether it is reachable, shared like :class:`_SharedPool`."""

    shared: _SharedPool
    health: ReplicaHealth

    async def reconnect(self) -> None:
        """After an outage: one new connection first (a still-dead replica fails at once,
        not after the pool's timeout), then drop the pool's connections that died."""
        await self.shared.check_connection()
        if self.shared.opened:
            try:
                await self.shared.pool.check()
            except psycopg.Error as exc:
                raise _api_error(exc) from exc


def _replica_pool(
    read_dsn: str | None,
    kwargs: Mapping[str, Any],
    connect_kwargs: Mapping[str, Any] | None,
    primary: AsyncConnectionPool[psycopg.AsyncConnection[Any]],
    configure: Callable[[psycopg.AsyncConnection[Any]], Awaitable[None]],
    retry_after: float,
) -> _ReplicaPool | None:
    """The pool of the read replica ``read_dsn`` (None without one): the primary pool's
    sizes, timeout, settings and connection keywords, except those its DSN sets itself."""
    if read_dsn is None:
        return None
    if not isinstance(read_dsn, str) or not read_dsn.strip():
        raise ConfigurationError("read_dsn must be a PostgreSQL DSN, or None")
    try:
        read_params = conninfo_to_dict(read_dsn)
    except psycopg.Error as exc:
        raise ConfigurationError(f"invalid read replica DSN: {exc}") from None
    explicit = connect_kwargs or {}
    read_kwargs = {k: v for k, v in kwargs.items() if k not in read_params or k in explicit}
    pool: AsyncConnectionPool[psycopg.AsyncConnection[Any]] = AsyncConnectionPool(
        read_dsn,
        kwargs=read_kwargs,
        min_size=primary.min_size,
        max_size=primary.max_size,
        timeout=primary.timeout,
        configure=configure,
        open=False,
    )
    host = _connect_host(read_dsn, read_kwargs) or "?"
    port = read_kwargs.get("port") or read_params.get("port") or ""
    name = f"{host}:{port}" if port else host
    return _ReplicaPool(_SharedPool(pool, read_dsn, read_kwargs), ReplicaHealth(name, retry_after))


#: SQLSTATEs of a server that is there but does not serve: shutting down, starting up.
_UNAVAILABLE_SQLSTATES = frozenset({"57P01", "57P02", "57P03"})


def _unreachable(exc: TransientError) -> bool:
    """Whether a transient error says the server could not be reached or used at all (no
    connection, a lost one, a server shutting down or starting up), rather than that one
    statement failed (a conflict with recovery, a timeout: for the retry policy)."""
    code = exc.code or ""
    return not code or code.startswith("08") or code in _UNAVAILABLE_SQLSTATES


def _connect_kwargs(
    dsn_params: Mapping[str, Any], timeout: float, given: Mapping[str, Any] | None
) -> dict[str, Any]:
    """The options of every connection to a DSN with these parameters: no server-side
    prepared statements (a transaction-mode pooler cannot keep them: "prepared statement
    _pg3_0 already exists"), a connect timeout and the package's application name unless
    the DSN says otherwise, then the caller's ``connect_kwargs``."""
    kwargs: dict[str, Any] = {"prepare_threshold": None}
    if "connect_timeout" not in dsn_params:
        kwargs["connect_timeout"] = max(2, math.ceil(timeout))  # libpq's minimum is 2
    if "application_name" not in dsn_params:
        kwargs["application_name"] = DEFAULT_APPLICATION_NAME
    kwargs.update(given or {})
    return kwargs


def _listen_dsn(given: object) -> str | None:
    """The DSN live events listen on: ``given``, else ``$VOICESESSIONS_LISTEN_DSN``, else
    None (the pool's DSN). ConfigurationError unless it is a DSN."""
    if given is None:
        given = os.environ.get(ENV_LISTEN_DSN) or None
        if given is None:
            return None
    if not isinstance(given, str) or not given.strip():
        raise ConfigurationError("listen_dsn must be a PostgreSQL DSN, or None")
    try:
        conninfo_to_dict(given)
    except psycopg.Error as exc:
        raise ConfigurationError(f"invalid listen_dsn: {exc}") from None
    return given


def _settings_literal(settings: Mapping[str, str]) -> str:
    """``select set_config(name, value, true), ...; `` with the values inlined as
    literals ('' without settings): the first statement of a message with no parameters of
    its own style to share."""
    if not settings:
        return ""
    calls = sql.SQL(", ").join(
        sql.SQL("pg_catalog.set_config({}, {}, true)").format(sql.Literal(k), sql.Literal(v))
        for k, v in settings.items()
    )
    return (sql.SQL("select ") + calls).as_string(None) + "; "


def _address(dsn: str, connect_kwargs: Mapping[str, Any]) -> tuple[str, str]:
    """The (first) host and port a DSN with these options connects to ('' when unknown)."""
    try:
        params = conninfo_to_dict(
            dsn, **{k: v for k, v in connect_kwargs.items() if k in {"host", "port"}}
        )
    except psycopg.Error:
        return "", ""
    host = str(params.get("host") or os.environ.get("PGHOST") or "").split(",")[0]
    port = str(params.get("port") or os.environ.get("PGPORT") or "5432").split(",")[0]
    return host.strip().lower().rstrip("."), port.strip()


def _is_supabase_transaction_pooler(dsn: str, connect_kwargs: Mapping[str, Any]) -> bool:
    """Whether the DSN is Supabase's transaction-mode pooler by its address: port 6543 of a
    ``supabase.com`` (Supavisor) or ``supabase.co`` (dedicated pooler) host."""
    host, port = _address(dsn, connect_kwargs)
    return port == str(SUPABASE_TRANSACTION_POOLER_PORT) and host.endswith(
        (".supabase.com", ".supabase.co")
    )


def _no_listening_through(
    dsn: str, connect_kwargs: Mapping[str, Any], why: str
) -> ConfigurationError:
    """The error refusing live events over a transaction-mode pooler, naming the fix."""
    host, port = _address(dsn, connect_kwargs)
    where = f"{host or 'the server'}:{port}"
    return ConfigurationError(
        f"live events need LISTEN on a session of their own, which a transaction-mode"
        f" pooler does not keep; {where} {why}. Give from_postgres a direct or session-mode"
        f" DSN of the same database to listen on: listen_dsn=... or ${ENV_LISTEN_DSN}"
        " (on Supabase: the direct connection db.<ref>.supabase.co:5432, or the pooler's"
        " session mode on port 5432); every other call keeps using the pooler"
    )


async def _events_key(conn: psycopg.AsyncConnection[Any]) -> tuple[bytes, int]:
    """The key the database signs its notifications with (read as service_role), and the
    database's clock now (epoch milliseconds)."""
    async with conn.transaction():
        await conn.execute("select pg_catalog.set_config('role', 'service_role', true)")
        cur = await conn.execute(
            "select private.session_events_key(),"
            " (extract(epoch from pg_catalog.clock_timestamp()) * 1000)::bigint"
        )
        row = await cur.fetchone()
    if row is None or not isinstance(row[0], str):
        raise APIError("the database has no session events key: run the migrations")
    return bytes.fromhex(row[0]), int(row[1])


async def _notifications(
    conn: psycopg.AsyncConnection[Any], verifier: EventVerifier
) -> AsyncIterator[dict[str, Any] | None]:
    """The events of the verifier's session among the notifications ``conn`` receives;
    ``None`` for any other notification and after each quiet :data:`LISTEN_TICK_S`."""
    try:
        while True:
            quiet = True
            async for notify in conn.notifies(timeout=LISTEN_TICK_S):
                quiet = False
                yield verifier.event(notify.payload)
            if quiet:
                yield None
            if conn.closed:
                raise TransientError("the listening connection was closed")
    except psycopg.Error as exc:
        raise _api_error(exc) from exc


def _api_error(exc: psycopg.Error) -> APIError:
    """The voicesessions exception for a psycopg or pool error (the one place they meet).

    A server error keeps its SQLSTATE, detail and hint (:func:`from_sqlstate`). Without a
    SQLSTATE the error happened on the client: a refused, lost or timed-out connection or a
    pool timeout (all ``OperationalError``) is transient; a value that could not be sent is
    invalid input.
    """
    if exc.sqlstate:
        diag = exc.diag
        return from_sqlstate(
            exc.sqlstate,
            diag.message_primary or str(exc),
            details=diag.message_detail,
            hint=diag.message_hint,
        )
    message = str(exc) or type(exc).__name__
    if isinstance(exc, psycopg.OperationalError):
        return TransientError(message)
    if isinstance(exc, (psycopg.DataError, psycopg.ProgrammingError)):
        return InvalidInputError(message)
    return from_sqlstate(None, message)


#: Refusals of a connection attempt that trying again will not change, recognised by
#: libpq's and the server's messages (a refused connection carries no SQLSTATE in libpq):
#: (pattern, exception type, the SQLSTATE the server used).
_PERMANENT_CONNECT_FAILURES: tuple[tuple[re.Pattern[str], type[VoiceSessionsError], str], ...] = (
    (re.compile(r"password authentication failed", re.IGNORECASE), PermissionDeniedError, "28P01"),
    (
        re.compile(
            r"authentication failed|no pg_hba\.conf entry|no password supplied"
            r"|password is required|role \"[^\"]*\" does not exist|not permitted to log in"
            r"|SCRAM|SASL|GSSAPI|certificate",
            re.IGNORECASE,
        ),
        PermissionDeniedError,
        "28000",
    ),
    (
        re.compile(r"permission denied for database|not allowed to connect", re.IGNORECASE),
        PermissionDeniedError,
        "42501",
    ),
    (
        re.compile(r"database \"[^\"]*\" does not exist", re.IGNORECASE),
        ConfigurationError,
        "3D000",
    ),
    (
        re.compile(
            r"failed to resolve host|could not translate host name|Name or service not known"
            r"|nodename nor servname|invalid connection option|invalid (integer|sslmode) value",
            re.IGNORECASE,
        ),
        ConfigurationError,
        "",
    ),
)


def _connect_error(
    exc: psycopg.Error, dsn: str, connect_kwargs: Mapping[str, Any]
) -> VoiceSessionsError:
    """The voicesessions exception for a failed connection attempt: a wrong password or
    user (PermissionDeniedError), a missing database or an unknown host
    (ConfigurationError) fail at once with the server's own message, plus the host tried
    where the message does not name it (some psycopg versions say only "Name or service
    not known"); anything else (a refused or timed-out connection,
    too many clients, a server starting up) is transient."""
    message = " ".join(str(exc).split()) or type(exc).__name__
    if not exc.sqlstate:
        for pattern, cls, sqlstate in _PERMANENT_CONNECT_FAILURES:
            if pattern.search(message):
                if issubclass(cls, APIError):
                    return cls(message, code=sqlstate or None)
                suffix = f" [{sqlstate}]" if sqlstate else ""
                host = _connect_host(dsn, connect_kwargs)
                if host and host not in message:
                    suffix += f" (host {host!r})"
                return cls(f"cannot connect to PostgreSQL: {message}{suffix}")
    return _api_error(exc)


def _timed_out(exc: psycopg.Error) -> bool:
    """Whether a connection attempt failed by running out of ``connect_timeout``."""
    timeout_class = getattr(psycopg.errors, "ConnectionTimeout", None)
    if timeout_class is not None and isinstance(exc, timeout_class):
        return True
    return "timeout expired" in str(exc).lower()


def _connect_host(dsn: str, connect_kwargs: Mapping[str, Any]) -> str | None:
    """The host a connection attempt was given (connection string or keyword), if any."""
    try:
        host = conninfo_to_dict(dsn, host=connect_kwargs.get("host")).get("host")
    except psycopg.ProgrammingError:
        return None
    return str(host) if host else None


def _storage_root(given: Path | str | None) -> Path:
    """The local store's directory: ``given``, else the environment, else the user data dir."""
    if given is None:
        given = os.environ.get(ENV_STORAGE_ROOT) or (
            Path(platformdirs.user_data_dir("voicesessions", appauthor=False)) / "storage"
        )
    if isinstance(given, str) and not given.strip():
        raise ConfigurationError("storage_root must be a directory path, not empty")
    return Path(given).expanduser().absolute()


def _storage_part(name: object, kind: str) -> PurePosixPath:
    """A bucket name or object path as a relative path that stays inside its parent."""
    if not isinstance(name, str) or not name or "\x00" in name:
        raise InvalidInputError(f"not a valid storage {kind}: {brief(name)}")
    part = PurePosixPath(name)
    if (
        part.is_absolute()
        or name.startswith(("/", "\\"))
        or "\\" in name
        or any(p in ("..", ".") for p in name.split("/"))
        or (kind == "bucket" and len(part.parts) != 1)
    ):
        raise InvalidInputError(f"storage {kind} {brief(name)} would leave the storage root")
    return part


def _write_object(target: Path, data: bytes | BinaryIO, *, overwrite: bool, name: str) -> None:
    """Write ``data`` to a temporary file beside ``target``, then give it the name
    ``target``: ``os.link`` (ConflictError if it exists) or, with ``overwrite``,
    ``os.replace``. Nothing is left behind on failure."""
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp_name = tempfile.mkstemp(prefix=".upload-", dir=target.parent)
    except OSError as exc:
        raise _storage_os_error("store", name, exc) from exc
    try:
        with os.fdopen(fd, "wb") as out:
            if isinstance(data, (bytes, bytearray, memoryview)):
                out.write(data)
            else:
                while chunk := data.read(STORAGE_COPY_CHUNK):
                    out.write(chunk)
        if overwrite:
            os.replace(tmp_name, target)
        else:
            try:
                os.link(tmp_name, target)
            except FileExistsError:
                raise from_sqlstate(
                    "23505",
                    f"storage object {name} already exists",
                    hint="Pass overwrite=True to replace it.",
                ) from None
    except OSError as exc:
        raise _storage_os_error("store", name, exc) from exc
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp_name)


def _storage_os_error(action: str, name: str, exc: OSError) -> APIError:
    """The voicesessions error for a file-system failure of the local storage store."""
    message = f"cannot {action} storage object {name}: {exc.strerror or exc}"
    if isinstance(exc, PermissionError):
        return PermissionDeniedError(message)
    return APIError(message)


def _positive_seconds(value: object) -> bool:
    return (
        isinstance(value, (int, float))
        and not isinstance(value, bool)
        and math.isfinite(value)
        and value > 0
    )


def _identifier(name: object, kind: str) -> sql.Identifier:
    if not isinstance(name, str) or not _IDENTIFIER.fullmatch(name):
        raise InvalidInputError(f"not a valid {kind} name: {brief(name)}")
    return sql.Identifier(name)


def _table(name: str) -> sql.Identifier:
    _identifier(name, "table")
    return sql.Identifier("public", name)


def _param(value: Any) -> Any:
    """A value as a query parameter: mappings and lists go as ``jsonb`` (in the JSON form
    PostgREST would receive: see :func:`voicesessions._query.jsonable`)."""
    if isinstance(value, (Mapping, list, tuple)):
        # Checked and converted now, before any I/O (InvalidInputError if it is not JSON).
        return Jsonb(jsonable(value), dumps=_json_dumps)
    return value


def _json_dumps(value: Any) -> str:
    try:
        return json.dumps(value, allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise InvalidInputError(f"a value sent as JSON is not JSON: {brief(str(exc))}") from None
    except RecursionError:
        raise InvalidInputError("a JSON document is nested too deeply to be sent") from None


def _where(filters: Sequence[Filter]) -> tuple[sql.Composable, list[Any]]:
    """`` where a = %s and b = any(%s) ...`` and its parameters (empty without filters)."""
    conditions: list[sql.Composable] = []
    for f in filters:
        if not isinstance(f, Filter):
            raise InvalidInputError(f"not a Filter: {f!r}")
        column = _identifier(f.column, "column")
        operator = sql.SQL(SQL_OPERATORS[f.op])
        if f.op == "is":  # null, true or false: SQL keywords, not parameters
            conditions.append(sql.SQL("{} {} {}").format(column, operator, sql.Literal(f.value)))
        elif f.op == "in":  # = any(array)
            conditions.append(sql.SQL("{} {}({})").format(column, operator, sql.Placeholder()))
        else:
            conditions.append(sql.SQL("{} {} {}").format(column, operator, sql.Placeholder()))
    params = _where_params(filters)
    if not conditions:
        return sql.SQL(""), []
    return sql.SQL(" where ") + sql.SQL(" and ").join(conditions), params


def _where_params(filters: Sequence[Filter]) -> list[Any]:
    """The parameters of :func:`_where`'s conditions, in order."""
    params: list[Any] = []
    for f in filters:
        if f.op == "in":
            params.append(list(f.value))
        elif f.op != "is":
            params.append(_param(f.value))
    return params


#: Most statements kept by each cache of composed statements (a cache that fills up is
#: emptied: the SDK's calls have a few dozen shapes, so this happens only to odd callers).
MAX_CACHED_STATEMENTS = 512


class _JsonText(Loader):
    """A ``json``/``jsonb`` value as the bytes of its JSON text (text format), not decoded:
    for rows validated straight from JSON (:meth:`AsyncPostgresBackend.rpc_rows`)."""

    def load(self, data: Buffer) -> bytes:
        return bytes(data)


_K = TypeVar("_K")
_V = TypeVar("_V")

#: The text of each shape of ``select`` (see :meth:`AsyncPostgresBackend.select`). Names are
#: checked against :data:`_IDENTIFIER` before a statement is composed, so a statement's text
#: does not depend on the connection (quoting such names needs no server settings).
_SELECT_STATEMENTS: dict[Any, str] = {}


def _remember(cache: dict[_K, _V], key: _K, statement: _V) -> None:
    if len(cache) >= MAX_CACHED_STATEMENTS:
        cache.clear()
    cache[key] = statement


def _select_statement(
    table: str,
    columns: Sequence[str],
    filters: Sequence[Filter],
    order: Sequence[Order],
    limit: int | None,
) -> str:
    """The text of ``select <columns> from public.<table> where ... order by ... limit n``
    (InvalidInputError for a name or limit that is not valid)."""
    target = _table(table)
    column_names = list(columns)
    if column_names == ["*"]:
        selected: sql.Composable = sql.SQL("*")
    elif column_names:
        selected = sql.SQL(", ").join(_identifier(c, "column") for c in column_names)
    else:
        raise InvalidInputError("select at least one column")
    where, _ = _where(filters)
    query = sql.SQL("select {} from {}").format(selected, target) + where
    if order:
        query += sql.SQL(" order by ") + sql.SQL(", ").join(
            sql.SQL("{} desc" if o.descending else "{} asc").format(_identifier(o.column, "column"))
            for o in order
        )
    if limit is not None:
        if isinstance(limit, bool) or not isinstance(limit, int) or limit < 0:
            raise InvalidInputError("limit must be an integer >= 0")
        query += sql.SQL(" limit {}").format(sql.Literal(limit))
    return query.as_string(None)


# -- rpc: overloads, arguments and results as PostgREST handles them -----------------------


@dataclass(frozen=True)
class _Parameter:
    """An input parameter of a function: its name ('' if unnamed) and declared type."""

    name: str
    type_schema: str
    type_name: str  # pg_type.typname: domains and arrays too (``_text`` is ``text[]``)
    display: str  # the type as ``format_type`` spells it, for messages
    variadic: bool

    @property
    def type(self) -> sql.Identifier:
        return sql.Identifier(self.type_schema, self.type_name)


@dataclass(frozen=True)
class _Overload:
    """One overload of a function of schema public: its inputs and the shape of its result."""

    signature: str
    params: tuple[_Parameter, ...]
    required: frozenset[str]
    returns_set: bool
    returns_scalar: bool
    returns_void: bool
    read_only: bool  # STABLE or IMMUTABLE: PostgREST runs the call READ ONLY
    #: The text of the call for each set of argument names (:func:`_rpc_query`), composed
    #: once: the overloads are looked up again, with empty caches, when the function changes.
    statements: dict[frozenset[str], tuple[str, bool]] = field(
        default_factory=dict, compare=False, hash=False, repr=False
    )

    @classmethod
    def from_row(cls, row: Mapping[str, Any]) -> _Overload:
        params = tuple(_Parameter(*param) for param in row["params"])
        # The last ``defaults`` inputs have defaults; the others must be given.
        required = frozenset(p.name for p in params[: len(params) - row["defaults"]])
        return cls(
            signature=row["signature"],
            params=params,
            required=required,
            returns_set=row["returns_set"],
            returns_scalar=row["returns_scalar"],
            returns_void=row["returns_void"],
            read_only=row["read_only"],
        )

    def fits(self, names: frozenset[str]) -> bool:
        """Whether PostgREST calls this overload for these argument names: each names a
        parameter, and every parameter without a default is named."""
        return self.required <= names <= {p.name for p in self.params}

    @property
    def takes_the_body(self) -> bool:
        """A single unnamed json or jsonb parameter, which takes the whole body."""
        return (
            len(self.params) == 1
            and not self.params[0].name
            and self.params[0].display in ("json", "jsonb")
        )


def _resolve_overload(
    function: str, overloads: Sequence[_Overload], names: frozenset[str]
) -> _Overload:
    """The overload PostgREST would call for these argument names: the one that fits them,
    else the one with a single unnamed json/jsonb parameter (PGRST202 if none, PGRST203 if
    several)."""
    candidates = [o for o in overloads if o.fits(names)] or [
        o for o in overloads if o.takes_the_body
    ]
    if len(candidates) == 1:
        return candidates[0]
    qualified = f"public.{function}"
    if not candidates:
        given = f"({', '.join(sorted(names))})" if names else " without parameters"
        searched = (
            f" with parameter{'s' if len(names) > 1 else ''} {', '.join(sorted(names))}"
            if names
            else " without parameters"
        )
        named = [sorted(p.name for p in o.params) for o in overloads]
        hint = (
            None
            if not named
            else "Perhaps you meant to call the function "
            + " or ".join(f"{qualified}({', '.join(n)})" for n in named)
        )
        raise from_sqlstate(
            "PGRST202",
            f"Could not find the function {qualified}{given} in the schema cache",
            details=f"Searched for the function {qualified}{searched} or with a single"
            " unnamed json/jsonb parameter, but no matches were found in the schema cache.",
            hint=hint,
            http_status=404,
        )
    spelled = ", ".join(
        f"{qualified}({', '.join(f'{p.name} => {p.display}' for p in o.params)})"
        for o in candidates
    )
    raise from_sqlstate(
        "PGRST203",
        f"Could not choose the best candidate function between: {spelled}",
        hint="Try renaming the parameters or the function itself in the database so function"
        " overloading can be resolved",
        http_status=300,
    )


def _rpc_query(
    function: str, overload: _Overload, names: frozenset[str], body: str
) -> tuple[str, list[Any]]:
    """The statement calling ``overload`` with the JSON ``body``, and its parameters."""
    cached = overload.statements.get(names)
    if cached is None:
        composed, takes_body = _rpc_statement(function, overload, names)
        cached = (composed.as_string(None), takes_body)
        _remember(overload.statements, names, cached)
    statement, takes_body = cached
    return statement, [body] if takes_body else []


def _rpc_statement(
    function: str, overload: _Overload, names: frozenset[str]
) -> tuple[sql.Composed, bool]:
    """The statement of :func:`_rpc_query`, and whether the JSON body is its parameter."""
    target = sql.Identifier("public", function)
    if overload.takes_the_body and not overload.fits(names):
        argument = sql.SQL("%s::{}").format(overload.params[0].type)
        return sql.SQL(_RPC_CALL).format(function=target, argument=argument), True
    given = [p for p in overload.params if p.name in names]  # in declaration order
    if not given:
        return sql.SQL(_RPC_CALL).format(function=target, argument=sql.SQL("")), False
    columns = sql.SQL(", ").join(
        sql.SQL("{} {}").format(sql.Identifier(p.name), p.type) for p in given
    )
    arguments = sql.SQL(", ").join(
        sql.SQL("{}{} => _.{}").format(
            sql.SQL("variadic " if p.variadic else ""),
            sql.Identifier(p.name),
            sql.Identifier(p.name),
        )
        for p in given
    )
    query = sql.SQL(_RPC_CALL_WITH_ARGUMENTS).format(
        columns=columns, function=target, arguments=arguments
    )
    return query, True


def _rpc_result(rows: Sequence[Mapping[str, Any]], overload: _Overload) -> Any:
    """The decoded JSON body PostgREST would answer with these result rows."""
    if not rows:  # only a set-returning function can return no row
        return []
    if overload.returns_void:
        return None
    values = [row["value"] for row in rows]
    if overload.returns_scalar:  # each row is {"<function>": value}
        values = [next(iter(value.values())) for value in values]
    return values if overload.returns_set else values[0]
