"""Each adapter imports its framework only when used, and says which extra brings it."""

from __future__ import annotations

import subprocess
import sys
import uuid

import pytest

from voicesessions import AsyncVoiceSessions, InvalidInputError
from voicesessions.integrations import CallRecorder
from voicesessions.integrations import pipecat as pipecat_adapter

NOWHERE = "postgresql://nobody@127.0.0.1:1/none"  # never connected to


def test_importing_the_integrations_imports_no_framework() -> None:
    code = (
        "import sys, voicesessions.integrations, voicesessions.integrations.pipecat,"
        " voicesessions.integrations.livekit\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('pipecat', 'livekit')))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"


def test_a_missing_pipecat_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "pipecat.frames", None)
    pipecat_adapter._observer_class.cache_clear()
    try:
        with pytest.raises(ImportError, match=r"pip install 'voicesessions\[pipecat\]'"):
            pipecat_adapter.SessionObserver  # noqa: B018
    finally:
        pipecat_adapter._observer_class.cache_clear()


def test_a_missing_livekit_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    from voicesessions.integrations.livekit import record_agent_session

    monkeypatch.setitem(sys.modules, "livekit.agents", None)
    vs = AsyncVoiceSessions.from_postgres(NOWHERE)
    with pytest.raises(ImportError, match=r"pip install 'voicesessions\[livekit\]'"):
        record_agent_session(vs, object(), session_id=uuid.uuid4())


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        ({}, "either session_id"),
        ({"session_id": uuid.uuid4(), "profile_id": uuid.uuid4()}, "either session_id"),
        ({"session_id": uuid.uuid4(), "max_pending": 0}, "max_pending"),
        ({"profile_id": "nope"}, "profile_id must be a UUID"),
    ],
    ids=["neither", "both", "max_pending", "bad-profile"],
)
def test_a_recorder_refuses_bad_arguments(arguments: dict[str, object], message: str) -> None:
    vs = AsyncVoiceSessions.from_postgres(NOWHERE)
    with pytest.raises(InvalidInputError, match=message):
        CallRecorder(vs, **arguments)  # type: ignore[arg-type]
