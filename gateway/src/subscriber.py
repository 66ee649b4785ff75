"""Router subscriber: follow shadow.control and keep the traffic weights a router applies.

    SHADOWLENS_CONTROL_KEY=... python -m shadowlens.gateway.subscriber \\
        --bootstrap 127.0.0.1:9092 --experiment gpt4-to-llama3-70b --out weights.json

or ``shadowlens-router ...`` (the same `main`). Prints one JSON line per change of weights
on stdout, e.g. ``{"experiment": "...", "epoch": 3, "primary": 95.0, "candidate": 5.0,
"frozen": false, "lease_expires_at_ms": ..., "at_ms": ...}``, and with ``--out`` keeps the
latest line in that file (replaced atomically: a gateway or a sidecar can poll it). Kafka
TLS/SASL comes from the worker's SHADOWLENS_KAFKA_* variables (`shadowlens.gateway.kafka_env`).
What each message did (applied, renewed, stale, rejected ...) is logged on stderr.

How it follows the contract (`shadowlens.gateway.router` has the rules):

- **signatures**: with ``SHADOWLENS_CONTROL_KEY`` set, every message must carry a valid
  HMAC (`shadowlens.gateway.control.verify`); unsigned or tampered ones are rejected before
  the router state sees them. Without the key nothing is verified (a warning says so);
- **no consumer group**: every router replica must see every message, so each one reads
  all partitions itself; by default from the beginning of the topic, so a restarted
  router finds the latest epoch (old messages whose lease is over are not acted on);
- **leases**: the state is ticked at least every ``--tick-ms`` and right when the lease
  runs out: without a heartbeat the weights freeze (kept, never changed) until the judge
  is heard again.

`RouterSubscriber` is the part to embed in a real router: bytes in, weights out, the
clock an argument.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import signal
import sys
import time
from collections import Counter
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import orjson
from aiokafka import AIOKafkaConsumer
from shadowlens.gateway.control import SIGNING_KEY_ENV, InvalidSignature, signing_key, verify
from shadowlens.gateway.kafka_env import BOOTSTRAP_ENV, KafkaSecurity
from shadowlens.gateway.router import Outcome, RouterState

log = logging.getLogger(__name__)

# Why a message never reached the router state (besides the state's own `Outcome`s).
UNSIGNED, BAD_SIGNATURE, INVALID_JSON = "unsigned", "bad_signature", "invalid_json"


def now_ms() -> int:
    return time.time_ns() // 1_000_000


class RouterSubscriber:
    """One experiment's router state, fed with raw control records and ticked by a clock."""

    def __init__(self, experiment: str, key: bytes | None) -> None:
        self.state = RouterState(experiment)
        self.key = key
        self.counts: Counter[str] = Counter()  # outcome or rejection -> messages

    def receive(self, raw: bytes, at_ms: int) -> str:
        """Verify and apply one record's value; returns what happened to it."""
        try:
            message = orjson.loads(raw)
        except orjson.JSONDecodeError:
            return self._count(INVALID_JSON)
        if not isinstance(message, dict):
            return self._count(Outcome.INVALID)
        if self.key is not None:
            try:
                verify(message, self.key)
            except InvalidSignature:
                signed = isinstance(message.get("signature"), str)
                return self._count(BAD_SIGNATURE if signed else UNSIGNED)
        self.state, outcome = self.state.apply(message, at_ms)
        return self._count(outcome)

    def tick(self, at_ms: int) -> None:
        self.state = self.state.tick(at_ms)

    def weights(self) -> dict[str, Any]:
        """What the router applies: the candidate's share, the rest to the primary."""
        s = self.state
        return {
            "experiment": s.experiment,
            "epoch": s.epoch,
            "primary": 100.0 - s.traffic_percent,
            "candidate": s.traffic_percent,
            "frozen": s.frozen,
            "lease_expires_at_ms": s.lease_expires_at_ms,
        }

    def next_tick_ms(self, at_ms: int, tick_ms: int) -> int:
        """How long to wait: the tick interval, or less when the lease runs out sooner."""
        s = self.state
        if s.frozen or s.epoch < 0:
            return tick_ms
        return max(1, min(tick_ms, s.lease_expires_at_ms - at_ms))

    def _count(self, what: str) -> str:
        self.counts[str(what)] += 1
        return str(what)


class WeightsWriter:
    """Publishes the weights: a JSON line on stdout when the epoch, the split or the freeze
    changes, and the latest weights (lease included) in a file whenever anything does."""

    def __init__(self, out: Path | None, stdout: Callable[[str], Any] | None = print) -> None:
        self.out = out
        self.stdout = stdout
        self.last: dict[str, Any] | None = None

    def __call__(self, weights: dict[str, Any], at_ms: int) -> None:
        if weights == self.last:
            return
        previous, self.last = self.last, weights
        line = orjson.dumps({**weights, "at_ms": at_ms}).decode()
        if self.out is not None:
            tmp = self.out.with_name(f".{self.out.name}.tmp")
            tmp.write_text(line + "\n")
            os.replace(tmp, self.out)
        moved = previous is None or any(previous[k] != weights[k] for k in _SHOWN)
        if self.stdout is not None and moved:
            self.stdout(line)


_SHOWN = ("epoch", "primary", "candidate", "frozen")


async def follow(
    bootstrap: str,
    topic: str,
    subscriber: RouterSubscriber,
    writer: Callable[[dict[str, Any], int], Any],
    stop: asyncio.Event,
    *,
    tick_ms: int = 1000,
    from_beginning: bool = True,
    ready: asyncio.Event | None = None,
    clock: Callable[[], int] = now_ms,
    security: Mapping[str, Any] | None = None,
) -> None:
    """Read `topic` until `stop` is set, applying every record and ticking the lease.

    `security`: aiokafka's TLS/SASL keyword arguments (`KafkaSecurity.aiokafka_options`)."""
    consumer = AIOKafkaConsumer(
        topic,
        bootstrap_servers=bootstrap,
        group_id=None,  # every router reads every message
        enable_auto_commit=False,
        auto_offset_reset="earliest" if from_beginning else "latest",
        client_id=f"shadowlens-router-{subscriber.state.experiment}",
        **(security or {}),
    )
    await consumer.start()
    try:
        writer(subscriber.weights(), clock())
        while not consumer.assignment():
            await asyncio.sleep(0.05)
        for tp in consumer.assignment():
            await consumer.position(tp)  # resolve the starting offsets before `ready`
        if ready is not None:
            ready.set()
        while not stop.is_set():
            wait_ms = subscriber.next_tick_ms(clock(), tick_ms)
            batches = await consumer.getmany(timeout_ms=wait_ms, max_records=500)
            for records in batches.values():
                for record in records:
                    at = clock()
                    outcome = subscriber.receive(record.value or b"", at)
                    if outcome != Outcome.OTHER_EXPERIMENT:
                        level = logging.INFO if outcome in _ACTED else logging.WARNING
                        log.log(level, "offset %d: %s", record.offset, outcome)
                    writer(subscriber.weights(), at)
            at = clock()
            was_frozen = subscriber.state.frozen
            subscriber.tick(at)
            if subscriber.state.frozen and not was_frozen:
                log.warning("lease expired: weights frozen until the judge is heard again")
            writer(subscriber.weights(), at)
    finally:
        await consumer.stop()


_ACTED = {Outcome.APPLIED, Outcome.RENEWED, Outcome.DUPLICATE}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--bootstrap", default=os.environ.get(BOOTSTRAP_ENV))
    parser.add_argument("--experiment", required=True)
    parser.add_argument("--topic", default="shadow.control")
    parser.add_argument("--out", type=Path, help="keep the latest weights in this JSON file")
    parser.add_argument("--tick-ms", type=int, default=1000, help="longest wait between ticks")
    parser.add_argument(
        "--from-end", action="store_true", help="skip the topic's history (default: read it)"
    )
    args = parser.parse_args(argv)
    if not args.bootstrap:
        parser.error(f"--bootstrap (or {BOOTSTRAP_ENV}) is required")
    try:
        security = KafkaSecurity.from_env().aiokafka_options()  # SHADOWLENS_KAFKA_* TLS/SASL
    except ValueError as exc:
        parser.error(str(exc))
    logging.basicConfig(
        level=logging.INFO, stream=sys.stderr, format="%(asctime)s %(levelname)s %(message)s"
    )
    key = signing_key()
    if key is None:
        log.warning("%s is not set: control messages are NOT verified", SIGNING_KEY_ENV)
    subscriber = RouterSubscriber(args.experiment, key)

    async def run() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(NotImplementedError):
                loop.add_signal_handler(sig, stop.set)
        writer = WeightsWriter(args.out, lambda line: print(line, flush=True))
        await follow(
            args.bootstrap, args.topic, subscriber, writer, stop,
            tick_ms=args.tick_ms, from_beginning=not args.from_end,
            security=security,
        )  # fmt: skip

    asyncio.run(run())
    log.info("stopped; messages: %s", dict(subscriber.counts))
    return 0


if __name__ == "__main__":
    sys.exit(main())
