"""Fuzzing the decoder and validator: nothing crashes, every bad event gets a reason,
every good event goes through (pytest -m reliability)."""

from __future__ import annotations

from collections import Counter

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from shadowlens.job.pipeline import Pipeline
from shadowlens.job.sinks import MemorySink
from shadowlens.judge.policy import load_policy
from shadowlens.schemas.events import (
    DEFAULT_MAX_EVENT_BYTES,
    DeadLetterReason,
    InvalidEvent,
    decode_event,
)

from tests.builders import event

pytestmark = pytest.mark.reliability
FUZZ_EXAMPLES = 10_000
REASONS = {"invalid_json", "schema_violation", "unsupported_schema_version", "too_large"}
# a valid event dated too far ahead, or calling longer than max_call_ms (pipeline.progress)
TIME_REASONS = {DeadLetterReason.FUTURE_TIMESTAMP, DeadLetterReason.CALL_TOO_LONG}
VALID = event().to_dict()

scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=50),
)
json_values = st.recursive(
    scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=5), st.dictionaries(st.text(max_size=10), inner, max_size=5)
    ),
    max_leaves=30,
)


def _mutate(field: str, value: object) -> bytes:
    doc = dict(VALID)
    doc[field] = value
    try:
        return orjson.dumps(doc)
    except TypeError:  # e.g. integers beyond 64 bits: send them as text
        return orjson.dumps({**doc, field: str(value)})


def _deep(depth: int) -> bytes:
    return b'{"output": {"json": ' + b"[" * depth + b"]" * depth + b"}}"


raw_events = st.one_of(
    st.binary(max_size=300),  # arbitrary bytes, invalid UTF-8 included
    st.builds(_mutate, st.sampled_from(sorted(VALID)), json_values),  # wrong types anywhere
    st.builds(lambda v: _mutate("latency_ms", v), st.floats(max_value=-1e-9)),  # negative
    st.builds(lambda v: _mutate("start_time_ms", v), st.integers(min_value=32503680000001)),
    st.builds(
        lambda skew: orjson.dumps({**VALID, "end_time_ms": VALID["start_time_ms"] - skew}),
        st.integers(min_value=1, max_value=10**9),
    ),  # clock skew: ends before it starts
    st.builds(_deep, st.integers(min_value=1, max_value=3_000)),  # deep nesting
    st.sampled_from(
        [b'{"latency_ms": NaN}', b'{"latency_ms": Infinity}', b"-Infinity", b"\xff\xfe{}"]
    ),
    st.builds(lambda v: _mutate("schema_version", v), st.integers(min_value=2)),
    st.builds(
        lambda n: orjson.dumps({**VALID, "output": {"text": "x" * n}}),
        st.sampled_from([DEFAULT_MAX_EVENT_BYTES + 1, 3 * DEFAULT_MAX_EVENT_BYTES]),
    ),  # huge payloads
    st.builds(lambda e: e.to_json(), st.builds(event, st.text(min_size=1, max_size=20))),
)


@settings(
    max_examples=FUZZ_EXAMPLES,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(raw=raw_events)
def test_decoder_never_crashes_and_always_gives_a_reason(raw: bytes) -> None:
    try:
        decoded = decode_event(raw)
    except InvalidEvent as exc:
        assert exc.reason in REASONS and exc.detail
        return
    assert decode_event(decoded.to_json()) == decoded  # what passes is a real event


def test_pipeline_dead_letters_every_bad_event_and_keeps_every_good_one() -> None:
    examples: list[bytes] = []

    @settings(
        max_examples=2_000,
        deadline=None,
        database=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    )
    @given(raw=raw_events)
    def collect(raw: bytes) -> None:
        examples.append(raw)

    collect()
    good = [event(f"r{i}", arm, start=1_000 * i).to_json() for i in range(200)
            for arm in ("primary", "candidate")]  # fmt: skip
    sink = MemorySink()
    pipeline = Pipeline(load_policy(), sink)
    for i, raw in enumerate(examples + good):
        pipeline.feed(raw, f"fuzz:{i}")
    pipeline.finish()
    bad = Counter(letter.reason for letter in sink.letters)
    assert set(bad) <= REASONS | TIME_REASONS and sum(bad.values()) == len(sink.letters)
    assert pipeline.counts["events"] == len(examples) + len(good)
    paired = {s.request_id for s in sink.scores if s.outcome == "paired"}
    assert {f"r{i}" for i in range(200)} <= paired
    print(f"fuzzed {len(examples)} raw events: {dict(bad)} dead-lettered, 200 good pairs kept")
