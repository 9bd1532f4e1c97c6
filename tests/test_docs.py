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

from pathlib import Path

import pytest

from tests.conftest import Database
from tests.support import snippets
from tests.support.db import scalar

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
        setup, shell = (snippets.run(step, env, tmp_path) for step in steps)
        erasures = scalar(
            fresh_db,
            "select count(*) from public.gdpr_requests where kind = 'erasure'"
            " and status = 'completed'",
        )
        assert erasures == run + 1
        lines = shell.splitlines()
        user_id = lines[0]
        assert f"Exported user {user_id} to pat-export.json" in shell
        assert f"Dry run: would erase user {user_id} (nothing changed)" in shell
        assert f"Erased user {user_id}" in shell
        assert f"Exported user {user_id} to after-erasure.json" in shell
        assert "pat@initech.example" in (tmp_path / "pat-export.json").read_text()
        assert "pat@initech.example" not in (tmp_path / "after-erasure.json").read_text()
        assert scalar(fresh_db, "select count(*) from auth.users where id = %s", (user_id,)) == 0
        assert scalar(fresh_db, "select count(*) from public.sessions") == 0
    # The organisation was made once; Pat is gone each time.
    assert scalar(fresh_db, "select count(*) from public.companies") == 1
    assert scalar(fresh_db, "select count(*) from public.profiles") == 1
