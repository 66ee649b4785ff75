"""The sections that set the arms' distributions side by side: latency (CDF chart and
quantile table) and quality (histogram and the agreement measures).
"""

from __future__ import annotations

from collections.abc import Sequence

from shadowlens.report import charts
from shadowlens.report.markup import COLORS, e, fmt_int, fmt_num, fmt_pct, fmt_seconds, table
from shadowlens.report.model import ReportData
from shadowlens.report.rows import Agreement


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
