"""Control messages (schema control.v1): what routing layers read from shadow.control.

The service builds and signs them; the routers' half (the key, `signature`, `verify`)
is the gateway SDK's `shadowlens.gateway.control`, so both hash one canonical form.
"""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

import orjson
from shadowlens.gateway.control import SCHEMA_VERSION, signature, signing_key
from shadowlens.judge.verdicts import Action, Decision

__all__ = ["decision_message", "encode", "heartbeat_message", "sign", "signing_key"]


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


def sign(message: dict[str, Any], key: bytes) -> dict[str, Any]:
    """The message with `signature`: hex HMAC-SHA256 of its canonical JSON (sorted keys)."""
    return {**message, "signature": signature(message, key)}
