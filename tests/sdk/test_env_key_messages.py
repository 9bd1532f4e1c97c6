"""What ``from_env`` and the CLI say about a key a person put in the environment.

Every refusal names the variable the person set and what to set instead (a variable and
the kind of value), in words a CLI user can act on: never ``pass identity=...``.
"""

from __future__ import annotations

import json

import jwt
import pytest
from click.testing import CliRunner

from voicesessions import AsyncVoiceSessions, ConfigurationError, VoiceSessions
from voicesessions.cli import cli

SECRET = "s" * 40
URL = "http://supabase.test"
KEY_VARS = (
    "SUPABASE_SECRET_KEY",
    "SUPABASE_PUBLISHABLE_KEY",
    "SUPABASE_SERVICE_ROLE_KEY",
    "SUPABASE_KEY",
    "SUPABASE_ANON_KEY",
)
OTHER_VARS = (
    "VOICESESSIONS_DSN",
    "SUPABASE_ACCESS_TOKEN",
    "VOICESESSIONS_ACCESS_TOKEN",
    "SUPABASE_JWT_SECRET",
    "VOICESESSIONS_SIGNING_KEY",
    "VOICESESSIONS_SIGNING_KEY_ID",
    "VOICESESSIONS_READ_DSN",
    "VOICESESSIONS_READ_URL",
)

#: (label, key) of keys that are of no kind the SDK knows.
UNKNOWN_KEYS = [
    ("random", "0123456789abcdef0123456789abcdef"),
    ("truncated-jwt", "eyJhbGciOiJIUzI1NiJ9.eyJyb2xlIjoic2VydmljZV9yb2xlIn0"),
    ("users-jwt", jwt.encode({"role": "authenticated", "sub": "x"}, SECRET, "HS256")),
    ("cli-token", "sbp_0123456789abcdef0123456789abcdef01234567"),
    ("sb-other", "sb_unknown_0123"),
]
SERVICE_JWT = jwt.encode({"role": "service_role"}, SECRET, "HS256")
ANON_JWT = jwt.encode({"role": "anon"}, SECRET, "HS256")
#: (variable, key of the other kind than the variable promises)
WRONG_KIND = [
    ("SUPABASE_SECRET_KEY", "sb_publishable_x"),
    ("SUPABASE_SECRET_KEY", ANON_JWT),
    ("SUPABASE_SERVICE_ROLE_KEY", ANON_JWT),
    ("SUPABASE_SERVICE_ROLE_KEY", "sb_publishable_x"),
    ("SUPABASE_PUBLISHABLE_KEY", "sb_secret_x"),
    ("SUPABASE_PUBLISHABLE_KEY", SERVICE_JWT),
    ("SUPABASE_ANON_KEY", "sb_secret_x"),
    ("SUPABASE_ANON_KEY", SERVICE_JWT),
]


@pytest.fixture
def env(monkeypatch: pytest.MonkeyPatch, tmp_path: object) -> pytest.MonkeyPatch:
    for name in (*KEY_VARS, *OTHER_VARS):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("VOICESESSIONS_HOME", str(tmp_path))
    monkeypatch.setenv("SUPABASE_URL", URL)
    return monkeypatch


def assert_actionable(message: str, variable: str) -> None:
    assert variable in message, message
    assert "SUPABASE_SECRET_KEY=sb_secret_" in message, message
    assert "identity=" not in message, message


@pytest.mark.parametrize("face", [VoiceSessions, AsyncVoiceSessions])
@pytest.mark.parametrize("variable", KEY_VARS)
@pytest.mark.parametrize(("label", "key"), UNKNOWN_KEYS)
def test_an_unknown_key_names_the_variable_and_what_to_set(
    env: pytest.MonkeyPatch,
    face: type[VoiceSessions] | type[AsyncVoiceSessions],
    variable: str,
    label: str,
    key: str,
) -> None:
    env.setenv(variable, key)
    with pytest.raises(ConfigurationError) as caught:
        face.from_env()
    assert_actionable(str(caught.value), variable)
    if label == "cli-token":
        assert "personal access token" in str(caught.value)
    if label == "users-jwt":
        assert "VOICESESSIONS_ACCESS_TOKEN" in str(caught.value)


@pytest.mark.parametrize(("variable", "key"), WRONG_KIND)
def test_a_key_of_the_other_kind_is_refused(
    env: pytest.MonkeyPatch, variable: str, key: str
) -> None:
    env.setenv(variable, key)
    with pytest.raises(ConfigurationError) as caught:
        VoiceSessions.from_env()
    assert_actionable(str(caught.value), variable)
    assert "would act as" in str(caught.value)


@pytest.mark.parametrize(
    "key", ["sb_secret_x", "sb_publishable_x", SERVICE_JWT, ANON_JWT], ids=["s", "p", "sj", "aj"]
)
def test_supabase_key_takes_either_kind(env: pytest.MonkeyPatch, key: str) -> None:
    env.setenv("SUPABASE_KEY", key)
    with VoiceSessions.from_env() as vs:
        assert vs.identity.role in ("service_role", "anon")


def test_a_url_without_a_key_says_what_to_set(env: pytest.MonkeyPatch) -> None:
    with pytest.raises(ConfigurationError) as caught:
        VoiceSessions.from_env()
    assert_actionable(str(caught.value), "SUPABASE_URL")


@pytest.mark.parametrize(
    ("variable", "value", "text"),
    [
        ("VOICESESSIONS_ACCESS_TOKEN", "not-a-jwt", "not a JWT"),
        ("VOICESESSIONS_ACCESS_TOKEN", "sb_secret_x", "API key"),
        ("VOICESESSIONS_SIGNING_KEY", "{not json", "JSON"),
        ("VOICESESSIONS_SIGNING_KEY", json.dumps({"kty": "oct", "k": "abc"}), "oct"),
    ],
)
def test_token_and_signing_key_errors_name_their_variable(
    env: pytest.MonkeyPatch, variable: str, value: str, text: str
) -> None:
    env.setenv("SUPABASE_SECRET_KEY", "sb_secret_x")
    env.setenv(variable, value)
    with pytest.raises(ConfigurationError, match=text) as caught:
        VoiceSessions.from_env()
    assert str(caught.value).startswith(f"{variable}"), str(caught.value)


@pytest.mark.parametrize(("label", "key"), UNKNOWN_KEYS)
def test_the_cli_says_it_in_one_line(env: pytest.MonkeyPatch, label: str, key: str) -> None:
    env.setenv("SUPABASE_SERVICE_ROLE_KEY", key)
    result = CliRunner().invoke(cli, ["gdpr", "requests"])
    assert result.exit_code == 1, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1, result.output
    assert_actionable(lines[0], "SUPABASE_SERVICE_ROLE_KEY")
    assert "Traceback" not in result.output
