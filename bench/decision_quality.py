"""Decision quality of the judge, side by side with a Flagger-style and a Kayenta-style rule.

    .venv/bin/python bench/decision_quality.py            # 200 seeded runs per scenario
    .venv/bin/python bench/decision_quality.py --quick    # 30 runs, a smoke test
    .venv/bin/python bench/decision_quality.py --data-dir ../shared/data   # full data sets

Traffic is a replay of real data, drawn afresh for every seeded run: Azure LLM trace
arrivals and token counts (cyclic, from a random row), AlpacaEval instructions (random per
request) with their real outputs, and latency from the llmperf-calibrated model of
`shadowlens.replay.latency`. What the full pipeline would spend on decoding and text comparison is
done once: the lexical similarity of the primary's output to each other output of the same
instruction (`shadowlens.comparators.text.lexical_similarity`). Each run then draws arrival offset,
instructions, output-length and latency noise, errors and substitutions with its seed,
builds `PairScore`s directly and feeds them through the pipeline's own event-time windows
and judge (`shadowlens.job.pipeline.Pipeline` from the scored pair on: same watermark, same window
closing, same `decide`), with the default policy.

Scenarios. A/A: the candidate is the primary's equal-quality sibling (gpt4_0613's outputs
against gpt4_0613_concise's, the same latency model for both arms), so nothing regresses.
LLM nondeterminism shows as different texts and as different output lengths per call
(lognormal, `--length-sd`) in both arms. A replica arm (`--replica-share` of requests, the
same sibling) gives the judge its quality noise floor. Both arms fail at a base rate
(`--base-error-rate`, 3 %: the policy's 5 % floor means "+3 pp" only breaks the policy when
the primary itself fails more than 2 %). Regressions act from the first request:
candidate latency x factor; candidate errors + pp; quality: a share of candidate answers
replaced by an off-topic answer (another instruction's) so that the mean similarity to the
primary drops by the given relative amount. Each metric gets a change inside the policy
(a rollback there is unwanted), one at the limit, and two past it; the headline uses the
regressions at 1.5x the policy margin (latency +30 %, errors +3 pp, quality -15 %).

Methods, all on the same stream and the same 60 s windows:
- shadowlens: `judge.decide.decide` through the ramp, stage by stage, as the pipeline runs it;
- Flagger-style: the policy's point thresholds checked on every window (p99 ratio,
  error rates, mean quality against the replica's), rollback after 3 failed checks in a
  row; one ramp step per passing window;
- Kayenta-style: one look after 50 windows (50 points per metric, the minimum usually
  advised for a Kayenta analysis): Mann-Whitney (`shadowlens.judge.stats_rank_tests`) of the
  per-window series of candidate against primary (quality: against the replica) at 98 %
  confidence (NetflixACAJudge's confLevel), after
  Kayenta's IQR outlier removal, High/Low only if the mean effect is also past the policy
  threshold (Kayenta's effect-size setting).
All three watch the same horizon (50 windows); a rollback in A/A is a false rollback.
"samples" are requests sent up to the decision; "time" is event time from the first one;
medians count a run without the decision as never deciding (censored at the horizon).

`--variants` also runs prototypes of changes to judge/classify.py (see VARIANTS), patched
into `shadowlens.judge.decide` inside the benchmark's processes only, to measure them before anyone
edits the judge.
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import shadowlens.judge.decide as decide_module
from shadowlens.comparators.pairs import Outcome, PairScore
from shadowlens.comparators.signals import is_refusal
from shadowlens.comparators.text import lexical_similarity
from shadowlens.job.pipeline import Pipeline
from shadowlens.judge.policy import Policy, load_policy
from shadowlens.judge.stats_means import mixture_rho
from shadowlens.judge.stats_paired_rates import mcnemar_sequential
from shadowlens.judge.stats_quantiles import quantile_ratio_ci
from shadowlens.judge.stats_rank_tests import mann_whitney
from shadowlens.judge.verdicts import Action, Decision, Evidence, Metric, Verdict
from shadowlens.replay.datasets import Sample, load_full, load_sample
from shadowlens.replay.models import MODELS, PRIMARY_MODEL, REPLICA_OUTPUT_MODEL

SIBLING = REPLICA_OUTPUT_MODEL  # gpt4_0613_concise: the primary's equal-quality sibling
EXPERIMENT = "bench"
KAYENTA_POINTS = 50
KAYENTA_CONFIDENCE = 0.98
FLAGGER_THRESHOLD = 3
WHOLE = "*"


# --------------------------------------------------------------------------- data


@dataclass(frozen=True, slots=True)
class Corpus:
    """Everything expensive, computed once: per-instruction similarities and the trace."""

    source: str
    segments: tuple[str, ...]
    segment_of: np.ndarray  # instruction -> segment index
    sim_sibling: np.ndarray  # similarity of the primary's output to the sibling's
    sim_offtopic: np.ndarray  # ... to the sibling's answer to another instruction
    offtopic_of: np.ndarray  # which other instruction's answer that is
    refused_primary: np.ndarray  # bool: the primary's output is a refusal (the judge's signal)
    refused_sibling: np.ndarray  # ... the sibling's
    offsets_ms: np.ndarray  # trace arrivals, from 0
    input_tokens: np.ndarray
    output_tokens: np.ndarray
    period_ms: int  # the trace repeats after this

    @property
    def rate_per_s(self) -> float:
        return len(self.offsets_ms) / (self.period_ms / 1000)


def build_corpus(sample: Sample, source: str) -> Corpus:
    ins = sample.instructions
    segments = tuple(sorted({i.segment for i in ins}))
    k = len(ins)
    shift = np.random.default_rng(12345).permutation(k)  # a fixed other instruction for each
    shift = np.where(shift == np.arange(k), (shift + 1) % k, shift)
    primary = [i.outputs[PRIMARY_MODEL] for i in ins]
    sibling = [i.outputs[SIBLING] for i in ins]
    offsets = np.array([a.offset_ms for a in sample.arrivals], dtype=np.int64)
    span = int(offsets[-1] - offsets[0])
    return Corpus(
        source=source,
        segments=segments,
        segment_of=np.array([segments.index(i.segment) for i in ins]),
        sim_sibling=np.array(
            [lexical_similarity(p, s) for p, s in zip(primary, sibling, strict=True)]
        ),
        sim_offtopic=np.array(
            [lexical_similarity(primary[j], sibling[shift[j]]) for j in range(k)]
        ),
        offtopic_of=shift,
        refused_primary=np.array([is_refusal(t) for t in primary]),
        refused_sibling=np.array([is_refusal(t) for t in sibling]),
        offsets_ms=offsets - offsets[0],
        input_tokens=np.array([a.input_tokens for a in sample.arrivals], dtype=np.float64),
        output_tokens=np.array([a.output_tokens for a in sample.arrivals], dtype=np.float64),
        period_ms=span + max(1, round(span / max(1, len(offsets) - 1))),
    )


@dataclass(frozen=True, slots=True)
class Scenario:
    key: str
    label: str
    latency_factor: float = 1.0
    error_increase: float = 0.0
    quality_drop: float = 0.0  # relative drop of the mean similarity to the primary
    target: Metric | None = None  # None: A/A, nothing should fire
    headline: bool = False  # counts in the RESULT line
    note: str = ""
    within_policy: bool = False  # a real change, but inside the policy: no rollback wanted
    base_error: float | None = None  # both arms' base error rate; None: the run's default


SCENARIOS = (
    Scenario("aa", "A/A (sibling, same latency model)", headline=True),
    Scenario(
        "lat10",
        "latency +10 %",
        1.10,
        target=Metric.LATENCY_P99,
        note="within policy",
        within_policy=True,
    ),
    Scenario("lat20", "latency +20 %", 1.20, target=Metric.LATENCY_P99, note="at the limit"),
    Scenario("lat30", "latency +30 %", 1.30, target=Metric.LATENCY_P99, headline=True),
    Scenario("lat50", "latency +50 %", 1.50, target=Metric.LATENCY_P99),
    Scenario(
        "err1",
        "errors 4.5 % -> 5.5 %",
        error_increase=0.01,
        target=Metric.ERROR_RATE,
        note="within policy: +1 pp",
        within_policy=True,
        base_error=0.045,
    ),
    Scenario("err3", "errors +3 pp", error_increase=0.03, target=Metric.ERROR_RATE, headline=True),
    Scenario("err5", "errors +5 pp", error_increase=0.05, target=Metric.ERROR_RATE),
    Scenario(
        "q5",
        "quality -5 %",
        quality_drop=0.05,
        target=Metric.QUALITY,
        note="within policy",
        within_policy=True,
    ),
    Scenario("q10", "quality -10 %", quality_drop=0.10, target=Metric.QUALITY, note="at the limit"),
    Scenario("q15", "quality -15 %", quality_drop=0.15, target=Metric.QUALITY, headline=True),
    Scenario("q25", "quality -25 %", quality_drop=0.25, target=Metric.QUALITY),
)


@dataclass(frozen=True, slots=True)
class Config:
    runs: int = 200
    horizon_windows: int = KAYENTA_POINTS
    replica_share: float = 0.2
    base_error_rate: float = 0.03
    length_sd: float = 0.2
    seed: int = 0
    variant: str = "current"  # which judge: the code as is, or a prototype below


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


# --------------------------------------------------------------------------- results


@dataclass(slots=True)
class MethodResult:
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


def _samples(run: Run, t_ms: int) -> int:
    return int(np.searchsorted(run.start_ms, t_ms, side="left"))


# --------------------------------------------------------------------------- shadowlens


class _Decisions:
    """A sink that keeps only decisions (pairs and windows are not needed here)."""

    def __init__(self) -> None:
        self.made: list[Decision] = []

    def pairs(self, scores: Sequence[PairScore]) -> None:
        pass

    def windows(self, windows: Sequence[object]) -> None:
        pass

    def decisions(self, decisions: Sequence[Decision]) -> None:
        self.made.extend(decisions)

    def dead_letters(self, letters: Sequence[object]) -> None:
        pass


def _score_builder(run: Run, corpus: Corpus) -> Callable[[int, int], PairScore]:
    """(kind, request) -> PairScore; kind 0 candidate pair, 1 replica pair, 2 orphan."""
    seg = [corpus.segments[s] for s in run.segment.tolist()]
    start = run.start_ms.tolist()
    lat_p, lat_c, lat_r = run.lat_p.tolist(), run.lat_c.tolist(), run.lat_r.tolist()
    fail_p, fail_c, fail_r = run.fail_p.tolist(), run.fail_c.tolist(), run.fail_r.tolist()
    qual_c, qual_r = run.qual_c.tolist(), run.qual_r.tolist()
    late_p = run.late_p.tolist()
    ref_p, ref_r = corpus.refused_primary[run.ins], corpus.refused_sibling[run.ins]
    ref_c = np.where(run.offtopic, corpus.refused_sibling[corpus.offtopic_of[run.ins]], ref_r)
    ref_p, ref_c, ref_r = ref_p.tolist(), ref_c.tolist(), ref_r.tolist()

    def build(kind: int, i: int) -> PairScore:
        p_ok = not fail_p[i]
        if kind == 1:
            o_ok, o_lat, q, comparison = not fail_r[i], lat_r[i], qual_r[i], "replica"
            o_ref = ref_r[i]
        else:
            o_ok, o_lat, q, comparison = not fail_c[i], lat_c[i], qual_c[i], "candidate"
            o_ref = ref_c[i]
        both = p_ok and o_ok
        if kind == 2:  # the late half is missing: an orphan, counted against that arm
            if late_p[i]:
                outcome, p_status, o_status = (
                    Outcome.PRIMARY_MISSING,
                    "missing",
                    ("ok" if o_ok else "error"),
                )
            else:
                outcome, p_status, o_status = (
                    Outcome.CANDIDATE_MISSING,
                    ("ok" if p_ok else "error"),
                    "missing",
                )
            return PairScore(
                request_id=f"r{i}", experiment=EXPERIMENT, segment=seg[i], task="generation",
                mode="shadow", comparison="candidate", outcome=outcome, event_time_ms=start[i],
                primary_status=p_status, candidate_status=o_status,
                primary_latency_ms=None if late_p[i] else lat_p[i],
                candidate_latency_ms=lat_c[i] if late_p[i] else None,
            )  # fmt: skip
        return PairScore(
            request_id=f"r{i}", experiment=EXPERIMENT, segment=seg[i], task="generation",
            mode="shadow", comparison=comparison, outcome=Outcome.PAIRED, event_time_ms=start[i],
            primary_status="ok" if p_ok else "error", candidate_status="ok" if o_ok else "error",
            primary_latency_ms=lat_p[i], candidate_latency_ms=o_lat,
            latency_ratio=o_lat / lat_p[i] if both else None,
            lexical_similarity=q if both else None,
            primary_refusal=ref_p[i] if both else None,
            candidate_refusal=o_ref if both else None,
        )  # fmt: skip

    return build


def _emissions(run: Run) -> tuple[list[int], list[int], list[int]]:
    """When each pair leaves the pairer: with the later of its two halves. Candidate pairs
    whose late half missed the pairing timeout are orphans instead (emitted by a sweep);
    a late replica is dropped, as `shadowlens.pipeline.pairing` does."""
    idx = np.arange(len(run.start_ms))
    cand = ~(run.late_c | run.late_p)
    rep = run.replica & ~run.late_r
    t = np.concatenate(
        [np.maximum(run.done_p, run.done_c)[cand], np.maximum(run.done_p, run.done_r)[rep]]
    )
    kind = np.concatenate([np.zeros(int(cand.sum()), int), np.ones(int(rep.sum()), int)])
    req = np.concatenate([idx[cand], idx[rep]])
    order = np.lexsort((kind, req, t))
    return t[order].tolist(), kind[order].tolist(), req[order].tolist()


def judge_decisions(run: Run, corpus: Corpus, policy: Policy) -> Iterator[Decision]:
    """The judge's decisions on the run, in order, as the pipeline would make them.

    Mirrors `Pipeline.feed` from the scored pair on (reusing its windows, `_drain` and
    `_judge`): the watermark trails the newest completion by `lateness_ms`, scores drain
    in batches or at a sweep, and every size/10 of watermark the orphans are swept and the
    closed windows judged. Stop iterating to stop the replay."""
    sink = _Decisions()
    pipe = Pipeline(policy, sink)
    build = _score_builder(run, corpus)
    halves = np.sort(np.concatenate([run.done_p, run.done_c, run.done_r[run.replica]]))
    em_t, em_kind, em_req = _emissions(run)
    orphans = np.flatnonzero(run.late_c | run.late_p)
    o_order = np.lexsort((orphans, run.closed_ms[orphans]))
    orphan_ids = orphans[o_order].tolist()
    orphan_due = run.closed_ms[orphans][o_order].tolist()
    lateness, cadence = policy.pairing.lateness_ms, policy.windows.size_ms // 10
    seen = e_next = o_next = swept = 0
    for t in halves.tolist():
        pipe.pairer.watermark_ms = max(pipe.pairer.watermark_ms, t - lateness)
        emitted = []
        while e_next < len(em_t) and em_t[e_next] <= t:
            emitted.append(build(em_kind[e_next], em_req[e_next]))
            e_next += 1
        pipe.add_scored(emitted)
        wm = pipe.pairer.watermark_ms
        if wm - swept < cadence:
            continue
        swept = wm
        orphaned = []
        while o_next < len(orphan_ids) and orphan_due[o_next] <= t:
            orphaned.append(build(2, orphan_ids[o_next]))
            o_next += 1
        pipe.add_scored(orphaned)
        pipe.drain()
        pipe.judge(pipe.windows.advance(wm))
        yield from sink.made[seen:]
        seen = len(sink.made)


def run_shadowlens(
    run: Run, corpus: Corpus, policy: Policy, horizon_ms: int, target: Metric | None
) -> MethodResult:
    """The judge until its first rollback or the horizon."""
    end = run.t0_ms + horizon_ms
    top = policy.ramp.stages_percent[-1]
    result = MethodResult()
    for d in judge_decisions(run, corpus, policy):
        if d.decided_at_ms > end:
            break
        result.target_verdict = _verdicts(d)
        result.target_reason = next(
            (e.reason for e in d.evidence if e.segment == WHOLE and e.metric == target), ""
        )
        if d.action == Action.PROMOTE:
            result.promoted_first += 1
            result.reached = max(result.reached, d.to_percent)
            if d.to_percent == top and result.complete_ms is None:
                result.complete_ms = d.decided_at_ms - run.t0_ms
                result.complete_samples = _samples(run, d.decided_at_ms)
        elif d.action == Action.ROLLBACK:
            result.rolled_back = True
            result.t_ms = d.decided_at_ms - run.t0_ms
            result.samples = _samples(run, d.decided_at_ms)
            failing = [e for e in d.evidence if e.verdict == Verdict.FAIL]
            whole = sorted({str(e.metric) for e in failing if e.segment == WHOLE})
            parts = sorted({str(e.metric) for e in failing if e.segment != WHOLE} - set(whole))
            result.metrics = tuple(whole + [f"{m} (segment)" for m in parts])
            break
    return result


def _verdicts(d: Decision) -> str:
    """The all-segments verdicts of the rollback metrics, compactly: 'lat=pass err=inc ...'."""
    short = {Metric.LATENCY_P99: "lat", Metric.ERROR_RATE: "err", Metric.QUALITY: "qual"}
    parts = [
        f"{short[e.metric]}={e.verdict}"
        for e in d.evidence
        if e.segment == WHOLE and e.metric in short
    ]
    return " ".join(parts)


# --------------------------------------------------------------------------- baselines


@dataclass(slots=True)
class WindowSeries:
    """Per-window figures the metric-store rules read (what Prometheus would hold)."""

    p99_p: np.ndarray
    p99_c: np.ndarray
    err_p: np.ndarray
    err_c: np.ndarray
    qual_c: np.ndarray
    qual_r: np.ndarray
    end_ms: np.ndarray


def window_series(run: Run, policy: Policy, windows: int) -> WindowSeries:
    size, q = policy.windows.size_ms, policy.latency.quantile
    w = (run.start_ms - run.t0_ms) // size
    miss_c, miss_p = run.miss_c, run.miss_p
    ok_p = ~run.fail_p & ~run.late_p
    ok_c = ~run.fail_c & ~run.late_c
    both = ok_p & ok_c
    rep_ok = run.replica & ~run.late_r & ~run.fail_r & ok_p
    out = {k: np.full(windows, np.nan) for k in ("p99_p", "p99_c", "ep", "ec", "qc", "qr")}
    for j in range(windows):
        m = w == j
        if not m.any():
            continue
        out["p99_p"][j] = np.quantile(run.lat_p[m & ok_p], q)
        out["p99_c"][j] = np.quantile(run.lat_c[m & ok_c], q)
        out["ep"][j] = miss_p[m].mean()
        out["ec"][j] = miss_c[m].mean()
        out["qc"][j] = run.qual_c[m & both].mean()
        rq = run.qual_r[m & rep_ok]
        out["qr"][j] = rq.mean() if rq.size else np.nan
    ends = run.t0_ms + size * (np.arange(windows) + 1)
    return WindowSeries(
        out["p99_p"], out["p99_c"], out["ep"], out["ec"], out["qc"], out["qr"], ends
    )


def _window_checks(s: WindowSeries, policy: Policy) -> dict[str, np.ndarray]:
    """The policy's point thresholds on one window each: True where the check fails."""
    limit = 1.0 + policy.latency.max_relative_increase
    pe, keep = policy.errors, 1.0 - policy.quality.max_relative_drop
    with np.errstate(invalid="ignore"):
        return {
            "latency_p99": s.p99_c / s.p99_p > limit,
            "error_rate": s.err_c > np.maximum(pe.max_absolute, s.err_p + pe.max_increase),
            "quality": s.qual_c < keep * s.qual_r,
        }


def run_flagger(run: Run, s: WindowSeries, policy: Policy) -> MethodResult:
    checks = _window_checks(s, policy)
    failed = np.zeros(len(s.end_ms), dtype=bool)
    for v in checks.values():
        failed |= v
    result, streak, passes = MethodResult(), 0, 0
    steps = len(policy.ramp.stages_percent) - 1
    for j, bad in enumerate(failed.tolist()):
        streak = streak + 1 if bad else 0
        if not bad:
            passes += 1
            if passes == steps and result.complete_ms is None:
                result.complete_ms = int(s.end_ms[j] - run.t0_ms)
                result.complete_samples = _samples(run, int(s.end_ms[j]))
            if not result.rolled_back and result.complete_ms is None:
                result.promoted_first += 1
                result.reached = policy.ramp.stages_percent[min(passes, steps)]
        if streak >= FLAGGER_THRESHOLD:
            lo = j - FLAGGER_THRESHOLD + 1
            result.rolled_back = True
            result.t_ms = int(s.end_ms[j] - run.t0_ms)
            result.samples = _samples(run, int(s.end_ms[j]))
            result.metrics = tuple(k for k, v in checks.items() if v[lo : j + 1].any())
            return result
    return result


def _iqr_clean(x: np.ndarray) -> np.ndarray:
    """Kayenta's transform: drop NaNs, then outliers beyond 3 IQR (IQRDetector, factor 3)."""
    x = x[np.isfinite(x)]
    if x.size < 4:
        return x
    q1, q3 = np.quantile(x, [0.25, 0.75])
    iqr = q3 - q1
    return x[(x >= q1 - 3 * iqr) & (x <= q3 + 3 * iqr)]


def run_kayenta(run: Run, s: WindowSeries, policy: Policy) -> MethodResult:
    alpha = 1.0 - KAYENTA_CONFIDENCE
    limit = 1.0 + policy.latency.max_relative_increase
    pe, keep = policy.errors, 1.0 - policy.quality.max_relative_drop
    fired = []
    lat_p, lat_c = _iqr_clean(s.p99_p), _iqr_clean(s.p99_c)
    if mann_whitney(lat_p, lat_c).p_value < alpha and lat_c.mean() > limit * lat_p.mean():
        fired.append("latency_p99")
    err_p, err_c = _iqr_clean(s.err_p), _iqr_clean(s.err_c)
    e_limit = max(pe.max_absolute, err_p.mean() + pe.max_increase) if err_p.size else math.inf
    if mann_whitney(err_p, err_c).p_value < alpha and err_c.mean() > e_limit:
        fired.append("error_rate")
    q_r, q_c = _iqr_clean(s.qual_r), _iqr_clean(s.qual_c)
    if mann_whitney(q_r, q_c).p_value < alpha and q_c.mean() < keep * q_r.mean():
        fired.append("quality")
    end = int(s.end_ms[-1])
    result = MethodResult(bool(fired), end - run.t0_ms, _samples(run, end), tuple(fired))
    if not fired:
        result.complete_ms, result.complete_samples = result.t_ms, result.samples
        result.reached = policy.ramp.stages_percent[-1]
    return result


# --------------------------------------------------------------------------- variants
#
# Prototypes of changes to judge/classify.py and judge/decide.py, to measure them here
# before anyone edits those files. They are patched into `shadowlens.judge.decide`'s namespace (the
# names `_judge_segment` calls) inside the benchmark's worker processes only.

_ORIGINAL = {
    name: getattr(decide_module, name)
    for name in ("classify_latency", "classify_errors", "classify_quality")
}


def _latency_rule(shift: float) -> Callable[..., Evidence]:
    """Latency FAIL needs the paired bound above log(1 + shift x margin), not just above 0."""

    def classify(ev, segment, policy, alpha, overall=None):  # type: ignore[no-untyped-def]
        base = _ORIGINAL["classify_latency"](ev, segment, policy, alpha, overall)
        if base.verdict != Verdict.FAIL:
            return base
        limit = 1.0 + policy.latency.max_relative_increase
        lo, _ = ev.log_latency_ratio.interval(alpha, mixture_rho(policy.judge.optimal_n, alpha))
        tail = quantile_ratio_ci(
            ev.totals.primary_latency_ms, ev.totals.candidate_latency_ms,
            policy.latency.quantile, alpha, sequential=True,
        )  # fmt: skip
        if tail.lo > limit or lo > math.log1p(shift * policy.latency.max_relative_increase):
            return base
        return replace(base, verdict=Verdict.INCONCLUSIVE, example_request_ids=())

    return classify


def _errors_rule(shift: float, *, mcnemar: bool = False) -> Callable[..., Evidence]:
    """Errors FAIL when the point estimates are past both limits and the always-valid bound
    on the paired increase is above shift x max_increase (0: any increase at all); with
    `mcnemar`, the increase is shown by the anytime-valid McNemar test on the stage's
    discordant pairs instead (b = only the candidate failed, c = only the primary)."""

    def classify(ev, segment, policy, alpha):  # type: ignore[no-untyped-def]
        base = _ORIGINAL["classify_errors"](ev, segment, policy, alpha)
        if base.verdict != Verdict.INCONCLUSIVE:
            return base
        pol, agg = policy.errors, ev.totals
        cand = agg.error_rate("candidate") or 0.0
        prim = agg.error_rate("primary") or 0.0
        if not (cand > pol.max_absolute and cand - prim > pol.max_increase):
            return base
        if mcnemar:
            b, c = agg.only_candidate_failed, agg.only_primary_failed
            test = mcnemar_sequential(b, c, alternative="greater")
            shown, bound = test.p_value < alpha, test.p_value
        else:
            d_lo, _ = ev.error_increase.interval(alpha)
            shown, bound = d_lo > shift * pol.max_increase, d_lo
        return replace(base, verdict=Verdict.FAIL, bound=bound) if shown else base

    return classify


def _quality_rule(shift: float) -> Callable[..., Evidence]:
    """Quality FAIL when the point drop is past the margin and the bounds show the candidate
    below (1 - shift x margin) x the reference's lower bound (0: below it at all)."""

    def classify(ev, segment, reference, policy, alpha):  # type: ignore[no-untyped-def]
        base = _ORIGINAL["classify_quality"](ev, segment, reference, policy, alpha)
        if base.verdict != Verdict.INCONCLUSIVE or reference.state is None:
            return base
        drop = policy.quality.max_relative_drop
        _, c_hi = ev.quality.interval(alpha / 2)
        r_lo, _ = reference.state.interval(alpha / 2)
        past = ev.quality.mean < (1.0 - drop) * reference.state.mean
        if past and c_hi < (1.0 - shift * drop) * r_lo:
            return replace(base, verdict=Verdict.FAIL, bound=c_hi)
        return base

    return classify


def _pass_alpha(policy: Policy) -> float:
    """A separate budget for false promotions: 5 % over the ramp, split over stages and
    the rollback metrics of the all-segments view (only '*' has to pass)."""
    return 0.05 / (len(policy.ramp.stages_percent) * len(decide_module.ROLLBACK_METRICS))


def _two_level(fail_ev: Evidence, pass_ev: Evidence) -> Evidence:
    """FAIL read at the rollback alpha, PASS at the promotion budget."""
    if fail_ev.verdict in (Verdict.FAIL, Verdict.NODATA):
        return fail_ev
    return pass_ev if pass_ev.verdict == Verdict.PASS else fail_ev


def _patch(
    latency: Callable[..., Evidence],
    errors: Callable[..., Evidence],
    quality: Callable[..., Evidence],
    pass_budget: bool,
) -> None:
    if pass_budget:
        lat0, err0, qual0 = latency, errors, quality

        def latency(ev, segment, policy, alpha, overall=None):  # type: ignore[no-untyped-def]
            a = lat0(ev, segment, policy, alpha, overall)
            return _two_level(a, lat0(ev, segment, policy, _pass_alpha(policy), overall))

        def errors(ev, segment, policy, alpha):  # type: ignore[no-untyped-def]
            a = err0(ev, segment, policy, alpha)
            return _two_level(a, err0(ev, segment, policy, _pass_alpha(policy)))

        def quality(ev, segment, reference, policy, alpha):  # type: ignore[no-untyped-def]
            a = qual0(ev, segment, reference, policy, alpha)
            return _two_level(a, qual0(ev, segment, reference, policy, _pass_alpha(policy)))

    decide_module.classify_latency = latency  # type: ignore[attr-defined]
    decide_module.classify_errors = errors  # type: ignore[attr-defined]
    decide_module.classify_quality = quality  # type: ignore[attr-defined]


VARIANTS: dict[str, str] = {
    "current": "judge/classify.py and judge/decide.py as they are",
    "vs-zero": "errors and quality FAIL like latency does: point estimate past the limit and "
    "an always-valid bound excluding no regression",
    "half-margin": "every FAIL needs the point estimate past the limit and the always-valid "
    "bound past half the margin (latency: paired log ratio > log 1.1; errors: increase > "
    "+1 pp; quality: below 0.95 x the reference's lower bound)",
    "pass-budget": "as they are, but PASS read at a separate 5 % false-promotion budget",
    "recommended": "latency as in 'half-margin'; errors: point rates past both limits and the "
    "anytime-valid McNemar test (judge.stats_paired_rates) shows more candidate-only "
    "failures; quality as in 'vs-zero'; PASS at a separate 5 % false-promotion budget",
}


def use_variant(name: str) -> None:
    """Point judge.decide at a prototype classifier (benchmark only; nothing is edited)."""
    if name not in VARIANTS:
        raise ValueError(f"unknown variant {name!r}; known: {', '.join(VARIANTS)}")
    lat, err, qual = (
        _ORIGINAL["classify_latency"], _ORIGINAL["classify_errors"], _ORIGINAL["classify_quality"]
    )  # fmt: skip
    if name == "vs-zero":
        err, qual = _errors_rule(0.0), _quality_rule(0.0)
    if name == "half-margin":
        lat, err, qual = _latency_rule(0.5), _errors_rule(0.5), _quality_rule(0.5)
    if name == "recommended":
        lat, err, qual = _latency_rule(0.5), _errors_rule(0.0, mcnemar=True), _quality_rule(0.0)
    _patch(lat, err, qual, pass_budget=name in ("pass-budget", "recommended"))


# --------------------------------------------------------------------------- driver

_CORPUS: Corpus | None = None


def _init(corpus: Corpus) -> None:
    global _CORPUS
    _CORPUS = corpus


def _task(args: tuple[Scenario, Config, list[int]]) -> list[tuple[int, dict[str, MethodResult]]]:
    sc, cfg, seeds = args
    assert _CORPUS is not None
    use_variant(cfg.variant)
    policy = load_policy()
    horizon = cfg.horizon_windows * policy.windows.size_ms
    out = []
    for seed in seeds:
        run = draw_run(_CORPUS, sc, cfg, policy, seed)
        series = window_series(run, policy, cfg.horizon_windows)
        res = {"shadowlens": run_shadowlens(run, _CORPUS, policy, horizon, sc.target)}
        if cfg.variant == "current":
            res["flagger"] = run_flagger(run, series, policy)
            res["kayenta"] = run_kayenta(run, series, policy)
        out.append((seed, res))
    return out


def run_all(
    corpus: Corpus, scenarios: Sequence[Scenario], cfg: Config, workers: int
) -> dict[str, list[dict[str, MethodResult]]]:
    chunk = max(1, min(25, cfg.runs // max(1, workers * 2)))
    tasks = []
    for sc in scenarios:
        seeds = list(range(cfg.runs))
        for j in range(0, len(seeds), chunk):
            tasks.append((sc, cfg, seeds[j : j + chunk]))
    # expensive scenarios (no early stop) first, so both workers finish together
    tasks.sort(key=lambda t: t[0].target is not None)
    results: dict[str, list[dict[str, MethodResult]]] = {sc.key: [] for sc in scenarios}
    if workers <= 1:
        _init(corpus)
        done = map(_task, tasks)
        for t, out in zip(tasks, done, strict=True):
            results[t[0].key].extend(r for _, r in out)
    else:
        with ProcessPoolExecutor(workers, initializer=_init, initargs=(corpus,)) as pool:
            for t, out in zip(tasks, pool.map(_task, tasks), strict=True):
                results[t[0].key].extend(r for _, r in out)
    return results


# --------------------------------------------------------------------------- report


def _median(xs: Sequence[float]) -> float:
    return float(np.median(xs)) if xs else math.nan


def _wilson(k: int, n: int, z: float = 1.96) -> tuple[float, float]:
    if n == 0:
        return (math.nan, math.nan)
    p = k / n
    den = 1 + z * z / n
    mid = (p + z * z / (2 * n)) / den
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / den
    return (max(0.0, mid - half), min(1.0, mid + half))


@dataclass(slots=True)
class Row:
    scenario: Scenario
    method: str
    runs: int
    rate: float  # false-rollback rate (A/A) or detection rate
    ci: tuple[float, float]
    samples: float  # median samples to the decision
    minutes: float  # median event time to the decision
    fired: Counter[str] = field(default_factory=Counter)
    verdicts: Counter[str] = field(default_factory=Counter)
    example: str = ""  # the target metric's last reason in a run without a rollback
    leaked: float = 0.0  # share of detections after at least one promotion
    reached: float = 0.0  # median highest traffic share reached (percent)
    completed: float = 0.0  # share of runs that reached 100 % within the horizon


def summarize(
    scenarios: Sequence[Scenario], results: dict[str, list[dict[str, MethodResult]]]
) -> list[Row]:
    rows = []
    for sc in scenarios:
        per_run = results[sc.key]
        for method in per_run[0]:
            rs = [r[method] for r in per_run]
            hits = [r for r in rs if r.rolled_back]
            # medians over all runs; a run without the decision by the horizon counts as
            # infinitely late (censored), so the median is finite only if most runs decide
            if sc.target is None:  # A/A: the decision is reaching 100 % without a rollback
                done = [r.complete_ms is not None and not r.rolled_back for r in rs]
                samples = [
                    r.complete_samples if d else math.inf for r, d in zip(rs, done, strict=True)
                ]
                minutes = [
                    r.complete_ms / 60_000 if d else math.inf for r, d in zip(rs, done, strict=True)
                ]
            else:
                samples = [r.samples if r.rolled_back else math.inf for r in rs]
                minutes = [r.t_ms / 60_000 if r.rolled_back else math.inf for r in rs]
            row = Row(
                sc, method, len(rs), len(hits) / len(rs), _wilson(len(hits), len(rs)),
                _median(samples), _median(minutes),
            )  # fmt: skip
            for r in hits:
                row.fired.update(r.metrics)
            for r in rs:
                if not r.rolled_back and r.target_verdict:
                    row.verdicts[r.target_verdict] += 1
                    row.example = row.example or r.target_reason
            row.leaked = sum(r.promoted_first > 0 for r in hits) / len(hits) if hits else 0.0
            row.reached = _median([r.reached for r in rs])
            row.completed = sum(r.complete_ms is not None for r in rs) / len(rs)
            rows.append(row)
    return rows


def print_table(rows: Sequence[Row], title: str) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=title)
    for col in ("scenario", "method", "runs", "false rollback / detection", "95 % CI",
                "median samples", "median time", "what fired"):  # fmt: skip
        table.add_column(
            col, justify="left" if col in ("scenario", "method", "what fired") else "right"
        )
    last = None
    for r in rows:
        label = r.scenario.label + (f" ({r.scenario.note})" if r.scenario.note else "")
        kind = (
            "false rb" if r.scenario.target is None
            else "rollback" if r.scenario.within_policy else "detect"
        )  # fmt: skip
        fired = ", ".join(f"{k} {v}" for k, v in r.fired.most_common(3))
        if r.scenario.target is None:
            what = f"{r.completed:.0%} of runs reach 100 %; median reached {r.reached:g} %"
            fired = (fired + "; " if fired else "") + what
        table.add_row(
            label if r.scenario.key != last else "",
            r.method,
            str(r.runs),
            f"{kind} {r.rate:.1%}",
            f"[{r.ci[0]:.1%}, {r.ci[1]:.1%}]",
            f"{r.samples:,.0f}" if math.isfinite(r.samples) else "> horizon",
            f"{r.minutes:.1f} min" if math.isfinite(r.minutes) else "> horizon",
            fired,
            end_section=False,
        )
        last = r.scenario.key
    Console(width=200).print(table)


def print_diagnosis(rows: Sequence[Row]) -> None:
    """Per scenario, for shadowlens: what fired, and where it did not, what the judge said."""
    print("\nshadowlens, per metric: what fired (all-segments '*' or a segment), and in runs")
    print("without a rollback, the last all-segments verdicts of latency/errors/quality:")
    for r in rows:
        if r.method != "shadowlens":
            continue
        fired = ", ".join(f"{k}: {v}" for k, v in r.fired.most_common()) or "nothing"
        print(f"  {r.scenario.label:<34} fired: {fired}")
        if r.scenario.target is not None and r.leaked:
            print(f"  {'':<34} {r.leaked:.0%} of detections came after a promotion")
        for verdicts, count in r.verdicts.most_common(3):
            print(f"  {'':<34} no rollback, last verdicts {verdicts}: {count} runs")
        if r.example and not r.scenario.within_policy:
            print(f"  {'':<34} e.g. {r.example}")


def headline(rows: Sequence[Row], fixed: Sequence[Row]) -> tuple[float, float, float]:
    """(A/A false rollbacks, lowest detection, largest samples ratio to `fixed`'s Kayenta)."""
    mine = {r.scenario.key: r for r in rows if r.method == "shadowlens"}
    kay = {r.scenario.key: r for r in fixed if r.method == "kayenta"}
    aa = next((r.rate for r in mine.values() if r.scenario.target is None), math.nan)
    detect = [r for r in mine.values() if r.scenario.target is not None and r.scenario.headline]
    detection = min((r.rate for r in detect), default=math.nan)
    ratios = [r.samples / kay[r.scenario.key].samples for r in detect if r.scenario.key in kay]
    return aa, detection, max(ratios, default=math.nan)


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--runs", type=int, default=200, help="seeded runs per scenario")
    ap.add_argument("--quick", action="store_true", help="30 runs per scenario")
    ap.add_argument("--data-dir", type=Path, help="full data sets (alpaca_eval/, azure_llm_trace/)")
    ap.add_argument("--workers", type=int, default=min(2, os.cpu_count() or 1))
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--scenarios", default="", help="comma-separated keys (default: all)")
    ap.add_argument("--replica-share", type=float, default=0.2)
    ap.add_argument("--base-error-rate", type=float, default=0.03)
    ap.add_argument("--length-sd", type=float, default=0.2)
    ap.add_argument(
        "--variants", default="", help=f"also run judge prototypes: {', '.join(VARIANTS)}"
    )
    args = ap.parse_args(argv)
    started = time.perf_counter()
    runs = 30 if args.quick else args.runs
    cfg = Config(
        runs, KAYENTA_POINTS, args.replica_share, args.base_error_rate, args.length_sd, args.seed
    )
    if args.data_dir is None:
        corpus = build_corpus(load_sample(), "shipped sample")
    else:
        models = (PRIMARY_MODEL, SIBLING)
        corpus = build_corpus(load_full(args.data_dir, models=models), str(args.data_dir))
    keys = [k for k in args.scenarios.split(",") if k]
    scenarios = [s for s in SCENARIOS if not keys or s.key in keys]
    policy = load_policy()
    print(
        f"data: {corpus.source}: {len(corpus.sim_sibling)} instructions, "
        f"{len(corpus.offsets_ms)} arrivals ({corpus.rate_per_s:.2f} requests/s), "
        f"{len(corpus.segments)} segments; similarity to the primary: sibling "
        f"{corpus.sim_sibling.mean():.3f} (sd {corpus.sim_sibling.std():.3f}), off-topic "
        f"{corpus.sim_offtopic.mean():.3f}"
    )
    print(
        f"runs: {runs} per scenario x {len(scenarios)} scenarios, horizon "
        f"{cfg.horizon_windows} windows of {policy.windows.size_ms // 1000} s, replica share "
        f"{cfg.replica_share:.0%}, base error rate {cfg.base_error_rate:.0%}, output-length sd "
        f"{cfg.length_sd}, {args.workers} workers"
    )
    results = run_all(corpus, scenarios, cfg, args.workers)
    rows = summarize(scenarios, results)
    print_table(rows, "decision quality: shadowlens judge vs Flagger-style vs Kayenta-style")
    print_diagnosis(rows)
    main_seconds = time.perf_counter() - started
    print(f"({main_seconds:.0f} s for the table above)")
    for name in [v for v in args.variants.split(",") if v]:
        vrows = summarize(
            scenarios, run_all(corpus, scenarios, replace(cfg, variant=name), args.workers)
        )
        print_table(vrows, f"prototype '{name}': {VARIANTS[name]}")
        print_diagnosis(vrows)
        aa, det, ratio = headline(vrows, rows)
        print(
            f"prototype {name}: aa_false_rollback={aa:.3f} detection={det:.3f} "
            f"samples_vs_fixed_horizon={ratio:.3f}"
        )
    aa, detection, ratio = headline(rows, rows)
    heads = ", ".join(s.label for s in scenarios if s.headline and s.target is not None)
    print(
        f"\nheadline: A/A false rollbacks; detection = the lowest over {heads} (each 1.5x its "
        "policy margin; the scenarios at the limit itself are shown for the power curve); "
        "samples_vs_fixed_horizon = the largest ratio, over those scenarios, of shadowlens's "
        "median samples to detect (a miss counts as never) to Kayenta-style's fixed horizon. "
        f"{time.perf_counter() - started:.0f} s in all"
    )
    print(
        f"RESULT aa_false_rollback={aa:.3f} detection={detection:.3f} "
        f"samples_vs_fixed_horizon={ratio:.3f}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
