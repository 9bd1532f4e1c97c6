"""What the live Supabase suite (``tests/live/test_live_supabase.py``) reads from the
environment: the project it runs against, or exactly which variables are missing.

The suite runs only when all of these are set (an empty value counts as unset):

- ``SUPABASE_URL``: the project URL (``http://127.0.0.1:54321`` for ``supabase start``);
- ``SUPABASE_SECRET_KEY`` (``sb_secret_...``), else the legacy ``SUPABASE_SERVICE_ROLE_KEY``:
  the service key the suite provisions companies and users with;
- ``SUPABASE_PUBLISHABLE_KEY`` (``sb_publishable_...``), else the legacy
  ``SUPABASE_ANON_KEY``: the key a browser holds, sent with a user's own token;
- the material ``as_user`` signs users' tokens with: ``VOICESESSIONS_SIGNING_KEY`` (the
  private JWK, ES256 or RS256, of a signing key the project trusts, or a JWKS / list of JWKs
  such as the Supabase CLI's ``signing_keys.json``, with ``VOICESESSIONS_SIGNING_KEY_ID``
  naming the key to sign with), else the legacy HS256 ``SUPABASE_JWT_SECRET``.

The new names come first, as in :meth:`voicesessions.VoiceSessions.from_env`.
``tests/live/test_live_configuration.py`` pins this reading without any network.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import jwt

ENV_URL = "SUPABASE_URL"
#: The service key: the new name first, then the legacy one.
ENV_SECRET_KEYS = ("SUPABASE_SECRET_KEY", "SUPABASE_SERVICE_ROLE_KEY")
#: The browser's key: the new name first, then the legacy one.
ENV_PUBLISHABLE_KEYS = ("SUPABASE_PUBLISHABLE_KEY", "SUPABASE_ANON_KEY")
#: What users' tokens are signed with: the signing key first, then the legacy JWT secret.
ENV_SIGNING_KEY = "VOICESESSIONS_SIGNING_KEY"
ENV_SIGNING_KEY_ID = "VOICESESSIONS_SIGNING_KEY_ID"
ENV_JWT_SECRET = "SUPABASE_JWT_SECRET"


def _first(environ: Mapping[str, str], names: tuple[str, ...]) -> str | None:
    return next((environ[name] for name in names if environ.get(name)), None)


def _either(names: tuple[str, ...]) -> str:
    return f"{names[0]} (or the legacy {names[1]})"


def missing(environ: Mapping[str, str]) -> list[str]:
    """The settings the live suite lacks in ``environ``, named as the reader should set them
    (empty when it can run)."""
    lacking = []
    if not environ.get(ENV_URL):
        lacking.append(ENV_URL)
    if _first(environ, ENV_SECRET_KEYS) is None:
        lacking.append(_either(ENV_SECRET_KEYS))
    if _first(environ, ENV_PUBLISHABLE_KEYS) is None:
        lacking.append(_either(ENV_PUBLISHABLE_KEYS))
    if not environ.get(ENV_SIGNING_KEY) and not environ.get(ENV_JWT_SECRET):
        lacking.append(f"{ENV_SIGNING_KEY} (or the legacy {ENV_JWT_SECRET})")
    return lacking


def skip_reason(environ: Mapping[str, str]) -> str:
    """Why the live suite skips in ``environ`` ("" when it runs)."""
    lacking = missing(environ)
    if not lacking:
        return ""
    return "skipped: no live Supabase configured (set " + ", ".join(lacking) + " to run)"


@dataclass(frozen=True)
class LiveProject:
    """The Supabase project of the live suite, as the environment configures it."""

    url: str
    secret_key: str
    publishable_key: str
    signing_key: str | None
    signing_key_id: str | None
    jwt_secret: str | None

    @classmethod
    def from_environ(cls, environ: Mapping[str, str]) -> LiveProject:
        """The project configured in ``environ``; ``LookupError`` naming what is missing."""
        lacking = missing(environ)
        if lacking:
            raise LookupError(skip_reason(environ))
        return cls(
            url=environ[ENV_URL].rstrip("/"),
            secret_key=_first(environ, ENV_SECRET_KEYS) or "",
            publishable_key=_first(environ, ENV_PUBLISHABLE_KEYS) or "",
            signing_key=environ.get(ENV_SIGNING_KEY) or None,
            signing_key_id=environ.get(ENV_SIGNING_KEY_ID) or None,
            jwt_secret=environ.get(ENV_JWT_SECRET) or None,
        )

    def signing_options(self) -> dict[str, Any]:
        """The ``from_supabase`` options that let ``as_user`` sign users' tokens."""
        return {
            "signing_key": self.signing_key,
            "signing_key_id": self.signing_key_id,
            "jwt_secret": self.jwt_secret,
        }

    def user_token(self, user_id: uuid.UUID) -> str:
        """A user's access token as Supabase Auth signs it, minted here (not by the SDK)
        with the signing key the environment names (else the legacy JWT secret)."""
        now = int(time.time())
        claims = {
            "iss": f"{self.url}/auth/v1",
            "sub": str(user_id),
            "aud": "authenticated",
            "role": "authenticated",
            "iat": now,
            "exp": now + 600,
            "session_id": str(uuid.uuid4()),
            "is_anonymous": False,
        }
        if self.signing_key is None:
            assert self.jwt_secret is not None  # missing() requires one of the two
            return jwt.encode(claims, self.jwt_secret, algorithm="HS256")
        private = self._private_jwk()
        key = jwt.PyJWK(private)
        return jwt.encode(
            claims, key.key, algorithm=key.algorithm_name, headers={"kid": private["kid"]}
        )

    def _private_jwk(self) -> dict[str, Any]:
        """The JWK to sign with: the one given, or from a set the one named by
        ``signing_key_id``, else (as GoTrue and the CLI pick) the first private key whose
        ``key_ops`` include ``sign``, else the first private key."""
        assert self.signing_key is not None
        document = json.loads(self.signing_key)
        if isinstance(document, dict) and "keys" not in document:
            return document
        keys = document["keys"] if isinstance(document, dict) else document
        private = [key for key in keys if "d" in key]
        if self.signing_key_id is not None:
            return dict(next(key for key in private if key.get("kid") == self.signing_key_id))
        marked = [key for key in private if "sign" in (key.get("key_ops") or ())]
        return dict((marked or private)[0])
