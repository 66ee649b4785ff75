"""The SDK's router subscriber (shadowlens.gateway.subscriber) on signed control messages.

Messages are built the way the judge publishes them: `decision_message` of real
`Decision`s and `heartbeat_message`, checked against control.v1.json, signed with the
worker's Ed25519 key. Routers hold the worker's public keys only: they verify, they cannot
forge (not even with the legacy shared HMAC key), and they accept old and new keys while
the worker's key rotates.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import jsonschema
import orjson
import pytest
from aiokafka import AIOKafkaProducer
from shadowlens.gateway import load_json_schema
from shadowlens.gateway import subscriber as rs
from shadowlens.gateway.control import PUBLIC_KEYS_ENV, Verifier, sign, sign_hmac
from shadowlens.gateway.keys import SigningKey, generate, parse_key_ring
from shadowlens.judge.decide import ExperimentState
from shadowlens.judge.policy import RampPolicy
from shadowlens.judge.ramp import RampState
from shadowlens.judge.verdicts import Action, Decision, Evidence, Metric, Verdict
from shadowlens.streams.control import as_v1, decision_message, heartbeat_message

if TYPE_CHECKING:
    from tests.kafka_fixtures import TopicFactory

T = TypeVar("T")
SCHEMA = load_json_schema("control.v1.json")
KEY = generate("worker-1")  # the worker's; routers get KEY.public_line() only
EXP = "gpt4-to-llama3-70b"
RP = RampPolicy()


def verifier(*keys: SigningKey) -> Verifier:
    return Verifier(parse_key_ring("\n".join(k.public_line() for k in keys or (KEY,))))


def now_ms() -> int:
    return time.time_ns() // 1_000_000


def decision(epoch: int, action: Action, from_p: float, to_p: float, **kw: Any) -> Decision:
    evidence = Evidence(
        Metric.LATENCY_P99, "support", Verdict.FAIL if action == Action.ROLLBACK else Verdict.PASS,
        observed=1.05, reference=1.0, threshold=1.2, n=700, bound=1.1,
        reason="p99 ratio bound", example_request_ids=("req-1", "req-2"),
    )  # fmt: skip
    fields = {"experiment": EXP, "decided_at_ms": now_ms(), "reason": f"{action} at stage"}
    fields.update(kw)
    return Decision(
        fields["experiment"], epoch, action, from_p, to_p, fields["decided_at_ms"],
        fields["reason"], (evidence,),
    )  # fmt: skip


def control(message: dict[str, Any]) -> dict[str, Any]:
    jsonschema.validate(message, SCHEMA)
    return message


def signed_decision(d: Decision, lease_ms: int, key: SigningKey = KEY) -> dict[str, Any]:
    return control(sign(decision_message(d, now_ms(), lease_ms), key))


def signed_heartbeat(
    epoch: int, percent: float, lease_ms: int, key: SigningKey = KEY
) -> dict[str, Any]:
    ramp = RampState(stage_index=RP.stages_percent.index(percent), epoch=epoch)
    policy = replace(RP, lease_ms=lease_ms)
    return control(sign(heartbeat_message(EXP, ExperimentState(ramp), policy, now_ms()), key))


def run(coro_fn: Callable[[], Awaitable[T]], timeout_s: float = 90) -> T:
    async def bounded() -> T:
        return await asyncio.wait_for(coro_fn(), timeout_s)

    return asyncio.run(bounded())


async def until(predicate: Callable[[], bool], timeout_s: float = 15.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached in time")
        await asyncio.sleep(0.02)


async def publish(bootstrap: str, topic: str, messages: list[dict[str, Any]]) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", enable_idempotence=True)
    await producer.start()
    try:
        for m in messages:
            await producer.send_and_wait(topic, orjson.dumps(m), key=m["experiment"].encode())
    finally:
        await producer.stop()


# --------------------------------------------------------------------------- no broker


def test_with_keys_only_valid_signatures_reach_the_router_state() -> None:
    sub = rs.RouterSubscriber(EXP, verifier())
    good = signed_decision(decision(1, Action.PROMOTE, 0, 1), 60_000)
    tampered = {**good, "traffic_percent": 100}
    impostor = signed_decision(decision(2, Action.PROMOTE, 1, 5), 60_000, key=generate("worker-1"))
    unknown = signed_decision(decision(2, Action.PROMOTE, 1, 5), 60_000, key=generate("mallory"))
    unsigned = control(decision_message(decision(3, Action.PROMOTE, 1, 5), now_ms(), 60_000))
    outcomes = [
        sub.receive(orjson.dumps(m), now_ms())
        for m in (good, tampered, impostor, unknown, unsigned)
    ]
    outcomes.append(sub.receive(b"{not json", now_ms()))
    assert outcomes == [
        "applied", "bad_signature", "bad_signature", "unknown_key", "unsigned", "invalid_json"
    ]  # fmt: skip
    assert sub.weights() | {"lease_expires_at_ms": 0} == {
        "experiment": EXP, "epoch": 1, "primary": 99.0, "candidate": 1.0, "fallback": False,
        "lease_expires_at_ms": 0, "phase": "ramping", "blocking": [], "proposal": "",
        "decommission_ready": False,
    }  # fmt: skip


def test_a_router_cannot_forge_what_other_routers_accept() -> None:
    """A router holds public keys only. What it can make -- a message signed by a key of its
    own under the worker's key id, or the legacy shared HMAC it may still hold -- is refused
    by every other router."""
    other_router = rs.RouterSubscriber(EXP, Verifier(verifier().ring, hmac_key=None))
    promote_all = decision(9, Action.PROMOTE, 0, 100)
    forged = [
        signed_decision(promote_all, 60_000, key=generate(KEY.key_id)),
        sign_hmac(as_v1(decision_message(promote_all, now_ms(), 60_000)), b"the-shared-key"),
        {**signed_decision(decision(1, Action.HOLD, 0, 0), 60_000), "traffic_percent": 100},
    ]
    outcomes = [other_router.receive(orjson.dumps(m), now_ms()) for m in forged]
    assert outcomes == ["bad_signature", "unknown_key", "bad_signature"]
    assert other_router.state.epoch == -1 and other_router.weights()["candidate"] == 0.0


def test_without_a_verifier_unsigned_messages_are_applied() -> None:
    sub = rs.RouterSubscriber(EXP, None)  # shadowlens-router --allow-unsigned
    unsigned = control(decision_message(decision(3, Action.PROMOTE, 1, 5), now_ms(), 60_000))
    assert sub.receive(orjson.dumps(unsigned), now_ms()) == "applied"
    assert sub.weights()["candidate"] == 5.0


def test_the_next_tick_comes_no_later_than_the_lease_expiry() -> None:
    sub = rs.RouterSubscriber(EXP, None)
    assert sub.next_tick_ms(0, 1000) == 1000  # nothing applied yet
    now = now_ms()
    sub.receive(orjson.dumps(decision_message(decision(1, Action.PROMOTE, 0, 1), now, 300)), now)
    assert sub.next_tick_ms(now, 1000) == 300
    sub.tick(now + 300)
    assert sub.state.fallback and sub.next_tick_ms(now + 300, 1000) == 1000
    assert sub.weights()["candidate"] == 0.0 and sub.weights()["primary"] == 100.0


def test_the_router_command_refuses_to_run_without_keys(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SHADOWLENS_")}
    cmd = [sys.executable, "-m", "shadowlens.gateway.subscriber", "--bootstrap", "x:1"]
    done = subprocess.run(
        [*cmd, "--experiment", EXP], env=env, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 2 and "no keys to verify with" in done.stderr


# --------------------------------------------------------------------------- on Kafka


@pytest.mark.kafka
def test_applies_good_messages_rejects_the_rest_falls_back_and_follows_a_key_rotation(
    kafka_bootstrap: str, topic_factory: TopicFactory, tmp_path: Path
) -> None:
    topic = topic_factory(partitions=1)
    lease_ms = 4000
    out = tmp_path / "weights.json"
    lines: list[str] = []
    new_key = generate("worker-2")  # the worker's next key: routers trust both meanwhile

    async def scenario() -> None:
        sub = rs.RouterSubscriber(EXP, verifier(KEY, new_key))
        stop, ready = asyncio.Event(), asyncio.Event()
        writer = rs.WeightsWriter(out, lines.append)
        follower = asyncio.create_task(
            rs.follow(kafka_bootstrap, topic, sub, writer, stop, tick_ms=200, ready=ready)
        )
        await asyncio.wait_for(ready.wait(), 30)

        promote_1 = signed_decision(decision(1, Action.PROMOTE, 0, 1), lease_ms)
        promote_5 = signed_decision(decision(2, Action.PROMOTE, 1, 5), lease_ms)
        stale = signed_decision(decision(1, Action.ROLLBACK, 1, 0), lease_ms)
        tampered = signed_decision(decision(3, Action.PROMOTE, 5, 10), lease_ms)
        tampered["traffic_percent"] = 100
        unsigned = control(decision_message(decision(3, Action.PROMOTE, 5, 10), now_ms(), 60_000))
        other = signed_decision(decision(9, Action.PROMOTE, 0, 50, experiment="other"), lease_ms)
        heartbeat = signed_heartbeat(2, 5, lease_ms, key=new_key)  # the worker switched keys
        batch = [promote_1, promote_5, stale, tampered, unsigned, other, heartbeat]
        await publish(kafka_bootstrap, topic, batch)
        await until(lambda: sum(sub.counts.values()) == len(batch))
        assert dict(sub.counts) == {
            "applied": 2, "stale": 1, "bad_signature": 1, "unsigned": 1,
            "other_experiment": 1, "renewed": 1,
        }  # fmt: skip
        state = sub.state
        assert (state.epoch, state.traffic_percent, state.fallback) == (2, 5.0, False)
        assert state.lease_expires_at_ms == heartbeat["lease_expires_at_ms"]
        written = orjson.loads(out.read_bytes())
        assert (written["primary"], written["candidate"], written["fallback"]) == (95.0, 5.0, False)

        # the judge goes quiet: the primary takes everything when the lease runs out
        await until(lambda: sub.state.fallback, timeout_s=lease_ms / 1000 + 10)
        assert now_ms() >= heartbeat["lease_expires_at_ms"]
        written = orjson.loads(out.read_bytes())
        assert (written["candidate"], written["primary"], written["fallback"]) == (0, 100, True)

        # heard again: a heartbeat restores the share, a signed rollback moves traffic back;
        # the rotation is over, so a router given only the new key refuses the old one
        rollback = signed_decision(decision(3, Action.ROLLBACK, 5, 0), lease_ms, key=new_key)
        late_old = signed_decision(decision(4, Action.PROMOTE, 0, 1), lease_ms)
        await publish(kafka_bootstrap, topic, [signed_heartbeat(2, 5, lease_ms), rollback])
        await until(lambda: sub.state.epoch == 3)
        assert (sub.state.traffic_percent, sub.state.fallback) == (0.0, False)
        assert (sub.counts["renewed"], sub.counts["applied"]) == (2, 3)
        rotated = rs.RouterSubscriber(EXP, verifier(new_key))
        assert rotated.receive(orjson.dumps(rollback), now_ms()) == "applied"
        assert rotated.receive(orjson.dumps(late_old), now_ms()) == "unknown_key"
        stop.set()
        await asyncio.wait_for(follower, 10)

    run(scenario)
    shown = [orjson.loads(line) for line in lines]
    steps = [(w["epoch"], w["candidate"], w["fallback"]) for w in shown]
    assert steps == [(-1, 0.0, False), (1, 1.0, False), (2, 5.0, False), (2, 0.0, True),
                     (2, 5.0, False), (3, 0.0, False)]  # fmt: skip
    assert all(w["primary"] + w["candidate"] == 100.0 for w in shown)


@pytest.mark.kafka
def test_the_command_verifies_with_public_keys_rejects_unsigned_and_stops_cleanly(
    kafka_bootstrap: str, topic_factory: TopicFactory, tmp_path: Path
) -> None:
    topic = topic_factory(partitions=1)
    out = tmp_path / "weights.json"
    keys = tmp_path / "worker.pub"
    keys.write_text(KEY.public_line() + "\n")  # what a router is given: no private key
    # published before the router starts: it reads the topic from the beginning
    unsigned = control(decision_message(decision(5, Action.PROMOTE, 0, 100), now_ms(), 60_000))
    signed = signed_decision(decision(1, Action.PROMOTE, 0, 10), 60_000)
    run(lambda: publish(kafka_bootstrap, topic, [unsigned, signed]))

    env = {k: v for k, v in os.environ.items() if not k.startswith("SHADOWLENS_")}
    env |= {PUBLIC_KEYS_ENV + "_FILE": str(keys), "PYTHONUNBUFFERED": "1"}
    cmd = [sys.executable, "-m", "shadowlens.gateway.subscriber"]
    cmd += ["--bootstrap", kafka_bootstrap, "--experiment", EXP]
    cmd += ["--topic", topic, "--out", str(out), "--tick-ms", "100"]
    proc = subprocess.Popen(
        cmd, env=env, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    try:
        deadline = time.monotonic() + 60
        while not (out.exists() and orjson.loads(out.read_bytes())["epoch"] == 1):
            assert proc.poll() is None, proc.communicate()
            assert time.monotonic() < deadline, "the router never applied the signed decision"
            time.sleep(0.05)
        proc.send_signal(signal.SIGTERM)
        stdout, stderr = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 0, stderr
    weights = orjson.loads(out.read_bytes())
    assert (weights["primary"], weights["candidate"], weights["fallback"]) == (90.0, 10.0, False)
    assert [orjson.loads(line)["candidate"] for line in stdout.splitlines()] == [0.0, 10.0]
    assert "offset 0: unsigned" in stderr and "offset 1: applied" in stderr
    assert "verifying with keys worker-1" in stderr
