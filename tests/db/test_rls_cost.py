"""What RLS costs, in what does not depend on the machine: plans, buffers, helper kinds.

Speed itself is measured by benchmarks/rls_scale.py; these tests pin the properties that
make RLS cost what the same query with the filter written out costs (20261128000700):

- the policy helpers are plpgsql (a SQL security definer function is not inlined and is
  parsed and planned again in every statement);
- a manager counting the company's transcript segments does not visit a heap page per
  session: the policy restricts to the caller's company first, and the index on
  (company_id, profile_id) answers it;
- every identity sees, through the segments policy, exactly the rows the original
  condition (`profile_id = me or company_id = the company I manage`) selects.
"""

from __future__ import annotations

import json
import time
import uuid
from dataclasses import dataclass
from typing import Any

import psycopg
import pytest

from tests.conftest import Database
from tests.support.api import Api, Identity

HELPERS = ("my_company_id", "managed_company_id", "admin_company_id")


def test_policy_helpers_are_plpgsql_security_definer(template_db: Database) -> None:
    with template_db.connect() as conn:
        found = conn.execute(
            "select p.proname, l.lanname, p.provolatile, p.prosecdef, p.proconfig"
            " from pg_proc p join pg_language l on l.oid = p.prolang"
            " where p.pronamespace = 'private'::regnamespace and p.proname = any(%s)"
            " order by 1",
            (list(HELPERS),),
        ).fetchall()
    assert found == [(name, "plpgsql", "s", True, ['search_path=""']) for name in sorted(HELPERS)]


# -- a company among many, its rows scattered over the table ---------------------------------

COMPANIES = 40
TRAINEES = 8
SESSIONS = 150  # per company
SEGMENTS = 3  # per session


@dataclass(frozen=True)
class Scattered:
    db: Database
    company: uuid.UUID
    manager: uuid.UUID
    trainee: uuid.UUID


LOAD = """
set local session_replication_role = replica;  -- bulk load: triggers off, owners given here
-- A synchronous commit, so that VACUUM can mark the pages all-visible right away.
set local synchronous_commit = on;
insert into companies (id, name)
select ('00000000-0000-4000-8000-' || lpad(c::text, 12, '0'))::uuid, 'Company ' || c
from generate_series(1, %(companies)s) c;
insert into auth.users (id, email)
select ('00000000-0000-4000-9000-' || lpad((c * 100 + p)::text, 12, '0'))::uuid,
       'u' || c || '_' || p || '@cost.test'
from generate_series(1, %(companies)s) c, generate_series(0, %(trainees)s) p;
insert into profiles (id, company_id, role, display_name)
select ('00000000-0000-4000-9000-' || lpad((c * 100 + p)::text, 12, '0'))::uuid,
       ('00000000-0000-4000-8000-' || lpad(c::text, 12, '0'))::uuid,
       (case when p = 0 then 'manager' else 'trainee' end)::profile_role, 'Person ' || p
from generate_series(1, %(companies)s) c, generate_series(0, %(trainees)s) p;
-- In time order: session k of every company, then session k + 1, ...
insert into sessions (id, profile_id, company_id, title, status, started_at, ended_at)
select gen_random_uuid(),
       ('00000000-0000-4000-9000-' || lpad((c * 100 + 1 + k %% %(trainees)s)::text, 12, '0'))
         ::uuid,
       ('00000000-0000-4000-8000-' || lpad(c::text, 12, '0'))::uuid,
       'Call ' || k, 'completed', now() - make_interval(mins => k * 100 + c),
       now() - make_interval(mins => k * 100 + c) + interval '5 minutes'
from generate_series(1, %(sessions)s) k, generate_series(1, %(companies)s) c
order by k, c;
insert into transcript_segments
  (session_id, profile_id, company_id, seq, speaker, text, start_ms, end_ms)
select s.id, s.profile_id, s.company_id, g, 'trainee', 'words', g * 1000, g * 1000 + 900
from (select * from sessions order by ctid) s, generate_series(0, %(segments)s - 1) g;
"""


@pytest.fixture
def scattered(fresh_db: Database) -> Scattered:
    with psycopg.connect(fresh_db.dsn) as conn:
        with psycopg.ClientCursor(conn) as cur:  # several statements: client-side binding
            cur.execute(
                LOAD,
                {
                    "companies": COMPANIES,
                    "trainees": TRAINEES,
                    "sessions": SESSIONS,
                    "segments": SEGMENTS,
                },
            )
        conn.commit()
        conn.autocommit = True
        conn.execute("vacuum (analyze) transcript_segments, sessions, profiles")
        # All pages all-visible, as autovacuum leaves them: a VACUUM cannot mark them while
        # another transaction (an autovacuum ANALYZE) holds an older snapshot; try again.
        for _ in range(60):
            row = conn.execute(
                "select relallvisible >= relpages from pg_class"
                " where oid = 'public.transcript_segments'::regclass"
            ).fetchone()
            if row is not None and row[0]:
                break
            time.sleep(0.5)
            conn.execute("vacuum transcript_segments")
    return Scattered(
        fresh_db,
        company=uuid.UUID("00000000-0000-4000-8000-000000000001"),
        manager=uuid.UUID("00000000-0000-4000-9000-000000000100"),
        trainee=uuid.UUID("00000000-0000-4000-9000-000000000101"),
    )


def _explain(api: Api, who: Identity, query: str, params: tuple[Any, ...] = ()) -> Any:
    rows = api.run(who, f"explain (analyze, buffers, format json) {query}", params).rows
    return rows[0]["QUERY PLAN"][0]["Plan"]


def _buffers(plan: Any) -> int:
    return int(plan["Shared Hit Blocks"] + plan["Shared Read Blocks"])


def _heap_pages(db: Database) -> int:
    with psycopg.connect(db.dsn) as conn:
        # Summed over the partitions (the partitioned table itself has no pages).
        row = conn.execute(
            "select sum(relpages) from pg_class where oid in (select relid from"
            " pg_partition_tree('public.transcript_segments'::regclass) where isleaf)"
        ).fetchone()
    assert row is not None
    return int(row[0])


def test_manager_counts_company_segments_without_visiting_the_heap(
    scattered: Scattered,
) -> None:
    pages = _heap_pages(scattered.db)
    assert pages > 100  # the company's rows are on most of them
    with Api(scattered.db.authenticator_dsn) as api:
        manager = Identity.user(scattered.manager)
        count = api.run(manager, "select count(*) as n from transcript_segments").rows[0]["n"]
        assert count == SESSIONS * SEGMENTS
        ours = _explain(api, manager, "select count(*) from transcript_segments")
        baseline = _explain(
            api,
            Identity.service_role(),
            "select count(*) from transcript_segments where company_id = %s",
            (scattered.company,),
        )
    assert "Heap Blocks" not in json.dumps(ours), ours
    # The policy's helpers read the caller's profile (a few buffers each); nothing else.
    assert _buffers(ours) <= _buffers(baseline) + 12 < pages // 4


@pytest.mark.parametrize("who", ["manager", "trainee"])
def test_segments_policy_selects_what_the_original_condition_selects(
    scattered: Scattered, who: str
) -> None:
    uid = scattered.manager if who == "manager" else scattered.trainee
    managed = scattered.company if who == "manager" else None
    with Api(scattered.db.authenticator_dsn) as api:
        mine = api.run(Identity.user(uid), "select id from transcript_segments").rows
        original = api.run(
            Identity.service_role(),
            "select id from transcript_segments where profile_id = %s or company_id = %s",
            (uid, managed),
        ).rows
    assert mine
    assert sorted(r["id"] for r in mine) == sorted(r["id"] for r in original)
