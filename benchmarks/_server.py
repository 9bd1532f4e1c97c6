"""What every benchmark starts from: a throwaway PostgreSQL with one migrated database."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import psycopg
from psycopg import sql
from psycopg.conninfo import make_conninfo

from voicesessions.local import migrations
from voicesessions.local.server import LocalServerInfo, temporary_server


@contextlib.contextmanager
def migrated_database(name: str = "bench") -> Iterator[tuple[LocalServerInfo, str]]:
    """A throwaway server (stopped and deleted on exit) holding the database ``name`` with
    every migration applied; yields the server's info and the database's DSN."""
    with temporary_server("voicesessions-bench-") as info:
        with psycopg.connect(info.dsn, autocommit=True) as admin:
            admin.execute(sql.SQL("create database {}").format(sql.Identifier(name)))
        dsn = make_conninfo(info.dsn, dbname=name)
        with psycopg.connect(dsn, autocommit=True) as conn:
            migrations.migrate(conn)
        yield info, dsn
