"""Render a `shadowlens.report.model.ReportData` as one self-contained HTML page.

Inline CSS, inline SVG charts (`shadowlens.report.charts`), no script and no external resource: a
Content-Security-Policy forbids both, so the file shows the same on an air-gapped laptop
and in a mail attachment. Every string that comes from the data goes through `e()`.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import UTC, datetime
from functools import partial
from html import escape

from shadowlens.judge.verdicts import Action
from shadowlens.report import charts
from shadowlens.report.cost import DAYS_PER_MONTH, CostProjection
from shadowlens.report.model import ReportData
from shadowlens.report.rows import OVERALL, Agreement, ArmRow, DecisionRow, EvidenceRow
from shadowlens.report.verdict import GoNoGo

COLORS = {"primary": "#4c78a8", "candidate": "#f58518", "replica": "#54a24b"}
ACTION_COLORS = {
    Action.ROLLBACK: "#d62728",
    Action.HOLD: "#8c8c8c",
    Action.PROMOTE: "#2ca02c",
}
STATUS_CLASS = {"GO": "go", "NO-GO": "nogo", "NOT YET": "wait", "NO DATA": "wait"}
MAX_DECISION_ROWS = 60  # beyond this the table keeps transitions and the last decision

CSS = """
:root{--fg:#1f2328;--muted:#59636e;--line:#d1d9e0;--bg:#f6f8fa;--go:#1a7f37;--nogo:#cf222e;
--wait:#9a6700}
*{box-sizing:border-box}
body{margin:0;font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,"DejaVu Sans",sans-serif;
color:var(--fg);background:#fff}
main{max-width:1180px;margin:0 auto;padding:24px 28px 48px}
h1{font-size:24px;margin:0 0 4px}h2{font-size:18px;margin:0 0 10px;padding-top:6px}
header .meta{color:var(--muted);font-size:13px}
section{margin-top:26px;padding-top:14px;border-top:1px solid var(--line)}
.banner{display:flex;gap:18px;align-items:center;padding:14px 18px;border-radius:8px;
background:var(--bg);border:1px solid var(--line);margin-top:18px}
.badge{font-weight:700;font-size:20px;padding:6px 14px;border-radius:6px;color:#fff;
white-space:nowrap}
.badge.go{background:var(--go)}.badge.nogo{background:var(--nogo)}.badge.wait{background:var(--wait)}
.cards{display:grid;grid-template-columns:repeat(auto-fit,minmax(150px,1fr));gap:10px;margin-top:14px}
.card{border:1px solid var(--line);border-radius:8px;padding:10px 12px}
.card .v{font-size:20px;font-weight:650;font-variant-numeric:tabular-nums}
.card .k{color:var(--muted);font-size:12px}
table{border-collapse:collapse;width:100%;font-variant-numeric:tabular-nums;font-size:13px}
th,td{padding:5px 8px;border-bottom:1px solid var(--line);text-align:right;vertical-align:top}
th{background:var(--bg);font-weight:600}
td.l,th.l{text-align:left}.nw{white-space:nowrap}
tr.total td{font-weight:650;background:#fbfbfc}
.wrap{overflow-x:auto}
.v-pass{color:var(--go);font-weight:600}.v-fail{color:var(--nogo);font-weight:700}
.v-inconclusive{color:var(--wait);font-weight:600}.v-nodata{color:var(--muted)}
.a-rollback{color:var(--nogo);font-weight:700}.a-promote{color:var(--go);font-weight:700}
.a-hold{color:var(--muted)}
.charts{display:grid;grid-template-columns:repeat(auto-fit,minmax(480px,1fr));gap:18px}
figure{margin:0}figcaption{color:var(--muted);font-size:12px;margin-top:4px}
details summary{cursor:pointer;color:var(--muted)}
details table{margin:6px 0 10px}
.note{color:var(--muted);font-size:12px}
code{font-size:12px;background:var(--bg);padding:1px 4px;border-radius:4px}
"""


def e(value: object) -> str:
    """HTML-escape anything that came from the data."""
    return escape(str(value), quote=True)


# ---- number formats -------------------------------------------------------------------------


def fmt_int(v: float | None) -> str:
    return "-" if v is None else f"{v:,.0f}"


def fmt_pct(v: float | None, digits: int = 1) -> str:
    return "-" if v is None else f"{v * 100:.{digits}f} %"


def fmt_num(v: float | None, digits: int = 3) -> str:
    return "-" if v is None else f"{v:.{digits}f}"


def fmt_seconds(ms: float | None) -> str:
    return "-" if ms is None else f"{ms / 1000:,.2f} s"


def fmt_usd(v: float | None) -> str:
    """Dollars with the precision a per-request or a monthly amount needs."""
    if v is None:
        return "-"
    a = abs(v)
    if a >= 100:
        return f"${v:,.0f}"
    if a >= 1:
        return f"${v:,.2f}"
    return f"${v:.5f}"


def fmt_time(t: datetime | None) -> str:
    return "-" if t is None else t.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def fmt_value(v: float | None) -> str:
    """An evidence value: ratios and rates of very different sizes."""
    if v is None:
        return "-"
    a = abs(v)
    if a >= 1000:
        return f"{v:,.0f}"
    if a >= 1:
        return f"{v:.3g}"
    return f"{v:.4f}"


def verdict_cell(verdict: str) -> str:
    return f'<td class="l v-{e(verdict)}">{e(verdict)}</td>'


def action_span(action: str) -> str:
    return f'<span class="a-{e(action)}">{e(action)}</span>'


# ---- table helper ---------------------------------------------------------------------------


def _cell(c: str, left: bool) -> str:
    if c.startswith("<td"):  # pre-rendered cell (data in it is escaped: never starts so)
        return c
    return f'<td class="l">{c}</td>' if left else f"<td>{c}</td>"


def table(
    headers: Sequence[str],
    rows: Iterable[Sequence[str]],
    *,
    left: int = 1,
    row_class: Sequence[str] | None = None,
    table_id: str = "",
) -> str:
    """Cells are pre-rendered HTML (escape data with `e` first); the first `left` columns
    are left-aligned."""
    head = "".join(
        f'<th class="l">{e(h)}</th>' if i < left else f"<th>{e(h)}</th>"
        for i, h in enumerate(headers)
    )
    body = []
    for k, row in enumerate(rows):
        cls = f' class="{row_class[k]}"' if row_class and row_class[k] else ""
        cells = "".join(_cell(c, i < left) for i, c in enumerate(row))
        body.append(f"<tr{cls}>{cells}</tr>")
    tid = f' id="{e(table_id)}"' if table_id else ""
    return (
        f'<div class="wrap"><table{tid}><thead><tr>{head}</tr></thead>'
        f"<tbody>{''.join(body)}</tbody></table></div>"
    )


# ---- sections -------------------------------------------------------------------------------


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
    """The last decision's verdicts as a metric x segment grid, next to the policy limits."""
    if not v.checks:
        return '<p class="note">No verdicts yet.</p>'
    metrics = list(dict.fromkeys(c.metric for c in v.checks))
    segs = sorted({c.segment for c in v.checks} - {OVERALL})
    cell = {(c.metric, c.segment): c for c in v.checks}
    rows = []
    for m in metrics:
        overall = cell.get((m, OVERALL))
        limit = overall.limit if overall else next(c.limit for c in v.checks if c.metric == m)
        row = [
            e(m),
            f'<td class="l nw">{e(limit)}</td>',
            verdict_cell(overall.verdict) if overall else "-",
            f'<td class="l">{e(overall.detail) if overall else ""}</td>',
        ]
        for seg in segs:
            c = cell.get((m, seg))
            row.append(
                f'<td class="l v-{e(c.verdict)}" title="{e(c.detail)}">{e(c.verdict)}</td>'
                if c
                else "<td></td>"
            )
        rows.append(row)
    p = d.policy
    return (
        "<h3>Verdicts of the last decision against the policy</h3>"
        + table(
            ["metric", "policy limit", "all segments", "evidence (all segments)", *segs],
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


def latency(d: ReportData) -> str:
    c = d.cdf
    series = []
    if c.primary_ms:
        series.append(
            charts.Series(
                f"primary (n={c.n_primary:,})",
                [v / 1000 for v in c.primary_ms],
                c.levels,
                COLORS["primary"],
            )
        )
    if c.candidate_ms:
        series.append(
            charts.Series(
                f"candidate (n={c.n_candidate:,})",
                [v / 1000 for v in c.candidate_ms],
                c.levels,
                COLORS["candidate"],
            )
        )
    chart = charts.line_chart(
        "Latency CDF per arm",
        series,
        xlabel="latency (s)",
        ylabel="share of calls at or below",
        ylim=(0.0, 1.0),
        yfmt=lambda v: f"{v:.0%}",
        guides=(0.5, 0.95, 0.99),
        frame=charts.Frame(width=700, height=330),
    )
    rows = [
        [
            e(a.role),
            fmt_seconds(a.latency_ms[0]),
            fmt_seconds(a.latency_ms[1]),
            fmt_seconds(a.latency_ms[2]),
        ]
        for a in d.arms
    ]
    return (
        '<section id="latency"><h2>Latency</h2><div class="charts"><figure>'
        f"{chart}<figcaption>Cumulative distribution of end-to-end latency of successful "
        "calls (100 quantiles per arm).</figcaption></figure><div>"
        + table(["arm", "p50", "p95", "p99"], rows)
        + "</div></div></section>"
    )


MEASURE_LABELS = {
    "exact_match": "exact match",
    "label_agree": "label agreement",
    "semantic_similarity": "semantic similarity",
    "lexical_similarity": "lexical similarity",
    "embedding_cosine": "embedding cosine",
    "json_field_agreement": "JSON field agreement",
    "finish_reason_changed": "finish reason changed",
    "primary_refusal": "primary refusals",
    "candidate_refusal": "refusals",
    "primary_truncated": "primary truncated (length)",
    "candidate_truncated": "truncated (length)",
    "number_mismatch": "number mismatch (Jaccard distance)",
    "negation_flip": "answers with a negation flip",
    "candidate_json_valid": "valid JSON",
    "json_schema_ok": "JSON fits the schema",
}
RATE_MEASURES = frozenset(MEASURE_LABELS) - {
    "semantic_similarity",
    "lexical_similarity",
    "embedding_cosine",
    "json_field_agreement",
    "number_mismatch",
}


def quality(d: ReportData) -> str:
    h = d.quality
    series = []
    for comparison, counts in sorted(h.counts.items()):
        n = sum(counts) or 1
        series.append(
            charts.Series(
                f"{comparison} (n={sum(counts):,})",
                h.edges[:-1],
                [k / n for k in counts],
                COLORS.get(comparison, "#777"),
            )
        )
    chart = charts.bar_chart(
        "Quality distribution",
        h.edges,
        series,
        xlabel="quality vs primary (1 = same answer)",
        ylabel="share of pairs",
        yfmt=lambda v: f"{v:.0%}",
        frame=charts.Frame(width=700, height=330),
    )
    return (
        '<section id="quality"><h2>Similarity and agreement</h2><div class="charts"><figure>'
        f"{chart}<figcaption>Histogram of pair quality (the task's headline agreement: "
        "label agreement, embedding cosine, JSON field agreement or text similarity)."
        f"</figcaption></figure><div>{agreement_table(d.agreement)}</div></div></section>"
    )


def agreement_table(rows: Sequence[Agreement]) -> str:
    if not rows:
        return '<p class="note">No paired responses to compare.</p>'
    headers = ["measure", *(a.comparison for a in rows)]
    body = [
        ["pairs scored", *(fmt_int(a.n) for a in rows)],
        ["quality (weighted mean)", *(fmt_num(a.quality) for a in rows)],
    ]
    for key, label in MEASURE_LABELS.items():
        values = [a.measures.get(key) for a in rows]
        if any(v is not None for v in values):
            fmt = fmt_pct if key in RATE_MEASURES else fmt_num
            body.append([label, *(fmt(v) for v in values)])
    return table(headers, body, table_id="agreement")


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
    letters = [[e(reason), fmt_int(n)] for reason, n in d.dead_letters] or [["none", "0"]]
    return (
        '<section id="data-quality"><h2>Input and pairing</h2><div class="charts"><div>'
        + table(["", "count"], rows, table_id="pairing-table")
        + "</div><div>"
        + table(
            ["dead letters by reason (all experiments)", "count"], letters, table_id="dead-letters"
        )
        + "</div></div></section>"
    )


def render(d: ReportData) -> str:
    """The whole page."""
    csp = "default-src 'none'; style-src 'unsafe-inline'; img-src data:"
    body = "".join(
        [
            header(d),
            summary(d),
            matrix(d),
            latency(d),
            quality(d),
            segments(d),
            timeline(d),
            cost(d),
            data_quality(d),
        ]
    )
    return (
        "<!DOCTYPE html>\n"
        '<html lang="en"><head><meta charset="utf-8">'
        f'<meta http-equiv="Content-Security-Policy" content="{csp}">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>shadowlens report: {e(d.experiment)}</title><style>{CSS}</style></head>"
        f'<body><main>{body}<footer class="note" style="margin-top:30px">shadowlens '
        "migration report &middot; numbers from the pairs, decisions and dead_letters "
        "tables (pairs read with FINAL).</footer></main></body></html>\n"
    )
