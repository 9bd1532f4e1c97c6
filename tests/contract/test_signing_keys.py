"""``as_user`` with a project's asymmetric JWT signing key (a private JWK, ES256 or RS256).

The minted token is checked as GoTrue and PostgREST would check it: with the public half of
the key as the project's JWKS publishes it (``/auth/v1/.well-known/jwks.json``), found by the
token's ``kid`` header, with that key's algorithm only, and the claims of a Supabase Auth
access token (``aud`` authenticated, ``exp`` in the future).

Key rotation, as Supabase runs it: a new key is imported as *standby*, then *rotated* to be
the current key (the previous one stays trusted), and the previous key is *revoked* once the
tokens it signed have expired. ``signing_key`` may hold several keys (a JWKS, or a list like
the Supabase CLI's ``signing_keys.json``) and ``signing_key_id`` names the one to sign with,
so a deployment rotates by changing the kid only.
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
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from jwt.algorithms import ECAlgorithm, OKPAlgorithm, RSAAlgorithm

from tests.contract.conftest import BASE, SECRET, USER_A, Face
from tests.support.jwks import ec_jwk, jwks, public_jwk, rsa_jwk, verify_as_supabase
from voicesessions import errors

pytestmark = pytest.mark.asyncio(loop_scope="session")

SB_SECRET = "sb_secret_N7UND0UgjKTVK-Uodkm0Hg_xSvEMPvz"


KEYS = {"ES256": ec_jwk("ec-key-1"), "RS256": rsa_jwk("rsa-key-1")}


async def _minted(face: Face, api: respx.MockRouter, backend: Any) -> str:
    """The user token ``backend`` (made by ``as_user``) sends with a request."""
    route = api.get("/rest/v1/sessions").respond(200, json=[])
    await face.call(backend.select, "sessions")
    authorization = route.calls.last.request.headers["Authorization"]
    assert authorization.startswith("Bearer ")
    return authorization.removeprefix("Bearer ")


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
    before = int(time.time())  # as_user() may mint the token already
    backend = build(signing_key=signing_key, jwt_secret=SECRET).as_user(USER_A)
    await face.call(backend.select, "sessions")
    after = int(time.time())

    request = route.calls.last.request
    assert request.headers["apikey"] == SB_SECRET
    scheme, _, token = request.headers["Authorization"].partition(" ")
    assert scheme == "Bearer"
    header = jwt.get_unverified_header(token)
    assert header["alg"] == alg  # the signing key wins over the legacy secret
    assert header["kid"] == jwk["kid"]
    claims = verify_as_supabase(token, jwks(jwk))
    assert claims == jwt.decode(token, public, algorithms=[alg], audience="authenticated")
    assert claims["sub"] == str(USER_A)
    assert claims["role"] == "authenticated"
    assert claims["aud"] == "authenticated"
    assert claims["iss"] == f"{BASE}/auth/v1"
    assert claims["is_anonymous"] is False
    uuid.UUID(claims["session_id"])
    assert before <= claims["iat"] <= after
    assert claims["exp"] - claims["iat"] == face.module.USER_TOKEN_LIFETIME
    # nobody else's key verifies it, not even under the same kid
    other = "RS256" if alg == "ES256" else "ES256"
    with pytest.raises(jwt.InvalidTokenError):
        jwt.decode(token, KEYS[other][1], algorithms=[other], audience="authenticated")
    with pytest.raises(jwt.InvalidTokenError):
        verify_as_supabase(token, jwks({**KEYS[other][0], "kid": jwk["kid"]}))
    with pytest.raises(jwt.InvalidTokenError):
        verify_as_supabase(token, jwks(KEYS[other][0]))


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


_OKP = json.loads(OKPAlgorithm.to_jwk(ed25519.Ed25519PrivateKey.generate()))
_SMALL_RSA = {
    **json.loads(RSAAlgorithm.to_jwk(rsa.generate_private_key(65537, key_size=1024))),
    "kid": "rsa-1024",
}
_OTHER_EC = json.loads(ECAlgorithm.to_jwk(ec.generate_private_key(ec.SECP256R1())))
#: A shared HS256 secret as GOTRUE_JWT_KEYS lists the legacy JWT secret.
_OCT = {"kty": "oct", "kid": "oct-1", "alg": "HS256", "k": "c2VjcmV0LXNlY3JldC1zZWNyZXQ"}


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
        pytest.param(42, "JWK", id="a-number"),
        pytest.param({**_OKP, "kid": "ed"}, "'OKP' is not supported", id="ed25519"),
        pytest.param(_SMALL_RSA, "1024 bits", id="rsa-1024"),
        pytest.param({**KEYS["ES256"][0], "x": _OTHER_EC["x"]}, "unusable", id="halves-differ"),
        pytest.param({**KEYS["ES256"][0], "key_ops": ["verify"]}, "not for signing", id="verify"),
        pytest.param({**KEYS["ES256"][0], "use": "enc"}, "not for signing", id="use-enc"),
        pytest.param({"keys": []}, "holds no key", id="empty-jwks"),
        pytest.param([], "holds no key", id="empty-list"),
        pytest.param("[]", "holds no key", id="empty-list-json"),
        pytest.param({"keys": KEYS["ES256"][0]}, "list of JWKs", id="keys-not-a-list"),
        pytest.param([KEYS["ES256"][0], "x"], "entry 1", id="entry-not-an-object"),
        pytest.param(jwks(*(jwk for jwk, _ in KEYS.values())), "no private key", id="public-set"),
        pytest.param([_OCT, KEYS["ES256"][0]], "HS256 shared secret", id="secret-first"),
    ],
)
async def test_unusable_signing_keys_are_configuration_errors(
    face: Face, signing_key: Any, message: str
) -> None:
    with pytest.raises(errors.ConfigurationError, match=message):
        face.build(SB_SECRET, signing_key=signing_key)


# -- key sets and rotation ------------------------------------------------------------------

K1, K2 = KEYS["RS256"][0], KEYS["ES256"][0]  # a rotation may change the algorithm too
CLI_KEY_OPS = {"use": "sig", "key_ops": ["sign", "verify"], "ext": True}  # `supabase gen ...`


@pytest.mark.parametrize(
    ("signing_key", "kid"),
    [
        pytest.param({"keys": [K1, K2]}, K1["kid"], id="jwks-first"),
        pytest.param([K1, K2], K1["kid"], id="list-first"),
        pytest.param(json.dumps([K2, K1]), K2["kid"], id="json-list-first"),
        pytest.param(json.dumps({"keys": [K2, K1]}), K2["kid"], id="json-jwks-first"),
        pytest.param([public_jwk(K1), K2], K2["kid"], id="public-entries-skipped"),
        pytest.param([{**K1, "key_ops": ["verify"]}, K2], K2["kid"], id="verify-only-skipped"),
        # The Supabase CLI's signing_keys.json: every key may sign; the CLI signs with the first.
        pytest.param([{**K2, **CLI_KEY_OPS}, {**K1, **CLI_KEY_OPS}], K2["kid"], id="cli-file"),
        # GOTRUE_JWT_KEYS: GoTrue signs with the key whose key_ops include "sign".
        pytest.param([_OCT, {**K1, **CLI_KEY_OPS}], K1["kid"], id="gotrue-jwt-keys"),
        pytest.param([K2, {**K1, "key_ops": ["sign"]}], K1["kid"], id="key-ops-sign-first"),
    ],
)
async def test_without_a_kid_the_first_private_signing_key_of_a_set_signs(
    face: Face, api: respx.MockRouter, build: Callable[..., Any], signing_key: Any, kid: str
) -> None:
    token = await _minted(face, api, build(signing_key=signing_key).as_user(USER_A))
    assert jwt.get_unverified_header(token)["kid"] == kid
    assert verify_as_supabase(token, jwks(K1, K2))["sub"] == str(USER_A)


@pytest.mark.parametrize("kid", [K1["kid"], K2["kid"]])
@pytest.mark.parametrize("as_json", [False, True], ids=["objects", "json"])
async def test_signing_key_id_picks_the_key_of_a_set(
    face: Face, api: respx.MockRouter, build: Callable[..., Any], kid: str, as_json: bool
) -> None:
    keys: Any = {"keys": [K1, K2]}
    backend = build(signing_key=json.dumps(keys) if as_json else keys, signing_key_id=kid)
    token = await _minted(face, api, backend.as_user(USER_A))
    header = jwt.get_unverified_header(token)
    assert header["kid"] == kid
    assert header["alg"] == ("RS256" if kid == K1["kid"] else "ES256")
    assert verify_as_supabase(token, jwks(K1, K2))["sub"] == str(USER_A)
    only = K1 if kid == K1["kid"] else K2
    assert verify_as_supabase(token, jwks(only))["sub"] == str(USER_A)


#: Supabase's rotation of an imported key, step by step: the kids the project trusts (its
#: JWKS: the current key and the previously used one; a standby key signs nothing yet).
ROTATION = [
    pytest.param({K1["kid"]}, id="K2-imported-as-standby"),
    pytest.param({K1["kid"], K2["kid"]}, id="rotated-K2-current-K1-previously-used"),
    pytest.param({K2["kid"]}, id="K1-revoked"),
]


@pytest.mark.parametrize("trusted", ROTATION)
@pytest.mark.parametrize("signing_kid", [K1["kid"], K2["kid"]])
async def test_a_rotation_changes_only_the_kid_and_works_while_the_project_trusts_it(
    face: Face,
    api: respx.MockRouter,
    build: Callable[..., Any],
    trusted: set[str],
    signing_kid: str,
) -> None:
    """One deployment setting holds both keys; ``signing_key_id`` follows the rotation. The
    minted tokens are accepted exactly while the project trusts the key they name: switch the
    kid after rotating (when both are trusted), and revoke the old key after the switch."""
    backend = build(signing_key=[K1, K2], signing_key_id=signing_kid).as_user(USER_A)
    token = await _minted(face, api, backend)
    project = jwks(*(jwk for jwk in (K1, K2) if jwk["kid"] in trusted))
    if signing_kid in trusted:
        assert verify_as_supabase(token, project)["sub"] == str(USER_A)
    else:
        with pytest.raises(jwt.InvalidTokenError, match="no trusted key"):
            verify_as_supabase(token, project)


@pytest.mark.parametrize(
    ("signing_key", "kid", "message"),
    [
        pytest.param([K1, K2], "no-such-kid", "no key of the signing key set has kid", id="absent"),
        pytest.param([K1, {**K2, "kid": K1["kid"]}], K1["kid"], "2 keys", id="duplicate-kid"),
        pytest.param([public_jwk(K1), K2], K1["kid"], "public half", id="named-key-is-public"),
        pytest.param([_OCT, K1], "oct-1", "HS256 shared secret", id="named-key-is-a-secret"),
        pytest.param(K2, K1["kid"], "not 'rsa-key-1'", id="single-jwk-other-kid"),
        pytest.param(K2, "", "non-empty", id="empty-kid"),
        pytest.param(None, K1["kid"], "without a signing key", id="kid-without-a-key"),
    ],
)
async def test_a_signing_key_id_that_names_no_usable_key_is_a_configuration_error(
    face: Face, signing_key: Any, kid: str, message: str
) -> None:
    with pytest.raises(errors.ConfigurationError, match=message):
        face.build(SB_SECRET, signing_key=signing_key, signing_key_id=kid, jwt_secret=SECRET)


async def test_without_signing_material_the_error_names_the_three_ways(
    face: Face, build: Callable[..., Any]
) -> None:
    with pytest.raises(errors.ConfigurationError) as caught:
        build().as_user(USER_A)
    message = str(caught.value)
    assert "access_token" in message
    assert "signing_key" in message
    assert "from_postgres" in message
