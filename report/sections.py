"""The page's table sections: the go/no-go summary, the comparison matrix, the per-segment
table, cost and payback, and input and pairing.

The sections that draw charts live in `distributions` and `timeline`; every section is a
function of the `ReportData` that returns its HTML.
"""

from __future__ import annotations

from shadowlens.report.cost import DAYS_PER_MONTH, CostProjection
from shadowlens.report.markup import (
    COLORS,
    e,
    fmt_int,
    fmt_num,
    fmt_pct,
    fmt_seconds,
    fmt_time,
    fmt_usd,
    table,
    verdict_cell,
)
from shadowlens.report.model import ReportData
from shadowlens.report.rows import OVERALL, ArmRow
from shadowlens.report.verdict import GoNoGo

STATUS_CLASS = {"GO": "go", "NO-GO": "nogo", "NOT YET": "wait", "NO DATA": "wait"}


def header(d: ReportData) -> str:
    o = d.overview
    return (
        f"<header><h1>Migration report: {e(d.experiment)}</h1>"
        f'<div class="meta">event time {e(fmt_time(o.first_event))} to '
        f"{e(fmt_time(o.last_event))} &middot; source <code>{e(d.source)}</code> &middot; "
        f"generated {e(fmt_time(d.generated_at))}</div></header>"
    )


def summary(d: ReportData) -> str:
    v, o = d.verdict, d.overview
    total = next((s for s in d.segments if s.is_total), None)
    cand = next((a for a in d.arms if a.role == "candidate"), None)
    prim = next((a for a in d.arms if a.role == "primary"), None)
    p99 = None
    if cand and prim and cand.latency_ms[2] and prim.latency_ms[2]:
        p99 = cand.latency_ms[2] / prim.latency_ms[2]
    cost_delta = None
    c = d.cost
    if c.primary_per_request_usd and c.candidate_per_request_usd is not None:
        cost_delta = c.candidate_per_request_usd / c.primary_per_request_usd - 1
    stage = f"{v.last.to_percent:g} %" if v.last else "-"
    cards = [
        ("pairs", fmt_int(o.paired), "paired requests"),
        ("pairing-rate", fmt_pct(o.pairing_rate), "pairing rate"),
        ("quality", fmt_num(total.quality if total else None), "quality vs primary"),
        ("p99-ratio", "-" if p99 is None else f"{p99:.2f}x", "p99 candidate/primary, all data"),
        ("candidate-errors", fmt_pct(cand.error_rate if cand else None), "candidate error rate"),
        (
            "cost-delta",
            "-" if cost_delta is None else f"{cost_delta:+.1%}",
            "cost / request vs primary",
        ),
        ("stage", stage, "candidate traffic now"),
    ]
    cards_html = "".join(
        f'<div class="card" id="card-{k}"><div class="v">{e(val)}</div>'
        f'<div class="k">{e(label)}</div></div>'
        for k, val, label in cards
    )
    return (
        f'<section id="summary"><h2>Go / no-go</h2><div class="banner">'
        f'<span class="badge {STATUS_CLASS[v.status]}" id="go-no-go">{e(v.status)}</span>'
        f"<div><div><b>{e(v.headline)}</b></div>"
        + (
            f'<div class="note">last decision: epoch {v.last.epoch}, '
            f"{e(fmt_time(v.last.decided_at))}: {e(v.last.reason)}</div>"
            if v.last
            else ""
        )
        + f'</div></div><div class="cards">{cards_html}</div>{checks(v, d)}</section>'
    )


def checks(v: GoNoGo, d: ReportData) -> str:
    """The last decision's verdicts as a metric x segment grid, next to the policy limits:
    the segments worst first (the verdict's order), each cell's evidence on hover, and the
    all-segments evidence in the last column, so every segment is on screen before it."""
    if not v.checks:
        return '<p class="note">No verdicts yet.</p>'
    metrics = list(dict.fromkeys(c.metric for c in v.checks))
    segs = list(dict.fromkeys(c.segment for c in v.checks if c.segment != OVERALL))
    cell = {(c.metric, c.segment): c for c in v.checks}
    rows = []
    for m in metrics:
        overall = cell.get((m, OVERALL))
        limit = overall.limit if overall else next(c.limit for c in v.checks if c.metric == m)
        row = [
            e(m),
            f'<td class="l nw">{e(limit)}</td>',
            verdict_cell(overall.verdict) if overall else "-",
        ]
        for seg in segs:
            c = cell.get((m, seg))
            row.append(
                f'<td class="l v-{e(c.verdict)}" title="{e(c.detail)}">{e(c.verdict)}</td>'
                if c
                else "<td></td>"
            )
        row.append(f'<td class="l">{e(overall.detail) if overall else ""}</td>')
        rows.append(row)
    p = d.policy
    return (
        "<h3>Verdicts of the last decision against the policy</h3>"
        + table(
            ["metric", "policy limit", "all segments", *segs, "evidence (all segments)"],
            rows,
            left=4 + len(segs),
            table_id="verdicts",
        )
        + f'<p class="note">Hover a segment verdict for its evidence. alpha {p.judge.alpha:g} '
        f"over the whole ramp; promotion needs {p.ramp.min_pairs} pairs and "
        f"{p.ramp.min_hold_ms / 1000:g} s per stage; ramp "
        f"{e(' -> '.join(f'{s:g}' for s in p.ramp.stages_percent))} %.</p>"
    )


def _price(arm: ArmRow) -> str:
    parts = []
    for model, price in arm.prices:
        if price is None:
            parts.append(f"{e(model)}: not in policy")
        else:
            parts.append(f"${price.input_per_mtok_usd:g} in / ${price.output_per_mtok_usd:g} out")
    return "<br>".join(parts) or "-"


def matrix(d: ReportData) -> str:
    rows = []
    for a in d.arms:
        quality = "reference" if a.role == "primary" else fmt_num(a.quality)
        rows.append(
            [
                f'<span style="color:{COLORS.get(a.role, "#333")}">&#9632;</span> {e(a.role)}',
                e(", ".join(a.providers) or "-"),
                e(", ".join(a.models) or "-"),
                _price(a),
                fmt_int(a.calls),
                fmt_seconds(a.latency_ms[0]),
                fmt_seconds(a.latency_ms[1]),
                fmt_pct(a.error_rate),
                quality,
                fmt_usd(a.cost_per_request_usd),
            ]
        )
    return (
        '<section id="matrix"><h2>Comparison matrix (measured)</h2>'
        + table(
            [
                "arm",
                "provider",
                "model",
                "price per 1M tokens",
                "calls",
                "p50",
                "p95",
                "error rate",
                "quality vs primary",
                "cost / request",
            ],
            rows,
            left=4,
            table_id="matrix-table",
        )
        + '<p class="note">Prices from the policy (<code>[prices.&lt;model&gt;]</code>); '
        "latency of successful calls; a missing half counts as a failure of its arm; "
        "quality is the task's agreement with the primary in [0, 1] (the replica's is the "
        "primary's own noise floor).</p></section>"
    )


def segments(d: ReportData) -> str:
    rows, classes = [], []
    for s in d.segments:
        rows.append(
            [
                "all segments" if s.is_total else e(s.segment),
                fmt_int(s.n),
                fmt_pct(s.pairing_rate),
                fmt_num(s.quality),
                " / ".join(fmt_seconds(v).removesuffix(" s") for v in s.primary_latency_ms),
                " / ".join(fmt_seconds(v).removesuffix(" s") for v in s.candidate_latency_ms),
                fmt_pct(s.primary_error_rate),
                fmt_pct(s.candidate_error_rate),
                fmt_usd(s.primary_cost_usd),
                fmt_usd(s.candidate_cost_usd),
            ]
        )
        classes.append("total" if s.is_total else "")
    return (
        '<section id="segments"><h2>Per segment (primary vs candidate)</h2>'
        + table(
            [
                "segment",
                "n",
                "pairing rate",
                "quality",
                "primary p50/p95/p99 s",
                "candidate p50/p95/p99 s",
                "primary errors",
                "candidate errors",
                "primary $/req",
                "candidate $/req",
            ],
            rows,
            row_class=classes,
            table_id="segments-table",
        )
        + "</section>"
    )


def cost(d: ReportData) -> str:
    c: CostProjection = d.cost
    if c.monthly_requests is None:
        volume = "unknown (give --monthly-requests)"
    elif c.monthly_requests_given:
        volume = f"{fmt_int(c.monthly_requests)} requests per month (given)"
    else:
        volume = (
            f"{fmt_int(c.monthly_requests)} requests per month (the observed "
            f"{c.requests_per_second:,.2f} req/s over {DAYS_PER_MONTH:.2f} days)"
        )
    savings = c.monthly_savings_usd
    rows = [
        [
            "cost per request",
            fmt_usd(c.primary_per_request_usd),
            fmt_usd(c.candidate_per_request_usd),
        ],
        [
            "monthly cost at 100 % of traffic",
            fmt_usd(c.primary_monthly_usd),
            fmt_usd(c.candidate_monthly_usd),
        ],
    ]
    rows = [[e(r[0]), e(r[1]), e(r[2])] for r in rows]
    verdict = (
        "-"
        if savings is None
        else (
            f"saves {fmt_usd(savings)} per month"
            if savings >= 0
            else f"costs {fmt_usd(-savings)} more per month"
        )
    )
    migration = fmt_usd(c.migration_cost_usd) if c.migration_cost_usd > 0 else "not given"
    return (
        '<section id="cost"><h2>Cost and payback</h2>'
        f'<p id="monthly-requests">Volume: <b>{e(volume)}</b></p>'
        + table(["", "primary", "candidate"], rows, table_id="cost-table")
        + f'<div class="cards"><div class="card" id="card-savings"><div class="v">'
        f'{e(verdict)}</div><div class="k">moving all traffic to the candidate</div></div>'
        f'<div class="card"><div class="v">{e(migration)}</div><div class="k">migration cost'
        f'</div></div><div class="card" id="card-payback"><div class="v">{e(c.payback_text)}'
        '</div><div class="k">payback period</div></div></div>'
        '<p class="note">Cost per request is the mean of what the gateway reported, or the '
        "tokens priced from the policy. Set the volume with <code>--monthly-requests</code> "
        "and the one-off cost with <code>--migration-cost-usd</code>.</p></section>"
    )


def data_quality(d: ReportData) -> str:
    o = d.overview
    rows = [
        ["requests", fmt_int(o.requests)],
        ["paired", fmt_int(o.paired)],
        ["candidate missing (orphans)", fmt_int(o.candidate_missing)],
        ["primary missing (orphans)", fmt_int(o.primary_missing)],
        ["split-mode singles", fmt_int(o.split)],
        ["replica pairs", fmt_int(o.replica_pairs)],
    ]
    lim = d.limits
    if lim.other_pairs:
        rows.append(
            [
                f"segments beyond limits.max_segments = {d.policy.limits.max_segments}, "
                "judged as (other)",
                f"{fmt_int(lim.other_pairs)} pairs in {fmt_int(lim.other_segments)} segments",
            ]
        )
    letters = [[e(reason), fmt_int(n)] for reason, n in d.dead_letters] or [["none", "0"]]
    return (
        '<section id="data-quality"><h2>Input and pairing</h2><div class="charts"><div>'
        + table(["", "count"], rows, table_id="pairing-table")
        + "</div><div>"
        + table(
            ["dead letters by reason (all experiments)", "count"], letters, table_id="dead-letters"
        )
        + "</div></div>"
        + _unjudged(d)
        + clock_skew(d)
        + "</section>"
    )


def _unjudged(d: ReportData) -> str:
    if d.limits.windowed_segments:
        return ""
    return (
        '<p class="note" id="unjudged">No window of this experiment has been judged: its '
        "pairs are stored, but either no window has closed yet, or the worker already judged "
        f"<code>limits.max_experiments</code> = {d.policy.limits.max_experiments} other "
        "experiments (<code>shadowlens_limit_overflow_total{kind=&quot;experiment&quot;}</code>"
        "). Without decisions, routers fall back to the primary when their lease lapses.</p>"
    )


def clock_skew(d: ReportData) -> str:
    """Each arm's start time minus its primary's, per provider: the gateways' clock offset
    plus dispatch delay. Pairing never compares two clocks; this shows how far they drift."""
    rows = [
        [e(s.arm), e(s.provider or "-"), fmt_int(s.pairs), *(_signed_seconds(v) for v in s.skew_ms)]
        for s in d.clock_skew
    ]
    if not rows:
        return ""
    return (
        "<h3>Clock skew: start of each half minus its primary's</h3>"
        + table(
            ["arm", "provider", "pairs", "p1", "median", "p99"], rows, left=2, table_id="clock-skew"
        )
        + f'<p class="note">Pairing tolerates up to {d.policy.pairing.max_skew_ms / 1000:g} s '
        "(<code>pairing.max_skew_ms</code>); an event dated further ahead of the stream is "
        "dead-lettered as <code>future_timestamp</code>.</p>"
    )


def _signed_seconds(ms: float | None) -> str:
    return "-" if ms is None else f"{ms / 1000:+,.2f} s"
