"""Constructing clients: from_env, from_postgres, from_supabase, as_user, lifecycle."""

from __future__ import annotations

import itertools
import json
import uuid

import jwt
import pytest

from tests.conftest import Database
from voicesessions import AsyncVoiceSessions, ConfigurationError, InvalidInputError, VoiceSessions
from voicesessions._sync.backends.postgres import PostgresBackend
from voicesessions._sync.backends.supabase import SupabaseBackend

ENV_VARS = (
    "VOICESESSIONS_DSN",
    "VOICESESSIONS_HOME",
    "SUPABASE_URL",
    "SUPABASE_SECRET_KEY",
    "SUPABASE_PUBLISHABLE_KEY",
    "SUPABASE_SERVICE_ROLE_KEY",
    "SUPABASE_KEY",
    "SUPABASE_ANON_KEY",
    "SUPABASE_ACCESS_TOKEN",
    "VOICESESSIONS_ACCESS_TOKEN",
    "SUPABASE_JWT_SECRET",
    "VOICESESSIONS_SIGNING_KEY",
    "VOICESESSIONS_SIGNING_KEY_ID",
    "VOICESESSIONS_READ_DSN",
    "VOICESESSIONS_READ_URL",
)
SECRET = "s" * 40


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: object) -> pytest.MonkeyPatch:
    for name in ENV_VARS:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("VOICESESSIONS_HOME", str(tmp_path))  # no local server there
    return monkeypatch


def test_from_env_prefers_the_dsn(clean_env: pytest.MonkeyPatch, fresh_db: Database) -> None:
    clean_env.setenv("VOICESESSIONS_DSN", fresh_db.dsn)
    clean_env.setenv("SUPABASE_URL", "http://supabase.test")
    clean_env.setenv("SUPABASE_SERVICE_ROLE_KEY", "sb_secret_x")
    with VoiceSessions.from_env() as vs:
        assert isinstance(vs._backend, PostgresBackend)
        assert vs.identity.role == "service_role"
        assert vs.sessions.list().items == []


def test_from_env_supabase(clean_env: pytest.MonkeyPatch) -> None:
    clean_env.setenv("SUPABASE_URL", "http://supabase.test")
    clean_env.setenv("SUPABASE_SERVICE_ROLE_KEY", "sb_secret_x")
    clean_env.setenv("SUPABASE_JWT_SECRET", SECRET)
    with VoiceSessions.from_env() as vs:
        assert isinstance(vs._backend, SupabaseBackend)
        user = vs.as_user(uuid.uuid4())
        assert user.identity.role == "authenticated"


@pytest.mark.parametrize("read", [None, "", "same server"])
def test_from_env_reads_the_read_replica_dsn(
    clean_env: pytest.MonkeyPatch, fresh_db: Database, read: str | None
) -> None:
    clean_env.setenv("VOICESESSIONS_DSN", fresh_db.dsn)
    if read is not None:
        clean_env.setenv("VOICESESSIONS_READ_DSN", fresh_db.dsn if read else "")
    with VoiceSessions.from_env() as vs:
        assert isinstance(vs._backend, PostgresBackend)
        assert (vs._backend._replica is not None) == bool(read)
        assert vs.sessions.list().items == []  # through the replica pool when there is one
        if read:
            assert vs._backend._replica is not None
            assert vs._backend._replica.shared.opened


@pytest.mark.parametrize("read_url", [None, "", "http://replica.supabase.test"])
def test_from_env_reads_the_read_replica_url(
    clean_env: pytest.MonkeyPatch, read_url: str | None
) -> None:
    clean_env.setenv("SUPABASE_URL", "http://supabase.test")
    clean_env.setenv("SUPABASE_SECRET_KEY", "sb_secret_x")
    if read_url is not None:
        clean_env.setenv("VOICESESSIONS_READ_URL", read_url)
    with VoiceSessions.from_env() as vs:
        assert isinstance(vs._backend, SupabaseBackend)
        assert vs._backend._shared.read_url == (read_url or None)


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({}, "voicesessions local start"),
        ({"SUPABASE_URL": "http://supabase.test"}, "no key"),
    ],
)
def test_from_env_without_configuration(
    clean_env: pytest.MonkeyPatch, env: dict[str, str], message: str
) -> None:
    for name, value in env.items():
        clean_env.setenv(name, value)
    with pytest.raises(ConfigurationError, match=message):
        VoiceSessions.from_env()
    with pytest.raises(ConfigurationError, match=message):
        AsyncVoiceSessions.from_env()


#: The key variables of from_env, in precedence order, with a key of each kind.
ENV_KEYS = {
    "SUPABASE_SECRET_KEY": ("sb_secret_new", "service_role"),
    "SUPABASE_PUBLISHABLE_KEY": ("sb_publishable_new", "anon"),
    "SUPABASE_SERVICE_ROLE_KEY": (
        jwt.encode({"role": "service_role"}, SECRET, "HS256"),
        "service_role",
    ),
    "SUPABASE_KEY": ("sb_secret_old", "service_role"),
    "SUPABASE_ANON_KEY": (jwt.encode({"role": "anon"}, SECRET, "HS256"), "anon"),
}
CLI_TOKEN = "sbp_0123456789abcdef0123456789abcdef01234567"


@pytest.mark.parametrize(
    "present",
    [
        combo
        for size in range(1, len(ENV_KEYS) + 1)
        for combo in itertools.combinations(ENV_KEYS, size)
    ],
    ids="+".join,
)
def test_from_env_takes_the_first_key_in_precedence_order(
    clean_env: pytest.MonkeyPatch, present: tuple[str, ...]
) -> None:
    clean_env.setenv("SUPABASE_URL", "http://supabase.test")
    clean_env.setenv("SUPABASE_ACCESS_TOKEN", CLI_TOKEN)  # the Supabase CLI's: ignored
    for name in present:
        clean_env.setenv(name, ENV_KEYS[name][0])
    first = next(name for name in ENV_KEYS if name in present)
    with VoiceSessions.from_env() as vs:
        assert isinstance(vs._backend, SupabaseBackend)
        assert vs._backend._shared.key == ENV_KEYS[first][0]
        assert vs.identity.role == ENV_KEYS[first][1]


@pytest.mark.parametrize("face", [VoiceSessions, AsyncVoiceSessions])
def test_from_env_reads_a_users_jwt_from_voicesessions_access_token(
    clean_env: pytest.MonkeyPatch, face: type[VoiceSessions] | type[AsyncVoiceSessions]
) -> None:
    user = uuid.uuid4()
    token = jwt.encode({"sub": str(user), "role": "authenticated"}, SECRET, "HS256")
    clean_env.setenv("SUPABASE_URL", "http://supabase.test")
    clean_env.setenv("SUPABASE_PUBLISHABLE_KEY", "sb_publishable_x")
    clean_env.setenv("SUPABASE_ACCESS_TOKEN", CLI_TOKEN)
    clean_env.setenv("VOICESESSIONS_ACCESS_TOKEN", token)
    vs = face.from_env()
    assert vs.identity.role == "authenticated"
    assert vs.identity.user_id == user


def test_a_users_jwt_left_in_supabase_access_token_is_not_silently_dropped(
    clean_env: pytest.MonkeyPatch,
) -> None:
    # Before, SUPABASE_ACCESS_TOKEN held the user's JWT; ignoring it would act as the key's
    # role (maybe service_role) instead of the user: refuse, and name the new variable.
    token = jwt.encode({"sub": str(uuid.uuid4()), "role": "authenticated"}, SECRET, "HS256")
    clean_env.setenv("SUPABASE_URL", "http://supabase.test")
    clean_env.setenv("SUPABASE_SECRET_KEY", "sb_secret_x")
    clean_env.setenv("SUPABASE_ACCESS_TOKEN", token)
    with pytest.raises(ConfigurationError, match="VOICESESSIONS_ACCESS_TOKEN"):
        VoiceSessions.from_env()


def test_a_cli_token_as_the_users_token_says_what_it_is(clean_env: pytest.MonkeyPatch) -> None:
    clean_env.setenv("SUPABASE_URL", "http://supabase.test")
    clean_env.setenv("SUPABASE_PUBLISHABLE_KEY", "sb_publishable_x")
    clean_env.setenv("VOICESESSIONS_ACCESS_TOKEN", CLI_TOKEN)
    with pytest.raises(ConfigurationError, match="personal access token"):
        VoiceSessions.from_env()
    with pytest.raises(ConfigurationError, match="personal access token"):
        VoiceSessions.from_supabase(
            "http://supabase.test", "sb_publishable_x", access_token=CLI_TOKEN
        )


def test_bad_arguments_are_configuration_errors() -> None:
    with pytest.raises(ConfigurationError):
        VoiceSessions.from_postgres("")
    with pytest.raises(ConfigurationError):
        VoiceSessions.from_supabase("", "key")
    with pytest.raises(ConfigurationError):  # as_user needs the JWT secret on Supabase
        VoiceSessions.from_supabase("http://supabase.test", "sb_secret_x").as_user(uuid.uuid4())


def test_as_user_shares_connections_and_closing_it_keeps_the_parent(fresh_db: Database) -> None:
    vs = VoiceSessions.from_postgres(fresh_db.dsn)
    uid = uuid.uuid4()
    user = vs.as_user(str(uid))
    assert user.identity.user_id == uid
    assert user.identity.role == "authenticated"
    with pytest.raises(InvalidInputError):
        vs.as_user("not-a-uuid")
    user.close()
    assert vs.sessions.list().items == []  # the parent still works
    vs.close()
    vs.close()  # idempotent
    assert "PostgresBackend" in repr(vs)


async def test_async_client_is_an_async_context_manager(fresh_db: Database) -> None:
    async with AsyncVoiceSessions.from_postgres(fresh_db.dsn) as vs:
        page = await vs.sessions.list()
        assert page.items == []
        assert page.next_cursor is None


@pytest.mark.parametrize("face", [VoiceSessions, AsyncVoiceSessions])
def test_from_env_and_from_supabase_take_a_signing_key(
    clean_env: pytest.MonkeyPatch, face: type[VoiceSessions] | type[AsyncVoiceSessions]
) -> None:
    from cryptography.hazmat.primitives.asymmetric import ec
    from jwt.algorithms import ECAlgorithm

    jwk = {**json.loads(ECAlgorithm.to_jwk(ec.generate_private_key(ec.SECP256R1()))), "kid": "k1"}
    clean_env.setenv("SUPABASE_URL", "http://supabase.test")
    clean_env.setenv("SUPABASE_SECRET_KEY", "sb_secret_x")
    clean_env.setenv("VOICESESSIONS_SIGNING_KEY", json.dumps(jwk))
    for vs in (
        face.from_env(),
        face.from_supabase("http://supabase.test", "sb_secret_x", signing_key=jwk),
    ):
        user = uuid.uuid4()
        assert vs.as_user(user).identity.user_id == user
        assert vs._backend._shared.signer.kid == "k1"
    clean_env.setenv("VOICESESSIONS_SIGNING_KEY", "{not json")
    with pytest.raises(ConfigurationError, match="JSON"):
        face.from_env()

    # A key set (the current and the next key of a rotation) and the kid to sign with.
    other = {**json.loads(ECAlgorithm.to_jwk(ec.generate_private_key(ec.SECP256R1()))), "kid": "k2"}
    clean_env.setenv("VOICESESSIONS_SIGNING_KEY", json.dumps({"keys": [jwk, other]}))
    assert face.from_env()._backend._shared.signer.kid == "k1"  # no kid: the first
    for kid in ("k1", "k2"):
        clean_env.setenv("VOICESESSIONS_SIGNING_KEY_ID", kid)
        assert face.from_env()._backend._shared.signer.kid == kid
        vs = face.from_supabase(
            "http://supabase.test", "sb_secret_x", signing_key=[jwk, other], signing_key_id=kid
        )
        assert vs._backend._shared.signer.kid == kid
    clean_env.setenv("VOICESESSIONS_SIGNING_KEY_ID", "k3")
    with pytest.raises(ConfigurationError, match="'k3'"):
        face.from_env()
    clean_env.delenv("VOICESESSIONS_SIGNING_KEY")
    with pytest.raises(ConfigurationError, match="without a signing key"):
        face.from_env()
