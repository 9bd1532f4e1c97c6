"""A throwaway PostgreSQL with pg_cron loaded, for the scheduled-retention tests.

pg_cron must be in ``shared_preload_libraries`` and its database named in
``cron.database_name`` when the server starts, so the suite's shared server cannot host it:
:func:`cron_cluster` starts its own (the suite's ``temporary_cluster``: an unprivileged server
user when run as root), migrates the first database and clones it for the others, then
restarts the server with pg_cron preloaded and creates the extension in the first database.
Jobs run in background workers (``cron.use_background_workers``), so they need no password
or socket.

pg_cron comes from Debian's ``postgresql-<major>-cron`` (``.ci/run`` installs it): without it
the tests skip saying so, and fail in CI's main run (tests/support/extensions.py).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import psycopg
from psycopg import sql
from psycopg.conninfo import make_conninfo

from tests.conftest import Database, cluster_parent
from tests.support.extensions import require_available
from voicesessions.local import migrations
from voicesessions.local.server import temporary_cluster

PACKAGE = "postgresql-<major>-cron"


@contextmanager
def cron_cluster(*databases: str) -> Iterator[dict[str, Database]]:
    """A started server with pg_cron loaded and the given databases migrated; the extension
    lives in the first one (``cron.database_name``). Yields the databases by name."""
    assert databases
    with temporary_cluster("voicesessions-cron-", cluster_parent()) as server:
        info = server.status()
        assert info is not None
        dbs = {name: Database(name, make_conninfo(info.dsn, dbname=name), "") for name in databases}
        first = databases[0]
        with psycopg.connect(info.dsn, autocommit=True) as admin:
            require_available(admin, "pg_cron", PACKAGE)
            admin.execute(sql.SQL("create database {}").format(sql.Identifier(first)))
            with migrations.connect(dbs[first].dsn) as conn:
                migrations.migrate(conn)
            for name in databases[1:]:  # clones of the migrated one
                admin.execute(
                    sql.SQL("create database {} template {}").format(
                        sql.Identifier(name), sql.Identifier(first)
                    )
                )
        # Appended to postgresql.conf: ALTER SYSTEM refuses cron.* before pg_cron is loaded.
        with (server.pgdata / "postgresql.conf").open("a", encoding="utf-8") as conf:
            conf.write(
                "\n# Added by tests/support/cron.py\n"
                "shared_preload_libraries = 'pg_cron'\n"
                f"cron.database_name = '{first}'\n"
                "cron.use_background_workers = on\n"
            )
        server.stop()
        server.start()
        with psycopg.connect(dbs[first].dsn, autocommit=True) as conn:
            conn.execute("create extension pg_cron")
        yield dbs


def wait_for(condition: Callable[[], Any], timeout_s: float, what: str) -> Any:
    """Poll ``condition`` every half second until it returns something truthy (returned);
    AssertionError naming ``what`` after ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s:.0f} s waiting for {what}")
        time.sleep(0.5)
