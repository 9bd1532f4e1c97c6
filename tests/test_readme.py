"""The README's commands and quickstart work as written."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()
CLI = [sys.executable, "-m", "voicesessions"]


def _quickstart() -> str:
    match = re.search(r"<!-- quickstart:[^>]*-->\n```python\n(.*?)```", README, re.S)
    assert match, "the README has no marked quickstart block"
    return match.group(1)


@pytest.fixture(scope="module")
def local_home() -> Iterator[dict[str, str]]:
    """An environment whose only database is a fresh `voicesessions local start`."""
    home = Path(tempfile.mkdtemp(prefix="voicesessions-readme-"))
    home.chmod(0o711)  # reachable by the unprivileged server user when run as root
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SUPABASE_", "VOICESESSIONS_"))}
    env["VOICESESSIONS_HOME"] = str(home)
    subprocess.run([*CLI, "local", "start", "--fast"], env=env, check=True, capture_output=True)
    try:
        yield env
    finally:
        subprocess.run([*CLI, "local", "stop"], env=env, capture_output=True)
        shutil.rmtree(home, ignore_errors=True)


def test_quickstart_runs_as_written_against_local_start(local_home: dict[str, str]) -> None:
    code = _quickstart()
    assert len([line for line in code.splitlines() if line.strip()]) <= 10
    done = subprocess.run(
        [sys.executable, "-c", code], env=local_home, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr
    assert "('Discovery call', 'completed', 0)" in done.stdout


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
