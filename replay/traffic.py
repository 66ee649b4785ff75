"""Replay traffic: gateway events built from real data, and the faults a migration can hit.

A replay must look like production to exercise pairing, scoring and the judge honestly:
real instructions and real outputs of both models (AlpacaEval), real arrival times and
token counts (Azure LLM inference trace), latency from per-model parameters calibrated
on real measurements (llmperf), and events in the order a gateway publishes them (by
completion time). Faults are small pure functions over the event list, so a test or the
CLI composes exactly the incident it wants and knows the ground truth.

Everything here is pure except the `load_*` / `write_*` helpers.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from importlib import resources
from importlib.resources.abc import Traversable
from pathlib import Path
from typing import Any

import numpy as np
import orjson
from shadowlens.schemas.events import SUPPORTED_SCHEMA_VERSION, Arm, Event, Output, Status, Task

PRIMARY_MODEL = "gpt4_0613"
CANDIDATE_MODEL = "Meta-Llama-3-70B-Instruct"
WEAKER_MODEL = "Meta-Llama-3-8B-Instruct"  # injected quality degradation
REPLICA_OUTPUT_MODEL = "gpt4_0613_concise"  # stands in for a second sample of the primary
SAMPLE_MODELS = (PRIMARY_MODEL, CANDIDATE_MODEL, WEAKER_MODEL, REPLICA_OUTPUT_MODEL)
DEFAULT_EXPERIMENT = "gpt4-to-llama3-70b"
# The first arrival of the Azure conversation trace, 2023-11-16 18:15:46.680 (read as UTC).
DEFAULT_START_MS = 1_700_158_546_680
GATEWAY_TIMEOUT_MS = 20_000  # below the pairing timeout, so a timed-out half still pairs

ALPACA_SAMPLE = "alpaca_sample.json"
TRACE_SAMPLE = "azure_conv_sample.csv"
TRACE_FILES = {"conv": "AzureLLMInferenceTrace_conv.csv", "code": "AzureLLMInferenceTrace_code.csv"}


# --------------------------------------------------------------------------- latency


@dataclass(frozen=True, slots=True)
class LatencyModel:
    """Latency of one call from its token counts: a linear cost model times lognormal noise.

    latency = (ttft_ms + per_input_token_ms * in + per_output_token_ms * out) * noise
    ttft    = (ttft_ms + per_input_token_ms * in) * noise
    One noise draw (median 1) per call scales both, so ttft <= latency always holds: a
    congested call is slow to start and slow to finish.
    """

    ttft_ms: float
    per_output_token_ms: float
    per_input_token_ms: float = 0.0
    noise_sigma: float = 0.0

    def __post_init__(self) -> None:
        params = (self.ttft_ms, self.per_output_token_ms, self.per_input_token_ms)
        if min(params) < 0 or self.noise_sigma < 0:
            raise ValueError(f"latency parameters must be >= 0: {self}")

    def ttft(self, input_tokens: float, noise: float = 1.0) -> float:
        return (self.ttft_ms + self.per_input_token_ms * input_tokens) * noise

    def latency(self, input_tokens: float, output_tokens: float, noise: float = 1.0) -> float:
        return self.ttft(input_tokens, noise) + self.per_output_token_ms * output_tokens * noise

    def draw(
        self, input_tokens: np.ndarray, output_tokens: np.ndarray, rng: np.random.Generator
    ) -> tuple[np.ndarray, np.ndarray]:
        """(latency_ms, ttft_ms) for many calls at once, with fresh noise per call."""
        noise = rng.lognormal(0.0, self.noise_sigma, size=len(input_tokens))
        ttft = (self.ttft_ms + self.per_input_token_ms * input_tokens) * noise
        return ttft + self.per_output_token_ms * output_tokens * noise, ttft


# Calibration (ray-project/llmperf-leaderboard raw_data/individual, Jan 2024, Llama-2-70B,
# 550 input tokens, ~150 output tokens, 150 requests each; errors excluded). Decode time
# per token is (e2e - ttft) / (out - 1): llmperf's own `inter_token_latency_s` is
# e2e / out, i.e. it includes the TTFT and overstates decode time by 5 % (bedrock)
# to 42 % (groq).
#
#   provider     median ttft   decode/token   sd(log e2e)   errors
#   groq           222 ms         3.7 ms        0.09         0/150
#   together       635 ms        11.5 ms        0.11         0/150
#   anyscale       213 ms        13.8 ms        0.21         0/150
#   fireworks      517 ms        21.6 ms        0.07         0/150
#   lepton         925 ms        24.1 ms        0.10       130/150 (HTTP 429)
#   perplexity     366 ms        30.5 ms        0.23 (decode alone 0.10)   2/150 (429)
#   bedrock        388 ms        43.9 ms        0.06 (decode alone 0.04)  49/150 (too few tokens)
#   replicate     1188 ms        85.6 ms        0.50         0/150 (ttft p99 64 s: cold starts)
#
# Candidate (on-prem vLLM, Llama-3-70B): perplexity_70b's figures. A 70B model on a shared
# deployment under batching decodes at ~30 ms/token, close to GPT-4's API, which makes the
# default replay a migration that is neutral on latency. together/fireworks decode
# 1.4-2.6x faster than any realistic GPT-4 figure: with them the candidate simply wins.
# TTFT = fixed part + prefill at 0.2 ms/input token (~5k tokens/s): 256 + 0.2 * 550 = 366 ms.
# Decode 30.0 ms/token, 2 % under the measured 30.5: see the noise note below.
# Primary (gpt-4-0613 API): ~0.55 s TTFT on short prompts, ~33 tokens/s (30 ms/token).
#
# Noise: sigma 0.05 (cloud) / 0.04 (dedicated), the steady end of llmperf (bedrock,
# fireworks). The judge compares point p99s of ~60-pair segment windows, set by the one
# or two slowest calls, so they swing by +-15 % with no change at all. With sigma 0.1
# (together, lepton) 3-4 % of such windows exceed the 1.2 limit from noise alone; with
# the decode at 30.5 ms, 1 clean 10-minute replay in 40 rolls back; as set, 0 in 100.
# Measured on the shipped sample (both arms see the same token counts; seed 0, 300
# windows of 100 requests): candidate/primary p99 0.99 pooled, per window 0.92-1.06
# (5-95 %), max 1.13; with latency x1.5 injected: 1.49 pooled, no window below 1.27.
_GPT4 = LatencyModel(
    ttft_ms=550.0, per_output_token_ms=30.0, per_input_token_ms=0.15, noise_sigma=0.05
)
LATENCY_MODELS: dict[str, LatencyModel] = {
    PRIMARY_MODEL: _GPT4,
    REPLICA_OUTPUT_MODEL: _GPT4,  # the same deployment as the primary
    CANDIDATE_MODEL: LatencyModel(
        ttft_ms=256.0, per_output_token_ms=30.0, per_input_token_ms=0.2, noise_sigma=0.04
    ),
    # 8B on the same hardware, scaled by llmperf fireworks 7B/70B (ttft x0.64, decode x0.51).
    WEAKER_MODEL: LatencyModel(
        ttft_ms=165.0, per_output_token_ms=15.5, per_input_token_ms=0.13, noise_sigma=0.04
    ),
}

PROVIDERS: dict[str, str] = {
    PRIMARY_MODEL: "openai",
    REPLICA_OUTPUT_MODEL: "openai",
    CANDIDATE_MODEL: "onprem-vllm",
    WEAKER_MODEL: "onprem-vllm",
}


# --------------------------------------------------------------------------- sample data


@dataclass(frozen=True, slots=True)
class Instruction:
    """One AlpacaEval instruction with the real outputs of several models."""

    index: int  # position in AlpacaEval: the same across models
    instruction: str
    segment: str  # AlpacaEval subset (`dataset`): helpful_base, koala, oasst, ...
    outputs: Mapping[str, str]  # model -> output text

    @property
    def prompt_id(self) -> str:
        return f"alpaca_eval/{self.index}"


@dataclass(frozen=True, slots=True)
class Arrival:
    """One request of the Azure trace: when it came and how many tokens it had."""

    offset_ms: int  # since the first row of the trace
    input_tokens: int  # ContextTokens
    output_tokens: int  # GeneratedTokens


@dataclass(frozen=True, slots=True)
class Sample:
    instructions: tuple[Instruction, ...]
    arrivals: tuple[Arrival, ...]
    trace_start_ms: int  # epoch ms of the trace's first row (timestamps read as UTC)


def parse_alpaca_records(records: Sequence[Mapping[str, Any]]) -> tuple[Instruction, ...]:
    """Records of alpaca_sample.json (index, dataset, instruction, outputs)."""
    return tuple(
        Instruction(
            index=int(r["index"]),
            instruction=str(r["instruction"]),
            segment=str(r["dataset"]),
            outputs=dict(r["outputs"]),
        )
        for r in records
    )


def _epoch_us(timestamp: str) -> int:
    """'2023-11-16 18:15:46.6805900' -> epoch microseconds (7 fractional digits, read as UTC)."""
    whole, _, frac = timestamp.strip().partition(".")
    base = datetime.fromisoformat(whole).replace(tzinfo=UTC)
    return int(base.timestamp()) * 1_000_000 + int((frac + "000000")[:6])


def parse_trace(text: str) -> tuple[tuple[Arrival, ...], int]:
    """Azure trace CSV (TIMESTAMP,ContextTokens,GeneratedTokens) -> arrivals, start epoch ms."""
    rows = []
    for line in text.splitlines()[1:]:
        if not line.strip():
            continue
        ts, ctx, gen = line.split(",")
        rows.append((_epoch_us(ts), int(ctx), int(gen)))
    if not rows:
        raise ValueError("trace has no rows")
    rows.sort(key=lambda r: r[0])
    t0 = rows[0][0]
    arrivals = tuple(Arrival(round((t - t0) / 1000), ctx, gen) for t, ctx, gen in rows)
    return arrivals, t0 // 1000


def _read_sample_dir(root: Path | Traversable) -> Sample:
    instructions = parse_alpaca_records(orjson.loads(root.joinpath(ALPACA_SAMPLE).read_bytes()))
    arrivals, t0 = parse_trace(root.joinpath(TRACE_SAMPLE).read_text())
    return Sample(instructions, arrivals, t0)


def load_sample(path: str | Path | None = None) -> Sample:
    """The shipped sample (replay/data), or one written by scripts/make_sample.py to `path`."""
    if path is None:
        return _read_sample_dir(resources.files("shadowlens.replay").joinpath("data"))
    return _read_sample_dir(Path(path))


def load_full(
    data_dir: str | Path, *, models: Sequence[str] = SAMPLE_MODELS, trace: str = "conv"
) -> Sample:
    """All 805 instructions and the whole trace from ../shared/data (benchmarks, long demos)."""
    root = Path(data_dir)
    per_model = {m: orjson.loads((root / "alpaca_eval" / f"{m}.json").read_bytes()) for m in models}
    base = per_model[models[0]]
    instructions = tuple(
        Instruction(
            index=i,
            instruction=row["instruction"],
            segment=row["dataset"],
            outputs={m: per_model[m][i]["output"] for m in models},
        )
        for i, row in enumerate(base)
    )
    arrivals, t0 = parse_trace((root / "azure_llm_trace" / TRACE_FILES[trace]).read_text())
    return Sample(instructions, arrivals, t0)


# --------------------------------------------------------------------------- building


def _publish_order(events: Iterable[Event]) -> list[Event]:
    """The order a gateway publishes: by completion, ties broken deterministically."""
    arm_rank = {Arm.PRIMARY: 0, Arm.CANDIDATE: 1, Arm.REPLICA: 2}
    return sorted(
        events, key=lambda e: (e.completed_ms, e.start_time_ms, e.request_id, arm_rank[e.arm])
    )


def _arm_rng(seed: int, salt: int) -> np.random.Generator:
    return np.random.default_rng([seed, salt])


def build_events(
    sample: Sequence[Instruction],
    arrivals: Sequence[Arrival],
    *,
    experiment: str = DEFAULT_EXPERIMENT,
    primary: str = PRIMARY_MODEL,
    candidate: str = CANDIDATE_MODEL,
    requests: int | None = None,
    replica_share: float = 0.0,
    replica_output_model: str = REPLICA_OUTPUT_MODEL,
    seed: int = 0,
    start_ms: int = DEFAULT_START_MS,
    latency_models: Mapping[str, LatencyModel] = LATENCY_MODELS,
    providers: Mapping[str, str] = PROVIDERS,
) -> list[Event]:
    """Shadow traffic of `requests` requests (default: one per arrival), in publish order.

    Request i asks instruction i % len(sample) at arrival row i (the trace repeats, shifted
    by its span plus one mean gap, when there are more requests than rows). Both arms start
    at the arrival and see the row's token counts; each arm draws its own latency noise,
    from a stream that depends only on (seed, arm), so changing the candidate leaves the
    primary's events unchanged.
    """
    if not sample or not arrivals:
        raise ValueError("need at least one instruction and one arrival")
    if not 0.0 <= replica_share <= 1.0:
        raise ValueError(f"replica_share must be in [0, 1], got {replica_share}")
    n = len(arrivals) if requests is None else requests
    rows = len(arrivals)
    span = arrivals[-1].offset_ms - arrivals[0].offset_ms
    period = span + (round(span / (rows - 1)) if rows > 1 else 1000)
    idx = np.arange(n)
    row = idx % rows
    offsets = np.array([a.offset_ms for a in arrivals], dtype=np.int64)
    starts = start_ms + (idx // rows) * period + offsets[row] - offsets[0]
    in_tok = np.array([a.input_tokens for a in arrivals], dtype=np.float64)[row]
    out_tok = np.array([a.output_tokens for a in arrivals], dtype=np.float64)[row]
    with_replica = _arm_rng(seed, 3).random(n) < replica_share

    arms: list[tuple[Arm, str, str, np.ndarray]] = [
        (Arm.PRIMARY, primary, primary, np.ones(n, dtype=bool)),
        (Arm.CANDIDATE, candidate, candidate, np.ones(n, dtype=bool)),
    ]
    if replica_share > 0:
        arms.append((Arm.REPLICA, primary, replica_output_model, with_replica))

    events: list[Event] = []
    for salt, (arm, model, text_model, present) in enumerate(arms):
        latency, ttft = latency_models[model].draw(in_tok, out_tok, _arm_rng(seed, salt))
        for i in np.flatnonzero(present):
            ins = sample[i % len(sample)]
            start = int(starts[i])
            lat = round(float(latency[i]), 3)
            events.append(
                Event(
                    request_id=f"{experiment}-{i:07d}",
                    experiment=experiment,
                    arm=arm,
                    segment=ins.segment,
                    task=Task.GENERATION,
                    provider=providers.get(model, "unknown"),
                    model=model,
                    start_time_ms=start,
                    latency_ms=lat,
                    status=Status.OK,
                    end_time_ms=start + round(lat),
                    ttft_ms=round(float(ttft[i]), 3),
                    input_tokens=int(in_tok[i]),
                    output_tokens=int(out_tok[i]),
                    output=Output(text=ins.outputs[text_model]),
                    finish_reason="stop",
                    attributes={"prompt_id": ins.prompt_id},
                )
            )
    return _publish_order(events)


# --------------------------------------------------------------------------- faults


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
    return _publish_order(out)


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
    rng = _arm_rng(seed, 11)
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
    return _publish_order(out)


def sample_outputs(sample: Sequence[Instruction], model: str) -> dict[str, str]:
    """prompt_id -> that model's output: the texts `degrade_quality` swaps in."""
    return {ins.prompt_id: ins.outputs[model] for ins in sample}


def degrade_quality(
    events: Sequence[Event],
    share: float,
    weaker_outputs: Mapping[str, str],
    from_ms: int = 0,
    seed: int = 0,
    *,
    arm: Arm = Arm.CANDIDATE,
) -> list[Event]:
    """Replace a share of candidate answers from from_ms on by a weaker model's real answer.

    A silent quality drop (a bad quantization, a wrong checkpoint): latency and errors stay
    fine, so only the semantic comparison can catch it. Matched by the events' prompt_id.
    """
    _check_share("share", share)
    rng = _arm_rng(seed, 13)
    out: list[Event] = []
    for e in events:
        hit = rng.random() < share
        text = weaker_outputs.get(str(e.attributes.get("prompt_id")))
        if (
            hit
            and text is not None
            and e.arm == arm
            and e.status == Status.OK
            and e.start_time_ms >= from_ms
        ):
            e = replace(e, output=replace(e.output, text=text))
        out.append(e)
    return out


def drop_candidates(events: Sequence[Event], share: float, seed: int = 0) -> list[Event]:
    """Lose a share of candidate events (crashed worker, lost message): orphans downstream."""
    _check_share("share", share)
    rng = _arm_rng(seed, 17)
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
    rng = _arm_rng(seed, 19)
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
        "provider": PROVIDERS[CANDIDATE_MODEL],
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
    rng = _arm_rng(seed, 23)
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
    rng = _arm_rng(seed, 29)
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
    degrade_share: float = 0.0
    degrade_after_ms: int = 0
    weaker_model: str = WEAKER_MODEL
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
        return self == Faults(weaker_model=self.weaker_model)


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
        weaker = sample_outputs(sample, faults.weaker_model)
        out = degrade_quality(out, faults.degrade_share, weaker, t0 + faults.degrade_after_ms, seed)
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


# --------------------------------------------------------------------------- files


def load_jsonl_events(path: str | Path) -> Iterator[tuple[bytes, str]]:
    """Raw lines of a replay file with a `file:line` source tag; blank lines skipped.

    No decoding here: the pipeline decodes, so a bad line is dead-lettered with its source.
    """
    with open(path, "rb") as fh:
        for lineno, line in enumerate(fh, start=1):
            raw = line.rstrip(b"\r\n")
            if raw.strip():
                yield raw, f"{path}:{lineno}"


def write_jsonl(path: str | Path, items: Iterable[Event | bytes]) -> int:
    """Write events (wire form) or raw payloads, one per line; returns the count."""
    n = 0
    with open(path, "wb") as fh:
        for item in items:
            raw = item.to_json() if isinstance(item, Event) else item
            if b"\n" in raw:
                raise ValueError("a payload holds a newline and would split across lines")
            fh.write(raw + b"\n")
            n += 1
    return n


__all__ = [
    "CANDIDATE_MODEL",
    "DEFAULT_EXPERIMENT",
    "DEFAULT_START_MS",
    "LATENCY_MODELS",
    "PRIMARY_MODEL",
    "PROVIDERS",
    "REPLICA_OUTPUT_MODEL",
    "SAMPLE_MODELS",
    "WEAKER_MODEL",
    "Arrival",
    "Faults",
    "Instruction",
    "LatencyModel",
    "Sample",
    "apply_faults",
    "build_events",
    "degrade_quality",
    "drop_candidates",
    "duplicate_halves",
    "inject_error_burst",
    "inject_latency",
    "interleave",
    "load_full",
    "load_jsonl_events",
    "load_sample",
    "malformed_payloads",
    "parse_alpaca_records",
    "parse_trace",
    "sample_outputs",
    "wire_payloads",
    "write_jsonl",
]
