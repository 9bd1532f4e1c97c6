"""The pgTAP tests of supabase/tests/*.sql, run with ``pg_prove`` as ``supabase test db`` does.

Those files are the database layer as a Supabase user runs it (``supabase test db`` on their
own project): each is one transaction that creates its users and companies as the owner,
acts as PostgREST does (``set local role`` + ``request.jwt.claims``) and rolls back. Here
they run in a clone of the migrated template; each file creates pgTAP in schema
``extensions`` (the compatibility bootstrap creates that schema, as Supabase has it).

pgTAP and ``pg_prove`` come from Debian's ``pgtap`` and ``postgresql-<major>-pgtap``: without
them the test skips, except in CI's main run (tests/support/extensions.py), where it fails.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest
from psycopg.conninfo import conninfo_to_dict

from tests.conftest import Database
from tests.support.db import owner
from tests.support.extensions import ci_requires_extensions, require_extension

PGTAP_DIR = Path(__file__).resolve().parents[2] / "supabase" / "tests"
PGTAP_FILES = sorted(PGTAP_DIR.glob("*.sql"))
LIBPQ_ENV = {
    "host": "PGHOST",
    "port": "PGPORT",
    "user": "PGUSER",
    "password": "PGPASSWORD",
    "dbname": "PGDATABASE",
}


def test_the_pgtap_files_exist() -> None:
    names = {path.name for path in PGTAP_FILES}
    expected = {
        "sessions_rls.sql",
        "lifecycle_gdpr.sql",
        "tenancy_rls.sql",
        "session_content_rls.sql",
    }
    assert expected <= names, names


@pytest.mark.parametrize("path", PGTAP_FILES, ids=lambda p: p.name)
def test_pgtap_file_follows_the_supabase_convention(path: Path) -> None:
    """One transaction that leaves nothing behind: begin, the extension in ``extensions``,
    a plan, finish, rollback (a file that commits would change the user's database). No
    grant or revoke of its own: the migrations leave default privileges alone, so the API
    roles run pgTAP's functions as PostgreSQL grants them, and a grant here could only hide
    one the migrations forgot."""
    statements = [
        line.strip()
        for line in path.read_text().splitlines()
        if line.strip() and not line.strip().startswith("--")
    ]
    assert statements[0] == "begin;"
    assert statements[1] == "create extension if not exists pgtap with schema extensions;"
    assert any(line.startswith("select plan(") for line in statements)
    assert statements[-2:] == ["select * from finish();", "rollback;"]
    ends = [
        line for line in statements if re.fullmatch(r"(?i)(commit|end)( work| transaction)?;", line)
    ]
    assert not ends, f"{path.name} ends its transaction: {ends}"
    privileges = [line for line in statements if re.match(r"(?i)(grant|revoke)\b", line)]
    assert privileges == [], f"{path.name} changes privileges: {privileges}"


@pytest.mark.parametrize("seeded", [False, True], ids=["migrations", "seeded"])
@pytest.mark.parametrize("path", PGTAP_FILES, ids=lambda p: p.name)
def test_pgtap_file_passes(fresh_db: Database, path: Path, seeded: bool) -> None:
    """Each file passes on the migrations alone and on a database holding the demo data of
    supabase/seed.sql too (what ``supabase start`` and ``supabase db reset`` leave): the files
    count only what they create."""
    pg_prove = shutil.which("pg_prove")
    if pg_prove is None:
        message = "pg_prove is not installed: install Debian's pgtap"
        if ci_requires_extensions():
            pytest.fail(f"{message} (CI=true on the system's PostgreSQL: .ci/run installs it)")
        pytest.skip(message)
    with owner(fresh_db) as conn:
        require_extension(conn, "pgtap", "postgresql-<major>-pgtap", schema="extensions")
        # Available: dropped again, so that the file's own `create extension` (rolled back
        # with the rest) is what runs, as on a project that never had pgTAP.
        conn.execute("drop extension pgtap")
        if seeded:
            conn.execute((PGTAP_DIR.parent / "seed.sql").read_bytes())
    from voicesessions.local.server import find_binaries

    psql = find_binaries().bindir / "psql"
    # pg_prove takes a database name, not a connection string: libpq's variables carry it.
    env = dict(os.environ)
    for key, value in conninfo_to_dict(fresh_db.dsn).items():
        if key in LIBPQ_ENV and value is not None:
            env[LIBPQ_ENV[key]] = str(value)
    done = subprocess.run(
        [pg_prove, "--verbose", "--psql-bin", str(psql), str(path)],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    output = done.stdout + done.stderr
    assert done.returncode == 0, f"pg_prove failed on {path.name}:\n{output}"
    assert "not ok" not in output, output
    assert "All tests successful" in output, output
