"""Direct access to a test database as its owner, and proof that a refused write left no
trace: :func:`fingerprint` hashes every row of every table outside the system schemas."""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any

import psycopg
from psycopg import sql
from psycopg.rows import TupleRow, dict_row

from tests.conftest import Database

Params = Sequence[Any] | Mapping[str, Any]

#: A WHERE clause on pg_namespace `n` that leaves out PostgreSQL's own schemas.
SYSTEM_SCHEMAS = (
    "n.nspname not in ('pg_catalog', 'information_schema') and n.nspname !~ '^pg_(toast|temp)'"
)


def owner(db: Database) -> psycopg.Connection[TupleRow]:
    """An autocommit connection as the migration owner (superuser: RLS does not apply)."""
    return psycopg.connect(db.dsn, autocommit=True)


def scalar(db: Database, query: str, params: Params | None = None) -> Any:
    """The first column of the first row, as the owner."""
    with owner(db) as conn:
        row = conn.execute(query, params).fetchone()
    assert row is not None
    return row[0]


def owner_rows(db: Database, query: str, params: Params | None = None) -> list[dict[str, Any]]:
    """All rows as dicts, as the owner."""
    with psycopg.connect(db.dsn, autocommit=True, row_factory=dict_row) as conn:
        return list(conn.execute(query, params).fetchall())


def data_tables(conn: psycopg.Connection[TupleRow]) -> list[tuple[str, str]]:
    """Every table, partitioned table and materialized view outside the system schemas
    (partitions are read through their parent)."""
    found = conn.execute(
        "select n.nspname, c.relname from pg_class c join pg_namespace n on n.oid ="
        f" c.relnamespace where c.relkind in ('r', 'p', 'm') and not c.relispartition"
        f" and {SYSTEM_SCHEMAS} order by 1, 2"
    ).fetchall()
    return [(str(s), str(t)) for s, t in found]


def fingerprint(db: Database) -> dict[str, tuple[int, str]]:
    """Row count and a hash of the rows of every table in every non-system schema."""
    result: dict[str, tuple[int, str]] = {}
    with owner(db) as conn:
        for schema, table in data_tables(conn):
            row = conn.execute(
                sql.SQL(
                    "select count(*), md5(coalesce(string_agg(t::text, E'\\n' order by"
                    " t::text), '')) from {}.{} t"
                ).format(sql.Identifier(schema), sql.Identifier(table))
            ).fetchone()
            assert row is not None
            result[f"{schema}.{table}"] = (int(row[0]), str(row[1]))
    # the snapshot covers the schema, not an empty list
    assert {"public.sessions", "public.transcript_segments", "auth.users"} <= set(result)
    return result


@contextmanager
def unchanged(db: Database) -> Iterator[None]:
    """Asserts that the block leaves every table of the database exactly as it found it."""
    before = fingerprint(db)
    yield
    after = fingerprint(db)
    changed = sorted(t for t in before.keys() | after.keys() if before.get(t) != after.get(t))
    assert not changed, f"changes left behind in {changed}"


class Snapshot:
    """Every data table of a database copied into temporary tables of one owner connection,
    so that a test sharing the database can commit writes, read them back through other
    connections, and then :meth:`restore` exactly the rows it started from (far cheaper than
    a clone per write). The copies live in ``pg_temp`` (invisible to other connections and
    to :func:`fingerprint`) and vanish with :meth:`close`.

    :meth:`restore` rewrites only the tables whose rows differ, with triggers and foreign-key
    actions off (``session_replication_role = replica``: the owner is a superuser here), and
    returns their names. Sequences are not rewound.
    """

    def __init__(self, db: Database):
        self._conn = owner(db)
        self._tables = data_tables(self._conn)
        self._columns: dict[str, sql.Composed] = {}
        self._parts: dict[str, sql.Composed] = {}
        for index, (schema, table) in enumerate(self._tables):
            source = sql.Identifier(schema, table)
            self._conn.execute(
                sql.SQL("create temporary table {} as select * from {}").format(
                    sql.Identifier(f"snap_{index}"), source
                )
            )
            writable = self._conn.execute(
                "select a.attname from pg_attribute a join pg_class c on c.oid = a.attrelid"
                " join pg_namespace n on n.oid = c.relnamespace where n.nspname = %s"
                " and c.relname = %s and a.attnum > 0 and not a.attisdropped"
                " and a.attgenerated = '' order by a.attnum",
                (schema, table),
            ).fetchall()
            self._columns[f"{schema}.{table}"] = sql.SQL(", ").join(
                sql.Identifier(str(c[0])) for c in writable
            )
            self._parts[f"{schema}.{table}"] = sql.SQL(
                "select {}::text, (select md5(coalesce(string_agg(t::text, E'\\n' order by"
                " t::text), '')) from {} t)"
            ).format(sql.Literal(f"{schema}.{table}"), source)
        self._pristine = self.hashes()

    def hashes(self, tables: list[str] | None = None) -> dict[str, str]:
        """A hash of the rows of every table (or of ``tables``), in one statement."""
        names = list(self._parts) if tables is None else tables
        query = sql.SQL(" union all ").join(self._parts[name] for name in names)
        return {str(name): str(value) for name, value in self._conn.execute(query)}

    def changed(self, tables: list[str] | None = None) -> list[str]:
        now = self.hashes(tables)
        return sorted(name for name, value in now.items() if self._pristine.get(name) != value)

    def restore(self) -> list[str]:
        """Put back the rows of every table that differs from the snapshot."""
        changed = self.changed()
        if not changed:
            return []
        index = {f"{s}.{t}": i for i, (s, t) in enumerate(self._tables)}
        with self._conn.transaction():
            self._conn.execute("set local session_replication_role = replica")
            for name in changed:
                schema, table = name.split(".", 1)
                target = sql.Identifier(schema, table)
                columns = self._columns[name]
                self._conn.execute(sql.SQL("delete from {}").format(target))
                self._conn.execute(
                    sql.SQL("insert into {} ({}) overriding system value select {} from {}").format(
                        target, columns, columns, sql.Identifier(f"snap_{index[name]}")
                    )
                )
        left = self.changed(changed)
        assert not left, f"restoring the snapshot left {left} different"
        return changed

    def close(self) -> None:
        self._conn.close()
