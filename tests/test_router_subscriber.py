"""The SDK's router subscriber (shadowlens.gateway.subscriber) on signed control messages.

Messages are built the way the judge publishes them: `decision_message` of real
`Decision`s and `heartbeat_message`, checked against control.v1.json, signed with `sign`.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import jsonschema
import orjson
import pytest
from aiokafka import AIOKafkaProducer
from shadowlens.gateway import load_json_schema
from shadowlens.gateway import subscriber as rs
from shadowlens.gateway.control import SIGNING_KEY_ENV
from shadowlens.judge.verdicts import Action, Decision, Evidence, Metric, Verdict
from shadowlens.streams.control import decision_message, heartbeat_message, sign

if TYPE_CHECKING:
    from tests.kafka_fixtures import TopicFactory

T = TypeVar("T")
SCHEMA = load_json_schema("control.v1.json")
KEY = b"test-control-key"
EXP = "gpt4-to-llama3-70b"


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


def signed_decision(d: Decision, lease_ms: int, key: bytes = KEY) -> dict[str, Any]:
    return sign(control(decision_message(d, now_ms(), lease_ms)), key)


def signed_heartbeat(epoch: int, percent: float, lease_ms: int) -> dict[str, Any]:
    return sign(control(heartbeat_message(EXP, epoch, percent, now_ms(), lease_ms)), KEY)


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


def test_with_a_key_only_valid_signatures_reach_the_router_state() -> None:
    sub = rs.RouterSubscriber(EXP, KEY)
    good = signed_decision(decision(1, Action.PROMOTE, 0, 1), 60_000)
    tampered = {**good, "traffic_percent": 100}
    other_key = signed_decision(decision(2, Action.PROMOTE, 1, 5), 60_000, key=b"other")
    unsigned = control(decision_message(decision(3, Action.PROMOTE, 1, 5), now_ms(), 60_000))
    outcomes = [
        sub.receive(orjson.dumps(m), now_ms()) for m in (good, tampered, other_key, unsigned)
    ]
    outcomes.append(sub.receive(b"{not json", now_ms()))
    assert outcomes == ["applied", "bad_signature", "bad_signature", "unsigned", "invalid_json"]
    assert sub.weights() | {"lease_expires_at_ms": 0} == {
        "experiment": EXP, "epoch": 1, "primary": 99.0, "candidate": 1.0, "frozen": False,
        "lease_expires_at_ms": 0,
    }  # fmt: skip


def test_without_a_key_unsigned_messages_are_applied() -> None:
    sub = rs.RouterSubscriber(EXP, None)
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
    assert sub.state.frozen and sub.next_tick_ms(now + 300, 1000) == 1000


# --------------------------------------------------------------------------- on Kafka


@pytest.mark.kafka
def test_applies_good_messages_rejects_the_rest_and_freezes_without_heartbeats(
    kafka_bootstrap: str, topic_factory: TopicFactory, tmp_path: Path
) -> None:
    topic = topic_factory(partitions=1)
    lease_ms = 4000
    out = tmp_path / "weights.json"
    lines: list[str] = []

    async def scenario() -> None:
        sub = rs.RouterSubscriber(EXP, KEY)
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
        heartbeat = signed_heartbeat(2, 5, lease_ms)
        batch = [promote_1, promote_5, stale, tampered, unsigned, other, heartbeat]
        await publish(kafka_bootstrap, topic, batch)
        await until(lambda: sum(sub.counts.values()) == len(batch))
        assert dict(sub.counts) == {
            "applied": 2, "stale": 1, "bad_signature": 1, "unsigned": 1,
            "other_experiment": 1, "renewed": 1,
        }  # fmt: skip
        state = sub.state
        assert (state.epoch, state.traffic_percent, state.frozen) == (2, 5.0, False)
        assert state.lease_expires_at_ms == heartbeat["lease_expires_at_ms"]
        written = orjson.loads(out.read_bytes())
        assert (written["primary"], written["candidate"], written["frozen"]) == (95.0, 5.0, False)

        # the judge goes quiet: the weights freeze when the heartbeat's lease runs out
        await until(lambda: sub.state.frozen, timeout_s=lease_ms / 1000 + 10)
        assert now_ms() >= heartbeat["lease_expires_at_ms"]
        written = orjson.loads(out.read_bytes())
        assert (written["candidate"], written["frozen"]) == (5.0, True)

        # heard again: a heartbeat unfreezes, a signed rollback moves traffic back
        rollback = signed_decision(decision(3, Action.ROLLBACK, 5, 0), lease_ms)
        await publish(kafka_bootstrap, topic, [signed_heartbeat(2, 5, lease_ms), rollback])
        await until(lambda: sub.state.epoch == 3)
        assert (sub.state.traffic_percent, sub.state.frozen) == (0.0, False)
        assert (sub.counts["renewed"], sub.counts["applied"]) == (2, 3)
        stop.set()
        await asyncio.wait_for(follower, 10)

    run(scenario)
    shown = [orjson.loads(line) for line in lines]
    steps = [(w["epoch"], w["candidate"], w["frozen"]) for w in shown]
    assert steps == [(-1, 0.0, False), (1, 1.0, False), (2, 5.0, False), (2, 5.0, True),
                     (2, 5.0, False), (3, 0.0, False)]  # fmt: skip
    assert all(w["primary"] + w["candidate"] == 100.0 for w in shown)


@pytest.mark.kafka
def test_the_command_runs_rejects_unsigned_and_stops_cleanly(
    kafka_bootstrap: str, topic_factory: TopicFactory, tmp_path: Path
) -> None:
    topic = topic_factory(partitions=1)
    out = tmp_path / "weights.json"
    # published before the router starts: it reads the topic from the beginning
    unsigned = control(decision_message(decision(5, Action.PROMOTE, 0, 100), now_ms(), 60_000))
    signed = signed_decision(decision(1, Action.PROMOTE, 0, 10), 60_000)
    run(lambda: publish(kafka_bootstrap, topic, [unsigned, signed]))

    env = {**os.environ, SIGNING_KEY_ENV: KEY.decode(), "PYTHONUNBUFFERED": "1"}
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
    assert (weights["primary"], weights["candidate"], weights["frozen"]) == (90.0, 10.0, False)
    assert [orjson.loads(line)["candidate"] for line in stdout.splitlines()] == [0.0, 10.0]
    assert "offset 0: unsigned" in stderr and "offset 1: applied" in stderr
