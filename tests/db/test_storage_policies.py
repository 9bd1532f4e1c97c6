"""RLS on the compatibility storage.objects for the session-audio bucket, as PostgREST-faithful
requests (tests/support/api.py) against the two-company world: who reads, who writes, and
that nothing crosses companies. Each statement is rolled back."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import psycopg
import pytest

from tests.conftest import Database
from tests.support.api import Api
from tests.support.world import World

BUCKET = "session-audio"
IDENTITIES = ("anon", "A1", "A2", "MA", "AA", "B1", "AB", "service_role")
DENIED = "42501"


@pytest.fixture
def setup(world_db: tuple[Database, World]) -> Iterator[tuple[Database, World, Api, str]]:
    """The world, with A1's completed session's recording stored as an object."""
    db, world = world_db
    a1 = world.person("A1")
    name = f"{world.companies['A']}/{a1.id}/{world.completed_session['A1']}.webm"
    with db.connect() as conn:
        conn.execute(
            "insert into storage.objects (bucket_id, name, owner, owner_id)"
            " values (%s, %s, %s, %s)",
            (BUCKET, name, a1.id, str(a1.id)),
        )
        # An object of another bucket in the same folder: these policies never grant it.
        conn.execute(
            "insert into storage.buckets (id, name) values ('other', 'other')"
            " on conflict do nothing"
        )
        conn.execute("insert into storage.objects (bucket_id, name) values ('other', %s)", (name,))
    with db.api() as api:
        yield db, world, api, name


def visible(api: Api, world: World, who: str) -> list[str]:
    rows = api.run(
        world.identity(who),
        "select bucket_id || ':' || name as n from storage.objects order by 1",
        method="GET",
        path="/storage",
    ).rows
    return [r["n"] for r in rows]


READERS = {"A1", "MA", "AA", "service_role"}


@pytest.mark.parametrize("who", IDENTITIES)
def test_who_reads_a_recording(setup: tuple[Database, World, Api, str], who: str) -> None:
    _, world, api, name = setup
    seen = visible(api, world, who)
    if who == "service_role":
        assert seen == sorted([f"{BUCKET}:{name}", f"other:{name}"])
    elif who in READERS:
        assert seen == [f"{BUCKET}:{name}"]
    else:
        assert seen == []


def insert(api: Api, world: World, who: str, name: str) -> str | int:
    identity = world.identity(who)
    owner = str(identity.user_id) if identity.user_id else None
    try:
        return api.run(
            identity,
            "insert into storage.objects (bucket_id, name, owner_id) values (%s, %s, %s)",
            (BUCKET, name, owner),
        ).rowcount
    except psycopg.Error as exc:
        return str(exc.sqlstate)


@pytest.mark.parametrize("who", IDENTITIES)
def test_who_uploads_to_a_trainees_session_path(
    setup: tuple[Database, World, Api, str], who: str
) -> None:
    _, world, api, _ = setup
    a1 = world.person("A1")
    name = f"{world.companies['A']}/{a1.id}/{world.active_session['A1']}.wav"
    assert insert(api, world, who, name) == (1 if who in ("A1", "service_role") else DENIED)


def test_owners_write_only_their_sessions_paths(setup: tuple[Database, World, Api, str]) -> None:
    _, world, api, _ = setup
    a1 = world.person("A1")
    a, b = world.companies["A"], world.companies["B"]
    own = world.active_session["A1"]
    refused = [
        f"{b}/{a1.id}/{own}.wav",  # another company's folder
        f"{a}/{a1.id}/{world.active_session['A2']}.wav",  # someone else's session
        f"{a}/{world.person('A2').id}/{world.active_session['A2']}.wav",  # their folder
        f"{a}/{a1.id}/{uuid.uuid4()}.wav",  # no such session
        f"{a}/{a1.id}/{own}.WAV",  # not the path convention
        f"{a}/{a1.id}/{own}.wav/x",
        f"{a}/{a1.id}/notes.txt",
    ]
    for name in refused:
        assert insert(api, world, "A1", name) == DENIED, name
    assert insert(api, world, "A1", f"{a}/{a1.id}/{own}.ogg") == 1


@pytest.mark.parametrize("who", IDENTITIES)
def test_who_replaces_or_deletes_a_recording(
    setup: tuple[Database, World, Api, str], who: str
) -> None:
    _, world, api, name = setup
    identity = world.identity(who)
    updated = api.run(
        identity,
        "update storage.objects set metadata = '{}' where bucket_id = %s and name = %s",
        (BUCKET, name),
    ).rowcount
    deleted = api.run(
        identity,
        "delete from storage.objects where bucket_id = %s and name = %s",
        (BUCKET, name),
        method="DELETE",
    ).rowcount
    expected = 1 if who in ("A1", "service_role") else 0
    assert (updated, deleted) == (expected, expected)
