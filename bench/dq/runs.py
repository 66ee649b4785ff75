"""One seeded run as per-request arrays, paired as the pipeline pairs it, and a method's result."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from shadowlens.judge.policy import Policy
from shadowlens.replay.models import MODELS, PRIMARY_MODEL

from .corpus import Corpus
from .scenarios import Config, Scenario


@dataclass(slots=True)
class Run:
    """One seeded replay as per-request arrays (index = request in start order)."""

    t0_ms: int
    start_ms: np.ndarray
    segment: np.ndarray
    lat_p: np.ndarray
    lat_c: np.ndarray
    lat_r: np.ndarray
    fail_p: np.ndarray  # error status (not counting a missing half)
    fail_c: np.ndarray
    qual_c: np.ndarray
    done_p: np.ndarray  # completion times
    done_c: np.ndarray
    replica: np.ndarray  # bool: a replica call was made
    done_r: np.ndarray
    fail_r: np.ndarray
    qual_r: np.ndarray
    late_c: np.ndarray  # the pair closed before this half came: an orphan
    late_p: np.ndarray
    late_r: np.ndarray
    ins: np.ndarray  # the AlpacaEval instruction of each request
    offtopic: np.ndarray  # bool: the candidate's answer was replaced by an off-topic one
    closed_ms: np.ndarray  # the sweep that closed the request (orphans are emitted there)

    @property
    def miss_c(self) -> np.ndarray:
        """Candidate failures as the judge counts them: errors and missing halves."""
        return self.fail_c | self.late_c

    @property
    def miss_p(self) -> np.ndarray:
        return self.fail_p | self.late_p


def _fail_latency(rng: np.random.Generator, n: int) -> np.ndarray:
    return 50.0 + 350.0 * rng.random(n)  # fail fast: 503/429, as shadowlens.replay.faults does


def draw_run(corpus: Corpus, sc: Scenario, cfg: Config, policy: Policy, seed: int) -> Run:
    """The scenario's seeded replay: latencies, errors, answers, and which halves come too late."""
    rng = np.random.default_rng([cfg.seed, seed])
    size = policy.windows.size_ms
    t0 = (1_700_000_000_000 // size + 1) * size
    end = t0 + (cfg.horizon_windows + 2) * size  # two more windows push the watermark on
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
    ins = rng.integers(len(corpus.segment_of), size=n)
    model = MODELS[PRIMARY_MODEL].latency  # both arms: same deployment, same model

    def call_latency() -> np.ndarray:
        out = np.maximum(
            1.0, np.round(corpus.output_tokens[row] * rng.lognormal(0, cfg.length_sd, n))
        )
        lat, _ = model.draw(corpus.input_tokens[row], out, rng)
        return lat

    lat_p, lat_c, lat_r = call_latency(), call_latency() * sc.latency_factor, call_latency()
    p_err = cfg.base_error_rate if sc.base_error is None else sc.base_error
    fail_p = rng.random(n) < p_err
    fail_c = rng.random(n) < p_err + sc.error_increase
    fail_r = rng.random(n) < p_err
    for lat, fail in ((lat_p, fail_p), (lat_c, fail_c), (lat_r, fail_r)):
        lat[fail] = _fail_latency(rng, int(fail.sum()))
    sib, off = corpus.sim_sibling[ins], corpus.sim_offtopic[ins]
    share = 0.0
    if sc.quality_drop:
        mean_sib, mean_off = corpus.sim_sibling.mean(), corpus.sim_offtopic.mean()
        share = sc.quality_drop * mean_sib / (mean_sib - mean_off)
        if share > 1:
            raise ValueError(f"an off-topic share cannot drop quality by {sc.quality_drop:.0%}")
    offtopic = rng.random(n) < share
    qual_c = np.where(offtopic, off, sib)
    replica = rng.random(n) < cfg.replica_share
    done_p = start + np.round(lat_p).astype(np.int64)
    done_c = start + np.round(lat_c).astype(np.int64)
    done_r = start + np.round(lat_r).astype(np.int64)
    late_p, late_c, late_r, closed = _pairing(start, done_p, done_c, done_r, replica, policy)
    return Run(
        t0, start, corpus.segment_of[ins], lat_p, lat_c, lat_r, fail_p, fail_c, qual_c, done_p,
        done_c, replica, done_r, fail_r, sib, late_c, late_p, late_r, ins, offtopic, closed,
    )  # fmt: skip


def sweep_times(halves: np.ndarray, policy: Policy) -> np.ndarray:
    """Completion times of the events after which `Pipeline.feed` sweeps and judges: the
    first event, then every time the watermark has moved size/10 since the last sweep."""
    lateness, cadence = policy.pairing.lateness_ms, policy.windows.size_ms // 10
    out, swept = [], 0
    for t in halves.tolist():
        if t - lateness - swept >= cadence:
            swept = t - lateness
            out.append(t)
    return np.array(out, dtype=np.int64)


def _pairing(
    start: np.ndarray,
    done_p: np.ndarray,
    done_c: np.ndarray,
    done_r: np.ndarray,
    replica: np.ndarray,
    policy: Policy,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Which halves come too late to pair, as `shadowlens.pipeline.pairing.Pairer` decides it.

    A request is closed by the first sweep after its first half arrived whose watermark has
    passed start + timeout; a half still missing then is an orphan (counted against its
    arm), a replica arriving after it is dropped. Returns (late_p, late_c, late_r, closed_at)."""
    halves = np.sort(np.concatenate([done_p, done_c, done_r[replica]]))
    sweeps = sweep_times(halves, policy)
    pp = policy.pairing
    first = np.minimum(done_p, done_c)
    first = np.where(replica, np.minimum(first, done_r), first)
    due = np.maximum(first, start + pp.timeout_ms + pp.lateness_ms)  # event time >= this
    j = np.searchsorted(sweeps, due, side="left")
    closed = np.where(
        j < len(sweeps), sweeps[np.minimum(j, len(sweeps) - 1)], np.iinfo(np.int64).max
    )
    late_p = done_p > closed
    late_c = (done_c > closed) & ~late_p
    late_r = replica & ((done_r > closed) | late_p)
    return late_p, late_c, late_r, closed


@dataclass(slots=True)
class MethodResult:
    """What one method decided on one run, and when."""

    rolled_back: bool = False
    t_ms: int | None = None  # rollback, or (A/A) reaching 100 %
    samples: int | None = None
    metrics: tuple[str, ...] = ()  # what fired
    promoted_first: int = 0  # stages promoted before the rollback
    target_verdict: str = ""  # the target metric's last all-segments verdict (shadowlens)
    complete_ms: int | None = None  # reached the last ramp stage
    complete_samples: int | None = None
    reached: float = 0.0  # the highest candidate traffic share reached, percent
    target_reason: str = ""  # the target metric's last all-segments reason (shadowlens)


def samples_at(run: Run, t_ms: int) -> int:
    """Requests sent before `t_ms`: the samples a decision then had."""
    return int(np.searchsorted(run.start_ms, t_ms, side="left"))
