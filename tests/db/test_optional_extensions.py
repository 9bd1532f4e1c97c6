"""tests/support/extensions.py: a missing optional extension skips, except in CI's main run."""

from __future__ import annotations

import pytest

from tests.conftest import Database
from tests.support.db import owner
from tests.support.extensions import ci_requires_extensions, require_extension
from voicesessions.local.server import find_binaries


def test_ci_requires_the_extensions_on_the_system_server(monkeypatch: pytest.MonkeyPatch) -> None:
    """CI=true on the system's PostgreSQL requires them; elsewhere (another server, the
    embedded one, outside CI) they are optional."""
    monkeypatch.delenv("VOICESESSIONS_TEST_DSN", raising=False)
    monkeypatch.delenv("VOICESESSIONS_PG_BINDIR", raising=False)
    monkeypatch.delenv("CI", raising=False)
    assert not ci_requires_extensions()
    monkeypatch.setenv("CI", "true")
    assert ci_requires_extensions() == (find_binaries().source == "system")
    monkeypatch.setenv("VOICESESSIONS_PG_BINDIR", str(find_binaries().bindir))
    assert not ci_requires_extensions()
    monkeypatch.delenv("VOICESESSIONS_PG_BINDIR")
    monkeypatch.setenv("VOICESESSIONS_TEST_DSN", "postgresql://elsewhere")
    assert not ci_requires_extensions()


@pytest.mark.parametrize("ci", [False, True])
def test_a_missing_extension_skips_or_fails_naming_the_package(
    fresh_db: Database, monkeypatch: pytest.MonkeyPatch, ci: bool
) -> None:
    monkeypatch.delenv("VOICESESSIONS_TEST_DSN", raising=False)
    monkeypatch.delenv("VOICESESSIONS_PG_BINDIR", raising=False)
    monkeypatch.setenv("CI", "true" if ci else "")
    must_fail = ci and find_binaries().source == "system"
    outcome = pytest.fail.Exception if must_fail else pytest.skip.Exception
    with owner(fresh_db) as conn, pytest.raises(outcome) as excinfo:
        require_extension(conn, "vs_no_such_extension", "postgresql-<major>-vs-nothing")
    assert "vs_no_such_extension" in str(excinfo.value)
    assert "install postgresql-<major>-vs-nothing" in str(excinfo.value)
