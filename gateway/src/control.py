"""Authenticating control messages (schema control.v1) before a router acts on them.

The service signs each decision and heartbeat with HMAC-SHA256 under a key shared with
the routers (``SHADOWLENS_CONTROL_KEY``); a router recomputes it and refuses what does not
match, so nobody who can write to shadow.control can move traffic. Signer and verifier
both call `signature`, so the canonical form they hash cannot drift apart.
"""

from __future__ import annotations

import hashlib
import hmac
import os
from collections.abc import Mapping
from typing import Any

import orjson

SCHEMA_VERSION = 1  # control.v1.json
SIGNING_KEY_ENV = "SHADOWLENS_CONTROL_KEY"


class InvalidSignature(ValueError):
    """A control message that is unsigned, tampered with, or signed with another key."""


def signing_key(env: Mapping[str, str] | None = None) -> bytes | None:
    """The HMAC key from the environment (never from a file in the repo); None if unset."""
    value = (os.environ if env is None else env).get(SIGNING_KEY_ENV, "")
    return value.encode() if value else None


def signature(message: Mapping[str, Any], key: bytes) -> str:
    """Hex HMAC-SHA256 of the message's canonical form: its JSON without `signature`, keys
    sorted (orjson), so the bytes do not depend on the order a decoder kept."""
    body = {k: v for k, v in message.items() if k != "signature"}
    canonical = orjson.dumps(body, option=orjson.OPT_SORT_KEYS)
    return hmac.new(key, canonical, hashlib.sha256).hexdigest()


def verify(message: dict[str, Any], key: bytes) -> dict[str, Any]:
    """The message if its signature is valid, else InvalidSignature."""
    claimed = message.get("signature")
    if not isinstance(claimed, str):
        raise InvalidSignature("unsigned control message")
    if not hmac.compare_digest(claimed, signature(message, key)):
        raise InvalidSignature("control message signature does not match")
    return message
