"""Hostile tenancy: who may see and touch what, probed the way PostgREST runs requests.

Each probe is generated from the catalog or crossed over identities, and every refusal is
checked to leave the database unchanged:

- joining a company takes an invitation the person accepts (token stored as a hash, expiry,
  revocation); end users never insert profiles;
- a person who moves company takes no history along: the new company's admin sees none of
  the old company's GDPR requests, audit entries or pending audio paths;
- existence oracles: every table x every foreign key x {a row the caller cannot see, a row
  that does not exist} gives one answer;
- storage objects: nobody makes another person an object's owner, and erasure does not
  trust `owner`;
- every function the API roles may execute is accounted for, and SECURITY DEFINER ones
  refuse another company's ids;
- every boolean parameter of every such function refuses null (22004);
- anon/authenticated hold no privilege on any sequence, and exactly the documented grants
  on everything else (also under Supabase's default privileges, see tests/conftest.py);
- only the person themself (or the service role) changes their display name.
"""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Mapping
from typing import Any

import psycopg
import pytest
from psycopg import sql

from tests.conftest import Database, supabase_defaults
from tests.support.api import Identity, Result
from tests.support.db import SYSTEM_SCHEMAS, owner, owner_rows, scalar, unchanged
from tests.support.world import World, add_sessions_in_every_status

WorldDb = tuple[Database, World]
USERS = ("A1", "A2", "MA", "AA", "B1", "AB")
NIL = "00000000-0000-0000-0000-000000000000"
UUID_RE = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")


def run(
    db: Database, who: Identity, query: str, params: Any = None, *, commit: bool = True
) -> Result:
    with db.api() as api:
        return api.run(who, query, params, commit=commit)


def outcome(db: Database, who: Identity, query: str, params: Any = None) -> Result | str:
    """The committed request's result, or the SQLSTATE it failed with."""
    try:
        return run(db, who, query, params)
    except psycopg.Error as exc:
        return str(exc.sqlstate)


def refusal(db: Database, who: Identity, query: str, params: Any = None) -> tuple[str, str]:
    """(SQLSTATE, message) of a request that must fail; committed if it did not."""
    try:
        run(db, who, query, params)
    except psycopg.Error as exc:
        return str(exc.sqlstate), str(exc.diag.message_primary)
    raise AssertionError(f"not refused: {query} {params}")


def shape(answer: tuple[str, str]) -> tuple[str, str]:
    """An answer with the ids it names replaced, to compare answers about different ids."""
    return answer[0], UUID_RE.sub("<id>", answer[1])


def spare(world: World) -> Identity:
    return Identity.user(world.spare_user, email="spare@example.test")


def invite(db: Database, who: Identity, company: uuid.UUID, **args: Any) -> dict[str, Any]:
    names = ", ".join(f"{k} => %({k})s" for k in args)
    rows = run(
        db,
        who,
        f"select public.create_invitation(company_id => %(company)s{', ' if names else ''}"
        f"{names}) as r",
        {"company": company, **args},
    ).rows
    return dict(rows[0]["r"])


# -- invitations ----------------------------------------------------------------------------


def test_an_invited_person_joins_by_accepting(world_db: WorldDb) -> None:
    db, world = world_db
    admin = world.identity("AA")
    made = invite(db, admin, world.companies["A"], role="manager", email=" Spare@Example.TEST ")
    token = made.pop("token")
    assert token.startswith("vsi_")
    assert len(token) == 68
    assert made["email"] == "spare@example.test"
    assert made["role"] == "manager"
    assert made["invited_by"] == str(world.person("AA").id)
    # Only the hash is stored: the token appears in no row of any table.
    stored = scalar(
        db,
        "select token_hash from public.company_invitations where id = %s",
        (made["id"],),
    )
    assert stored == scalar(db, "select private.invitation_token_hash(%s)", (token,))
    assert not owner_rows(
        db,
        "select 1 from public.company_invitations i where i::text like '%%' || %s || '%%'",
        (token,),
    )

    joined = run(
        db, spare(world), "select public.accept_invitation(%s, 'Sam Spare') as p", (token,)
    ).rows[0]["p"]
    assert (joined["id"], joined["company_id"], joined["role"], joined["display_name"]) == (
        str(world.spare_user),
        str(world.companies["A"]),
        "manager",
        "Sam Spare",
    )
    # A retry answers the same profile and changes nothing.
    with unchanged(db):
        again = run(db, spare(world), "select public.accept_invitation(%s) as p", (token,))
    assert again.rows[0]["p"] == joined
    actions = [
        r["action"]
        for r in owner_rows(
            db,
            "select action from public.audit_log where entity_id = %s order by id",
            (made["id"],),
        )
    ]
    assert actions == ["tenancy.invite", "tenancy.join"]


def _bad_tokens(db: Database, world: World) -> dict[str, str]:
    """Tokens the spare user may not use, each for a different reason."""
    admin = world.identity("AA")
    company = world.companies["A"]
    tokens = {
        "unknown": "vsi_" + "0" * 64,
        "to another user": invite(db, admin, company, invitee_id=world.person("B1").id)["token"],
        "to another email": invite(db, admin, company, email="someone@example.test")["token"],
        "revoked": "",
        "expired": "",
        "accepted by another": "",
    }
    revoked = invite(db, admin, company, email="spare@example.test")
    run(db, admin, "select public.revoke_invitation(%s)", (revoked["id"],))
    tokens["revoked"] = revoked["token"]
    expired = invite(db, admin, company, invitee_id=world.spare_user, expires_in_seconds=60)
    with owner(db) as conn:
        conn.execute(
            "update public.company_invitations set created_at = now() - interval '2 minutes',"
            " expires_at = now() - interval '1 minute' where id = %s",
            (expired["id"],),
        )
    tokens["expired"] = expired["token"]
    # A token addressed by email, accepted by the newcomer who owns that address.
    newcomer = uuid.uuid4()
    with owner(db) as conn:
        conn.execute(
            "insert into auth.users (id, email) values (%s, 'newcomer@example.test')", (newcomer,)
        )
    taken = invite(db, admin, company, email="newcomer@example.test")
    run(db, Identity.user(newcomer), "select public.accept_invitation(%s)", (taken["token"],))
    tokens["accepted by another"] = taken["token"]
    return tokens


def test_tokens_not_meant_for_the_caller_all_get_one_answer(world_db: WorldDb) -> None:
    db, world = world_db
    tokens = _bad_tokens(db, world)
    answers = {}
    with unchanged(db):
        for reason, token in tokens.items():
            answers[reason] = refusal(
                db, spare(world), "select public.accept_invitation(%s)", (token,)
            )
    assert set(answers.values()) == {
        ("P0002", "invitation not found: unknown, expired, revoked or not addressed to you")
    }, answers


@pytest.mark.parametrize("who", ["anon", "A1", "MA", "AB", "B1", "service_role"])
def test_only_the_invitee_accepts(world_db: WorldDb, who: str) -> None:
    db, world = world_db
    token = invite(db, world.identity("AA"), world.companies["A"], email="spare@example.test")[
        "token"
    ]
    with unchanged(db):
        state, _ = refusal(db, world.identity(who), "select public.accept_invitation(%s)", (token,))
    # anon may not execute it; the service role provisions directly; people with a profile
    # cannot join a second company (and the token is not theirs anyway).
    assert state in {"42501", "P0002", "23505"}
    if who in ("anon", "service_role"):
        assert state == "42501"


def test_a_person_with_a_profile_cannot_join_another_company(world_db: WorldDb) -> None:
    db, world = world_db
    token = invite(
        db, world.identity("AA"), world.companies["A"], invitee_id=world.person("B1").id
    )["token"]
    with unchanged(db):
        state, _ = refusal(
            db, world.identity("B1"), "select public.accept_invitation(%s)", (token,)
        )
    assert state == "23505"


@pytest.mark.parametrize("who", ["anon", "A1", "A2", "MA", "B1", "AB"])
@pytest.mark.parametrize("company", ["A", "missing"])
def test_only_admins_of_the_company_invite(world_db: WorldDb, who: str, company: str) -> None:
    db, world = world_db
    cid = world.companies["A"] if company == "A" else uuid.uuid4()
    with unchanged(db):
        answer = refusal(
            db,
            world.identity(who),
            "select public.create_invitation(%s, email => 'x@example.test')",
            (cid,),
        )
    assert answer[0] == "42501"
    # Whether the company exists is not revealed: the same answer for both.
    if company == "missing":
        assert answer == refusal(
            db,
            world.identity(who),
            "select public.create_invitation(%s, email => 'x@example.test')",
            (world.companies["A"],),
        )


BAD_INVITATIONS = {
    "null role": ({"role": None, "email": "x@example.test"}, "22004"),
    "null expiry": ({"email": "x@example.test", "expires_in_seconds": None}, "22004"),
    "neither": ({}, "22023"),
    "both": ({"email": "x@example.test", "invitee_id": str(uuid.uuid4())}, "22023"),
    "not an email": ({"email": "no-at-sign"}, "22023"),
    "two ats": ({"email": "a@b@c"}, "22023"),
    "long email": ({"email": "a" * 250 + "@x.test"}, "22023"),
    "too short": ({"email": "x@example.test", "expires_in_seconds": 59}, "22023"),
    "too long": ({"email": "x@example.test", "expires_in_seconds": 2592001}, "22023"),
    "negative": ({"email": "x@example.test", "expires_in_seconds": -1}, "22023"),
}


@pytest.mark.parametrize("case", sorted(BAD_INVITATIONS))
@pytest.mark.parametrize("who", ["AA", "service_role"])
def test_bad_invitations_are_refused(world_db: WorldDb, case: str, who: str) -> None:
    db, world = world_db
    args, state = BAD_INVITATIONS[case]
    names = "".join(f", {k} => %({k})s" for k in args)
    with unchanged(db):
        answer = refusal(
            db,
            world.identity(who),
            f"select public.create_invitation(%(company)s{names})",
            {"company": world.companies["A"], **args},
        )
    assert answer[0] == state, answer


def test_open_invitations_are_capped_per_company(world_db: WorldDb) -> None:
    db, world = world_db
    with owner(db) as conn:
        conn.execute(
            "insert into public.company_invitations (company_id, email, token_hash, expires_at)"
            " select %s, 'n' || g || '@example.test',"
            " private.invitation_token_hash(g::text), now() + interval '1 day'"
            " from generate_series(1, 999) g",
            (world.companies["A"],),
        )
    with unchanged(db):
        state, message = refusal(
            db,
            world.identity("AA"),
            "select public.create_invitation(%s, email => 'one.more@example.test')",
            (world.companies["A"],),
        )
    assert state == "22023"
    assert "1000" in message
    # Other companies are not affected.
    invite(db, world.identity("AB"), world.companies["B"], email="b@example.test")


@pytest.mark.parametrize("who", ["A1", "MA", "AB", "B1"])
def test_revoking_is_for_admins_of_the_company_and_reveals_nothing(
    world_db: WorldDb, who: str
) -> None:
    db, world = world_db
    made = invite(db, world.identity("AA"), world.companies["A"], email="x@example.test")
    with unchanged(db):
        hidden = refusal(
            db, world.identity(who), "select public.revoke_invitation(%s)", (made["id"],)
        )
        missing = refusal(
            db, world.identity(who), "select public.revoke_invitation(%s)", (uuid.uuid4(),)
        )
    assert hidden[0] == "P0002"
    assert shape(hidden) == shape(missing)
    revoke = "select public.revoke_invitation(%s) as r"
    assert run(db, world.identity("AA"), revoke, (made["id"],)).rows[0]["r"] is True
    assert run(db, world.identity("AA"), revoke, (made["id"],)).rows[0]["r"] is False


def test_who_reads_invitations(world_db: WorldDb) -> None:
    db, world = world_db
    query = "select company_id from public.company_invitations"
    seen = {
        who: sorted(str(r["company_id"]) for r in run(db, world.identity(who), query).rows)
        for who in USERS
    }
    assert seen == {
        "A1": [],
        "A2": [],
        "MA": [],
        "AA": [str(world.companies["A"])],
        "B1": [],
        "AB": [str(world.companies["B"])],
    }
    # The invitee reads those addressed to them (by id or by email), never the hash.
    mine = run(db, spare(world), query).rows
    assert sorted(str(r["company_id"]) for r in mine) == sorted(
        str(world.companies[c]) for c in "AB"
    )
    assert refusal(db, world.identity("AA"), "select token_hash from company_invitations")[0] == (
        "42501"
    )


@pytest.mark.parametrize("who", USERS)
def test_end_users_cannot_insert_profiles(world_db: WorldDb, who: str) -> None:
    db, world = world_db
    person = world.person(who)
    with unchanged(db):
        state, _ = refusal(
            db,
            world.identity(who),
            "insert into public.profiles (id, company_id, display_name) values (%s, %s, 'x')",
            (world.spare_user, world.companies[person.company]),
        )
    assert state == "42501"


# -- a person who moves company takes no history along -----------------------------------------


def _moved(db: Database, world: World) -> dict[str, Any]:
    """B1 erased by B's admin (the account kept, the audio left pending in storage), then
    invited into company A and joined. Returns what belongs to company B."""
    b1 = world.person("B1")
    path = f"{world.companies['B']}/{b1.id}/{world.completed_session['B1']}.webm"
    with owner(db) as conn:
        conn.execute(
            "update public.sessions set audio_path = %s where id = %s",
            (path, world.completed_session["B1"]),
        )
        conn.execute(
            "insert into storage.objects (bucket_id, name, owner, owner_id)"
            " values ('session-audio', %s, %s, %s)",
            (path, b1.id, str(b1.id)),
        )
    erased = run(db, world.identity("AB"), "select public.gdpr_erase_user(%s) as r", (b1.id,)).rows[
        0
    ]["r"]
    assert erased["pending_storage"], erased
    token = invite(db, world.identity("AA"), world.companies["A"], invitee_id=b1.id)["token"]
    run(db, world.identity("B1"), "select public.accept_invitation(%s)", (token,))
    markers = {
        str(world.companies["B"]),
        str(world.person("AB").id),
        path,
        *(
            str(r["id"])
            for r in owner_rows(
                db,
                "select id from public.gdpr_requests where company_id = %s",
                (world.companies["B"],),
            )
        ),
    }
    return {"path": path, "markers": markers}


ADMIN_READS = {
    "pending storage": "select coalesce(json_agg(p), '[]') as r"
    " from public.gdpr_pending_storage(%(s)s) p",
    "every pending object": "select coalesce(json_agg(p), '[]') as r"
    " from public.gdpr_pending_storage() p",
    "export": "select public.gdpr_export_user(%(s)s) as r",
    "erase dry run": "select public.gdpr_erase_user(%(s)s, dry_run => true) as r",
    "requests": "select coalesce(json_agg(r), '[]') as r from public.gdpr_list_requests() r",
    "audit log": "select coalesce(json_agg(a), '[]') as r from public.audit_log a",
    "request rows": "select coalesce(json_agg(g), '[]') as r from public.gdpr_requests g",
    "erase": "select public.gdpr_erase_user(%(s)s) as r",
}


@pytest.mark.parametrize("read", list(ADMIN_READS))
def test_the_new_company_sees_nothing_of_the_old_one(world_db: WorldDb, read: str) -> None:
    db, world = world_db
    moved = _moved(db, world)
    answer = run(db, world.identity("AA"), ADMIN_READS[read], {"s": world.person("B1").id}).rows[0][
        "r"
    ]
    text = json.dumps(answer)
    leaked = sorted(m for m in moved["markers"] if m in text)
    assert not leaked, f"{read} shows company B's {leaked}"
    # B's audio is still pending for B, whatever A's admin did.
    assert (
        scalar(
            db,
            "select count(*) from storage.objects where name = %s",
            (moved["path"],),
        )
        == 1
    )
    assert (
        scalar(
            db,
            "select count(*) from public.gdpr_requests where company_id = %s and details"
            " -> 'pending_storage' @> jsonb_build_array(jsonb_build_object('path', %s::text))",
            (world.companies["B"], moved["path"]),
        )
        == 1
    )


def test_the_person_and_the_old_company_still_see_their_records(world_db: WorldDb) -> None:
    db, world = world_db
    moved = _moved(db, world)
    b1 = world.person("B1").id
    query = "select coalesce(json_agg(p.path), '[]') as r from public.gdpr_pending_storage(%s) p"
    assert run(db, world.identity("B1"), query, (b1,)).rows[0]["r"] == [moved["path"]]
    everything = "select coalesce(json_agg(p.path), '[]') as r from public.gdpr_pending_storage() p"
    assert moved["path"] in run(db, world.identity("AB"), everything).rows[0]["r"]


def test_the_new_admin_cannot_authorize_deleting_the_old_audio(world_db: WorldDb) -> None:
    db, world = world_db
    moved = _moved(db, world)
    request_id = scalar(
        db,
        "select id from public.gdpr_requests where company_id = %s and kind = 'erasure'",
        (world.companies["B"],),
    )
    with unchanged(db):
        for query in (
            "select public.gdpr_check_storage_removal(%s, %s)",
            "select public.gdpr_confirm_storage_removed(%s, %s)",
        ):
            assert refusal(db, world.identity("AA"), query, (request_id, [moved["path"]]))[0] == (
                "42501"
            )
    allowed = run(
        db,
        world.identity("AB"),
        "select public.gdpr_check_storage_removal(%s, %s) as r",
        (request_id, [moved["path"], "not/pending.webm", moved["path"]]),
    ).rows[0]["r"]
    assert allowed == [moved["path"]]


# -- existence oracles ------------------------------------------------------------------------


@pytest.fixture(scope="module")
def oracle_world(shared_world_db: WorldDb) -> WorldDb:
    """The shared world plus sessions of B1 in every status, and an active session owned by
    each manager and admin (so that each identity has a session of its own to write to)."""
    db, world = shared_world_db
    with owner(db) as conn:
        add_sessions_in_every_status(conn, world.person("B1").id)
        for key in ("MA", "AA", "AB"):
            conn.execute(
                "insert into public.sessions (profile_id, title) values (%s, 'own')",
                (world.person(key).id,),
            )
    return db, world


def foreign_keys(db: Database) -> list[tuple[str, str, str, str]]:
    """(table, column, referenced schema.table, referenced column) of every single-column
    foreign key of a table in public."""
    rows = owner_rows(
        db,
        "select c.conrelid::regclass::text as tab, a.attname as col,"
        " c.confrelid::regclass::text as ref, fa.attname as refcol"
        " from pg_constraint c"
        " join pg_attribute a on a.attrelid = c.conrelid and a.attnum = c.conkey[1]"
        " join pg_attribute fa on fa.attrelid = c.confrelid and fa.attnum = c.confkey[1]"
        " where c.contype = 'f' and c.connamespace = 'public'::regnamespace"
        " and cardinality(c.conkey) = 1 order by 1, 2",
    )
    return [(r["tab"], r["col"], r["ref"], r["refcol"]) for r in rows]


def _own_session(db: Database, world: World, who: str) -> uuid.UUID:
    value = scalar(
        db,
        "select id from public.sessions where profile_id = %s and status = 'active'"
        " order by created_at limit 1",
        (world.person(who).id,),
    )
    assert isinstance(value, uuid.UUID)
    return value


def template(db: Database, world: World, who: str, table: str, column: str) -> dict[str, Any]:
    """A row of `table` that `who` could plausibly insert, `column` left for the probe."""
    me = world.person(who)
    company = world.companies[me.company]
    own = _own_session(db, world, who)
    rows: dict[str, dict[str, Any]] = {
        "profiles": {"id": uuid.uuid4(), "company_id": company, "display_name": "x"},
        "sessions": {"profile_id": me.id, "title": "probe"},
        "session_participants": {
            "session_id": own,
            "kind": "coach" if column == "profile_id" else "ai_buyer",
            "speaker_label": "probe",
        },
        "transcript_segments": {
            "session_id": own,
            "seq": 9000,
            "speaker": "trainee",
            "text": "probe",
            "start_ms": 0,
            "end_ms": 1,
        },
        "transcripts": {"session_id": own, "content": "probe"},
        "analysis_results": {
            "session_id": own,
            "provider": "probe",
            "analysis_type": "probe",
            "results": json.dumps({}),
        },
        "session_analytics": {"session_id": own},
        "gdpr_requests": {"kind": "export", "company_id": company},
        "company_invitations": {
            "company_id": company,
            "email": "probe@example.test",
            "token_hash": "a" * 64,
            "expires_at": "2100-01-01",
        },
    }
    return dict(rows[table.removeprefix("public.")])


def candidates(db: Database, world: World, who: str, ref: str, refcol: str) -> list[Any]:
    """Rows of `ref` that `who` cannot see (one per session status for sessions)."""
    everything = owner_rows(db, f"select {refcol} as k from {ref}")
    try:
        visible = {
            r["k"]
            for r in run(
                db, world.identity(who), f"select {refcol} as k from {ref}", commit=False
            ).rows
        }
    except psycopg.Error:
        visible = set()
    hidden = [r["k"] for r in everything if r["k"] not in visible]
    if ref == "profiles":
        # The session's owner may name people of their own company (coach, peer) without
        # reading their profiles: that is the feature. Other companies' people are probed.
        me = world.person(who)
        hidden = [
            k
            for k in hidden
            if k not in {p.id for p in world.people.values() if p.company == me.company}
        ]
    if ref == "sessions":
        by_status = owner_rows(
            db,
            "select distinct on (status) id from public.sessions where id = any(%s)"
            " order by status, id",
            (hidden,),
        )
        return [r["id"] for r in by_status]
    return hidden[:3]


@pytest.mark.parametrize("who", ["A1", "MA", "AA", "B1"])
def test_inserts_answer_alike_for_invisible_and_missing_rows(
    oracle_world: WorldDb, who: str
) -> None:
    db, world = oracle_world
    keys = foreign_keys(db)
    tables = {t for t, *_ in keys}
    assert {"sessions", "session_participants", "transcript_segments", "profiles"} <= tables
    probed = 0
    with unchanged(db):
        for table, column, ref, refcol in keys:
            hidden = candidates(db, world, who, ref, refcol)
            assert hidden, f"{who} sees every row of {ref}: nothing to probe"
            answers = {}
            for value in [*hidden, uuid.uuid4()]:
                row = template(db, world, who, table, column) | {column: value}
                query = sql.SQL("insert into {} ({}) values ({})").format(
                    sql.SQL(table),
                    sql.SQL(", ").join(map(sql.Identifier, row)),
                    sql.SQL(", ").join(sql.Placeholder() * len(row)),
                )
                answers[str(value)] = shape(
                    refusal(db, world.identity(who), query.as_string(None), list(row.values()))
                )
                probed += 1
            assert len(set(answers.values())) == 1, (table, column, who, answers)
    assert probed >= 2 * len(keys)


def test_a_trainee_writing_into_hidden_sessions_of_every_status(oracle_world: WorldDb) -> None:
    """The issue's example, spelt out: segments into B's sessions in each status and into a
    missing session get the same error, and it is not VS002."""
    db, world = oracle_world
    b_sessions = owner_rows(
        db,
        "select id, status::text from public.sessions where company_id = %s",
        (world.companies["B"],),
    )
    assert {r["status"] for r in b_sessions} >= {"active", "completed", "analyzed", "archived"}
    query = (
        "insert into public.transcript_segments (session_id, seq, speaker, text, start_ms,"
        " end_ms) values (%s, 1, 'trainee', 'x', 0, 1)"
    )
    answers = {
        shape(refusal(db, world.identity("A1"), query, (sid,)))
        for sid in [*(r["id"] for r in b_sessions), uuid.uuid4()]
    }
    assert answers == {("23503", "session <id> does not exist")}


# -- storage owners ---------------------------------------------------------------------------


def _own_object(db: Database, world: World, who: str) -> str:
    me = world.person(who)
    return f"{world.companies[me.company]}/{me.id}/{world.completed_session[who]}.webm"


@pytest.mark.parametrize("column", ["owner", "owner_id"])
@pytest.mark.parametrize("target", ["colleague", "other company", "random"])
@pytest.mark.parametrize("who", ["A1", "A2", "B1"])
def test_nobody_makes_someone_else_an_objects_owner(
    world_db: WorldDb, who: str, target: str, column: str
) -> None:
    db, world = world_db
    victim = {
        "colleague": world.person("A2" if who == "A1" else "A1").id,
        "other company": world.person("AB" if who != "B1" else "AA").id,
        "random": uuid.uuid4(),
    }[target]
    value: Any = victim if column == "owner" else str(victim)
    name = _own_object(db, world, who)
    me = world.identity(who)
    with unchanged(db):
        state, _ = refusal(
            db,
            me,
            f"insert into storage.objects (bucket_id, name, {column})"
            " values ('session-audio', %s, %s)",
            (name, value),
        )
    assert state == "42501"
    # Their own object, uploaded honestly, cannot be handed over either.
    run(
        db,
        me,
        "insert into storage.objects (bucket_id, name, owner, owner_id)"
        " values ('session-audio', %s, %s, %s)",
        (name, world.person(who).id, str(world.person(who).id)),
    )
    with unchanged(db):
        state, _ = refusal(
            db, me, f"update storage.objects set {column} = %s where name = %s", (value, name)
        )
    assert state == "42501"


def test_erasure_does_not_trust_an_objects_owner(world_db: WorldDb) -> None:
    db, world = world_db
    a1, a2 = world.person("A1"), world.person("A2")
    planted = _own_object(db, world, "A1")
    with owner(db) as conn:  # as a forged owner would look, had it got in
        conn.execute(
            "insert into storage.objects (bucket_id, name, owner, owner_id)"
            " values ('session-audio', %s, %s, %s)",
            (planted, a2.id, str(a2.id)),
        )
    report = run(
        db,
        world.identity("service_role"),
        "select public.gdpr_erase_user(%s, dry_run => true) as r",
        (a2.id,),
    ).rows[0]["r"]
    assert planted not in json.dumps(report)
    export = run(
        db, world.identity("service_role"), "select public.gdpr_export_user(%s) as r", (a2.id,)
    ).rows[0]["r"]
    assert planted not in json.dumps(export["storage_objects"])
    mine = run(
        db,
        world.identity("service_role"),
        "select public.gdpr_erase_user(%s, dry_run => true) as r",
        (a1.id,),
    ).rows[0]["r"]
    assert planted in json.dumps(mine)


# -- functions the API roles can execute -----------------------------------------------------

# Every function anon or authenticated may execute, with the check that makes it safe.
# A function added later fails test_every_executable_function_is_accounted_for until it is
# listed here with its own authorization.
EXECUTABLE: Mapping[str, str] = {
    "auth.email": "reads the caller's own claims",
    "auth.jwt": "reads the caller's own claims",
    "auth.role": "reads the caller's own claims",
    "auth.uid": "reads the caller's own claims",
    "storage.extension": "pure string function",
    "storage.filename": "pure string function",
    "storage.foldername": "pure string function",
    "private.admin_company_id": "definer; about the caller only",
    "private.managed_company_id": "definer; about the caller only",
    "private.my_company_id": "definer; about the caller only",
    "private.my_email": "definer; about the caller only",
    "private.is_end_user": "invoker; about the caller only",
    "private.gdpr_is_service_role": "invoker; about the caller only",
    "private.is_own_session_audio_path": "definer; true only for the caller's own sessions",
    "private.text_search_config": "pure",
    "private.session_id_from_topic": "pure",
    "private.transcript_segments_problem": "pure validation",
    "private.analysis_results_problem": "pure validation",
    "private.analytics_authorize_company": "invoker; authorizes the caller",
    "private.analytics_authorize_profile": "invoker; authorizes the caller",
    "private.analytics_check_window": "pure validation",
    "private.progress": "invoker; RLS applies",
    "private.clear_session_audio": "definer; private.session_for_audio_change",
    "private.record_session_audio": "definer; private.session_for_audio_change",
    "private.gdpr_anonymize_session": "definer; private.gdpr_authorize_session",
    "private.gdpr_apply_retention": "definer; private.gdpr_authorize_company",
    "private.gdpr_confirm_storage_removed": "definer; subject, admin of the request's company",
    "private.gdpr_check_storage_removal": "definer; subject, admin of the request's company",
    "private.gdpr_erase_user": "definer; private.gdpr_authorize",
    "private.gdpr_export_user": "definer; private.gdpr_authorize",
    "private.gdpr_pending_storage": "definer; private.gdpr_authorize / admin company",
    "private.record_analysis": "definer; owner (own metrics) or service role",
    "private.send_session_broadcast": "definer; see the 'live' hardening",
    "private.create_invitation": "definer; admin of the company or service role",
    "private.accept_invitation": "definer; the invitee (token, id or email)",
    "private.revoke_invitation": "definer; admin of the company or service role",
    "public.append_transcript_segments": "invoker; RLS applies",
    "public.broadcast_session_event": "invoker; reads the session under RLS first",
    "public.clear_session_audio": "invoker wrapper",
    "public.record_session_audio": "invoker wrapper",
    "private.dash_company_metrics": "definer; private.analytics_authorize_company first",
    "public.company_metrics": "invoker; RLS applies",
    "public.metrics_timeseries": "invoker; RLS applies",
    "public.team_overview": "invoker; RLS applies",
    "public.user_progress": "invoker; RLS applies",
    "public.list_sessions": "invoker; RLS applies",
    "public.search_transcripts": "invoker; RLS applies",
    "public.update_audio_metrics": "invoker; RLS applies",
    "public.record_analysis": "invoker wrapper",
    "public.gdpr_anonymize_session": "invoker wrapper",
    "public.gdpr_apply_retention": "invoker wrapper",
    "public.gdpr_confirm_storage_removed": "invoker wrapper",
    "public.gdpr_check_storage_removal": "invoker wrapper",
    "public.gdpr_erase_user": "invoker wrapper",
    "public.gdpr_export_user": "invoker wrapper",
    "public.gdpr_list_requests": "invoker; RLS applies",
    "public.gdpr_pending_storage": "invoker wrapper",
    "public.create_invitation": "invoker wrapper",
    "public.accept_invitation": "invoker wrapper",
    "public.revoke_invitation": "invoker wrapper",
    "private.caller_reads_session": "answers only what the caller's own RLS read would",
    "private.jsonb_problem": "pure function (CHECK constraints run it as the writer)",
    "private.transcript_words_problem": "pure function (CHECK constraints run it as the writer)",
    "private.session_event_problem": "pure function",
    "private.value_policy_check": "trigger function",
    "private.storage_object_values_ok": "pure function (storage policies run it as the writer)",
}
ANON_EXECUTABLE = frozenset(k for k in EXECUTABLE if k.split(".")[0] in ("auth", "storage"))


def executable(db: Database) -> list[dict[str, Any]]:
    return owner_rows(
        db,
        "select n.nspname || '.' || p.proname as name, p.oid::regprocedure::text as sig,"
        " p.prosecdef as definer, has_function_privilege('anon', p.oid, 'execute') as anon,"
        " coalesce(p.proargnames, '{}') as argnames,"
        " array(select format_type(t, null) from unnest(p.proargtypes) t) as argtypes,"
        " p.pronargs as nargs"
        " from pg_proc p join pg_namespace n on n.oid = p.pronamespace"
        f" where {SYSTEM_SCHEMAS} and p.prokind = 'f'"
        " and not exists (select 1 from pg_depend d where d.classid = 'pg_proc'::regclass"
        "   and d.objid = p.oid and d.deptype = 'e')"
        " and (has_function_privilege('anon', p.oid, 'execute')"
        "      or has_function_privilege('authenticated', p.oid, 'execute'))"
        " order by 1, 2",
    )


def test_every_executable_function_is_accounted_for(fresh_db: Database) -> None:
    found = executable(fresh_db)
    names = {f["name"] for f in found}
    assert sorted(names - EXECUTABLE.keys()) == [], "executable without a listed check"
    assert {f["name"] for f in found if f["anon"]} <= ANON_EXECUTABLE


def _argument(world: World, name: str, typ: str) -> Any:
    """Company A's thing for an argument name, seen from company B."""
    a1 = world.person("A1")
    path = f"{world.companies['A']}/{a1.id}/{world.completed_session['A1']}.webm"
    by_name: dict[str, Any] = {
        "session_id": world.completed_session["A1"],
        "subject_id": a1.id,
        "profile_id": a1.id,
        "company_id": world.companies["A"],
        "profile_ids": [a1.id],
        "path": path,
        "name": path,
        "paths": [path],
        "topic": f"session:{world.completed_session['A1']}",
    }
    if name in by_name:
        return by_name[name]
    return {
        "uuid": uuid.uuid4(),
        "text": "probe",
        "jsonb": json.dumps({}),
        "boolean": False,
        "integer": 1,
        "bigint": 1,
        "numeric": 0,
        "text[]": [],
        "uuid[]": [],
        "timestamp with time zone": None,
    }.get(typ)


# Known to another helper's area of the hardening (reported to the integrator).
OTHER_HELPERS: dict[str, str] = {}


@pytest.mark.parametrize("caller", ["B1", "AB"])
def test_definer_functions_refuse_another_companys_ids(world_db: WorldDb, caller: str) -> None:
    db, world = world_db
    found = [f for f in executable(db) if f["definer"] and f["nargs"] > 0]
    assert len(found) >= 15
    accepted = []
    for f in found:
        if f["name"] in OTHER_HELPERS or f["name"] == "private.accept_invitation":
            continue
        args = {
            n: _argument(world, n, t) for n, t in zip(f["argnames"], f["argtypes"], strict=False)
        }
        call = sql.SQL("select {}({}) as r").format(
            sql.SQL(f["name"]),
            sql.SQL(", ").join(sql.SQL(f"{n} => %({n})s") for n in args),
        )
        with unchanged(db):
            answer = outcome(db, world.identity(caller), call.as_string(None), args)
        if isinstance(answer, str):
            assert answer in {"42501", "P0002", "23503", "22023", "22004"}, (f["sig"], answer)
            continue
        result = answer.rows[0]["r"]
        # Answering is fine only when the answer says nothing about company A.
        if result not in (None, False, [], {}) and str(world.companies["A"]) in json.dumps(
            result, default=str
        ):
            accepted.append(f["sig"])
    assert accepted == []


# -- null safety flags ------------------------------------------------------------------------


def boolean_parameters(db: Database) -> list[tuple[dict[str, Any], str]]:
    return [
        (f, name)
        for f in executable(db) + _service_only(db)
        for name, typ in zip(f["argnames"], f["argtypes"], strict=False)
        if typ == "boolean"
    ]


def _service_only(db: Database) -> list[dict[str, Any]]:
    """Functions in public only the service role may execute (none today; kept generic)."""
    return owner_rows(
        db,
        "select n.nspname || '.' || p.proname as name, p.oid::regprocedure::text as sig,"
        " p.prosecdef as definer, false as anon, coalesce(p.proargnames, '{}') as argnames,"
        " array(select format_type(t, null) from unnest(p.proargtypes) t) as argtypes,"
        " p.pronargs as nargs from pg_proc p join pg_namespace n on n.oid = p.pronamespace"
        " where n.nspname = 'public' and p.prokind = 'f'"
        " and has_function_privilege('service_role', p.oid, 'execute')"
        " and not has_function_privilege('authenticated', p.oid, 'execute')",
    )


def test_safety_flags_are_found(fresh_db: Database) -> None:
    found = {(f["name"], n) for f, n in boolean_parameters(fresh_db)}
    assert {
        ("public.gdpr_erase_user", "dry_run"),
        ("public.gdpr_erase_user", "include_account"),
        ("public.gdpr_apply_retention", "dry_run"),
        ("private.gdpr_erase_user", "dry_run"),
    } <= found


NULL_FLAGS_OTHER_HELPERS: dict[tuple[str, str], str] = {}


@pytest.mark.parametrize("who", ["service_role", "AA", "A1"])
def test_a_null_safety_flag_is_refused_everywhere(world_db: WorldDb, who: str) -> None:
    """Every boolean parameter of every function the API roles can execute: null is 22004
    (never the destructive default), the message names the parameter, nothing changes."""
    db, world = world_db
    cases = boolean_parameters(db)
    for f, flag in cases:
        if (f["name"], flag) in NULL_FLAGS_OTHER_HELPERS:
            continue
        args = {
            n: _argument(world, n, t) for n, t in zip(f["argnames"], f["argtypes"], strict=False)
        }
        # Other flags at their safe setting, our own thing, the flag null.
        args |= {
            n: n in ("dry_run", "check_only")
            for n, t in zip(f["argnames"], f["argtypes"], strict=False)
            if t == "boolean"
        }
        args |= {
            "session_id": world.completed_session["A1"],
            "subject_id": world.person("A1").id,
            "company_id": world.companies["A"],
            flag: None,
        }
        args = {k: v for k, v in args.items() if k in f["argnames"]}
        call = sql.SQL("select {}({}) as r").format(
            sql.SQL(f["name"]),
            sql.SQL(", ").join(sql.SQL(f"{n} => %({n})s") for n in args),
        )
        with unchanged(db):
            state, message = refusal(db, world.identity(who), call.as_string(None), args)
        assert (state, flag in message) == ("22004", True), (f["sig"], flag, message)


# -- privileges -------------------------------------------------------------------------------


def test_the_run_migrated_under_the_default_privileges_it_says(fresh_db: Database) -> None:
    """With VOICESESSIONS_TEST_SUPABASE_DEFAULT_PRIVILEGES the template was migrated under
    Supabase's defaults, and keeps them: the migrations leave default privileges to the
    project and revoke per object (tests/db/test_default_privileges.py); without it, no
    default privilege names an API role."""
    rows = owner_rows(
        fresh_db,
        "select d.defaclobjtype::text as kind, a.grantee::regrole::text as role"
        " from pg_default_acl d, aclexplode(d.defaclacl) a"
        " where d.defaclnamespace = 'public'::regnamespace",
    )
    granted = {(r["kind"], r["role"]) for r in rows}
    api_roles = ("anon", "authenticated", "service_role")
    if supabase_defaults():
        assert granted >= {(kind, role) for kind in ("r", "S", "f") for role in api_roles}
    else:
        assert not {g for g in granted if g[1] in api_roles}


def test_api_roles_hold_no_privilege_on_any_sequence(fresh_db: Database) -> None:
    rows = owner_rows(
        fresh_db,
        "select c.oid::regclass::text as seq, r.role,"
        " has_sequence_privilege(r.role, c.oid, 'usage') as u,"
        " has_sequence_privilege(r.role, c.oid, 'select') as s,"
        " has_sequence_privilege(r.role, c.oid, 'update') as w"
        " from pg_class c join pg_namespace n on n.oid = c.relnamespace,"
        " (values ('anon'), ('authenticated')) r(role)"
        f" where c.relkind = 'S' and {SYSTEM_SCHEMAS}",
    )
    assert len(rows) >= 4  # the identity sequences of audit_log and transcript_segments
    assert [r for r in rows if r["u"] or r["s"] or r["w"]] == []


def test_nobody_can_setval_the_identity_sequences(fresh_db: Database) -> None:
    for who in (Identity.anon(), Identity.user(uuid.uuid4())):
        for seq in ("public.audit_log_id_seq", "public.transcript_segments_id_seq"):
            with unchanged(fresh_db):
                state, _ = refusal(fresh_db, who, "select setval(%s::regclass, 2147483647)", (seq,))
            assert state == "42501"


# What anon and authenticated hold, object by object (the README's table of who may do what):
# relation -> {role: privileges}, column privileges written as "priv(column)".
_READ = {"authenticated": {"SELECT"}}
DOCUMENTED_RELATION_GRANTS: Mapping[str, Mapping[str, set[str]]] = {
    "public.companies": {
        "authenticated": {"SELECT"}
        | {
            f"UPDATE({c})"
            for c in (
                "name",
                "audio_retention_days",
                "transcript_retention_days",
                "analysis_retention_days",
                "session_retention_days",
            )
        }
    },
    "public.profiles": {"authenticated": {"SELECT", "UPDATE(display_name)", "UPDATE(role)"}},
    "public.sessions": {
        "authenticated": {"SELECT"}
        | {
            f"INSERT({c})"
            for c in (
                "id",
                "profile_id",
                "company_id",
                "title",
                "status",
                "started_at",
                "ended_at",
                "audio_quality",
                "metadata",
            )
        }
        | {f"UPDATE({c})" for c in ("title", "status", "ended_at", "audio_quality", "metadata")}
    },
    "public.session_participants": {
        "authenticated": {"SELECT", "UPDATE(display_name)", "UPDATE(persona)"}
        | {
            f"INSERT({c})"
            for c in (
                "id",
                "session_id",
                "profile_id",
                "kind",
                "speaker_label",
                "display_name",
                "persona",
            )
        }
    },
    "public.transcript_segments": {
        "authenticated": {"SELECT"}
        | {
            f"INSERT({c})"
            for c in (
                "session_id",
                "profile_id",
                "company_id",
                "seq",
                "speaker",
                "text",
                "start_ms",
                "end_ms",
                "confidence",
                "words",
                "segment_id",
            )
        }
    },
    "public.transcripts": _READ,
    "public.analysis_results": _READ,
    "public.session_analytics": _READ,
    "public.audit_log": _READ,
    "public.gdpr_requests": _READ,
    "public.company_invitations": {
        "authenticated": {
            f"SELECT({c})"
            for c in (
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
        }
    },
    # Supabase's own Storage tables (RLS decides; policies in 20261126001200_storage_audio.sql).
    "storage.buckets": {
        r: {"SELECT", "INSERT", "UPDATE", "DELETE"} for r in ("anon", "authenticated")
    },
    "storage.objects": {
        r: {"SELECT", "INSERT", "UPDATE", "DELETE"} for r in ("anon", "authenticated")
    },
}
DOCUMENTED_SCHEMA_USAGE = {
    "anon": {"public", "auth", "storage", "extensions"},
    "authenticated": {"public", "private", "auth", "storage", "extensions"},
}


def relation_grants(db: Database) -> dict[str, dict[str, set[str]]]:
    rows = owner_rows(
        db,
        "select c.oid::regclass::text as rel, a.grantee::regrole::text as role,"
        " a.privilege_type as priv, null::text as col"
        " from pg_class c join pg_namespace n on n.oid = c.relnamespace,"
        " aclexplode(c.relacl) a"
        f" where c.relkind in ('r', 'p', 'v', 'm', 'f', 'S') and {SYSTEM_SCHEMAS}"
        " and a.grantee in ('anon'::regrole, 'authenticated'::regrole)"
        " union all"
        " select c.oid::regclass::text, a.grantee::regrole::text, a.privilege_type, att.attname"
        " from pg_class c join pg_namespace n on n.oid = c.relnamespace"
        " join pg_attribute att on att.attrelid = c.oid, aclexplode(att.attacl) a"
        f" where {SYSTEM_SCHEMAS} and a.grantee in ('anon'::regrole, 'authenticated'::regrole)",
    )
    found: dict[str, dict[str, set[str]]] = {}
    for r in rows:
        rel = r["rel"] if "." in r["rel"] else f"public.{r['rel']}"
        priv = r["priv"] if r["col"] is None else f"{r['priv']}({r['col']})"
        found.setdefault(rel, {}).setdefault(r["role"], set()).add(priv)
    return found


def test_api_roles_hold_exactly_the_documented_grants(fresh_db: Database) -> None:
    assert relation_grants(fresh_db) == DOCUMENTED_RELATION_GRANTS
    schemas = owner_rows(
        fresh_db,
        "select r.role, array_agg(n.nspname::text order by 1) as s"
        " from pg_namespace n, (values ('anon'), ('authenticated')) r(role)"
        f" where {SYSTEM_SCHEMAS} and has_schema_privilege(r.role, n.oid, 'usage')"
        " group by r.role",
    )
    assert {r["role"]: set(r["s"]) for r in schemas} == DOCUMENTED_SCHEMA_USAGE
    creators = owner_rows(
        fresh_db,
        "select n.nspname, r.role from pg_namespace n,"
        " (values ('anon'), ('authenticated')) r(role)"
        f" where {SYSTEM_SCHEMAS} and has_schema_privilege(r.role, n.oid, 'create')",
    )
    assert creators == []


# -- display names ----------------------------------------------------------------------------


@pytest.mark.parametrize("who", USERS)
def test_only_the_person_changes_their_display_name(world_db: WorldDb, who: str) -> None:
    db, world = world_db
    for key in USERS:
        query = "update public.profiles set display_name = 'Renamed' where id = %s"
        target = world.person(key).id
        if key == who:
            assert run(db, world.identity(who), query, (target,), commit=False).rowcount == 1
            continue
        with unchanged(db):
            answer = outcome(db, world.identity(who), query, (target,))
        # Refused where the row is visible, untouched where it is not.
        assert answer == "42501" if isinstance(answer, str) else answer.rowcount == 0, (who, key)
    # The service role may (support, provisioning).
    assert (
        run(
            db,
            world.identity("service_role"),
            "update public.profiles set display_name = 'Support fix' where id = %s",
            (world.person(who).id,),
            commit=False,
        ).rowcount
        == 1
    )


def test_role_changes_still_work_for_admins(world_db: WorldDb) -> None:
    db, world = world_db
    result = run(
        db,
        world.identity("AA"),
        "update public.profiles set role = 'manager' where id = %s",
        (world.person("A2").id,),
    )
    assert result.rowcount == 1
