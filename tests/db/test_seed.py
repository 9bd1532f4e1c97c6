"""supabase/seed.sql and supabase/config.toml: the demo data `supabase db reset` loads.

The seed is applied to a freshly migrated database exactly as a file (one simple-protocol
query, like the CLI's seeding), then checked as the migration owner and, for visibility,
through the PostgREST-faithful executor (tests/support/api.py) as each demo user.
"""

from __future__ import annotations

import re
import uuid
from pathlib import Path
from typing import Any

import bcrypt
import psycopg
import pytest

from tests.conftest import Database
from tests.support.api import Identity

SUPABASE_DIR = Path(__file__).resolve().parents[2] / "supabase"
SEED = SUPABASE_DIR / "seed.sql"
CONFIG = SUPABASE_DIR / "config.toml"

COMPANY = uuid.UUID("ac3e0000-0000-4000-8000-000000000001")
MANAGER = uuid.UUID("ac3e0000-0000-4000-8000-000000000010")
TRAINEE1 = uuid.UUID("ac3e0000-0000-4000-8000-000000000011")
TRAINEE2 = uuid.UUID("ac3e0000-0000-4000-8000-000000000012")
SESSION = uuid.UUID("ac3e0000-0000-4000-8000-000000000100")

PEOPLE = {
    MANAGER: ("manager@acme.test", "manager"),
    TRAINEE1: ("trainee1@acme.test", "trainee"),
    TRAINEE2: ("trainee2@acme.test", "trainee"),
}


@pytest.fixture
def seeded_db(fresh_db: Database) -> Database:
    with fresh_db.connect() as conn:
        conn.execute(SEED.read_text(encoding="utf-8"))  # type: ignore[arg-type]
    return fresh_db


def _rows(db: Database, query: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    with db.connect() as conn:
        return conn.execute(query, params).fetchall()  # type: ignore[arg-type,return-value]


# -- the data -------------------------------------------------------------------------------


def test_company_with_retention_settings(seeded_db: Database) -> None:
    rows = _rows(
        seeded_db,
        "select id, name, audio_retention_days, transcript_retention_days,"
        " analysis_retention_days, session_retention_days from public.companies",
    )
    assert len(rows) == 1
    company_id, name, *retention = rows[0]
    assert (company_id, name) == (COMPANY, "Acme Sales Academy")
    assert all(isinstance(days, int) and days > 0 for days in retention)


def test_three_profiles_with_their_roles(seeded_db: Database) -> None:
    rows = _rows(
        seeded_db,
        "select p.id, u.email, p.role::text, p.company_id from public.profiles p"
        " join auth.users u on u.id = p.id",
    )
    assert {row[0]: (row[1], row[2]) for row in rows} == PEOPLE
    assert {row[3] for row in rows} == {COMPANY}


def test_auth_users_can_sign_in_with_password(seeded_db: Database) -> None:
    """The columns GoTrue reads at password sign-in, as it needs them."""
    rows = _rows(
        seeded_db,
        "select id, instance_id, aud, role, email_confirmed_at is not null,"
        " encrypted_password,"
        " raw_app_meta_data, confirmation_token, recovery_token, email_change_token_new,"
        " email_change from auth.users",
    )
    assert {row[0] for row in rows} == set(PEOPLE)
    for row in rows:
        assert row[1] == uuid.UUID(int=0)
        assert row[2:5] == ("authenticated", "authenticated", True)
        hashed = row[5].encode()
        assert hashed.startswith((b"$2a$", b"$2b$"))
        assert bcrypt.checkpw(b"password123", hashed)
        assert not bcrypt.checkpw(b"wrong-password", hashed)
        assert row[6] == {"provider": "email", "providers": ["email"]}
        assert row[7:] == ("", "", "", "")


def test_each_user_has_an_email_identity(seeded_db: Database) -> None:
    rows = _rows(
        seeded_db,
        "select i.user_id, i.provider, i.provider_id, i.identity_data, u.email"
        " from auth.identities i join auth.users u on u.id = i.user_id",
    )
    assert len(rows) == len(PEOPLE)
    for user_id, provider, provider_id, identity_data, email in rows:
        assert provider == "email"
        assert provider_id == str(user_id)
        assert identity_data["sub"] == str(user_id)
        assert identity_data["email"] == email


def test_completed_session_with_participants_segments_and_results(seeded_db: Database) -> None:
    sessions = _rows(
        seeded_db,
        "select id, profile_id, company_id, status::text, ended_at is not null,"
        " duration_seconds from public.sessions",
    )
    assert sessions == [(SESSION, TRAINEE1, COMPANY, "completed", True, 450)]

    participants = _rows(
        seeded_db,
        "select kind::text, speaker_label, profile_id from public.session_participants"
        " where session_id = %s",
        (SESSION,),
    )
    assert sorted(participants) == [("ai_buyer", "buyer", None), ("trainee", "trainee", TRAINEE1)]

    segments = _rows(
        seeded_db,
        "select seq, speaker, text, start_ms, end_ms, profile_id, company_id"
        " from public.transcript_segments where session_id = %s order by seq",
        (SESSION,),
    )
    assert len(segments) >= 3
    assert [s[0] for s in segments] == list(range(len(segments)))
    assert {s[1] for s in segments} == {"trainee", "buyer"}
    assert all(s[5:] == (TRAINEE1, COMPANY) for s in segments)
    starts = [s[3] for s in segments]
    assert starts == sorted(starts)

    transcripts = _rows(
        seeded_db,
        "select content, jsonb_array_length(structured_content), word_count, language,"
        " search_vector @@ to_tsquery('english', 'vendor') from public.transcripts"
        " where session_id = %s",
        (SESSION,),
    )
    assert len(transcripts) == 1
    content, structured, word_count, language, matches = transcripts[0]
    assert structured == len(segments)
    assert word_count == sum(len(s[2].split()) for s in segments)
    assert all(s[2] in content for s in segments)
    assert (language, matches) == ("en", True)

    analytics = _rows(
        seeded_db,
        "select a.profile_id, a.company_id, a.overall_score is not null,"
        " a.session_date = (s.started_at at time zone 'UTC')::date"
        " from public.session_analytics a join public.sessions s on s.id = a.session_id",
    )
    assert analytics == [(TRAINEE1, COMPANY, True, True)]


# -- who sees it, through the API -----------------------------------------------------------

VISIBLE_SESSION_ROWS = {
    "sessions": "select id as session_id from public.sessions",
    "session_participants": "select session_id from public.session_participants",
    "transcript_segments": "select session_id from public.transcript_segments",
    "transcripts": "select session_id from public.transcripts",
    "session_analytics": "select session_id from public.session_analytics",
}


@pytest.mark.parametrize("table", sorted(VISIBLE_SESSION_ROWS))
def test_trainee2_sees_none_of_trainee1s_session_the_manager_does(
    seeded_db: Database, table: str
) -> None:
    query = VISIBLE_SESSION_ROWS[table]
    with seeded_db.api() as api:
        seen = {
            who: {row["session_id"] for row in api.run(Identity.user(who), query).rows}
            for who in (TRAINEE1, TRAINEE2, MANAGER)
        }
    assert seen == {TRAINEE1: {SESSION}, TRAINEE2: set(), MANAGER: {SESSION}}


def test_profiles_and_company_through_the_api(seeded_db: Database) -> None:
    query = "select id from public.profiles"
    with seeded_db.api() as api:
        seen = {
            who: {row["id"] for row in api.run(Identity.user(who), query).rows} for who in PEOPLE
        }
        companies = {
            who: [
                row["name"]
                for row in api.run(Identity.user(who), "select name from public.companies").rows
            ]
            for who in PEOPLE
        }
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            api.run(Identity.anon(), "select id from public.sessions", method="GET")
    assert seen == {MANAGER: set(PEOPLE), TRAINEE1: {TRAINEE1}, TRAINEE2: {TRAINEE2}}
    assert companies == {who: ["Acme Sales Academy"] for who in PEOPLE}


# -- config.toml ----------------------------------------------------------------------------

_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([kmgt]?)(i?b)?\s*$", re.IGNORECASE)


def _bytes(size: str) -> float:
    """A size as the CLI reads it (go-units RAMInBytes: every unit is a power of 1024)."""
    match = _SIZE.match(size)
    assert match, f"not a size: {size!r}"
    return float(match[1]) * 1024 ** " kmgt".index(match[2].lower() or " ")


def _config() -> dict[str, Any]:
    import tomllib

    with CONFIG.open("rb") as f:
        config: dict[str, Any] = tomllib.load(f)
    return config


def test_config_declares_private_audio_bucket_and_seed() -> None:
    config = _config()
    assert config["project_id"] == "voicesessions"

    bucket = config["storage"]["buckets"]["session-audio"]
    assert bucket["public"] is False
    assert set(bucket["allowed_mime_types"]) >= {"audio/wav", "audio/mpeg", "audio/webm"}
    assert all(m.startswith(("audio/", "video/webm")) for m in bucket["allowed_mime_types"])
    # Storage refuses to create a bucket whose limit exceeds the global one.
    assert _bytes(bucket["file_size_limit"]) <= _bytes(config["storage"]["file_size_limit"])

    seed = config["db"]["seed"]
    assert seed["enabled"] is True
    assert seed["sql_paths"], "no seed files"
    for path in seed["sql_paths"]:
        assert (SUPABASE_DIR / path).resolve() == SEED

    # Grants are explicit in the migrations; nothing is auto-exposed.
    assert config["api"]["auto_expose_new_tables"] is False
    assert "inbucket" not in config, "[inbucket] is deprecated: use [local_smtp]"


#: Keys the Supabase CLI deprecates, with the name it asks for instead (CLI 2.117: "auth.email.
#: enable_signup is deprecated and will be removed in v4, use auth.email.enabled instead").
_DEPRECATED_KEYS = {
    ("auth", "email", "enable_signup"): ("auth", "email", "enabled"),
    ("inbucket",): ("local_smtp",),
}


def _lookup(config: dict[str, Any], path: tuple[str, ...]) -> Any:
    node: Any = config
    for key in path:
        if not isinstance(node, dict) or key not in node:
            return None
        node = node[key]
    return node


def test_config_uses_no_deprecated_key() -> None:
    config = _config()
    for old, new in _DEPRECATED_KEYS.items():
        assert _lookup(config, old) is None, f"{'.'.join(old)} is deprecated: use {'.'.join(new)}"
    assert _lookup(config, ("auth", "email", "enabled")) is True


def test_config_comment_does_not_claim_unknown_keys_fail() -> None:
    """The CLI ignores unknown keys (2.117 silently): the file must not promise otherwise."""
    text = CONFIG.read_text()
    assert "decodes this file strictly" not in text
    assert "ignores it" in text
