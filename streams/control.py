"""Control messages (schema control.v1): what routing layers read from shadow.control."""

from __future__ import annotations

import hashlib
import hmac
import os
from dataclasses import asdict
from typing import Any

import orjson
from shadowlens.judge.verdicts import Action, Decision

SCHEMA_VERSION = 1


def decision_message(decision: Decision, issued_at_ms: int, lease_ms: int) -> dict[str, Any]:
    """A decision as a control message (schema control.v1); the lease starts at issue time."""
    return {
        "schema_version": SCHEMA_VERSION,
        "type": "decision",
        "experiment": decision.experiment,
        "epoch": decision.epoch,
        "action": str(decision.action),
        "traffic_percent": decision.to_percent,
        "previous_percent": decision.from_percent,
        "decided_at_ms": decision.decided_at_ms,
        "issued_at_ms": issued_at_ms,
        "lease_expires_at_ms": issued_at_ms + lease_ms,
        "reason": decision.reason,
        "evidence": [
            {**asdict(e), "example_request_ids": list(e.example_request_ids)}
            for e in decision.evidence
        ],
    }


def heartbeat_message(
    experiment: str, epoch: int, traffic_percent: float, issued_at_ms: int, lease_ms: int
) -> dict[str, Any]:
    """Proof of life: routers keep the current weights while leases keep coming."""
    return {
        "schema_version": SCHEMA_VERSION,
        "type": "heartbeat",
        "experiment": experiment,
        "epoch": epoch,
        "action": str(Action.HOLD),
        "traffic_percent": traffic_percent,
        "issued_at_ms": issued_at_ms,
        "lease_expires_at_ms": issued_at_ms + lease_ms,
    }


def encode(message: dict[str, Any]) -> bytes:
    return orjson.dumps(message)


SIGNING_KEY_ENV = "SHADOWLENS_CONTROL_KEY"


class InvalidSignature(ValueError):
    """A control message that is unsigned, tampered with, or signed with another key."""


def signing_key(env: dict[str, str] | None = None) -> bytes | None:
    """The HMAC key from the environment (never from a file in the repo); None if unset."""
    value = (os.environ if env is None else env).get(SIGNING_KEY_ENV, "")
    return value.encode() if value else None


def _mac(message: dict[str, Any], key: bytes) -> str:
    body = {k: v for k, v in message.items() if k != "signature"}
    canonical = orjson.dumps(body, option=orjson.OPT_SORT_KEYS)
    return hmac.new(key, canonical, hashlib.sha256).hexdigest()


def sign(message: dict[str, Any], key: bytes) -> dict[str, Any]:
    """The message with `signature`: hex HMAC-SHA256 of its canonical JSON (sorted keys)."""
    return {**message, "signature": _mac(message, key)}


def verify(message: dict[str, Any], key: bytes) -> dict[str, Any]:
    """For routers: the message if its signature is valid, else InvalidSignature."""
    signature = message.get("signature")
    if not isinstance(signature, str):
        raise InvalidSignature("unsigned control message")
    if not hmac.compare_digest(signature, _mac(message, key)):
        raise InvalidSignature("control message signature does not match")
    return message
