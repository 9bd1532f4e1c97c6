"""TenantRepository behaviour: provisioning as service_role, role changes as the database
allows them."""

from __future__ import annotations

import asyncio
import uuid
from datetime import timedelta
from typing import Any

import psycopg
import pytest

from tests.conftest import Database
from tests.sdk.conftest import Sdk, sdk
from tests.support.db import scalar, unchanged
from tests.support.world import World
from voicesessions import (
    AsyncVoiceSessions,
    ConflictError,
    CreatedInvitation,
    InvalidInputError,
    InvitationStatus,
    NotFoundError,
    Onboarding,
    PermissionDeniedError,
    ProfileRole,
    RetentionPolicy,
)

# Also through PgBouncer in transaction mode (see tests/sdk/conftest.py).
pytestmark = pytest.mark.through_pooler


async def test_provision_a_company_with_users(client: Sdk) -> None:
    tenants = client.vs.tenants
    company = await sdk(tenants.create_company("Globex", retention=RetentionPolicy(audio_days=30)))
    assert company.name == "Globex"
    assert company.retention == RetentionPolicy(audio_days=30)
    uid = await sdk(tenants.create_user("rep@globex.test"))
    assert isinstance(uid, uuid.UUID)
    profile = await sdk(
        tenants.create_profile(uid, company.id, role="manager", display_name="Rita Rep")
    )
    assert (profile.id, profile.company_id, profile.role) == (uid, company.id, ProfileRole.MANAGER)
    assert await sdk(tenants.get_profile(uid)) == profile
    assert [p.id for p in await sdk(tenants.list_profiles(company.id))] == [uid]
    # Creating the same profile again is a no-op; a different one is a conflict.
    assert (
        await sdk(tenants.create_profile(uid, company.id, role="manager", display_name="Rita Rep"))
        == profile
    )
    with pytest.raises(ConflictError):
        await sdk(tenants.create_profile(uid, client.world.companies["A"]))
    # The new user can act right away, in their own company only.
    session = await sdk(client.vs.as_user(uid).sessions.create(uid, "First call"))
    assert session.company_id == company.id


async def test_retention_given_as_a_dict_is_validated(client: Sdk) -> None:
    company = await sdk(
        client.vs.tenants.create_company("Initech", retention={"session_days": 365})
    )
    assert company.session_retention_days == 365
    with pytest.raises(InvalidInputError):
        await sdk(client.vs.tenants.create_company("Bad", retention={"audio_days": 0}))
    with pytest.raises(InvalidInputError):
        await sdk(client.vs.tenants.create_company("Bad", retention={"video_days": 3}))


async def test_onboarding_twice_gives_the_same_company_and_person(client: Sdk) -> None:
    tenants = client.vs.tenants
    first = await sdk(tenants.onboard("Acme Sales", "Rep@Acme.example", display_name="Riley Rep"))
    assert isinstance(first, Onboarding)
    assert first.created
    assert (first.company.name, first.profile.display_name) == ("Acme Sales", "Riley Rep")
    assert first.profile.role is ProfileRole.ADMIN
    assert first.user_id == first.profile.id == await sdk(tenants.find_user("rep@acme.example"))
    with unchanged(client.db):
        again = await sdk(tenants.onboard("Acme Sales", "rep@acme.example"))
    assert not again.created
    assert (again.company, again.profile) == (first.company, first.profile)
    session = await sdk(client.vs.as_user(again.user_id).sessions.create(again.user_id, "Call"))
    assert session.company_id == first.company.id


async def test_onboarding_someone_already_elsewhere_writes_nothing(client: Sdk) -> None:
    """A1 is a trainee of Company A (email a1@example.test)."""
    with unchanged(client.db):
        with pytest.raises(ConflictError) as raised:
            await sdk(client.vs.tenants.onboard("Another Co", "a1@example.test", role="trainee"))
        with pytest.raises(ConflictError):
            await sdk(client.vs.tenants.onboard("Company A", "a1@example.test", role="admin"))
    assert raised.value.code == "23505"
    assert "already belongs to company" in raised.value.message


async def test_onboarding_with_retention_and_a_password(client: Sdk) -> None:
    made = await sdk(
        client.vs.tenants.onboard(
            "Keepers",
            "keeper@example.test",
            role="manager",
            retention={"audio_days": 30},
            password="s3cret-pass",
        )
    )
    assert made.company.retention == RetentionPolicy(audio_days=30)
    assert made.profile.role is ProfileRole.MANAGER
    assert made.profile.display_name == "keeper"
    assert scalar(
        client.db,
        "select encrypted_password like '$2%%' from auth.users where id = %s",
        (made.user_id,),
    )


ONBOARD_BAD_INPUT: list[tuple[tuple[Any, ...], dict[str, Any]]] = [
    (("", "x@example.test"), {}),
    (("  ", "x@example.test"), {}),
    (("x" * 201, "x@example.test"), {}),
    (("Co", "not-an-email"), {}),
    (("Co", "two words@example.test"), {}),
    (("Co", "x@example.test"), {"role": "owner"}),
    (("Co", "x@example.test"), {"display_name": ""}),
    (("Co", "x@example.test"), {"retention": {"audio_days": 0}}),
    (("Co", "x@example.test"), {"retention": {"video_days": 3}}),
    (("Co", "x@example.test"), {"password": "short"}),
    ((None, "x@example.test"), {}),
    (("Co", 42), {}),
]


@pytest.mark.parametrize(("args", "kwargs"), ONBOARD_BAD_INPUT, ids=lambda v: repr(v)[:40])
async def test_onboarding_input_is_checked_before_any_io(
    client: Sdk, args: tuple[Any, ...], kwargs: dict[str, Any]
) -> None:
    with unchanged(client.db), pytest.raises(InvalidInputError):
        await sdk(client.vs.tenants.onboard(*args, **kwargs))


async def test_a_refused_onboarding_leaves_no_company(client: Sdk) -> None:
    """The database refuses after the company row is written (a trigger on profiles here):
    no company stays, and the next call, once the cause is gone, onboards the same person."""
    companies = scalar(client.db, "select count(*) from public.companies")
    with psycopg.connect(client.db.dsn, autocommit=True) as conn:
        conn.execute(
            "create function public.test_refuse_profile() returns trigger language plpgsql"
            " as $$ begin raise exception 'refused' using errcode = '23514'; end $$;"
            " create trigger test_refuse before insert on public.profiles for each row"
            " execute function public.test_refuse_profile()"
        )
    with pytest.raises(InvalidInputError):
        await sdk(client.vs.tenants.onboard("Half Co", "half@example.test"))
    assert scalar(client.db, "select count(*) from public.companies") == companies
    uid = await sdk(client.vs.tenants.find_user("half@example.test"))
    with psycopg.connect(client.db.dsn, autocommit=True) as conn:
        conn.execute("drop trigger test_refuse on public.profiles")
    made = await sdk(client.vs.tenants.onboard("Half Co", "half@example.test"))
    assert made.created
    assert made.user_id == uid
    assert scalar(client.db, "select count(*) from public.companies") == companies + 1


async def test_ensure_user_finds_or_creates(client: Sdk) -> None:
    tenants = client.vs.tenants
    assert await sdk(tenants.find_user("fresh@example.test")) is None
    made = await sdk(tenants.ensure_user("Fresh@Example.test"))
    assert await sdk(tenants.ensure_user(" fresh@example.test ")) == made
    assert await sdk(tenants.find_user("FRESH@example.test")) == made
    assert await sdk(tenants.ensure_user("spare@example.test")) == client.world.spare_user


async def test_concurrent_onboardings_of_one_person_make_one_company(
    world_db: tuple[Database, World],
) -> None:
    db, _ = world_db
    async with AsyncVoiceSessions.from_postgres(db.dsn) as vs:
        made = await asyncio.gather(
            *(vs.tenants.onboard("Race Co", "race@example.test") for _ in range(6))
        )
    assert sum(m.created for m in made) == 1
    assert len({(m.company.id, m.user_id) for m in made}) == 1
    assert scalar(db, "select count(*) from public.companies where name = 'Race Co'") == 1
    assert scalar(db, "select count(*) from auth.users where email = 'race@example.test'") == 1


@pytest.mark.parametrize("who", ["AA", "A1"])
async def test_end_users_cannot_onboard_nor_look_up_users(client: Sdk, who: str) -> None:
    with unchanged(client.db):
        with pytest.raises(PermissionDeniedError):
            await sdk(client.user(who).tenants.onboard("Rogue Inc", "rogue@example.test"))
        with pytest.raises(PermissionDeniedError):
            await sdk(client.user(who).tenants.find_user("a1@example.test"))


@pytest.mark.parametrize("email", ["", "no-at-sign", "two words@x.test"])
async def test_bad_emails_are_rejected(client: Sdk, email: str) -> None:
    with pytest.raises(InvalidInputError):
        await sdk(client.vs.tenants.create_user(email))


async def test_duplicate_user_is_a_conflict(client: Sdk) -> None:
    await sdk(client.vs.tenants.create_user("twice@example.test"))
    with pytest.raises(ConflictError):
        await sdk(client.vs.tenants.create_user("twice@example.test", user_id=uuid.uuid4()))


async def test_users_cannot_provision(client: Sdk) -> None:
    with pytest.raises(PermissionDeniedError):
        await sdk(client.user("AA").tenants.create_company("Rogue Inc"))
    with pytest.raises(PermissionDeniedError):
        await sdk(client.user("AA").tenants.create_user("rogue@example.test"))


@pytest.mark.parametrize("who", ["AA", "AB", "MA", "A1"])
async def test_end_users_never_create_profiles(client: Sdk, who: str) -> None:
    world = client.world
    uid = await sdk(client.vs.tenants.create_user("new.hire@example.test"))
    company = world.companies[world.person(who).company]
    with pytest.raises(PermissionDeniedError):
        await sdk(client.user(who).tenants.create_profile(uid, company))


@pytest.mark.parametrize("by", ["email", "user"])
async def test_an_invited_person_joins_with_the_invitations_role(client: Sdk, by: str) -> None:
    world = client.world
    uid = await sdk(client.vs.tenants.create_user("New.Hire@example.test"))
    admin = client.user("AA").tenants
    target: Any = "New.Hire@Example.test" if by == "email" else uid
    made = await sdk(
        admin.invite(world.companies["A"], target, role="manager", expires_in=timedelta(days=2))
    )
    assert isinstance(made, CreatedInvitation)
    assert made.status is InvitationStatus.PENDING
    assert made.token not in repr(made)
    assert (made.email, made.invitee_id) == (
        ("new.hire@example.test", None) if by == "email" else (None, uid)
    )
    assert next(i.id for i in await sdk(admin.list_invitations(status="pending"))) == made.id
    # The invitee sees it too (without a token); another company's admin does not.
    assert made.id in [i.id for i in await sdk(client.vs.as_user(uid).tenants.list_invitations())]
    assert made.id not in [i.id for i in await sdk(client.user("AB").tenants.list_invitations())]

    joined = await sdk(client.vs.as_user(uid).tenants.accept_invitation(made.token))
    assert (joined.id, joined.company_id, joined.role) == (uid, world.companies["A"], "manager")
    assert joined.display_name == "new.hire"
    again = await sdk(client.vs.as_user(uid).tenants.accept_invitation(made.token))
    assert again == joined
    listed = await sdk(admin.list_invitations(world.companies["A"], status="accepted"))
    assert [(i.id, i.accepted_by) for i in listed] == [(made.id, uid)]
    # They act in their new company at once.
    session = await sdk(client.vs.as_user(uid).sessions.create(uid, "First call"))
    assert session.company_id == world.companies["A"]


async def test_invitations_refused_and_revoked(client: Sdk) -> None:
    world = client.world
    uid = await sdk(client.vs.tenants.create_user("someone@example.test"))
    invitee = client.vs.as_user(uid).tenants
    with pytest.raises(PermissionDeniedError):  # not an admin of A
        await sdk(client.user("AB").tenants.invite(world.companies["A"], uid))
    with pytest.raises(PermissionDeniedError):
        await sdk(client.user("MA").tenants.invite(world.companies["A"], uid))
    made = await sdk(client.user("AA").tenants.invite(world.companies["A"], uid))
    with pytest.raises(NotFoundError):  # B's admin: the same answer as for no invitation
        await sdk(client.user("AB").tenants.revoke_invitation(made.id))
    with pytest.raises(NotFoundError):
        await sdk(client.user("AB").tenants.revoke_invitation(uuid.uuid4()))
    with pytest.raises(NotFoundError):  # a token for someone else
        await sdk(client.user("A1").tenants.accept_invitation(made.token))
    assert await sdk(client.user("AA").tenants.revoke_invitation(made.id)) is True
    assert await sdk(client.vs.tenants.revoke_invitation(made.id)) is False
    with pytest.raises(NotFoundError):
        await sdk(invitee.accept_invitation(made.token))
    with pytest.raises(NotFoundError):
        await sdk(invitee.accept_invitation("vsi_" + "0" * 64))
    with pytest.raises(PermissionDeniedError):  # the service role provisions directly
        await sdk(client.vs.tenants.accept_invitation(made.token))
    # Somebody who already belongs to a company cannot join another one.
    other = await sdk(client.user("AB").tenants.invite(world.companies["B"], world.person("A1").id))
    with pytest.raises(ConflictError):
        await sdk(client.user("A1").tenants.accept_invitation(other.token))


@pytest.mark.parametrize(
    ("args", "kwargs"),
    [
        (("not an email",), {}),
        (("a@b@c",), {}),
        ((uuid.uuid4(),), {"expires_in": 59}),
        ((uuid.uuid4(),), {"expires_in": timedelta(days=31)}),
        ((uuid.uuid4(),), {"expires_in": True}),
        ((uuid.uuid4(),), {"expires_in": "soon"}),
        ((uuid.uuid4(),), {"role": "overlord"}),
    ],
)
async def test_invitation_input_is_validated_before_any_io(
    client: Sdk, args: tuple[Any, ...], kwargs: dict[str, Any]
) -> None:
    with pytest.raises(InvalidInputError):
        await sdk(client.vs.tenants.invite(client.world.companies["A"], *args, **kwargs))


@pytest.mark.parametrize("token", ["", "   ", None, 42, "x" * 201])
async def test_bad_tokens_are_refused_before_any_io(client: Sdk, token: Any) -> None:
    with pytest.raises(InvalidInputError):
        await sdk(client.user("A1").tenants.accept_invitation(token))


async def test_role_changes_follow_the_database_rules(client: Sdk) -> None:
    world = client.world
    a2 = world.person("A2").id
    promoted = await sdk(client.user("AA").tenants.set_role(a2, ProfileRole.MANAGER))
    assert promoted.role is ProfileRole.MANAGER
    with pytest.raises(PermissionDeniedError):
        await sdk(client.user("AA").tenants.set_role(world.person("AA").id, "trainee"))
    with pytest.raises(PermissionDeniedError):
        await sdk(client.user("A1").tenants.set_role(world.person("A1").id, "admin"))
    with pytest.raises(NotFoundError):  # B's admin cannot even see A's people
        await sdk(client.user("AB").tenants.set_role(a2, "trainee"))
    demoted = await sdk(client.vs.tenants.set_role(a2, "trainee"))
    assert demoted.role is ProfileRole.TRAINEE
    with pytest.raises(InvalidInputError):
        await sdk(client.vs.tenants.set_role(a2, "overlord"))


async def test_visibility_of_companies_and_profiles(client: Sdk) -> None:
    world = client.world
    a_company = await sdk(client.user("A1").tenants.get_company(world.companies["A"]))
    assert a_company.id == world.companies["A"]
    with pytest.raises(NotFoundError):
        await sdk(client.user("A1").tenants.get_company(world.companies["B"]))
    managers_view = await sdk(client.user("MA").tenants.list_profiles(world.companies["A"]))
    assert {p.id for p in managers_view} == {
        p.id for p in world.people.values() if p.company == "A"
    }
    trainees_view = await sdk(client.user("A1").tenants.list_profiles(world.companies["A"]))
    assert [p.id for p in trainees_view] == [world.person("A1").id]
    only_trainees = await sdk(
        client.vs.tenants.list_profiles(world.companies["A"], role=ProfileRole.TRAINEE)
    )
    assert {p.id for p in only_trainees} == {world.person("A1").id, world.person("A2").id}
