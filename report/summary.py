"""The replay's console report: a per-segment table, then every decision."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from datetime import UTC, datetime

from rich.console import Console
from rich.markup import escape
from rich.table import Table
from shadowlens.comparators.aggregate import Aggregate
from shadowlens.comparators.cascade import sampled_fraction
from shadowlens.comparators.pairs import PairScore
from shadowlens.judge.verdicts import Action, Decision
from shadowlens.report.preference import JudgedPair, PreferenceRow, preference_rows

TOTAL = "(all)"


def segment_aggregates(scores: Sequence[PairScore], comparison: str) -> dict[str, Aggregate]:
    """One aggregate per segment plus the total, for the pairs of one comparison."""
    aggs: dict[str, Aggregate] = {}
    for score in scores:
        if score.comparison != comparison:
            continue
        for key in (score.segment, TOTAL):
            aggs.setdefault(key, Aggregate()).add(score)
    return dict(sorted(aggs.items(), key=lambda kv: (kv[0] == TOTAL, kv[0])))


def _ms(x: float | None) -> str:
    return "-" if x is None else f"{x:,.0f}"


def _pct(x: float | None) -> str:
    return "-" if x is None else f"{x:.1%}"


def _num(x: float | None, fmt: str = ".3f") -> str:
    return "-" if x is None else format(x, fmt)


def segment_table(aggs: dict[str, Aggregate], title: str) -> Table:
    table = Table(title=title, title_justify="left")
    for col in ("segment", "n", "paired", "quality", "exact"):
        table.add_column(col, justify="right" if col != "segment" else "left")
    for arm in ("prim", "cand"):
        table.add_column(f"{arm} p50/p95/p99 ms", justify="right")
    for col in ("prim err", "cand err", "prim $/req", "cand $/req"):
        table.add_column(col, justify="right")
    for segment, agg in aggs.items():
        latency = {
            arm: "/".join(_ms(agg.latency_quantile(arm, q)) for q in (0.5, 0.95, 0.99))
            for arm in ("primary", "candidate")
        }
        table.add_row(
            segment,
            str(agg.n_requests + agg.n_split),
            _pct(agg.pairing_rate),
            _num(agg.quality.mean),
            _pct(agg.exact_matches / agg.n_paired if agg.n_paired else None),
            latency["primary"],
            latency["candidate"],
            _pct(agg.error_rate("primary")),
            _pct(agg.error_rate("candidate")),
            _num(agg.primary_cost_usd.mean, ".5f"),
            _num(agg.candidate_cost_usd.mean, ".5f"),
        )
    return table


def preference_table(rows: Sequence[PreferenceRow]) -> Table:
    """The judge's win rate of the candidate per segment, with anytime-valid 95 % bounds."""
    table = Table(title="Preference judge: candidate vs primary, per segment", title_justify="left")
    for col in ("segment", "judged", "win rate", "95 % bounds", "length-adj.", "not judged", "$"):
        table.add_column(col, justify="left" if col in ("segment", "not judged") else "right")
    for r in rows:
        bounds = "-" if r.lo is None or r.hi is None else f"[{r.lo:.1%}, {r.hi:.1%}]"
        table.add_row(
            r.segment,
            str(r.judged),
            _pct(r.win_rate),
            bounds,
            _pct(r.length_adjusted),
            ", ".join(f"{k} {v}" for k, v in r.unjudged.items()) or "-",
            f"{r.cost_usd:.4f}",
        )
    return table


def judged_pairs(scores: Sequence[PairScore]) -> list[JudgedPair]:
    """What the preference table reads of the candidate's pairs."""
    return [
        JudgedPair(
            s.request_id,
            s.segment,
            s.preference,
            s.preference_skip,
            s.length_ratio,
            s.judge_cost_usd,
        )
        for s in scores
        if s.comparison == "candidate"
    ]


def decision_table(decisions: Sequence[Decision]) -> Table:
    table = Table(title="Decisions (event time)", title_justify="left")
    for col in ("time", "experiment", "epoch", "action", "traffic", "reason"):
        table.add_column(col)
    style = {Action.ROLLBACK: "bold red", Action.PROMOTE: "green", Action.HOLD: "dim"}
    for d in decisions:
        when = datetime.fromtimestamp(d.decided_at_ms / 1000, UTC).strftime("%H:%M:%S")
        table.add_row(
            when,
            d.experiment,
            str(d.epoch),
            f"[{style[d.action]}]{d.action}[/]",
            f"{d.from_percent:g}% -> {d.to_percent:g}%",
            escape(d.reason),
        )
    return table


def print_summary(
    console: Console,
    scores: Sequence[PairScore],
    decisions: Sequence[Decision],
    counts: Counter[str],
) -> None:
    for comparison in ("candidate", "replica"):
        aggs = segment_aggregates(scores, comparison)
        if aggs:
            console.print(segment_table(aggs, f"Primary vs {comparison}, per segment"))
    rows = preference_rows(judged_pairs(scores))
    if rows:
        console.print(preference_table(rows))
    console.print(decision_table(decisions))
    console.print(
        "counts: " + ", ".join(f"{k}={v}" for k, v in sorted(counts.items())), highlight=False
    )
    fraction = sampled_fraction(counts)
    if fraction is not None:
        measured = counts["semantic.measured"]
        console.print(
            f"semantic: {measured} of {measured + counts['semantic.unsampled']} text pairs "
            f"measured ({fraction:.1%}); the others were over the [semantic] budget and carry "
            "weight 0 in quality",
            highlight=False,
            markup=False,
        )
