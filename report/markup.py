"""The building blocks every section of the page uses: escaping, number formats, tables.

One place for them so each number reads the same in every section and no section forgets
to escape: every string that comes from the data goes through `e()`.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import UTC, datetime
from html import escape

# one colour per arm, the same in the tables and the charts
COLORS = {"primary": "#4c78a8", "candidate": "#f58518", "replica": "#54a24b"}


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
