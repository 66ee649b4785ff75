"""The router's side of the control contract (schema control.v1.json), as a pure state machine.

A routing layer (gateway, service mesh, feature flag) subscribes to shadow.control and
keeps one `RouterState` per experiment. The rules, all in `RouterState.apply` / `tick`:

- a message for another experiment is ignored, and so is anything but a decision or a
  heartbeat (operator commands go to the worker, never to routers);
- epochs only go forward: a message older than the applied epoch is stale and dropped;
  the epoch changes exactly when the routed share does;
- a newer decision (or a newer heartbeat, which carries the current percent: the router
  missed a decision) sets the candidate's traffic share;
- a heartbeat or a hold decision with the applied epoch renews the lease, and so does a
  redelivered decision (at-least-once delivery), which changes nothing else; one epoch
  with two different percents means two controllers disagree: refused;
- when the lease runs out without a message, `tick` falls back to the primary: the
  candidate gets 0 % until the judge is heard again (a later valid message restores the
  judge's share). Traffic never stays on a candidate nobody watches;
- a message whose lease has already expired on arrival is not acted on, except a
  rollback: less candidate traffic is always safe to apply;
- the lifecycle (version 2: `phase`, `blocking`, a `proposal`, `decommission`) is kept
  for the router's operators to see, as of the newest message. It never moves traffic: a
  rolled-back or paused experiment is a hold at its share, a proposal waiting for approval
  is a hold at the current share (its percent is never applied), an aborted one is 0 %.

Trust seam: `apply` takes a message that is already authenticated. Signature checking
(`shadowlens.gateway.control.Verifier`) belongs in front of it and never inside: this
module only sees verified dicts. Pure: the clock is an argument. It reads the wire values
(``"hold"``, ``"rollback"``), not the judge's types, so a router needs only this SDK.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace
from enum import StrEnum
from typing import Any

from shadowlens.gateway import load_json_schema
from shadowlens.gateway.control import SCHEMA_VERSIONS

_SCHEMA = load_json_schema("control.v1.json")
_ACTIONS = frozenset(_SCHEMA["properties"]["action"]["enum"])
_PHASES = frozenset(_SCHEMA["properties"]["phase"]["enum"])
_REQUIRED = ("type", "experiment", "epoch", "action", "traffic_percent", "lease_expires_at_ms")


class Outcome(StrEnum):
    """What `apply` did with a message; every rejection says why."""

    APPLIED = "applied"  # a newer epoch: new traffic share
    RENEWED = "renewed"  # a heartbeat or hold decision of the applied epoch: lease extended
    DUPLICATE = "duplicate"  # the applied promote/rollback delivered again: lease only
    CONFLICT = "conflict"  # the applied epoch with another percent: refused
    STALE = "stale"  # epoch older than the applied one: dropped
    OTHER_EXPERIMENT = "other_experiment"
    EXPIRED = "expired"  # lease already over on arrival: not acted on
    INVALID = "invalid"  # not a control message this router can read


@dataclass(frozen=True, slots=True)
class MigrationStatus:
    """What the judge says about the migration, for people, never for routing."""

    phase: str = ""  # "" until a version 2 message says
    blocking: tuple[str, ...] = ()  # "metric [segment]" that holds a rolled-back experiment
    proposal: str = ""  # e.g. "promote to 10 %", waiting for an operator's approve
    decommission_ready: bool = False  # the old deployment may go
    issued_at_ms: int = -1  # of the message this comes from: older ones do not overwrite it


@dataclass(frozen=True, slots=True)
class RouterState:
    """What one router knows about one experiment. epoch -1: nothing applied yet."""

    experiment: str
    epoch: int = -1
    traffic_percent: float = 0.0  # the judge's share for the candidate
    lease_expires_at_ms: int = 0
    fallback: bool = False  # lease lost: everything to the primary until the judge is heard
    status: MigrationStatus = MigrationStatus()

    @property
    def candidate_percent(self) -> float:
        """What to route to the candidate: the judge's share, 0 while falling back."""
        return 0.0 if self.fallback else self.traffic_percent

    def apply(self, message: Mapping[str, Any], now_ms: int) -> tuple[RouterState, Outcome]:
        """Apply one verified control message received at `now_ms`."""
        if not _readable(message):
            return self, Outcome.INVALID
        if message["experiment"] != self.experiment:
            return self, Outcome.OTHER_EXPERIMENT
        epoch, lease = int(message["epoch"]), int(message["lease_expires_at_ms"])
        if epoch < self.epoch:
            return self, Outcome.STALE
        if epoch == self.epoch:
            if float(message["traffic_percent"]) != self.traffic_percent:
                return self, Outcome.CONFLICT
            if lease <= now_ms:
                return self, Outcome.EXPIRED
            renewed = replace(
                self,
                lease_expires_at_ms=max(self.lease_expires_at_ms, lease),
                fallback=False,
                status=_newer(self.status, message),
            )
            hold = message["type"] == "heartbeat" or message["action"] == "hold"
            return renewed, Outcome.RENEWED if hold else Outcome.DUPLICATE
        rollback = message["action"] == "rollback"
        if lease <= now_ms and not rollback:
            return self, Outcome.EXPIRED
        applied = RouterState(
            self.experiment,
            epoch,
            float(message["traffic_percent"]),
            lease,
            fallback=lease <= now_ms,  # a late rollback is applied; the primary serves all
            status=_newer(MigrationStatus(), message),
        )
        return applied, Outcome.APPLIED

    def tick(self, now_ms: int) -> RouterState:
        """Fall back to the primary if the lease ran out; wait for the judge."""
        if self.fallback or self.epoch < 0 or now_ms < self.lease_expires_at_ms:
            return self
        return replace(self, fallback=True)


def _newer(known: MigrationStatus, message: Mapping[str, Any]) -> MigrationStatus:
    """The lifecycle a message states, unless what is known came from a later one."""
    issued = message.get("issued_at_ms")
    issued = issued if isinstance(issued, int) else 0
    if issued < known.issued_at_ms:
        return known
    proposal = message.get("proposal") or {}
    decommission = message.get("decommission") or {}
    return MigrationStatus(
        phase=str(message.get("phase", "")),
        blocking=tuple(f"{b['metric']} [{b['segment']}]" for b in message.get("blocking", ())),
        proposal=f"{proposal['action']} to {proposal['traffic_percent']:g} %" if proposal else "",
        decommission_ready=bool(decommission.get("ready", False)),
        issued_at_ms=issued,
    )


def _readable(message: Mapping[str, Any]) -> bool:
    """The fields a router acts on, with the types control.v1.json gives them."""
    version = message.get("schema_version")
    if version not in SCHEMA_VERSIONS or isinstance(version, bool):
        return False
    if any(key not in message for key in _REQUIRED):
        return False
    if message["type"] not in ("decision", "heartbeat"):
        return False
    if message["action"] not in _ACTIONS:
        return False
    if version != 1 and message.get("phase") not in _PHASES:
        return False
    epoch, lease = message["epoch"], message["lease_expires_at_ms"]
    percent = message["traffic_percent"]
    if not all(isinstance(v, int) and not isinstance(v, bool) for v in (epoch, lease)):
        return False
    if not isinstance(percent, int | float) or isinstance(percent, bool):
        return False
    return _status_readable(message) and epoch >= 0 and 0.0 <= percent <= 100.0


def _status_readable(message: Mapping[str, Any]) -> bool:
    """The optional lifecycle fields, shaped as the schema says (`_newer` reads them)."""
    blocking = message.get("blocking", [])
    proposal = message.get("proposal")
    decommission = message.get("decommission", {})
    ok_blocking = isinstance(blocking, list) and all(
        isinstance(b, dict)
        and isinstance(b.get("metric"), str)
        and isinstance(b.get("segment"), str)
        for b in blocking
    )
    ok_proposal = proposal is None or (
        isinstance(proposal, dict)
        and isinstance(proposal.get("action"), str)
        and isinstance(proposal.get("traffic_percent"), int | float)
    )
    return ok_blocking and ok_proposal and isinstance(decommission, dict)
