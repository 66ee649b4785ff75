"""The JSON Schemas (the gateway SDK's) and the typed records agree."""

from __future__ import annotations

import dataclasses

import jsonschema
import orjson
import pytest
from shadowlens.gateway import load_json_schema
from shadowlens.gateway.control import InvalidSignature, signing_key, verify
from shadowlens.judge.verdicts import Action, Decision, Evidence, Metric, Verdict
from shadowlens.schemas.events import Event, InvalidEvent, Output, decode_event
from shadowlens.streams.control import decision_message, heartbeat_message, sign

from tests.builders import event

EVENT_SCHEMA = load_json_schema("event.v1.json")
CONTROL_SCHEMA = load_json_schema("control.v1.json")


@pytest.mark.parametrize("schema", [EVENT_SCHEMA, CONTROL_SCHEMA])
def test_schemas_are_valid_draft_2020_12(schema: dict) -> None:
    jsonschema.Draft202012Validator.check_schema(schema)


def test_every_schema_field_has_a_record_field() -> None:
    record = {f.name for f in dataclasses.fields(Event)}
    wire_only = {"schema_version", "usage", "output"}
    assert set(EVENT_SCHEMA["properties"]) - wire_only <= record
    assert set(EVENT_SCHEMA["properties"]["usage"]["properties"]) <= record
    assert set(EVENT_SCHEMA["properties"]["output"]["properties"]) == {
        f.name for f in dataclasses.fields(Output)
    }


def test_record_round_trips_through_the_wire_form() -> None:
    e = event(
        ttft_ms=120.5, input_tokens=10, output_tokens=20, cost_usd=0.001, error_type=None,
        attributes={"tenant": "a", "retry": 0}, output=Output(text="t", label="l", json={"k": [1]}),
    )  # fmt: skip
    jsonschema.validate(e.to_dict(), EVENT_SCHEMA)
    assert decode_event(e.to_json()) == e


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        (b"{not json", "invalid_json"),
        (b'{"latency_ms": NaN}', "invalid_json"),
        (b"[1, 2]", "schema_violation"),
        (b'{"schema_version": 2, "request_id": "x"}', "unsupported_schema_version"),
        (b"x" * (1 << 20 + 1), "too_large"),
    ],
)
def test_raw_rejections(raw: bytes, reason: str) -> None:
    with pytest.raises(InvalidEvent) as exc:
        decode_event(raw)
    assert exc.value.reason == reason


@pytest.mark.parametrize(
    ("change", "needle"),
    [
        ({"request_id": None}, "request_id"),
        ({"latency_ms": "fast"}, "latency_ms"),
        ({"latency_ms": -1}, "latency_ms"),
        ({"arm": "shadow"}, "arm"),
        ({"start_time_ms": 10**17}, "start_time_ms"),
        ({"end_time_ms": 1}, "end_time_ms"),
        ({"surprise": 1}, "surprise"),
        ({"output": {"embedding": [1, "a"]}}, "embedding"),
    ],
)
def test_schema_violations_name_the_field(change: dict, needle: str) -> None:
    doc = event().to_dict()
    doc.update(change)
    doc = {k: v for k, v in doc.items() if v is not None}

    with pytest.raises(InvalidEvent) as exc:
        decode_event(orjson.dumps(doc))
    assert exc.value.reason == "schema_violation" and needle in exc.value.detail


def test_control_messages_validate() -> None:
    evidence = Evidence(Metric.LATENCY_P99, "*", Verdict.FAIL, 1.5, 900.0, 1.2, 300, False,
                        None, "slow", ("r1", "r2"))  # fmt: skip
    decision = Decision("exp", 3, Action.ROLLBACK, 10, 5, 1_000, "latency", (evidence,))
    msg = decision_message(decision, issued_at_ms=2_000, lease_ms=30_000)
    jsonschema.validate(msg, CONTROL_SCHEMA)
    assert msg["traffic_percent"] == 5 and msg["lease_expires_at_ms"] == 32_000
    jsonschema.validate(heartbeat_message("exp", 3, 5, 3_000, 30_000), CONTROL_SCHEMA)


def test_the_judges_actions_are_the_control_schemas() -> None:
    """Routers (the SDK) read the wire values; the judge must send no other."""
    assert {str(a) for a in Action} == set(CONTROL_SCHEMA["properties"]["action"]["enum"])


def test_signed_control_messages_verify_and_tampering_is_rejected() -> None:
    """The service signs, the SDK verifies: one canonical form on both sides."""
    key = signing_key({"SHADOWLENS_CONTROL_KEY": "s3cret"})
    assert key == b"s3cret" and signing_key({}) is None
    msg = sign(heartbeat_message("exp", 3, 5, 3_000, 30_000), key)
    jsonschema.validate(msg, CONTROL_SCHEMA)
    assert verify(orjson.loads(orjson.dumps(msg)), key) == msg  # survives the wire
    with pytest.raises(InvalidSignature, match="does not match"):
        verify({**msg, "traffic_percent": 100}, key)
    with pytest.raises(InvalidSignature, match="does not match"):
        verify(msg, b"other key")
    with pytest.raises(InvalidSignature, match="unsigned"):
        verify(heartbeat_message("exp", 3, 5, 3_000, 30_000), key)
