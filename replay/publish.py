"""`shadowlens publish`: put replay traffic on Kafka the way gateways would.

Each payload is published keyed by its ``request_id`` (the gateway contract), at the pace
of its completion times (``--speed 1`` real time, ``10`` ten times faster, ``0`` as fast as
possible). Payloads without a readable request id (malformed ones) go unkeyed.
`misroute_share` publishes that share of events under a wrong key, as a misconfigured
gateway would, to exercise the worker's repartition path. With `end_marker` an
``end-of-input`` marker goes to every partition last, so the worker closes every open
request and window of a finite replay: never use it against a topic live gateways write to.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import orjson
from aiokafka import AIOKafkaProducer
from aiokafka.errors import MessageSizeTooLargeError
from shadowlens.schemas.markers import end_of_input_record

IN_FLIGHT = 2000  # sends awaited in groups of this many


@dataclass(frozen=True, slots=True)
class Published:
    records: int
    markers: int
    seconds: float
    too_large: int = 0  # payloads over max_request_size: Kafka cannot carry them


def _meta(raw: bytes) -> tuple[str | None, int | None]:
    """(request_id, completion ms) of a payload, where it can be read."""
    try:
        doc = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return None, None
    if not isinstance(doc, dict):
        return None, None
    rid = doc.get("request_id")
    rid = rid if isinstance(rid, str) else None
    end = doc.get("end_time_ms")
    start, latency = doc.get("start_time_ms"), doc.get("latency_ms")
    if not isinstance(end, int):
        ok = isinstance(start, int) and isinstance(latency, (int, float))
        end = start + round(latency) if ok else None  # type: ignore[operator]
    return rid, end


async def publish(
    payloads: Sequence[bytes],
    bootstrap: str,
    topic: str,
    *,
    speed: float = 0.0,
    end_marker: bool = False,
    misroute_share: float = 0.0,
    seed: int = 0,
    max_request_size: int = 1_048_576,
    on_sent: Callable[[int], None] | None = None,
    client_options: Mapping[str, Any] | None = None,
) -> Published:
    """Publish `payloads` in order; returns what was sent and how long it took.

    `on_sent(n)` is told after each payload how many have been handed to the producer
    (a progress bar's hook)."""
    if speed < 0:
        raise ValueError(f"speed must be >= 0, got {speed}")
    rng = random.Random(seed)
    producer = AIOKafkaProducer(
        bootstrap_servers=bootstrap,
        acks="all",
        enable_idempotence=True,
        linger_ms=5,
        max_request_size=max_request_size,
        client_id="shadowlens-publish",
        **(client_options or {}),  # TLS / SASL: streams.kafka_security.aiokafka_options
    )
    await producer.start()
    started = time.monotonic()
    first_ms: int | None = None
    markers = too_large = 0
    try:
        pending = []
        for i, raw in enumerate(payloads):
            rid, done_ms = _meta(raw)
            if speed > 0 and done_ms is not None:
                first_ms = done_ms if first_ms is None else first_ms
                delay = started + (done_ms - first_ms) / 1000.0 / speed - time.monotonic()
                if delay > 0:
                    await asyncio.sleep(delay)
            key = rid.encode() if rid is not None else None
            if key is not None and misroute_share and rng.random() < misroute_share:
                key = f"misrouted-{seed}-{i}".encode()
            try:
                pending.append(await producer.send(topic, raw, key=key))
            except MessageSizeTooLargeError:
                too_large += 1  # the topic could not hold it either; the rest goes on
            if on_sent is not None:
                on_sent(i + 1)
            if len(pending) >= IN_FLIGHT:
                await asyncio.gather(*pending)
                pending.clear()
        await asyncio.gather(*pending)
        if end_marker:
            value, headers = end_of_input_record()
            partitions = sorted(await producer.partitions_for(topic))
            marks = [
                await producer.send(topic, value, partition=p, headers=headers) for p in partitions
            ]
            await asyncio.gather(*marks)
            markers = len(marks)
    finally:
        await producer.stop()
    sent = len(payloads) - too_large
    return Published(sent, markers, time.monotonic() - started, too_large)
