"""public.list_sessions (20261128001900): for an end user without a company or person
filter it names the two parts of what RLS shows them, each read in index order; the rows
must be exactly those of the plain query RLS filters, and a page must not read the
history."""

from __future__ import annotations

import datetime as dt
import re
from typing import Any

from tests.conftest import Database
from tests.support.api import Api, Identity
from tests.support.world import World

WorldDb = tuple[Database, World]

#: What list_sessions answered before 20261128001900 for every caller: RLS alone decides.
PLAIN = """
select s.id from public.sessions s
where (%(company_id)s::uuid is null or s.company_id = %(company_id)s::uuid)
  and (%(profile_id)s::uuid is null or s.profile_id = %(profile_id)s::uuid)
  and (%(status)s::public.session_status is null or s.status = %(status)s::public.session_status)
  and (%(started_after)s::timestamptz is null or s.started_at >= %(started_after)s::timestamptz)
  and (%(started_before)s::timestamptz is null or s.started_at < %(started_before)s::timestamptz)
  and (%(after_id)s::uuid is null
       or (s.started_at, s.id) < (%(after_started_at)s::timestamptz, %(after_id)s::uuid))
order by s.started_at desc, s.id desc
limit %(max_rows)s
"""

CALL = """
select id from public.list_sessions(
  company_id => %(company_id)s, profile_id => %(profile_id)s,
  status => %(status)s::public.session_status, started_after => %(started_after)s,
  started_before => %(started_before)s, after_started_at => %(after_started_at)s,
  after_id => %(after_id)s, max_rows => %(max_rows)s)
"""

BASE = dt.datetime(2026, 6, 1, tzinfo=dt.UTC)

#: Every argument at its default, but every row at once.
NONE: dict[str, Any] = {
    "company_id": None,
    "profile_id": None,
    "status": None,
    "started_after": None,
    "started_before": None,
    "after_started_at": None,
    "after_id": None,
    "max_rows": 1000,
}


def _seed(db: Database, world: World) -> None:
    """Sessions enough to page through: for every person, some at the same instant (ties
    ordered by id), completed and active; and a manager's own session in another company
    (one whose profile moved), which they see as its owner, not as the company's manager."""
    with db.connect() as conn:
        conn.execute("set session_replication_role = replica")  # the rows as given
        for n, (key, person) in enumerate(sorted(world.people.items())):
            company = world.companies[person.company]
            for k in range(7):
                started = BASE + dt.timedelta(hours=k // 2, minutes=n)  # pairs share an instant
                conn.execute(
                    "insert into public.sessions (profile_id, company_id, title, status,"
                    " started_at, ended_at) values (%s, %s, %s, %s, %s, %s)",
                    (
                        person.id,
                        company,
                        f"{key} call {k}",
                        "completed" if k % 3 else "active",
                        started,
                        started + dt.timedelta(minutes=9) if k % 3 else None,
                    ),
                )
        conn.execute(
            "insert into public.sessions (profile_id, company_id, title, status, started_at)"
            " values (%s, %s, 'MA in B', 'active', %s)",
            (world.person("MA").id, world.companies["B"], BASE + dt.timedelta(minutes=30)),
        )


def _cases(world: World, api: Api, who: Identity) -> list[dict[str, Any]]:
    none = NONE
    cases = [
        none,
        {**none, "max_rows": 3},
        {**none, "status": "active"},
        {**none, "status": "completed", "max_rows": 4},
        {**none, "started_after": BASE + dt.timedelta(hours=1)},
        {**none, "started_before": BASE + dt.timedelta(hours=2), "max_rows": 5},
        {**none, "company_id": world.companies["A"]},
        {**none, "profile_id": world.person("A1").id},
    ]
    # Keyset pages: after each of the first rows the caller sees (ties included).
    first = api.run(who, PLAIN, none).rows
    for row in first[:6]:
        started = api.run(
            who, "select started_at from public.sessions where id = %s", (row["id"],)
        ).rows[0]["started_at"]
        cases.append({**none, "after_started_at": started, "after_id": row["id"], "max_rows": 4})
    return cases


def test_every_caller_gets_exactly_what_rls_shows(world_db: WorldDb) -> None:
    db, world = world_db
    _seed(db, world)
    callers = [*sorted(world.people), "service_role"]
    with Api(db.authenticator_dsn) as api:
        for who in callers:
            identity = world.identity(who)
            assert api.run(identity, PLAIN, NONE).rows, who  # every caller sees some
            for case in _cases(world, api, identity):
                expected = [r["id"] for r in api.run(identity, PLAIN, case).rows]
                got = [r["id"] for r in api.run(identity, CALL, case).rows]
                assert got == expected, (who, case)
        # The moved manager's own session in B: theirs to see, not B's other people's.
        ma_b = api.run(world.identity("MA"), CALL, NONE).rows
        titles = {
            r["title"]
            for r in api.run(
                world.identity("MA"),
                "select title from public.sessions where id = any(%s)",
                ([r["id"] for r in ma_b],),
            ).rows
        }
        assert "MA in B" in titles
        assert not any(t.startswith(("B1 ", "AB ")) for t in titles)


def _buffers(api: Api, who: Identity, query: str) -> int:
    """Shared buffers a statement touched (EXPLAIN ANALYZE, the function's own included)."""
    plan = api.run(who, "explain (analyze, buffers, costs off, timing off) " + query).rows
    text = "\n".join(next(iter(r.values())) for r in plan)
    found = re.search(r"Buffers: shared hit=(\d+)(?: read=(\d+))?", text)
    assert found, text
    return int(found.group(1)) + int(found.group(2) or 0)


def test_a_page_does_not_read_the_history(world_db: WorldDb) -> None:
    """A manager's and a trainee's first page touch a few buffers, however many sessions
    the company and the trainee hold (here 20,000 and 10,000; before 20261128001900 every one
    of them was read and sorted)."""
    db, world = world_db
    a1, a2 = world.person("A1").id, world.person("A2").id
    with db.connect() as conn:
        conn.execute("set session_replication_role = replica")
        conn.execute(
            "insert into public.sessions (profile_id, company_id, title, status, started_at,"
            " ended_at) select case when g %% 2 = 0 then %s else %s end, %s, 'call ' || g,"
            " 'completed', %s - g * interval '1 minute', %s - g * interval '1 minute'"
            " + interval '5 minutes' from generate_series(1, 20000) g",
            (a1, a2, world.companies["A"], BASE, BASE),
        )
        conn.execute("analyze public.sessions")
    with Api(db.authenticator_dsn) as api:
        for who in ("MA", "A1"):
            identity = world.identity(who)
            page = "select * from public.list_sessions(max_rows => 20)"
            api.run(identity, page)  # the function's first call reads the catalog
            pages = [_buffers(api, identity, page) for _ in range(2)]
            assert min(pages) < 60, (who, pages)
            # ... and the next page, by keyset, as few
            rows = api.run(identity, page).rows
            last = rows[-1]
            after = (
                "select * from public.list_sessions(max_rows => 20,"
                f" after_started_at => '{last['started_at'].isoformat()}',"
                f" after_id => '{last['id']}')"
            )
            assert _buffers(api, identity, after) < 60, who
            assert len(api.run(identity, after).rows) == 20
