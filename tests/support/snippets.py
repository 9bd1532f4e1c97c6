"""Run the code a reader copies: the README's and docs/' marked blocks, and examples/*.py.

A fenced block is executed when an HTML comment right above it says so::

    <!-- run: what the test checks -->           executed (python in one process, bash
                                                 with ``bash -euo pipefail``)
    <!-- run: continued -->                      a block that continues the executed block(s)
                                                 of its language right before it: they run as
                                                 one program (python) or in one shell (bash),
                                                 as a reader pasting them in order would run
                                                 them (a shell variable set above is set)
    <!-- fragment: why it cannot run -->         not executed (placeholders); compiled
    <!-- not run: why -->                        not executed (e.g. needs Docker)

Every ``python`` and ``bash`` block of a checked page must carry one of these, so that a new
block cannot slip in untested. :func:`run_twice` runs a page's (or a script's) steps in order
against one database, then all of them again: a snippet that works once but not on the second
run (a fixed email that now exists, a seed that now collides) fails the test.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
#: The kinds of marker, and the languages whose blocks must carry one.
KINDS = ("run", "fragment", "not run")
CHECKED_LANGUAGES = ("python", "bash")
_FENCE = re.compile(
    r"(?:<!--\s*(?P<kind>run|fragment|not run)\s*(?::\s*(?P<note>.*?))?\s*-->\n)?"
    r"^```(?P<lang>[\w-]*)\n(?P<code>.*?)^```\s*$",
    re.S | re.M,
)


@dataclass(frozen=True)
class Block:
    """One fenced block of a Markdown page."""

    path: Path
    line: int
    lang: str
    kind: str | None  # one of KINDS, None when unmarked
    note: str
    code: str

    @property
    def where(self) -> str:
        return f"{self.path.relative_to(ROOT)}:{self.line}"


@dataclass(frozen=True)
class Step:
    """What one process runs: a python program (one or more joined blocks) or a bash block."""

    lang: str
    code: str
    where: str


def blocks(path: Path) -> list[Block]:
    """Every fenced block of the page, with its marker."""
    text = path.read_text()
    found = []
    for match in _FENCE.finditer(text):
        code_start = match.start("code")
        line = text.count("\n", 0, code_start)  # the fence's line, 1-based
        found.append(
            Block(
                path,
                line,
                match.group("lang"),
                match.group("kind"),
                (match.group("note") or "").strip(),
                match.group("code"),
            )
        )
    return found


def unmarked(path: Path, languages: Sequence[str] = CHECKED_LANGUAGES) -> list[str]:
    """The blocks of the page in ``languages`` that carry no marker."""
    return [b.where for b in blocks(path) if b.lang in languages and b.kind is None]


def fragments(path: Path) -> list[Block]:
    """The python blocks marked as fragments: not run, but they must compile."""
    return [b for b in blocks(path) if b.lang == "python" and b.kind == "fragment"]


def steps(path: Path) -> list[Step]:
    """The executed blocks of the page, in order, continued python blocks joined."""
    result: list[Step] = []
    for block in blocks(path):
        if block.kind != "run":
            continue
        if block.lang not in CHECKED_LANGUAGES:
            raise AssertionError(f"{block.where}: cannot run a {block.lang!r} block")
        if block.note.startswith("continued"):
            if not result or result[-1].lang != block.lang:
                raise AssertionError(f"{block.where}: 'continued' follows no {block.lang} block")
            last = result.pop()
            result.append(Step(block.lang, last.code + block.code, f"{last.where}+{block.line}"))
        else:
            result.append(Step(block.lang, block.code, block.where))
    return result


def script(path: Path) -> Step:
    """A Python file run as a program."""
    return Step("python", path.read_text(), str(path.relative_to(ROOT)))


def environment(dsn: str | None = None, **extra: str) -> dict[str, str]:
    """The caller's environment without any Supabase or voicesessions setting, with
    ``VOICESESSIONS_DSN`` set to ``dsn`` when given, this interpreter's directory first on
    PATH (so ``python`` and ``voicesessions`` are this venv's) and the source tree importable.
    """
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SUPABASE_", "VOICESESSIONS_"))}
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
    env["PYTHONPATH"] = os.pathsep.join(
        p for p in [str(ROOT / "src"), env.get("PYTHONPATH", "")] if p
    )
    if dsn is not None:
        env["VOICESESSIONS_DSN"] = dsn
    env.update(extra)
    return env


def run(step: Step, env: Mapping[str, str], cwd: Path, *, timeout: float = 180) -> str:
    """Run one step; its stdout. AssertionError with the step's output when it fails."""
    if step.lang == "python":
        command = [sys.executable, "-c", step.code]
    else:
        command = ["bash", "-euo", "pipefail", "-c", step.code]
    done = subprocess.run(
        command, env=dict(env), cwd=cwd, capture_output=True, text=True, timeout=timeout
    )
    if done.returncode != 0:
        raise AssertionError(
            f"{step.where} exited with {done.returncode}\n--- code\n{step.code}"
            f"--- stdout\n{done.stdout}--- stderr\n{done.stderr}"
        )
    return done.stdout


def run_twice(
    page_steps: Sequence[Step], env: Mapping[str, str], cwd: Path, *, timeout: float = 180
) -> tuple[list[str], list[str]]:
    """Every step in order, then every step again: the outputs of both runs."""
    assert page_steps, "nothing to run"
    first = [run(step, env, cwd, timeout=timeout) for step in page_steps]
    second = [run(step, env, cwd, timeout=timeout) for step in page_steps]
    return first, second


@contextmanager
def local_home() -> Iterator[dict[str, str]]:
    """An environment whose only database is the `voicesessions local start` server of a
    new ``VOICESESSIONS_HOME`` (not started here); the server is stopped and the directory
    removed afterwards."""
    home = Path(tempfile.mkdtemp(prefix="voicesessions-snippets-"))
    home.chmod(0o711)  # reachable by the unprivileged server user when run as root
    env = environment(VOICESESSIONS_HOME=str(home))
    try:
        yield env
    finally:
        command = [sys.executable, "-m", "voicesessions", "local", "stop"]
        subprocess.run(command, env=env, capture_output=True, check=False)
        shutil.rmtree(home, ignore_errors=True)
