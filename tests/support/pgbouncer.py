"""A PgBouncer in front of the test PostgreSQL, started by the tests: transaction pool mode
(what Supabase's pooler on port 6543 is; Supavisor has the same semantics), a small server
pool, many clients allowed.

:func:`running_pgbouncer` writes a configuration and an auth file into a new temporary
directory, starts ``pgbouncer`` on a free loopback port (as the unprivileged user the test
PostgreSQL runs as, when the suite runs as root: PgBouncer refuses to run as root), waits
until it answers, and stops it on exit. Every database of the server is reachable through it
(``* =`` fallback), so :meth:`PgBouncer.dsn` turns any direct DSN of the test cluster into
the same DSN through the pooler.

``max_prepared_statements = 0``: the pooler does not track protocol-level prepared
statements (PgBouncer before 1.21 cannot; Supavisor's transaction mode must not be relied
on), so a client that prepares statements fails as it would in production.

Without the ``pgbouncer`` program, :func:`require_pgbouncer` skips on a developer's machine
(saying what to install) and fails in CI (``CI=true``), where ``.ci/run`` installs it.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

import psycopg
import pytest
from psycopg.conninfo import conninfo_to_dict, make_conninfo

#: Where Debian's package puts the program (not on a non-root PATH).
PGBOUNCER_CANDIDATES = ("pgbouncer", "/usr/sbin/pgbouncer", "/usr/bin/pgbouncer")
#: Server connections per (database, user) pair: smaller than the SDK's default pool, so
#: clients queue in the pooler and share server connections, as they do on Supabase.
POOL_SIZE = 2
MAX_CLIENT_CONN = 200
START_TIMEOUT_S = 10.0


def pgbouncer_program() -> str | None:
    """The path of the ``pgbouncer`` program, or None."""
    for candidate in PGBOUNCER_CANDIDATES:
        found = shutil.which(candidate)
        if found:
            return found
    return None


def in_ci() -> bool:
    return os.environ.get("CI", "").lower() in ("true", "1")


def require_pgbouncer() -> str:
    """The program, else skip (fail in CI, where .ci/run installs it)."""
    program = pgbouncer_program()
    if program is None:
        message = (
            "pgbouncer is not installed: install the pgbouncer package (apt install pgbouncer)"
        )
        if in_ci():
            pytest.fail(f"{message} (CI=true: .ci/run installs it)")
        pytest.skip(message)
    return program


@dataclass(frozen=True)
class PgBouncer:
    """A running PgBouncer: its port and its log file."""

    port: int
    log_file: Path
    pool_size: int

    def dsn(self, direct_dsn: str) -> str:
        """``direct_dsn`` (a DSN of the test cluster) through this pooler."""
        return make_conninfo(direct_dsn, host="127.0.0.1", port=str(self.port))

    def log(self) -> str:
        try:
            return self.log_file.read_text(errors="replace")
        except OSError:
            return ""


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


def _quote(value: str) -> str:
    return '"' + value.replace('"', '""') + '"'


@contextlib.contextmanager
def running_pgbouncer(
    server_dsn: str,
    passwords: Mapping[str, str],
    *,
    pool_mode: str = "transaction",
    pool_size: int = POOL_SIZE,
) -> Iterator[PgBouncer]:
    """PgBouncer in ``pool_mode`` in front of the server of ``server_dsn``, for the users of
    ``passwords`` (login name -> password; SCRAM both ways, so the file holds them plain)."""
    program = require_pgbouncer()
    from voicesessions.local.server import _server_account

    target = conninfo_to_dict(server_dsn)
    account = _server_account()  # None unless root
    workdir = Path(tempfile.mkdtemp(prefix="voicesessions-pgbouncer-"))
    port = _free_port()
    log_file = workdir / "pgbouncer.log"
    (workdir / "users.txt").write_text(
        "".join(f"{_quote(user)} {_quote(password)}\n" for user, password in passwords.items())
    )
    (workdir / "pgbouncer.ini").write_text(
        f"""[databases]
* = host={target.get("host", "127.0.0.1")} port={target.get("port", "5432")}

[pgbouncer]
listen_addr = 127.0.0.1
listen_port = {port}
unix_socket_dir =
auth_type = scram-sha-256
auth_file = {workdir / "users.txt"}
pool_mode = {pool_mode}
default_pool_size = {pool_size}
min_pool_size = 0
reserve_pool_size = 0
max_client_conn = {MAX_CLIENT_CONN}
max_db_connections = 0
server_reset_query =
server_lifetime = 3600
server_idle_timeout = 60
query_wait_timeout = 30
ignore_startup_parameters = extra_float_digits
logfile = {log_file}
pidfile = {workdir / "pgbouncer.pid"}
log_connections = 0
log_disconnections = 0
"""
    )
    if account is not None:
        for path in [workdir, *workdir.iterdir()]:
            os.chown(path, account.uid, account.gid)
    workdir.chmod(0o700)
    process = subprocess.Popen(
        [program, str(workdir / "pgbouncer.ini")],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        cwd=workdir,
        user=account.uid if account else None,
        group=account.gid if account else None,
        extra_groups=list(account.groups) if account else None,
    )
    bouncer = PgBouncer(port=port, log_file=log_file, pool_size=pool_size)
    try:
        _wait_ready(process, bouncer, server_dsn)
        yield bouncer
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        if process.stderr is not None:
            process.stderr.close()
        shutil.rmtree(workdir, ignore_errors=True)


def _wait_ready(process: subprocess.Popen[bytes], bouncer: PgBouncer, server_dsn: str) -> None:
    """Until a query through the pooler answers (a dead process or the timeout fails)."""
    deadline = time.monotonic() + START_TIMEOUT_S
    last = "no attempt"
    while time.monotonic() < deadline:
        if process.poll() is not None:
            stderr = process.stderr.read().decode(errors="replace") if process.stderr else ""
            raise RuntimeError(f"pgbouncer exited ({process.returncode}): {stderr}{bouncer.log()}")
        try:
            with psycopg.connect(bouncer.dsn(server_dsn), connect_timeout=2) as conn:
                conn.execute("select 1")
            return
        except psycopg.OperationalError as exc:
            last = str(exc)
        time.sleep(0.05)
    raise RuntimeError(f"pgbouncer did not answer within {START_TIMEOUT_S}s: {last}")
