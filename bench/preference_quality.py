"""Does shadowlens decide generation quality right? Migrations from gpt4_1106_preview to
every model a real judge compared with it, judged with and without the preference judge.

    .venv/bin/python bench/preference_quality.py            # 6,500 requests per replay
    .venv/bin/python bench/preference_quality.py --quick    # 2,500: rollbacks, no full walk
    .venv/bin/python bench/preference_quality.py --semantic onnx   # similarity by MiniLM

For each candidate with recorded judgments in --judge-data (AlpacaEval 2's GPT-4 Turbo
judge against gpt4_1106_preview, ../shared/data/alpaca_eval_judge; gpt4_1106_preview itself
included: the A/A), two replays of the same traffic (`shadowlens replay` from
gpt4_1106_preview, real outputs at Azure trace arrivals, the default policy):

- shadowlens: ``--judge recorded``, the pairwise preference judge and its guard;
- similarity alone: ``--judge off``, the decision the same policy makes from similarity to
  the primary (lexical, or MiniLM with ``--semantic onnx``) against its reference, the
  replica arm that `shadowlens replay` sends by default (``--replica-share 0.2``; a replay's
  replica answers with gpt4_0613_concise's outputs, replay/models.py).

Right, fixed before looking: parity (FuseChat-Llama-3.2-3B-Instruct, and the primary
against itself) is never rolled back on quality (`quality` or `preference`); the
regressions (FuseChat-Llama-3.2-1B-Instruct, claude-2, gpt-3.5-turbo-1106,
gpt4_0613_concise) are. Rollbacks on other metrics (claude-2 is also slower) do not count
either way. The table gives the judge's recorded win rate over all 805 instructions,
shadowlens's win rate over the judged pairs with its 95 % anytime-valid bounds and the
length-adjusted rate, the mean similarity to the primary, and both decisions. Last line:

    RESULT decisions_right=K/N similarity_alone_right=K/N aa_win_rate=... judge_pairs_per_s=...

``judge_pairs_per_s``: judged pairs per second of wall time spent in the judge step (the
recorded judge is a lookup; a live judge's rate is its budget).
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import orjson

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from shadowlens.comparators.preference import RecordedJudge  # noqa: E402
from shadowlens.judge.policy import Policy, load_policy  # noqa: E402
from shadowlens.judge.verdicts import Action, Decision, Metric  # noqa: E402
from shadowlens.replay.faults import Faults  # noqa: E402
from shadowlens.replay.run import ReplayResult, TrafficSpec, built_payloads, run_replay  # noqa: E402
from shadowlens.report.preference import ALL, preference_rows  # noqa: E402
from shadowlens.report.summary import judged_pairs  # noqa: E402
from shadowlens.streams.preference_stage import PreferenceStep, load_recorded  # noqa: E402
from shadowlens.streams.semantic_stage import make_cascade  # noqa: E402

PRIMARY = "gpt4_1106_preview"
PARITY = (PRIMARY, "FuseChat-Llama-3.2-3B-Instruct")
QUALITY_METRICS = frozenset({Metric.QUALITY, Metric.PREFERENCE})


@dataclass(frozen=True, slots=True)
class Outcome:
    """What one replay decided about quality, and how it ended."""

    quality_rollback: bool  # rolled back with quality or preference failing
    summary: str


def outcome(decisions: Sequence[Decision]) -> Outcome:
    rollbacks = [d for d in decisions if d.action == Action.ROLLBACK]
    failing = {e.metric for d in rollbacks for e in d.failing}
    final = decisions[-1].to_percent if decisions else 0.0
    if rollbacks:
        first = rollbacks[0]
        metrics = ", ".join(sorted(str(m) for m in failing))
        minutes = (first.decided_at_ms - decisions[0].decided_at_ms) / 60_000 + 1
        text = f"rollback at {first.from_percent:g} % after {minutes:.0f} min ({metrics})"
    elif final == 100:
        text = "promoted to 100 %"
    else:
        text = f"holding at {final:g} %"
    return Outcome(bool(failing & QUALITY_METRICS), text)


def replay(spec: TrafficSpec, policy: Policy, enrich: object) -> ReplayResult:
    return run_replay(built_payloads(spec, Faults()), policy, None, enrich=enrich)  # type: ignore[arg-type]


def recorded_win_rate(path: Path) -> float:
    prefs = [float(r["preference"]) - 1 for r in orjson.loads(path.read_bytes())]
    return float(np.mean(prefs))


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data-dir", type=Path, default=ROOT.parent / "shared" / "data")
    ap.add_argument("--judge-data", type=Path, help="default: DATA_DIR/alpaca_eval_judge")
    ap.add_argument("--requests", type=int, default=6_500)
    ap.add_argument("--quick", action="store_true", help="2,500 requests per replay")
    ap.add_argument("--semantic", default="off", help="similarity alone: off, torch or onnx")
    ap.add_argument(
        "--replica-share", type=float, default=0.2, help="as `shadowlens replay`'s default"
    )
    args = ap.parse_args(argv)
    judge_data = args.judge_data or args.data_dir / "alpaca_eval_judge"
    requests = 2_500 if args.quick else args.requests
    policy = load_policy()
    judge = RecordedJudge(load_recorded(judge_data))
    files = sorted(judge_data.glob("*.json"), key=lambda p: (p.stem != PRIMARY, p.stem))
    print(
        f"{len(files)} candidates with recorded judgments against {PRIMARY} ({judge_data}); "
        f"{len(judge.judgments)} judged answer pairs (both orders); {requests} requests per "
        f"replay ({args.replica_share:.0%} with a replica arm: similarity's reference), "
        f"default policy, similarity alone with --semantic {args.semantic}"
    )
    header = (
        f"{'candidate':31} {'AE win':>6} {'shadowlens win [95 % bounds]':>29} {'len-adj':>7} "
        f"{'sim':>5}  {'shadowlens decision':53} {'ok':2}  {'similarity alone':53} ok"
    )
    print(header)
    print("-" * len(header))
    right = alone_right = judged = 0
    judge_seconds, aa_win = 0.0, float("nan")
    started = time.perf_counter()
    for path in files:
        candidate = path.stem
        spec = TrafficSpec(
            args.data_dir, f"to-{candidate}", PRIMARY, candidate, requests, args.replica_share
        )
        step = PreferenceStep(judge, policy.preference.budget)
        with_judge = replay(spec, policy, step)
        alone = replay(spec, policy, make_cascade(args.semantic, policy))
        judge_seconds += step.seconds
        total = next(
            r for r in preference_rows(judged_pairs(with_judge.memory.scores)) if r.segment == ALL
        )
        judged += total.judged
        if candidate == PRIMARY:
            aa_win = total.win_rate or float("nan")
        sims = [
            s.quality
            for s in alone.memory.scores
            if s.comparison == "candidate" and s.quality is not None
        ]
        want_rollback = candidate not in PARITY
        mine, theirs = outcome(with_judge.memory.made), outcome(alone.memory.made)
        ok, alone_ok = (
            mine.quality_rollback == want_rollback,
            theirs.quality_rollback == want_rollback,
        )
        right += ok
        alone_right += alone_ok
        bounds = f"{total.win_rate:.3f} [{total.lo:.3f}, {total.hi:.3f}]"
        print(
            f"{candidate:31} {recorded_win_rate(path):6.3f} {bounds:>29} "
            f"{total.length_adjusted or float('nan'):7.3f} {np.mean(sims):5.3f}  "
            f"{mine.summary:53} {'y' if ok else 'N':2}  {theirs.summary:53} "
            f"{'y' if alone_ok else 'N'}"
        )
    n = len(files)
    print(
        f"\n{time.perf_counter() - started:.0f} s; AE win: the recorded judge over all 805 "
        "instructions; shadowlens win: judged pairs of the replay (ties half); sim: mean "
        "similarity to the primary (the quality metric's input); ok: parity not rolled back "
        "on quality, regressions rolled back on quality or preference"
    )
    print(
        f"RESULT decisions_right={right}/{n} similarity_alone_right={alone_right}/{n} "
        f"aa_win_rate={aa_win:.3f} judge_pairs_per_s={judged / max(judge_seconds, 1e-9):.0f}"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
