"""GDPRSessionManager: erasure, anonymization, export, retention and GDPR requests.

Each operation is one database function (``supabase/migrations/*_gdpr.sql``), which checks
the caller itself (the subject, an admin of their company, or the service role; 42501, i.e.
PermissionDeniedError, for anyone else), does all of its database work in one transaction
and writes the ``gdpr_requests`` row and the audit entry. What no database function can do
is delete Storage objects: the functions record them as pending in the request, and this
manager then has the database authorize the deletion (``gdpr_check_storage_removal``: the
caller may act on that request, the paths are still pending) *before* touching any object,
deletes them through the backend (Supabase Storage, or the Postgres backend's local store)
and confirms each request's deletions (``gdpr_confirm_storage_removed``), which completes
the request. A request the caller may not act on is PermissionDeniedError with storage
untouched. If the deletion fails, the error propagates and the request stays
open with its objects pending: calling the same method again (or
:meth:`AsyncGDPRSessionManager.resume_pending_storage`) finishes it.

Retries: erasure, anonymization, retention, confirmation and the storage deletion are
idempotent (a repeat finds nothing left to change), so their transient failures are retried;
an export writes a request and an audit entry each time, so it is not retried.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from voicesessions._arguments import checked_arguments
from voicesessions._validation import as_uuid, parse_model, reading
from voicesessions.errors import InvalidInputError, UnexpectedResponseError
from voicesessions.models import (
    AnonymizationReport,
    ErasureReport,
    GDPRRequest,
    GDPRRequestStatus,
    RetentionCompanyReport,
    RetentionReport,
)

from .resource import Resource

#: Largest ``batch_size`` the database accepts for a retention call.
MAX_RETENTION_BATCH_SIZE = 10_000


@checked_arguments
class AsyncGDPRSessionManager(Resource):
    """The data-subject rights (GDPR Arts. 15, 17, 20, 5(1)(e), 12(3)) over one backend."""

    async def delete_user_session_data(
        self,
        auth_uid: uuid.UUID | str,
        *,
        include_account: bool = False,
        dry_run: bool = False,
    ) -> ErasureReport:
        """Erase everything the database holds about a person (Art. 17), then their audio.

        The database step removes their sessions with segments, transcripts, analyses,
        analytics and participants, their profile and, with ``include_account``, their auth
        user; it records their storage objects as pending first. This method then deletes
        those objects and confirms them, which completes the request. A repeated call changes
        nothing in the database and finishes any storage deletion left pending by an
        interrupted one. ``dry_run`` reports the same counts and objects and changes nothing.
        """
        uid = as_uuid(auth_uid, "auth_uid")
        params = {
            "subject_id": uid,
            "include_account": bool(include_account),
            "dry_run": bool(dry_run),
        }
        raw = await self._call(
            lambda: self._backend.rpc("gdpr_erase_user", params), idempotent=True
        )
        report = _mapping(raw, "gdpr_erase_user")
        if dry_run:
            return parse_model(ErasureReport, report)
        removed, remaining, statuses = await self._finish_storage(report.get("pending_storage"))
        return parse_model(ErasureReport, _settled(report, removed, remaining, statuses))

    async def anonymize_session_data(
        self,
        session_id: uuid.UUID | str,
        *,
        extra_personal_keys: Iterable[str] = (),
    ) -> AnonymizationReport:
        """Anonymize one ended session, all or nothing, then delete its audio.

        Transcript and segment text become ``[anonymized]``, the title and speaker names go,
        JSON documents lose the personal keys at any depth (the database's default list plus
        ``extra_personal_keys``); analytics stay. Idempotent: a second call changes nothing
        and reports ``already_anonymized``. A session still active is InvalidInputError.
        """
        sid = as_uuid(session_id, "session_id")
        if isinstance(extra_personal_keys, str):
            raise InvalidInputError("extra_personal_keys must be a list of keys, not one string")
        keys = list(extra_personal_keys)
        if any(not isinstance(k, str) for k in keys):
            raise InvalidInputError("extra_personal_keys must be strings")
        params = {"session_id": sid, "extra_personal_keys": keys}
        raw = await self._session_call(
            sid, lambda: self._backend.rpc("gdpr_anonymize_session", params)
        )
        report = _mapping(raw, "gdpr_anonymize_session")
        removed, remaining, statuses = await self._finish_storage(report.get("pending_storage"))
        return parse_model(AnonymizationReport, _settled(report, removed, remaining, statuses))

    async def export_user_data(self, auth_uid: uuid.UUID | str) -> dict[str, Any]:
        """Everything the database holds about a person, as one schema-versioned JSON
        document (Art. 15/20). Records a completed export request and an audit entry (so it
        is not retried)."""
        uid = as_uuid(auth_uid, "auth_uid")
        raw = await self._call(
            lambda: self._backend.rpc("gdpr_export_user", {"subject_id": uid}), idempotent=False
        )
        return dict(_mapping(raw, "gdpr_export_user"))

    async def apply_retention_policy(
        self,
        company_id: uuid.UUID | str | None = None,
        *,
        dry_run: bool = False,
        batch_size: int = 500,
    ) -> RetentionReport:
        """Apply each company's retention settings (one company, or all of them for the
        service role), batch after batch until nothing older than the limits is left,
        deleting the audio each batch leaves pending. Idempotent and safe to run from cron.

        Then it finishes the audio that earlier retention runs of the same scope left
        pending (the runs pg_cron makes in the database, ``private.retention_tick``, cannot
        delete Storage objects; an interrupted run): those objects are deleted and confirmed
        too, and count in ``storage_removed`` / ``pending_storage``.

        ``dry_run`` changes nothing and reports what the first batch would do (``more`` says
        whether more would follow). Over every company, a company whose retention fails is
        listed in ``failures`` (its batch rolled back) and the others go on.
        """
        cid = None if company_id is None else as_uuid(company_id, "company_id")
        if (
            isinstance(batch_size, bool)
            or not isinstance(batch_size, int)
            or not 1 <= batch_size <= MAX_RETENTION_BATCH_SIZE
        ):
            raise InvalidInputError(
                f"batch_size must be an integer from 1 to {MAX_RETENTION_BATCH_SIZE}"
            )
        params = {"company_id": cid, "dry_run": bool(dry_run), "batch_size": batch_size}
        totals: dict[str, int] = {}
        companies: dict[uuid.UUID, dict[str, Any]] = {}
        request_ids: list[uuid.UUID] = []
        pending: list[dict[str, Any]] = []
        failures: dict[str, Any] = {}
        removed_total = 0
        batches = 0
        more = False
        while True:
            raw = await self._call(
                lambda: self._backend.rpc("gdpr_apply_retention", params), idempotent=True
            )
            batch = _mapping(raw, "gdpr_apply_retention")
            batches += 1
            more = bool(batch.get("more"))
            with reading("gdpr_apply_retention"):
                counts = {k: int(v) for k, v in dict(batch.get("counts") or {}).items()}
            for key, value in counts.items():
                totals[key] = totals.get(key, 0) + value
            statuses: dict[uuid.UUID, GDPRRequestStatus] = {}
            if dry_run:
                pending.extend(_entries(batch.get("pending_storage")))
            else:
                removed, remaining, statuses = await self._finish_storage(
                    batch.get("pending_storage")
                )
                removed_total += removed
                pending.extend(remaining)
            with reading("gdpr_apply_retention"):
                request_ids.extend(uuid.UUID(str(r)) for r in batch.get("request_ids") or [])
                for entry in batch.get("companies") or []:
                    _merge_company(companies, entry, statuses)
                for failure in batch.get("failures") or []:
                    failures[str(dict(failure).get("company_id"))] = failure
            # A dry run finds the same rows again; a batch that changed nothing would too.
            if dry_run or not more or not any(counts.values()):
                break
        if not dry_run:
            seen = {(e["request_id"], e["path"]) for e in pending}
            removed, earlier = await self._finish_earlier_retention(cid, seen)
            removed_total += removed
            pending.extend(earlier)
        return parse_model(
            RetentionReport,
            dict(
                dry_run=bool(dry_run),
                batch_size=batch_size,
                batches=batches,
                more=more,
                counts=totals,
                companies=[parse_model(RetentionCompanyReport, c) for c in companies.values()],
                request_ids=request_ids,
                pending_storage=pending,
                storage_removed=removed_total,
                failures=list(failures.values()),
            ),
        )

    async def list_requests(
        self, *, status: GDPRRequestStatus | str | None = None, overdue: bool = False
    ) -> list[GDPRRequest]:
        """GDPR requests, most urgent first; ``overdue`` keeps the open ones past their due
        date (one month, Art. 12(3)). Admins see their company's, the service role all."""
        if status is not None:
            try:
                status = GDPRRequestStatus(status)
            except ValueError:
                allowed = ", ".join(s.value for s in GDPRRequestStatus)
                raise InvalidInputError(f"status must be one of {allowed}") from None
        params = {"status": None if status is None else status.value, "overdue": bool(overdue)}
        rows = await self._call(
            lambda: self._backend.rpc("gdpr_list_requests", params), idempotent=True
        )
        if rows is not None and not isinstance(rows, list):
            raise UnexpectedResponseError(
                f"gdpr_list_requests answered {type(rows).__name__} where rows were expected"
            )
        return [parse_model(GDPRRequest, row) for row in rows or []]

    async def resume_pending_storage(self, auth_uid: uuid.UUID | str | None = None) -> int:
        """Finish interrupted storage deletions: delete the objects open requests are still
        waiting for (a person's, or every one the caller may act on) and confirm them.
        Returns how many objects were deleted."""
        uid = None if auth_uid is None else as_uuid(auth_uid, "auth_uid")
        rows = await self._call(
            lambda: self._backend.rpc("gdpr_pending_storage", {"subject_id": uid}),
            idempotent=True,
        )
        removed, _, _ = await self._finish_storage(rows)
        return removed

    # -- storage ------------------------------------------------------------------------

    async def _finish_earlier_retention(
        self, company_id: uuid.UUID | None, seen: set[tuple[Any, str]]
    ) -> tuple[int, list[dict[str, Any]]]:
        """Delete and confirm the objects open retention requests (of ``company_id``, or of
        every company the caller may act on) still wait for, except the ``seen`` ones
        (request id, path) this run already tried. Returns the number deleted and the
        entries still pending."""
        rows = await self._call(
            lambda: self._backend.rpc("gdpr_pending_storage", {"subject_id": None}),
            idempotent=True,
        )
        if rows is not None and not isinstance(rows, list):
            raise UnexpectedResponseError(
                f"gdpr_pending_storage answered {type(rows).__name__} where rows were expected"
            )
        with reading("gdpr_pending_storage"):
            earlier = [
                row
                for row in rows or []
                if row.get("kind") == "retention"
                and (company_id is None or str(row.get("company_id")) == str(company_id))
            ]
        entries = [e for e in _entries(earlier) if (e["request_id"], e["path"]) not in seen]
        removed, remaining, _ = await self._finish_storage(entries)
        return removed, remaining

    async def _finish_storage(
        self, pending: Any
    ) -> tuple[int, list[dict[str, Any]], dict[uuid.UUID, GDPRRequestStatus]]:
        """Delete pending objects and confirm them per request. Returns the number deleted,
        the entries still pending afterwards, and the status of each confirmed request."""
        entries = [e for e in _entries(pending) if e["request_id"] is not None]
        # The database authorizes every deletion before any object is touched: a request the
        # caller may not act on raises here (PermissionDeniedError) with storage unchanged,
        # and only the paths a request is still waiting for are deleted.
        asked: dict[uuid.UUID, list[str]] = {}
        for entry in entries:
            paths = asked.setdefault(entry["request_id"], [])
            if entry["path"] not in paths:
                paths.append(entry["path"])
        allowed: set[tuple[uuid.UUID, str]] = set()
        for request_id, paths in asked.items():
            still_pending = await self._check(request_id, paths)
            allowed.update((request_id, str(p)) for p in still_pending or [])
        entries = [e for e in entries if (e["request_id"], e["path"]) in allowed]
        by_bucket: dict[str, list[str]] = {}
        for entry in entries:
            paths = by_bucket.setdefault(entry["bucket"], [])
            if entry["path"] not in paths:
                paths.append(entry["path"])
        gone: set[tuple[str, str]] = set()
        for bucket, paths in by_bucket.items():
            removed = await self._remove(bucket, paths)
            gone.update((bucket, path) for path in removed)
        by_request: dict[uuid.UUID, list[str]] = {}
        for entry in entries:
            if (entry["bucket"], entry["path"]) in gone:
                by_request.setdefault(entry["request_id"], []).append(entry["path"])
        statuses: dict[uuid.UUID, GDPRRequestStatus] = {}
        remaining: list[dict[str, Any]] = []
        for request_id, paths in by_request.items():
            result = _mapping(await self._confirm(request_id, paths), "confirm")
            with reading("gdpr_confirm_storage_removed"):
                if result.get("status") is not None:
                    statuses[request_id] = GDPRRequestStatus(result["status"])
            remaining.extend(_entries(result.get("remaining")))
        remaining.extend(e for e in entries if (e["bucket"], e["path"]) not in gone)
        return len(gone), remaining, statuses

    async def _remove(self, bucket: str, paths: Sequence[str]) -> list[str]:
        # Idempotent: deleting an object that is already gone succeeds.
        return await self._call(
            lambda: self._backend.remove_storage_objects(bucket, paths), idempotent=True
        )

    async def _check(self, request_id: uuid.UUID, paths: list[str]) -> Any:
        # Read-only: which of these paths the request still waits for, once the database
        # has authorized the caller to remove them.
        params = {"request_id": request_id, "paths": paths}
        return await self._call(
            lambda: self._backend.rpc("gdpr_check_storage_removal", params), idempotent=True
        )

    async def _confirm(self, request_id: uuid.UUID, paths: list[str]) -> Any:
        # Idempotent: confirming twice changes nothing.
        params = {"request_id": request_id, "paths": paths}
        return await self._call(
            lambda: self._backend.rpc("gdpr_confirm_storage_removed", params), idempotent=True
        )


# -- helpers (no I/O) ------------------------------------------------------------------------


def _mapping(value: Any, function: str) -> Mapping[str, Any]:
    if not isinstance(value, Mapping):
        raise UnexpectedResponseError(
            f"{function} answered {type(value).__name__} where a JSON object was expected"
        )
    return value


def _entries(pending: Any) -> list[dict[str, Any]]:
    """Pending storage entries as ``{request_id, bucket, path}`` (request_id a UUID or None)."""
    entries: list[dict[str, Any]] = []
    with reading("the pending storage of a GDPR request"):
        for item in pending or []:
            request_id = item.get("request_id")
            entries.append(
                {
                    "request_id": None if request_id is None else uuid.UUID(str(request_id)),
                    "bucket": str(item["bucket"]),
                    "path": str(item["path"]),
                }
            )
    return entries


def _uuid_or_none(report: Mapping[str, Any]) -> uuid.UUID | None:
    value = report.get("request_id")
    return None if value is None else uuid.UUID(str(value))


def _settled(
    report: Mapping[str, Any],
    removed: int,
    remaining: list[dict[str, Any]],
    statuses: Mapping[uuid.UUID, GDPRRequestStatus],
) -> dict[str, Any]:
    """The database's report updated with what the storage step did."""
    settled = dict(report)
    settled["pending_storage"] = remaining
    settled["storage_removed"] = removed
    request_id = _uuid_or_none(report)
    if request_id is not None and request_id in statuses:
        settled["status"] = statuses[request_id]
    return settled


def _merge_company(
    companies: dict[uuid.UUID, dict[str, Any]],
    entry: Mapping[str, Any],
    statuses: Mapping[uuid.UUID, GDPRRequestStatus],
) -> None:
    """Add one batch's report of a company to the run's totals for it."""
    company_id = uuid.UUID(str(entry["company_id"]))
    total = companies.setdefault(
        company_id,
        {"company_id": company_id, "counts": {}, "categories": [], "request_ids": []},
    )
    for key, value in dict(entry.get("counts") or {}).items():
        total["counts"][key] = total["counts"].get(key, 0) + int(value)
    total["categories"] = sorted(set(total["categories"]) | set(entry.get("categories") or []))
    total["more"] = bool(entry.get("more"))
    request_id = entry.get("request_id")
    if request_id is not None:
        rid = uuid.UUID(str(request_id))
        total["request_ids"].append(rid)
        total["status"] = statuses.get(rid, entry.get("status"))
