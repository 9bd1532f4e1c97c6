"""A real streaming replica for the read-replica tests.

:func:`streaming_replica` starts a primary cluster of its own (a throwaway ``fast`` server,
as the suite's), lets the caller create and fill its database, then makes a hot standby
of it with ``pg_basebackup -R`` (PostgreSQL 15's defaults already allow it: ``wal_level
replica``, WAL senders, and initdb's ``replication`` entries for the loopback address in
``pg_hba.conf``), starts the standby on another free loopback port and waits until it
streams. Both are stopped and removed at the end. Works as root: the standby's files are
handed to the account the primary runs as, which runs it too.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import psycopg
from psycopg.conninfo import make_conninfo

from tests.conftest import cluster_parent
from voicesessions.local.server import LocalPostgres, LocalServerInfo, temporary_cluster

#: Longest wait for the standby to stream, to replay, or to pause replay.
WAIT_S = 30.0
POLL_S = 0.02


@dataclass
class ReplicaPair:
    """A primary and its streaming standby, each a :class:`LocalPostgres`."""

    primary: LocalPostgres
    standby: LocalPostgres
    database: str

    def primary_dsn(self) -> str:
        return self.primary.dsn_for(self.database)

    def standby_dsn(self) -> str:
        return self.standby.dsn_for(self.database)

    def wait_streaming(self) -> None:
        """Wait until the standby is in recovery and the primary streams WAL to it."""
        _wait(
            lambda: (
                _value(self.standby_dsn(), "select pg_catalog.pg_is_in_recovery()") is True
                and _value(
                    self.primary_dsn(),
                    "select count(*) from pg_catalog.pg_stat_replication where state = 'streaming'",
                )
                == 1
            ),
            "the standby to stream from the primary",
        )

    def wait_replayed(self) -> None:
        """Wait until the standby has replayed everything the primary wrote so far. The
        throwaway primary runs with ``synchronous_commit`` off, so its last commits may
        still sit in WAL buffers the standby cannot see: a synchronous commit that wrote WAL
        (a transactional logical message) flushes them first (the WAL writer would, but
        only some time later)."""
        with psycopg.connect(self.primary_dsn(), autocommit=True) as conn:
            conn.execute("set synchronous_commit = on")
            with conn.transaction():
                conn.execute(
                    "select pg_catalog.pg_logical_emit_message(true, 'voicesessions-test', '')"
                )
            row = conn.execute("select pg_catalog.pg_current_wal_flush_lsn()::text").fetchone()
        assert row is not None
        target = row[0]
        _wait(
            lambda: (
                _value(
                    self.standby_dsn(),
                    "select pg_catalog.pg_last_wal_replay_lsn() >= %s::pg_lsn",
                    (target,),
                )
                is True
            ),
            f"the standby to replay up to {target}",
        )

    @contextlib.contextmanager
    def replay_paused(self) -> Iterator[None]:
        """The standby stops applying WAL (it still receives it) inside the block: a write
        made on the primary meanwhile is visible there and not on the standby. Replay is
        resumed and caught up at the end."""
        self.wait_replayed()
        _value(self.standby_dsn(), "select pg_catalog.pg_wal_replay_pause()")
        _wait(
            lambda: (
                _value(self.standby_dsn(), "select pg_catalog.pg_get_wal_replay_pause_state()")
                == "paused"
            ),
            "replay to pause",
        )
        try:
            yield
        finally:
            _value(self.standby_dsn(), "select pg_catalog.pg_wal_replay_resume()")
            self.wait_replayed()

    def standby_connections(self) -> int:
        """Client connections to the standby's database now, other than this query's."""
        count = _value(
            self.standby_dsn(),
            "select count(*) from pg_catalog.pg_stat_activity"
            " where datname = current_database() and pid <> pg_catalog.pg_backend_pid()",
        )
        assert isinstance(count, int)
        return count


@contextlib.contextmanager
def streaming_replica(
    database: str, prepare: Callable[[LocalServerInfo, str], None]
) -> Iterator[ReplicaPair]:
    """A primary holding ``database`` (created empty, then ``prepare(primary, database)``
    before the base backup) and its streaming standby; both removed at the end."""
    with temporary_cluster("voicesessions-replica-", cluster_parent()) as primary:
        info = primary.status()
        assert info is not None
        with psycopg.connect(info.dsn, autocommit=True) as conn:
            conn.execute(f'create database "{database}"')
        prepare(info, database)
        standby = LocalPostgres(primary.data_dir.parent / "standby", fast=True)
        _base_backup(primary, info, standby)
        pair = ReplicaPair(primary, standby, database)
        try:
            standby.start()
            pair.wait_streaming()
            yield pair
        finally:
            standby.stop()


def _base_backup(primary: LocalPostgres, info: LocalServerInfo, standby: LocalPostgres) -> None:
    """``pg_basebackup -R`` of the running ``primary`` into the standby's data directory,
    which gets the primary's server state (password, binaries) and owner."""
    standby.data_dir.mkdir(mode=0o700)
    # The standby is the same cluster: same superuser password, same binaries. (The state
    # file is LocalPostgres's own bookkeeping; there is no public way to adopt a cluster.)
    standby._save_state(primary._load_state())
    env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
    done = subprocess.run(
        [
            str(info.bindir / "pg_basebackup"),
            "--dbname",
            make_conninfo(info.dsn, dbname="postgres"),
            "--pgdata",
            str(standby.pgdata),
            "--write-recovery-conf",
            "--wal-method=stream",
            "--checkpoint=fast",
            "--no-sync",
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=WAIT_S * 4,
        check=False,
        stdin=subprocess.DEVNULL,
    )
    assert done.returncode == 0, f"pg_basebackup failed: {done.stderr}"
    owner = primary.pgdata.stat()
    if os.geteuid() == 0 and owner.st_uid != 0:
        for path in [standby.data_dir, *standby.data_dir.rglob("*")]:
            os.chown(path, owner.st_uid, owner.st_gid)
    standby.pgdata.chmod(0o700)


def _value(dsn: str, query: str, params: tuple[object, ...] | None = None) -> object:
    with psycopg.connect(dsn, autocommit=True, connect_timeout=5) as conn:
        row = conn.execute(query.encode(), params).fetchone()
    assert row is not None
    return row[0]


def _wait(ready: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + WAIT_S
    while not ready():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(POLL_S)
