"""The router's side of the control contract (schema control.v1), as a pure state machine.

A routing layer (gateway, service mesh, feature flag) subscribes to shadow.control and
keeps one `RouterState` per experiment. The rules, all in `RouterState.apply` / `tick`:

- a message for another experiment is ignored;
- epochs only go forward: a message older than the applied epoch is stale and dropped;
- a newer decision (or a newer heartbeat, which carries the current percent: the router
  missed a decision) sets the candidate's traffic share;
- a heartbeat or a hold decision with the applied epoch renews the lease, and so does a
  redelivered decision (at-least-once delivery), which changes nothing else; one epoch
  with two different percents means two controllers disagree: refused;
- when the lease runs out without a message, `tick` freezes the weights: the last applied
  percent stays, nothing moves until the judge is heard again; a later valid message
  unfreezes;
- a message whose lease has already expired on arrival is not acted on, except a
  rollback: less candidate traffic is always safe to apply.

Trust seam: `apply` takes a message that is already authenticated. Signature checking
(`shadowlens.gateway.control.verify`) belongs in front of it and never inside: this module
only sees verified dicts. Pure: the clock is an argument. It reads the wire values
(``"hold"``, ``"rollback"``), not the judge's types, so a router needs only this SDK.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace
from enum import StrEnum
from typing import Any

from shadowlens.gateway import load_json_schema
from shadowlens.gateway.control import SCHEMA_VERSION

_ACTIONS = frozenset(load_json_schema("control.v1.json")["properties"]["action"]["enum"])
_REQUIRED = ("type", "experiment", "epoch", "action", "traffic_percent", "lease_expires_at_ms")


class Outcome(StrEnum):
    """What `apply` did with a message; every rejection says why."""

    APPLIED = "applied"  # a newer epoch: new traffic share (or the same share, new epoch)
    RENEWED = "renewed"  # a heartbeat or hold decision of the applied epoch: lease extended
    DUPLICATE = "duplicate"  # the applied promote/rollback delivered again: lease only
    CONFLICT = "conflict"  # the applied epoch with another percent: refused
    STALE = "stale"  # epoch older than the applied one: dropped
    OTHER_EXPERIMENT = "other_experiment"
    EXPIRED = "expired"  # lease already over on arrival: not acted on
    INVALID = "invalid"  # not a control.v1 message this router can read


@dataclass(frozen=True, slots=True)
class RouterState:
    """What one router knows about one experiment. epoch -1: nothing applied yet."""

    experiment: str
    epoch: int = -1
    traffic_percent: float = 0.0  # the candidate's share; 0 until the judge says otherwise
    lease_expires_at_ms: int = 0
    frozen: bool = False

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
                self, lease_expires_at_ms=max(self.lease_expires_at_ms, lease), frozen=False
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
            frozen=lease <= now_ms,  # a late rollback is applied, the weights stay frozen
        )
        return applied, Outcome.APPLIED

    def tick(self, now_ms: int) -> RouterState:
        """Freeze the weights if the lease ran out: keep the last percent, wait for the judge."""
        if self.frozen or self.epoch < 0 or now_ms < self.lease_expires_at_ms:
            return self
        return replace(self, frozen=True)


def _readable(message: Mapping[str, Any]) -> bool:
    """The fields a router acts on, with the types control.v1 gives them."""
    if message.get("schema_version") != SCHEMA_VERSION:
        return False
    if any(key not in message for key in _REQUIRED):
        return False
    if message["type"] not in ("decision", "heartbeat"):
        return False
    if message["action"] not in _ACTIONS:
        return False
    epoch, lease = message["epoch"], message["lease_expires_at_ms"]
    percent = message["traffic_percent"]
    if not all(isinstance(v, int) and not isinstance(v, bool) for v in (epoch, lease)):
        return False
    if not isinstance(percent, int | float) or isinstance(percent, bool):
        return False
    return epoch >= 0 and 0.0 <= percent <= 100.0
