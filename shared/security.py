"""Password hashing, bearer tokens and signed links."""
from __future__ import annotations

import hashlib
import hmac
import secrets
from functools import cached_property
from typing import Any

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from itsdangerous import BadSignature, SignatureExpired, TimestampSigner, URLSafeTimedSerializer
from itsdangerous.encoding import base64_encode
from itsdangerous.serializer import Serializer

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


class _Signer(TimestampSigner):
    """Derives its signing key once, not per signature (itsdangerous derives it per call)."""

    @cached_property
    def _signing_key(self) -> bytes:
        return super().derive_key()

    def derive_key(self, secret_key: str | bytes | None = None) -> bytes:
        return self._signing_key if secret_key is None else super().derive_key(secret_key)


class _LinkSerializer(URLSafeTimedSerializer):
    """itsdangerous' URL-safe timed tokens, made faster to sign (a digest signs a few links
    per message): one signer per serializer instead of one per signature, and no zlib
    attempt for payloads too short to shrink (zlib's set-up alone cost as much as the
    rest of a signature). The token format is itsdangerous' own: readers need no change,
    and tokens signed before verify as they did."""

    default_signer = _Signer
    _UNCOMPRESSED_BELOW = 128

    @cached_property
    def _own_signer(self) -> TimestampSigner:
        return super().make_signer(self.salt)

    def make_signer(self, salt: str | bytes | None = None) -> TimestampSigner:
        return self._own_signer if salt is None or salt == self.salt else super().make_signer(salt)

    def dump_payload(self, obj: Any) -> bytes:
        json = Serializer.dump_payload(self, obj)
        if len(json) < self._UNCOMPRESSED_BELOW:
            return base64_encode(json)
        return super().dump_payload(obj)


class LinkSigner:
    """Signs the payload of a link (invitation, employee link) for one purpose with the
    current key; verifies with it and with the retired keys still accepted."""

    def __init__(self, secret_key: str, purpose: str):
        # itsdangerous signs with the last key of the list and verifies with each.
        self._serializer = _LinkSerializer(verification_keys(secret_key), salt=f"wellbeing.{purpose}")

    def sign(self, payload: Any) -> str:
        return self._serializer.dumps(payload)

    def verify(self, token: str, max_age_seconds: int) -> Any | None:
        """The payload, or None if the token is forged, altered or older than ``max_age_seconds``."""
        try:
            return self._serializer.loads(token, max_age=max_age_seconds)
        except (BadSignature, SignatureExpired):
            return None
