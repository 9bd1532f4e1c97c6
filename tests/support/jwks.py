"""JWT signing keys as a Supabase project holds them, and user tokens checked as GoTrue and
PostgREST check them.

A project publishes the public halves of the keys it trusts at
``<url>/auth/v1/.well-known/jwks.json``; a user's token names its key in the ``kid`` header and
is verified with that key's algorithm only, for the audience ``authenticated``, unexpired.
"""

from __future__ import annotations

import json
from typing import Any

import jwt
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from jwt.algorithms import ECAlgorithm, RSAAlgorithm

#: Members of a JWK that only the private half has.
PRIVATE_MEMBERS = {"d", "p", "q", "dp", "dq", "qi", "k"}


def ec_jwk(kid: str) -> tuple[dict[str, Any], Any]:
    """A private ES256 JWK (P-256) with ``kid``, and its public key."""
    private = ec.generate_private_key(ec.SECP256R1())
    jwk = json.loads(ECAlgorithm.to_jwk(private))
    return {**jwk, "kid": kid, "alg": "ES256"}, private.public_key()


def rsa_jwk(kid: str) -> tuple[dict[str, Any], Any]:
    """A private RS256 JWK (2048 bits) with ``kid`` and no ``key_ops``, and its public key."""
    private = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    jwk = json.loads(RSAAlgorithm.to_jwk(private))
    jwk.pop("key_ops", None)  # PyJWT marks it ["sign"]; a key here says so only when a test does
    return {**jwk, "kid": kid, "alg": "RS256"}, private.public_key()


def public_jwk(jwk: dict[str, Any]) -> dict[str, Any]:
    """The public half of a private JWK, as the project's JWKS publishes it."""
    public = {k: v for k, v in jwk.items() if k not in PRIVATE_MEMBERS}
    return {**public, "use": "sig", "key_ops": ["verify"]}


def jwks(*private_jwks: dict[str, Any]) -> dict[str, Any]:
    """The JWKS a project publishes for these keys (public halves only)."""
    return {"keys": [public_jwk(jwk) for jwk in private_jwks]}


def verify_as_supabase(token: str, trusted: dict[str, Any]) -> dict[str, Any]:
    """The claims of ``token`` verified as GoTrue and PostgREST verify a user's JWT against
    the project's JWKS ``trusted``: the key named by the ``kid`` header (a token naming no
    trusted key is refused), that key's algorithm only, ``aud`` authenticated, ``exp``."""
    kid = jwt.get_unverified_header(token).get("kid")
    by_kid = {key.key_id: key for key in jwt.PyJWKSet.from_dict(trusted).keys}
    if kid not in by_kid:
        raise jwt.InvalidTokenError(f"no trusted key has kid {kid!r}")
    key = by_kid[kid]
    claims: dict[str, Any] = jwt.decode(
        token,
        key,
        algorithms=[key.algorithm_name],
        audience="authenticated",
        options={"require": ["exp", "iat", "sub", "aud", "role"]},
    )
    return claims
