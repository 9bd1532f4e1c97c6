"""TenantRepository: companies, auth users and profiles (tenant provisioning).

Creating companies and users needs the service role; an admin of a company may add
profiles to it and change roles there — the database decides (RLS), not this class.
"""

from __future__ import annotations

import builtins
import uuid
from typing import Any

from voicesessions._arguments import checked_arguments
from voicesessions._query import Order, eq
from voicesessions._validation import as_uuid, parse_model, validate_mapping
from voicesessions._values import check_text
from voicesessions.errors import (
    ConflictError,
    InvalidInputError,
    NotFoundError,
    PermissionDeniedError,
    brief,
)
from voicesessions.models import Company, Profile, ProfileRole, RetentionPolicy

from .resource import Resource

#: Longest display name and company name the schema accepts.
MAX_NAME_LENGTH = 200


@checked_arguments
class AsyncTenantRepository(Resource):
    """Companies, users and their profiles."""

    async def create_company(
        self, name: str, *, retention: RetentionPolicy | dict[str, Any] | None = None
    ) -> Company:
        """A new company (tenant), optionally with retention days per data category."""
        clean = _name(name, "name")
        if retention is not None:
            retention = validate_mapping(RetentionPolicy, retention, "retention")
        row: dict[str, Any] = {"id": uuid.uuid4(), "name": clean}
        if retention is not None:
            row.update(retention.to_columns())
        inserted = await self._call(
            lambda: self._backend.insert(
                "companies", [row], on_conflict=("id",), ignore_duplicates=True
            ),
            idempotent=True,
        )
        if inserted:
            return parse_model(Company, inserted[0])
        return await self.get_company(row["id"])

    async def get_company(self, company_id: uuid.UUID | str) -> Company:
        """The company, or NotFoundError when it does not exist or is not visible."""
        cid = as_uuid(company_id, "company_id")
        rows = await self._call(
            lambda: self._backend.select("companies", filters=(eq("id", cid),), limit=1),
            idempotent=True,
        )
        if not rows:
            raise NotFoundError(f"company {cid} not found", code="PGRST116")
        return parse_model(Company, rows[0])

    async def create_user(
        self,
        email: str,
        *,
        password: str | None = None,
        user_id: uuid.UUID | str | None = None,
    ) -> uuid.UUID:
        """A new auth user with a confirmed email; returns its id (the auth uid).

        Through the Supabase Auth admin API on Supabase, an ``auth.users`` row on plain
        PostgreSQL. Not retried: a second attempt could create a second account.
        """
        address = email.strip() if isinstance(email, str) else ""
        if "@" not in address or len(address) > 255 or any(c.isspace() for c in address):
            raise InvalidInputError(f"not an email address: {brief(email)}")
        check_text(address, "email")
        if password is not None:
            check_text(password, "password")
        if password is not None and len(password) < 6:
            raise InvalidInputError("password must have at least 6 characters")
        uid = None if user_id is None else as_uuid(user_id, "user_id")
        return await self._call(
            lambda: self._backend.create_auth_user(address, password=password, user_id=uid),
            idempotent=False,
        )

    async def create_profile(
        self,
        auth_uid: uuid.UUID | str,
        company_id: uuid.UUID | str,
        *,
        role: ProfileRole | str = ProfileRole.TRAINEE,
        display_name: str | None = None,
    ) -> Profile:
        """The profile of auth user ``auth_uid`` in ``company_id``, with ``role``."""
        uid = as_uuid(auth_uid, "auth_uid")
        row = {
            "id": uid,
            "company_id": as_uuid(company_id, "company_id"),
            "role": _role(role).value,
            "display_name": _name(display_name, "display_name")
            if display_name is not None
            else f"user-{str(uid)[:8]}",
        }
        inserted = await self._call(
            lambda: self._backend.insert(
                "profiles", [row], on_conflict=("id",), ignore_duplicates=True
            ),
            idempotent=True,
        )
        if inserted:
            return parse_model(Profile, inserted[0])
        existing = await self.get_profile(uid)
        if existing.company_id != row["company_id"] or existing.role.value != row["role"]:
            raise ConflictError(
                f"user {uid} already has a profile in company {existing.company_id}",
                code="23505",
            )
        return existing

    async def get_profile(self, profile_id: uuid.UUID | str) -> Profile:
        """The profile, or NotFoundError when it does not exist or is not visible."""
        pid = as_uuid(profile_id, "profile_id")
        rows = await self._call(
            lambda: self._backend.select("profiles", filters=(eq("id", pid),), limit=1),
            idempotent=True,
        )
        if not rows:
            raise NotFoundError(f"profile {pid} not found", code="PGRST116")
        return parse_model(Profile, rows[0])

    async def list_profiles(
        self, company_id: uuid.UUID | str, *, role: ProfileRole | str | None = None
    ) -> builtins.list[Profile]:
        """The visible profiles of a company, by display name."""
        filters = [eq("company_id", as_uuid(company_id, "company_id"))]
        if role is not None:
            filters.append(eq("role", _role(role).value))
        rows = await self._call(
            lambda: self._backend.select(
                "profiles", filters=filters, order=(Order("display_name"), Order("id"))
            ),
            idempotent=True,
        )
        return [parse_model(Profile, r) for r in rows]

    async def set_role(self, profile_id: uuid.UUID | str, role: ProfileRole | str) -> Profile:
        """Change a profile's role. Nobody changes their own role; only admins of the company
        (or the service role) change others'."""
        pid = as_uuid(profile_id, "profile_id")
        new_role = _role(role).value
        rows = await self._call(
            lambda: self._backend.update("profiles", {"role": new_role}, filters=(eq("id", pid),)),
            idempotent=True,
        )
        if rows:
            return parse_model(Profile, rows[0])
        await self.get_profile(pid)
        raise PermissionDeniedError("only an admin of the company can change roles", code="42501")


def _role(value: ProfileRole | str) -> ProfileRole:
    try:
        return ProfileRole(value)
    except ValueError as exc:
        allowed = ", ".join(r.value for r in ProfileRole)
        raise InvalidInputError(f"role must be one of {allowed}, not {brief(value)}") from exc


def _name(value: Any, field: str) -> str:
    if not isinstance(value, str) or not value.strip():
        raise InvalidInputError(f"{field} must be a non-empty string")
    if len(value.strip()) > MAX_NAME_LENGTH:
        raise InvalidInputError(f"{field} must be at most {MAX_NAME_LENGTH} characters")
    return str(check_text(value.strip(), field))
