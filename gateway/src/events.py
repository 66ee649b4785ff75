"""The event contract: the typed `Event` gateways send and its decoder.

It lives in the SDK because both sides need it: the emitter validates at the source, so a
gateway bug raises in the gateway; the worker decodes with the same code, so what one
accepts the other does. Decoding is pure: bytes in, an `Event` or an `InvalidEvent` (with
a reason the dead-letter topic carries) out. The JSON Schema in `event.v1.json` is the
single source of truth; the dataclass mirrors it and a test keeps the two in step.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

import fastjsonschema
import orjson
from shadowlens.gateway import load_json_schema

SUPPORTED_SCHEMA_VERSION = 1
DEFAULT_MAX_EVENT_BYTES = 1 << 20  # 1 MiB: larger events are dead-lettered, not parsed


class Arm(StrEnum):
    PRIMARY = "primary"
    CANDIDATE = "candidate"
    REPLICA = "replica"


class Status(StrEnum):
    OK = "ok"
    ERROR = "error"
    TIMEOUT = "timeout"


class Task(StrEnum):
    CLASSIFICATION = "classification"
    EMBEDDING = "embedding"
    GENERATION = "generation"
    EXTRACTION = "extraction"


class DeadLetterReason(StrEnum):
    """Why an event went to the dead-letter topic (its ``shadowlens-reason`` header).

    The decoder raises the first four; the service adds the rest, because they depend on
    its policy and on the stream, not on the bytes alone."""

    INVALID_JSON = "invalid_json"
    SCHEMA_VIOLATION = "schema_violation"
    UNSUPPORTED_SCHEMA_VERSION = "unsupported_schema_version"
    TOO_LARGE = "too_large"
    FUTURE_TIMESTAMP = "future_timestamp"  # dated beyond pairing.max_skew_ms ahead of the stream
    CALL_TOO_LONG = "call_too_long"  # latency_ms over pairing.max_call_ms
    PROCESSING_ERROR = "processing_error"  # the worker failed on it; the bytes are kept


@dataclass(frozen=True, slots=True)
class Output:
    text: str | None = None
    label: str | None = None
    embedding: tuple[float, ...] | None = None
    json: Any = None


@dataclass(frozen=True, slots=True)
class Event:
    """One model call as the gateway saw it (schema v1)."""

    request_id: str
    experiment: str
    arm: Arm
    segment: str
    task: Task
    provider: str
    model: str
    start_time_ms: int
    latency_ms: float
    status: Status
    mode: str = "shadow"
    end_time_ms: int | None = None
    ttft_ms: float | None = None
    error_type: str | None = None
    input_tokens: int | None = None
    output_tokens: int | None = None
    cost_usd: float | None = None
    output: Output = field(default_factory=Output)
    finish_reason: str | None = None
    attributes: dict[str, Any] = field(default_factory=dict)

    @property
    def event_time_ms(self) -> int:
        """Event time of the request: when the gateway sent it (both halves share it)."""
        return self.start_time_ms

    @property
    def completed_ms(self) -> int:
        """When this half was observed complete; drives the pairing watermark."""
        if self.end_time_ms is not None:
            return self.end_time_ms
        return self.start_time_ms + round(self.latency_ms)

    def to_dict(self) -> dict[str, Any]:
        """The wire form (schema v1), so replays and emitters produce what gateways send."""
        out: dict[str, Any] = {
            k: v
            for k, v in (
                ("text", self.output.text),
                ("label", self.output.label),
                ("embedding", list(self.output.embedding) if self.output.embedding else None),
                ("json", self.output.json),
            )
            if v is not None
        }
        doc: dict[str, Any] = {
            "schema_version": SUPPORTED_SCHEMA_VERSION,
            "request_id": self.request_id,
            "experiment": self.experiment,
            "arm": str(self.arm),
            "mode": self.mode,
            "segment": self.segment,
            "task": str(self.task),
            "provider": self.provider,
            "model": self.model,
            "start_time_ms": self.start_time_ms,
            "latency_ms": self.latency_ms,
            "status": str(self.status),
            "output": out,
        }
        optional = {
            "end_time_ms": self.end_time_ms,
            "ttft_ms": self.ttft_ms,
            "error_type": self.error_type,
            "cost_usd": self.cost_usd,
            "finish_reason": self.finish_reason,
        }
        doc.update({k: v for k, v in optional.items() if v is not None})
        usage = {
            k: v
            for k, v in (("input_tokens", self.input_tokens), ("output_tokens", self.output_tokens))
            if v is not None
        }
        if usage:
            doc["usage"] = usage
        if self.attributes:
            doc["attributes"] = self.attributes
        return doc

    def to_json(self) -> bytes:
        return orjson.dumps(self.to_dict())


class InvalidEvent(ValueError):
    """An event that cannot be processed; `reason` is a stable code, `detail` says why."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


_validate = fastjsonschema.compile(load_json_schema("event.v1.json"))
# the schema's enums, looked up without Enum.__call__ (decoding runs once per event)
_ARMS = {str(m): m for m in Arm}
_TASKS = {str(m): m for m in Task}
_STATUSES = {str(m): m for m in Status}


def decode_event(raw: bytes, *, max_bytes: int = DEFAULT_MAX_EVENT_BYTES) -> Event:
    """Parse and validate one event; raise InvalidEvent with a dead-letter reason otherwise."""
    if len(raw) > max_bytes:
        raise InvalidEvent(
            DeadLetterReason.TOO_LARGE, f"{len(raw)} bytes exceeds the limit of {max_bytes}"
        )
    try:
        doc = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise InvalidEvent(DeadLetterReason.INVALID_JSON, str(exc)) from None
    if not isinstance(doc, dict):
        raise InvalidEvent(
            DeadLetterReason.SCHEMA_VIOLATION,
            f"event must be a JSON object, got {type(doc).__name__}",
        )
    version = doc.get("schema_version")
    if (
        isinstance(version, int)
        and not isinstance(version, bool)
        and version > SUPPORTED_SCHEMA_VERSION
    ):
        raise InvalidEvent(
            DeadLetterReason.UNSUPPORTED_SCHEMA_VERSION,
            f"schema_version {version} is newer than the supported {SUPPORTED_SCHEMA_VERSION}; "
            "upgrade shadowlens before the gateways",
        )
    try:
        _validate(doc)
    except fastjsonschema.JsonSchemaValueException as exc:
        raise InvalidEvent(DeadLetterReason.SCHEMA_VIOLATION, exc.message) from None
    return _from_valid(doc)


def _from_valid(doc: dict[str, Any]) -> Event:
    out = doc.get("output") or {}
    embedding = out.get("embedding")
    if embedding is not None and not all(math.isfinite(x) for x in embedding):
        raise InvalidEvent(
            DeadLetterReason.SCHEMA_VIOLATION, "output.embedding holds a non-finite number"
        )
    start = doc["start_time_ms"]
    end = doc.get("end_time_ms")
    if end is not None and end < start:
        raise InvalidEvent(
            DeadLetterReason.SCHEMA_VIOLATION, f"end_time_ms {end} is before start_time_ms {start}"
        )
    usage = doc.get("usage") or {}
    return Event(
        request_id=doc["request_id"],
        experiment=doc["experiment"],
        arm=_ARMS[doc["arm"]],
        segment=doc["segment"],
        task=_TASKS[doc["task"]],
        provider=doc["provider"],
        model=doc["model"],
        start_time_ms=start,
        latency_ms=float(doc["latency_ms"]),
        status=_STATUSES[doc["status"]],
        mode=doc.get("mode", "shadow"),
        end_time_ms=end,
        ttft_ms=doc.get("ttft_ms"),
        error_type=doc.get("error_type"),
        input_tokens=usage.get("input_tokens"),
        output_tokens=usage.get("output_tokens"),
        cost_usd=doc.get("cost_usd"),
        output=Output(
            text=out.get("text"),
            label=out.get("label"),
            embedding=tuple(embedding) if embedding is not None else None,
            json=out.get("json"),
        ),
        finish_reason=doc.get("finish_reason"),
        attributes=doc.get("attributes") or {},
    )
