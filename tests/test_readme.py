"""The README's commands and Python blocks work as written, and again.

The quickstart runs twice in a row against a fresh `voicesessions local start` (the second
run must find what the first made: one company, one person), and once more against a
database that refuses the profile, which must leave no company behind. Every other Python
block is marked a fragment (placeholders) and must at least compile. The runner is
tests/support/snippets.py, shared with tests/test_docs.py and tests/test_examples.py.
"""

from __future__ import annotations

import ast
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import Database
from tests.support import snippets
from tests.support.db import owner, scalar

ROOT = snippets.ROOT
README_PATH = ROOT / "README.md"
README = README_PATH.read_text()
CLI = [sys.executable, "-m", "voicesessions"]
TABLES = ("public.companies", "auth.users")


def _quickstart() -> list[snippets.Step]:
    steps = snippets.steps(README_PATH)
    assert len(steps) == 1, "the README has one executed block, the Python quickstart"
    assert steps[0].lang == "python"
    return steps


@pytest.fixture(scope="module")
def local_home() -> Iterator[dict[str, str]]:
    """An environment whose only database is a fresh `voicesessions local start`."""
    with snippets.local_home() as env:
        subprocess.run([*CLI, "local", "start", "--fast"], env=env, check=True, capture_output=True)
        yield env


def test_quickstart_runs_twice_against_local_start(
    local_home: dict[str, str], tmp_path: Path
) -> None:
    steps = _quickstart()
    assert len([line for line in steps[0].code.splitlines() if line.strip()]) <= 10
    first, second = snippets.run_twice(steps, local_home, tmp_path)
    assert first == ["Acme Sales (new) Discovery call completed\n"]
    assert second == ["Acme Sales (existing) Discovery call completed\n"]


def test_a_refused_quickstart_leaves_no_company_and_the_next_runs_work(
    fresh_db: Database, tmp_path: Path
) -> None:
    """The database refuses the profile after the company row is written: nothing of the
    tenant stays; once the cause is gone, two runs make exactly one company and one person."""
    with owner(fresh_db) as conn:
        conn.execute(
            "create function public.test_refuse_profile() returns trigger language plpgsql"
            " as $$ begin raise exception 'refused' using errcode = '23514'; end $$;"
            " create trigger test_refuse before insert on public.profiles for each row"
            " execute function public.test_refuse_profile()"
        )
    env = snippets.environment(fresh_db.dsn)
    companies, users = (scalar(fresh_db, f"select count(*) from {t}") for t in TABLES)
    with pytest.raises(AssertionError, match="InvalidInputError"):
        snippets.run(_quickstart()[0], env, tmp_path)
    assert scalar(fresh_db, "select count(*) from public.companies") == companies
    with owner(fresh_db) as conn:
        conn.execute("drop trigger test_refuse on public.profiles")
    snippets.run_twice(_quickstart(), env, tmp_path)
    assert scalar(fresh_db, "select count(*) from public.companies") == companies + 1
    assert scalar(fresh_db, "select count(*) from auth.users") == users + 1
    assert scalar(fresh_db, "select count(*) from public.sessions") == 2


def test_every_python_block_is_run_or_a_fragment_that_compiles() -> None:
    assert snippets.unmarked(README_PATH, ("python",)) == []
    fragments = snippets.fragments(README_PATH)
    assert len(fragments) >= 4
    for block in fragments:
        # Fragments may await, as the async SDK's callers do (top-level await, as in asyncio's
        # REPL).
        compile(block.code, block.where, "exec", flags=ast.PyCF_ALLOW_TOP_LEVEL_AWAIT)


def test_readme_links_each_guide() -> None:
    guides = sorted(path.name for path in (ROOT / "docs").glob("*.md"))
    section = README.split("## Guides", 1)
    assert len(section) == 2, "the README has no Guides section"
    for name in ("live-call.md", "gdpr-operator.md", "local-testing.md"):
        assert name in guides
        assert f"(docs/{name})" in section[1].split("\n## ", 1)[0]


def test_readme_test_command_is_what_ci_runs() -> None:
    second = re.search(r"```bash\n(?:[^\n]*\n)*?# 2\.[^\n]*\n([^\n]+)\n", README)
    assert second, "the README's quick start has no second command"
    command = second.group(1)
    assert command.startswith(
        "python3 -m venv .venv && . .venv/bin/activate"
        " && pip install -e '.[dev,binary,local]' && pytest"
    )
    assert command in (ROOT / ".ci" / "run").read_text().splitlines()


def test_readme_first_command_installs_and_runs_the_demo() -> None:
    first = re.search(r"```bash\n# 1\.[^\n]*\n([^\n]+)\n", README)
    assert first, "the README's quick start has no first command"
    assert first.group(1) == (
        "python3 -m venv .venv && . .venv/bin/activate && pip install -e '.[binary,local]'"
        " && voicesessions demo"
    )


def test_the_runner_refuses_a_failing_step(tmp_path: Path) -> None:
    """The harness itself: a failing block fails the test, with its output."""
    step = snippets.Step("bash", "echo partial; exit 3\n", "inline")
    with pytest.raises(AssertionError, match=r"(?s)exited with 3.*partial"):
        snippets.run(step, snippets.environment(), tmp_path)
