"""The README's configuration table lists every environment variable the project reads.

The sources (``src``, ``tests``, ``benchmarks``, ``examples``, ``.ci``) are scanned for the
variables they read or hand to the programs they run, and each must be a row of the table
in the README's "Configuration" section; each row must name a variable the sources use, so
the table cannot keep a variable nobody reads. What counts as naming a variable:

- Python: a literal or module constant passed to ``os.environ.get`` / ``os.getenv`` /
  ``environ[...]`` / ``environ.get`` / ``setenv`` / ``delenv`` or click's ``envvar=``, and
  every string of a module-level constant whose name has ``ENV`` as a word (``ENV_DSN``,
  ``SUPABASE_DEFAULTS_ENV``, ``ENV_SUPABASE_KEYS``: the convention of this code base);
- shell: ``${NAME:-default}`` (an input with a default), ``export NAME=...``, and any word
  with the project's prefixes (``VOICESESSIONS_...``, ``SUPABASE...``, ``PG...``) outside
  comments.
"""

from __future__ import annotations

import ast
import re
from collections.abc import Iterator
from pathlib import Path

from voicesessions._async import client

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
PYTHON_TREES = ("src", "tests", "benchmarks", "examples")
SHELL_FILES = (".ci/run", ".ci/supabase-cli-checks.sh")
NAME = re.compile(r"[A-Z][A-Z0-9]*(?:_[A-Z0-9]+)*")
ENV_CONSTANT = re.compile(r"(?:^|_)ENV(?:_|$)")
ENV_FUNCTIONS = {"get", "getenv", "setenv", "delenv", "pop", "setdefault"}


def _strings(node: ast.AST) -> Iterator[str]:
    """The string constants of a literal: a string, or the items of a tuple, list, set or
    the keys and values of a dict (nested)."""
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        yield node.value
    elif isinstance(node, ast.Tuple | ast.List | ast.Set):
        for item in node.elts:
            yield from _strings(item)
    elif isinstance(node, ast.Dict):
        for part in [*node.keys, *node.values]:
            if part is not None:
                yield from _strings(part)


def _is_environ(node: ast.AST) -> bool:
    """``os.environ``, ``environ`` (a mapping named so) or ``os`` itself (``os.getenv``)."""
    if isinstance(node, ast.Attribute):
        return node.attr == "environ"
    return isinstance(node, ast.Name) and node.id in {"environ", "os", "monkeypatch"}


def python_names(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    constants: dict[str, list[str]] = {}
    found: set[str] = set()
    for statement in tree.body:
        targets: list[ast.expr] = []
        value: ast.expr | None = None
        if isinstance(statement, ast.Assign):
            targets, value = statement.targets, statement.value
        elif isinstance(statement, ast.AnnAssign):
            targets, value = [statement.target], statement.value
        for target in targets:
            if isinstance(target, ast.Name) and value is not None:
                values = list(_strings(value))
                constants[target.id] = values
                if ENV_CONSTANT.search(target.id):
                    found.update(values)

    def resolve(node: ast.AST) -> list[str]:
        if isinstance(node, ast.Name):
            return constants.get(node.id, [])
        return list(_strings(node))

    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            function = node.func
            if (
                isinstance(function, ast.Attribute)
                and function.attr in ENV_FUNCTIONS
                and (_is_environ(function.value) or function.attr in {"setenv", "delenv"})
                and node.args
            ):
                found.update(resolve(node.args[0]))
            for keyword in node.keywords:
                if keyword.arg == "envvar":
                    found.update(resolve(keyword.value))
        elif isinstance(node, ast.Subscript) and _is_environ(node.value):
            found.update(resolve(node.slice))
    return {name for name in found if NAME.fullmatch(name)}


SHELL_INPUT = re.compile(r"\$\{([A-Z][A-Z0-9_]*):?[-?=]")
SHELL_EXPORT = re.compile(r"\bexport\s+([A-Z][A-Z0-9_]*)=")
SHELL_PREFIXED = re.compile(r"\b(VOICESESSIONS_[A-Z0-9_]+|SUPABASE(?:_[A-Z0-9_]+)?|PG[A-Z]+)\b")


def shell_names(path: Path) -> set[str]:
    found: set[str] = set()
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.lstrip().startswith("#"):
            continue
        for pattern in (SHELL_INPUT, SHELL_EXPORT, SHELL_PREFIXED):
            found.update(pattern.findall(line))
    return found


def source_variables() -> dict[str, set[str]]:
    """Every variable the sources name, with the files naming it."""
    where: dict[str, set[str]] = {}
    paths = [p for tree in PYTHON_TREES for p in sorted((ROOT / tree).rglob("*.py"))]
    for path in paths:
        for name in python_names(path):
            where.setdefault(name, set()).add(str(path.relative_to(ROOT)))
    for shell in SHELL_FILES:
        for name in shell_names(ROOT / shell):
            where.setdefault(name, set()).add(shell)
    return where


def configuration_section() -> str:
    text = README.read_text(encoding="utf-8")
    start = text.index("\n## Configuration\n")
    end = text.index("\n## ", start + 1)
    return text[start:end]


def table_variables() -> dict[str, str]:
    """Each variable of the configuration table (first column, in backticks) with its row."""
    rows: dict[str, str] = {}
    for line in configuration_section().splitlines():
        if not line.startswith("| `"):
            continue
        first = line.split("|")[1]
        for name in re.findall(r"`([A-Z][A-Z0-9_]*)`", first):
            rows[name] = line
    return rows


def test_the_scan_finds_the_variables_it_must() -> None:
    """A scan that finds nothing would pass the test below: it must find these, read in
    Python (constants, literals, click), in shell, and by tests alike."""
    found = source_variables()
    for name in (
        "VOICESESSIONS_DSN",  # a constant, and click's envvar=
        "SUPABASE_SECRET_KEY",  # an item of a tuple constant
        "VOICESESSIONS_SIGNING_KEY_ID",
        "VOICESESSIONS_PG_BINDIR",
        "VOICESESSIONS_TEST_DSN",  # a literal in the tests
        "CI",  # os.environ.get("CI", "")
        "SUPABASE",  # the CLI checks' ${SUPABASE:-supabase}
        "PGSSLMODE",  # export PGSSLMODE=disable
    ):
        assert name in found, name


def test_every_variable_the_sources_read_is_in_the_readme_table() -> None:
    found = source_variables()
    listed = table_variables()
    absent = {name: sorted(files) for name, files in found.items() if name not in listed}
    assert not absent, f"add these to the README's configuration table: {absent}"


def test_every_variable_of_the_readme_table_is_read_somewhere() -> None:
    stale = sorted(set(table_variables()) - set(source_variables()))
    assert not stale, f"the README's configuration table lists variables nothing reads: {stale}"


def test_the_table_gives_the_key_precedence_of_from_env() -> None:
    """The API key row names the keys in the order ``from_env`` tries them."""
    row = table_variables()[client.ENV_SUPABASE_KEYS[0]]
    positions = [row.index(f"`{name}`") for name in client.ENV_SUPABASE_KEYS]
    assert positions == sorted(positions), row
    for name in client.ENV_SUPABASE_KEYS:
        assert table_variables()[name] == row  # one row for the whole precedence
