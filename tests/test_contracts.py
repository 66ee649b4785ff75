"""The JSON Schemas (the gateway SDK's) and the typed records agree."""

from __future__ import annotations

import dataclasses

import jsonschema
import orjson
import pytest
from shadowlens.gateway import load_json_schema
from shadowlens.gateway.control import (
    InvalidSignature,
    Rejection,
    Verifier,
    legacy_hmac_key,
    sign,
    sign_hmac,
)
from shadowlens.gateway.keys import KeyRing, generate, parse_key_ring
from shadowlens.judge.decide import ExperimentState
from shadowlens.judge.lifecycle import Lifecycle
from shadowlens.judge.policy import RampPolicy
from shadowlens.judge.ramp import RampState
from shadowlens.judge.verdicts import (
    Action,
    Blocker,
    Command,
    Decision,
    Evidence,
    Metric,
    Operator,
    Phase,
    Proposal,
    Verdict,
)
from shadowlens.schemas.events import Event, InvalidEvent, Output, decode_event
from shadowlens.streams.control import (
    as_v1,
    command_message,
    decision_message,
    heartbeat_message,
)

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


RP = RampPolicy()
EVIDENCE = Evidence(Metric.LATENCY_P99, "*", Verdict.FAIL, 1.5, 900.0, 1.2, 300, False,
                    None, "slow", ("r1", "r2"))  # fmt: skip


def hb(life: Lifecycle | None = None, issued_at_ms: int = 3_000) -> dict:
    state = ExperimentState(RampState(stage_index=2, epoch=3), lifecycle=life or Lifecycle())
    return heartbeat_message("exp", state, RP, issued_at_ms)


def test_control_messages_validate() -> None:
    decision = Decision("exp", 3, Action.ROLLBACK, 10, 5, 1_000, "latency", (EVIDENCE,))
    msg = decision_message(decision, issued_at_ms=2_000, lease_ms=30_000)
    jsonschema.validate(msg, CONTROL_SCHEMA)
    assert msg["traffic_percent"] == 5 and msg["lease_expires_at_ms"] == 32_000
    assert msg["schema_version"] == 2 and msg["phase"] == "ramping"
    jsonschema.validate(hb(), CONTROL_SCHEMA)


def test_the_lifecycle_travels_on_decisions_and_heartbeats() -> None:
    blocked = (Blocker(Metric.ERROR_RATE, "billing"),)
    operator = Operator("alice", Command.RESUME, "c0ffee0123", "fixed the pool")
    decision = Decision("exp", 4, Action.HOLD, 5, 5, 1_000, "held", (), Phase.ROLLED_BACK,
                        blocked, None, operator)  # fmt: skip
    msg = decision_message(decision, 2_000, 30_000)
    jsonschema.validate(msg, CONTROL_SCHEMA)
    assert msg["blocking"] == [{"metric": "error_rate", "segment": "billing"}]
    assert msg["operator"] == {"key_id": "alice", "command": "resume",
                               "command_id": "c0ffee0123", "reason": "fixed the pool"}  # fmt: skip
    waiting = hb(Lifecycle(Phase.AWAITING_APPROVAL, proposal=Proposal(Action.PROMOTE, 3, 10.0)))
    assert waiting["proposal"] == {"action": "promote", "traffic_percent": 10.0}
    assert waiting["traffic_percent"] == 5.0 and waiting["action"] == "hold"
    stable = hb(Lifecycle(Phase.STABILITY, stable_since_ms=1_000))
    assert stable["decommission"] == {"ready": False, "after_ms": 1_000 + RP.stability_ms}
    for m in (waiting, stable, hb(Lifecycle(Phase.ROLLED_BACK, blocking=blocked))):
        jsonschema.validate(m, CONTROL_SCHEMA)


def test_version_1_stays_valid_and_has_no_lifecycle() -> None:
    v1 = as_v1(hb(Lifecycle(Phase.STABILITY, stable_since_ms=0)))
    jsonschema.validate(v1, CONTROL_SCHEMA)
    assert v1["schema_version"] == 1 and "phase" not in v1 and "decommission" not in v1
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate({**v1, "phase": "ramping"}, CONTROL_SCHEMA)


def test_commands_validate_and_never_pass_for_decisions() -> None:
    key = generate("alice")
    cmd = sign(command_message("exp", Command.APPROVE, 3, "looks good", 1_000), key)
    jsonschema.validate(cmd, CONTROL_SCHEMA)
    for bad in (
        {**cmd, "command": "promote"},
        {**cmd, "action": "promote"},
        {**cmd, "schema_version": 1},
        {k: v for k, v in cmd.items() if k != "reason"},
        {k: v for k, v in cmd.items() if k != "signature"},
    ):
        with pytest.raises(jsonschema.ValidationError):
            jsonschema.validate(bad, CONTROL_SCHEMA)


def test_the_judges_labels_are_the_control_schemas() -> None:
    """Routers (the SDK) read the wire values; the judge must send no other."""
    props = CONTROL_SCHEMA["properties"]
    assert {str(a) for a in Action} == set(props["action"]["enum"])
    assert {str(p) for p in Phase} == set(props["phase"]["enum"])
    assert {str(c) for c in Command} == set(CONTROL_SCHEMA["$defs"]["command"]["enum"])
    assert {str(m) for m in Metric} == set(CONTROL_SCHEMA["$defs"]["metric"]["enum"])


def test_ed25519_signatures_verify_survive_the_wire_and_catch_tampering() -> None:
    """The service signs, the SDK verifies: one canonical form on both sides."""
    worker = generate("worker-1")
    verifier = Verifier(parse_key_ring(worker.public_line()))
    msg = sign(hb(), worker)
    jsonschema.validate(msg, CONTROL_SCHEMA)
    assert verifier.verify(orjson.loads(orjson.dumps(msg))) == "worker-1"
    cases = [
        ({**msg, "traffic_percent": 100}, Rejection.BAD_SIGNATURE),
        ({**msg, "key_id": "worker-2"}, Rejection.UNKNOWN_KEY),
        (sign(hb(), generate("worker-1")), Rejection.BAD_SIGNATURE),  # same id, other key
        ({**msg, "signature": "not base64!"}, Rejection.BAD_SIGNATURE),
        (hb(), Rejection.UNSIGNED),
        (sign_hmac(as_v1(hb()), b"shared"), Rejection.UNKNOWN_KEY),  # no downgrade to HMAC
    ]
    for bad, rejection in cases:
        with pytest.raises(InvalidSignature) as info:
            verifier.verify(bad)
        assert info.value.rejection == rejection, bad


def test_a_ring_holds_several_keys_so_keys_rotate() -> None:
    old, new = generate("worker-2026"), generate("worker-2027")
    both = Verifier(parse_key_ring(f"{old.public_line()}\n# rotating\n{new.public_line()}"))
    assert both.ring.ids() == ("worker-2026", "worker-2027")
    assert both.verify(sign(hb(), old)) == "worker-2026"
    assert both.verify(sign(hb(), new)) == "worker-2027"
    only_new = Verifier(parse_key_ring(new.public_line()))
    with pytest.raises(InvalidSignature):
        only_new.verify(sign(hb(), old))
    env_ring = parse_key_ring(f"{old.public_line()},{new.public_line()}")  # env: commas
    assert env_ring.ids() == both.ring.ids()


def test_key_files_are_checked() -> None:
    from shadowlens.gateway.keys import KeyFormatError, parse_signing_key

    key = generate("alice")
    assert parse_signing_key(key.private_line()).public_line() == key.public_line()
    for bad in ("", key.public_line(), key.private_line() + "\n" + key.private_line()):
        with pytest.raises(KeyFormatError):
            parse_signing_key(bad)
    other = generate("alice")
    for bad_ring in (key.private_line(), "ed25519-public bob AAAA", "ed25519-public b@d! x",
                     f"{key.public_line()}\n{other.public_line()}"):  # fmt: skip
        with pytest.raises(KeyFormatError):
            parse_key_ring(bad_ring)
    with pytest.raises(KeyFormatError, match="bad key id"):
        generate("no spaces")
    assert not KeyRing() and "alice" not in KeyRing()
    assert key.private_line().split()[2] not in repr(key)  # the private key is never shown


def test_legacy_hmac_verifies_only_where_the_shared_key_is_given() -> None:
    key = legacy_hmac_key({"SHADOWLENS_CONTROL_KEY": "s3cret"})
    assert key == b"s3cret" and legacy_hmac_key({}) is None
    msg = sign_hmac(as_v1(hb()), key)
    jsonschema.validate(msg, CONTROL_SCHEMA)
    assert Verifier(hmac_key=key).verify(orjson.loads(orjson.dumps(msg))) == "hmac"
    with pytest.raises(InvalidSignature, match="does not match"):
        Verifier(hmac_key=key).verify({**msg, "traffic_percent": 100})
    with pytest.raises(InvalidSignature, match="does not match"):
        Verifier(hmac_key=b"other key").verify(msg)
