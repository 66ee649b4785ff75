"""`shadowlens report`: a self-contained HTML migration report built from ClickHouse.

One file an operator can attach to a change request: go/no-go against the policy, the
candidate next to the primary (provider, model, price, latency, errors, quality), latency
CDFs, the quality distribution, a per-segment table, the decision timeline with its
evidence, and the money: cost per request, a monthly projection and the payback period.

This entry module is the only one that knows both halves: `shadowlens.report.model` reads
the store into a `ReportData` and `shadowlens.report.html` renders it (inline CSS and SVG,
nothing fetched), so neither imports the other.
"""

from __future__ import annotations

from pathlib import Path

from shadowlens.judge.policy import Policy
from shadowlens.report.html import render
from shadowlens.report.model import ReportData, load
from shadowlens.store.client import Store


def write_report(
    store: Store,
    experiment: str,
    policy: Policy,
    out: Path,
    *,
    monthly_requests: float | None = None,
    migration_cost_usd: float = 0.0,
) -> ReportData:
    """Build the report of `experiment` and write it to `out` (UTF-8 HTML)."""
    data = load(
        store,
        experiment,
        policy,
        monthly_requests=monthly_requests,
        migration_cost_usd=migration_cost_usd,
    )
    out.write_text(render(data), encoding="utf-8")
    return data
