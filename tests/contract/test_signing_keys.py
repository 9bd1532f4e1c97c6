"""``as_user`` with a project's asymmetric JWT signing key (a private JWK, ES256 or RS256).

The minted token is checked as GoTrue and PostgREST would check it: with the public half of
the key (the project's JWKS), the algorithm of the key, the ``kid`` header naming it, and the
claims of a Supabase Auth access token.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import AsyncIterator, Callable
from typing import Any

import jwt
import pytest
import respx
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from jwt.algorithms import ECAlgorithm, RSAAlgorithm

from tests.contract.conftest import BASE, SECRET, USER_A, Face
from voicesessions import errors

pytestmark = pytest.mark.asyncio(loop_scope="session")

SB_SECRET = "sb_secret_N7UND0UgjKTVK-Uodkm0Hg_xSvEMPvz"


def _ec_jwk(kid: str) -> tuple[dict[str, Any], Any]:
    private = ec.generate_private_key(ec.SECP256R1())
    jwk = json.loads(ECAlgorithm.to_jwk(private))
    return {**jwk, "kid": kid, "alg": "ES256"}, private.public_key()


def _rsa_jwk(kid: str) -> tuple[dict[str, Any], Any]:
    private = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    jwk = json.loads(RSAAlgorithm.to_jwk(private))
    return {**jwk, "kid": kid, "alg": "RS256"}, private.public_key()


KEYS = {"ES256": _ec_jwk("ec-key-1"), "RS256": _rsa_jwk("rsa-key-1")}


@pytest.fixture
async def build(face: Face) -> AsyncIterator[Callable[..., Any]]:
    made: list[Any] = []

    def make(key: str = SB_SECRET, **options: Any) -> Any:
        backend = face.build(key, **options)
        made.append(backend)
        return backend

    yield make
    for backend in made:
        await face.close(backend)


@pytest.mark.parametrize("as_json", [False, True], ids=["dict", "json"])
@pytest.mark.parametrize("alg", list(KEYS))
async def test_as_user_signs_with_the_signing_key_and_the_public_key_verifies(
    face: Face, api: respx.MockRouter, build: Callable[..., Any], alg: str, as_json: bool
) -> None:
    jwk, public = KEYS[alg]
    route = api.get("/rest/v1/sessions").respond(200, json=[])
    signing_key = json.dumps(jwk) if as_json else jwk
    backend = build(signing_key=signing_key, jwt_secret=SECRET).as_user(USER_A)

    before = int(time.time())
    await face.call(backend.select, "sessions")
    after = int(time.time())

    request = route.calls.last.request
    assert request.headers["apikey"] == SB_SECRET
    scheme, _, token = request.headers["Authorization"].partition(" ")
    assert scheme == "Bearer"
    header = jwt.get_unverified_header(token)
    assert header["alg"] == alg  # the signing key wins over the legacy secret
    assert header["kid"] == jwk["kid"]
    claims = jwt.decode(token, public, algorithms=[alg], audience="authenticated")
    assert claims["sub"] == str(USER_A)
    assert claims["role"] == "authenticated"
    assert claims["aud"] == "authenticated"
    assert claims["iss"] == f"{BASE}/auth/v1"
    assert claims["is_anonymous"] is False
    uuid.UUID(claims["session_id"])
    assert before <= claims["iat"] <= after
    assert claims["exp"] - claims["iat"] == face.module.USER_TOKEN_LIFETIME
    # nobody else's key verifies it
    other = "RS256" if alg == "ES256" else "ES256"
    with pytest.raises(jwt.InvalidTokenError):
        jwt.decode(token, KEYS[other][1], algorithms=[other], audience="authenticated")


async def test_the_hs256_secret_still_mints_supabase_claims(
    face: Face, api: respx.MockRouter, build: Callable[..., Any]
) -> None:
    route = api.get("/rest/v1/sessions").respond(200, json=[])
    await face.call(build(jwt_secret=SECRET).as_user(USER_A).select, "sessions")
    token = route.calls.last.request.headers["Authorization"].removeprefix("Bearer ")
    claims = jwt.decode(token, SECRET, algorithms=["HS256"], audience="authenticated")
    assert claims["sub"] == str(USER_A)
    assert claims["is_anonymous"] is False
    uuid.UUID(claims["session_id"])


def _without(jwk: dict[str, Any], name: str) -> dict[str, Any]:
    return {k: v for k, v in jwk.items() if k != name}


@pytest.mark.parametrize(
    ("signing_key", "message"),
    [
        pytest.param("{not json", "JSON", id="not-json"),
        pytest.param(_without(KEYS["ES256"][0], "d"), "private", id="public-half-only"),
        pytest.param(_without(KEYS["RS256"][0], "d"), "private", id="public-rsa-only"),
        pytest.param(_without(KEYS["ES256"][0], "kid"), "kid", id="no-kid"),
        pytest.param({**KEYS["ES256"][0], "kid": ""}, "kid", id="empty-kid"),
        pytest.param({**KEYS["ES256"][0], "alg": "RS256"}, "alg", id="alg-contradicts-key"),
        pytest.param({"kty": "oct", "k": "c2VjcmV0", "kid": "x"}, "ES256", id="symmetric"),
        pytest.param({**KEYS["ES256"][0], "crv": "P-384"}, "P-256", id="wrong-curve"),
        pytest.param([1, 2], "JWK", id="not-an-object"),
    ],
)
async def test_unusable_signing_keys_are_configuration_errors(
    face: Face, signing_key: Any, message: str
) -> None:
    with pytest.raises(errors.ConfigurationError, match=message):
        face.build(SB_SECRET, signing_key=signing_key)


async def test_without_signing_material_the_error_names_the_three_ways(
    face: Face, build: Callable[..., Any]
) -> None:
    with pytest.raises(errors.ConfigurationError) as caught:
        build().as_user(USER_A)
    message = str(caught.value)
    assert "access_token" in message
    assert "signing_key" in message
    assert "from_postgres" in message
