"""The input event contract as the service sees it: the gateway SDK's `Event` and decoder,
plus the service's own record of what it could not process.

The contract itself (`Event`, `decode_event`, `InvalidEvent`, event.v1.json) ships in the
gateway SDK (`shadowlens.gateway.events`) so that gateways validate with the very code the
worker decodes with; it is re-exported here so the service imports its contracts from one
room. `DeadLetter` is the service's: gateways never see dead letters.
"""

from __future__ import annotations

from dataclasses import dataclass

import orjson
from shadowlens.gateway.events import (
    DEFAULT_MAX_EVENT_BYTES,
    SUPPORTED_SCHEMA_VERSION,
    Arm,
    DeadLetterReason,
    Event,
    InvalidEvent,
    Output,
    Status,
    Task,
    decode_event,
)

__all__ = [
    "DEFAULT_MAX_EVENT_BYTES",
    "SUPPORTED_SCHEMA_VERSION",
    "Arm",
    "DeadLetter",
    "DeadLetterReason",
    "Event",
    "InvalidEvent",
    "Output",
    "Status",
    "Task",
    "decode_event",
]


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """An input that could not be processed: the original bytes and why (shadow.deadletter)."""

    reason: str
    detail: str
    raw: bytes
    received_ms: int
    request_id: str | None = None  # when it could be read, so the pair can be traced
    source: str = ""  # topic/partition/offset or file:line

    @classmethod
    def of(cls, exc: InvalidEvent, raw: bytes, received_ms: int, source: str = "") -> DeadLetter:
        return cls(exc.reason, exc.detail, raw, received_ms, _peek_request_id(raw), source)


def _peek_request_id(raw: bytes) -> str | None:
    """Best effort: the request id of a rejected event, if it parses and holds a string one."""
    if len(raw) > DEFAULT_MAX_EVENT_BYTES:
        return None
    try:
        doc = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return None
    rid = doc.get("request_id") if isinstance(doc, dict) else None
    return rid if isinstance(rid, str) else None
