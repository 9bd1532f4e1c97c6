"""AnalyticsRepository (``vs.analytics``): dashboards computed by the database.

Each method is one call of a SECURITY INVOKER function (``public.company_metrics``,
``user_progress``, ``team_overview``, ``metrics_timeseries``), so RLS applies to every row
it reads (``company_metrics`` reads daily rollups the database keeps, through a private
function that checks the caller the same way); the functions also refuse, with
PermissionDeniedError, what the caller would only see as nothing: another company's
numbers, another trainee's progress. Windows are
``[since, until)`` over the sessions' start times. Definitions are in the README
("Analytics") and in the migration ``20261126001100_analytics.sql``.

Dashboards tolerate lag: every method is served by the read replica when the client has
one (``read_dsn`` / ``read_url``), so a session written a moment ago may not be counted yet.
"""

from __future__ import annotations

import builtins
import uuid
from datetime import datetime
from typing import Any

from voicesessions._arguments import checked_arguments
from voicesessions._validation import as_uuid, parse_model
from voicesessions.errors import InvalidInputError, UnexpectedResponseError, brief
from voicesessions.models import (
    CompanyMetrics,
    MetricsBucket,
    TeamMember,
    TimeBucket,
    UserProgress,
)

from .backends.base import Row
from .resource import Resource


@checked_arguments
class AsyncAnalyticsRepository(Resource):
    """Company, person and team dashboards, and time series for charts."""

    async def company_metrics(
        self,
        company_id: uuid.UUID | str,
        *,
        since: datetime | None = None,
        until: datetime | None = None,
    ) -> CompanyMetrics:
        """Sessions, active users, scores, minutes, costs and per-skill averages of a company
        (managers and admins of the company, the service role). An empty window gives
        zeros, not an error."""
        params = {"company_id": as_uuid(company_id, "company_id"), **_window(since, until)}
        return parse_model(CompanyMetrics, await self._read_one("company_metrics", params))

    async def user_progress(
        self,
        profile_id: uuid.UUID | str,
        *,
        since: datetime | None = None,
        until: datetime | None = None,
    ) -> UserProgress:
        """A person's session count, first/latest/average/best score, trend (points per
        week), average talk ratio and per-skill progress (the person, managers and admins
        of their company, the service role)."""
        params = {"profile_id": as_uuid(profile_id, "profile_id"), **_window(since, until)}
        return parse_model(UserProgress, await self._read_one("user_progress", params))

    async def team_overview(
        self,
        company_id: uuid.UUID | str,
        *,
        since: datetime | None = None,
        until: datetime | None = None,
    ) -> builtins.list[TeamMember]:
        """One row per trainee of the company, by display name (managers and admins of the
        company, the service role)."""
        params = {"company_id": as_uuid(company_id, "company_id"), **_window(since, until)}
        rows = await self._read("team_overview", params)
        return [parse_model(TeamMember, r) for r in rows]

    async def metrics_timeseries(
        self,
        *,
        company_id: uuid.UUID | str | None = None,
        profile_id: uuid.UUID | str | None = None,
        bucket: TimeBucket | str = TimeBucket.WEEK,
        since: datetime | None = None,
        until: datetime | None = None,
    ) -> builtins.list[MetricsBucket]:
        """Numbers per day, week (from Monday) or month, UTC, of a company or of one person
        (exactly one of ``company_id`` and ``profile_id``), every bucket from the first to
        the last present (zeros where nothing happened)."""
        if (company_id is None) == (profile_id is None):
            raise InvalidInputError("give exactly one of company_id and profile_id")
        try:
            size = TimeBucket(bucket)
        except ValueError as exc:
            allowed = ", ".join(b.value for b in TimeBucket)
            raise InvalidInputError(
                f"bucket must be one of {allowed}, not {brief(bucket)}"
            ) from exc
        params: dict[str, Any] = {"bucket": size.value, **_window(since, until)}
        if company_id is not None:
            params["company_id"] = as_uuid(company_id, "company_id")
        else:
            params["profile_id"] = as_uuid(profile_id, "profile_id")
        rows = await self._read("metrics_timeseries", params)
        return [parse_model(MetricsBucket, r) for r in rows]

    async def _read(self, function: str, params: dict[str, Any]) -> builtins.list[Row]:
        rows = await self._call(
            lambda: self._backend.rpc(function, params, replica_ok=True), idempotent=True
        )
        if not isinstance(rows, builtins.list) or not all(isinstance(r, dict) for r in rows):
            raise UnexpectedResponseError(
                f"expected rows from {function}, got {type(rows).__name__}"
            )
        return rows

    async def _read_one(self, function: str, params: dict[str, Any]) -> Row:
        rows = await self._read(function, params)
        if not rows:
            raise UnexpectedResponseError(f"{function} returned no row")
        return rows[0]


def _window(since: datetime | None, until: datetime | None) -> dict[str, datetime]:
    """The ``since``/``until`` parameters that are given (timezone-aware, since < until)."""
    window: dict[str, datetime] = {}
    for name, value in (("since", since), ("until", until)):
        if value is None:
            continue
        if value.tzinfo is None:
            raise InvalidInputError(f"{name} must be timezone-aware")
        window[name] = value
    if since is not None and until is not None and since >= until:
        raise InvalidInputError(f"since ({since.isoformat()}) must be before until")
    return window
