"""One seeded run as per-request arrays, and a method's result on it."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from shadowlens.judge.policy import Policy
from shadowlens.replay.models import MODELS, PRIMARY_MODEL

from .corpus import VARIANTS, Corpus
from .scenarios import Config, Scenario

BURST_EVERY, BURST_FOR, BURST_FIRST = 10, 2, 5  # minutes: 2 in every 10, the first at 5
BURST_SHARE = 0.6  # of the traffic during a burst
SAME_NOISE = 0.05  # an identical candidate's per-request latency noise (lognormal sd)


@dataclass(slots=True)
class Run:
    """One seeded replay as per-request arrays (index = request in start order)."""

    t0_ms: int
    task: str
    start_ms: np.ndarray
    segment: np.ndarray
    ins: np.ndarray  # the AlpacaEval instruction of each request
    lat_p: np.ndarray
    lat_c: np.ndarray
    lat_r: np.ndarray
    fail_p: np.ndarray  # error status
    fail_c: np.ndarray
    fail_r: np.ndarray
    qual_c: np.ndarray  # similarity (or label agreement) to the primary
    qual_r: np.ndarray
    ref_p: np.ndarray  # refusals
    ref_c: np.ndarray
    ref_r: np.ndarray
    var_c: np.ndarray  # which answer the candidate gave: a variant, -1 off-topic, -2 the primary's
    var_r: np.ndarray
    replica: np.ndarray  # bool: a replica call was made
    done_p: np.ndarray  # completion times
    done_c: np.ndarray
    done_r: np.ndarray
    horizon_samples: int  # requests sent within the horizon: the fixed horizon's sample count


def _fail_latency(rng: np.random.Generator, n: int) -> np.ndarray:
    return 50.0 + 350.0 * rng.random(n)  # fail fast: 503/429, as shadowlens.replay.faults does


def _instructions(
    corpus: Corpus, sc: Scenario, start: np.ndarray, t0: int, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """Each request's instruction, and whether it belongs to the bursty segment (the
    corpus's first): uniform, or in bursts of BURST_FOR minutes every BURST_EVERY, the
    first BURST_FIRST minutes in (the ramp has moved on without it by then)."""
    n = len(start)
    if not sc.bursty:
        return rng.integers(len(corpus.segment_of), size=n), np.zeros(n, dtype=bool)
    minute = (start - t0) // 60_000 - BURST_FIRST  # the segment is quiet at first
    burst = (minute % BURST_EVERY < BURST_FOR) & (rng.random(n) < BURST_SHARE)
    inside = np.flatnonzero(corpus.segment_of == 0)
    outside = np.flatnonzero(corpus.segment_of != 0)
    ins = np.where(
        burst,
        inside[rng.integers(len(inside), size=n)],
        outside[rng.integers(len(outside), size=n)],
    )
    return ins, burst


def draw_run(corpus: Corpus, sc: Scenario, cfg: Config, policy: Policy, seed: int) -> Run:
    """The scenario's seeded replay: latencies, errors, answers, refusals.

    Traffic runs past the horizon by the watermark's lag (lateness, clock skew, grace) and
    a window, so the horizon's last window closes."""
    rng = np.random.default_rng([cfg.seed, seed])
    size, pp = policy.windows.size_ms, policy.pairing
    t0 = (1_700_000_000_000 // size + 1) * size
    horizon = t0 + cfg.horizon_windows * size
    end = horizon + pp.lateness_ms + pp.max_skew_ms + policy.windows.grace_ms + size
    rows = len(corpus.offsets_ms)
    first = int(rng.integers(rows))
    need = int((end - t0) / 1000 * corpus.rate_per_s * 1.5) + rows
    k = np.arange(need)
    row = (first + k) % rows
    wraps = (first + k) // rows
    start = t0 + corpus.offsets_ms[row] - corpus.offsets_ms[first] + wraps * corpus.period_ms
    keep = start < end
    row, start = row[keep], start[keep]
    n = len(start)
    ins, hit = _instructions(corpus, sc, start, t0, rng)
    if not sc.bursty:
        hit = np.ones(n, dtype=bool)  # the change hits every request
    model = MODELS[PRIMARY_MODEL].latency  # all arms: the same deployment, the same model

    def call_latency() -> np.ndarray:
        out = np.maximum(
            1.0, np.round(corpus.output_tokens[row] * rng.lognormal(0, cfg.length_sd, n))
        )
        lat, _ = model.draw(corpus.input_tokens[row], out, rng)
        return lat

    lat_p, lat_c, lat_r = call_latency(), call_latency(), call_latency()
    if sc.identical:
        lat_c = lat_p * rng.lognormal(0, SAME_NOISE, n)
    lat_c = np.where(hit, lat_c * sc.latency_factor, lat_c)
    p_err = cfg.base_error_rate if sc.base_error is None else sc.base_error
    fail_p = rng.random(n) < p_err
    fail_c = rng.random(n) < p_err + np.where(hit, sc.error_increase, 0.0)
    fail_r = rng.random(n) < p_err
    for lat, fail in ((lat_p, fail_p), (lat_c, fail_c), (lat_r, fail_r)):
        lat[fail] = _fail_latency(rng, int(fail.sum()))
    var_r = rng.integers(VARIANTS, size=n)
    var_c = rng.integers(VARIANTS, size=n)
    share = 0.0
    if sc.quality_drop:
        mean, off = corpus.sim_variant.mean(), corpus.sim_offtopic.mean()
        share = sc.quality_drop * mean / (mean - off)
        if share > 1:
            raise ValueError(f"an off-topic share cannot drop quality by {sc.quality_drop:.0%}")
    var_c = np.where(hit & (rng.random(n) < share), -1, var_c)
    if sc.identical:
        var_c = np.full(n, -2)
    qual_r = corpus.sim_variant[ins, var_r]
    qual_c = np.select(
        [var_c == -2, var_c == -1],
        [np.ones(n), corpus.sim_offtopic[ins]],
        corpus.sim_variant[ins, np.maximum(var_c, 0)],
    )
    ref_p = corpus.refused_primary[ins]
    ref_r = corpus.refused_variant[ins, var_r]
    ref_c = np.select(
        [var_c == -2, var_c == -1],
        [ref_p, corpus.refused_variant[corpus.offtopic_of[ins], 0]],
        corpus.refused_variant[ins, np.maximum(var_c, 0)],
    )
    if sc.task == "classification":
        qual_c = (rng.random(n) < sc.label_agreement).astype(float)
    replica = rng.random(n) < cfg.replica_share if sc.replica else np.zeros(n, dtype=bool)
    return Run(
        t0, sc.task, start, corpus.segment_of[ins], ins, lat_p, lat_c, lat_r, fail_p, fail_c,
        fail_r, qual_c, qual_r, ref_p, ref_c, ref_r, var_c, var_r, replica,
        start + np.round(lat_p).astype(np.int64), start + np.round(lat_c).astype(np.int64),
        start + np.round(lat_r).astype(np.int64), int(np.searchsorted(start, horizon)),
    )  # fmt: skip


def samples_at(run: Run, t_ms: int) -> int:
    """Requests sent before `t_ms`: the samples a decision then had."""
    return int(np.searchsorted(run.start_ms, t_ms, side="left"))


@dataclass(slots=True)
class MethodResult:
    """What one method decided on one run, and when."""

    rolled_back: bool = False
    t_ms: int | None = None  # the first rollback
    samples: int | None = None
    metrics: tuple[str, ...] = ()  # what fired
    promoted_first: int = 0  # stages promoted before the rollback
    target_verdict: str = ""  # the target metric's last all-segments verdict (shadowlens)
    complete_ms: int | None = None  # reached the last ramp stage
    complete_samples: int | None = None
    reached: float = 0.0  # the highest candidate traffic share reached, percent
    target_reason: str = ""  # the target metric's last all-segments reason (shadowlens)
