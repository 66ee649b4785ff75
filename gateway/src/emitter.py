"""The gateway side of the event contract: an async, batched emitter to ``shadow.events``.

A proxy or gateway records one `Event` per model call and hands it to a `ShadowEmitter`::

    async with ShadowEmitter("kafka:9092") as emitter:
        await emitter.emit(event)  # keyed by event.request_id, value = event.to_json()

What it guarantees:

- **keyed by request id**: every arm of a request lands in the partition the worker pairs
  it in (no repartition hop);
- **checked at the source**: with ``validate=True`` (the default) each event is encoded and
  decoded with `decode_event`, so a gateway bug raises `InvalidEvent` in the gateway, not
  a dead letter three hops later;
- **bounded memory**: at most ``max_queue`` events wait in memory. Two ways to emit:
  ``await emit(event)`` *waits* for room when the queue is full (backpressure: use it off
  the request path, or when losing telemetry is worse than slowing down);
  ``emit_nowait(event)`` never waits: it returns False and counts a drop in
  ``stats.dropped`` when the queue is full (use it on the request path);
- **batched**: a background task takes up to ``max_batch`` queued events at a time,
  waiting at most ``linger_ms`` after the first for more, and hands them to an idempotent
  aiokafka producer (``enable_idempotence=True``, ``acks="all"``): no duplicates from
  the producer's own retries, nothing acknowledged before every in-sync replica has it;
- **nothing dropped silently**: records the broker finally refuses are counted in
  ``stats.failed`` and logged; `flush()` waits until everything emitted before it is
  acknowledged or failed, and `close()` delivers everything still queued first.

The replica arm: quality needs a reference that never comes from the candidate, and for
free text that is the primary's agreement with itself. ``replica_share`` (or
``SHADOWLENS_REPLICA_SHARE``) is the share of requests to send to the primary a second time
and emit as ``arm="replica"``; `wants_replica` picks them by request id
(`replica_sampled`), so every gateway instance picks the same ones. The LiteLLM adapter
(`shadowlens.gateway.litellm_callback.shadow_completion`) makes that second call itself.

Secured brokers: `ShadowEmitter.from_env` reads the broker, the events topic and the
TLS / SASL settings from the worker's ``SHADOWLENS_*`` variables (see
`shadowlens.gateway.kafka_env`); credentials are never passed on a command line or logged.

Thread safety: use the emitter from the event loop it was started on; a callback running
in another thread (e.g. a synchronous logging hook) uses `emit_threadsafe`.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from aiokafka import AIOKafkaProducer
from shadowlens.gateway.events import Event, decode_event
from shadowlens.gateway.kafka_env import KafkaSecurity, bootstrap_from_env, env_value

log = logging.getLogger(__name__)

DEFAULT_TOPIC = "shadow.events"


def replica_sampled(request_id: str, share: float) -> bool:
    """Whether a request gets a replica call: a uniform draw from a hash of its id, the same
    in every gateway and every retry, and independent of anything about the request."""
    if not 0.0 <= share <= 1.0:
        raise ValueError(f"replica share must be in [0, 1], got {share}")
    digest = hashlib.blake2b(request_id.encode(), digest_size=8, person=b"replica").digest()
    return int.from_bytes(digest) / 2**64 < share


class Producer(Protocol):
    """The part of `AIOKafkaProducer` the emitter uses (a fake one in unit tests)."""

    async def start(self) -> None: ...

    async def stop(self) -> None: ...

    async def send(self, topic: str, value: bytes, key: bytes) -> asyncio.Future[Any]: ...


class EventSink(Protocol):
    """What integrations (e.g. the LiteLLM callback) need from an emitter."""

    async def emit(self, event: Event) -> None: ...

    def emit_threadsafe(self, event: Event) -> None: ...


class EmitterClosed(RuntimeError):
    """emit() after close() started: the event was not taken."""


@dataclass(frozen=True, slots=True)
class EmitterStats:
    """Counters since start. ``queued + in_flight`` have not settled yet."""

    emitted: int  # taken into the queue
    delivered: int  # acknowledged by the broker
    failed: int  # refused by the broker or the producer after its retries
    dropped: int  # emit_nowait found the queue full
    waited: int  # emit found the queue full and waited for room (backpressure)
    invalid: int  # rejected by validation (the caller got InvalidEvent)
    queued: int
    in_flight: int


class ShadowEmitter:
    """Publishes `Event`s to ``topic`` keyed by request id, batched, with bounded memory."""

    def __init__(
        self,
        bootstrap: str,
        topic: str = DEFAULT_TOPIC,
        *,
        linger_ms: float = 20.0,
        max_batch: int = 500,
        max_queue: int = 10_000,
        validate: bool = True,
        client_id: str = "shadowlens-emitter",
        producer_config: Mapping[str, Any] | None = None,
        producer_factory: Callable[[], Producer] | None = None,
        replica_share: float = 0.0,
    ) -> None:
        if not 0.0 <= replica_share <= 1.0:
            raise ValueError(f"replica_share must be in [0, 1], got {replica_share}")
        if max_batch < 1 or max_queue < 1:
            raise ValueError("max_batch and max_queue must be >= 1")
        if linger_ms < 0:
            raise ValueError(f"linger_ms must be >= 0, got {linger_ms}")
        self.topic = topic
        self.linger_ms = linger_ms
        self.max_batch = max_batch
        self.max_queue = max_queue
        self.validate = validate
        self.replica_share = replica_share
        config: dict[str, Any] = {
            "bootstrap_servers": bootstrap,
            "client_id": client_id,
            "acks": "all",
            "enable_idempotence": True,
            "linger_ms": 0,  # our own batching already waited linger_ms
            "max_batch_size": 256 * 1024,
        }
        config.update(producer_config or {})
        self._factory = producer_factory or (lambda: AIOKafkaProducer(**config))
        self._producer: Producer | None = None
        self._queue: asyncio.Queue[tuple[bytes, bytes]] | None = None
        self._sender: asyncio.Task[None] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._changed: asyncio.Condition | None = None
        self._pending: set[asyncio.Future[Any]] = set()
        self._wake = asyncio.Event()  # cuts a linger short: full batch, flush or close
        self._flush_mark = 0  # events up to this count are sent without lingering
        self._closing = False
        self._putters = 0  # emit() calls waiting for room
        self._emitted = self._sent = self._delivered = 0
        self._failed = self._dropped = self._invalid = self._waited = 0

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None, **kwargs: Any) -> ShadowEmitter:
        """An emitter for the broker, events topic and TLS / SASL of the ``SHADOWLENS_*``
        environment (`env`, default `os.environ`), the worker's own variables; `kwargs` as
        for the constructor (their `producer_config` wins)."""
        security = KafkaSecurity.from_env(env).aiokafka_options()
        config = {**security, **kwargs.pop("producer_config", {})}
        kwargs.setdefault("topic", env_value("TOPIC_EVENTS", DEFAULT_TOPIC, env))
        kwargs.setdefault("replica_share", float(env_value("REPLICA_SHARE", "0", env)))
        return cls(bootstrap_from_env(env), producer_config=config, **kwargs)

    def wants_replica(self, request_id: str) -> bool:
        """Whether the gateway should also send this request to the primary a second time
        and emit that call as the replica arm (`replica_share` of requests)."""
        return replica_sampled(request_id, self.replica_share)

    # ------------------------------------------------------------------ lifecycle

    async def __aenter__(self) -> ShadowEmitter:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def start(self) -> None:
        if self._sender is not None:
            raise RuntimeError("emitter already started")
        self._loop = asyncio.get_running_loop()
        self._queue = asyncio.Queue(self.max_queue)
        self._changed = asyncio.Condition()
        producer = self._factory()
        await producer.start()
        self._producer = producer
        self._sender = asyncio.create_task(self._send_loop(), name="shadowlens-emitter")

    async def close(self) -> EmitterStats:
        """Stop taking events, deliver everything already taken, stop the producer."""
        if self._sender is None or self._closing:
            return self.stats
        self._closing = True
        self._wake.set()
        try:
            await self._wait_for(lambda: self._putters == 0 and self._sent >= self._emitted)
            await self._settle_pending()
        finally:
            self._sender.cancel()
            await asyncio.gather(self._sender, return_exceptions=True)
            assert self._producer is not None
            await self._producer.stop()
        stats = self.stats
        if stats.failed or stats.dropped:
            log.warning("emitter closed: %s", stats)
        return stats

    # ------------------------------------------------------------------ emitting

    async def emit(self, event: Event) -> None:
        """Queue one event; waits for room when the queue is full (backpressure)."""
        item = self._encode(event)
        queue = self._open_queue()
        if not queue.full():
            queue.put_nowait(item)
            self._queued(queue)
            return
        self._putters += 1
        self._waited += 1
        try:
            await queue.put(item)
            self._queued(queue)  # before the putter count drops: close() must see it
        finally:
            self._putters -= 1
            await self._notify()

    def emit_nowait(self, event: Event) -> bool:
        """Queue one event if there is room; False (and ``stats.dropped`` + 1) if not."""
        item = self._encode(event)
        queue = self._open_queue()
        try:
            queue.put_nowait(item)
        except asyncio.QueueFull:
            self._dropped += 1
            return False
        self._queued(queue)
        return True

    def emit_threadsafe(self, event: Event) -> None:
        """`emit_nowait` from another thread; validation errors are logged, drops counted."""
        if self._loop is None:
            raise RuntimeError("emitter not started")

        def put() -> None:
            try:
                self.emit_nowait(event)
            except Exception:
                log.exception("event %s not emitted", event.request_id)

        self._loop.call_soon_threadsafe(put)

    async def flush(self) -> EmitterStats:
        """Wait until every event emitted before this call is acknowledged or failed."""
        if self._sender is None:
            raise RuntimeError("emitter not started")
        mark = self._emitted
        self._flush_mark = max(self._flush_mark, mark)
        self._wake.set()
        await self._wait_for(lambda: self._sent >= mark)
        await self._settle_pending()
        return self.stats

    @property
    def stats(self) -> EmitterStats:
        return EmitterStats(
            emitted=self._emitted,
            delivered=self._delivered,
            failed=self._failed,
            dropped=self._dropped,
            waited=self._waited,
            invalid=self._invalid,
            queued=self._queue.qsize() if self._queue is not None else 0,
            in_flight=len(self._pending),
        )

    # ------------------------------------------------------------------ internals

    def _encode(self, event: Event) -> tuple[bytes, bytes]:
        value = event.to_json()
        if self.validate:
            try:
                decode_event(value)
            except Exception:
                self._invalid += 1
                raise
        return event.request_id.encode(), value

    def _open_queue(self) -> asyncio.Queue[tuple[bytes, bytes]]:
        if self._queue is None or self._sender is None:
            raise RuntimeError("emitter not started: use `async with ShadowEmitter(...)`")
        if self._closing:
            raise EmitterClosed("emitter is closing")
        if self._sender.done():
            raise RuntimeError("emitter's sender task died") from self._sender.exception()
        return self._queue

    async def _send_loop(self) -> None:
        assert self._queue is not None and self._producer is not None
        queue, producer = self._queue, self._producer
        while True:
            batch = [await queue.get()]
            if self._should_linger():
                self._wake.clear()
                if queue.qsize() < self.max_batch - 1:
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(self._wake.wait(), self.linger_ms / 1000.0)
            while len(batch) < self.max_batch and not queue.empty():
                batch.append(queue.get_nowait())
            for key, value in batch:
                try:
                    future = await producer.send(self.topic, value, key=key)
                except asyncio.CancelledError:
                    raise
                except Exception as exc:
                    self._failed += 1
                    log.error("event %s not sent: %r", key.decode(errors="replace"), exc)
                else:
                    self._pending.add(future)
                    future.add_done_callback(self._settled)
                self._sent += 1
            await self._notify()

    def _should_linger(self) -> bool:
        """Wait for a fuller batch unless a flush or close covers the queued events."""
        return self.linger_ms > 0 and not self._closing and self._sent >= self._flush_mark

    def _queued(self, queue: asyncio.Queue[tuple[bytes, bytes]]) -> None:
        self._emitted += 1
        if queue.qsize() >= self.max_batch - 1:
            self._wake.set()  # a full batch is waiting: stop lingering

    def _settled(self, future: asyncio.Future[Any]) -> None:
        self._pending.discard(future)
        if future.cancelled() or future.exception() is not None:
            self._failed += 1
            exc = None if future.cancelled() else future.exception()
            log.error("event not delivered: %r", exc)
        else:
            self._delivered += 1

    async def _settle_pending(self) -> None:
        if self._pending:
            await asyncio.gather(*list(self._pending), return_exceptions=True)

    async def _notify(self) -> None:
        assert self._changed is not None
        async with self._changed:
            self._changed.notify_all()

    async def _wait_for(self, predicate: Callable[[], bool]) -> None:
        assert self._changed is not None and self._sender is not None
        async with self._changed:
            while not predicate():
                if self._sender.done():
                    raise RuntimeError("emitter's sender task died") from (
                        None if self._sender.cancelled() else self._sender.exception()
                    )
                # the sender notifies after every batch; the timeout re-checks a dead sender
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._changed.wait(), 1.0)
