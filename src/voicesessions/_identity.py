"""Who a backend acts as: an API role and, for a user, their auth uid and JWT claims."""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

Role = Literal["anon", "authenticated", "service_role"]


@dataclass(frozen=True)
class Identity:
    """The identity a call runs as. ``claims`` are the JWT claims PostgREST would verify."""

    role: Role
    user_id: uuid.UUID | None = None
    claims: Mapping[str, Any] = field(default_factory=dict)

    @classmethod
    def service_role(cls) -> Identity:
        return cls("service_role", None, {"role": "service_role"})

    @classmethod
    def anon(cls) -> Identity:
        return cls("anon", None, {"role": "anon"})

    @classmethod
    def user(cls, user_id: uuid.UUID | str, **extra_claims: Any) -> Identity:
        uid = uuid.UUID(str(user_id))
        claims = {"aud": "authenticated", **extra_claims, "sub": str(uid), "role": "authenticated"}
        return cls("authenticated", uid, claims)
