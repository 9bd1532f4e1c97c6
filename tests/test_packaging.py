"""The wheel carries the migrations from their one home, and the public surface is deliberate."""

from __future__ import annotations

import re
import subprocess
import sys
import tomllib
import types
import zipfile
from email.parser import HeaderParser
from importlib import metadata
from pathlib import Path

import pytest
from click.testing import CliRunner

import voicesessions
from voicesessions.cli import cli
from voicesessions.local.migrations import load_migrations, migrations_dir

ROOT = Path(__file__).resolve().parents[1]


PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    tmp_path = tmp_path_factory.mktemp("wheel")
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--quiet",
            "-w",
            str(tmp_path),
            str(ROOT),
        ],
        check=True,
        capture_output=True,
    )
    (built,) = tmp_path.glob("voicesessions-*.whl")
    return built


def test_wheel_ships_the_migrations_and_type_marker(wheel: Path) -> None:
    with zipfile.ZipFile(wheel) as zf:
        names = set(zf.namelist())
        shipped = {
            Path(n).name: zf.read(n)
            for n in names
            if n.startswith("voicesessions/_supabase/migrations/") and n.endswith(".sql")
        }
        entry_points = zf.read(
            next(n for n in names if n.endswith(".dist-info/entry_points.txt"))
        ).decode()
    source = {p.name: p.read_bytes() for p in (ROOT / "supabase" / "migrations").glob("*.sql")}
    assert shipped == source
    assert "voicesessions/py.typed" in names
    assert "voicesessions/local/compat.sql" in names
    assert "voicesessions = voicesessions.cli:main" in entry_points


def test_checkout_finds_the_same_migrations() -> None:
    found = {m.filename for m in load_migrations()}
    assert found == {p.name for p in (ROOT / "supabase" / "migrations").glob("*.sql")}
    assert migrations_dir().is_dir()


def test_public_names() -> None:
    """Everything public in the package namespace is in __all__, and __all__ resolves."""
    exported = {
        name
        for name, value in vars(voicesessions).items()
        if not name.startswith("_") and not isinstance(value, types.ModuleType)
    }
    assert set(voicesessions.__all__) == exported | {"__version__"}
    for name in voicesessions.__all__:
        assert hasattr(voicesessions, name)


def _wheel_metadata(wheel: Path) -> tuple[dict[str, list[str]], dict[str, bytes]]:
    """The wheel's METADATA headers (name -> every value) and its license files."""
    with zipfile.ZipFile(wheel) as zf:
        names = zf.namelist()
        text = zf.read(next(n for n in names if n.endswith(".dist-info/METADATA"))).decode()
        licenses = {n.rsplit("/", 1)[1]: zf.read(n) for n in names if ".dist-info/licenses/" in n}
    message = HeaderParser().parsestr(text)
    headers: dict[str, list[str]] = {}
    for key, value in message.items():
        headers.setdefault(key, []).append(value)
    return headers, licenses


def test_wheel_declares_its_license_and_ships_its_text(wheel: Path) -> None:
    headers, licenses = _wheel_metadata(wheel)
    assert PYPROJECT["license"] == "Apache-2.0"
    assert headers["License-Expression"] == ["Apache-2.0"]
    license_text = (ROOT / "LICENSE").read_bytes()
    assert licenses == {"LICENSE": license_text}
    text = license_text.decode()
    assert re.match(r"\s*Apache License\s+Version 2\.0, January 2004", text)
    assert "END OF TERMS AND CONDITIONS" in text
    # PEP 639: no License classifier beside a license expression (PyPI refuses the pair).
    assert not [c for c in headers["Classifier"] if c.startswith("License ::")]


def test_wheel_declares_urls_and_classifiers(wheel: Path) -> None:
    headers, _ = _wheel_metadata(wheel)
    urls = dict(entry.split(", ", 1) for entry in headers["Project-URL"])
    assert set(urls) >= {"Homepage", "Documentation", "Issues"}
    assert all(url.startswith("https://") for url in urls.values())
    classifiers = headers["Classifier"]
    assert "Typing :: Typed" in classifiers
    assert [c for c in classifiers if c.startswith("Development Status :: ")]
    # Every Python minor from requires-python up is listed (and no older one).
    minimum = re.fullmatch(r">=3\.(\d+)", PYPROJECT["requires-python"])
    assert minimum is not None
    minors = sorted(
        int(m.group(1))
        for c in classifiers
        if (m := re.fullmatch(r"Programming Language :: Python :: 3\.(\d+)", c))
    )
    assert minors == list(range(int(minimum.group(1)), minors[-1] + 1))
    assert headers["Requires-Python"] == [PYPROJECT["requires-python"]]


def test_one_source_for_the_version() -> None:
    """pyproject.toml holds the only version literal; the package and the CLI read it back."""
    declared = PYPROJECT["version"]
    assert metadata.version("voicesessions") == declared
    assert voicesessions.__version__ == declared
    result = CliRunner().invoke(cli, ["--version"])
    assert result.exit_code == 0
    assert declared in result.output
    literal = re.compile(rf"[\"']{re.escape(declared)}[\"']")
    holders = [
        p.relative_to(ROOT)
        for p in (ROOT / "src").rglob("*.py")
        if literal.search(p.read_text(encoding="utf-8"))
    ]
    assert holders == []
