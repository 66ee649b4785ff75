"""bench/decision_quality.py judges exactly as the pipeline does, without its decode path.

The benchmark (its parts in bench/dq) builds PairScores from precomputed similarities and
feeds them to the pipeline's windows and judge itself. Here the same run is also replayed
the long way, as real events through `Pipeline.feed` (decode, pair, score the texts), and
both must reach the same decisions with the same verdicts. Its judge prototypes must run.
"""

from __future__ import annotations

import pytest
from shadowlens.job.pipeline import Pipeline
from shadowlens.job.sinks import MemorySink
from shadowlens.judge.policy import load_policy
from shadowlens.replay.datasets import Sample, load_sample
from shadowlens.replay.models import PRIMARY_MODEL
from shadowlens.schemas.events import Arm, Event, Output, Status, Task

from bench.dq.corpus import SIBLING, Corpus, build_corpus, variant
from bench.dq.fastpath import EXPERIMENT, judge_decisions
from bench.dq.runs import Run, draw_run
from bench.dq.scenarios import SCENARIOS, Config
from bench.dq.variants import VARIANTS


def _answer(sample: Sample, corpus: Corpus, i: int, k: int) -> str:
    """The text of answer k (a variant, -1 off-topic, -2 the primary's) to instruction i."""
    ins = sample.instructions
    if k == -2:
        return ins[i].outputs[PRIMARY_MODEL]
    if k == -1:
        return ins[int(corpus.offtopic_of[i])].outputs[SIBLING]
    return variant(ins[i].outputs[SIBLING], i, k)


def events_of(corpus: Corpus, run: Run, sample: Sample) -> list[Event]:
    """The run as the events a gateway would publish (models without prices: no cost)."""
    ins = sample.instructions
    task = Task(run.task)
    out: list[Event] = []
    arms = (
        (Arm.PRIMARY, run.lat_p, run.fail_p, run.done_p, None, None),
        (Arm.CANDIDATE, run.lat_c, run.fail_c, run.done_c, None, run.var_c),
        (Arm.REPLICA, run.lat_r, run.fail_r, run.done_r, run.replica, run.var_r),
    )
    for arm, lat, fail, done, present, answer in arms:
        for i in range(len(run.start_ms)):
            if present is not None and not present[i]:
                continue
            k = int(run.ins[i])
            if task == Task.CLASSIFICATION:  # the candidate's label agrees, or it does not
                agree = arm != Arm.CANDIDATE or run.qual_c[i] == 1.0
                output = Output(label="yes" if agree else "no")
            else:
                text = ins[k].outputs[PRIMARY_MODEL] if answer is None else None
                output = Output(text=text or _answer(sample, corpus, k, int(answer[i])))
            failed = bool(fail[i])
            out.append(
                Event(
                    request_id=f"r{i}", experiment=EXPERIMENT, arm=arm,
                    segment=corpus.segments[run.segment[i]], task=task, provider="p",
                    model=f"bench-{arm}", start_time_ms=int(run.start_ms[i]),
                    latency_ms=float(lat[i]), status=Status.ERROR if failed else Status.OK,
                    end_time_ms=int(done[i]), output=Output() if failed else output,
                    finish_reason="stop",
                )
            )  # fmt: skip
    order = {Arm.PRIMARY: 0, Arm.CANDIDATE: 1, Arm.REPLICA: 2}
    return sorted(out, key=lambda e: (e.completed_ms, e.start_time_ms, e.request_id, order[e.arm]))


@pytest.mark.parametrize("key", ["aa", "q25", "err5", "cls20", "same", "burst"])
def test_the_benchmark_reaches_the_pipelines_decisions(key: str) -> None:
    sample = load_sample()
    corpus = build_corpus(sample, "sample")
    policy = load_policy()
    cfg = Config(horizon_windows=7)
    scenario = next(s for s in SCENARIOS if s.key == key)
    run = draw_run(corpus, scenario, cfg, policy, seed=11)
    end = run.t0_ms + cfg.horizon_windows * policy.windows.size_ms

    sink = MemorySink()
    pipe = Pipeline(policy, sink)
    for e in events_of(corpus, run, sample):
        pipe.feed(e.to_json())
    slow = [d for d in sink.made if d.decided_at_ms <= end]
    fast = [d for d in judge_decisions(run, corpus, policy) if d.decided_at_ms <= end]

    def key_of(d):
        verdicts = tuple((e.metric, e.segment, e.verdict, e.n) for e in d.evidence)
        return (d.decided_at_ms, d.action, d.epoch, d.to_percent, verdicts)

    assert len(slow) == cfg.horizon_windows
    assert [key_of(d) for d in fast] == [key_of(d) for d in slow]
    assert [d.reason for d in fast] == [d.reason for d in slow]


@pytest.mark.parametrize("name", list(VARIANTS))
def test_every_prototype_judges_a_run(name: str) -> None:
    """The prototypes reach the judge through its Classifiers argument; monkey-patched ones
    crashed unnoticed once the classifiers' signature changed."""
    corpus = build_corpus(load_sample(), "sample")
    policy = load_policy()
    scenario = next(s for s in SCENARIOS if s.key == "err5")
    run = draw_run(corpus, scenario, Config(horizon_windows=7), policy, seed=11)
    decisions = list(judge_decisions(run, corpus, policy, VARIANTS[name].classifiers))
    assert len(decisions) >= 7
