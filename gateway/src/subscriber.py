"""Router subscriber: follow shadow.control and keep the traffic weights a router applies.

    python -m shadowlens.gateway.subscriber --public-keys worker.pub \\
        --bootstrap 127.0.0.1:9092 --experiment gpt4-to-llama3-70b --out weights.json

or ``shadowlens-router ...`` (the same `main`). Prints one JSON line per change of weights
on stdout, e.g. ``{"experiment": "...", "epoch": 3, "primary": 95.0, "candidate": 5.0,
"fallback": false, "phase": "ramping", "lease_expires_at_ms": ..., "at_ms": ...}``, and with
``--out`` keeps the latest line in that file (replaced atomically: a gateway or a sidecar
can poll it). Kafka TLS/SASL comes from the worker's SHADOWLENS_KAFKA_* variables
(`shadowlens.gateway.kafka_env`). What each message did (applied, renewed, stale,
rejected ...) is logged on stderr.

How it follows the contract (`shadowlens.gateway.router` has the rules):

- **signatures**: every message must carry a valid Ed25519 signature by one of the
  worker's public keys (``--public-keys FILE``, ``SHADOWLENS_CONTROL_PUBLIC_KEYS`` or
  ``..._FILE``; several at once while the worker's key rotates). A router holds public keys
  only, so it cannot forge what other routers accept. Unsigned, tampered and unknown-key
  messages are rejected before the router state sees them. Legacy HMAC (version 1) is
  accepted only with ``SHADOWLENS_CONTROL_KEY`` set. Without any key the router refuses to
  start, unless ``--allow-unsigned`` (then nothing is verified, and a warning says so);
- **no consumer group**: every router replica must see every message, so each one reads
  all partitions itself; by default from the beginning of the topic, so a restarted
  router finds the latest epoch (old messages whose lease is over are not acted on);
- **leases**: the state is ticked at least every ``--tick-ms`` and right when the lease
  runs out: without a heartbeat the router falls back to the primary (the candidate gets
  0 %) until the judge is heard again;
- **the lifecycle**: the phase (rolled back, paused, awaiting approval, stability ...),
  what blocks a rolled-back experiment, a proposal waiting for approval and whether the
  old deployment may be decommissioned are shown with the weights; none of them moves
  traffic (docs/operations.md).

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
from shadowlens.gateway.control import PUBLIC_KEYS_ENV, InvalidSignature, Verifier
from shadowlens.gateway.kafka_env import BOOTSTRAP_ENV, KafkaSecurity
from shadowlens.gateway.keys import KeyFormatError, parse_key_ring, read_key_text
from shadowlens.gateway.router import Outcome, RouterState

log = logging.getLogger(__name__)

INVALID_JSON = "invalid_json"  # besides the state's own `Outcome`s and `Rejection`s


def now_ms() -> int:
    return time.time_ns() // 1_000_000


class RouterSubscriber:
    """One experiment's router state, fed with raw control records and ticked by a clock."""

    def __init__(self, experiment: str, verifier: Verifier | None) -> None:
        """`verifier` None: nothing is verified (only with --allow-unsigned)."""
        self.state = RouterState(experiment)
        self.verifier = verifier
        self.counts: Counter[str] = Counter()  # outcome or rejection -> messages

    def receive(self, raw: bytes, at_ms: int) -> str:
        """Verify and apply one record's value; returns what happened to it."""
        try:
            message = orjson.loads(raw)
        except orjson.JSONDecodeError:
            return self._count(INVALID_JSON)
        if not isinstance(message, dict):
            return self._count(Outcome.INVALID)
        if self.verifier is not None:
            try:
                self.verifier.verify(message)
            except InvalidSignature as exc:
                return self._count(exc.rejection)
        self.state, outcome = self.state.apply(message, at_ms)
        return self._count(outcome)

    def tick(self, at_ms: int) -> None:
        self.state = self.state.tick(at_ms)

    def weights(self) -> dict[str, Any]:
        """What the router applies: the candidate's share, the rest to the primary; and the
        migration's status for whoever runs the router."""
        s, status = self.state, self.state.status
        return {
            "experiment": s.experiment,
            "epoch": s.epoch,
            "primary": 100.0 - s.candidate_percent,
            "candidate": s.candidate_percent,
            "fallback": s.fallback,
            "lease_expires_at_ms": s.lease_expires_at_ms,
            "phase": status.phase,
            "blocking": list(status.blocking),
            "proposal": status.proposal,
            "decommission_ready": status.decommission_ready,
        }

    def next_tick_ms(self, at_ms: int, tick_ms: int) -> int:
        """How long to wait: the tick interval, or less when the lease runs out sooner."""
        s = self.state
        if s.fallback or s.epoch < 0:
            return tick_ms
        return max(1, min(tick_ms, s.lease_expires_at_ms - at_ms))

    def _count(self, what: str) -> str:
        self.counts[str(what)] += 1
        return str(what)


class WeightsWriter:
    """Publishes the weights: a JSON line on stdout when the epoch, the split, the fallback
    or the phase changes, and the latest weights (lease included) in a file whenever
    anything does."""

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


_SHOWN = ("epoch", "primary", "candidate", "fallback", "phase")


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
            was_falling_back = subscriber.state.fallback
            subscriber.tick(at)
            if subscriber.state.fallback and not was_falling_back:
                log.warning("lease expired: all traffic to the primary until the judge is heard")
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
    parser.add_argument(
        "--public-keys",
        type=Path,
        help=f"the worker's public keys, one line each (or {PUBLIC_KEYS_ENV}[_FILE])",
    )
    parser.add_argument(
        "--allow-unsigned",
        action="store_true",
        help="run without keys: apply messages nobody verified (never in production)",
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
    try:
        verifier = Verifier.from_env()
        if args.public_keys is not None:
            ring = parse_key_ring(read_key_text("", args.public_keys))
            verifier = Verifier(ring, verifier.hmac_key)
    except KeyFormatError as exc:
        parser.error(str(exc))
    if not verifier and not args.allow_unsigned:
        parser.error(
            f"no keys to verify with: --public-keys FILE (or {PUBLIC_KEYS_ENV}[_FILE]); "
            "--allow-unsigned to apply what anyone could have written"
        )
    if verifier:
        log.info("verifying with keys %s", ", ".join(verifier.ring.ids()) or "(legacy HMAC)")
    else:
        log.warning("--allow-unsigned: control messages are NOT verified")
    subscriber = RouterSubscriber(args.experiment, verifier if verifier else None)

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
