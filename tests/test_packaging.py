"""The wheel carries the migrations from their one home, and the public surface is deliberate."""

from __future__ import annotations

import subprocess
import sys
import types
import zipfile
from pathlib import Path

import voicesessions
from voicesessions.local.migrations import load_migrations, migrations_dir

ROOT = Path(__file__).resolve().parents[1]


def test_wheel_ships_the_migrations_and_type_marker(tmp_path: Path) -> None:
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
    (wheel,) = tmp_path.glob("voicesessions-*.whl")
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
