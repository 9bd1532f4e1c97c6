"""GDPR functions of migration 20261126001000_gdpr.sql: erasure, storage confirmation,
anonymization, export, retention, request listing — with provable completeness.

Every call goes through :class:`tests.support.api.Api`, i.e. exactly as PostgREST runs an RPC
(login as ``authenticator``, one transaction, ``role`` and ``request.jwt.claims`` set
locally), as the identity named in the test, and is committed.

**The completeness scan** (:func:`scan`) reads every column of type text, varchar, char,
name, json, jsonb, uuid or tsvector (and arrays of them) of every table, partitioned table and
materialized view in every schema of the database except ``pg_catalog``,
``information_schema`` and the ``pg_toast``/``pg_temp`` ones: with the local bootstrap that
is ``auth``, ``extensions``, ``private``, ``public``, ``storage`` and
``supabase_migrations`` (plus whatever a later migration adds: the scan discovers it from
the catalog). :func:`test_scan_covers_every_textual_column` proves that every other column is
of a type that cannot hold a name, an email or a phrase, and prints what the scan covers.

Each test gets its own clone of the two-company world (``world_db``).
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import psycopg
import pytest
from psycopg import sql
from psycopg.rows import TupleRow

from tests.conftest import Database
from tests.support.api import Identity
from tests.support.db import (
    SYSTEM_SCHEMAS,
    data_tables,
    owner,
    owner_rows,
    scalar,
    unchanged,
)
from tests.support.supabase import AUTH_AUDIT_LOG_DDL
from tests.support.world import World

WorldDb = tuple[Database, World]
Params = Sequence[Any] | Mapping[str, Any]

# Column types the scan reads (by pg_type.typname) and, for the coverage proof, the types that
# cannot hold free text (numbers, times, booleans, network addresses, enums are checked
# separately).
SCANNED_TYPES = ("json", "jsonb", "uuid", "tsvector")
NON_TEXT_TYPES = frozenset(
    {
        "bool",
        "int2",
        "int4",
        "int8",
        "numeric",
        "float4",
        "float8",
        "timestamptz",
        "timestamp",
        "date",
        "time",
        "timetz",
        "interval",
        "inet",
        "regconfig",
        "oid",
        "_int2",
        "_int4",
        "_int8",
    }
)
AUDIO_BUCKET = "session-audio"
ANON = "[anonymized]"


# -- helpers ------------------------------------------------------------------------------


def who_is(world: World, who: str | Identity) -> Identity:
    return who if isinstance(who, Identity) else world.identity(who)


def api_rows(
    db: Database, world: World, who: str | Identity, query: str, params: Params | None = None
) -> list[dict[str, Any]]:
    """Rows of one committed API request as ``who``."""
    with db.api() as api:
        return api.run(who_is(world, who), query, params, commit=True).rows


def rpc(
    db: Database, world: World, who: str | Identity, call: str, params: Params | None = None
) -> Any:
    """The value of ``select <call>`` run as one committed API request as ``who``."""
    rows = api_rows(db, world, who, f"select {call} as result", params)
    assert len(rows) == 1
    return rows[0]["result"]


def assert_refused(
    db: Database,
    world: World,
    who: str | Identity,
    call: str,
    params: Params | None,
    sqlstate: str = "42501",
) -> psycopg.Error:
    """``who`` calls ``call`` as a committed API request: refused with ``sqlstate``, no trace."""
    with unchanged(db):
        with pytest.raises(psycopg.Error) as excinfo:
            rpc(db, world, who, call, params)
        assert excinfo.value.sqlstate == sqlstate, (
            f"{who}: expected {sqlstate}, got {excinfo.value.sqlstate}: {excinfo.value}"
        )
    return excinfo.value


def audio_path(world: World, company: str, profile_id: uuid.UUID, session_id: uuid.UUID) -> str:
    """The planned Storage layout: ``<company_id>/<profile_id>/<session_id>.<ext>``."""
    return f"{world.companies[company]}/{profile_id}/{session_id}.wav"


def add_audio(
    db: Database, world: World, session_id: uuid.UUID, *, with_object: bool = True
) -> str:
    """Gives a session an audio file: audio_path on the row and (as the Storage API would
    have created it) an object in the ``session-audio`` bucket."""
    with owner(db) as conn:
        row = conn.execute(
            "select s.profile_id, c.name from public.sessions s"
            " join public.companies c on c.id = s.company_id where s.id = %s",
            (session_id,),
        ).fetchone()
        assert row is not None
        profile_id, company_name = row
        company = company_name.removeprefix("Company ")
        path = audio_path(world, company, profile_id, session_id)
        conn.execute(
            "update public.sessions set audio_path = %s, audio_size_bytes = 48000 where id = %s",
            (path, session_id),
        )
        if with_object:
            add_object(conn, path, profile_id)
    return path


def add_object(conn: psycopg.Connection[TupleRow], path: str, owner_id: uuid.UUID) -> None:
    conn.execute(
        "insert into storage.buckets (id, name) values (%s, %s) on conflict do nothing",
        (AUDIO_BUCKET, AUDIO_BUCKET),
    )
    conn.execute(
        "insert into storage.objects (bucket_id, name, owner, owner_id, metadata)"
        ' values (%s, %s, %s, %s, \'{"size": 48000, "mimetype": "audio/wav"}\')',
        (AUDIO_BUCKET, path, owner_id, str(owner_id)),
    )


def storage_api_remove(db: Database, paths: Sequence[str]) -> None:
    """What the Storage API does for ``remove(paths)``: the objects' rows go (with the files)."""
    with owner(db) as conn:
        conn.execute(
            "delete from storage.objects where bucket_id = %s and name = any(%s)",
            (AUDIO_BUCKET, list(paths)),
        )


def count(db: Database, table: str, where: str = "true", params: Params | None = None) -> int:
    return int(scalar(db, f"select count(*) from {table} where {where}", params))


def subject_ref(db: Database, subject: uuid.UUID) -> str:
    return str(scalar(db, "select private.subject_ref(%s)", (subject,)))


def new_session(
    db: Database,
    profile_id: uuid.UUID,
    *,
    title: str = "practice call",
    ended_days_ago: float | None = 0.01,
    segments: Sequence[str] = (),
    metadata: str = "{}",
) -> uuid.UUID:
    """A session of ``profile_id`` with final segments, completed ``ended_days_ago`` days ago
    (still active when None)."""
    with owner(db) as conn:
        ago = 0.02 if ended_days_ago is None else ended_days_ago + 0.01
        row = conn.execute(
            "insert into public.sessions (profile_id, title, started_at, metadata)"
            " values (%s, %s, now() - make_interval(secs => %s * 86400), %s) returning id",
            (profile_id, title, ago, metadata),
        ).fetchone()
        assert row is not None
        session_id: uuid.UUID = row[0]
        for seq, text in enumerate(segments):
            conn.execute(
                "insert into public.transcript_segments (session_id, seq, speaker, text,"
                " start_ms, end_ms, words) values (%s, %s, %s, %s, %s, %s, %s)",
                (
                    session_id,
                    seq,
                    "trainee" if seq % 2 == 0 else "buyer",
                    text,
                    seq * 1000,
                    seq * 1000 + 900,
                    '[{"w": "x", "start": 0}]',
                ),
            )
        if ended_days_ago is not None:
            conn.execute(
                "update public.sessions set status = 'completed',"
                " ended_at = now() - make_interval(secs => %s * 86400) where id = %s",
                (ended_days_ago, session_id),
            )
    return session_id


# -- the completeness scan ------------------------------------------------------------------


@dataclass(frozen=True)
class Column:
    schema: str
    table: str
    name: str
    type: str

    @property
    def table_name(self) -> str:
        return f"{self.schema}.{self.table}"

    def __str__(self) -> str:
        return f"{self.schema}.{self.table}.{self.name}"


def scanned_columns(conn: psycopg.Connection[TupleRow]) -> list[Column]:
    """Every column that can hold text, an id or a document, in every data table."""
    found = conn.execute(
        "select n.nspname, c.relname, a.attname, format_type(a.atttypid, a.atttypmod)"
        " from pg_attribute a join pg_class c on c.oid = a.attrelid"
        " join pg_namespace n on n.oid = c.relnamespace join pg_type t on t.oid = a.atttypid"
        " left join pg_type e on e.oid = t.typelem and t.typcategory = 'A'"
        " where c.relkind in ('r', 'p', 'm') and not c.relispartition and a.attnum > 0"
        f" and not a.attisdropped and {SYSTEM_SCHEMAS}"
        " and (t.typcategory = 'S' or t.typname = any(%(types)s)"
        "      or (e.oid is not null and (e.typcategory = 'S' or e.typname = any(%(types)s))))"
        " order by 1, 2, a.attnum",
        {"types": list(SCANNED_TYPES)},
    ).fetchall()
    return [Column(str(s), str(t), str(c), str(ty)) for s, t, c, ty in found]


def primary_key(conn: psycopg.Connection[TupleRow], schema: str, table: str) -> list[str]:
    found = conn.execute(
        "select a.attname from pg_index i join pg_attribute a on a.attrelid = i.indrelid"
        " and a.attnum = any(i.indkey) where i.indisprimary"
        " and i.indrelid = format('%%I.%%I', %s::text, %s::text)::regclass order by a.attnum",
        (schema, table),
    ).fetchall()
    return [str(r[0]) for r in found]


@dataclass
class ScanResult:
    columns: list[Column]
    # column -> primary keys (as text) of the rows where a needle was found
    hits: dict[str, set[str]] = field(default_factory=dict)
    # table -> primary keys of the rows with a hit
    rows: dict[str, set[str]] = field(default_factory=dict)


def scan(db: Database, needles: Sequence[str]) -> ScanResult:
    """Finds every row, in every table of every non-system schema, where any textual, JSON or
    uuid column contains one of ``needles`` (case-insensitively)."""
    patterns = ["%" + re.sub(r"([%_\\])", r"\\\1", n) + "%" for n in needles]
    with owner(db) as conn:
        columns = scanned_columns(conn)
        result = ScanResult(columns)
        keys: dict[str, sql.Composable] = {}
        for column in columns:
            if column.table_name not in keys:
                # A row as the export names it (transcript segments: by id, although their
                # primary key is (id, session_id) on the partitioned table), else its key.
                pk = (
                    [EXPORT_SECTIONS[column.table_name][1]]
                    if column.table_name in EXPORT_SECTIONS
                    else primary_key(conn, column.schema, column.table)
                )
                keys[column.table_name] = (
                    sql.SQL(" || '|' || ").join(
                        sql.SQL("{}::text").format(sql.Identifier(k)) for k in pk
                    )
                    if pk
                    else sql.SQL("ctid::text")
                )
            found = conn.execute(
                sql.SQL("select {} from {}.{} where {}::text ilike any(%s)").format(
                    keys[column.table_name],
                    sql.Identifier(column.schema),
                    sql.Identifier(column.table),
                    sql.Identifier(column.name),
                ),
                (patterns,),
            ).fetchall()
            if found:
                pks = {str(r[0]) for r in found}
                result.hits[str(column)] = pks
                result.rows.setdefault(column.table_name, set()).update(pks)
    return result


# -- a data subject with everything ------------------------------------------------------


@dataclass
class Subject:
    id: uuid.UUID
    email: str
    name: str
    phrases: tuple[str, ...]
    sessions: list[uuid.UUID]
    anonymized_session: uuid.UUID
    coached_session: uuid.UUID
    audio_paths: list[str]
    orphan_path: str

    @property
    def identity(self) -> Identity:
        return Identity.user(self.id, email=self.email)

    @property
    def needles(self) -> list[str]:
        return [str(self.id), self.email, self.name, *self.phrases]


# Supabase tables the local bootstrap does not create, with the columns the functions read:
# GoTrue's audit log and Realtime's broadcast messages (a plain table here; partitioned by day
# on Supabase, which the functions do not depend on).
SUPABASE_ONLY_DDL = (
    AUTH_AUDIT_LOG_DDL,
    "create schema if not exists realtime",
    "create table realtime.messages (id uuid primary key default gen_random_uuid(),"
    " topic text not null, extension text not null default 'broadcast', payload jsonb,"
    " event text, private boolean default true, updated_at timestamp not null default now(),"
    " inserted_at timestamp not null default now())",
)


def create_supabase_only_tables(conn: psycopg.Connection[TupleRow]) -> None:
    for statement in SUPABASE_ONLY_DDL:
        conn.execute(statement)


def broadcast(conn: psycopg.Connection[TupleRow], session_id: uuid.UUID, text: str) -> None:
    """What realtime.send leaves behind for a transcript chunk sent to the session's channel."""
    conn.execute(
        "insert into realtime.messages (topic, event, payload) values (%s, 'transcript_chunk',"
        " jsonb_build_object('text', %s::text))",
        (f"session:{session_id}", text),
    )


def seed_subject(db: Database, world: World) -> Subject:
    """A trainee of company A with everything the database can hold about a person:
    auth user (email, metadata), identity, GoTrue audit entries, profile; three sessions
    (two completed with transcript, analysis with nested personal keys, analytics and audio,
    one active) whose segments carry distinctive phrases and whose live events left
    Broadcast copies; an orphan upload in their Storage folder; a participation as coach in
    A2's session; an earlier self-service export and an anonymization of a fourth session
    whose audio is still pending in Storage."""
    token = uuid.uuid4().hex[:8]
    subject_id = uuid.uuid4()
    email = f"quorvath.{token}@example.test"
    name = f"Quorvath Zelinski{token}"
    phrases = (f"zorblax{token}7", f"frimple{token}3", f"quandor{token}9")
    company = world.companies["A"]
    with owner(db) as conn:
        conn.execute(
            "insert into auth.users (id, email, aud, role, raw_user_meta_data)"
            " values (%s, %s, 'authenticated', 'authenticated', %s)",
            (subject_id, email, f'{{"full_name": "{name}", "email": "{email}"}}'),
        )
        conn.execute(
            "insert into auth.identities (provider_id, user_id, identity_data, provider)"
            " values (%s, %s, %s, 'email')",
            (str(subject_id), subject_id, f'{{"sub": "{subject_id}", "email": "{email}"}}'),
        )
        create_supabase_only_tables(conn)
        conn.execute(
            "insert into auth.audit_log_entries (id, payload) values"
            " (gen_random_uuid(), %s), (gen_random_uuid(), %s), (gen_random_uuid(), %s)",
            (
                f'{{"actor_id": "{subject_id}", "actor_username": "{email}",'
                ' "action": "login", "log_type": "account"}',
                '{"actor_id": "00000000-0000-0000-0000-000000000000", "action":'
                f' "user_invited", "traits": {{"user_id": "{subject_id}",'
                f' "user_email": "{email}"}}}}',
                f'{{"actor_id": "{world.person("A2").id}", "action": "login"}}',
            ),
        )
        conn.execute(
            "insert into public.profiles (id, company_id, role, display_name)"
            " values (%s, %s, 'trainee', %s)",
            (subject_id, company, name),
        )
        # The invitation they accepted, and one to their email they have not (yet).
        for accepted in (True, False):
            conn.execute(
                "insert into public.company_invitations (company_id, email, token_hash,"
                " expires_at, accepted_at, accepted_by) values (%s, %s,"
                " private.invitation_token_hash(gen_random_uuid()::text),"
                " now() + interval '1 day', case when %s then now() end, %s)",
                (company, email.lower(), accepted, subject_id if accepted else None),
            )
    sessions = [
        new_session(
            db,
            subject_id,
            title=f"Discovery call of {name}",
            segments=[f"I am {name}, {phrases[0]}", f"buyer says {phrases[1]}"],
            metadata=f'{{"notes": "{phrases[2]}", "contact": {{"email": "{email}"}},'
            ' "scenario": "cold-call"}',
        ),
        new_session(db, subject_id, segments=[f"second call {phrases[1]}", "fine"]),
        new_session(db, subject_id, ended_days_ago=None, segments=[f"live {phrases[2]}"]),
    ]
    audio_paths = [add_audio(db, world, s) for s in sessions[:2]]
    orphan_path = f"{company}/{subject_id}/{uuid.uuid4()}.webm"
    anonymized = new_session(db, subject_id, segments=[f"to anonymize {phrases[0]}"])
    audio_paths.append(add_audio(db, world, anonymized))
    coached = world.completed_session["A2"]
    with owner(db) as conn:
        add_object(conn, orphan_path, subject_id)
        broadcast(conn, sessions[2], f"live {phrases[2]}")
        broadcast(conn, sessions[0], f"chunk {phrases[0]}")
        broadcast(conn, world.active_session["A2"], "someone else's chunk")
        # (Completing a session assembled its transcript from the segments.)
        for session_id in [*sessions[:2], anonymized]:
            conn.execute(
                "insert into public.analysis_results (session_id, provider, analysis_type,"
                " results) values (%s, 'openai', 'coaching', %s)",
                (
                    session_id,
                    '{"score": 81, "feedback": {"strengths": ["rapport"], "quotes": ['
                    f'"{phrases[0]}"], "items": [{{"excerpt": "{phrases[1]}", "speaker_name":'
                    f' "{name}", "score": 3}}]}}, "personal_context": {{"email": "{email}"}},'
                    ' "criteria": [{"id": "opening", "passed": true}]}',
                ),
            )
            conn.execute(
                # completing it measured the call: the scores join its metrics
                "insert into public.session_analytics (session_id, overall_score,"
                " skill_scores) values (%s, 81, '{\"opening\": 80}') on conflict (session_id)"
                " do update set overall_score = excluded.overall_score,"
                " skill_scores = excluded.skill_scores",
                (session_id,),
            )
            conn.execute(
                "insert into public.session_participants (session_id, kind, speaker_label,"
                " display_name, persona) values (%s, 'ai_buyer', 'buyer', 'Alex', %s)",
                (session_id, f'{{"scenario": "cold", "personal_context": "{name}"}}'),
            )
        conn.execute(
            "insert into public.session_participants (session_id, profile_id, kind,"
            " speaker_label, display_name) values (%s, %s, 'coach', 'coach', %s)",
            (coached, subject_id, name),
        )
    subject = Subject(
        id=subject_id,
        email=email,
        name=name,
        phrases=phrases,
        sessions=sessions,
        anonymized_session=anonymized,
        coached_session=coached,
        audio_paths=audio_paths,
        orphan_path=orphan_path,
    )
    # The person used their rights before: an export, and an anonymization whose audio has
    # not been deleted from Storage yet.
    rpc(db, world, subject.identity, "public.gdpr_export_user(%s)", (subject_id,))
    report = rpc(db, world, subject.identity, "public.gdpr_anonymize_session(%s)", (anonymized,))
    assert report["status"] == "in_progress"
    return subject


# -- what the scan covers -------------------------------------------------------------------


def test_scan_covers_every_textual_column(world_db: WorldDb) -> None:
    """Every column of every data table outside the system schemas is either scanned or of
    a type that cannot hold a name, an email, a phrase or an id (numbers, times, booleans,
    enums...). Prints the coverage."""
    db, _ = world_db
    with owner(db) as conn:
        create_supabase_only_tables(conn)  # as in the completeness test
        columns = scanned_columns(conn)
        tables = data_tables(conn)
        every = conn.execute(
            "select n.nspname, c.relname, a.attname, t.typname, t.typtype"
            " from pg_attribute a join pg_class c on c.oid = a.attrelid"
            " join pg_namespace n on n.oid = c.relnamespace join pg_type t on t.oid = a.atttypid"
            " where c.relkind in ('r', 'p', 'm') and not c.relispartition and a.attnum > 0"
            f" and not a.attisdropped and {SYSTEM_SCHEMAS}"
        ).fetchall()
    scanned = {str(c) for c in columns}
    not_scanned = {
        f"{s}.{t}.{c}": (str(typname), str(typtype))
        for s, t, c, typname, typtype in every
        if f"{s}.{t}.{c}" not in scanned
    }
    unexplained = {
        column: typname
        for column, (typname, typtype) in not_scanned.items()
        if typname not in NON_TEXT_TYPES and typtype != "e"  # enums hold fixed labels
    }
    assert unexplained == {}
    schemas = sorted({c.schema for c in columns})
    assert {"auth", "private", "public", "realtime", "storage", "supabase_migrations"} <= set(
        schemas
    )
    must = {
        "auth.users.email",
        "auth.users.raw_user_meta_data",
        "auth.identities.identity_data",
        "auth.audit_log_entries.payload",
        "realtime.messages.payload",
        "realtime.messages.topic",
        "storage.objects.name",
        "storage.objects.owner_id",
        "public.profiles.display_name",
        "public.sessions.title",
        "public.sessions.metadata",
        "public.transcript_segments.text",
        "public.transcript_segments.words",
        "public.transcripts.content",
        "public.transcripts.search_vector",
        "public.analysis_results.results",
        "public.session_participants.persona",
        "public.audit_log.details",
        "public.gdpr_requests.details",
        "public.gdpr_requests.requested_by",
        "supabase_migrations.schema_migrations.statements",
    }
    assert must <= scanned
    print(
        f"\ncompleteness scan: {len(columns)} columns of {len({c.table_name for c in columns})}"
        f" tables ({len(tables)} tables in all) in schemas {', '.join(schemas)};"
        f" {len(not_scanned)} other columns are numbers, times, booleans or enums"
    )


# -- erasure: completeness ----------------------------------------------------------------


def rows_outside_pending(db: Database, request_ids: set[str], needles: Sequence[str]) -> list[str]:
    """gdpr_requests rows among ``request_ids`` whose details mention a needle outside
    ``details.pending_storage`` (or whose other columns do)."""
    patterns = ["%" + n + "%" for n in needles]
    found = owner_rows(
        db,
        "select r.id::text as id from public.gdpr_requests r where r.id::text = any(%s)"
        " and ((to_jsonb(r) - 'details')::text ilike any(%s)"
        "      or (r.details - 'pending_storage')::text ilike any(%s))",
        (list(request_ids), patterns, patterns),
    )
    return [r["id"] for r in found]


def test_erasure_leaves_nothing_about_the_person(world_db: WorldDb) -> None:
    db, world = world_db
    subject = seed_subject(db, world)
    before = scan(db, subject.needles)
    # The seed put the person everywhere the scan can look.
    for column in (
        "auth.users.email",
        "auth.users.raw_user_meta_data",
        "auth.identities.identity_data",
        "auth.audit_log_entries.payload",
        "realtime.messages.payload",
        "storage.objects.name",
        "public.profiles.display_name",
        "public.sessions.title",
        "public.sessions.metadata",
        "public.transcript_segments.text",
        "public.transcripts.content",
        "public.transcripts.search_vector",
        "public.analysis_results.results",
        "public.session_participants.profile_id",
        "public.session_analytics.profile_id",
        "public.gdpr_requests.details",  # the anonymization's pending audio path
    ):
        assert column in before.hits, column
    other_users_rows = fingerprint_of_others(db, world)

    report = rpc(
        db,
        world,
        "service_role",
        "public.gdpr_erase_user(%s, include_account => true)",
        (subject.id,),
    )
    assert report["counts"] == {
        "sessions": 4,
        # the trainee in each session, the AI buyer in three, the coaching in A2's session
        "participants": 4 + 3 + 1,
        "segments": 6,
        "transcripts": 3,
        # the coaching analyses, and the conversation metrics measured on completion
        "analyses": 3 + 3,
        "analytics": 3,
        "broadcasts": 2,
        "profile": 1,
        "account": 1,
        "identities": 1,
        "auth_audit_entries": 2,
    }
    assert report["status"] == "in_progress"
    assert report["stores"] == ["database", "storage"]
    erasure_id = report["request_id"]
    anonymization_id = only_open_request(db, subject, kind="anonymization")
    pending = {(p["request_id"], p["path"]) for p in report["pending_storage"]}
    assert pending == {
        (erasure_id, subject.audio_paths[0]),
        (erasure_id, subject.audio_paths[1]),
        (erasure_id, subject.orphan_path),
        (anonymization_id, subject.audio_paths[2]),
    }

    # Until Storage confirms, the only traces are the objects themselves (the Storage API
    # has not deleted them yet) and their paths (which contain the person's id) in the
    # pending lists of the requests that must delete them.
    after = scan(db, subject.needles)
    assert set(after.rows) == {"public.gdpr_requests", "storage.objects"}, after.hits
    assert after.rows["public.gdpr_requests"] == {erasure_id, anonymization_id}
    assert rows_outside_pending(db, {erasure_id, anonymization_id}, subject.needles) == []
    remaining_objects = owner_rows(
        db,
        "select id::text, name from storage.objects where id::text = any(%s)",
        (list(after.rows["storage.objects"]),),
    )
    assert {o["name"] for o in remaining_objects} == {p for _, p in pending}

    # The SDK deletes the objects through the Storage API, then confirms per request.
    for request_id in (erasure_id, anonymization_id):
        paths = [p for r, p in pending if r == request_id]
        storage_api_remove(db, paths)
        confirmed = rpc(
            db,
            world,
            "service_role",
            "public.gdpr_confirm_storage_removed(%s, %s)",
            (request_id, paths),
        )
        assert confirmed["removed"] == len(paths)
        assert confirmed["remaining"] == []
        assert confirmed["status"] == "completed"

    final = scan(db, subject.needles)
    assert final.hits == {}, final.hits
    # Nobody else lost anything.
    assert fingerprint_of_others(db, world) == other_users_rows

    # The records survive, with none of the erased content.
    ref = subject_ref(db, subject.id)
    requests = owner_rows(
        db,
        "select kind::text, status::text, requested_by, completed_at is not null as done,"
        " details from public.gdpr_requests where subject_ref = %s order by requested_at",
        (ref,),
    )
    assert [(r["kind"], r["status"], r["done"]) for r in requests] == [
        ("export", "completed", True),
        ("anonymization", "completed", True),
        ("erasure", "completed", True),
    ]
    assert all(r["requested_by"] is None for r in requests)  # self-service, then service role
    assert all(r["details"]["pending_storage"] == [] for r in requests if r["kind"] != "export")
    audit = owner_rows(
        db,
        "select action, actor_id, actor_role, entity_id, details from public.audit_log"
        " where subject_ref = %s order by id",
        (ref,),
    )
    assert [a["action"] for a in audit] == [
        "gdpr.export",
        "gdpr.anonymize",
        "gdpr.erase",
        "gdpr.storage_removed",
        "gdpr.storage_removed",
    ]
    assert [a["actor_role"] for a in audit] == ["authenticated"] * 2 + ["service_role"] * 3
    assert all(a["actor_id"] is None for a in audit)
    erase_entry = audit[2]["details"]
    assert erase_entry["counts"] == report["counts"]
    assert erase_entry["stores"] == ["database", "storage"]
    assert set(erase_entry) == {
        "request_id",
        "categories",
        "counts",
        "stores",
        "include_account",
        "pending_storage_count",
    }

    # Erasing again finds nothing and writes nothing.
    with unchanged(db):
        again = rpc(
            db,
            world,
            "service_role",
            "public.gdpr_erase_user(%s, include_account => true)",
            (subject.id,),
        )
    assert again["already_erased"] is True
    assert set(again["counts"].values()) == {0}
    assert again["pending_storage"] == []
    assert again["request_id"] == erasure_id


def fingerprint_of_others(db: Database, world: World) -> dict[str, tuple[int, str]]:
    """Fingerprint of the data tables, restricted to rows about the world's people."""
    ids = [str(p.id) for p in world.people.values()]
    result: dict[str, tuple[int, str]] = {}
    with owner(db) as conn:
        for table, column in (
            ("public.profiles", "id"),
            ("public.sessions", "profile_id"),
            ("public.transcript_segments", "profile_id"),
            ("public.transcripts", "profile_id"),
            ("public.analysis_results", "profile_id"),
            ("public.session_analytics", "profile_id"),
            ("auth.users", "id"),
        ):
            row = conn.execute(
                sql.SQL(
                    "select count(*), md5(coalesce(string_agg(t::text, ',' order by t::text),"
                    " '')) from {} t where {}::text = any(%s)"
                ).format(sql.SQL(table), sql.Identifier(column)),
                (ids,),
            ).fetchone()
            assert row is not None
            result[table] = (int(row[0]), str(row[1]))
        # Participants of the world's sessions, except the person's coaching row.
        row = conn.execute(
            "select count(*), md5(string_agg(p::text, ',' order by p::text))"
            " from public.session_participants p join public.sessions s on s.id = p.session_id"
            " where s.profile_id::text = any(%s) and p.kind <> 'coach'",
            (ids,),
        ).fetchone()
        assert row is not None
        result["public.session_participants"] = (int(row[0]), str(row[1]))
        row = conn.execute(
            "select count(*) from auth.audit_log_entries where payload ->> 'actor_id' = %s",
            (str(world.person("A2").id),),
        ).fetchone()
        assert row is not None
        result["auth.audit_log_entries"] = (int(row[0]), "")
    return result


def only_open_request(db: Database, subject: Subject, *, kind: str) -> str:
    found = owner_rows(
        db,
        "select id::text from public.gdpr_requests where subject_ref = %s and kind = %s"
        " and status <> 'completed'",
        (subject_ref(db, subject.id), kind),
    )
    assert len(found) == 1
    return str(found[0]["id"])


# Where the export puts the rows of each table the scan may find, and their key.
EXPORT_SECTIONS = {
    "auth.users": ("account", "id"),
    "auth.identities": ("identities", "id"),
    "auth.audit_log_entries": ("auth_audit_log", "id"),
    "realtime.messages": ("broadcasts", "id"),
    "storage.objects": ("storage_objects", "id"),
    "public.profiles": ("profile", "id"),
    "public.sessions": ("sessions", "id"),
    "public.session_participants": ("participants", "id"),
    "public.transcript_segments": ("segments", "id"),
    "public.transcripts": ("transcripts", "id"),
    "public.analysis_results": ("analysis_results", "id"),
    "public.session_analytics": ("session_analytics", "session_id"),
    "public.audit_log": ("audit_log", "id"),
    "public.gdpr_requests": ("gdpr_requests", "id"),
    "public.company_invitations": ("invitations", "id"),
}


def exported_keys(export: dict[str, Any], section: str, key: str) -> set[str]:
    value = export[section]
    items = value if isinstance(value, list) else [value] if value else []
    return {str(item[key]) for item in items}


@pytest.mark.parametrize("who", ["service_role", "subject", "AA"])
def test_export_contains_every_row_the_scan_finds(world_db: WorldDb, who: str) -> None:
    db, world = world_db
    subject = seed_subject(db, world)
    found = scan(db, subject.needles)
    caller = subject.identity if who == "subject" else who
    export = rpc(db, world, caller, "public.gdpr_export_user(%s)", (subject.id,))

    assert export["schema"] == "voicesessions.export"
    assert export["version"] == 1
    assert export["subject"] == {
        "id": str(subject.id),
        "email": subject.email,
        "subject_ref": subject_ref(db, subject.id),
    }
    assert export["company"] == {"name": "Company A"}
    assert set(found.rows) <= set(EXPORT_SECTIONS), set(found.rows) - set(EXPORT_SECTIONS)
    for table, keys in found.rows.items():
        section, key = EXPORT_SECTIONS[table]
        missing = keys - exported_keys(export, section, key)
        assert not missing, f"{table}: rows {missing} are about the person but not exported"
    # And every row of the person's sessions, found by the scan or not (the AI buyer, the
    # phrase-free segments, analytics...).
    for table, section, key in (
        ("public.sessions", "sessions", "id"),
        ("public.transcript_segments", "segments", "id"),
        ("public.session_participants", "participants", "id"),
        ("public.session_analytics", "session_analytics", "session_id"),
    ):
        column = "id" if table == "public.sessions" else "session_id"
        expected = {
            str(r["k"])
            for r in owner_rows(
                db,
                f"select {key}::text as k from {table} where {column} in"
                " (select id from public.sessions where profile_id = %s)",
                (subject.id,),
            )
        }
        assert expected <= exported_keys(export, section, key), table
    assert {o["path"] for o in export["storage_objects"]} == {
        *subject.audio_paths[:2],
        subject.orphan_path,
        subject.audio_paths[2],
    }
    assert "encrypted_password" not in export["account"]
    assert all("search_vector" not in t for t in export["transcripts"])
    # The export is recorded, and the document includes its own record.
    assert export["request_id"] in exported_keys(export, "gdpr_requests", "id")
    assert "gdpr.export" in {a["action"] for a in export["audit_log"]}
    request = owner_rows(
        db,
        "select kind::text, status::text, details from public.gdpr_requests where id = %s",
        (export["request_id"],),
    )[0]
    assert (request["kind"], request["status"]) == ("export", "completed")
    assert request["details"]["counts"]["segments"] == len(export["segments"])


# -- erasure: storage, resume, idempotency, dry run -------------------------------------------


def test_erasure_with_pending_storage_is_resumed_and_completed(world_db: WorldDb) -> None:
    db, world = world_db
    a1 = world.person("A1").id
    path = add_audio(db, world, world.completed_session["A1"])

    first = rpc(db, world, "service_role", "public.gdpr_erase_user(%s)", (a1,))
    assert first["status"] == "in_progress"
    assert first["counts"]["sessions"] == 2
    assert first["counts"]["account"] == 0
    assert first["pending_storage"] == [
        {"request_id": first["request_id"], "bucket": AUDIO_BUCKET, "path": path}
    ]
    assert count(db, "public.sessions", "profile_id = %s", (a1,)) == 0
    assert count(db, "auth.users", "id = %s", (a1,)) == 1  # the account stays without the flag

    listed = api_rows(
        db, world, "service_role", "select * from public.gdpr_pending_storage(%s)", (a1,)
    )
    assert [(r["request_id"], r["kind"], r["status"], r["path"]) for r in listed] == [
        (uuid.UUID(first["request_id"]), "erasure", "in_progress", path)
    ]
    assert [
        r["path"] for r in api_rows(db, world, "AA", "select * from public.gdpr_pending_storage()")
    ] == [path]
    assert api_rows(db, world, "AB", "select * from public.gdpr_pending_storage()") == []

    # Interrupted after the database step: running the erasure again resumes it.
    with unchanged(db):
        resumed = rpc(db, world, "service_role", "public.gdpr_erase_user(%s)", (a1,))
    assert resumed["already_erased"] is True
    assert set(resumed["counts"].values()) == {0}
    assert resumed["pending_storage"] == first["pending_storage"]
    assert resumed["stores"] == ["storage"]

    # Confirming an unknown path changes nothing; the real one completes the request.
    with unchanged(db):
        noop = rpc(
            db,
            world,
            "service_role",
            "public.gdpr_confirm_storage_removed(%s, %s)",
            (first["request_id"], ["not/pending.wav"]),
        )
    assert (noop["removed"], noop["not_pending"], noop["status"]) == (0, 1, "in_progress")
    with unchanged(db):
        nulls = rpc(
            db,
            world,
            "service_role",
            "public.gdpr_confirm_storage_removed(%s, %s)",
            (first["request_id"], [None]),
        )
    assert (nulls["removed"], nulls["not_pending"], len(nulls["remaining"])) == (0, 0, 1)
    storage_api_remove(db, [path])
    done = rpc(
        db,
        world,
        "A1",
        "public.gdpr_confirm_storage_removed(%s, %s)",
        (first["request_id"], [path]),
    )
    assert (done["removed"], done["remaining"], done["status"]) == (1, [], "completed")
    request = owner_rows(
        db,
        "select status::text, completed_at, details from public.gdpr_requests where id = %s",
        (first["request_id"],),
    )[0]
    assert request["status"] == "completed"
    assert request["completed_at"] is not None
    assert request["details"]["pending_storage"] == []
    assert request["details"]["storage_removed"] == 1
    assert (
        api_rows(db, world, "service_role", "select * from public.gdpr_pending_storage(%s)", (a1,))
        == []
    )
    with unchanged(db):
        twice = rpc(
            db,
            world,
            "service_role",
            "public.gdpr_confirm_storage_removed(%s, %s)",
            (first["request_id"], [path]),
        )
    assert (twice["removed"], twice["status"]) == (0, "completed")

    # Nothing left: a no-op with zero counts and nothing pending.
    with unchanged(db):
        last = rpc(db, world, "service_role", "public.gdpr_erase_user(%s)", (a1,))
    assert last["already_erased"] is True
    assert last["pending_storage"] == []
    assert set(last["counts"].values()) == {0}

    # The account can still be erased afterwards.
    account = rpc(
        db, world, "service_role", "public.gdpr_erase_user(%s, include_account => true)", (a1,)
    )
    assert account["counts"]["account"] == 1
    assert account["status"] == "completed"
    assert account["stores"] == ["database"]
    assert count(db, "auth.users", "id = %s", (a1,)) == 0


def test_erasure_without_storage_completes_at_once(world_db: WorldDb) -> None:
    db, world = world_db
    b1 = world.person("B1").id
    report = rpc(db, world, "B1", "public.gdpr_erase_user(%s)", (b1,))
    assert report["status"] == "completed"
    assert report["stores"] == ["database"]
    assert report["pending_storage"] == []
    assert report["counts"]["segments"] == 3
    request = owner_rows(
        db,
        "select status::text, completed_at, requested_by, company_id"
        " from public.gdpr_requests where id = %s",
        (report["request_id"],),
    )[0]
    assert request["status"] == "completed"
    assert request["completed_at"] is not None
    assert request["requested_by"] is None  # the person themself
    assert request["company_id"] == world.companies["B"]


def test_dry_run_erasure_changes_nothing_and_counts_what_a_real_run_erases(
    world_db: WorldDb,
) -> None:
    db, world = world_db
    subject = seed_subject(db, world)
    with unchanged(db):
        dry = rpc(
            db,
            world,
            "AA",
            "public.gdpr_erase_user(%s, include_account => true, dry_run => true)",
            (subject.id,),
        )
    assert dry["dry_run"] is True
    assert dry["request_id"] is None
    assert dry["status"] is None
    before = {
        "sessions": count(db, "public.sessions", "profile_id = %s", (subject.id,)),
        "segments": count(db, "public.transcript_segments", "profile_id = %s", (subject.id,)),
        "analyses": count(db, "public.analysis_results", "profile_id = %s", (subject.id,)),
    }
    real = rpc(
        db, world, "AA", "public.gdpr_erase_user(%s, include_account => true)", (subject.id,)
    )
    assert dry["counts"] == real["counts"]
    assert {k: real["counts"][k] for k in before} == before
    assert {(p["bucket"], p["path"]) for p in dry["pending_storage"]} == {
        (p["bucket"], p["path"]) for p in real["pending_storage"]
    }
    # AA acted: the records name the admin, not the person.
    audit = owner_rows(
        db,
        "select actor_id from public.audit_log where details ->> 'request_id' = %s",
        (real["request_id"],),
    )
    assert [a["actor_id"] for a in audit] == [world.person("AA").id]


def test_unknown_subject_is_not_found_for_the_service_role(world_db: WorldDb) -> None:
    db, world = world_db
    nobody = uuid.uuid4()
    for call in (
        "public.gdpr_erase_user(%s)",
        "public.gdpr_export_user(%s)",
    ):
        assert_refused(db, world, "service_role", call, (nobody,), "P0002")
        assert_refused(db, world, "AA", call, (nobody,), "42501")
    assert_refused(
        db, world, "service_role", "public.gdpr_anonymize_session(%s)", (nobody,), "P0002"
    )
    assert_refused(db, world, "AA", "public.gdpr_anonymize_session(%s)", (nobody,), "42501")
    assert_refused(
        db,
        world,
        "service_role",
        "public.gdpr_confirm_storage_removed(%s, '{}')",
        (nobody,),
        "P0002",
    )
    assert_refused(db, world, "service_role", "public.gdpr_apply_retention(%s)", (nobody,), "P0002")
    assert_refused(db, world, "service_role", "public.gdpr_erase_user(null)", None, "22004")
    # A user with an auth account and no profile is known (to the service role and to
    # themself), and has nothing to erase yet.
    spare = rpc(db, world, "service_role", "public.gdpr_erase_user(%s)", (world.spare_user,))
    assert spare["already_erased"] is True


def test_an_operator_connected_directly_is_the_service_role(world_db: WorldDb) -> None:
    """psql as a superuser (or Supabase's BYPASSRLS `postgres`) without JWT claims."""
    db, world = world_db
    a1 = world.person("A1").id
    with owner(db) as conn:
        row = conn.execute("select public.gdpr_erase_user(%s, dry_run => true)", (a1,)).fetchone()
    assert row is not None
    assert row[0]["counts"]["sessions"] == 2


@pytest.mark.parametrize(
    ("role", "claims"),
    [
        ("authenticated", '{"role": "service_role"}'),
        ("anon", '{"role": "service_role"}'),
        ("service_role", '{"role": "authenticated"}'),
    ],
)
def test_forged_claims_do_not_make_the_service_role(
    world_db: WorldDb, role: str, claims: str
) -> None:
    """A request whose role or claims say anon/authenticated is an end user, whatever else
    it says (PostgREST never produces these combinations; a leaked setting must not help)."""
    db, world = world_db
    with unchanged(db), psycopg.connect(db.authenticator_dsn) as conn:
        conn.execute(
            "select set_config('role', %s, true), set_config('request.jwt.claims', %s, true)",
            (role, claims),
        )
        with pytest.raises(psycopg.Error) as excinfo:
            conn.execute("select public.gdpr_erase_user(%s)", (world.person("A1").id,))
        conn.rollback()
    assert excinfo.value.sqlstate == "42501"


# -- authorization matrix ------------------------------------------------------------------

# (call, who is refused). Subject A1, A1's completed session, company A.
SUBJECT_OUTSIDERS = ("MA", "A2", "AB", "B1", "anon")
REFUSED = [
    ("public.gdpr_erase_user(%(a1)s)", SUBJECT_OUTSIDERS),
    ("public.gdpr_erase_user(%(a1)s, dry_run => true)", SUBJECT_OUTSIDERS),
    ("public.gdpr_erase_user(%(a1)s, include_account => true)", SUBJECT_OUTSIDERS),
    ("private.gdpr_erase_user(%(a1)s, false, false)", ("MA", "A2", "AB", "B1")),
    ("public.gdpr_export_user(%(a1)s)", SUBJECT_OUTSIDERS),
    ("private.gdpr_export_user(%(a1)s)", ("MA", "A2", "AB", "B1")),
    ("(select count(*) from public.gdpr_pending_storage(%(a1)s))", SUBJECT_OUTSIDERS),
    ("(select count(*) from public.gdpr_pending_storage())", ("A1", "MA", "A2", "B1", "anon")),
    ("public.gdpr_anonymize_session(%(session)s)", SUBJECT_OUTSIDERS),
    ("public.gdpr_anonymize_session(%(session)s, '{score}')", SUBJECT_OUTSIDERS),
    ("private.gdpr_anonymize_session(%(session)s, '{}')", ("MA", "A2", "AB", "B1")),
    ("public.gdpr_confirm_storage_removed(%(request)s, %(paths)s)", SUBJECT_OUTSIDERS),
    ("public.gdpr_apply_retention(%(company)s)", ("A1", "MA", "A2", "AB", "B1", "anon")),
    (
        "public.gdpr_apply_retention(%(company)s, dry_run => true)",
        ("A1", "MA", "A2", "AB", "B1", "anon"),
    ),
    ("public.gdpr_apply_retention()", ("AA", "A1", "MA", "AB", "B1", "anon")),
    ("(select count(*) from public.gdpr_list_requests())", ("A1", "MA", "A2", "B1", "anon")),
    (
        "(select count(*) from public.gdpr_list_requests(overdue => true))",
        ("A1", "MA", "A2", "B1", "anon"),
    ),
]
REFUSED_CASES = [
    pytest.param(call, who, id=f"{who}-{re.sub(r'[^a-z_]+', '_', call)[:60]}")
    for call, whos in REFUSED
    for who in whos
]


@pytest.fixture
def pending_world(world_db: WorldDb) -> tuple[Database, World, dict[str, Any]]:
    """The world with company A's retention set, some old data, and an open anonymization
    request of A1 whose audio is pending in Storage."""
    db, world = world_db
    a1 = world.person("A1").id
    old = new_session(db, a1, ended_days_ago=400, segments=["old words"])
    add_audio(db, world, old)
    with owner(db) as conn:
        conn.execute(
            "update public.companies set audio_retention_days = 30, session_retention_days = 365"
            " where id = %s",
            (world.companies["A"],),
        )
    anonymized = new_session(db, a1, ended_days_ago=1)
    path = add_audio(db, world, anonymized)
    report = rpc(db, world, "service_role", "public.gdpr_anonymize_session(%s)", (anonymized,))
    params = {
        "a1": a1,
        "session": world.completed_session["A1"],
        "request": report["request_id"],
        "paths": [path],
        "company": world.companies["A"],
    }
    return db, world, params


@pytest.mark.parametrize(("call", "who"), REFUSED_CASES)
def test_unauthorized_callers_are_refused_and_change_nothing(
    pending_world: tuple[Database, World, dict[str, Any]], call: str, who: str
) -> None:
    db, world, params = pending_world
    assert_refused(db, world, who, call, params, "42501")


ALLOWED = [
    "public.gdpr_erase_user(%(a1)s, dry_run => true)",
    "public.gdpr_export_user(%(a1)s)",
    "(select count(*) from public.gdpr_pending_storage(%(a1)s))",
    "public.gdpr_anonymize_session(%(session)s)",
    "public.gdpr_confirm_storage_removed(%(request)s, %(paths)s)",
    "public.gdpr_erase_user(%(a1)s)",
    "public.gdpr_erase_user(%(a1)s, include_account => true)",
]


@pytest.mark.parametrize("who", ["A1", "AA", "service_role"])
def test_the_subject_their_admin_and_the_service_role_are_allowed(
    pending_world: tuple[Database, World, dict[str, Any]], who: str
) -> None:
    db, world, params = pending_world
    for call in ALLOWED:
        result = rpc(db, world, who, call, params)
        assert result is not None, call
    assert count(db, "public.profiles", "id = %s", (params["a1"],)) == 0
    assert count(db, "auth.users", "id = %s", (params["a1"],)) == 0
    # Retention and the request list: the company's admin and the service role.
    if who != "A1":
        report = rpc(db, world, who, "public.gdpr_apply_retention(%(company)s)", params)
        assert report["dry_run"] is False
        listed = api_rows(db, world, who, "select * from public.gdpr_list_requests()")
        assert {r["company_id"] for r in listed} >= {world.companies["A"]}


# -- anonymization ---------------------------------------------------------------------------


def test_strip_keys_removes_personal_keys_at_any_depth(world_db: WorldDb) -> None:
    db, _ = world_db

    def strip(doc: str, keys: Sequence[str | None]) -> Any:
        return scalar(db, "select private.strip_keys(%s::jsonb, %s)", (doc, list(keys)))

    doc = (
        '{"score": 3, "name": "x", "Full-Name": "y", "fullName": "z",'
        ' "feedback": {"quotes": ["q"], "items": [{"excerpt": "e", "ok": 1},'
        ' [{"email": "a@b"}, 2, "s"]]}, "nested": [[{"deep": {"speaker_name": "n", "k": 1}}]]}'
    )
    assert strip(doc, ["name", "full_name", "quotes", "excerpt", "email", "speaker_name"]) == {
        "score": 3,
        "feedback": {"items": [{"ok": 1}, [{}, 2, "s"]]},
        "nested": [[{"deep": {"k": 1}}]],
    }
    assert strip('[{"text": 1}, {"a": {"TEXT": 2}}]', ["text"]) == [{}, {"a": {}}]
    assert strip('"just text"', ["text"]) == "just text"
    assert strip("{}", ["x"]) == {}
    assert strip("[]", ["x"]) == []
    assert strip('{"a": 1}', []) == {"a": 1}
    assert strip('{"a": 1, "name": 2}', [None, "name"]) == {"a": 1}
    assert scalar(db, "select private.strip_keys(null, '{a}')") is None


def session_state(db: Database, session_id: uuid.UUID) -> dict[str, Any]:
    """Everything stored about one session, for before/after comparisons."""
    state: dict[str, Any] = {}
    for table, column in (
        ("public.sessions", "id"),
        ("public.session_participants", "session_id"),
        ("public.transcript_segments", "session_id"),
        ("public.transcripts", "session_id"),
        ("public.analysis_results", "session_id"),
        ("public.session_analytics", "session_id"),
    ):
        state[table] = owner_rows(
            db, f"select * from {table} t where {column} = %s order by t::text", (session_id,)
        )
    return state


def rich_session(db: Database, world: World, who: str = "A1") -> tuple[uuid.UUID, str]:
    """A completed session with personal data in every place anonymization must reach."""
    person = world.person(who)
    session_id = new_session(
        db,
        person.id,
        title=f"Call of {who}",
        segments=["my name is Riley", "hello Riley"],
        metadata='{"scenario": "cold", "notes": "Riley was nervous", "deep": [{"email": "r@x"}]}',
    )
    path = add_audio(db, world, session_id)
    with owner(db) as conn:
        conn.execute(
            'update public.sessions set analytics_summary = \'{"talk": 0.4, "quotes": ["hi"]}\''
            " where id = %s",
            (session_id,),
        )
        # Completing the session assembled its transcript; it is British English.
        conn.execute(
            "update public.transcripts set language = 'en-GB' where session_id = %s",
            (session_id,),
        )
        conn.execute(
            "insert into public.session_participants (session_id, kind, speaker_label,"
            " display_name, persona) values (%s, 'ai_buyer', 'buyer', 'Alex',"
            ' \'{"scenario": "cold", "personal_context": {"name": "Riley"}}\')',
            (session_id,),
        )
        conn.execute(
            "insert into public.analysis_results (session_id, provider, analysis_type, results)"
            " values (%s, 'openai', 'coaching', %s), (%s, 'ours', 'metrics', %s)",
            (
                session_id,
                '{"score": 70, "summary": "good", "feedback": [{"quote": "my name is Riley",'
                ' "tip": "slow down", "detail": {"speaker_name": "Riley", "score": 2}}],'
                ' "personal_context": "nervous", "secret_id": "abc"}',
                session_id,
                '{"wpm": 140, "talk_ratio": 0.4}',
            ),
        )
        conn.execute(
            "insert into public.session_analytics (session_id, overall_score) values (%s, 70)"
            " on conflict (session_id) do update set overall_score = excluded.overall_score",
            (session_id,),
        )
    return session_id, path


@pytest.mark.parametrize("who", ["A1", "AA", "service_role"])
def test_anonymization_removes_what_identifies_people(world_db: WorldDb, who: str) -> None:
    db, world = world_db
    session_id, path = rich_session(db, world)
    before = session_state(db, session_id)
    report = rpc(
        db, world, who, "public.gdpr_anonymize_session(%s, %s)", (session_id, ["secret_id"])
    )
    assert report["already_anonymized"] is False
    assert report["counts"] == {
        "audio": 1,
        "broadcasts": 0,
        "transcripts": 1,
        "segments": 2,
        "sessions": 1,
        "participants": 1,  # the AI buyer; the trainee's row has no name and no persona
        # the coaching one; and the one measured on completion, whose "words" counts go
        # with the default personal keys (the "metrics" analysis has nothing personal)
        "analyses": 2,
    }
    assert "secret_id" in report["personal_keys"]
    assert "personal_context" in report["personal_keys"]
    assert report["pending_storage"] == [
        {"request_id": report["request_id"], "bucket": AUDIO_BUCKET, "path": path}
    ]
    assert report["status"] == "in_progress"

    after = session_state(db, session_id)
    session = after["public.sessions"][0]
    assert session["title"] == "Anonymized session"
    assert session["metadata"] == {"scenario": "cold", "deep": [{}]}
    assert session["analytics_summary"] == {"talk": 0.4}
    assert session["audio_path"] is None
    assert session["audio_size_bytes"] is None
    assert session["status"] == "completed"
    assert {(s["text"], s["words"]) for s in after["public.transcript_segments"]} == {(ANON, None)}
    assert [s["seq"] for s in after["public.transcript_segments"]] == [
        s["seq"] for s in before["public.transcript_segments"]
    ]
    transcript = after["public.transcripts"][0]
    assert transcript["content"] == ANON
    assert transcript["structured_content"] == []
    assert transcript["language"] == "en-GB"
    assert transcript["is_anonymized"] is True
    assert transcript["anonymized_at"] is not None
    assert "riley" not in str(transcript["search_vector"]).lower()
    assert {p["display_name"] for p in after["public.session_participants"]} == {None}
    buyer = next(p for p in after["public.session_participants"] if p["kind"] == "ai_buyer")
    assert buyer["persona"] == {"scenario": "cold"}
    results = {a["analysis_type"]: a["results"] for a in after["public.analysis_results"]}
    # the conversation metrics the database measured on completion keep their numbers
    measured = results.pop("conversation_metrics")
    assert measured["question_count"] == 0
    assert results == {
        "coaching": {
            "score": 70,
            "summary": "good",
            "feedback": [{"tip": "slow down", "detail": {"score": 2}}],
        },
        "metrics": {"wpm": 140, "talk_ratio": 0.4},
    }
    assert after["public.session_analytics"] == before["public.session_analytics"]
    assert "riley" not in str(after).lower()

    request = owner_rows(
        db,
        "select kind::text, status::text, subject_ref, company_id, details"
        " from public.gdpr_requests where id = %s",
        (report["request_id"],),
    )[0]
    assert request["kind"] == "anonymization"
    assert request["subject_ref"] == subject_ref(db, world.person("A1").id)
    assert request["details"]["pending_storage"] == [{"bucket": AUDIO_BUCKET, "path": path}]
    audit = owner_rows(
        db,
        "select action, entity_id, actor_id, details from public.audit_log"
        " where details ->> 'request_id' = %s",
        (report["request_id"],),
    )
    assert [(a["action"], a["entity_id"]) for a in audit] == [("gdpr.anonymize", session_id)]
    # The owner acting on their own session is not named; an admin is.
    assert audit[0]["actor_id"] == (world.person("AA").id if who == "AA" else None)
    assert "riley" not in str(audit).lower() + str(request).lower()

    # Idempotent: nothing left to change, nothing written.
    with unchanged(db):
        again = rpc(
            db, world, who, "public.gdpr_anonymize_session(%s, %s)", (session_id, ["secret_id"])
        )
    assert again["already_anonymized"] is True
    assert set(again["counts"].values()) == {0}
    assert again["request_id"] is None

    # Anonymized transcripts are no longer searchable.
    found = api_rows(db, world, "A1", "select * from public.search_transcripts('Riley')")
    assert session_id not in {r["session_id"] for r in found}


def test_anonymization_creates_the_transcript_marker_when_none_was_assembled(
    world_db: WorldDb,
) -> None:
    db, world = world_db
    session_id = new_session(db, world.person("A2").id)  # no segment: no transcript assembled
    assert count(db, "public.transcripts", "session_id = %s", (session_id,)) == 0
    report = rpc(db, world, "A2", "public.gdpr_anonymize_session(%s)", (session_id,))
    assert report["counts"]["transcripts"] == 1
    assert report["status"] == "completed"  # no audio: nothing pending
    transcript = owner_rows(
        db,
        "select content, is_anonymized from public.transcripts where session_id = %s",
        (session_id,),
    )
    assert transcript == [{"content": ANON, "is_anonymized": True}]


def test_an_active_session_cannot_be_anonymized(world_db: WorldDb) -> None:
    db, world = world_db
    exc = assert_refused(
        db, world, "A1", "public.gdpr_anonymize_session(%s)", (world.active_session["A1"],), "23514"
    )
    assert "active" in str(exc)


@pytest.mark.parametrize(
    "table",
    ["public.analysis_results", "public.session_participants", "public.transcripts"],
)
def test_a_failure_midway_leaves_the_session_as_it_was(world_db: WorldDb, table: str) -> None:
    """All or nothing: a failure injected into one of the later steps (the analyses are
    stripped last) rolls back every earlier one."""
    db, world = world_db
    session_id, _ = rich_session(db, world)
    with owner(db) as conn:
        conn.execute(
            "create function public.fail_midway() returns trigger language plpgsql as"
            " $$ begin raise exception 'injected failure' using errcode = 'VS999'; end $$"
        )
        conn.execute(
            sql.SQL(
                "create trigger fail_midway before update on {} for each row"
                " execute function public.fail_midway()"
            ).format(sql.SQL(table))
        )
    before = session_state(db, session_id)
    exc = assert_refused(
        db, world, "service_role", "public.gdpr_anonymize_session(%s)", (session_id,), "VS999"
    )
    assert "injected failure" in str(exc)
    assert session_state(db, session_id) == before
    with owner(db) as conn:
        conn.execute(sql.SQL("drop trigger fail_midway on {}").format(sql.SQL(table)))
    report = rpc(db, world, "service_role", "public.gdpr_anonymize_session(%s)", (session_id,))
    assert report["already_anonymized"] is False


# -- retention -------------------------------------------------------------------------------


@dataclass
class RetentionWorld:
    fresh: uuid.UUID  # ended 1 day ago: nothing applies
    audio_only: uuid.UUID  # 45 days: audio (30) only
    transcript: uuid.UUID  # 75 days: audio and transcript (60)
    analysis: uuid.UUID  # 120 days: audio, transcript, analysis (90)
    gone: uuid.UUID  # 400 days: the whole session (365)
    company_b_old: uuid.UUID  # company B keeps everything
    paths: dict[uuid.UUID, str]


def seed_retention(db: Database, world: World) -> RetentionWorld:
    a1 = world.person("A1").id
    ages = {"fresh": 1, "audio_only": 45, "transcript": 75, "analysis": 120, "gone": 400}
    ids: dict[str, uuid.UUID] = {}
    paths: dict[uuid.UUID, str] = {}
    for key, days in ages.items():
        session_id = new_session(db, a1, ended_days_ago=days, segments=[f"{key} words", "ok"])
        ids[key] = session_id
        paths[session_id] = add_audio(db, world, session_id)
        with owner(db) as conn:
            conn.execute(
                "insert into public.analysis_results (session_id, provider, analysis_type,"
                " results, created_at) values (%s, 'p', 'overall', '{\"score\": 1}',"
                " now() - make_interval(days => %s))",
                (session_id, days),
            )
            conn.execute(
                "insert into public.session_analytics (session_id, overall_score) values (%s, 50)"
                " on conflict (session_id) do update set overall_score = excluded.overall_score",
                (session_id,),
            )
    b_old = new_session(db, world.person("B1").id, ended_days_ago=1000, segments=["b words"])
    paths[b_old] = add_audio(db, world, b_old)
    with owner(db) as conn:
        conn.execute(
            "update public.companies set audio_retention_days = 30,"
            " transcript_retention_days = 60, analysis_retention_days = 90,"
            " session_retention_days = 365 where id = %s",
            (world.companies["A"],),
        )
    return RetentionWorld(company_b_old=b_old, paths=paths, **ids)


def test_retention_acts_only_on_what_is_older_than_each_limit(world_db: WorldDb) -> None:
    db, world = world_db
    data = seed_retention(db, world)
    company = world.companies["A"]

    with unchanged(db):
        dry = rpc(db, world, "service_role", "public.gdpr_apply_retention(dry_run => true)")
    expected = {"sessions": 1, "audio": 3, "transcripts": 2, "segments": 4, "analyses": 1}
    assert dry["counts"] == expected
    assert dry["more"] is False
    assert dry["request_ids"] == []
    assert {p["path"] for p in dry["pending_storage"]} == {
        data.paths[s] for s in (data.gone, data.audio_only, data.transcript, data.analysis)
    }

    before = {s: session_state(db, s) for s in (data.fresh, data.company_b_old)}
    world_sessions = {
        s: session_state(db, s) for s in (world.completed_session["A1"], world.active_session["A2"])
    }
    real = rpc(db, world, "AA", "public.gdpr_apply_retention(%s)", (company,))
    assert real["counts"] == expected
    assert real["pending_storage"] == [
        dict(p, request_id=real["request_ids"][0]) for p in dry["pending_storage"]
    ]

    # Younger than every limit, another company, the world's own sessions: untouched.
    for session_id, state in (before | world_sessions).items():
        assert session_state(db, session_id) == state
    # Whole session past 365 days: gone with everything hanging off it.
    assert count(db, "public.sessions", "id = %s", (data.gone,)) == 0
    assert count(db, "public.transcript_segments", "session_id = %s", (data.gone,)) == 0
    # Audio past 30 days: cleared everywhere it applies.
    for session_id in (data.audio_only, data.transcript, data.analysis):
        assert (
            scalar(db, "select audio_path from public.sessions where id = %s", (session_id,))
            is None
        )
    # Transcripts past 60 days: anonymized; the 45-day one is not.
    for session_id, anonymized in (
        (data.audio_only, False),
        (data.transcript, True),
        (data.analysis, True),
    ):
        texts = {
            r["text"]
            for r in owner_rows(
                db,
                "select text from public.transcript_segments where session_id = %s",
                (session_id,),
            )
        }
        assert (texts == {ANON}) is anonymized
        assert (
            scalar(
                db,
                "select is_anonymized from public.transcripts where session_id = %s",
                (session_id,),
            )
            is anonymized
        )
    # Analyses past 90 days: deleted; analytics stay.
    # (each session's conversation metrics were measured when the test completed it: now)
    recorded_long_ago = "session_id = %s and provider = 'p'"
    assert count(db, "public.analysis_results", recorded_long_ago, (data.analysis,)) == 0
    assert count(db, "public.analysis_results", recorded_long_ago, (data.transcript,)) == 1
    assert count(db, "public.session_analytics", "session_id = %s", (data.analysis,)) == 1

    request = owner_rows(
        db,
        "select kind::text, status::text, company_id, subject_ref, details"
        " from public.gdpr_requests where id = %s",
        (real["request_ids"][0],),
    )[0]
    assert (request["kind"], request["status"], request["company_id"]) == (
        "retention",
        "in_progress",
        company,
    )
    assert request["subject_ref"] is None
    assert request["details"]["counts"] == expected
    request_id = real["request_ids"][0]
    audit = owner_rows(
        db,
        "select action, entity_id, actor_id from public.audit_log"
        " where details ->> 'request_id' = %s",
        (request_id,),
    )
    assert [(a["action"], a["entity_id"], a["actor_id"]) for a in audit] == [
        ("gdpr.retention", company, world.person("AA").id)
    ]
    pending = api_rows(db, world, "AA", "select * from public.gdpr_pending_storage()")
    assert {r["request_id"] for r in pending} == {uuid.UUID(request_id)}
    assert len(pending) == 4

    # A second run finds nothing and writes nothing.
    with unchanged(db):
        second = rpc(db, world, "service_role", "public.gdpr_apply_retention()")
    assert set(second["counts"].values()) == {0}
    assert second["companies"] == []
    assert second["more"] is False


def test_retention_in_batches_finishes_after_repeated_calls(world_db: WorldDb) -> None:
    db, world = world_db
    a1 = world.person("A1").id
    for _ in range(3):
        session_id = new_session(db, a1, ended_days_ago=50, segments=["a", "b"])
        add_audio(db, world, session_id)
        new_session(db, a1, ended_days_ago=500)
    with owner(db) as conn:
        conn.execute(
            "update public.companies set audio_retention_days = 30, transcript_retention_days"
            " = 40, session_retention_days = 365 where id = %s",
            (world.companies["A"],),
        )
    full = rpc(db, world, "service_role", "public.gdpr_apply_retention(dry_run => true)")
    assert full["counts"] == {
        "sessions": 3,
        "audio": 3,
        "transcripts": 3,
        "segments": 6,
        "analyses": 0,
    }
    totals = dict.fromkeys(full["counts"], 0)
    calls = []
    while True:
        report = rpc(db, world, "service_role", "public.gdpr_apply_retention(batch_size => 1)")
        calls.append(report["more"])
        for key, value in report["counts"].items():
            totals[key] += value
        assert all(v <= 1 for k, v in report["counts"].items() if k != "segments")
        if not report["more"]:
            break
        assert len(calls) < 10
    assert calls == [True, True, False]
    assert totals == full["counts"]
    with unchanged(db):
        last = rpc(db, world, "service_role", "public.gdpr_apply_retention(batch_size => 1)")
    assert last["more"] is False
    assert set(last["counts"].values()) == {0}
    assert count(db, "public.gdpr_requests", "kind = 'retention'") == 3


def test_retention_rejects_a_bad_batch_size(world_db: WorldDb) -> None:
    db, world = world_db
    for size in (0, -1, 10001):
        assert_refused(
            db,
            world,
            "service_role",
            "public.gdpr_apply_retention(batch_size => %s)",
            (size,),
            "22023",
        )


# -- request listing ---------------------------------------------------------------------------


def test_overdue_requests_are_listed_per_company(world_db: WorldDb) -> None:
    db, world = world_db
    with owner(db) as conn:
        for company in ("A", "B"):
            conn.execute(
                "insert into public.gdpr_requests (kind, company_id, status, requested_at,"
                " due_at) values ('erasure', %s, 'pending', now() - interval '40 days',"
                " now() - interval '10 days')",
                (world.companies[company],),
            )
        # Overdue but done: not listed.
        conn.execute(
            "insert into public.gdpr_requests (kind, company_id, status, requested_at, due_at,"
            " completed_at) values ('export', %s, 'completed', now() - interval '40 days',"
            " now() - interval '10 days', now())",
            (world.companies["A"],),
        )

    def overdue(who: str) -> set[uuid.UUID]:
        rows = api_rows(db, world, who, "select * from public.gdpr_list_requests(overdue => true)")
        assert all(r["status"] in ("pending", "in_progress") for r in rows)
        return {r["company_id"] for r in rows}

    assert overdue("service_role") == {world.companies["A"], world.companies["B"]}
    assert overdue("AA") == {world.companies["A"]}
    assert overdue("AB") == {world.companies["B"]}
    every = api_rows(db, world, "AA", "select * from public.gdpr_list_requests()")
    assert len(every) == 3  # the world's export request, the overdue one, the completed one
    done = api_rows(
        db, world, "service_role", "select * from public.gdpr_list_requests(status => 'completed')"
    )
    assert {r["status"] for r in done} == {"completed"}
