"""A small two-company world every RLS and constraint test starts from.

Company A: trainees A1 and A2, manager MA, admin AA. Company B: trainee B1, admin AB.
Each trainee owns an *active* session (with an AI-buyer participant and three final
segments) and a *completed* one (with a transcript, an analysis and an analytics row). Each
company has an audit entry and a GDPR request; one auth user has no profile yet.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from typing import Any

import psycopg

from tests.support.api import Identity

TRAINEES = ("A1", "A2", "B1")

# Every table of the data model in schema public (tests check the database has exactly these).
PUBLIC_TABLES = (
    "companies",
    "profiles",
    "sessions",
    "session_participants",
    "transcript_segments",
    "transcripts",
    "analysis_results",
    "session_analytics",
    "audit_log",
    "gdpr_requests",
    "company_invitations",
)


@dataclass(frozen=True)
class Person:
    key: str
    id: uuid.UUID
    company: str
    role: str

    @property
    def identity(self) -> Identity:
        return Identity.user(self.id, email=f"{self.key.lower()}@example.test")


@dataclass
class World:
    companies: dict[str, uuid.UUID] = field(default_factory=dict)
    people: dict[str, Person] = field(default_factory=dict)
    # trainee key -> session ids
    active_session: dict[str, uuid.UUID] = field(default_factory=dict)
    completed_session: dict[str, uuid.UUID] = field(default_factory=dict)
    # an auth user with no profile yet (for "add a profile" cases)
    spare_user: uuid.UUID = field(default_factory=uuid.uuid4)

    def person(self, key: str) -> Person:
        return self.people[key]

    def identity(self, who: str) -> Identity:
        """The API identity of a person's key, or of "anon" / "service_role"."""
        if who == "anon":
            return Identity.anon()
        if who == "service_role":
            return Identity.service_role()
        return self.people[who].identity

    def sessions_of(self, key: str) -> set[uuid.UUID]:
        if key not in self.active_session:
            return set()
        return {self.active_session[key], self.completed_session[key]}

    def sessions_in(self, company: str) -> set[uuid.UUID]:
        found: set[uuid.UUID] = set()
        for key in TRAINEES:
            if self.people[key].company == company:
                found |= self.sessions_of(key)
        return found


PEOPLE = (
    ("A1", "A", "trainee"),
    ("A2", "A", "trainee"),
    ("MA", "A", "manager"),
    ("AA", "A", "admin"),
    ("B1", "B", "trainee"),
    ("AB", "B", "admin"),
)


def seed_world(conn: psycopg.Connection[object]) -> World:
    """Insert the world as the migration owner (RLS does not apply) and commit."""
    world = World()
    with conn.transaction():
        for company in ("A", "B"):
            row = conn.execute(
                "insert into public.companies (name) values (%s) returning id",
                (f"Company {company}",),
            ).fetchone()
            assert row is not None
            world.companies[company] = row[0]  # type: ignore[index]
        for key, company, role in PEOPLE:
            person = Person(key, uuid.uuid4(), company, role)
            world.people[key] = person
            conn.execute(
                "insert into auth.users (id, email, aud, role) values (%s, %s, 'authenticated',"
                " 'authenticated')",
                (person.id, f"{key.lower()}@example.test"),
            )
            conn.execute(
                "insert into public.profiles (id, company_id, role, display_name)"
                " values (%s, %s, %s, %s)",
                (person.id, world.companies[company], role, f"Person {key}"),
            )
        conn.execute(
            "insert into auth.users (id, email) values (%s, 'spare@example.test')",
            (world.spare_user,),
        )
        for key in TRAINEES:
            person = world.people[key]
            active = _one(
                conn,
                "insert into public.sessions (profile_id, title) values (%s, %s) returning id",
                (person.id, f"{key} live call"),
            )
            world.active_session[key] = active
            conn.execute(
                "insert into public.session_participants (session_id, kind, speaker_label,"
                " display_name, persona) values (%s, 'ai_buyer', 'buyer', 'Alex (buyer)',"
                ' \'{"scenario": "cold call"}\')',
                (active,),
            )
            for seq in range(3):
                conn.execute(
                    "insert into public.transcript_segments (session_id, seq, speaker, text,"
                    " start_ms, end_ms, confidence) values (%s, %s, %s, %s, %s, %s, 0.9)",
                    (
                        active,
                        seq,
                        "trainee" if seq % 2 == 0 else "buyer",
                        f"segment {seq}",
                        seq * 1000,
                        seq * 1000 + 900,
                    ),
                )
            done = _one(
                conn,
                "insert into public.sessions (profile_id, title, started_at)"
                " values (%s, %s, now() - interval '1 hour') returning id",
                (person.id, f"{key} finished call"),
            )
            world.completed_session[key] = done
            conn.execute("update public.sessions set status = 'completed' where id = %s", (done,))
            # It had no live segments, so completing it assembled no transcript; this one is
            # written afterwards, as a batch transcription job (service_role) would.
            conn.execute(
                "insert into public.transcripts (session_id, content, word_count)"
                " values (%s, 'hello there, how can I help', 6)",
                (done,),
            )
            conn.execute(
                "insert into public.analysis_results (session_id, provider, analysis_type,"
                " results) values (%s, 'test', 'overall', '{\"score\": 70}')",
                (done,),
            )
            conn.execute(
                "insert into public.session_analytics (session_id, overall_score) values (%s, 70)",
                (done,),
            )
        for company in ("A", "B"):
            conn.execute(
                "select private.audit('test.seed', 'company', %s, %s)",
                (world.companies[company], world.companies[company]),
            )
            conn.execute(
                "insert into public.gdpr_requests (kind, company_id, subject_ref)"
                " values ('export', %s, private.subject_ref(%s))",
                (world.companies[company], world.people[f"{company}1"].id),
            )
        for company, email, invitee in (
            ("A", "spare@example.test", None),
            ("B", None, world.spare_user),
        ):
            conn.execute(
                "insert into public.company_invitations (company_id, email, invitee_id,"
                " token_hash, expires_at) values (%s, %s, %s,"
                " private.invitation_token_hash(%s), now() + interval '7 days')",
                (world.companies[company], email, invitee, f"world-token-{company}"),
            )
    return world


def _one(conn: psycopg.Connection[object], query: str, params: tuple[object, ...]) -> uuid.UUID:
    row = conn.execute(query, params).fetchone()
    assert row is not None
    value = row[0]  # type: ignore[index]
    assert isinstance(value, uuid.UUID)
    return value


def add_sessions_in_every_status(conn: psycopg.Connection[Any], person: uuid.UUID) -> None:
    """Give ``person`` (a trainee of the world, who has an active and a completed session) a
    session in each remaining status: analyzed (only by recording an analysis, as service
    role) and archived. ``conn``: the owner's connection."""
    for status in ("analyzed", "archived"):
        sid = conn.execute(
            "insert into public.sessions (profile_id, title, started_at) values"
            " (%s, 'status probe', now() - interval '1 hour') returning id",
            (person,),
        ).fetchone()[0]  # type: ignore[index]
        conn.execute("update public.sessions set status = 'completed' where id = %s", (sid,))
        conn.execute("set role service_role")
        conn.execute(
            "select public.record_analysis(%s, 'probe', 'scoring',"
            " '{\"overall_score\": 50}'::jsonb)",
            (sid,),
        )
        conn.execute("reset role")
        if status == "archived":
            conn.execute("update public.sessions set status = 'archived' where id = %s", (sid,))
