"""Every example runs as written against a migrated database, twice in a row: the second
run finds the companies and people the first one made (no new company, no new login) and
prints what the first printed (apart from new ids and the new-or-existing wording)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from tests.conftest import Database
from tests.support import snippets
from tests.support.db import scalar

EXAMPLES = sorted((snippets.ROOT / "examples").glob("*.py"))
#: What a second run must not add to: tenants and logins.
PROVISIONED = ("public.companies", "public.profiles", "auth.users")
UUID = re.compile(r"[0-9a-f]{8}(?:-[0-9a-f]{4}){3}-[0-9a-f]{12}")


def _same(output: str) -> str:
    """An output with the ids of this run's rows and the new-or-existing wording left out."""
    return UUID.sub("<id>", output.replace("(existing)", "(new)"))


def _counts(db: Database) -> dict[str, int]:
    return {table: scalar(db, f"select count(*) from {table}") for table in PROVISIONED}


def test_there_are_examples() -> None:
    assert len(EXAMPLES) >= 3


@pytest.mark.parametrize("example", EXAMPLES, ids=lambda p: p.name)
def test_example_runs_twice(example: Path, fresh_db: Database, tmp_path: Path) -> None:
    env = snippets.environment(fresh_db.dsn)
    step = snippets.script(example)
    first = snippets.run(step, env, tmp_path, timeout=120)
    made = _counts(fresh_db)
    second = snippets.run(step, env, tmp_path, timeout=120)
    assert first.strip()
    assert _counts(fresh_db) == made
    assert _same(second) == _same(first)
