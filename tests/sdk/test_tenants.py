"""TenantRepository behaviour: provisioning as service_role, role changes as the database
allows them."""

from __future__ import annotations

import uuid

import pytest

from tests.sdk.conftest import Sdk, sdk
from voicesessions import (
    ConflictError,
    InvalidInputError,
    NotFoundError,
    PermissionDeniedError,
    ProfileRole,
    RetentionPolicy,
)


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


async def test_admin_adds_profiles_to_their_company_only(client: Sdk) -> None:
    world = client.world
    uid = await sdk(client.vs.tenants.create_user("new.hire@example.test"))
    admin = client.user("AA")
    with pytest.raises(PermissionDeniedError):
        await sdk(admin.tenants.create_profile(uid, world.companies["B"]))
    profile = await sdk(admin.tenants.create_profile(uid, world.companies["A"]))
    assert profile.role is ProfileRole.TRAINEE
    assert profile.display_name.startswith("user-")


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
