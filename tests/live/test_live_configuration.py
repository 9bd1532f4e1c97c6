"""How the live Supabase suite reads its configuration, checked without any network.

Not a live test: it runs everywhere, so the suite's reading of the environment cannot rot
while the suite itself skips (:mod:`tests.support.live_project`): the new variable names
before the legacy ones, a signing key (ES256 or RS256 JWK, or a key set with a kid) before
the legacy JWT secret, and a skip reason naming exactly what is missing.
"""

from __future__ import annotations

import json
import os
import uuid
from typing import Any

import jwt
import pytest

from tests.live import test_live_supabase as live_suite
from tests.support.jwks import ec_jwk, jwks, rsa_jwk, verify_as_supabase
from tests.support.live_project import LiveProject, missing, skip_reason
from voicesessions import AsyncVoiceSessions, VoiceSessions

URL = "http://127.0.0.1:54321"
SB_SECRET = "sb_secret_N7UND0UgjKTVK-Uodkm0Hg_xSvEMPvz"
SB_PUBLISHABLE = "sb_publishable_ACJWlzQHlZjBrEguHvfOxg_3BJgxAaH"
JWT_SECRET = "super-secret-jwt-token-with-at-least-32-characters-long"
LEGACY_SERVICE = jwt.encode({"role": "service_role"}, JWT_SECRET, "HS256")
LEGACY_ANON = jwt.encode({"role": "anon"}, JWT_SECRET, "HS256")
EC_KEY, _ = ec_jwk("live-ec")
RSA_KEY, _ = rsa_jwk("live-rsa")
USER = uuid.UUID("0a0a0a0a-0000-4000-8000-00000000000a")

#: A complete environment with the new names and an ES256 signing key.
NEW = {
    "SUPABASE_URL": URL,
    "SUPABASE_SECRET_KEY": SB_SECRET,
    "SUPABASE_PUBLISHABLE_KEY": SB_PUBLISHABLE,
    "VOICESESSIONS_SIGNING_KEY": json.dumps(EC_KEY),
}
#: A complete environment with the legacy names only.
LEGACY = {
    "SUPABASE_URL": URL,
    "SUPABASE_SERVICE_ROLE_KEY": LEGACY_SERVICE,
    "SUPABASE_ANON_KEY": LEGACY_ANON,
    "SUPABASE_JWT_SECRET": JWT_SECRET,
}
SECRET_MISSING = "SUPABASE_SECRET_KEY (or the legacy SUPABASE_SERVICE_ROLE_KEY)"
PUBLISHABLE_MISSING = "SUPABASE_PUBLISHABLE_KEY (or the legacy SUPABASE_ANON_KEY)"
SIGNING_MISSING = "VOICESESSIONS_SIGNING_KEY (or the legacy SUPABASE_JWT_SECRET)"


@pytest.mark.parametrize(
    ("environ", "lacking"),
    [
        pytest.param({}, ["SUPABASE_URL", SECRET_MISSING, PUBLISHABLE_MISSING, SIGNING_MISSING]),
        pytest.param(NEW, [], id="new-names"),
        pytest.param(LEGACY, [], id="legacy-names"),
        pytest.param({**NEW, "SUPABASE_URL": ""}, ["SUPABASE_URL"], id="empty-is-unset"),
        pytest.param(
            {k: v for k, v in NEW.items() if k != "SUPABASE_SECRET_KEY"},
            [SECRET_MISSING],
            id="no-secret-key",
        ),
        pytest.param(
            {k: v for k, v in NEW.items() if k != "SUPABASE_PUBLISHABLE_KEY"},
            [PUBLISHABLE_MISSING],
            id="no-publishable-key",
        ),
        pytest.param(
            {k: v for k, v in NEW.items() if k != "VOICESESSIONS_SIGNING_KEY"},
            [SIGNING_MISSING],
            id="nothing-to-sign-with",
        ),
        pytest.param(
            {k: v for k, v in LEGACY.items() if k != "SUPABASE_JWT_SECRET"},
            [SIGNING_MISSING],
            id="legacy-without-secret",
        ),
        pytest.param(
            {"SUPABASE_URL": URL, "SUPABASE_ACCESS_TOKEN": "sbp_0123", "SUPABASE_KEY": "x"},
            [SECRET_MISSING, PUBLISHABLE_MISSING, SIGNING_MISSING],
            id="cli-token-and-other-names-do-not-count",
        ),
    ],
)
def test_the_skip_reason_names_exactly_what_is_missing(
    environ: dict[str, str], lacking: list[str]
) -> None:
    assert missing(environ) == lacking
    reason = skip_reason(environ)
    if not lacking:
        assert reason == ""
        assert LiveProject.from_environ(environ).url == URL
        return
    assert reason == f"skipped: no live Supabase configured (set {', '.join(lacking)} to run)"
    with pytest.raises(LookupError) as caught:
        LiveProject.from_environ(environ)
    assert str(caught.value) == reason


@pytest.mark.parametrize(
    ("environ", "secret_key", "publishable_key"),
    [
        pytest.param(NEW, SB_SECRET, SB_PUBLISHABLE, id="new"),
        pytest.param(LEGACY, LEGACY_SERVICE, LEGACY_ANON, id="legacy"),
        pytest.param({**LEGACY, **NEW}, SB_SECRET, SB_PUBLISHABLE, id="new-before-legacy"),
        pytest.param(
            {**LEGACY, **NEW, "SUPABASE_SECRET_KEY": "", "SUPABASE_PUBLISHABLE_KEY": ""},
            LEGACY_SERVICE,
            LEGACY_ANON,
            id="empty-new-falls-back",
        ),
        pytest.param(
            {**NEW, "SUPABASE_SERVICE_ROLE_KEY": LEGACY_SERVICE},
            SB_SECRET,
            SB_PUBLISHABLE,
            id="mixed",
        ),
    ],
)
def test_the_new_key_names_are_read_before_the_legacy_ones(
    environ: dict[str, str], secret_key: str, publishable_key: str
) -> None:
    project = LiveProject.from_environ({**environ, "SUPABASE_URL": URL + "/"})
    assert (project.url, project.secret_key, project.publishable_key) == (
        URL,
        secret_key,
        publishable_key,
    )


SIGNING_SETUPS = [
    pytest.param({"VOICESESSIONS_SIGNING_KEY": json.dumps(EC_KEY)}, "live-ec", id="es256-jwk"),
    pytest.param({"VOICESESSIONS_SIGNING_KEY": json.dumps(RSA_KEY)}, "live-rsa", id="rs256-jwk"),
    pytest.param(
        {"VOICESESSIONS_SIGNING_KEY": json.dumps([RSA_KEY, EC_KEY])}, "live-rsa", id="cli-list"
    ),
    pytest.param(
        {"VOICESESSIONS_SIGNING_KEY": json.dumps([RSA_KEY, {**EC_KEY, "key_ops": ["sign"]}])},
        "live-ec",
        id="key-ops-sign",
    ),
    pytest.param(
        {
            "VOICESESSIONS_SIGNING_KEY": json.dumps({"keys": [RSA_KEY, EC_KEY]}),
            "VOICESESSIONS_SIGNING_KEY_ID": "live-ec",
        },
        "live-ec",
        id="jwks-and-kid",
    ),
    pytest.param(
        {"VOICESESSIONS_SIGNING_KEY": json.dumps(EC_KEY), "SUPABASE_JWT_SECRET": JWT_SECRET},
        "live-ec",
        id="signing-key-before-secret",
    ),
    pytest.param({"SUPABASE_JWT_SECRET": JWT_SECRET}, None, id="legacy-hs256-secret"),
]


def _verify(token: str, kid: str | None) -> dict[str, Any]:
    if kid is None:
        assert jwt.get_unverified_header(token)["alg"] == "HS256"
        claims: dict[str, Any] = jwt.decode(
            token, JWT_SECRET, algorithms=["HS256"], audience="authenticated"
        )
        return claims
    assert jwt.get_unverified_header(token)["kid"] == kid
    return verify_as_supabase(token, jwks(EC_KEY, RSA_KEY))


@pytest.mark.parametrize(("signing", "kid"), SIGNING_SETUPS)
@pytest.mark.parametrize("face", [VoiceSessions, AsyncVoiceSessions], ids=["sync", "async"])
def test_as_user_in_the_live_suite_signs_with_what_the_environment_names(
    signing: dict[str, str], kid: str | None, face: Any
) -> None:
    """The suite's service client (built as its ``world`` fixture builds it) mints for
    ``as_user`` tokens the project verifies with the public key the kid names (or, legacy,
    with the JWT secret); so does the suite's own ``user_token``. No request is made."""
    environ = {
        "SUPABASE_URL": URL,
        "SUPABASE_SECRET_KEY": SB_SECRET,
        "SUPABASE_PUBLISHABLE_KEY": SB_PUBLISHABLE,
        **signing,
    }
    project = LiveProject.from_environ(environ)
    service = face.from_supabase(project.url, project.secret_key, **project.signing_options())
    minted = service.as_user(USER)._backend._bearer()
    assert _verify(minted, kid)["sub"] == str(USER)
    own = project.user_token(USER)
    claims = _verify(own, kid)
    assert (claims["sub"], claims["role"], claims["iss"]) == (
        str(USER),
        "authenticated",
        f"{URL}/auth/v1",
    )


def test_the_live_suite_skips_by_this_reading() -> None:
    """``tests/live/test_live_supabase.py`` decides to run or skip with this very reader."""
    assert skip_reason(os.environ) == live_suite.SKIP_REASON
    (mark,) = [m for m in live_suite.pytestmark if m.name == "skipif"]
    assert mark.args == (bool(live_suite.SKIP_REASON),)
    assert mark.kwargs["reason"] == live_suite.SKIP_REASON
    assert any(m.name == "live" for m in live_suite.pytestmark)
