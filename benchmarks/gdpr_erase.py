"""How long does erasing a person take? GDPR erasure of a user with many sessions.

Loads one data subject with SESSIONS sessions (each with SEGMENTS_PER_SESSION final segments,
an assembled transcript, an analysis, an analytics row, two participants and an audio file in
Storage) among BACKGROUND_SESSIONS sessions of 200 other people (same shape), into a fresh
local PostgreSQL. Then, on REPEAT fresh copies of that database, calls
``public.gdpr_erase_user(subject, include_account => true)`` as service_role, exactly as
PostgREST runs an RPC (role and request.jwt.claims set locally in its transaction), and times
the call with its commit. The dry run and the export of the same person are timed once.

    python -m benchmarks.gdpr_erase [--sessions 1000] [--segments-per-session 10]
                                    [--background-sessions 50000] [--repeat 3]

Prints the numbers and the command; writes nothing else.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
import uuid
from typing import Any

import psycopg
from psycopg.conninfo import make_conninfo

from benchmarks._server import migrated_database
from voicesessions._request import request_context

COMPANIES = 10
PEOPLE_PER_COMPANY = 20
SUBJECT = uuid.UUID("00000000-0000-4000-a000-000000000001")
SUBJECT_COMPANY = uuid.UUID("00000000-0000-4000-8000-000000000001")

# Bulk load with triggers off (session_replication_role = replica): derived columns
# (profile_id/company_id of child rows, participants, analytics dates) are filled here.
LOAD_SQL = """
set session_replication_role = replica;
insert into companies (id, name)
select ('00000000-0000-4000-8000-' || lpad(c::text, 12, '0'))::uuid, 'Company ' || c
from generate_series(1, {companies}) c;

insert into auth.users (id, email)
select ('00000000-0000-4000-9000-' || lpad((c * 100 + p)::text, 12, '0'))::uuid,
       'u' || c || '_' || p || '@bench.test'
from generate_series(1, {companies}) c, generate_series(1, {people}) p;
insert into auth.users (id, email, raw_user_meta_data)
values ('{subject}', 'subject@bench.test', '{{"full_name": "Bench Subject"}}');
insert into auth.identities (provider_id, user_id, identity_data, provider)
values ('{subject}', '{subject}', '{{"email": "subject@bench.test"}}', 'email');

insert into profiles (id, company_id, role, display_name)
select ('00000000-0000-4000-9000-' || lpad((c * 100 + p)::text, 12, '0'))::uuid,
       ('00000000-0000-4000-8000-' || lpad(c::text, 12, '0'))::uuid, 'trainee', 'Person ' || p
from generate_series(1, {companies}) c, generate_series(1, {people}) p;
insert into profiles (id, company_id, role, display_name)
values ('{subject}', '{company}', 'trainee', 'Bench Subject');

create temp table owners as
select row_number() over (order by id) - 1 as n, id, company_id from profiles
where id <> '{subject}';

insert into sessions (id, profile_id, company_id, title, status, started_at, ended_at)
select gen_random_uuid(), o.id, o.company_id, 'Call ' || s, 'completed',
       now() - (s || ' minutes')::interval,
       now() - (s || ' minutes')::interval + interval '5 minutes'
from generate_series(1, {background}) s join owners o on o.n = s % ({companies} * {people});
insert into sessions (id, profile_id, company_id, title, status, started_at, ended_at)
select gen_random_uuid(), '{subject}', '{company}', 'Subject call ' || s, 'completed',
       now() - (s || ' minutes')::interval,
       now() - (s || ' minutes')::interval + interval '5 minutes'
from generate_series(1, {sessions}) s;
update sessions set audio_path = company_id || '/' || profile_id || '/' || id || '.wav',
                    audio_size_bytes = 480000;

insert into storage.buckets (id, name) values ('session-audio', 'session-audio')
on conflict do nothing;
insert into storage.objects (bucket_id, name, owner, owner_id, metadata)
select 'session-audio', s.audio_path, s.profile_id, s.profile_id::text, '{{"size": 480000}}'
from sessions s;

insert into session_participants (session_id, profile_id, kind, speaker_label)
select id, profile_id, 'trainee', 'trainee' from sessions;
insert into session_participants (session_id, kind, speaker_label, display_name, persona)
select id, 'ai_buyer', 'buyer', 'Alex', '{{"scenario": "cold call"}}' from sessions;

insert into transcript_segments
  (session_id, profile_id, company_id, seq, speaker, text, start_ms, end_ms, confidence)
select s.id, s.profile_id, s.company_id, g, case when g % 2 = 0 then 'trainee' else 'buyer' end,
       'words of segment ' || g || ' in a practice call', g * 3000, g * 3000 + 2500, 0.9
from sessions s, generate_series(0, {per_session} - 1) g;

insert into transcripts (session_id, profile_id, company_id, content, word_count)
select s.id, s.profile_id, s.company_id, 'trainee: words of the call', 5 from sessions s;
insert into analysis_results (session_id, profile_id, company_id, provider, analysis_type, results)
select s.id, s.profile_id, s.company_id, 'openai', 'coaching',
       '{{"score": 70, "feedback": {{"quotes": ["words"], "tips": ["slow down"]}}}}'
from sessions s;
insert into session_analytics (session_id, profile_id, company_id, overall_score, session_date,
                               session_hour)
select s.id, s.profile_id, s.company_id, 70, (s.started_at at time zone 'UTC')::date,
       extract(hour from s.started_at at time zone 'UTC')::smallint
from sessions s;
set session_replication_role = origin;
analyze;
"""

SERVICE = request_context("service_role", {"role": "service_role"})


def as_service_role(dsn: str, call: str) -> tuple[float, Any]:
    """Milliseconds for one RPC as service_role, commit included, and its result."""
    with psycopg.connect(dsn) as conn:
        start = time.perf_counter()
        with conn.cursor() as cur:
            cur.execute(*SERVICE)
            cur.execute(call, (SUBJECT,))
            row = cur.fetchone()
        conn.commit()
        elapsed = (time.perf_counter() - start) * 1000
    assert row is not None
    return elapsed, row[0]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sessions", type=int, default=1000)
    parser.add_argument("--segments-per-session", type=int, default=10)
    parser.add_argument("--background-sessions", type=int, default=50_000)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()

    with migrated_database("bench_template") as (info, template):
        with psycopg.connect(template, autocommit=True) as conn:
            t0 = time.perf_counter()
            # Integers and fixed uuids only, so plain formatting is safe; a multi-statement
            # script cannot take server-side parameters.
            load = LOAD_SQL.format(
                companies=int(COMPANIES),
                people=int(PEOPLE_PER_COMPANY),
                sessions=int(args.sessions),
                background=int(args.background_sessions),
                per_session=int(args.segments_per_session),
                subject=SUBJECT,
                company=SUBJECT_COMPANY,
            )
            conn.execute(load.encode())
            load_s = time.perf_counter() - t0
            totals = {
                t: conn.execute(f"select count(*) from {t}").fetchone()[0]  # type: ignore[index]
                for t in ("sessions", "transcript_segments", "storage.objects")
            }

        erase_ms: list[float] = []
        report: dict[str, Any] = {}
        dry_ms = export_ms = 0.0
        export_bytes = 0
        for run in range(args.repeat):
            with psycopg.connect(info.dsn, autocommit=True) as admin:
                admin.execute(f"create database bench_{run} template bench_template")
            dsn = make_conninfo(info.dsn, dbname=f"bench_{run}")
            if run == 0:
                dry_ms, _ = as_service_role(
                    dsn,
                    "select public.gdpr_erase_user(%s, include_account => true, dry_run => true)",
                )
                export_ms, export = as_service_role(dsn, "select public.gdpr_export_user(%s)")
                export_bytes = len(str(export))
            elapsed, report = as_service_role(
                dsn, "select public.gdpr_erase_user(%s, include_account => true)"
            )
            erase_ms.append(elapsed)
            with psycopg.connect(info.dsn, autocommit=True) as admin:
                admin.execute(f"drop database bench_{run}")

    counts = report["counts"]
    command = (
        f"python -m benchmarks.gdpr_erase --sessions {args.sessions} --segments-per-session"
        f" {args.segments_per_session} --background-sessions {args.background_sessions}"
        f" --repeat {args.repeat}"
    )
    print(f"Command: {command}")
    print(
        f"Data: {totals['sessions']:,} sessions, {totals['transcript_segments']:,} segments,"
        f" {totals['storage.objects']:,} storage objects in all (bulk load {load_s:.0f} s);"
        f" PostgreSQL {info.major_version}."
    )
    print(
        "Erased: "
        + ", ".join(f"{k} {v:,}" for k, v in sorted(counts.items()) if v)
        + f"; {len(report['pending_storage']):,} storage objects recorded as pending."
    )
    print(
        f"gdpr_erase_user (include_account, as service_role, commit included):"
        f" median {statistics.median(erase_ms):.0f} ms over {len(erase_ms)} runs"
        f" ({', '.join(f'{ms:.0f}' for ms in erase_ms)} ms)"
    )
    print(f"dry run: {dry_ms:.0f} ms; export: {export_ms:.0f} ms ({export_bytes / 1e6:.1f} MB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
