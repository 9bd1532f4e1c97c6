"""Shared pieces of the respx contract tests: the mocked Supabase project, its keys, and
the two faces (async and generated sync) of the Supabase backend."""

from __future__ import annotations

import datetime
import enum
import inspect
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from types import ModuleType
from typing import Any

import jwt
import pytest
import respx

from voicesessions._async.backends import supabase as async_supabase
from voicesessions._sync.backends import supabase as sync_supabase

BASE = "http://supabase.test"
SECRET = "super-secret-jwt-token-with-at-least-32-characters-long"
SERVICE_KEY = jwt.encode({"iss": "supabase-demo", "role": "service_role"}, SECRET, "HS256")
ANON_KEY = jwt.encode({"iss": "supabase-demo", "role": "anon"}, SECRET, "HS256")
USER_A = uuid.UUID("0a0a0a0a-0000-4000-8000-00000000000a")
USER_B = uuid.UUID("0b0b0b0b-0000-4000-8000-00000000000b")
SESSION = uuid.UUID("5e551011-0000-4000-8000-000000000001")
STARTED = datetime.datetime(2026, 1, 2, 3, 4, 5, tzinfo=datetime.UTC)
COMPANY = uuid.UUID("c0c0c0c0-0000-4000-8000-00000000000c")
NOW = "2026-01-02T03:04:05+00:00"
AUTH_API_VERSION = {"X-Supabase-Api-Version": "2024-01-01"}


class Status(enum.StrEnum):
    ACTIVE = "active"
    COMPLETED = "completed"


def session_row(**values: Any) -> dict[str, Any]:
    """A completed session of USER_A as PostgREST returns it (fields overridable)."""
    return {
        "id": str(SESSION),
        "profile_id": str(USER_A),
        "company_id": str(COMPANY),
        "title": "call",
        "status": "completed",
        "started_at": STARTED.isoformat(),
        "ended_at": NOW,
        "metadata": {},
        "created_at": NOW,
        "updated_at": NOW,
        **values,
    }


# -- faces and fixtures -------------------------------------------------------------------


@dataclass
class Face:
    """One face of the backend: its module, how to build, call and close it."""

    name: str
    module: ModuleType

    def build(self, key: str = SERVICE_KEY, *, url: str = BASE, **options: Any) -> Any:
        cls = (
            self.module.AsyncSupabaseBackend
            if self.name == "async"
            else self.module.SupabaseBackend
        )
        return cls(url, key, **options)

    async def call(self, method: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        result = method(*args, **kwargs)
        if inspect.isawaitable(result):
            return await result
        return result

    async def close(self, backend: Any) -> None:
        await self.call(backend.aclose if self.name == "async" else backend.close)


@pytest.fixture(params=["async", "sync"])
def face(request: pytest.FixtureRequest) -> Face:
    module = async_supabase if request.param == "async" else sync_supabase
    return Face(request.param, module)


@pytest.fixture
def api() -> Iterator[respx.MockRouter]:
    """The mocked Supabase project; any request without a route fails the test."""
    with respx.mock(base_url=BASE, assert_all_called=False) as router:
        yield router
