"""Password hashing, bearer tokens and signed links."""
from __future__ import annotations

import hashlib
import hmac
import secrets
from typing import Any

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from itsdangerous import BadSignature, SignatureExpired, URLSafeTimedSerializer

# argon2id, RFC 9106 "second recommended" profile: above OWASP's minimum
# (19 MiB, t=2, p=1) while keeping a login under ~100 ms on one core.
_hasher = PasswordHasher(time_cost=3, memory_cost=65536, parallelism=1)
# Verified when the account does not exist, so timing does not reveal which emails are registered.
_DUMMY_HASH = _hasher.hash(secrets.token_hex(16))

MIN_PASSWORD_LENGTH = 12


def hash_password(password: str) -> str:
    return _hasher.hash(password)


def verify_password(password_hash: str | None, password: str) -> bool:
    try:
        return _hasher.verify(password_hash or _DUMMY_HASH, password) and password_hash is not None
    except (VerificationError, InvalidHashError):
        return False


def password_needs_rehash(password_hash: str) -> bool:
    return _hasher.check_needs_rehash(password_hash)


def new_token() -> str:
    return secrets.token_urlsafe(32)


def token_digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def constant_time_equal(a: str, b: str) -> bool:
    return hmac.compare_digest(a.encode(), b.encode())


# Retired SECRET_KEYs (SECRET_KEY_FALLBACKS) by the current key: links signed before a
# rotation keep working while their old key is listed. Filled by shared.config.load_settings.
_fallback_keys: dict[str, tuple[str, ...]] = {}


def accept_fallback_keys(secret_key: str, fallbacks: tuple[str, ...]) -> None:
    _fallback_keys[secret_key] = fallbacks


def verification_keys(secret_key: str) -> list[str]:
    """Keys a signature may have been made with, oldest first, the current one last."""
    return [*_fallback_keys.get(secret_key, ()), secret_key]


class LinkSigner:
    """Signs the payload of a link (invitation, employee link) for one purpose with the
    current key; verifies with it and with the retired keys still accepted."""

    def __init__(self, secret_key: str, purpose: str):
        # itsdangerous signs with the last key of the list and verifies with each.
        self._serializer = URLSafeTimedSerializer(verification_keys(secret_key), salt=f"wellbeing.{purpose}")

    def sign(self, payload: Any) -> str:
        return self._serializer.dumps(payload)

    def verify(self, token: str, max_age_seconds: int) -> Any | None:
        """The payload, or None if the token is forged, altered or older than ``max_age_seconds``."""
        try:
            return self._serializer.loads(token, max_age=max_age_seconds)
        except (BadSignature, SignatureExpired):
            return None
