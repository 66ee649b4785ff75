"""The control plane on the real broker (issue 11): a `shadowlens worker` judging a
migration whose candidate breaks one segment's errors, operators steering it with signed
commands (`shadowlens control`), and routers following what it publishes.

Traffic is built here in event-time phases (two segments, 150 requests a minute, identical
answers) with a short ramp (0 -> 50 -> 100 %) and short stability period in the policy.
Two workers, each one run: `hold` with rollbacks waiting for approval (commands, refusals,
operator key rotation, one rollback per regression, hold until resume), and `retry` with
the stability period (a retry only once the failed segment passes again, then
decommission-ready).
"""

from __future__ import annotations

import subprocess
import time
from collections.abc import Sequence
from itertools import pairwise
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import orjson
import pytest
from shadowlens.gateway.control import Verifier, sign
from shadowlens.gateway.keys import SigningKey, generate, parse_key_ring
from shadowlens.gateway.subscriber import RouterSubscriber
from shadowlens.judge.policy import load_policy
from shadowlens.judge.verdicts import Command
from shadowlens.report.model import load
from shadowlens.schemas.events import Status
from shadowlens.store.client import Store
from shadowlens.streams.control import command_message
from shadowlens.streams.wire import read_dead_letter

from tests.builders import event
from tests.stream_harness import (
    SHADOWLENS,
    WORKER_KEY,
    StreamTopics,
    WorkerProcess,
    control_messages,
    make_topics,
    publish_payloads,
    read_topic,
    send_raw,
    wait_for,
    worker_env,
)

if TYPE_CHECKING:
    from tests.kafka_fixtures import TopicFactory

pytestmark = pytest.mark.kafka

EXP = "gpt4-to-llama3-70b"
MINUTE = 60_000
T0 = 1_700_000_000_000 // MINUTE * MINUTE
ALICE, BOB = generate("alice"), generate("bob")  # two operator keys at once: a rotation


def traffic(
    start_min: int,
    end_min: int,
    *,
    broken: str | None = None,
    quiet: str | None = None,
    seed: int = 0,
) -> list[bytes]:
    """Both arms of 150 requests a minute over segments chat and billing; in `broken` 30 %
    of the candidate's calls fail, `quiet` gets no traffic at all."""
    rng = np.random.default_rng(seed)
    segments = [s for s in ("chat", "billing") if s != quiet]
    out: list[bytes] = []
    for i in range(150 * (end_min - start_min)):
        seg, start = segments[i % len(segments)], T0 + start_min * MINUTE + i * 400
        lat, rid, text = float(rng.lognormal(7.0, 0.3)), f"{seed}-{i}", f"answer {i % 40}"
        failed = seg == broken and rng.random() < 0.3
        out.append(
            event(rid, start=start, latency=lat, experiment=EXP, segment=seg, text=text).to_json()
        )
        out.append(
            event(
                rid,
                "candidate",
                start=start,
                latency=lat * float(rng.lognormal(0, 0.05)),
                experiment=EXP,
                segment=seg,
                text=None if failed else text,
                status=Status.ERROR if failed else Status.OK,
            ).to_json()
        )
    return out


def policy_file(tmp_path: Path, **ramp: Any) -> Path:
    lines = [f"{k} = {orjson.dumps(v).decode()}" for k, v in ramp.items()]
    base = {
        "stages_percent": [0, 50, 100],
        "min_pairs": 100,
        "heartbeat_ms": 1000,
        "stability_ms": 300_000,
    }
    lines += [f"{k} = {orjson.dumps(v).decode()}" for k, v in base.items() if k not in ramp]
    path = tmp_path / "policy.toml"
    path.write_text("[ramp]\n" + "\n".join(lines) + "\n")
    load_policy(path)  # a policy the worker accepts
    return path


def decisions(bootstrap: str, topics: StreamTopics) -> list[dict[str, Any]]:
    return [m for m in control_messages(bootstrap, topics.control) if m["type"] == "decision"]


def control_cli(env: dict[str, str], command: str, key: Path, reason: str) -> str:
    """`shadowlens control COMMAND` as an operator runs it; its output."""
    done = subprocess.run(
        [SHADOWLENS, "control", command, EXP, "--reason", reason, "--key", str(key)],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        stdin=subprocess.DEVNULL,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


def send_command(bootstrap: str, topics: StreamTopics, message: dict[str, Any]) -> bytes:
    raw = orjson.dumps(message)
    send_raw(bootstrap, topics.commands, [(message["experiment"].encode(), raw, [], None)])
    return raw


def command(cmd: Command, epoch: int, key: SigningKey, experiment: str = EXP) -> dict[str, Any]:
    now_ms = time.time_ns() // 1_000_000
    return sign(command_message(experiment, cmd, epoch, "test", now_ms), key)


def router_sees(bootstrap: str, topics: StreamTopics) -> RouterSubscriber:
    """A router holding the worker's public key only, fed the whole control topic."""
    router = RouterSubscriber(EXP, Verifier(parse_key_ring(WORKER_KEY.public_line())))
    for record in read_topic(bootstrap, topics.control):
        router.receive(record.value, orjson.loads(record.value)["issued_at_ms"])
    return router


def check_epochs(made: Sequence[dict[str, Any]]) -> None:
    """The epoch changes exactly when the routed share does."""
    for before, after in pairwise(made):
        moved = after["traffic_percent"] != before["traffic_percent"]
        assert (after["epoch"] != before["epoch"]) == moved, (before, after)


def test_rollback_approval_hold_until_resume_and_refused_commands(
    kafka_bootstrap: str, topic_factory: TopicFactory, tmp_path: Path
) -> None:
    topics = make_topics(topic_factory)
    for key in (ALICE, BOB):
        (tmp_path / f"{key.key_id}.key").write_text(key.private_line())
    env = worker_env(
        kafka_bootstrap,
        topics,
        f"chdb://{tmp_path}/ch",
        policy=policy_file(tmp_path, approval="rollbacks"),
        SHADOWLENS_OPERATOR_KEYS=f"{ALICE.public_line()},{BOB.public_line()}",
    )
    worker = WorkerProcess(env, tmp_path / "worker.log")
    try:
        # healthy to 100 %, billing breaks at minute 6 for 8 minutes, then healthy again
        publish_payloads(
            kafka_bootstrap,
            topics.events,
            traffic(0, 6) + traffic(6, 14, broken="billing", seed=1) + traffic(14, 40, seed=2),
        )

        def proposed() -> list[dict[str, Any]]:
            return [d for d in decisions(kafka_bootstrap, topics) if d.get("proposal")]

        first = wait_for(proposed, 120, "a proposed rollback", [worker])[0]
        assert first["proposal"] == {"action": "rollback", "traffic_percent": 0}
        assert (first["action"], first["traffic_percent"]) == ("hold", 100)
        assert first["phase"] == "awaiting_approval" and "waits for approve" in first["reason"]
        assert router_sees(kafka_bootstrap, topics).weights()["candidate"] == 100.0

        # refused, each with its reason, changing nothing
        epoch = first["epoch"]
        refused = {
            "bad_signature": command(Command.APPROVE, epoch, generate("alice")),  # forged
            "unknown_key": command(Command.APPROVE, epoch, generate("mallory")),
            "stale_epoch": command(Command.APPROVE, epoch - 1, ALICE),
            "unknown_experiment": command(Command.APPROVE, epoch, ALICE, "no-such-exp"),
        }
        for message in refused.values():
            send_command(kafka_bootstrap, topics, message)

        def refusals() -> list[Any]:
            records = read_topic(kafka_bootstrap, topics.deadletter)
            letters = [read_dead_letter(r.value, r.headers) for r in records]
            return [x for x in letters if x.reason == "command_refused"]

        letters = wait_for(lambda: len(refusals()) >= 4 and refusals(), 60, "4 refusals")
        assert sorted(x.detail.split(":")[0] for x in letters) == sorted(refused)
        assert not [d for d in decisions(kafka_bootstrap, topics) if d.get("operator")]

        # the incident commander approves: one rollback, 100 % -> 0 %
        out = control_cli(env, "approve", tmp_path / "alice.key", "billing errors, INC-42")
        assert "applied approve" in out and "rollback" in out
        made = decisions(kafka_bootstrap, topics)
        (rollback,) = [d for d in made if d["action"] == "rollback"]
        assert rollback["operator"]["key_id"] == "alice" and rollback["epoch"] == epoch + 1
        assert rollback["traffic_percent"] == 0 and rollback["phase"] == "rolled_back"
        assert {"metric": "error_rate", "segment": "billing"} in rollback["blocking"]

        # healthy traffic after the rollback: held, and every heartbeat names the blocker
        publish_payloads(kafka_bootstrap, topics.events, traffic(40, 55, seed=3))

        def held_on_health() -> list[dict[str, Any]]:
            late = T0 + 41 * MINUTE
            return [
                d
                for d in decisions(kafka_bootstrap, topics)
                if d["decided_at_ms"] >= late and "waiting for resume" in d["reason"]
            ]

        wait_for(held_on_health, 120, "holds on healthy evidence", [worker])
        beats = [
            m
            for m in control_messages(kafka_bootstrap, topics.control)
            if m["type"] == "heartbeat" and m["epoch"] == epoch + 1
        ]
        assert beats and all(b["phase"] == "rolled_back" and b["blocking"] for b in beats)

        out = control_cli(env, "resume", tmp_path / "bob.key", "fixed the billing pool")
        assert "applied resume" in out
        sent = read_topic(kafka_bootstrap, topics.commands)[-1].value
        send_raw(kafka_bootstrap, topics.commands, [(EXP.encode(), sent, [], None)])  # replay
        wait_for(lambda: len(refusals()) == 5, 60, "the replay refused", [worker])
        assert refusals()[-1].detail.startswith("replayed")

        publish_payloads(kafka_bootstrap, topics.events, traffic(55, 75, seed=4), end_marker=True)
        wait_for(
            lambda: decisions(kafka_bootstrap, topics)[-1]["decided_at_ms"] >= T0 + 75 * MINUTE,
            120,
            "the last window",
            [worker],
        )
    finally:
        code = worker.stop()
    assert code == 0, worker.tail()

    made = decisions(kafka_bootstrap, topics)
    check_epochs(made)
    actions = [d["action"] for d in made]
    assert actions.count("rollback") == 1  # one regression, one rollback, no storm
    resumed = next(
        i for i, d in enumerate(made) if (d.get("operator") or {}).get("command") == "resume"
    )
    after_rollback = made[actions.index("rollback") + 1 : resumed]
    assert after_rollback and all(d["action"] == "hold" for d in after_rollback)
    assert "promote" in actions[resumed:]  # only after resume
    router = router_sees(kafka_bootstrap, topics)
    assert set(router.counts) <= {"applied", "renewed", "duplicate"}, router.counts
    assert router.weights()["candidate"] == made[-1]["traffic_percent"]

    with Store.open(f"chdb://{tmp_path}/ch") as store:
        rows = store.query(
            "SELECT command, operator_key_id, operator_reason, action, phase FROM decisions "
            "FINAL WHERE command != '' ORDER BY decided_at, epoch"
        ).result_rows
        stored = store.query(
            "SELECT count() FROM dead_letters WHERE reason = 'command_refused'"
        ).result_rows[0][0]
    assert rows == [
        ("approve", "alice", "billing errors, INC-42", "rollback", "rolled_back"),
        ("resume", "bob", "fixed the billing pool", "hold", "ramping"),
    ]
    assert stored == 5


def test_retry_only_on_fresh_passing_evidence_then_decommission_ready(
    kafka_bootstrap: str, topic_factory: TopicFactory, tmp_path: Path
) -> None:
    topics = make_topics(topic_factory)
    policy = policy_file(tmp_path, after_rollback="retry", retry_after_ms=180_000, max_retries=1)
    env = worker_env(kafka_bootstrap, topics, f"chdb://{tmp_path}/ch", policy=policy)
    worker = WorkerProcess(env, tmp_path / "worker.log")
    try:
        # billing breaks, then has no traffic at all for 6 minutes, then is healthy
        publish_payloads(
            kafka_bootstrap,
            topics.events,
            traffic(0, 6)
            + traffic(6, 14, broken="billing", seed=1)
            + traffic(14, 20, quiet="billing", seed=2)
            + traffic(20, 45, seed=3),
            end_marker=True,
        )
        wait_for(
            lambda: any(d["phase"] == "complete" for d in decisions(kafka_bootstrap, topics)),
            180,
            "decommission-ready",
            [worker],
        )
        beat = wait_for(
            lambda: [
                m
                for m in control_messages(kafka_bootstrap, topics.control)
                if m["type"] == "heartbeat" and m["phase"] == "complete"
            ],
            30,
            "a decommission-ready heartbeat",
            [worker],
        )[-1]
    finally:
        code = worker.stop()
    assert code == 0, worker.tail()
    assert beat["decommission"]["ready"] is True and beat["traffic_percent"] == 100

    made = decisions(kafka_bootstrap, topics)
    check_epochs(made)
    actions = [d["action"] for d in made]
    assert actions.count("rollback") == 1
    i_rollback = actions.index("rollback")
    retry = next(d for d in made if d["reason"].startswith("retry 1 of 1"))
    waited = made[i_rollback + 1 : made.index(retry)]
    assert waited and all(d["action"] == "hold" for d in waited)
    assert any("error_rate [billing] nodata" in d["reason"] for d in waited)
    assert retry["decided_at_ms"] > T0 + 20 * MINUTE  # only once billing had traffic again
    to_100 = [d for d in made if d["action"] == "promote" and d["traffic_percent"] == 100][-1]
    after_ms = to_100["decided_at_ms"] + 300_000  # the stability period starts at 100 %
    assert to_100["decommission"] == {"ready": False, "after_ms": after_ms}
    watching = [d for d in made[made.index(to_100) + 1 :] if d["phase"] == "stability"]
    assert watching and all("may be decommissioned after" in d["reason"] for d in watching)
    done = next(d for d in made if d["phase"] == "complete")
    assert done["decided_at_ms"] >= after_ms and done["decommission"]["ready"] is True

    with Store.open(f"chdb://{tmp_path}/ch") as store:
        verdict = load(store, EXP, load_policy(policy)).verdict
    assert verdict.status == "GO" and verdict.headline.startswith("decommission-ready")
