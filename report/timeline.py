"""The decision timeline: the ramp stage over event time, and every decision with its
evidence.

Its own module because it is the largest section, with helpers of its own: the ramp stages
spaced evenly on the chart, and long runs of holds left out of the table.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import partial

from shadowlens.judge.verdicts import Action
from shadowlens.report import charts
from shadowlens.report.markup import (
    action_span,
    e,
    fmt_int,
    fmt_time,
    fmt_value,
    table,
    verdict_cell,
)
from shadowlens.report.model import ReportData
from shadowlens.report.rows import DecisionRow, EvidenceRow

ACTION_COLORS = {
    Action.ROLLBACK: "#d62728",
    Action.HOLD: "#8c8c8c",
    Action.PROMOTE: "#2ca02c",
}
MAX_DECISION_ROWS = 60  # beyond this the table keeps transitions and the last decision


def _evidence_table(evidence: Sequence[EvidenceRow]) -> str:
    rows = [
        [
            e(x.metric),
            e(x.segment),
            verdict_cell(x.verdict),
            fmt_value(x.observed),
            fmt_value(x.reference),
            fmt_value(x.threshold),
            fmt_value(x.bound),
            fmt_int(x.n),
            "yes" if x.critical else "",
            f'<td class="l">{e(x.reason)}</td>',
            f'<td class="l">{e(", ".join(x.example_request_ids))}</td>',
        ]
        for x in evidence
    ]
    return table(
        [
            "metric",
            "segment",
            "verdict",
            "observed",
            "reference",
            "threshold",
            "bound",
            "n",
            "critical",
            "reason",
            "examples",
        ],
        rows,
        left=3,
    )


def stage_level(stages: Sequence[float], percent: float) -> float:
    """Position of a traffic share on the ramp: stage i is at i, shares between stages in
    between (the ramp is far from linear: 1, 5, 10, 25 ... %)."""
    if percent <= stages[0]:
        return 0.0
    for i in range(1, len(stages)):
        if percent <= stages[i]:
            return i - 1 + (percent - stages[i - 1]) / (stages[i] - stages[i - 1])
    return float(len(stages) - 1)


def _shown_decisions(decisions: Sequence[DecisionRow]) -> list[DecisionRow]:
    if len(decisions) <= MAX_DECISION_ROWS:
        return list(decisions)
    last = decisions[-1]
    kept = [x for x in decisions if x.action != Action.HOLD or x is last]
    return kept[-MAX_DECISION_ROWS:]


def timeline(d: ReportData) -> str:
    ds = d.decisions
    if not ds:
        return (
            '<section id="timeline"><h2>Decision timeline</h2>'
            '<p class="note">No decisions recorded for this experiment.</p></section>'
        )
    stages = list(d.policy.ramp.stages_percent)
    level = partial(stage_level, stages)
    xs = [x.decided_at.timestamp() for x in ds]
    ys = [level(x.to_percent) for x in ds]
    # the stage before the first decision
    xs, ys = [xs[0] - 60.0, *xs], [level(ds[0].from_percent), *ys]
    markers = [
        charts.Marker(
            x.decided_at.timestamp(),
            level(x.to_percent),
            ACTION_COLORS.get(x.action, "#333"),  # type: ignore[call-overload]
            "" if x.action == Action.HOLD else f"{x.to_percent:g}%",
            f"{fmt_time(x.decided_at)} epoch {x.epoch}: {x.action} "
            f"{x.from_percent:g}% -> {x.to_percent:g}% ({x.reason})",
        )
        for x in ds
    ]
    chart = charts.step_chart(
        "Ramp stage over event time",
        xs,
        ys,
        markers,
        xlabel="event time (UTC)",
        ylabel="ramp stage",
        ylim=(0.0, float(len(stages) - 1)),
        yticks=[float(i) for i in range(len(stages))],
        yfmt=lambda i: f"{stages[round(i)]:g} %",
        time_axis=True,
        frame=charts.Frame(width=1100, height=260, left=56),
    )
    shown = _shown_decisions(ds)
    rows = []
    for x in shown:
        failing = x.failing
        ev = (
            f"<details><summary>{len(x.evidence)} verdicts"
            f"{f', {len(failing)} failing' if failing else ''}</summary>"
            f"{_evidence_table(x.evidence)}</details>"
            if x.evidence
            else ""
        )
        rows.append(
            [
                f'<td class="l nw">{e(fmt_time(x.decided_at))}</td>',
                str(x.epoch),
                action_span(x.action),
                f'<td class="l nw">{e(f"{x.from_percent:g} % → {x.to_percent:g} %")}</td>',
                f'<td class="l">{e(x.reason)}{ev}</td>',
            ]
        )
    omitted = len(ds) - len(shown)
    note = (
        f'<p class="note">{omitted} hold decisions are left out of the table (all are in '
        "the chart).</p>"
        if omitted
        else ""
    )
    legend = " ".join(
        f'<span style="color:{c}">&#9679;</span> {e(a)}' for a, c in ACTION_COLORS.items()
    )
    return (
        '<section id="timeline"><h2>Decision timeline</h2><figure>'
        f"{chart}<figcaption>{legend}; hover a point for the decision.</figcaption></figure>"
        + table(
            ["decided at (event time)", "epoch", "action", "traffic", "reason / evidence"],
            rows,
            left=5,
            table_id="decisions-table",
        )
        + note
        + "</section>"
    )
