"""Does similarity order real model pairs sensibly? AlpacaEval, gpt4_0613 against four models.

    .venv/bin/python bench/alpaca_ordering.py                  # all 805 instructions, ONNX
    .venv/bin/python bench/alpaca_ordering.py --limit 200 --backend torch

The primary is gpt4_0613; the candidates are two prompt variants of the same model
(gpt4_0613_concise, gpt4_0613_verbose), an older model of the same vendor
(gpt-3.5-turbo-1106) and a small open-weights model (Meta-Llama-3-8B-Instruct), on the same
instructions (../shared/data/alpaca_eval). A floor row pairs gpt4_0613 with the concise
variant's answer to the *next* instruction: what an off-topic answer scores.

Every pair goes through `comparators.pairs.score_pair` (lexical similarity, length ratio and
the signals of `shadowlens.comparators.signals`); semantic similarity is all-MiniLM-L6-v2 through
`shadowlens.comparators.semantic` (ONNX int8 by default) behind a `CachedEncoder`, so the primary's
answers are encoded once for all rows.

"Sensible", fixed before looking: both variants of the primary's own model are closer to it
than both other models, by mean and by median semantic similarity; and every real pair is
above the floor. The leaderboard's judged win rates (AlpacaEval 2, length-controlled) are
printed for context: quality, not closeness.

Also printed, side by side on the 1-2 KB primary answers, the cost per pair of the cheap
comparators that run on every pair. Last line:

    RESULT sim_<candidate>=<mean semantic similarity> ... ordering_sensible=<1|0>
"""

from __future__ import annotations

import argparse
import csv
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import orjson

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from shadowlens.comparators.pairs import PairScore, score_pair  # noqa: E402
from shadowlens.comparators.semantic import make_encoder, semantic_similarity  # noqa: E402
from shadowlens.comparators.signals import is_refusal, negation_mismatch, number_mismatch  # noqa: E402
from shadowlens.comparators.text import lexical_similarity  # noqa: E402
from shadowlens.schemas.events import Arm, Event, Output, Status, Task  # noqa: E402

PRIMARY = "gpt4_0613"
SAME_MODEL = ("gpt4_0613_concise", "gpt4_0613_verbose")
OTHER_MODELS = ("gpt-3.5-turbo-1106", "Meta-Llama-3-8B-Instruct")
FLOOR = "off-topic floor"  # the concise variant's answer to the next instruction


def load(data_dir: Path, model: str) -> list[dict]:
    return orjson.loads((data_dir / "alpaca_eval" / f"{model}.json").read_bytes())


def win_rates(data_dir: Path) -> dict[str, tuple[float, float]]:
    """Model directory name -> (length-controlled win rate, win rate) from the leaderboard."""
    out = {}
    with open(data_dir / "alpaca_eval" / "leaderboard_alpaca_eval_2.csv", newline="") as fh:
        for row in csv.DictReader(fh):
            parts = row["samples"].split("/results/")
            if len(parts) == 2:
                model = parts[1].split("/")[0]
                out[model] = (float(row["length_controlled_winrate"]), float(row["win_rate"]))
    return out


def _event(i: int, arm: Arm, model: str, text: str) -> Event:
    return Event(
        request_id=f"alpaca-{i}",
        experiment="alpaca",
        arm=arm,
        segment="all",
        task=Task.GENERATION,
        provider="alpaca_eval",
        model=model,
        start_time_ms=i,
        latency_ms=1.0,
        status=Status.OK,
        output=Output(text=text),
    )


def score_rows(primary: list[str], candidate: list[str], model: str) -> list[PairScore]:
    return [
        score_pair(_event(i, Arm.PRIMARY, PRIMARY, p), _event(i, Arm.CANDIDATE, model, c), {})
        for i, (p, c) in enumerate(zip(primary, candidate, strict=True))
    ]


def _share(values: list[bool | None]) -> float:
    known = [v for v in values if v is not None]
    return float(np.mean(known)) if known else float("nan")


def summarise(scores: list[PairScore], sims: np.ndarray) -> dict[str, float]:
    num = [s.number_mismatch for s in scores if s.number_mismatch is not None]
    return {
        "n": len(scores),
        "mean": float(sims.mean()),
        "p10": float(np.quantile(sims, 0.1)),
        "p50": float(np.quantile(sims, 0.5)),
        "p90": float(np.quantile(sims, 0.9)),
        "lex": float(np.mean([s.lexical_similarity for s in scores])),
        "len_p50": float(np.median([s.length_ratio for s in scores])),
        "ref_p": _share([s.primary_refusal for s in scores]),
        "ref_c": _share([s.candidate_refusal for s in scores]),
        "num_mm": float(np.mean(num)) if num else float("nan"),
        "num_any": _share(
            [None if s.number_mismatch is None else s.number_mismatch > 0 for s in scores]
        ),
        "neg": _share([(s.negation_mismatch or 0) > 0 for s in scores]),
    }


def per_pair_us(
    fn: Callable[[str, str], object], pairs: list[tuple[str, str]], rounds: int
) -> float:
    best = float("inf")
    for _ in range(rounds):
        t = time.perf_counter()
        for p, c in pairs:
            fn(p, c)
        best = min(best, (time.perf_counter() - t) / len(pairs))
    return best * 1e6


def cost_table(primary: list[str], candidate: list[str], model: str) -> None:
    pairs = [(p, c) for p, c in zip(primary, candidate, strict=True) if 1000 <= len(p) <= 2000]
    costs = {
        "lexical_similarity (existing)": per_pair_us(lexical_similarity, pairs, 5),
        "is_refusal (both arms)": per_pair_us(
            lambda p, c: (is_refusal(p), is_refusal(c)), pairs, 5
        ),
        "number_mismatch": per_pair_us(number_mismatch, pairs, 5),
        "negation_mismatch": per_pair_us(negation_mismatch, pairs, 5),
        "score_pair (all cheap scores)": per_pair_us(
            lambda p, c: score_pair(
                _event(0, Arm.PRIMARY, PRIMARY, p), _event(0, Arm.CANDIDATE, model, c), {}
            ),
            pairs,
            3,
        ),
    }
    base = costs["lexical_similarity (existing)"]
    print(
        f"\ncost per pair, {len(pairs)} pairs with a 1-2 KB primary answer ({PRIMARY} vs {model}),"
    )
    print("best of 5 rounds, run side by side:")
    for name, us in costs.items():
        print(f"  {name:32s} {us:8.1f} us   {us / base:5.2f}x lexical")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data-dir", type=Path, default=ROOT.parent / "shared" / "data")
    ap.add_argument("--limit", type=int, default=805, help="first N instructions (CPU budget)")
    ap.add_argument("--backend", default="onnx", choices=("onnx", "torch"))
    args = ap.parse_args()

    outputs = {m: load(args.data_dir, m) for m in (PRIMARY, *SAME_MODEL, *OTHER_MODELS)}
    base = outputs[PRIMARY]
    for model, rows in outputs.items():
        if [r["instruction"] for r in rows] != [r["instruction"] for r in base]:
            raise SystemExit(f"{model}: instructions do not line up with {PRIMARY}")
    n = min(args.limit, len(base))
    primary = [r["output"] for r in base[:n]]
    candidates = {m: [r["output"] for r in outputs[m][:n]] for m in (*SAME_MODEL, *OTHER_MODELS)}
    concise = candidates[SAME_MODEL[0]]
    candidates[FLOOR] = concise[1:] + concise[:1]

    t0 = time.perf_counter()
    encoder = make_encoder(args.backend, cache_entries=8 * n)
    print(f"encoder: {args.backend}, loaded in {time.perf_counter() - t0:.1f} s")
    rows: dict[str, dict[str, float]] = {}
    for model, texts in candidates.items():
        t = time.perf_counter()
        scores = score_rows(primary, texts, model)
        t_cheap = time.perf_counter() - t
        t = time.perf_counter()
        sims = semantic_similarity(encoder, zip(primary, texts, strict=True))
        t_sem = time.perf_counter() - t
        rows[model] = summarise(scores, sims)
        print(
            f"  {model}: score_pair {n / t_cheap:,.0f} pairs/s, semantic {n / t_sem:,.1f} pairs/s"
        )

    wins = win_rates(args.data_dir)
    header = (
        f"{'pair (' + PRIMARY + ' vs)':34s} {'n':>4s} {'sem mean':>8s} {'p10':>6s} {'p50':>6s} "
        f"{'p90':>6s} {'lex':>6s} {'len p50':>7s} {'ref P':>6s} {'ref C':>6s} {'num mm':>6s} "
        f"{'num>0':>6s} {'neg>0':>6s} {'LC win':>6s} {'win':>6s}"
    )
    print(f"\n{header}\n{'-' * len(header)}")
    for model, r in rows.items():
        lc, win = wins.get(model, (float("nan"), float("nan")))
        print(
            f"{model:34s} {r['n']:4d} {r['mean']:8.3f} {r['p10']:6.3f} {r['p50']:6.3f} "
            f"{r['p90']:6.3f} {r['lex']:6.3f} {r['len_p50']:7.2f} {r['ref_p']:6.1%} "
            f"{r['ref_c']:6.1%} {r['num_mm']:6.2f} {r['num_any']:6.1%} {r['neg']:6.1%} "
            f"{lc:6.1f} {win:6.1f}"
        )
    lc, win = wins.get(PRIMARY, (float("nan"), float("nan")))
    print(f"(primary {PRIMARY}: LC win {lc:.1f}, win {win:.1f}; 'nan': not on the leaderboard)")
    print(
        "columns: semantic similarity mean/quantiles; lex: mean lexical similarity;\n"
        "len p50: median candidate/primary length; ref P/C: refusal rate of primary/candidate;\n"
        "num mm: mean number mismatch where either answer has a number; num>0: share of those\n"
        "with any mismatch; neg>0: share of pairs with a negation flip;\n"
        "LC win / win: AlpacaEval 2 win rates (%)"
    )

    same = [rows[m] for m in SAME_MODEL]
    other = [rows[m] for m in OTHER_MODELS]
    sensible = all(
        min(r[k] for r in same) > max(r[k] for r in other) for k in ("mean", "p50")
    ) and all(r["mean"] > rows[FLOOR]["mean"] for r in same + other)
    order = sorted((m for m in rows if m != FLOOR), key=lambda m: -rows[m]["mean"])
    print(f"\norder by mean similarity: {' > '.join(order)}")
    print(
        f"ordering sensible (same model's variants above other models, all above floor): {sensible}"
    )

    cost_table(primary, candidates[OTHER_MODELS[0]], OTHER_MODELS[0])

    keys = {
        "gpt4_0613_concise": "concise",
        "gpt4_0613_verbose": "verbose",
        "gpt-3.5-turbo-1106": "gpt35_1106",
        "Meta-Llama-3-8B-Instruct": "llama3_8b",
        FLOOR: "floor",
    }
    parts = " ".join(f"sim_{keys[m]}={rows[m]['mean']:.3f}" for m in rows)
    print(f"RESULT n={n} {parts} ordering_sensible={int(sensible)}")


if __name__ == "__main__":
    main()
