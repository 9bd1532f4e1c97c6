"""TenantRepository: companies, auth users, profiles and invitations (tenant provisioning).

Creating companies, users and profiles needs the service role. :meth:`onboard` sets up a
company and its first person in one call that can be run again: the person is found by
email (created when missing), and the company and their profile are made by one database
function in one transaction, or found as an earlier identical call made them. People join a
company by invitation: an admin of the company (or the service role) invites an email
address or an existing user with a role, and the invitee accepts with the token, which is
their consent.
Admins change roles in their company; a person changes only their own display name. The
database decides (RLS, triggers, functions), not this class.
"""

from __future__ import annotations

import builtins
import uuid
from datetime import timedelta
from typing import Any

from voicesessions._arguments import checked_arguments
from voicesessions._query import Order, eq
from voicesessions._validation import as_uuid, parse_model, validate_mapping
from voicesessions._values import check_text, stripped
from voicesessions.errors import (
    ConflictError,
    InvalidInputError,
    NotFoundError,
    PermissionDeniedError,
    brief,
)
from voicesessions.models import (
    Company,
    CreatedInvitation,
    Invitation,
    InvitationStatus,
    Onboarding,
    Profile,
    ProfileRole,
    RetentionPolicy,
)

from .resource import Resource

#: Longest display name and company name the schema accepts.
MAX_NAME_LENGTH = 200
#: How long an invitation stays valid unless told otherwise, and the bounds the database
#: accepts.
DEFAULT_INVITATION_TTL = timedelta(days=7)
MIN_INVITATION_TTL = timedelta(seconds=60)
MAX_INVITATION_TTL = timedelta(days=30)


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
        address = _email(email)
        _password(password)
        uid = None if user_id is None else as_uuid(user_id, "user_id")
        return await self._call(
            lambda: self._backend.create_auth_user(address, password=password, user_id=uid),
            idempotent=False,
        )

    async def find_user(self, email: str) -> uuid.UUID | None:
        """The id of the auth user with this email address (compared trimmed and in lower
        case, as Supabase Auth stores addresses), or None. Service role only
        (PermissionDeniedError otherwise)."""
        address = _email(email)
        found = await self._call(
            lambda: self._backend.rpc("auth_user_id", {"email": address}), idempotent=True
        )
        return None if found is None else as_uuid(found, "auth_user_id")

    async def ensure_user(self, email: str, *, password: str | None = None) -> uuid.UUID:
        """The id of the auth user with this email address, created (confirmed, with
        ``password`` if given) when there is none: safe to run again. An existing user is
        returned as is (their password is not changed). Service role only."""
        address = _email(email)
        _password(password)
        found = await self.find_user(address)
        if found is not None:
            return found
        try:
            return await self.create_user(address, password=password)
        except ConflictError:
            # Created by a concurrent call between the look-up and the insert.
            found = await self.find_user(address)
            if found is None:
                raise
            return found

    async def onboard(
        self,
        company_name: str,
        email: str,
        *,
        role: ProfileRole | str = ProfileRole.ADMIN,
        display_name: str | None = None,
        retention: RetentionPolicy | dict[str, Any] | None = None,
        password: str | None = None,
    ) -> Onboarding:
        """A new company and its first person, with ``role`` (admin by default) and
        ``display_name`` (default: the local part of the email); run it again and you get
        the same ones back (``created`` False, nothing written).

        The person is the key: the auth user is found by ``email``, or created (as
        :meth:`ensure_user`); then one database function (``onboard_member``) creates the
        company (with ``retention``) and the profile in one transaction, or returns them when
        that person's profile is already in a company of that name with that role. A person
        whose profile is anywhere else is ConflictError, and nothing is written. Every
        argument is checked before any I/O; if the database refuses the company or the
        profile, neither exists, and only a newly made auth user (without a profile) stays,
        to be found by the next call. Service role only (PermissionDeniedError otherwise).
        """
        params: dict[str, Any] = {
            "user_id": None,
            "company_name": _name(company_name, "company_name"),
            "role": _role(role).value,
            "display_name": None if display_name is None else _name(display_name, "display_name"),
        }
        policy = (
            RetentionPolicy()
            if retention is None
            else validate_mapping(RetentionPolicy, retention, "retention")
        )
        params.update(policy.to_columns())
        address = _email(email)
        _password(password)
        params["user_id"] = await self.ensure_user(address, password=password)
        raw = await self._call(lambda: self._backend.rpc("onboard_member", params), idempotent=True)
        return parse_model(Onboarding, raw)

    async def create_profile(
        self,
        auth_uid: uuid.UUID | str,
        company_id: uuid.UUID | str,
        *,
        role: ProfileRole | str = ProfileRole.TRAINEE,
        display_name: str | None = None,
    ) -> Profile:
        """The profile of auth user ``auth_uid`` in ``company_id``, with ``role``.

        Service role only (provisioning): end users join a company by accepting an
        invitation (:meth:`invite`, :meth:`accept_invitation`); for them this is
        PermissionDeniedError."""
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

    async def invite(
        self,
        company_id: uuid.UUID | str,
        email_or_user: str | uuid.UUID,
        *,
        role: ProfileRole | str = ProfileRole.TRAINEE,
        expires_in: timedelta | int = DEFAULT_INVITATION_TTL,
    ) -> CreatedInvitation:
        """Invite a person to join ``company_id`` with ``role``: an email address (whoever
        signs in with it may accept) or an existing user's id (that user may accept).

        Returns the invitation with its ``token``, shown only here (the database keeps only
        its SHA-256): hand it to the invitee. ``expires_in`` (a timedelta or seconds) is from
        1 minute to 30 days, 7 days by default. Admins of the company and the service role
        only (PermissionDeniedError otherwise, whether or not the company exists). Not
        retried: each call makes a new token.
        """
        cid = as_uuid(company_id, "company_id")
        # Every parameter is sent (none left to a database default), exactly one invitee.
        params: dict[str, Any] = {
            "company_id": cid,
            "role": _role(role).value,
            "email": None,
            "invitee_id": None,
            "expires_in_seconds": _ttl_seconds(expires_in),
        }
        if isinstance(email_or_user, str) and "@" in email_or_user:
            address = email_or_user.strip().lower()
            if len(address) > 255 or any(c.isspace() for c in address) or address.count("@") != 1:
                raise InvalidInputError(f"not an email address: {email_or_user!r}")
            params["email"] = address
        else:
            params["invitee_id"] = as_uuid(email_or_user, "email_or_user")
        raw = await self._call(
            lambda: self._backend.rpc("create_invitation", params), idempotent=False
        )
        return parse_model(CreatedInvitation, raw)

    async def accept_invitation(self, token: str, *, display_name: str | None = None) -> Profile:
        """Accept an invitation as the signed-in invitee: join its company with its role,
        under ``display_name`` (default: the local part of your email). Returns your new
        profile; accepting the same token again returns it too.

        NotFoundError for a token that is unknown, expired, revoked or addressed to someone
        else (one answer for all); ConflictError if you already belong to a company;
        PermissionDeniedError for the service role (it provisions with create_profile).
        """
        if not isinstance(token, str) or not token.strip() or len(token) > 200:
            raise InvalidInputError("token must be the invitation's token (a non-empty string)")
        params: dict[str, Any] = {"token": token.strip(), "display_name": None}
        if display_name is not None:
            params["display_name"] = _name(display_name, "display_name")
        raw = await self._call(
            lambda: self._backend.rpc("accept_invitation", params), idempotent=True
        )
        return parse_model(Profile, raw)

    async def list_invitations(
        self,
        company_id: uuid.UUID | str | None = None,
        *,
        status: InvitationStatus | str | None = None,
    ) -> builtins.list[Invitation]:
        """Invitations the caller may see, newest first: an admin's company's (or the given
        company's), for the service role every company's (or the given one's), for anyone
        else the invitations addressed to them. ``status`` keeps one status (``pending``,
        ``accepted``, ``revoked``, ``expired``). Tokens are never returned."""
        wanted = None
        if status is not None:
            try:
                wanted = InvitationStatus(status)
            except ValueError:
                allowed = ", ".join(s.value for s in InvitationStatus)
                raise InvalidInputError(f"status must be one of {allowed}") from None
        filters = []
        if company_id is not None:
            filters.append(eq("company_id", as_uuid(company_id, "company_id")))
        rows = await self._call(
            lambda: self._backend.select(
                "company_invitations",
                columns=_INVITATION_COLUMNS,
                filters=filters,
                order=(Order("created_at", descending=True), Order("id")),
            ),
            idempotent=True,
        )
        found = [parse_model(Invitation, r) for r in rows]
        return [i for i in found if wanted is None or i.status is wanted]

    async def revoke_invitation(self, invitation_id: uuid.UUID | str) -> bool:
        """Revoke an open invitation (its token stops working). True when revoked now, False
        when it was already accepted or revoked. Admins of its company and the service role;
        NotFoundError for anyone else and for a missing invitation (one answer)."""
        iid = as_uuid(invitation_id, "invitation_id")
        raw = await self._call(
            lambda: self._backend.rpc("revoke_invitation", {"invitation_id": iid}),
            idempotent=True,
        )
        return bool(raw)


_INVITATION_COLUMNS = (
    "id",
    "company_id",
    "role",
    "email",
    "invitee_id",
    "invited_by",
    "created_at",
    "expires_at",
    "accepted_at",
    "accepted_by",
    "revoked_at",
)


def _ttl_seconds(value: timedelta | int) -> int:
    if isinstance(value, bool) or not isinstance(value, (timedelta, int)):
        raise InvalidInputError("expires_in must be a timedelta or a number of seconds")
    seconds = value if isinstance(value, int) else value.total_seconds()
    low, high = MIN_INVITATION_TTL.total_seconds(), MAX_INVITATION_TTL.total_seconds()
    if not low <= seconds <= high:
        raise InvalidInputError(
            f"expires_in must be from {int(low)} seconds to {int(high)} seconds (30 days)"
        )
    return int(seconds)


def _role(value: ProfileRole | str) -> ProfileRole:
    try:
        return ProfileRole(value)
    except ValueError as exc:
        allowed = ", ".join(r.value for r in ProfileRole)
        raise InvalidInputError(f"role must be one of {allowed}, not {brief(value)}") from exc


def _email(value: Any) -> str:
    address = value.strip() if isinstance(value, str) else ""
    if "@" not in address or len(address) > 255 or any(c.isspace() for c in address):
        raise InvalidInputError(f"not an email address: {brief(value)}")
    check_text(address, "email")
    return address


def _password(value: str | None) -> None:
    if value is None:
        return
    check_text(value, "password")
    if len(value) < 6:
        raise InvalidInputError("password must have at least 6 characters")


def _name(value: Any, field: str) -> str:
    name = stripped(check_text(value, field)) if isinstance(value, str) else ""
    if not name:
        raise InvalidInputError(f"{field} must be a non-empty string")
    if len(name) > MAX_NAME_LENGTH:
        raise InvalidInputError(f"{field} must be at most {MAX_NAME_LENGTH} characters")
    return name
