"""Run SQL exactly the way PostgREST runs a request.

:class:`Api` logs in as ``authenticator`` and runs each query in its own transaction after
setting PostgREST's request context (voicesessions._request), so RLS, grants and
``auth.uid()`` behave as they do behind Supabase.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import psycopg
from psycopg.rows import dict_row

from voicesessions._request import request_context


@dataclass(frozen=True)
class Identity:
    """Who makes the request: a role plus the JWT claims PostgREST would have verified."""

    role: str
    sub: uuid.UUID | None = None
    claims: Mapping[str, Any] = field(default_factory=dict)

    @classmethod
    def anon(cls) -> Identity:
        return cls("anon", None, {"role": "anon", "iss": "supabase-demo"})

    @classmethod
    def service_role(cls) -> Identity:
        return cls("service_role", None, {"role": "service_role", "iss": "supabase-demo"})

    @classmethod
    def user(cls, user_id: uuid.UUID, email: str | None = None) -> Identity:
        claims: dict[str, Any] = {
            "sub": str(user_id),
            "role": "authenticated",
            "aud": "authenticated",
            "iss": "supabase-demo",
        }
        if email:
            claims["email"] = email
        return cls("authenticated", user_id, claims)

    def __str__(self) -> str:
        return self.role if self.sub is None else f"{self.role}:{self.sub}"


@dataclass
class Result:
    """Rows returned by the statement and the number of rows it affected."""

    rows: list[dict[str, Any]]
    rowcount: int


class Api:
    """A PostgREST-faithful executor over one ``authenticator`` connection.

    ``commit=False`` (the default) rolls the request's transaction back after reading the
    result, so a test can try a write without changing the database it shares.
    """

    def __init__(self, authenticator_dsn: str):
        self._conn = psycopg.connect(authenticator_dsn, row_factory=dict_row)

    def close(self) -> None:
        self._conn.close()

    def __enter__(self) -> Api:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def run(
        self,
        identity: Identity,
        query: str,
        params: Sequence[Any] | Mapping[str, Any] | None = None,
        *,
        method: str = "POST",
        path: str = "/rpc/test",
        commit: bool = False,
    ) -> Result:
        """Run ``query`` as ``identity`` in one request-like transaction.

        Raises the psycopg error (with its ``sqlstate``) when PostgreSQL refuses; the
        transaction is then rolled back, as PostgREST does.
        """
        conn = self._conn
        try:
            with conn.cursor() as cur:
                cur.execute(
                    *request_context(identity.role, identity.claims, method=method, path=path)
                )
                cur.execute(query, params)  # type: ignore[arg-type]
                rows = cur.fetchall() if cur.description else []
                result = Result(rows=rows, rowcount=cur.rowcount)
            if commit:
                conn.commit()
            else:
                conn.rollback()
            return result
        except BaseException:
            conn.rollback()
            raise
