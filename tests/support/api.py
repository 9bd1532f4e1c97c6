"""Run SQL exactly the way PostgREST runs a request.

:class:`Api` logs in as ``authenticator`` and runs each query in its own transaction after
setting PostgREST's request context (voicesessions._request), so RLS, grants and
``auth.uid()`` behave as they do behind Supabase.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import psycopg
from psycopg.rows import dict_row

from voicesessions._identity import Identity
from voicesessions._request import request_context

__all__ = ["Api", "Identity", "Result"]


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

    def copy(
        self,
        identity: Identity,
        table: str,
        columns: Sequence[str],
        rows: Sequence[Sequence[Any]],
        *,
        commit: bool = False,
    ) -> None:
        """``COPY table (columns) FROM STDIN`` of ``rows`` as ``identity``, in one
        request-like transaction (rolled back unless ``commit``); raises as :meth:`run`."""
        conn = self._conn
        try:
            with conn.cursor() as cur:
                cur.execute(*request_context(identity.role, identity.claims))
                statement = f"copy {table} ({', '.join(columns)}) from stdin"
                with cur.copy(statement) as copy:  # type: ignore[arg-type]
                    for row in rows:
                        copy.write_row(row)
            if commit:
                conn.commit()
            else:
                conn.rollback()
        except BaseException:
            conn.rollback()
            raise
