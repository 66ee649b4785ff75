"""The page's preference section: the judge's win rate of the candidate per segment with
its bounds, and the comparisons the candidate lost, both answers side by side."""

from __future__ import annotations

from shadowlens.report.markup import e, fmt_int, fmt_pct, fmt_usd, table
from shadowlens.report.model import ReportData
from shadowlens.report.preference import LEVEL, LostComparison

ANSWER_CHARS = 1_200  # of each answer shown; the store keeps them whole


def _clip(text: str) -> str:
    return text if len(text) <= ANSWER_CHARS else text[:ANSWER_CHARS] + " [...]"


def _lost(c: LostComparison) -> str:
    answer = '<td class="l" style="white-space:pre-wrap;width:50%">{}</td>'
    return (
        f"<details><summary>{e(c.request_id)} ({e(c.segment)}): the candidate won "
        f"{fmt_pct(c.preference, 0)}</summary>"
        + (f'<p class="note">Request: {e(_clip(c.prompt))}</p>' if c.prompt else "")
        + table(
            [f"primary ({c.primary_model})", f"candidate ({c.candidate_model})"],
            [[answer.format(e(_clip(c.primary))), answer.format(e(_clip(c.candidate)))]],
            left=2,
        )
        + "</details>"
    )


def preference(d: ReportData) -> str:
    """Empty when the experiment ran without a judge."""
    if not d.preference:
        return ""
    rows, classes = [], []
    for r in d.preference:
        bounds = "-" if r.lo is None or r.hi is None else f"{fmt_pct(r.lo)} - {fmt_pct(r.hi)}"
        not_judged = ", ".join(f"{k}: {fmt_int(v)}" for k, v in r.unjudged.items())
        rows.append(
            [
                "all segments" if r.is_total else e(r.segment),
                fmt_int(r.judged),
                fmt_pct(r.win_rate),
                bounds,
                fmt_pct(r.length_adjusted),
                e(not_judged or "-"),
                fmt_usd(r.cost_usd),
            ]
        )
        classes.append("total" if r.is_total else "")
    floor = d.policy.preference.min_win_rate
    lost = "".join(_lost(c) for c in d.lost)
    if lost:
        lost = "<h3>Comparisons the candidate lost worst</h3>" + lost
    return (
        '<section id="preference"><h2>Preference judge: does it prefer the candidate?</h2>'
        + table(
            [
                "segment",
                "judged",
                "win rate",
                f"{LEVEL:.0%} anytime-valid bounds",
                "length-adjusted",
                "not judged",
                "judge spend",
            ],
            rows,
            row_class=classes,
            table_id="preference-table",
        )
        + f'<p class="note">The candidate\'s wins against the primary, ties counting half: '
        f"parity is 50 %, the policy rolls back below {fmt_pct(floor, 0)} "
        "(<code>[preference] min_win_rate</code>) and passes only while the answers stay "
        "answers (similarity, length, language, refusals). Length-adjusted: the win rate at "
        "equal answer length (AlpacaEval's length-controlled idea).</p>" + lost + "</section>"
    )
