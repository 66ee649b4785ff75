"""Render a `shadowlens.report.model.ReportData` as one self-contained HTML page.

Inline CSS, inline SVG charts (`shadowlens.report.charts`), no script and no external resource: a
Content-Security-Policy forbids both, so the file shows the same on an air-gapped laptop
and in a mail attachment. Every string that comes from the data goes through `e()`.

This module is the page shell (CSS, head, the order of the sections); the sections live in
`sections`, `distributions` and `timeline`, their building blocks in `markup`.
"""

from __future__ import annotations

from shadowlens.report.distributions import latency, quality
from shadowlens.report.markup import e
from shadowlens.report.model import ReportData
from shadowlens.report.preference_section import preference
from shadowlens.report.sections import cost, data_quality, header, matrix, segments, summary
from shadowlens.report.timeline import timeline

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
            preference(d),
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
