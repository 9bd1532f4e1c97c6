"""Optional PostgreSQL extensions the database tests need (plpgsql_check, pgTAP, pg_cron).

They come from Debian packages for the system's PostgreSQL. On a developer's machine a missing
extension skips the tests that need it, saying which package to install. In CI (``CI=true``)
the main run uses the system's PostgreSQL, for which ``.ci/run`` installs the packages: there a
missing extension fails. The second CI run, on the ``local`` extra's PostgreSQL
(``VOICESESSIONS_PG_BINDIR``), has no such packages and skips.
"""

from __future__ import annotations

import os

import psycopg
import pytest
from psycopg import sql
from psycopg.rows import TupleRow


def ci_requires_extensions() -> bool:
    """True in CI's main run: the system's PostgreSQL, for which .ci/run installs the packages."""
    if os.environ.get("CI", "").lower() not in ("true", "1"):
        return False
    if os.environ.get("VOICESESSIONS_TEST_DSN"):
        return False
    from voicesessions.local.server import find_binaries

    return find_binaries().source == "system"


def require_available(conn: psycopg.Connection[TupleRow], name: str, package: str) -> None:
    """Skip (fail in CI's main run) unless the server can create the extension ``name``;
    the message names ``package``, the Debian package (``<major>`` for the version)."""
    available = conn.execute(
        "select exists (select 1 from pg_available_extensions where name = %s)", (name,)
    ).fetchone()
    if not (available and available[0]):
        version = conn.execute("show server_version").fetchone()
        message = (
            f"the {name} extension is not available on this PostgreSQL"
            f" ({version[0] if version else '?'}): install {package}"
        )
        if ci_requires_extensions():
            pytest.fail(f"{message} (CI=true on the system's PostgreSQL: .ci/run installs it)")
        pytest.skip(message)


def require_extension(
    conn: psycopg.Connection[TupleRow], name: str, package: str, schema: str | None = None
) -> None:
    """``create extension if not exists name [with schema schema]``, or skip without it (fail
    in CI's main run). ``package`` names the Debian package, ``<major>`` for the version."""
    require_available(conn, name, package)
    statement = sql.SQL("create extension if not exists {}").format(sql.Identifier(name))
    if schema is not None:
        statement += sql.SQL(" with schema {}").format(sql.Identifier(schema))
    conn.execute(statement)
