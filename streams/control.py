"""Control messages and operator commands (schema control.v1.json): what routers read from
shadow.control, what operators send to shadow.commands, and how the worker signs.

The canonical form, the signatures and the key formats are the gateway SDK's
(`shadowlens.gateway.control`, `shadowlens.gateway.keys`), so signer and verifier cannot
drift apart. The worker signs with its Ed25519 key; with only the legacy shared HMAC key it
publishes version 1 messages (what routers that have not moved yet read); with neither it
refuses to start unless told `--allow-unsigned` (`control_signer`).
"""

from __future__ import annotations

import logging
import uuid
from dataclasses import asdict, dataclass, field
from functools import cache
from typing import Any

import fastjsonschema
import orjson
from shadowlens.gateway import load_json_schema
from shadowlens.gateway.control import (
    SCHEMA_VERSION,
    InvalidSignature,
    Verifier,
    sign,
    sign_hmac,
)
from shadowlens.gateway.keys import (
    KeyFormatError,
    SigningKey,
    parse_key_ring,
    parse_signing_key,
    read_key_text,
)
from shadowlens.judge.decide import ExperimentState
from shadowlens.judge.lifecycle import OperatorCommand
from shadowlens.judge.policy import RampPolicy
from shadowlens.judge.verdicts import Action, Blocker, Command, Decision, Phase, Proposal
from shadowlens.streams.config import Settings, SettingsError

log = logging.getLogger(__name__)

# Fields version 1 does not have: dropped when publishing for legacy HMAC routers.
V2_ONLY = ("phase", "blocking", "proposal", "operator", "decommission")


def _lifecycle_fields(
    phase: Phase,
    blocking: tuple[Blocker, ...],
    proposal: Proposal | None,
    decommission_after_ms: int | None,
) -> dict[str, Any]:
    """The lifecycle as a control message carries it: on decisions and heartbeats alike."""
    fields: dict[str, Any] = {"phase": str(phase)}
    if blocking:
        fields["blocking"] = [{"metric": str(b.metric), "segment": b.segment} for b in blocking]
    if proposal is not None:
        proposed = {"action": str(proposal.action), "traffic_percent": proposal.to_percent}
        fields["proposal"] = proposed
    if phase in (Phase.STABILITY, Phase.COMPLETE):
        fields["decommission"] = {
            "ready": phase == Phase.COMPLETE,
            "after_ms": decommission_after_ms,
        }
    return fields


def decision_message(decision: Decision, issued_at_ms: int, lease_ms: int) -> dict[str, Any]:
    """A decision as a control message (schema version 2); the lease starts at issue time."""
    d = decision
    message: dict[str, Any] = {
        "schema_version": SCHEMA_VERSION,
        "type": "decision",
        "experiment": d.experiment,
        "epoch": d.epoch,
        "action": str(d.action),
        "traffic_percent": d.to_percent,
        "previous_percent": d.from_percent,
        "decided_at_ms": d.decided_at_ms,
        "issued_at_ms": issued_at_ms,
        "lease_expires_at_ms": issued_at_ms + lease_ms,
        "reason": d.reason,
        "evidence": [
            {**asdict(e), "example_request_ids": list(e.example_request_ids)} for e in d.evidence
        ],
        **_lifecycle_fields(d.phase, d.blocking, d.proposal, d.decommission_after_ms),
    }
    if d.operator is not None:
        message["operator"] = {**asdict(d.operator), "command": str(d.operator.command)}
    return message


def heartbeat_message(
    experiment: str, state: ExperimentState, policy: RampPolicy, issued_at_ms: int
) -> dict[str, Any]:
    """Proof of life with the current share and the lifecycle: a rolled-back experiment's
    heartbeats name what blocks it. Routers keep the weights while leases keep coming."""
    ramp, life = state.ramp, state.lifecycle
    return {
        "schema_version": SCHEMA_VERSION,
        "type": "heartbeat",
        "experiment": experiment,
        "epoch": ramp.epoch,
        "action": str(Action.HOLD),
        "traffic_percent": ramp.percent(policy),
        "issued_at_ms": issued_at_ms,
        "lease_expires_at_ms": issued_at_ms + policy.lease_ms,
        **_lifecycle_fields(
            life.phase, life.blocking, life.proposal, life.decommission_after_ms(policy)
        ),
    }


def as_v1(message: dict[str, Any]) -> dict[str, Any]:
    """The message as version 1 (legacy HMAC routers): the lifecycle fields left out. Safe,
    because the routed share and the action never depend on them."""
    body = {k: v for k, v in message.items() if k not in V2_ONLY}
    return {**body, "schema_version": 1}


def encode(message: dict[str, Any]) -> bytes:
    return orjson.dumps(message)


# --------------------------------------------------------------------------- signing


@dataclass(frozen=True, slots=True)
class ControlSigner:
    """How the worker signs what it publishes: its Ed25519 key, else the legacy HMAC key
    (version 1 messages), else nothing (only allowed with `--allow-unsigned`)."""

    key: SigningKey | None = None
    hmac_key: bytes | None = field(default=None, repr=False)

    def __call__(self, message: dict[str, Any]) -> dict[str, Any]:
        if self.key is not None:
            return sign(message, self.key)
        if self.hmac_key is not None:
            return sign_hmac(as_v1(message), self.hmac_key)
        return message

    @property
    def unsigned(self) -> bool:
        return self.key is None and self.hmac_key is None

    def describe(self) -> str:
        if self.key is not None:
            return f"ed25519 key {self.key.key_id!r}"
        return "legacy HMAC (version 1)" if self.hmac_key is not None else "UNSIGNED"


def control_signer(settings: Settings) -> ControlSigner:
    """The signer the settings give; SettingsError when there is none and unsigned
    publishing was not allowed explicitly. Says loudly what it is."""
    s = settings
    try:
        text = read_key_text(s.signing_key, s.signing_key_file)
        key = parse_signing_key(text) if text.strip() else None
    except KeyFormatError as exc:
        raise SettingsError(f"SHADOWLENS_SIGNING_KEY(_FILE): {exc}") from None
    signer = ControlSigner(key, s.control_key.encode() or None)
    if signer.unsigned and not s.allow_unsigned:
        raise SettingsError(
            "no signing key: set SHADOWLENS_SIGNING_KEY_FILE (make one with `shadowlens keys "
            "new`), or pass --allow-unsigned (SHADOWLENS_ALLOW_UNSIGNED=true) to publish "
            "control messages anyone could forge"
        )
    if signer.unsigned:
        log.error(
            "CONTROL MESSAGES ARE UNSIGNED (--allow-unsigned): any client that can write to "
            "%s can move traffic; routers that verify will reject them",
            s.topic_control,
        )
    elif key is None:
        log.warning(
            "control messages are signed with the legacy shared HMAC key "
            "(SHADOWLENS_CONTROL_KEY): every router that verifies can also forge; move to "
            "Ed25519 (SHADOWLENS_SIGNING_KEY_FILE)"
        )
    return signer


def operator_verifier(settings: Settings) -> Verifier:
    """The operator allowlist commands are checked against (Ed25519 only, never HMAC)."""
    s = settings
    try:
        ring = parse_key_ring(read_key_text(s.operator_keys, s.operator_keys_file))
    except KeyFormatError as exc:
        raise SettingsError(f"SHADOWLENS_OPERATOR_KEYS(_FILE): {exc}") from None
    if not ring:
        log.warning("no operator keys (SHADOWLENS_OPERATOR_KEYS_FILE): every command is refused")
    return Verifier(ring)


# --------------------------------------------------------------------------- commands


class CommandRejected(ValueError):
    """A command record refused before it reached the judge: unreadable, badly signed,
    from an unknown key, or too old. `reason` is a short code for the dead letter."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


def command_message(
    experiment: str,
    command: Command,
    epoch: int,
    reason: str,
    issued_at_ms: int,
    command_id: str | None = None,
) -> dict[str, Any]:
    """An operator command, to be signed (`shadowlens.gateway.control.sign`) and sent to
    shadow.commands keyed by experiment. Its id makes a replay recognisable."""
    return {
        "schema_version": SCHEMA_VERSION,
        "type": "command",
        "experiment": experiment,
        "epoch": epoch,
        "command": str(command),
        "command_id": command_id or uuid.uuid4().hex,
        "reason": reason,
        "issued_at_ms": issued_at_ms,
    }


@cache
def _validate() -> Any:
    return fastjsonschema.compile(load_json_schema("control.v1.json"))


def read_command(raw: bytes, verifier: Verifier, now_ms: int, max_age_ms: int) -> OperatorCommand:
    """A command record checked for everything but the experiment's state: schema,
    signature by an allowlisted key, age (wall clock; a replay of an old command is
    refused even after its id was forgotten). CommandRejected otherwise."""
    try:
        message = orjson.loads(raw)
        _validate()(message)
    except orjson.JSONDecodeError as exc:
        raise CommandRejected("invalid", f"not JSON: {exc}") from None
    except fastjsonschema.JsonSchemaException as exc:
        raise CommandRejected("invalid", f"not a control.v1 message: {exc.message}") from None
    if message["type"] != "command":
        raise CommandRejected("invalid", f"a {message['type']} is no command")
    try:
        key_id = verifier.verify(message)
    except InvalidSignature as exc:
        raise CommandRejected(str(exc.rejection), str(exc)) from None
    age_ms = now_ms - int(message["issued_at_ms"])
    if abs(age_ms) > max_age_ms:
        raise CommandRejected(
            "expired", f"issued {age_ms / 1000:.0f} s ago; commands are taken for "
            f"{max_age_ms / 1000:.0f} s"
        )  # fmt: skip
    return OperatorCommand(
        experiment=message["experiment"],
        command=Command(message["command"]),
        epoch=int(message["epoch"]),
        command_id=message["command_id"],
        key_id=key_id,
        reason=message["reason"],
    )
