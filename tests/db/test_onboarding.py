"""Onboarding (20261128001600_onboarding.sql): a company and its first person in one
transaction, re-runnable, refused without a trace.

- `onboard_member` run twice with the same person, company name and role answers the same
  company and profile the second time and writes nothing;
- every refusal (other callers, nulls, bad names, retention days, a missing user, a person
  already elsewhere) leaves every table as it was;
- a failure after the company row was inserted (forced by a trigger on `profiles`) leaves no
  company behind;
- `auth_user_id` finds a person by address as Supabase Auth stores it, for the service role
  only.
"""

from __future__ import annotations

import uuid
from typing import Any

import psycopg
import pytest

from tests.conftest import Database
from tests.support.api import Identity, Result
from tests.support.db import owner, scalar, unchanged
from tests.support.world import World

WorldDb = tuple[Database, World]
SERVICE = Identity.service_role()
ONBOARD = (
    "select public.onboard_member(user_id => %(user_id)s, company_name => %(company_name)s,"
    " role => %(role)s, display_name => %(display_name)s,"
    " audio_retention_days => %(audio)s) as r"
)


def run(db: Database, who: Identity, query: str, params: Any = None) -> Result:
    with db.api() as api:
        return api.run(who, query, params, commit=True)


def new_user(db: Database, email: str) -> uuid.UUID:
    uid = uuid.uuid4()
    with owner(db) as conn:
        conn.execute("insert into auth.users (id, email) values (%s, %s)", (uid, email))
    return uid


def onboard(db: Database, who: Identity = SERVICE, **args: Any) -> dict[str, Any]:
    params = {"role": "admin", "display_name": None, "audio": None, **args}
    answer: dict[str, Any] = run(db, who, ONBOARD, params).rows[0]["r"]
    return answer


def refused(db: Database, who: Identity, query: str, params: Any) -> str:
    """The SQLSTATE of a request that must fail and leave every table as it was."""
    with unchanged(db):
        try:
            run(db, who, query, params)
        except psycopg.Error as exc:
            return str(exc.sqlstate)
    raise AssertionError(f"not refused: {query} {params}")


def test_onboarding_twice_answers_the_same_company_and_profile(fresh_db: Database) -> None:
    uid = new_user(fresh_db, "founder@example.test")
    first = onboard(fresh_db, user_id=uid, company_name=" Acme Sales ", display_name="Riley")
    assert first["created"] is True
    assert first["company"]["name"] == "Acme Sales"
    assert first["profile"]["id"] == str(uid)
    assert first["profile"]["company_id"] == first["company"]["id"]
    assert (first["profile"]["role"], first["profile"]["display_name"]) == ("admin", "Riley")
    assert (
        scalar(
            fresh_db,
            "select count(*) from public.audit_log where action = 'tenancy.onboard'"
            " and entity_id = %s",
            (first["company"]["id"],),
        )
        == 1
    )
    with unchanged(fresh_db):
        again = onboard(fresh_db, user_id=uid, company_name="Acme Sales", display_name="Other")
    assert again["created"] is False
    assert again["company"] == first["company"]
    assert again["profile"] == first["profile"]


def test_display_name_defaults_to_the_local_part_of_the_email(fresh_db: Database) -> None:
    uid = new_user(fresh_db, "dana.doe@example.test")
    made = onboard(fresh_db, user_id=uid, company_name="Dana Co", role="trainee", audio=30)
    assert made["profile"]["display_name"] == "dana.doe"
    assert made["profile"]["role"] == "trainee"
    assert made["company"]["audio_retention_days"] == 30


def test_a_failure_after_the_company_insert_leaves_no_company(fresh_db: Database) -> None:
    uid = new_user(fresh_db, "late@example.test")
    with owner(fresh_db) as conn:
        conn.execute(
            "create function public.test_fail_profile() returns trigger language plpgsql"
            " as $$ begin raise exception 'forced failure' using errcode = 'XX000'; end $$"
        )
        conn.execute(
            "create trigger test_fail before insert on public.profiles for each row"
            " execute function public.test_fail_profile()"
        )
    companies = scalar(fresh_db, "select count(*) from public.companies")
    state = refused(
        fresh_db,
        SERVICE,
        ONBOARD,
        {
            "user_id": uid,
            "company_name": "Half Co",
            "role": "admin",
            "display_name": None,
            "audio": None,
        },
    )
    assert state == "XX000"
    assert scalar(fresh_db, "select count(*) from public.companies") == companies
    assert scalar(fresh_db, "select count(*) from public.companies where name = 'Half Co'") == 0


BAD_ARGUMENTS = [
    ({"user_id": None}, "22004"),
    ({"company_name": None}, "22004"),
    ({"role": None}, "22004"),
    ({"company_name": ""}, "22023"),
    ({"company_name": "   "}, "22023"),
    ({"company_name": "x" * 201}, "22023"),
    ({"display_name": "y" * 201}, "22023"),
    ({"audio": 0}, "23514"),
    ({"audio": -5}, "23514"),
    ({"audio": 36_501}, "23514"),
    ({"role": "owner"}, "22P02"),
    ({"user_id": "00000000-0000-0000-0000-000000000001"}, "P0002"),
]


@pytest.mark.parametrize(("change", "sqlstate"), BAD_ARGUMENTS, ids=lambda v: repr(v)[:40])
def test_bad_arguments_are_refused_without_a_trace(
    shared_world_db: WorldDb, change: dict[str, Any], sqlstate: str
) -> None:
    db, world = shared_world_db
    params = {
        "user_id": world.spare_user,
        "company_name": "Bad Args Co",
        "role": "admin",
        "display_name": None,
        "audio": None,
        **change,
    }
    assert refused(db, SERVICE, ONBOARD, params) == sqlstate


@pytest.mark.parametrize(
    ("company_name", "role"),
    [("Company A", "manager"), ("Company B", "trainee"), ("Elsewhere", "trainee")],
)
def test_a_person_with_another_profile_is_a_conflict(
    shared_world_db: WorldDb, company_name: str, role: str
) -> None:
    """A1 is a trainee of Company A: any other company or role is 23505."""
    db, world = shared_world_db
    params = {
        "user_id": world.person("A1").id,
        "company_name": company_name,
        "role": role,
        "display_name": None,
        "audio": None,
    }
    assert refused(db, SERVICE, ONBOARD, params) == "23505"


def test_an_existing_member_onboarded_as_they_are_is_answered(shared_world_db: WorldDb) -> None:
    db, world = shared_world_db
    a1 = world.person("A1")
    with unchanged(db):
        answer = onboard(db, user_id=a1.id, company_name="Company A", role="trainee")
    assert answer["created"] is False
    assert answer["profile"]["id"] == str(a1.id)
    assert answer["company"]["id"] == str(world.companies["A"])


CALLERS = ["anon", "A1", "AA", "spare"]


def caller(world: World, key: str) -> Identity:
    if key == "anon":
        return Identity.anon()
    if key == "spare":
        return Identity.user(world.spare_user)
    return world.identity(key)


@pytest.mark.parametrize("who", CALLERS)
@pytest.mark.parametrize(
    "query",
    [ONBOARD, "select public.auth_user_id(%(email)s)"],
    ids=["onboard_member", "auth_user_id"],
)
def test_only_the_service_role_may_call(shared_world_db: WorldDb, who: str, query: str) -> None:
    db, world = shared_world_db
    params = {
        "user_id": world.spare_user,
        "company_name": "Stranger Co",
        "role": "admin",
        "display_name": None,
        "audio": None,
        "email": "spare@example.test",
    }
    assert refused(db, caller(world, who), query, params) == "42501"


@pytest.mark.parametrize(
    ("email", "found"),
    [
        ("spare@example.test", True),
        ("  Spare@Example.TEST ", True),
        ("nobody@example.test", False),
        ("spare@example.tes", False),
    ],
)
def test_auth_user_id_finds_a_person_by_address(
    shared_world_db: WorldDb, email: str, found: bool
) -> None:
    db, world = shared_world_db
    answer = run(db, SERVICE, "select public.auth_user_id(%s) as id", (email,)).rows[0]["id"]
    assert answer == (world.spare_user if found else None)


def test_auth_user_id_refuses_null(shared_world_db: WorldDb) -> None:
    db, _ = shared_world_db
    assert refused(db, SERVICE, "select public.auth_user_id(null)", None) == "22004"
