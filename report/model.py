"""The migration report's data, read from ClickHouse into a `ReportData`.

Every number comes from the store through `shadowlens.report.queries` (values bound as
``{name:Type}`` parameters); this module runs them and parses their rows.
`shadowlens.report.html` renders a `ReportData` and `shadowlens.report.write` joins the two,
so the data never depends on its presentation.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from shadowlens.judge.policy import Policy
from shadowlens.report.cost import CostProjection, cost_projection
from shadowlens.report.preference import JudgedPair, LostComparison, PreferenceRow, preference_rows
from shadowlens.report.queries import CDF_LEVELS, PER_EXPERIMENT, QUALITY_BINS, QUERIES
from shadowlens.report.rows import (
    Agreement,
    ArmRow,
    DecisionRow,
    EvidenceRow,
    LatencyCdf,
    LimitsRow,
    Overview,
    QualityHistogram,
    SegmentRow,
    SkewRow,
)
from shadowlens.report.verdict import GoNoGo, go_no_go
from shadowlens.store.client import Store
from shadowlens.store.dsn import redact_dsn


@dataclass(frozen=True, slots=True)
class ReportData:
    """Everything the page shows, so rendering it needs no store."""

    experiment: str
    source: str  # the DSN without its password
    generated_at: datetime
    policy: Policy
    overview: Overview
    segments: tuple[SegmentRow, ...]
    arms: tuple[ArmRow, ...]
    cdf: LatencyCdf
    quality: QualityHistogram
    agreement: tuple[Agreement, ...]
    decisions: tuple[DecisionRow, ...]
    cost: CostProjection
    verdict: GoNoGo
    dead_letters: tuple[tuple[str, int], ...] = field(default=())
    clock_skew: tuple[SkewRow, ...] = field(default=())
    preference: tuple[PreferenceRow, ...] = field(default=())  # the judge's win rates
    lost: tuple[LostComparison, ...] = field(default=())  # comparisons the candidate lost
    limits: LimitsRow = field(default_factory=LimitsRow)  # what policy.limits kept out


def _float(v: Any) -> float | None:
    if v is None:
        return None
    f = float(v)
    return f if math.isfinite(f) else None


def _triple(values: Sequence[Any] | None) -> tuple[float | None, float | None, float | None]:
    """p50/p95/p99 from a quantiles() array; None where no value went into it (NaN)."""
    v = [_float(x) for x in (values or ())[:3]]
    v += [None] * (3 - len(v))
    return (v[0], v[1], v[2])


class UnknownExperimentError(LookupError):
    """The store holds no pairs for the experiment; the message lists the ones it has."""


def experiments(store: Store) -> list[str]:
    return [row[0] for row in store.query(QUERIES["experiments"]).result_rows]


def load(
    store: Store,
    experiment: str,
    policy: Policy,
    *,
    monthly_requests: float | None = None,
    migration_cost_usd: float = 0.0,
    now: datetime | None = None,
) -> ReportData:
    """Run every report query for `experiment` and assemble the `ReportData`."""
    p = {"experiment": experiment}
    rows = {name: list(store.rows(QUERIES[name], p)) for name in PER_EXPERIMENT}
    if not rows["overview"]:
        known = ", ".join(experiments(store)) or "none"
        raise UnknownExperimentError(
            f"no pairs for experiment {experiment!r} in the store (experiments: {known})"
        )
    overview = _overview(rows["overview"])
    segments = tuple(_segment(r) for r in rows["segments"])
    total = next((s for s in segments if s.is_total), None)
    decisions = _decisions(rows["decisions"])
    letters = tuple((r[0], int(r[1])) for r in store.query(QUERIES["dead_letters"]).result_rows)
    return ReportData(
        experiment=experiment,
        source=redact_dsn(store.dsn),
        generated_at=now or datetime.now(UTC),
        policy=policy,
        overview=overview,
        segments=segments,
        arms=tuple(_arm(r, policy) for r in sorted(rows["arms"], key=_role_order)),
        cdf=_cdf(rows["latency_cdf"][0]),
        quality=_histogram(rows["quality_histogram"]),
        agreement=tuple(_agreement(r) for r in rows["agreement"]),
        decisions=decisions,
        cost=cost_projection(overview, total, monthly_requests, migration_cost_usd),
        verdict=go_no_go(decisions, policy),
        dead_letters=letters,
        clock_skew=tuple(_skew(r) for r in rows["clock_skew"]),
        preference=tuple(preference_rows(JudgedPair(**r) for r in rows["preference_pairs"])),
        lost=tuple(LostComparison(**r) for r in rows["preference_lost"]),
        limits=_limits(rows["limits"][0]),
    )


def _limits(r: dict[str, Any]) -> LimitsRow:
    return LimitsRow(int(r["pairs"]), int(r["segments"]), int(r["windowed_segments"]))


def _overview(rows: list[dict[str, Any]]) -> Overview:
    by = {r["comparison"]: r for r in rows}
    cand = by.get("candidate") or next(iter(by.values()))
    firsts = [r["first_event"] for r in rows if r["first_event"] is not None]
    lasts = [r["last_event"] for r in rows if r["last_event"] is not None]
    return Overview(
        requests=int(cand["rows"]),
        paired=int(cand["paired"]),
        candidate_missing=int(cand["candidate_missing"]),
        primary_missing=int(cand["primary_missing"]),
        split=int(cand["split"]),
        replica_pairs=int(by["replica"]["paired"]) if "replica" in by else 0,
        first_event=min(firsts) if firsts else None,
        last_event=max(lasts) if lasts else None,
    )


def _rate(num: int, den: int) -> float | None:
    return num / den if den else None


def _segment(r: dict[str, Any]) -> SegmentRow:
    n_requests = int(r["n_requests"])
    return SegmentRow(
        segment="" if r["is_total"] else str(r["seg"]),
        n=int(r["n"]),
        n_requests=n_requests,
        paired=int(r["paired"]),
        quality=_float(r["mean_quality"]),
        primary_latency_ms=_triple(r["primary_latency_ms_q"]),
        candidate_latency_ms=_triple(r["candidate_latency_ms_q"]),
        primary_error_rate=_rate(int(r["primary_failures"]), n_requests),
        candidate_error_rate=_rate(int(r["candidate_failures"]), n_requests),
        primary_cost_usd=_float(r["primary_cost"]),
        candidate_cost_usd=_float(r["candidate_cost"]),
    )


def _skew(r: dict[str, Any]) -> SkewRow:
    return SkewRow(str(r["arm"]), str(r["provider"]), int(r["pairs"]), _triple(r["skew_ms"]))


def _role_order(r: dict[str, Any]) -> int:
    return {"primary": 0, "candidate": 1}.get(r["role"], 2)


def _arm(r: dict[str, Any], policy: Policy) -> ArmRow:
    models = tuple(sorted(r["models"]))
    return ArmRow(
        role=str(r["role"]),
        providers=tuple(sorted(r["providers"])),
        models=models,
        calls=int(r["calls"]),
        latency_ms=_triple(r["latency_ms"]),
        error_rate=_rate(int(r["failures"]), int(r["judged"])),
        quality=_float(r["mean_quality"]),
        cost_per_request_usd=_float(r["mean_cost"]),
        prices=tuple((m, policy.prices.get(m)) for m in models),
    )


def _cdf(r: dict[str, Any]) -> LatencyCdf:
    n_p, n_c = int(r["n_primary"]), int(r["n_candidate"])
    return LatencyCdf(
        levels=CDF_LEVELS,
        primary_ms=tuple(float(v) for v in r["primary"]) if n_p else (),
        candidate_ms=tuple(float(v) for v in r["candidate"]) if n_c else (),
        n_primary=n_p,
        n_candidate=n_c,
    )


def _histogram(rows: list[dict[str, Any]]) -> QualityHistogram:
    counts: dict[str, list[int]] = {}
    for r in rows:
        counts.setdefault(str(r["comparison"]), [0] * QUALITY_BINS)[int(r["bin"])] = int(r["n"])
    edges = tuple(i / QUALITY_BINS for i in range(QUALITY_BINS + 1))
    return QualityHistogram(edges, {k: tuple(v) for k, v in counts.items()})


_MEASURES = (
    "exact_match",
    "label_agree",
    "semantic_similarity",
    "lexical_similarity",
    "embedding_cosine",
    "json_field_agreement",
    "finish_reason_changed",
    "primary_refusal",
    "candidate_refusal",
    "primary_truncated",
    "candidate_truncated",
    "number_mismatch",
    "negation_flip",
    "candidate_json_valid",
    "json_schema_ok",
)


def _agreement(r: dict[str, Any]) -> Agreement:
    return Agreement(
        comparison=str(r["comparison"]),
        n=int(r["n"]),
        quality=_float(r["mean_quality"]),
        measures={m: _float(r[f"mean_{m}"]) for m in _MEASURES},
    )


def _decisions(rows: list[dict[str, Any]]) -> tuple[DecisionRow, ...]:
    out: list[DecisionRow] = []
    evidence: list[EvidenceRow] = []
    key: tuple[int, datetime, str] | None = None
    head: dict[str, Any] = {}

    def close() -> None:
        if key is not None:
            out.append(
                DecisionRow(
                    epoch=int(head["epoch"]),
                    decided_at=head["decided_at"],
                    action=str(head["action"]),
                    from_percent=float(head["from_percent"]),
                    to_percent=float(head["to_percent"]),
                    reason=str(head["reason"]),
                    evidence=tuple(evidence),
                    phase=str(head["phase"]),
                    operator=str(head["operator_key_id"]),
                    decommission_after=head["decommission_after"],
                )
            )

    for r in rows:
        k = (int(r["epoch"]), r["decided_at"], str(r["command_id"]))
        if k != key:
            close()
            key, head, evidence = k, r, []
        if r["metric"]:  # LEFT ARRAY JOIN gives one empty row to a decision without evidence
            evidence.append(
                EvidenceRow(
                    metric=str(r["metric"]),
                    segment=str(r["segment"]),
                    verdict=str(r["verdict"]),
                    observed=_float(r["observed"]),
                    reference=_float(r["reference"]),
                    threshold=_float(r["threshold"]),
                    bound=_float(r["bound"]),
                    n=int(r["n"]),
                    critical=bool(r["critical"]),
                    reason=str(r["evidence_reason"]),
                    example_request_ids=tuple(r["example_request_ids"]),
                )
            )
    close()
    return tuple(out)
