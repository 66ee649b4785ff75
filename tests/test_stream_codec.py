"""The worker's pure parts, without a broker: state codecs, wire records, task state, settings."""

from __future__ import annotations

import copy
import hashlib
from collections import Counter
from dataclasses import replace
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import orjson
import pytest
from shadowlens.comparators.aggregate import PairedCounts
from shadowlens.comparators.pairs import Outcome
from shadowlens.job.pipeline import Pipeline
from shadowlens.job.sinks import MemorySink
from shadowlens.judge.policy import load_policy
from shadowlens.pipeline.pairing import Pairer
from shadowlens.pipeline.windows import TumblingWindows, WindowState
from shadowlens.replay.datasets import load_sample
from shadowlens.replay.faults import Faults, wire_payloads
from shadowlens.replay.traffic import build_events
from shadowlens.schemas.events import DeadLetter, InvalidEvent, decode_event
from shadowlens.streams.codec import (
    CodecError,
    decode_pending,
    decode_state,
    encode_pending,
    encode_state,
)
from shadowlens.streams.config import Settings, SettingsError, redact_dsn
from shadowlens.streams.judging_stage import str_window_key, window_key_str
from shadowlens.streams.task_state import Positions, TaskState
from shadowlens.streams.wire import (
    DLQ_KEEP_BYTES,
    Watermark,
    dead_letter_record,
    decode_pairs,
    encode_pairs,
    pairing_partition,
    read_dead_letter,
)


@pytest.fixture(scope="module")
def replayed() -> Pipeline:
    """A small real replay through the plain pipeline: scores, windows, judge state."""
    sample = load_sample()
    events = build_events(sample.instructions, sample.arrivals, requests=600)
    pipeline = Pipeline(load_policy(), MemorySink())
    for raw in wire_payloads(events, Faults()):
        pipeline.feed(raw)
    pipeline.finish()
    return pipeline


def test_pending_round_trips_open_and_closed_requests() -> None:
    sample = load_sample()
    events = build_events(sample.instructions, sample.arrivals, requests=40)
    pairer = Pairer({})
    for event in events[:50]:
        pairer.add(event)
    assert pairer.state
    for pending in pairer.state.values():
        back = decode_pending(encode_pending(pending))
        assert back == pending
        closed = pending.close()
        assert decode_pending(encode_pending(closed)) == closed


def test_window_state_round_trip_keeps_working_aggregates(replayed: Pipeline) -> None:
    policy = load_policy()
    scores = replayed.sink.scores  # type: ignore[attr-defined]
    windows = TumblingWindows(policy.windows.size_ms, policy.windows.grace_ms)
    for score in scores[:300]:
        windows.add(score, 0)
    for key, state in windows.state.items():
        back = decode_state(encode_state(state))
        assert back.late_pairs == state.late_pairs
        a, b = state.aggregate, back.aggregate
        assert a.n_paired == b.n_paired and a.quality_seq == b.quality_seq
        for arm in ("primary", "candidate"):
            for q in (0.5, 0.99):
                assert a.latency_quantile(arm, q) == b.latency_quantile(arm, q)
        # the restored state keeps accumulating exactly like the original
        original = copy.deepcopy(state)
        for score in scores[300:400]:
            original.aggregate.add(score)
            back.aggregate.add(score)
        assert encode_state(original) == encode_state(back), key


def test_window_signals_round_trip(replayed: Pipeline) -> None:
    """Refusal/truncation tables, signal counts, example ids and the refusal sequences are
    in the changelogged window state; an older value without them decodes to zeros."""
    scores = [
        replace(
            s,
            primary_refusal=i % 3 == 0,
            candidate_refusal=i % 2 == 0,
            primary_truncated=False,
            candidate_truncated=i % 5 == 0,
            number_mismatch=0.25,
            label_flip="yes->no",
        )
        for i, s in enumerate(replayed.sink.scores[:50])  # type: ignore[attr-defined]
    ]
    state = WindowState()
    for score in scores:
        state.aggregate.add(score)
    back = decode_state(encode_state(state))
    a, b = state.aggregate, back.aggregate
    assert b.refusals == a.refusals and b.refusals.only_candidate > 0
    assert b.truncations == a.truncations and b.truncations.only_candidate > 0
    assert b.signal_ids == a.signal_ids and b.examples("refusal")
    assert (b.number_mismatches, b.label_flips) == (a.number_mismatches, a.label_flips) != (0, 0)
    assert b.candidate_refused_seq == a.candidate_refused_seq
    assert (b.quality_measured, b.quality_unsampled) == (a.quality_measured, a.quality_unsampled)
    assert encode_state(back) == encode_state(state)
    doc = orjson.loads(encode_state(state))
    for name in ("refusals", "truncations", "signal_ids", "label_flips", "candidate_refused_seq"):
        del doc["aggregate"][name]
    old = decode_state(orjson.dumps(doc)).aggregate
    assert old.refusals == PairedCounts() and old.signal_ids == {} and old.label_flips == 0
    assert old.n_paired == a.n_paired


def test_experiment_state_round_trip_decides_like_the_original(replayed: Pipeline) -> None:
    assert replayed.experiments
    for state in replayed.experiments.values():
        back = decode_state(encode_state(state))
        assert encode_state(back) == encode_state(state)
        assert back.ramp == state.ramp


def test_codec_refuses_unknown_types() -> None:
    with pytest.raises(CodecError):
        encode_state(Watermark(0, 1, 2))
    with pytest.raises(CodecError):
        decode_state(orjson.dumps({"__": "os.system", "x": 1}))


def test_pairs_records_round_trip_in_chunks(replayed: Pipeline) -> None:
    scores = replayed.sink.scores[:200]  # type: ignore[attr-defined]
    records = encode_pairs(scores, limit=64 * 1024)
    assert len(records) > 1
    assert all(len(r) < 64 * 1024 + 20_000 for r in records)
    back = [s for record in records for s in decode_pairs(record)]
    assert back == scores
    assert all(isinstance(s.outcome, Outcome) for s in back)


def test_pairs_records_of_another_version_decode_by_name(replayed: Pipeline) -> None:
    """A newer writer's extra field is ignored and an older writer's missing optional field
    takes its default (the fast positional path covers only this version's exact fields)."""
    score = next(s for s in replayed.sink.scores if s.json_missing == ())  # type: ignore[attr-defined]
    doc = orjson.loads(encode_pairs([score])[0])[0]
    doc["added_by_a_newer_writer"] = 1.5
    del doc["json_missing"]
    (back,) = decode_pairs(orjson.dumps([doc]))
    assert back == score and isinstance(back.outcome, Outcome)


def test_dead_letter_record_keeps_bytes_and_reason() -> None:
    raw = b'{"schema_version": 1, "request_id": "r-1", "arm": 7}'
    with pytest.raises(InvalidEvent) as info:
        decode_event(raw)
    letter = DeadLetter.of(info.value, raw, 1234, "shadow.events/3/99")
    value, headers = dead_letter_record(letter)
    assert value == raw
    assert read_dead_letter(value, headers) == letter

    huge = DeadLetter("too_large", "big", b"x" * (DLQ_KEEP_BYTES + 10), 1, None, "s")
    value, headers = dead_letter_record(huge)
    h = dict(headers)
    assert len(value) == DLQ_KEEP_BYTES
    assert h["shadowlens-original-bytes"] == str(DLQ_KEEP_BYTES + 10).encode()
    assert h["shadowlens-sha256"] == hashlib.sha256(huge.raw).hexdigest().encode()


def test_pairing_partition_is_the_default_partitioner() -> None:
    # Values of the Java client's murmur2-based DefaultPartitioner for these keys.
    from aiokafka.partitioner import DefaultPartitioner

    for key in ("req-1", "gpt4-to-llama3-70b-0000042", "é-ü"):
        expected = DefaultPartitioner()(key.encode(), list(range(12)), list(range(12)))
        assert pairing_partition(key, 12) == expected


class FakeTable:
    """What TaskState needs of a TaskTable."""

    changelog_topic_name = "app-t-changelog"

    def __init__(self, data: dict[bytes, bytes]) -> None:
        self.data = data

    def partition_keys(self, partition: int) -> list[bytes]:
        return [k for k in self.data if k.startswith(f"{partition}|".encode())]


def test_task_state_coalesces_changes_and_rebuilds_from_the_table() -> None:
    table = FakeTable({b"1|a": b"1", b"1|b": b"2", b"2|a": b"9"})
    state: TaskState[str, int] = TaskState(table, 1, lambda v: str(v).encode(), int)  # type: ignore[arg-type]
    assert dict(state) == {"a": 1, "b": 2}
    for i in range(100):
        state["a"] = i
    state["c"] = 5
    del state["b"]
    state["d"] = 1
    del state["d"]
    records = dict(state.changes())
    assert records == {b"1|a": b"99", b"1|c": b"5", b"1|b": None, b"1|d": None}
    assert state.changes() == []


def test_delayed_deletes_go_out_with_the_next_batch() -> None:
    table = FakeTable({b"1|a": b"1", b"1|b": b"2"})
    state: TaskState[str, int] = TaskState(
        table,  # type: ignore[arg-type]
        1,
        lambda v: str(v).encode(),
        int,
        delay_deletes=True,
    )
    del state["a"]
    state["c"] = 3
    assert dict(state.changes()) == {b"1|c": b"3"}, "the deletion waits one batch"
    del state["b"]
    assert dict(state.changes()) == {b"1|a": None}
    state["b"] = 5  # back before its deletion went out: that deletion is dropped
    assert dict(state.changes()) == {b"1|b": b"5"}
    assert state.changes() == [] and dict(state) == {"b": 5, "c": 3}


def test_replaying_the_batch_in_flight_at_a_crash_reopens_no_request() -> None:
    """at_least_once: after a crash between a batch's state records and the offsets that
    say the state holds it, the batch is read again over a state that holds it. A request
    it closed and forgot must still be there, closed: else its replayed half opens it again
    and it ends as an orphan, whose row replaces the pair's (issue 14)."""
    sample = load_sample()
    events = build_events(sample.instructions, sample.arrivals, requests=1)
    halves = {str(e.arm): e for e in events}
    primary, candidate = halves["primary"], halves["candidate"]
    table = FakeTable({})

    def pairing() -> tuple[Pairer, TaskState[str, Any]]:
        state: TaskState[str, Any] = TaskState(
            table,  # type: ignore[arg-type]
            0,
            encode_pending,
            decode_pending,
            delay_deletes=True,
        )
        return Pairer(state), state

    crashed, state = pairing()
    crashed.add(primary)
    table.data.update(state.changes())  # a batch, its offsets too
    assert crashed.add(candidate).pairs
    far = 10**15  # the watermark passes its deadline and retention: closed, then forgotten
    crashed.sweep(far)
    crashed.sweep(far)
    assert candidate.request_id not in state
    table.data.update(state.changes())  # the batch's state; the crash comes before its offsets
    restarted, _ = pairing()
    again = restarted.add(candidate).pairs  # outputs may repeat under at_least_once
    assert again in ((), ((primary, candidate),))
    assert restarted.flush().orphans == ()


def test_window_keys_survive_separators_in_names() -> None:
    from shadowlens.pipeline.windows import WindowKey

    key = WindowKey("exp|with|bars", "seg ment", "candidate", 1_700_000_000_000)
    assert str_window_key(window_key_str(key)) == key


def test_settings_from_env_and_secrets() -> None:
    env = {
        "SHADOWLENS_KAFKA_BOOTSTRAP": "127.0.0.1:1234",
        "SHADOWLENS_DSN": "http://analyst:s3cret@ch.internal:8123",
        "SHADOWLENS_PAIRS_PARTITIONS": "2",
        "SHADOWLENS_PROCESSING_GUARANTEE": "EXACTLY_ONCE",
        "SHADOWLENS_POLICY": "/etc/policy.toml",
    }
    s = Settings.from_env(env, app_id="x")
    assert s.kafka_bootstrap == "127.0.0.1:1234" and s.pairs_partitions == 2
    assert s.exactly_once and s.app_id == "x" and s.policy == Path("/etc/policy.toml")
    assert "s3cret" not in repr(s.describe())
    assert redact_dsn("chdb:///tmp/x") == "chdb:///tmp/x"
    with pytest.raises(SettingsError):
        Settings.from_env({"SHADOWLENS_PAIRS_PARTITIONS": "zero"})
    with pytest.raises(SettingsError):
        Settings.from_env({"SHADOWLENS_PROCESSING_GUARANTEE": "maybe_once"})
    with pytest.raises(SettingsError):
        Settings.from_env({"SHADOWLENS_TOPIC_PAIRS": "shadow.events"})
    assert Settings.from_env({"SHADOWLENS_REDACT": "true"}).redact
    assert not Settings.from_env({"SHADOWLENS_REDACT": "0"}).redact
    with pytest.raises(SettingsError):
        Settings.from_env({"SHADOWLENS_REDACT": "maybe"})


def _pairing_task(  # type: ignore[no-untyped-def]
    partitions: int = 3,
    partition: int = 0,
    meta: dict[bytes, bytes] | None = None,
    positions: Positions | None = None,
):
    from shadowlens.streams.pairing_stage import PairingTask

    policy = load_policy()
    stage = SimpleNamespace(
        settings=Settings(),
        policy=policy,
        partitions=partitions,
        pending=FakeTable({}),
        meta=FakeTable(meta or {}),
        positions=positions or Positions(Counter()),
        semantic=None,  # the model's stage is off here, as in a worker without [semantic]
        counts=Counter(),
    )
    return PairingTask(stage, partition)  # type: ignore[arg-type]


def test_a_rebuilt_pairing_task_skips_the_input_its_state_holds() -> None:
    """The input offsets are stored with the state they produced, and a task rebuilt from
    its changelog skips what it holds: at_least_once commits trail the state, and a half
    applied twice reopened a request the state had closed and forgotten (issue 14)."""
    s = Settings()

    def record(topic: str, offset: int) -> SimpleNamespace:
        return SimpleNamespace(topic=topic, partition=1, offset=offset)

    counts: Counter[str] = Counter()
    crashed = Positions(counts)
    for topic, offset in ((s.topic_events, 4), (s.topic_repartition, 7), (s.topic_events, 9)):
        assert crashed.fresh(record(topic, offset))
    task = _pairing_task(partition=1, positions=crashed)
    task.remember(crashed)
    changelog = dict(task.meta.changes())
    restarted = Positions(counts)
    _pairing_task(partition=1, meta=changelog, positions=restarted)
    assert [restarted.fresh(record(s.topic_events, o)) for o in (8, 9, 10)] == [0, 0, 1]
    assert [restarted.fresh(record(s.topic_repartition, o)) for o in (7, 8)] == [0, 1]
    assert counts["redelivered"] == 3


def test_pairing_watermark_is_the_minimum_over_every_events_partition() -> None:
    from shadowlens.streams.wire import END_MS

    task = _pairing_task()
    pp = load_policy().pairing
    trail = pp.lateness_ms + pp.max_skew_ms
    sample = load_sample()
    first, second = build_events(sample.instructions, sample.arrivals, requests=1)[:2]
    for e in (first, second):  # the first event of a stream waits for a second to agree
        task.progress.admit(e, (b"", None, ""))
    own = max(first.completed_ms, second.completed_ms) - trail
    assert task.events_wm == own
    assert task.watermark_ms() == 0, "the other partitions have not reported yet"
    task.forward = {1: own - 50_000, 2: own - 20_000}
    assert task.watermark_ms() == own - 50_000
    task.forward = {1: own + 100_000, 2: own + 200_000}
    assert task.watermark_ms() == own, "now its own partition is the slowest"

    # a half a day ahead moves nothing: held, then dead-lettered when the stream goes on
    def shifted(rid: str, ms: int):  # type: ignore[no-untyped-def]
        start, end = second.start_time_ms + ms, (second.end_time_ms or 0) + ms
        return replace(second, request_id=rid, start_time_ms=start, end_time_ms=end)

    assert task.progress.admit(shifted("ahead", 86_400_000), (b"", None, "")).accepted == ()
    later = shifted("later", 1)
    (letter,) = task.progress.admit(later, (b"", None, "")).rejected
    assert letter.event.request_id == "ahead" and letter.reason == "future_timestamp"
    assert task.watermark_ms() == own + 1

    # end of input: own marker plus every forwarder's end
    assert not task.inputs_ended()
    task.events_done = True
    task.forward = {1: END_MS, 2: 90_000}
    assert not task.inputs_ended()
    task.forward[2] = END_MS
    assert task.inputs_ended() and task.forward_progress() == END_MS


def test_a_silent_partition_follows_the_others_event_time() -> None:
    task = _pairing_task()
    task.progress.newest_ms = 200_000
    own = task.events_wm
    task.forward = {1: 500_000, 2: 400_000}
    task.follow_if_idle(60.0)
    assert task.events_wm == own, "not silent long enough"
    task.input_at -= 61
    task.follow_if_idle(60.0)
    assert task.events_wm == 500_000
    task.follow_if_idle(0)  # 0 disables; nothing changes
    assert task.events_wm == 500_000
    task.progress.newest_ms = 900_000  # its own events again: its own progress
    assert task.events_wm == task.progress.watermark_ms > 500_000


def test_the_app_defers_resuming_partitions_until_recovery_has_seeked() -> None:
    """Recovery sends on_rebalance_complete right before it resumes and seeks the source
    partitions; the consumer must hear it (see streams/transactions.py, point 5)."""
    import asyncio

    from shadowlens.streams.transactions import ShadowApp

    app = ShadowApp("defer-test", broker="kafka://127.0.0.1:1")
    consumer = SimpleNamespace(defer_resume=False)
    app._consumer = consumer  # type: ignore[assignment]
    asyncio.run(app.on_rebalance_complete.send())
    assert consumer.defer_resume is True
