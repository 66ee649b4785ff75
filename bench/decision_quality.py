"""Decision quality of the judge, side by side with Flagger (thresholds 5 and 10) and a
Kayenta-style rule.

    .venv/bin/python bench/decision_quality.py            # 200 runs per scenario, 400 A/A
    .venv/bin/python bench/decision_quality.py --quick    # 30 runs (60 A/A), a smoke test
    .venv/bin/python bench/decision_quality.py --data-dir ../shared/data   # full data sets

Traffic is a replay of real data, drawn afresh for every seeded run: Azure LLM trace
arrivals and token counts (cyclic, from a random row), AlpacaEval instructions (random per
request) with their real outputs, and latency from the llmperf-calibrated model of
`shadowlens.replay.latency`. What the full pipeline would spend on decoding and text
comparison is done once per answer (dq/corpus.py). Each run then draws arrival offset,
instructions, output-length and latency noise, errors, answers and refusals with its seed,
builds `PairScore`s directly and feeds them through the pipeline's own event-time windows
and judge (`shadowlens.job.pipeline.Pipeline` from the scored pair on: same watermark,
same window closing, same `decide`), with the default policy.

The A/A candidate is statistically the primary: every per-request signal (latency,
error, refusal, similarity to the primary) is drawn independently from the distribution the
replica's is drawn from (the replica is the primary asked again; dq/corpus.py), never the
same per-request value. 400 A/A runs, so that no false rollback bounds the rate at 1 %.
Regressions act from the first request: candidate latency x factor; errors + pp; quality: a
share of answers replaced by an off-topic one (another instruction's) so that the mean
similarity to the primary drops by the given relative amount. Each metric gets a change
inside the policy (a rollback there is unwanted), one at the limit, and two past it. The
harder rows: quality 15 % worse without a replica arm (the policy's reference, as a user
would set it from the primary's agreement with itself), a classifier whose labels differ
from the primary's on 5 % (within) and 20 % (past the margin) of requests, a latency
regression confined to one segment whose traffic comes in bursts (2 minutes in 10), and a
candidate identical to the primary up to 5 % latency noise (the time it takes to 100 %).

Methods, all on the same stream and the same 60 s windows, over the same horizon
(50 windows): shadowlens (`judge.decide.decide` through the ramp, as the pipeline runs
it), Flagger's analysis (1-minute interval, a failed-checks counter never reset, rollback
at 5 and at 10 failed checks, one ramp step per passing interval) and Kayenta-style (one
Mann-Whitney look at the horizon). "samples" are requests sent up to the decision; "time"
is event time from the first one; medians count a run without the decision as never.

RESULT: aa_false_rollback (A/A runs rolled back), aa_reach_full (A/A runs at 100 % within
the horizon), detection (the lowest over the headline regressions), wrong_promotion (the
highest share of runs reaching 100 % over the scenarios whose candidate breaks the policy
from its first request), samples_vs_fixed_horizon (the largest, over the headline
regressions, of the median samples to detect over the requests within the fixed horizon).
Targets: <= 0.01, >= 0.9, >= 0.95, <= 0.01, <= 0.5. The same figures follow for Flagger.

`--variants` also runs prototypes of changes to the judge's classifiers (dq/variants.py),
handed to the judge as its `Classifiers` set, to measure them before anyone edits the judge.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

from dq.baselines import FLAGGER_THRESHOLDS
from dq.corpus import SIBLING, build_corpus
from dq.report import headline, print_diagnosis, print_table, summarize
from dq.runner import run_all
from dq.scenarios import SCENARIOS, Config
from dq.variants import VARIANTS
from shadowlens.judge.policy import load_policy
from shadowlens.replay.datasets import load_full, load_sample
from shadowlens.replay.models import PRIMARY_MODEL


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--runs", type=int, default=200, help="seeded runs per scenario")
    ap.add_argument("--aa-runs", type=int, default=400, help="seeded A/A runs")
    ap.add_argument("--quick", action="store_true", help="30 runs per scenario, 60 A/A")
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
    runs, aa_runs = (30, 60) if args.quick else (args.runs, args.aa_runs)
    cfg = Config(
        runs, aa_runs, replica_share=args.replica_share, base_error_rate=args.base_error_rate,
        length_sd=args.length_sd, seed=args.seed,
    )  # fmt: skip
    if args.data_dir is None:
        corpus = build_corpus(load_sample(), "shipped sample")
    else:
        models = (PRIMARY_MODEL, SIBLING)
        corpus = build_corpus(load_full(args.data_dir, models=models), str(args.data_dir))
    keys = [k for k in args.scenarios.split(",") if k]
    scenarios = [s for s in SCENARIOS if not keys or s.key in keys]
    policy = load_policy()
    print(
        f"data: {corpus.source}: {len(corpus.segment_of)} instructions, "
        f"{len(corpus.offsets_ms)} arrivals ({corpus.rate_per_s:.2f} requests/s), "
        f"{len(corpus.segments)} segments; similarity to the primary: the primary asked again "
        f"{corpus.sim_variant.mean():.3f} (sd {corpus.sim_variant.std():.3f}), off-topic "
        f"{corpus.sim_offtopic.mean():.3f}"
    )
    print(
        f"runs: {runs} per scenario ({cfg.runs_of(SCENARIOS[0])} A/A) x {len(scenarios)} "
        f"scenarios, horizon {cfg.horizon_windows} windows of {policy.windows.size_ms // 1000} "
        f"s, replica share {cfg.replica_share:.0%}, base error rate {cfg.base_error_rate:.0%}, "
        f"output-length sd {cfg.length_sd}, {args.workers} workers"
    )
    rows = summarize(scenarios, run_all(corpus, scenarios, cfg, args.workers))
    print_table(rows, "decision quality: shadowlens vs Flagger (threshold 5, 10) vs Kayenta-style")
    print_diagnosis(rows)
    print(f"({time.perf_counter() - started:.0f} s for the table above)")
    for name in [v for v in args.variants.split(",") if v]:
        vrows = summarize(
            scenarios, run_all(corpus, scenarios, replace(cfg, variant=name), args.workers)
        )
        print_table(vrows, f"prototype '{name}': {VARIANTS[name].description}")
        print_diagnosis(vrows)
        print(f"prototype {name}: {headline(vrows, 'shadowlens').fields()}")
    flagger = " ".join(
        headline(rows, f"flagger-{k}").fields(f"flagger{k}_") for k in FLAGGER_THRESHOLDS
    )
    print(
        "\nheadline: detection = the lowest over "
        + ", ".join(s.label for s in scenarios if s.headline and s.target is not None)
        + f"; wrong_promotion over the scenarios that break the policy from the start. "
        f"{time.perf_counter() - started:.0f} s in all"
    )
    print(f"RESULT {headline(rows, 'shadowlens').fields()} {flagger}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
