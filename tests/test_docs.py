"""The guides in docs/ run as written, twice in a row.

Each guide's blocks marked ``<!-- run ... -->`` are executed in order by
tests/support/snippets.py (python blocks marked ``continued`` as one program with the ones
before, bash blocks with ``bash -euo pipefail``), in a scratch directory, against a fresh
migrated database given as ``VOICESESSIONS_DSN``; then all of them again. Blocks marked
``not run`` are not executed: docs/local-testing.md's ``supabase start`` needs Docker, which
the test machines do not have (CI's Supabase CLI checks, .ci/supabase-cli-checks.sh, run the
commands that need no Docker). Every python and bash block of a guide carries a marker.
"""

from __future__ import annotations

import shutil
import uuid
from pathlib import Path

import pytest

from tests.conftest import Database
from tests.support import snippets
from tests.support.db import scalar
from tests.support.extensions import ci_requires_extensions

DOCS = snippets.ROOT / "docs"
GUIDES = ("live-call.md", "gdpr-operator.md", "local-testing.md")


@pytest.mark.parametrize("name", GUIDES)
def test_guide_blocks_are_all_marked_and_it_ends_with_what_to_read_next(name: str) -> None:
    path = DOCS / name
    assert snippets.unmarked(path) == []
    assert snippets.steps(path), f"{name} runs nothing"
    headings = [line for line in path.read_text().splitlines() if line.startswith("## ")]
    assert headings[-1] == "## What to read next"
    for block in snippets.fragments(path):
        compile(block.code, block.where, "exec")


def test_live_call_guide_runs_twice(fresh_db: Database, tmp_path: Path) -> None:
    steps = snippets.steps(DOCS / "live-call.md")
    assert [s.lang for s in steps] == ["python"]  # one program, pasted in order
    first, second = snippets.run_twice(steps, snippets.environment(fresh_db.dsn), tmp_path)
    for output, sessions in ((first[0], 1), (second[0], 2)):
        assert "heard live: audio_metrics, status, transcript" in output
        assert "trainee: Hi, it's Sam from Globex.\nbuyer: Hello Sam." in output
        assert "Hi, it's Sam\n" not in output  # the interim was broadcast, not stored
        assert f"{sessions} session(s), average score 78.0" in output
        assert f"Sam Seller: {sessions} session(s), latest 78" in output
    assert scalar(fresh_db, "select count(*) from public.companies") == 1
    assert scalar(fresh_db, "select count(*) from public.profiles") == 2


def test_gdpr_operator_guide_runs_twice(fresh_db: Database, tmp_path: Path) -> None:
    """The CLI commands run through a subprocess shell, with the test database's DSN."""
    steps = snippets.steps(DOCS / "gdpr-operator.md")
    assert [s.lang for s in steps] == ["python", "bash"]
    env = snippets.environment(fresh_db.dsn)
    for run in range(2):
        _setup, shell = (snippets.run(step, env, tmp_path) for step in steps)
        erasures = scalar(
            fresh_db,
            "select count(*) from public.gdpr_requests where kind = 'erasure'"
            " and status = 'completed'",
        )
        assert erasures == run + 1
        exports = scalar(
            fresh_db,
            "select count(*) from public.gdpr_requests where kind = 'export'"
            " and status = 'completed'",
        )
        assert exports == 2 * (run + 1)  # before and after the erasure: the proof
        lines = shell.splitlines()
        user_id = str(uuid.UUID(lines[0]))  # found by email, not "None"
        # The CLI's wording is its own tests' business: here, what was done.
        assert shell.count(user_id) >= 5  # looked up, exported, dry run, erased, exported
        assert "pat@initech.example" in (tmp_path / "pat-export.json").read_text()
        assert "pat@initech.example" not in (tmp_path / "after-erasure.json").read_text()
        assert scalar(fresh_db, "select count(*) from auth.users where id = %s", (user_id,)) == 0
        assert scalar(fresh_db, "select count(*) from public.sessions") == 0
    # The organisation was made once; Pat is gone each time.
    assert scalar(fresh_db, "select count(*) from public.companies") == 1
    assert scalar(fresh_db, "select count(*) from public.profiles") == 1


def test_local_testing_guide_runs_twice() -> None:
    """From the repository's root, in a new VOICESESSIONS_HOME: the server started, a scratch
        database migrated, pgTAP passing on it, the seed loaded, the server stopped; twice. The
        `supabase` block needs Docker and the `pytest` block is this suite: marked not run. The
    page needs pgTAP, as it says: without pg_prove this skips as tests/db/test_pgtap.py does
    (and fails in CI's main run, which installs it)."""
    path = DOCS / "local-testing.md"
    steps = snippets.steps(path)
    assert [s.lang for s in steps] == ["bash"]
    skipped = [b for b in snippets.blocks(path) if b.kind == "not run"]
    assert [b.code.split()[0] for b in skipped] == ["pytest", "supabase"]
    assert "Docker" in skipped[1].note
    if shutil.which("pg_prove") is None:  # as tests/db/test_pgtap.py
        message = "pg_prove is not installed: install Debian's pgtap"
        if ci_requires_extensions():
            pytest.fail(f"{message} (CI=true on the system's PostgreSQL: .ci/run installs it)")
        pytest.skip(message)
    with snippets.local_home() as env:
        first, second = snippets.run_twice(steps, env, snippets.ROOT, timeout=300)
    for output in (first[0], second[0]):
        assert "All tests successful." in output
        assert "Cold call: Northwind Logistics | completed" in output
        assert "(1 row)" in output
