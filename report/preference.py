"""The preference judge in the reports: win rates per segment with their bounds, and the
comparisons the candidate lost, both answers side by side.

Rows are built from judged pairs (the replay's in-memory scores, or the store's ``pairs``
rows), so the console summary and the HTML report show the same numbers. The bound is the
judge's own kind, an anytime-valid `BoundedMeanCS` over the judged wins in request-key
order, at 95 %; a decision's evidence carries the bound at the judge's own, stricter level.
The length-adjusted win rate is `shadowlens.judge.stats_length`'s.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from shadowlens.comparators.aggregate import LengthBins, order_key
from shadowlens.judge.evidence_state import _bounded
from shadowlens.judge.stats_length import length_adjusted_win_rate

LEVEL = 0.95
ALL = "(all)"


@dataclass(frozen=True, slots=True)
class JudgedPair:
    """What the report reads of one eligible pair."""

    request_id: str
    segment: str
    preference: float | None  # None: not judged
    skip: str | None  # why not
    length_ratio: float | None
    cost_usd: float | None


@dataclass(frozen=True, slots=True)
class PreferenceRow:
    segment: str  # `ALL` for the total
    judged: int
    unjudged: dict[str, int]  # reason -> pairs
    win_rate: float | None
    lo: float | None  # anytime-valid LEVEL bounds
    hi: float | None
    length_adjusted: float | None
    cost_usd: float

    @property
    def is_total(self) -> bool:
        return self.segment == ALL


def preference_rows(pairs: Iterable[JudgedPair]) -> list[PreferenceRow]:
    """One row per segment, then the total; empty when nothing was eligible."""
    groups: dict[str, list[JudgedPair]] = {}
    for p in pairs:
        if p.preference is not None or p.skip is not None:
            for key in (p.segment, ALL):
                groups.setdefault(key, []).append(p)
    return [_row(seg, groups[seg]) for seg in sorted(groups, key=lambda s: (s == ALL, s))]


def _row(segment: str, pairs: list[JudgedPair]) -> PreferenceRow:
    judged = sorted(
        (p for p in pairs if p.preference is not None), key=lambda p: order_key(p.request_id)
    )
    unjudged: dict[str, int] = {}
    for p in pairs:
        if p.preference is None and p.skip is not None:
            unjudged[p.skip] = unjudged.get(p.skip, 0) + 1
    wins = [p.preference for p in judged if p.preference is not None]
    cs = _bounded().update(wins)
    lo, hi = cs.interval(1 - LEVEL) if wins else (None, None)
    bins = LengthBins()
    for p in judged:
        if p.length_ratio is not None and p.preference is not None:
            bins.add(p.length_ratio, p.preference)
    return PreferenceRow(
        segment=segment,
        judged=len(wins),
        unjudged=dict(sorted(unjudged.items())),
        win_rate=cs.mean if wins else None,
        lo=lo,
        hi=hi,
        length_adjusted=length_adjusted_win_rate(LengthBins.centers(), bins.wins, bins.counts),
        cost_usd=sum(p.cost_usd or 0.0 for p in pairs),
    )


@dataclass(frozen=True, slots=True)
class LostComparison:
    """A comparison the candidate lost: the request and both answers."""

    request_id: str
    segment: str
    preference: float
    prompt: str
    primary_model: str
    primary: str
    candidate_model: str
    candidate: str
