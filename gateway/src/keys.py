"""Ed25519 keys with key ids: who signs control messages and operator commands.

The worker signs what it publishes with its private key; routers hold only the worker's
public keys, so a router that can verify a "promote to 100 %" cannot forge one (the old
shared HMAC key let it). The worker accepts operator commands only from an allowlist of
operator public keys. A ring holds several keys at once, so a key rotates without
downtime: publish the new public key, switch the signer, drop the old key later.

One key per line, like an SSH ``authorized_keys`` file::

    ed25519-public alice 3q2+7w...=       # a ring: any number of these lines
    ed25519-private alice Zm9v...=        # a signing key file: exactly one line

The base64 is the raw 32-byte key (RFC 8032). Blank lines and ``#`` comments are skipped;
in an environment variable, lines may also be separated by commas. Keys come from files or
the environment, never from the repository: `generate` makes a pair, ``shadowlens keys new``
writes it (the private file readable by its owner only).
"""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from cryptography.exceptions import InvalidSignature as _CryptoInvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import (
    Encoding,
    NoEncryption,
    PrivateFormat,
    PublicFormat,
)

PUBLIC_TAG = "ed25519-public"
PRIVATE_TAG = "ed25519-private"
KEY_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._@-]{0,63}")


class KeyFormatError(ValueError):
    """A key line, file or ring that cannot be used; the message never holds a private key."""


def _b64(raw: bytes) -> str:
    return base64.b64encode(raw).decode()


def _unb64(text: str, what: str) -> bytes:
    try:
        raw = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise KeyFormatError(f"{what}: not base64") from None
    if len(raw) != 32:
        raise KeyFormatError(f"{what}: an Ed25519 key is 32 bytes, got {len(raw)}")
    return raw


def check_key_id(key_id: str) -> str:
    """A key id as it may appear in a ring and on the wire (letters, digits, ``._@-``)."""
    if not KEY_ID.fullmatch(key_id):
        raise KeyFormatError(f"bad key id {key_id!r}: 1-64 of letters, digits and . _ @ -")
    return key_id


def _lines(text: str) -> Iterator[list[str]]:
    for raw in text.replace(",", "\n").splitlines():
        line = raw.split("#", 1)[0].strip()
        if line:
            yield line.split()


@dataclass(frozen=True, slots=True)
class SigningKey:
    """A private key and its id: the worker's (control messages) or an operator's (commands)."""

    key_id: str
    private: Ed25519PrivateKey = field(repr=False)

    def sign(self, data: bytes) -> bytes:
        return self.private.sign(data)

    def public(self) -> Ed25519PublicKey:
        return self.private.public_key()

    def public_line(self) -> str:
        """The line to add to a ring (routers' or the worker's operator allowlist)."""
        raw = self.public().public_bytes(Encoding.Raw, PublicFormat.Raw)
        return f"{PUBLIC_TAG} {self.key_id} {_b64(raw)}"

    def private_line(self) -> str:
        """The line of a signing key file. Secret: write it only to a 0600 file."""
        raw = self.private.private_bytes(Encoding.Raw, PrivateFormat.Raw, NoEncryption())
        return f"{PRIVATE_TAG} {self.key_id} {_b64(raw)}"


def generate(key_id: str) -> SigningKey:
    """A new key pair under `key_id`."""
    return SigningKey(check_key_id(key_id), Ed25519PrivateKey.generate())


def parse_signing_key(text: str) -> SigningKey:
    """The one private key in `text` (a signing key file, or its line in an environment
    variable)."""
    found = list(_lines(text))
    if len(found) != 1 or len(found[0]) != 3 or found[0][0] != PRIVATE_TAG:
        raise KeyFormatError(f"a signing key is one line: {PRIVATE_TAG} KEY_ID BASE64")
    _, key_id, b64 = found[0]
    raw = _unb64(b64, f"signing key {key_id!r}")
    return SigningKey(check_key_id(key_id), Ed25519PrivateKey.from_private_bytes(raw))


@dataclass(frozen=True, slots=True)
class KeyRing:
    """Trusted public keys by id. Several at once: that is how keys rotate."""

    keys: Mapping[str, Ed25519PublicKey] = field(default_factory=dict)

    def __bool__(self) -> bool:
        return bool(self.keys)

    def __contains__(self, key_id: object) -> bool:
        return key_id in self.keys

    def ids(self) -> tuple[str, ...]:
        return tuple(sorted(self.keys))

    def verify(self, key_id: str, signature: bytes, data: bytes) -> bool:
        """Whether `signature` over `data` is `key_id`'s (False for an unknown id too)."""
        public = self.keys.get(key_id)
        if public is None:
            return False
        try:
            public.verify(signature, data)
        except _CryptoInvalidSignature:
            return False
        return True


def parse_key_ring(text: str) -> KeyRing:
    """Every ``ed25519-public KEY_ID BASE64`` line of `text`; an id given twice with two
    different keys is an error (which one would be trusted?)."""
    keys: dict[str, Ed25519PublicKey] = {}
    raws: dict[str, bytes] = {}
    for parts in _lines(text):
        if len(parts) != 3 or parts[0] != PUBLIC_TAG:
            tag = parts[0] if parts else ""
            if tag == PRIVATE_TAG:
                raise KeyFormatError("a private key in a ring of public keys: give the .pub line")
            raise KeyFormatError(f"a ring line is: {PUBLIC_TAG} KEY_ID BASE64")
        _, key_id, b64 = parts
        raw = _unb64(b64, f"public key {key_id!r}")
        if raws.get(check_key_id(key_id), raw) != raw:
            raise KeyFormatError(f"key id {key_id!r} is given twice with different keys")
        raws[key_id] = raw
        keys[key_id] = Ed25519PublicKey.from_public_bytes(raw)
    return KeyRing(keys)


def read_key_text(value: str, path: Path | str | None) -> str:
    """Key text from an environment variable's value and/or a file (a ring may use both:
    lines from each are joined)."""
    parts = [value] if value.strip() else []
    if path:
        try:
            parts.append(Path(path).read_text())
        except OSError as exc:
            raise KeyFormatError(f"cannot read key file {path}: {exc.strerror}") from None
    return "\n".join(parts)


def ring_from_env(name: str, env: Mapping[str, str]) -> KeyRing:
    """The ring in ``NAME`` (lines) and/or the file at ``NAME_FILE``."""
    return parse_key_ring(read_key_text(env.get(name, ""), env.get(f"{name}_FILE", "")))
