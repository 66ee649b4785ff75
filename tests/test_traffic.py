"""Replay traffic: events built from the shipped real-data sample, and fault injection."""

from __future__ import annotations

import subprocess
import sys
from collections import Counter
from functools import cache
from importlib import resources
from pathlib import Path

import numpy as np
import orjson
import pytest
from shadowlens.replay.datasets import DEFAULT_START_MS, Sample, load_full, load_sample, parse_trace
from shadowlens.replay.faults import (
    Faults,
    apply_faults,
    drop_candidates,
    duplicate_halves,
    inject_error_burst,
    inject_latency,
    interleave,
    malformed_payloads,
    mix_up_answers,
    wire_payloads,
)
from shadowlens.replay.jsonl import load_jsonl_events, write_jsonl
from shadowlens.replay.latency import LatencyModel
from shadowlens.replay.models import (
    CANDIDATE_MODEL,
    MODELS,
    PRIMARY_MODEL,
    REPLICA_OUTPUT_MODEL,
    SAMPLE_MODELS,
    WEAKER_MODEL,
)
from shadowlens.replay.traffic import build_events
from shadowlens.schemas.events import Arm, Event, InvalidEvent, Status, decode_event


@cache
def sample() -> Sample:
    return load_sample()


@cache
def _events(requests: int | None = None, replica_share: float = 0.0, seed: int = 0) -> tuple:
    s = sample()
    return tuple(
        build_events(
            s.instructions, s.arrivals, requests=requests, replica_share=replica_share, seed=seed
        )
    )


def events(requests: int | None = None, replica_share: float = 0.0, seed: int = 0) -> list[Event]:
    return list(_events(requests, replica_share, seed))


def by_arm(evs: list[Event], arm: Arm) -> dict[str, Event]:
    return {e.request_id: e for e in evs if e.arm == arm}


# --------------------------------------------------------------------------- sample files


def test_sample_files_parse_and_carry_the_notice() -> None:
    s = sample()
    assert 250 <= len(s.instructions) <= 320
    segments = Counter(i.segment for i in s.instructions)
    assert set(segments) == {"helpful_base", "koala", "oasst", "selfinstruct", "vicuna"}
    for ins in s.instructions:
        assert ins.instruction
        assert set(ins.outputs) == set(SAMPLE_MODELS)
        assert all(text.strip() for text in ins.outputs.values())
    assert len({i.index for i in s.instructions}) == len(s.instructions)

    assert len(s.arrivals) == 3000
    offsets = [a.offset_ms for a in s.arrivals]
    assert offsets[0] == 0 and offsets == sorted(offsets)
    assert 500_000 < offsets[-1] < 700_000  # ~10 minutes of real traffic, ~5 requests/s
    assert all(a.input_tokens > 0 and a.output_tokens > 0 for a in s.arrivals)
    assert s.trace_start_ms == DEFAULT_START_MS

    data = resources.files("shadowlens.replay").joinpath("data")
    notice = data.joinpath("NOTICE.md").read_text()
    for needle in ("alpaca_eval", "cd543a1", "Apache-2.0", "AzurePublicDataset", "b469a11"):
        assert needle in notice
    assert "CC-BY-4.0" in notice and "Splitwise" in notice
    shipped = [p for p in Path(str(data)).iterdir() if p.is_file()]
    assert sum(p.stat().st_size for p in shipped) < 2_000_000


def test_parse_trace_reads_seven_digit_timestamps() -> None:
    text = (
        "TIMESTAMP,ContextTokens,GeneratedTokens\r\n"
        "2023-11-16 18:15:46.6805900,374,44\r\n"
        "2023-11-16 18:15:50.9951690,396,109\r\n"
    )
    arrivals, t0 = parse_trace(text)
    assert t0 == DEFAULT_START_MS
    assert [(a.offset_ms, a.input_tokens, a.output_tokens) for a in arrivals] == [
        (0, 374, 44),
        (4315, 396, 109),
    ]


# --------------------------------------------------------------------------- building


def test_built_events_validate_against_the_schema() -> None:
    evs = events(requests=600, replica_share=0.2)
    for e in evs:
        assert decode_event(e.to_json()) == e


def test_every_request_has_both_arms_once_and_unique_ids() -> None:
    evs = events(replica_share=0.3)
    per_arm = Counter((e.request_id, e.arm) for e in evs)
    assert set(per_arm.values()) == {1}
    primary, candidate = by_arm(evs, Arm.PRIMARY), by_arm(evs, Arm.CANDIDATE)
    assert set(primary) == set(candidate)
    assert len(primary) == len(sample().arrivals)
    replicas = by_arm(evs, Arm.REPLICA)
    assert set(replicas) <= set(primary)
    assert 0.25 < len(replicas) / len(primary) < 0.35


def test_events_carry_real_data_and_gateway_fields() -> None:
    s = sample()
    evs = events(replica_share=0.5)
    assert [e.completed_ms for e in evs] == sorted(e.completed_ms for e in evs)
    primary, candidate = by_arm(evs, Arm.PRIMARY), by_arm(evs, Arm.CANDIDATE)
    for i in range(len(s.arrivals)):
        rid = f"gpt4-to-llama3-70b-{i:07d}"
        p, c = primary[rid], candidate[rid]
        ins, arrival = s.instructions[i % len(s.instructions)], s.arrivals[i]
        assert p.start_time_ms == c.start_time_ms == DEFAULT_START_MS + arrival.offset_ms
        assert p.input_tokens == c.input_tokens == arrival.input_tokens
        assert p.output_tokens == c.output_tokens == arrival.output_tokens
        assert p.output.text == ins.outputs[PRIMARY_MODEL]
        assert c.output.text == ins.outputs[CANDIDATE_MODEL]
        assert p.segment == c.segment == ins.segment
        assert (p.provider, c.provider) == ("openai", "onprem-vllm")
        assert (p.model, c.model) == (PRIMARY_MODEL, CANDIDATE_MODEL)
        for e in (p, c):
            assert e.status == Status.OK and e.finish_reason == "stop" and e.mode == "shadow"
            assert e.end_time_ms == e.start_time_ms + round(e.latency_ms)
            assert e.ttft_ms is not None and 0 < e.ttft_ms <= e.latency_ms
    for rid, r in by_arm(evs, Arm.REPLICA).items():
        assert r.model == PRIMARY_MODEL and r.provider == "openai"
        assert r.start_time_ms == primary[rid].start_time_ms
        assert (
            r.output.text
            == s.instructions[int(rid[-7:]) % len(s.instructions)].outputs[REPLICA_OUTPUT_MODEL]
        )


def test_build_is_deterministic_and_arms_draw_independent_noise() -> None:
    a, b = events(requests=500), events(requests=500)
    assert [e.to_json() for e in a] == [e.to_json() for e in b]
    with_replica = by_arm(events(requests=500, replica_share=0.5), Arm.PRIMARY)
    assert by_arm(a, Arm.PRIMARY) == with_replica  # adding an arm leaves the primary alone
    other_seed = by_arm(events(requests=500, seed=1), Arm.PRIMARY)
    assert any(other_seed[k].latency_ms != v.latency_ms for k, v in by_arm(a, Arm.PRIMARY).items())


def test_more_requests_than_rows_cycle_the_trace_forward_in_time() -> None:
    s = sample()
    evs = build_events(s.instructions, s.arrivals[:100], requests=250)
    starts = [e.start_time_ms for e in sorted(by_arm(evs, Arm.PRIMARY).values(), key=_rid)]
    assert len(starts) == 250
    assert starts == sorted(starts)
    assert starts[100] > starts[99] and starts[200] > starts[199]
    assert starts[100] - starts[0] == starts[200] - starts[100]  # one period per cycle


def _rid(e: Event) -> str:
    return e.request_id


def test_default_latency_models_make_a_latency_neutral_migration() -> None:
    """Same token counts, candidate p99 within 10 % of the primary's; 1.5x is unmistakable.

    The judge fails a window whose p99 ratio exceeds 1.2: no window of 100 may do so
    without a fault, every window must with the injected 1.5x regression.
    """
    evs = events(requests=6000)
    p = np.array([e.latency_ms for e in sorted(by_arm(evs, Arm.PRIMARY).values(), key=_rid)])
    slow = by_arm(inject_latency(evs, 1.5), Arm.CANDIDATE)
    for factor, cand in ((1.0, by_arm(evs, Arm.CANDIDATE)), (1.5, slow)):
        c = np.array([e.latency_ms for e in sorted(cand.values(), key=_rid)])
        pooled = np.percentile(c, 99) / np.percentile(p, 99)
        windows = np.percentile(c.reshape(-1, 100), 99, axis=1) / np.percentile(
            p.reshape(-1, 100), 99, axis=1
        )
        if factor == 1.0:
            assert 0.9 < pooled < 1.1
            assert windows.max() < 1.2
        else:
            assert 1.35 < pooled < 1.65
            assert windows.min() > 1.2


def test_latency_model_formula() -> None:
    m = LatencyModel(ttft_ms=500, per_output_token_ms=30, per_input_token_ms=0.2, noise_sigma=0)
    assert m.ttft(1000) == 700
    assert m.latency(1000, 100) == 3700
    assert m.latency(1000, 100, noise=2.0) == 7400
    lat, ttft = m.draw(np.array([1000.0]), np.array([100.0]), np.random.default_rng(0))
    assert lat[0] == 3700 and ttft[0] == 700
    assert set(MODELS) >= {PRIMARY_MODEL, CANDIDATE_MODEL, WEAKER_MODEL}
    with pytest.raises(ValueError):
        LatencyModel(ttft_ms=-1, per_output_token_ms=1)


# --------------------------------------------------------------------------- faults


def test_latency_injection_touches_only_candidates_from_the_start_time() -> None:
    evs = events()
    from_ms = DEFAULT_START_MS + 300_000
    out = inject_latency(evs, 1.5, from_ms)
    assert [e.completed_ms for e in out] == sorted(e.completed_ms for e in out)
    before, after = {(e.request_id, e.arm): e for e in evs}, {(e.request_id, e.arm): e for e in out}
    assert before.keys() == after.keys()
    changed = 0
    for key, old in before.items():
        new = after[key]
        if old.arm == Arm.CANDIDATE and old.start_time_ms >= from_ms:
            changed += 1
            assert new.latency_ms == pytest.approx(old.latency_ms * 1.5, abs=1e-3)
            assert new.ttft_ms == pytest.approx(old.ttft_ms * 1.5, abs=1e-3)
            assert new.end_time_ms == new.start_time_ms + round(new.latency_ms)
        else:
            assert new == old
    assert 1000 < changed < 2000
    assert evs == events()  # inputs are never mutated


def test_error_burst_only_in_its_interval_and_without_output() -> None:
    evs = events()
    lo, hi = DEFAULT_START_MS + 120_000, DEFAULT_START_MS + 240_000
    out = inject_error_burst(evs, lo, hi, rate=0.5, seed=3)
    failed = [e for e in out if e.status != Status.OK]
    in_window = [e for e in evs if e.arm == Arm.CANDIDATE and lo <= e.start_time_ms < hi]
    assert all(e.arm == Arm.CANDIDATE and lo <= e.start_time_ms < hi for e in failed)
    assert 0.4 < len(failed) / len(in_window) < 0.6
    for e in failed:
        assert e.output.text is None and e.error_type and e.ttft_ms is None
        assert decode_event(e.to_json()) == e
    kinds = Counter(e.status for e in failed)
    assert kinds[Status.TIMEOUT] > 0 and kinds[Status.ERROR] > kinds[Status.TIMEOUT]
    assert [e.completed_ms for e in out] == sorted(e.completed_ms for e in out)
    assert inject_error_burst(evs, lo, hi, 0.5, seed=3) == out


def test_mixed_up_answers_are_the_models_real_answers_to_other_prompts() -> None:
    s = sample()
    evs = events()
    from_ms = DEFAULT_START_MS + 60_000
    out = mix_up_answers(evs, 0.3, s.instructions, from_ms, seed=1)
    swapped = [
        (old, new) for old, new in zip(evs, out, strict=True) if old.output.text != new.output.text
    ]
    eligible = sum(1 for e in evs if e.arm == Arm.CANDIDATE and e.start_time_ms >= from_ms)
    assert 0.25 < len(swapped) / eligible < 0.35
    place = {ins.prompt_id: i for i, ins in enumerate(s.instructions)}
    for old, new in swapped:
        assert old.arm == Arm.CANDIDATE and old.start_time_ms >= from_ms
        other = s.instructions[(place[old.attributes["prompt_id"]] + 1) % len(s.instructions)]
        assert new.output.text == other.outputs[old.model]
        assert new.latency_ms == old.latency_ms


def test_drop_share_is_about_right_and_seeded() -> None:
    evs = events()
    n_cand = sum(e.arm == Arm.CANDIDATE for e in evs)
    out = drop_candidates(evs, 0.2, seed=5)
    dropped = len(evs) - len(out)
    assert abs(dropped - 0.2 * n_cand) < 4 * (n_cand * 0.2 * 0.8) ** 0.5
    assert sum(e.arm == Arm.PRIMARY for e in out) == sum(e.arm == Arm.PRIMARY for e in evs)
    assert drop_candidates(evs, 0.2, seed=5) == out
    assert drop_candidates(evs, 0.2, seed=6) != out
    assert drop_candidates(evs, 0.0, seed=5) == evs


def test_duplicates_are_the_same_bytes_a_bit_later() -> None:
    evs = events(requests=1000)
    out = duplicate_halves(evs, 0.1, seed=2)
    raw = [e.to_json() for e in out]
    counts = Counter(raw)
    dups = [r for r, c in counts.items() if c > 1]
    assert set(counts.values()) <= {1, 2}
    assert 0.06 < len(dups) / len(evs) < 0.14
    for r in dups:
        first = raw.index(r)
        assert raw.index(r, first + 1) > first
    originals = [e for i, e in enumerate(out) if raw.index(raw[i]) == i]
    assert originals == evs


def test_malformed_payloads_are_dead_lettered_with_the_expected_reason() -> None:
    payloads = malformed_payloads(seed=4)
    reasons = Counter(reason for _, reason in payloads)
    assert set(reasons) == {
        "invalid_json",
        "schema_violation",
        "unsupported_schema_version",
        "too_large",
    }
    for raw, expected in payloads:
        with pytest.raises(InvalidEvent) as exc:
            decode_event(raw)
        assert exc.value.reason == expected, (raw[:120], exc.value.detail)
    huge = next(raw for raw, reason in payloads if reason == "too_large")
    assert len(huge) > 10_000_000
    assert b"NaN" in next(raw for raw, _ in payloads if b"NaN" in raw)
    assert malformed_payloads(seed=4) == payloads
    small = malformed_payloads(seed=4, too_large_bytes=2_000_000)
    assert all(len(raw) < 3_000_000 for raw, _ in small)


def test_interleave_keeps_the_order_of_the_events() -> None:
    raw = [e.to_json() for e in events(requests=50)]
    extra = [b"x1", b"x2", b"x3"]
    out = interleave(raw, extra, seed=1)
    assert len(out) == len(raw) + len(extra)
    assert [r for r in out if r not in extra] == raw
    assert [r for r in out if r in extra] == extra
    assert interleave(raw, extra, seed=1) == out


def test_apply_faults_composes_in_a_fixed_order() -> None:
    s = sample()
    evs = events()
    assert apply_faults(evs, Faults(), s.instructions) == evs
    assert Faults().none and not Faults(drop_share=0.1).none
    faults = Faults(
        latency_factor=1.5,
        latency_after_ms=60_000,
        error_rate=0.2,
        error_after_ms=120_000,
        error_for_ms=60_000,
        degrade_share=0.2,
        drop_share=0.05,
        duplicate_share=0.02,
    )
    out = apply_faults(evs, faults, s.instructions, seed=9)
    assert out == apply_faults(evs, faults, s.instructions, seed=9)
    assert any(e.status == Status.ERROR for e in out)
    assert len({(e.request_id, e.arm) for e in out}) < len(evs)  # drops
    assert len(out) > len({(e.request_id, e.arm) for e in out})  # duplicates
    for e in out:
        assert decode_event(e.to_json()) == e
    with pytest.raises(ValueError):
        Faults(drop_share=1.5)


def test_jsonl_round_trip_with_source_tags(tmp_path: Path) -> None:
    evs = events(requests=20)
    bad = [raw for raw, reason in malformed_payloads(seed=1) if reason != "too_large"]
    wire = interleave([e.to_json() for e in evs], bad, seed=0)
    path = tmp_path / "replay.jsonl"
    assert write_jsonl(path, wire) == len(wire)
    lines = list(load_jsonl_events(path))
    assert [raw for raw, _ in lines if raw] == [w for w in wire if w.strip()]
    assert lines[0][1] == f"{path}:1"
    decoded, rejected = [], []
    for raw, source in lines:
        try:
            decoded.append(decode_event(raw))
        except InvalidEvent:
            rejected.append(source)
    assert decoded == evs
    assert len(rejected) == sum(1 for b in bad if b.strip())  # b"" becomes a skipped blank line
    assert write_jsonl(tmp_path / "events.jsonl", evs) == len(evs)
    assert orjson.loads(next(load_jsonl_events(tmp_path / "events.jsonl"))[0]) == evs[0].to_dict()
    with pytest.raises(ValueError):
        write_jsonl(tmp_path / "bad.jsonl", [b'{"a":\n1}'])


def test_wire_payloads_add_malformed_only_when_asked() -> None:
    evs = events(requests=30)
    assert wire_payloads(evs, Faults()) == [e.to_json() for e in evs]
    mixed = wire_payloads(evs, Faults(malformed=True), seed=3)
    assert len(mixed) == len(evs) + len(malformed_payloads(3))


# --------------------------------------------------------------------------- full data

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
needs_shared_data = pytest.mark.skipif(
    not (SHARED_DATA / "alpaca_eval").is_dir(), reason="../shared/data is not present"
)


@needs_shared_data
def test_load_full_reads_all_instructions_and_the_whole_trace() -> None:
    full = load_full(SHARED_DATA)
    assert len(full.instructions) == 805
    assert len(full.arrivals) == 19_366
    assert full.trace_start_ms == DEFAULT_START_MS
    shipped = {i.index: i for i in sample().instructions}
    for ins in full.instructions:
        if ins.index in shipped:
            assert ins == shipped[ins.index]  # the shipped sample is an unchanged subset
    assert full.arrivals[:3000] == sample().arrivals


@needs_shared_data
def test_make_sample_script_writes_a_loadable_sample(tmp_path: Path) -> None:
    script = Path(__file__).resolve().parents[1] / "scripts" / "make_sample.py"
    args = ["--data-dir", str(SHARED_DATA), "--out-dir", str(tmp_path), "--per-segment", "3"]
    subprocess.run([sys.executable, str(script), *args, "--trace-rows", "50"], check=True)
    small = load_sample(tmp_path)
    assert len(small.instructions) == 15 and len(small.arrivals) == 50
    assert "CC-BY-4.0" in (tmp_path / "NOTICE.md").read_text()
