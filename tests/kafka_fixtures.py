"""Pytest fixtures for tests that talk to the real Kafka broker started by ``scripts/test.sh``.

Import them from ``tests/conftest.py``::

    from tests.kafka_fixtures import kafka_bootstrap, topic_factory  # noqa: F401

``kafka_bootstrap`` fails (never skips) when ``SHADOWLENS_KAFKA_BOOTSTRAP`` is unset, so a
Kafka test can't silently pass without a broker. No pytest-asyncio here: the fixtures drive
aiokafka with ``asyncio.run``.
"""

from __future__ import annotations

import asyncio
import os
import re
import time
import uuid
import warnings
from collections.abc import Iterator, Mapping

import pytest
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import for_code

BOOTSTRAP_ENV = "SHADOWLENS_KAFKA_BOOTSTRAP"

_UNKNOWN_TOPIC_OR_PARTITION = 3
_TOPIC_READY_TIMEOUT_S = 30.0


def _admin(bootstrap: str) -> AIOKafkaAdminClient:
    return AIOKafkaAdminClient(
        bootstrap_servers=bootstrap,
        client_id="shadowlens-tests-admin",
        request_timeout_ms=30_000,
    )


def _raise_for_errors(what: str, results: list[tuple[str, int, str | None]]) -> None:
    errors = [(topic, code, msg) for topic, code, msg in results if code != 0]
    if errors:
        details = "; ".join(
            f"{topic}: {for_code(code).__name__} ({code}) {msg or ''}".strip()
            for topic, code, msg in errors
        )
        raise RuntimeError(f"{what} failed: {details}")


async def _create_topics(
    bootstrap: str, names: list[str], partitions: int, configs: Mapping[str, str] | None
) -> None:
    admin = _admin(bootstrap)
    await admin.start()
    try:
        new = [NewTopic(name, partitions, 1, topic_configs=dict(configs or {})) for name in names]
        response = await admin.create_topics(new, timeout_ms=30_000)
        _raise_for_errors(
            f"creating topics {names}",
            [(t[0], t[1], t[2] if len(t) > 2 else None) for t in response.topic_errors],
        )
        # CreateTopics returns once the controller committed the topic; wait until the broker's
        # metadata shows every partition with a leader so the test can produce right away.
        deadline = time.monotonic() + _TOPIC_READY_TIMEOUT_S
        while True:
            described = await admin.describe_topics(names)
            ready = all(
                t["error_code"] == 0
                and len(t["partitions"]) == partitions
                and all(p["leader"] >= 0 for p in t["partitions"])
                for t in described
            )
            if ready:
                return
            if time.monotonic() > deadline:
                raise RuntimeError(f"topics {names} have no leaders after creation: {described}")
            await asyncio.sleep(0.05)
    finally:
        await admin.close()


async def _delete_topics(bootstrap: str, names: list[str]) -> None:
    admin = _admin(bootstrap)
    await admin.start()
    try:
        response = await admin.delete_topics(names, timeout_ms=30_000)
        _raise_for_errors(
            f"deleting topics {names}",
            [
                (topic, code, None)
                for topic, code in response.topic_error_codes
                if code != _UNKNOWN_TOPIC_OR_PARTITION  # already gone is fine
            ],
        )
    finally:
        await admin.close()


class TopicFactory:
    """Creates fresh, uniquely named topics; everything it created is deleted at teardown.

    ``topic_factory()`` -> one 4-partition topic name;
    ``topic_factory(partitions=8, configs={"cleanup.policy": "compact"})`` -> one topic name;
    ``topic_factory.many(3, partitions=2)`` -> list of three topic names.
    """

    def __init__(self, bootstrap: str, test_name: str) -> None:
        self.bootstrap = bootstrap
        self._stem = re.sub(r"[^A-Za-z0-9._-]+", "-", test_name).strip("-.")[:120] or "test"
        self.created: list[str] = []

    def _name(self, prefix: str) -> str:
        return f"{prefix}-{self._stem}-{uuid.uuid4().hex[:10]}"

    def many(
        self,
        count: int,
        partitions: int = 4,
        *,
        prefix: str = "sl",
        configs: Mapping[str, str] | None = None,
    ) -> list[str]:
        if count < 1 or partitions < 1:
            raise ValueError("count and partitions must be >= 1")
        names = [self._name(prefix) for _ in range(count)]
        # Record first: a half-successful create is still cleaned up.
        self.created.extend(names)
        asyncio.run(_create_topics(self.bootstrap, names, partitions, configs))
        return names

    def __call__(
        self,
        partitions: int = 4,
        *,
        prefix: str = "sl",
        configs: Mapping[str, str] | None = None,
    ) -> str:
        return self.many(1, partitions, prefix=prefix, configs=configs)[0]

    def cleanup(self) -> None:
        if not self.created:
            return
        names, self.created = self.created, []
        try:
            asyncio.run(_delete_topics(self.bootstrap, names))
        except Exception as exc:  # teardown must not mask the test's own result
            warnings.warn(f"could not delete test topics {names}: {exc!r}", stacklevel=1)


@pytest.fixture(scope="session")
def kafka_bootstrap() -> str:
    """``host:port`` of the test broker, from ``SHADOWLENS_KAFKA_BOOTSTRAP``."""
    bootstrap = os.environ.get(BOOTSTRAP_ENV, "").strip()
    if not bootstrap:
        pytest.fail(
            f"{BOOTSTRAP_ENV} is not set: Kafka tests need the broker that scripts/test.sh "
            "starts. Run the suite with `scripts/test.sh` (e.g. `scripts/test.sh "
            "tests/test_kafka_broker.py`), or start one with `scripts/kafka.sh start` and "
            f"export {BOOTSTRAP_ENV}=<the printed KAFKA_BOOTSTRAP>.",
            pytrace=False,
        )
    return bootstrap


@pytest.fixture
def topic_factory(kafka_bootstrap: str, request: pytest.FixtureRequest) -> Iterator[TopicFactory]:
    """Factory for fresh topics (default 4 partitions), deleted after the test."""
    factory = TopicFactory(kafka_bootstrap, request.node.name)
    try:
        yield factory
    finally:
        factory.cleanup()
