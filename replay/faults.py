"""The faults a migration can hit, injected into built traffic with known ground truth.

Each fault is a small pure function over the event list, so a test or the CLI composes
exactly the incident it wants (`Faults`, `apply_faults`) and knows which events it
touched: latency regressions, error bursts and timeouts, silent quality drops, lost and
duplicated events, and malformed payloads a buggy gateway could publish.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, replace

import numpy as np
import orjson
from shadowlens.replay.datasets import DEFAULT_START_MS, Instruction
from shadowlens.replay.models import CANDIDATE_MODEL, DEFAULT_EXPERIMENT, MODELS
from shadowlens.replay.traffic import arm_rng, publish_order
from shadowlens.schemas.events import SUPPORTED_SCHEMA_VERSION, Arm, Event, Output, Status

GATEWAY_TIMEOUT_MS = 20_000  # below the pairing timeout, so a timed-out half still pairs


def _scaled(e: Event, factor: float) -> Event:
    lat = round(e.latency_ms * factor, 3)
    ttft = None if e.ttft_ms is None else round(e.ttft_ms * factor, 3)
    return replace(e, latency_ms=lat, ttft_ms=ttft, end_time_ms=e.start_time_ms + round(lat))


def inject_latency(
    events: Sequence[Event], factor: float, from_ms: int = 0, *, arm: Arm = Arm.CANDIDATE
) -> list[Event]:
    """Candidate latency (and ttft, end time) x `factor` for requests starting at/after from_ms.

    A regression after a deploy or under load: the judge must see p99 move and roll back.
    """
    if factor <= 0:
        raise ValueError(f"factor must be > 0, got {factor}")
    out = [_scaled(e, factor) if e.arm == arm and e.start_time_ms >= from_ms else e for e in events]
    return publish_order(out)


def inject_error_burst(
    events: Sequence[Event],
    from_ms: int,
    to_ms: int | None,
    rate: float,
    seed: int = 0,
    *,
    timeout_share: float = 0.25,
    timeout_ms: int = GATEWAY_TIMEOUT_MS,
) -> list[Event]:
    """A share `rate` of candidate calls in [from_ms, to_ms) fail: HTTP errors or timeouts.

    Errors fail fast (50-400 ms, 503 overloaded or 429 rate limited, as llmperf saw on
    lepton); timeouts take the gateway's timeout. Either way there is no output, so
    scoring must count the request as a candidate failure, not a quality sample.
    """
    _check_share("rate", rate)
    rng = arm_rng(seed, 11)
    end = math.inf if to_ms is None else to_ms
    out: list[Event] = []
    for e in events:
        draw = rng.random(3)  # drawn for every event: the choice is stable under edits elsewhere
        if e.arm != Arm.CANDIDATE or not from_ms <= e.start_time_ms < end or draw[0] >= rate:
            out.append(e)
            continue
        if draw[1] < timeout_share:
            status, error, lat = Status.TIMEOUT, "timeout", float(timeout_ms)
        else:
            status = Status.ERROR
            error = "http_503" if draw[1] < (1 + timeout_share) / 2 else "http_429"
            lat = round(50.0 + 350.0 * float(draw[2]), 3)
        out.append(
            replace(
                e,
                status=status,
                error_type=error,
                latency_ms=lat,
                end_time_ms=e.start_time_ms + round(lat),
                ttft_ms=None,
                output_tokens=None,
                output=Output(),
                finish_reason=None,
            )
        )
    return publish_order(out)


def mix_up_answers(
    events: Sequence[Event],
    share: float,
    sample: Sequence[Instruction],
    from_ms: int = 0,
    seed: int = 0,
    *,
    arm: Arm = Arm.CANDIDATE,
) -> list[Event]:
    """Give a share of the arm's answers from from_ms on the same model's real answer to
    another prompt (the sample's next one): responses mixed up between requests, as a
    batching, routing or cache-key bug in the serving stack does. Latency and errors stay
    fine; agreement with the primary drops (lexical similarity ~0.36 against ~0.6 on the
    shipped sample), so the default comparison sees it. A weaker model's answers would not
    show: lexically and semantically they resemble the primary's as much as the
    candidate's own do (Llama-3-8B and -70B: 0.61 and 0.61 lexical, 0.79 and 0.80 MiniLM).
    """
    _check_share("share", share)
    rng = arm_rng(seed, 13)
    place = {ins.prompt_id: i for i, ins in enumerate(sample)}
    out: list[Event] = []
    for e in events:
        hit = rng.random() < share
        i = place.get(str(e.attributes.get("prompt_id")))
        other = None if i is None else sample[(i + 1) % len(sample)].outputs.get(e.model)
        if (
            hit
            and other is not None
            and e.arm == arm
            and e.status == Status.OK
            and e.start_time_ms >= from_ms
        ):
            e = replace(e, output=replace(e.output, text=other))
        out.append(e)
    return out


def drop_candidates(events: Sequence[Event], share: float, seed: int = 0) -> list[Event]:
    """Lose a share of candidate events (crashed worker, lost message): orphans downstream."""
    _check_share("share", share)
    rng = arm_rng(seed, 17)
    keep = rng.random(len(events)) >= share
    return [e for e, k in zip(events, keep, strict=True) if k or e.arm != Arm.CANDIDATE]


def duplicate_halves(
    events: Sequence[Event], share: float, seed: int = 0, *, max_delay_ms: int = 5_000
) -> list[Event]:
    """Re-send a share of events, same bytes, up to max_delay_ms later (at-least-once retries).

    The copy is placed where the publisher would emit it: after the events that complete
    within the delay. Pairing must be idempotent on (request_id, arm).
    """
    _check_share("share", share)
    rng = arm_rng(seed, 19)
    dup = rng.random(len(events)) < share
    delays = rng.integers(100, max(max_delay_ms, 101), size=len(events))
    # Publish clock of the originals: running max of completion, so their order is kept.
    clock: list[int] = []
    for e in events:
        clock.append(max(e.completed_ms, clock[-1] if clock else e.completed_ms))
    keyed = [(t, 0, i, e) for i, (t, e) in enumerate(zip(clock, events, strict=True))]
    keyed += [(clock[i] + int(delays[i]), 1, i, events[i]) for i in np.flatnonzero(dup).tolist()]
    keyed.sort(key=lambda k: k[:3])
    return [k[3] for k in keyed]


def _check_share(name: str, value: float) -> None:
    if not 0.0 <= value <= 1.0:
        raise ValueError(f"{name} must be in [0, 1], got {value}")


# --------------------------------------------------------------------------- bad input


def _template(request_id: str) -> dict[str, object]:
    return {
        "schema_version": SUPPORTED_SCHEMA_VERSION,
        "request_id": request_id,
        "experiment": DEFAULT_EXPERIMENT,
        "arm": "candidate",
        "segment": "koala",
        "task": "generation",
        "provider": MODELS[CANDIDATE_MODEL].provider,
        "model": CANDIDATE_MODEL,
        "start_time_ms": DEFAULT_START_MS,
        "latency_ms": 1234.5,
        "status": "ok",
        "output": {"text": "fine"},
    }


def malformed_payloads(
    seed: int = 0, *, too_large_bytes: int = 10_000_000
) -> list[tuple[bytes, str]]:
    """Raw payloads a gateway bug could publish, each with the dead-letter reason expected
    from `shadowlens.schemas.events.decode_event`. None may crash the pipeline or vanish silently.

    The too-large one exceeds Kafka's default 1 MiB message limit too: replay it from a
    file, or raise the topic's max.message.bytes (or pass a smaller too_large_bytes).
    """
    rng = arm_rng(seed, 23)
    rid = f"malformed-{seed}-{int(rng.integers(1_000_000)):06d}"

    def doc(k: str, **changes: object) -> dict[str, object]:
        d = _template(f"{rid}-{k}")
        d.update(changes)
        return d

    missing_id = doc("missing-id")
    del missing_id["request_id"]
    valid_json = orjson.dumps(doc("truncated"))
    nan = orjson.dumps(doc("nan", latency_ms=0.5)).replace(b'"latency_ms":0.5', b'"latency_ms":NaN')
    cases = [
        (valid_json[: int(rng.integers(10, len(valid_json) - 1))], "invalid_json"),
        (b"", "invalid_json"),
        (b"\xff\xfe" + valid_json, "invalid_json"),  # not UTF-8
        (nan, "invalid_json"),  # orjson (like the JSON spec) rejects NaN
        (orjson.dumps(missing_id), "schema_violation"),
        (orjson.dumps(doc("latency-str", latency_ms="1234.5")), "schema_violation"),
        (orjson.dumps(doc("start-float", start_time_ms=1.7e12 + 0.5)), "schema_violation"),
        (orjson.dumps(doc("bad-arm", arm="shadow")), "schema_violation"),
        (orjson.dumps([doc("array")]), "schema_violation"),
        (
            orjson.dumps(doc("end-before-start", end_time_ms=DEFAULT_START_MS - 1)),
            "schema_violation",
        ),
        (orjson.dumps(doc("v2", schema_version=2)), "unsupported_schema_version"),
        (
            orjson.dumps(doc("huge", output={"text": "x" * too_large_bytes})),
            "too_large",
        ),
    ]
    order = rng.permutation(len(cases))
    return [cases[i] for i in order]


def interleave(raw_events: Sequence[bytes], extra: Sequence[bytes], seed: int = 0) -> list[bytes]:
    """Insert `extra` payloads at seeded positions, keeping the order of `raw_events`."""
    rng = arm_rng(seed, 29)
    slots = np.sort(rng.integers(0, len(raw_events) + 1, size=len(extra)))
    out: list[bytes] = []
    j = 0
    for i, raw in enumerate(raw_events):
        while j < len(extra) and slots[j] == i:
            out.append(extra[j])
            j += 1
        out.append(raw)
    out.extend(extra[j:])
    return out


# --------------------------------------------------------------------------- composition


@dataclass(frozen=True, slots=True)
class Faults:
    """The incident to replay. Times are ms after the first request, so a CLI can say
    "latency x1.5 from minute 5" without knowing the replay's epoch."""

    latency_factor: float = 1.0
    latency_after_ms: int = 0
    error_rate: float = 0.0
    error_after_ms: int = 0
    error_for_ms: int | None = None  # None: until the end
    degrade_share: float = 0.0  # answers mixed up between requests (`mix_up_answers`)
    degrade_after_ms: int = 0
    drop_share: float = 0.0
    duplicate_share: float = 0.0
    malformed: bool = False  # wire_payloads() interleaves malformed_payloads()

    def __post_init__(self) -> None:
        if self.latency_factor <= 0:
            raise ValueError(f"latency_factor must be > 0, got {self.latency_factor}")
        for name in ("error_rate", "degrade_share", "drop_share", "duplicate_share"):
            _check_share(name, getattr(self, name))

    @property
    def none(self) -> bool:
        return self == Faults()


def apply_faults(
    events: Sequence[Event], faults: Faults, sample: Sequence[Instruction], seed: int = 0
) -> list[Event]:
    """Apply the configured faults in a fixed order: latency, errors, quality, drops, dups.

    Errors come after latency so a timeout keeps the gateway's timeout; quality only
    touches calls that still succeed; drops and duplicates act on what was published.
    """
    out = list(events)
    if not out:
        return out
    t0 = min(e.start_time_ms for e in out)
    if faults.latency_factor != 1.0:
        out = inject_latency(out, faults.latency_factor, t0 + faults.latency_after_ms)
    if faults.error_rate > 0:
        start = t0 + faults.error_after_ms
        stop = None if faults.error_for_ms is None else start + faults.error_for_ms
        out = inject_error_burst(out, start, stop, faults.error_rate, seed)
    if faults.degrade_share > 0:
        out = mix_up_answers(out, faults.degrade_share, sample, t0 + faults.degrade_after_ms, seed)
    if faults.drop_share > 0:
        out = drop_candidates(out, faults.drop_share, seed)
    if faults.duplicate_share > 0:
        out = duplicate_halves(out, faults.duplicate_share, seed)
    return out


def wire_payloads(events: Sequence[Event], faults: Faults, seed: int = 0) -> list[bytes]:
    """The bytes to publish: events in order, plus malformed payloads if asked for."""
    raw = [e.to_json() for e in events]
    if not faults.malformed:
        return raw
    return interleave(raw, [p for p, _ in malformed_payloads(seed)], seed)
