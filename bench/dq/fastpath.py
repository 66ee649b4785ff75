"""The judge's decisions on a run, through the pipeline's own windows and judge, from scores."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence

import numpy as np
from shadowlens.comparators.pairs import Outcome, PairScore
from shadowlens.job.pipeline import Pipeline
from shadowlens.judge.classifiers import CLASSIFIERS, Classifiers
from shadowlens.judge.decide import ALL_SEGMENTS
from shadowlens.judge.policy import Policy
from shadowlens.judge.verdicts import Action, Decision, Metric, Verdict

from .corpus import Corpus
from .runs import MethodResult, Run, samples_at

EXPERIMENT = "bench"


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
    """(kind, request) -> the PairScore `score_pair` gives; kind 0 candidate, 1 replica.

    Its event time is when the slower half completed, on the primary's clock."""
    seg = [corpus.segments[s] for s in run.segment.tolist()]
    start = run.start_ms.tolist()
    lat_p, lat_c, lat_r = run.lat_p.tolist(), run.lat_c.tolist(), run.lat_r.tolist()
    fail_p, fail_c, fail_r = run.fail_p.tolist(), run.fail_c.tolist(), run.fail_r.tolist()
    qual_c, qual_r = run.qual_c.tolist(), run.qual_r.tolist()
    ref_p, ref_c, ref_r = run.ref_p.tolist(), run.ref_c.tolist(), run.ref_r.tolist()
    text = run.task != "classification"

    def build(kind: int, i: int) -> PairScore:
        p_ok = not fail_p[i]
        if kind == 1:
            o_ok, o_lat, q, o_ref, comparison = (
                not fail_r[i],
                lat_r[i],
                qual_r[i],
                ref_r[i],
                "replica",
            )
        else:
            o_ok, o_lat, q, o_ref, comparison = (
                not fail_c[i],
                lat_c[i],
                qual_c[i],
                ref_c[i],
                "candidate",
            )
        both = p_ok and o_ok
        return PairScore(
            request_id=f"r{i}", experiment=EXPERIMENT, segment=seg[i], task=run.task,
            mode="shadow", comparison=comparison, outcome=Outcome.PAIRED,
            event_time_ms=start[i] + round(max(lat_p[i], o_lat)),
            primary_status="ok" if p_ok else "error", candidate_status="ok" if o_ok else "error",
            primary_latency_ms=lat_p[i], candidate_latency_ms=o_lat,
            latency_ratio=o_lat / lat_p[i] if both else None,
            lexical_similarity=q if both and text else None,
            label_agree=bool(q) if both and not text else None,
            primary_refusal=ref_p[i] if both and text else None,
            candidate_refusal=o_ref if both and text else None,
        )  # fmt: skip

    return build


def _emissions(run: Run) -> tuple[list[int], list[int], list[int]]:
    """When each pair leaves the pairer: with the later of its two halves."""
    idx = np.arange(len(run.start_ms))
    rep = run.replica
    t = np.concatenate(
        [np.maximum(run.done_p, run.done_c), np.maximum(run.done_p, run.done_r)[rep]]
    )
    kind = np.concatenate([np.zeros(len(idx), int), np.ones(int(rep.sum()), int)])
    req = np.concatenate([idx, idx[rep]])
    order = np.lexsort((kind, req, t))
    return t[order].tolist(), kind[order].tolist(), req[order].tolist()


def judge_decisions(
    run: Run, corpus: Corpus, policy: Policy, classifiers: Classifiers = CLASSIFIERS
) -> Iterator[Decision]:
    """The judge's decisions on the run, in order, as the pipeline would make them.

    Mirrors `Pipeline.feed` from the scored pair on (reusing its windows, `drain` and
    `judge`): the watermark trails the newest completion by `lateness_ms` and
    `max_skew_ms` (`shadowlens.pipeline.progress`; the stream's first event waits for the
    second), scores drain in batches or at a sweep, and every size/10 of watermark the
    closed windows are judged, with `classifiers`. No half is later than `max_call_ms`, so
    there are no orphans. Stop iterating to stop the replay."""
    sink = _Decisions()
    pipe = Pipeline(policy, sink, classifiers=classifiers)
    build = _score_builder(run, corpus)
    halves = np.sort(np.concatenate([run.done_p, run.done_c, run.done_r[run.replica]]))
    em_t, em_kind, em_req = _emissions(run)
    lag = policy.pairing.lateness_ms + policy.pairing.max_skew_ms
    cadence = policy.windows.size_ms // 10
    seen = e_next = 0
    for j, t in enumerate(halves.tolist()):
        emitted = []
        while e_next < len(em_t) and em_t[e_next] <= t:
            emitted.append(build(em_kind[e_next], em_req[e_next]))
            e_next += 1
        pipe.add_scored(emitted)
        wm = max(0, t - lag) if j else 0  # the first event is held until the second
        if wm - pipe.watermark_ms < cadence:
            continue
        pipe.watermark_ms = wm
        pipe.drain()
        pipe.judge(pipe.windows.advance(wm))
        yield from sink.made[seen:]
        seen = len(sink.made)


def run_shadowlens(
    run: Run,
    corpus: Corpus,
    policy: Policy,
    horizon_ms: int,
    target: Metric | None,
    classifiers: Classifiers = CLASSIFIERS,
) -> MethodResult:
    """The judge until the horizon: its first rollback, and when it reached 100 %."""
    end = run.t0_ms + horizon_ms
    top = policy.ramp.stages_percent[-1]
    result = MethodResult()
    for d in judge_decisions(run, corpus, policy, classifiers):
        if d.decided_at_ms > end:
            break
        result.target_verdict = _verdicts(d)
        result.target_reason = next(
            (e.reason for e in d.evidence if e.segment == ALL_SEGMENTS and e.metric == target), ""
        )
        if d.action == Action.PROMOTE:
            result.promoted_first += 1
            result.reached = max(result.reached, d.to_percent)
            if d.to_percent == top and result.complete_ms is None:
                result.complete_ms = d.decided_at_ms - run.t0_ms
                result.complete_samples = samples_at(run, d.decided_at_ms)
        elif d.action == Action.ROLLBACK:
            result.rolled_back = True
            result.t_ms = d.decided_at_ms - run.t0_ms
            result.samples = samples_at(run, d.decided_at_ms)
            failing = [e for e in d.evidence if e.verdict == Verdict.FAIL]
            whole = sorted({str(e.metric) for e in failing if e.segment == ALL_SEGMENTS})
            parts = sorted(
                {str(e.metric) for e in failing if e.segment != ALL_SEGMENTS} - set(whole)
            )
            result.metrics = tuple(whole + [f"{m} (segment)" for m in parts])
            break
    return result


def _verdicts(d: Decision) -> str:
    """The all-segments verdicts of the rollback metrics, compactly: 'lat=pass err=inc ...'."""
    short = {Metric.LATENCY_P99: "lat", Metric.ERROR_RATE: "err", Metric.QUALITY: "qual"}
    parts = [
        f"{short[e.metric]}={e.verdict}"
        for e in d.evidence
        if e.segment == ALL_SEGMENTS and e.metric in short
    ]
    return " ".join(parts)
