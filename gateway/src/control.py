"""Signing and verifying control messages and operator commands (schema control.v1.json).

Version 2 messages are signed with Ed25519 under a key id (`shadowlens.gateway.keys`):
the worker signs decisions and heartbeats with its private key, routers verify them with
the worker's public keys only, and the worker verifies operator commands against its
allowlist of operator public keys. Nobody who can verify can forge.

Version 1 messages (HMAC-SHA256 under the key shared with every router,
``SHADOWLENS_CONTROL_KEY``) remain for compatibility with routers that have not moved yet:
a worker given only that key publishes version 1, and a `Verifier` accepts HMAC only when
it is given the shared key too. Never the default: whoever holds that key can forge.

Signer and verifier hash one canonical form (`canonical`): the message's JSON without
``signature``, keys sorted, so the bytes do not depend on the order a decoder kept. The
key id and the algorithm are inside the signed bytes, so neither can be swapped.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

import orjson
from shadowlens.gateway.keys import KeyRing, SigningKey, ring_from_env

SCHEMA_VERSION = 2  # what this SDK writes (control.v1.json describes versions 1 and 2)
SCHEMA_VERSIONS = (1, 2)  # what it reads
ED25519 = "ed25519"
LEGACY_HMAC_ENV = "SHADOWLENS_CONTROL_KEY"
PUBLIC_KEYS_ENV = "SHADOWLENS_CONTROL_PUBLIC_KEYS"  # and SHADOWLENS_CONTROL_PUBLIC_KEYS_FILE
LEGACY_KEY_ID = "hmac"  # what `Verifier.verify` names a legacy HMAC signer


class Rejection(StrEnum):
    """Why a signature was not accepted."""

    UNSIGNED = "unsigned"
    UNKNOWN_KEY = "unknown_key"  # a key id (or HMAC) this verifier does not trust
    BAD_SIGNATURE = "bad_signature"  # tampered with, or signed by another key


class InvalidSignature(ValueError):
    """A message that is unsigned, signed by an untrusted key, or tampered with."""

    def __init__(self, rejection: Rejection, detail: str) -> None:
        super().__init__(detail)
        self.rejection = rejection


def canonical(message: Mapping[str, Any]) -> bytes:
    """The signed bytes: the message's JSON without `signature`, keys sorted (orjson)."""
    body = {k: v for k, v in message.items() if k != "signature"}
    return orjson.dumps(body, option=orjson.OPT_SORT_KEYS)


def sign(message: Mapping[str, Any], key: SigningKey) -> dict[str, Any]:
    """The message with ``key_id``, ``signature_alg`` and a base64 Ed25519 ``signature``."""
    body = {**message, "key_id": key.key_id, "signature_alg": ED25519}
    body.pop("signature", None)
    return {**body, "signature": base64.b64encode(key.sign(canonical(body))).decode()}


def hmac_signature(message: Mapping[str, Any], key: bytes) -> str:
    """Hex HMAC-SHA256 of the canonical form (version 1, legacy)."""
    return hmac.new(key, canonical(message), hashlib.sha256).hexdigest()


def sign_hmac(message: Mapping[str, Any], key: bytes) -> dict[str, Any]:
    """The version 1 message with its legacy HMAC ``signature``."""
    return {**message, "signature": hmac_signature(message, key)}


def legacy_hmac_key(env: Mapping[str, str] | None = None) -> bytes | None:
    """The shared HMAC key of version 1 (``SHADOWLENS_CONTROL_KEY``); None if unset."""
    value = (os.environ if env is None else env).get(LEGACY_HMAC_ENV, "")
    return value.encode() if value else None


@dataclass(frozen=True, slots=True)
class Verifier:
    """Trusted signers: a ring of Ed25519 public keys, plus the legacy HMAC key only if
    given (a verifier without it refuses HMAC, so a holder of the shared key cannot
    downgrade a message past it)."""

    ring: KeyRing = field(default_factory=KeyRing)
    hmac_key: bytes | None = field(default=None, repr=False)

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Verifier:
        """The worker's public keys from ``SHADOWLENS_CONTROL_PUBLIC_KEYS`` (and/or the
        file at ``..._FILE``); HMAC only with ``SHADOWLENS_CONTROL_KEY`` set."""
        env = os.environ if env is None else env
        return cls(ring_from_env(PUBLIC_KEYS_ENV, env), legacy_hmac_key(env))

    def __bool__(self) -> bool:
        return bool(self.ring) or self.hmac_key is not None

    def verify(self, message: Mapping[str, Any]) -> str:
        """The id of the key that signed `message`, or InvalidSignature with the reason."""
        claimed = message.get("signature")
        if not isinstance(claimed, str):
            raise InvalidSignature(Rejection.UNSIGNED, "unsigned control message")
        if "signature_alg" not in message and "key_id" not in message:
            return self._verify_hmac(message, claimed)
        key_id = message.get("key_id")
        if message.get("signature_alg") != ED25519 or not isinstance(key_id, str):
            raise InvalidSignature(Rejection.UNKNOWN_KEY, "not an ed25519 signature with a key id")
        if key_id not in self.ring:
            trusted = ", ".join(self.ring.ids()) or "none"
            raise InvalidSignature(
                Rejection.UNKNOWN_KEY, f"key {key_id!r} is not trusted (trusted: {trusted})"
            )
        try:
            raw = base64.b64decode(claimed, validate=True)
        except (binascii.Error, ValueError):
            raise InvalidSignature(Rejection.BAD_SIGNATURE, "signature is not base64") from None
        if not self.ring.verify(key_id, raw, canonical(message)):
            raise InvalidSignature(
                Rejection.BAD_SIGNATURE, f"signature does not match key {key_id!r}"
            )
        return key_id

    def _verify_hmac(self, message: Mapping[str, Any], claimed: str) -> str:
        if self.hmac_key is None:
            raise InvalidSignature(
                Rejection.UNKNOWN_KEY, "HMAC-signed (version 1), and HMAC is not trusted here"
            )
        if not hmac.compare_digest(claimed, hmac_signature(message, self.hmac_key)):
            raise InvalidSignature(Rejection.BAD_SIGNATURE, "HMAC signature does not match")
        return LEGACY_KEY_ID
