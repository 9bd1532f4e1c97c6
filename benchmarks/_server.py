"""What every benchmark starts from: a throwaway PostgreSQL with one migrated database (and
more on the same server when a comparison needs them)."""

from __future__ import annotations

import contextlib
import subprocess
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path

import psycopg
from psycopg import sql
from psycopg.conninfo import make_conninfo

from voicesessions.local import migrations
from voicesessions.local.server import LocalServerInfo, temporary_server

#: The repository the benchmarks belong to (for migrations read from its git history).
REPO = Path(__file__).resolve().parents[1]


@contextlib.contextmanager
def migrated_database(name: str = "bench") -> Iterator[tuple[LocalServerInfo, str]]:
    """A throwaway server (stopped and deleted on exit) holding the database ``name`` with
    every migration applied; yields the server's info and the database's DSN."""
    with temporary_server("voicesessions-bench-") as info:
        yield info, another_database(info.dsn, name)


def another_database(
    admin_dsn: str, name: str, applied: Sequence[migrations.Migration] | None = None
) -> str:
    """Create the database ``name`` on the server of ``admin_dsn`` and apply ``applied``
    (default: every migration of this checkout); returns its DSN."""
    with psycopg.connect(admin_dsn, autocommit=True) as admin:
        admin.execute(sql.SQL("create database {}").format(sql.Identifier(name)))
    dsn = make_conninfo(admin_dsn, dbname=name)
    with psycopg.connect(dsn, autocommit=True) as conn:
        migrations.migrate(conn, applied)
    return dsn


def migrations_at(commit: str, repo: Path = REPO) -> list[migrations.Migration]:
    """The migration files as they were at ``commit`` of ``repo``'s git history (a shallow
    clone lacks old commits: ``git fetch --unshallow``). Raises ``RuntimeError`` when git or
    the commit is not there."""
    try:
        listing = subprocess.run(
            ["git", "ls-tree", "--name-only", commit, "supabase/migrations/"],
            cwd=repo,
            capture_output=True,
            text=True,
        )
    except OSError as exc:
        raise RuntimeError(f"git is needed to read the migrations of {commit}: {exc}") from exc
    if listing.returncode != 0 or not listing.stdout.split():
        raise RuntimeError(
            f"the migrations of commit {commit} are read from git (a shallow clone lacks it:"
            f" git fetch --unshallow): {listing.stderr.strip()}"
        )
    with tempfile.TemporaryDirectory(prefix="voicesessions-migrations-") as tmp:
        for path in listing.stdout.split():
            content = subprocess.run(
                ["git", "show", f"{commit}:{path}"],
                cwd=repo,
                capture_output=True,
                text=True,
                check=True,
            ).stdout
            (Path(tmp) / Path(path).name).write_text(content, encoding="utf-8")
        return migrations.load_migrations(Path(tmp))
