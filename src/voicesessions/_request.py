"""The per-request context PostgREST sets, for running SQL *as* an API identity.

PostgREST logs in as ``authenticator`` and, inside each request's transaction, sets these
transaction-local settings before the main query: ``search_path``, ``role`` (the JWT's role
claim), ``request.jwt.claims`` (the whole claims object), ``request.method``,
``request.path`` and ``request.headers``. RLS policies and ``auth.uid()`` read them.
Everything that impersonates an API identity over a direct connection (the Postgres
backend, the test harness, the benchmarks) builds that context here, so they cannot drift.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

API_ROLES = frozenset({"anon", "authenticated", "service_role"})
DEFAULT_SEARCH_PATH = "public, extensions"

_CONTEXT_SQL = (
    "select set_config('search_path', %s, true),"
    " set_config('role', %s, true),"
    " set_config('request.jwt.claims', %s, true),"
    " set_config('request.method', %s, true),"
    " set_config('request.path', %s, true),"
    " set_config('request.headers', %s, true)"
)
_SETTING_SQL = ", set_config(%s, %s, true)"


def request_context(
    role: str,
    claims: Mapping[str, Any],
    *,
    method: str = "POST",
    path: str = "/",
    headers: Mapping[str, str] | None = None,
    search_path: str = DEFAULT_SEARCH_PATH,
    settings: Mapping[str, str] | None = None,
) -> tuple[str, tuple[str, ...]]:
    """The statement and parameters that set PostgREST's request context in a transaction.

    Execute it first in the transaction (it uses ``set_config(..., true)``, i.e. SET LOCAL).
    ``claims`` must carry the same ``role``; header names are lower-cased as PostgREST does.
    ``settings`` (name to value, e.g. ``{"statement_timeout": "30000"}``) are set in the
    same statement, transaction-local too.
    """
    if role not in API_ROLES:
        raise ValueError(f"role must be one of {sorted(API_ROLES)}, not {role!r}")
    if claims.get("role", role) != role:
        raise ValueError("the claims' role differs from the role being assumed")
    full_claims = {**claims, "role": role}
    lowered = {k.lower(): v for k, v in (headers or {}).items()}
    params = (
        search_path,
        role,
        json.dumps(full_claims, separators=(",", ":")),
        method.upper(),
        path,
        json.dumps(lowered, separators=(",", ":")),
    )
    if not settings:
        return _CONTEXT_SQL, params
    extra = [value for setting in settings.items() for value in setting]
    return _CONTEXT_SQL + _SETTING_SQL * len(settings), (*params, *extra)
