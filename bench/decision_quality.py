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

`--variants` also runs prototypes of changes to the judge's classifiers (dq/variants.py),
handed to the judge as its `Classifiers` set, to measure them before anyone edits the judge.

The parts live in dq/ beside this file: corpus, scenarios, runs, the judge's fast path
(fastpath), the baselines, the variants, the process pool (runner) and the report.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

from dq.corpus import SIBLING, build_corpus
from dq.report import headline, print_diagnosis, print_table, summarize
from dq.runner import run_all
from dq.scenarios import KAYENTA_POINTS, SCENARIOS, Config
from dq.variants import VARIANTS
from shadowlens.judge.policy import load_policy
from shadowlens.replay.datasets import load_full, load_sample
from shadowlens.replay.models import PRIMARY_MODEL


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
        print_table(vrows, f"prototype '{name}': {VARIANTS[name].description}")
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
