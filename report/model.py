"""The migration report's data, read from ClickHouse into a `ReportData`.

Every number comes from the store through the queries in `QUERIES` (the only SQL here;
values bound as ``{name:Type}`` parameters). `shadowlens.report.html` renders a
`ReportData` and `shadowlens.report.write` joins the two, so the data never depends on its
presentation.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from shadowlens.comparators.cost import Price
from shadowlens.judge.policy import Policy
from shadowlens.judge.verdicts import Action, Metric, Verdict
from shadowlens.store.client import Store
from shadowlens.store.dsn import redact_dsn

DAYS_PER_MONTH = 365.25 / 12
SECONDS_PER_MONTH = DAYS_PER_MONTH * 86_400
CDF_LEVELS = tuple(i / 100 for i in range(101))
QUALITY_BINS = 20
OVERALL = "*"  # the segment name of evidence about all segments together

_LEVELS_SQL = ", ".join(f"{q:g}" for q in CDF_LEVELS)

# The report's SQL, in one place. Every query reads one experiment ({experiment:String});
# pairs and decisions are ReplacingMergeTree tables: pairs are read with FINAL, decisions
# without it, deduplicated per (epoch, decided_at), their sorting key, so a re-inserted
# decision shows once.
QUERIES: dict[str, str] = {
    "experiments": "SELECT DISTINCT experiment FROM pairs ORDER BY experiment",
    "overview": """
        SELECT comparison,
               count() AS rows,
               countIf(outcome = 'paired') AS paired,
               countIf(outcome = 'candidate_missing') AS candidate_missing,
               countIf(outcome = 'primary_missing') AS primary_missing,
               countIf(outcome = 'split') AS split,
               min(event_time) AS first_event,
               max(event_time) AS last_event
        FROM pairs FINAL
        WHERE experiment = {experiment:String}
        GROUP BY comparison
        ORDER BY comparison""",
    "segments": """
        SELECT if(grouping(segment) = 1, '', segment) AS seg,
               grouping(segment) = 1 AS is_total,
               count() AS n,
               countIf(outcome != 'split') AS n_requests,
               countIf(outcome = 'paired') AS paired,
               avgWeightedIf(quality, weight, quality IS NOT NULL) AS mean_quality,
               quantilesIf(0.5, 0.95, 0.99)(primary_latency_ms, primary_status = 'ok')
                   AS primary_latency_ms_q,
               quantilesIf(0.5, 0.95, 0.99)(candidate_latency_ms, candidate_status = 'ok')
                   AS candidate_latency_ms_q,
               countIf(primary_failed AND outcome != 'split') AS primary_failures,
               countIf(candidate_failed AND outcome != 'split') AS candidate_failures,
               avg(primary_cost_usd) AS primary_cost,
               avg(candidate_cost_usd) AS candidate_cost
        FROM pairs FINAL
        WHERE experiment = {experiment:String} AND comparison = 'candidate'
        GROUP BY ROLLUP(segment)
        ORDER BY is_total, seg""",
    "latency_cdf": f"""
        SELECT quantilesIf({_LEVELS_SQL})(primary_latency_ms, primary_status = 'ok')
                   AS primary,
               quantilesIf({_LEVELS_SQL})(candidate_latency_ms, candidate_status = 'ok')
                   AS candidate,
               countIf(primary_status = 'ok' AND primary_latency_ms IS NOT NULL)
                   AS n_primary,
               countIf(candidate_status = 'ok' AND candidate_latency_ms IS NOT NULL)
                   AS n_candidate
        FROM pairs FINAL
        WHERE experiment = {{experiment:String}} AND comparison = 'candidate'""",
    "quality_histogram": f"""
        SELECT comparison,
               least(toUInt32(floor(quality * {QUALITY_BINS})), {QUALITY_BINS - 1}) AS bin,
               count() AS n
        FROM pairs FINAL
        WHERE experiment = {{experiment:String}} AND quality IS NOT NULL
        GROUP BY comparison, bin
        ORDER BY comparison, bin""",
    "agreement": """
        SELECT comparison,
               countIf(quality IS NOT NULL) AS n,
               avgWeightedIf(quality, weight, quality IS NOT NULL) AS mean_quality,
               avg(toFloat64(exact_match)) AS mean_exact_match,
               avg(toFloat64(label_agree)) AS mean_label_agree,
               avg(semantic_similarity) AS mean_semantic_similarity,
               avg(lexical_similarity) AS mean_lexical_similarity,
               avg(embedding_cosine) AS mean_embedding_cosine,
               avg(json_field_agreement) AS mean_json_field_agreement,
               avg(toFloat64(finish_reason_changed)) AS mean_finish_reason_changed,
               avg(toFloat64(primary_refusal)) AS mean_primary_refusal,
               avg(toFloat64(candidate_refusal)) AS mean_candidate_refusal,
               avg(toFloat64(primary_truncated)) AS mean_primary_truncated,
               avg(toFloat64(candidate_truncated)) AS mean_candidate_truncated,
               avg(number_mismatch) AS mean_number_mismatch,
               avg(toFloat64(negation_mismatch > 0)) AS mean_negation_flip,
               avg(toFloat64(candidate_json_valid)) AS mean_candidate_json_valid,
               avg(toFloat64(json_schema_ok)) AS mean_json_schema_ok
        FROM pairs FINAL
        WHERE experiment = {experiment:String} AND outcome = 'paired'
        GROUP BY comparison
        ORDER BY comparison""",
    "arms": """
        SELECT 'primary' AS role,
               groupUniqArrayIf(5)(primary_provider, primary_provider != '') AS providers,
               groupUniqArrayIf(5)(primary_model, primary_model != '') AS models,
               countIf(primary_status != 'missing') AS calls,
               quantilesIf(0.5, 0.95, 0.99)(primary_latency_ms, primary_status = 'ok')
                   AS latency_ms,
               countIf(primary_failed AND outcome != 'split') AS failures,
               countIf(outcome != 'split') AS judged,
               CAST(NULL AS Nullable(Float64)) AS mean_quality,
               avg(primary_cost_usd) AS mean_cost
        FROM pairs FINAL
        WHERE experiment = {experiment:String} AND comparison = 'candidate'
        UNION ALL
        SELECT comparison AS role,
               groupUniqArrayIf(5)(candidate_provider, candidate_provider != ''),
               groupUniqArrayIf(5)(candidate_model, candidate_model != ''),
               countIf(candidate_status != 'missing'),
               quantilesIf(0.5, 0.95, 0.99)(candidate_latency_ms, candidate_status = 'ok'),
               countIf(candidate_failed AND outcome != 'split'),
               countIf(outcome != 'split'),
               avgWeightedIf(quality, weight, quality IS NOT NULL),
               avg(candidate_cost_usd)
        FROM pairs FINAL
        WHERE experiment = {experiment:String}
        GROUP BY comparison""",
    "decisions": """
        SELECT epoch, decided_at, action, from_percent, to_percent, reason,
               evidence.metric AS metric, evidence.segment AS segment,
               evidence.verdict AS verdict, evidence.observed AS observed,
               evidence.reference AS reference, evidence.threshold AS threshold,
               evidence.bound AS bound, evidence.n AS n, evidence.critical AS critical,
               evidence.reason AS evidence_reason,
               evidence.example_request_ids AS example_request_ids
        FROM
        (
            SELECT * FROM decisions
            WHERE experiment = {experiment:String}
            ORDER BY inserted_at DESC
            LIMIT 1 BY epoch, decided_at
        )
        LEFT ARRAY JOIN evidence
        ORDER BY decided_at, epoch""",
    # dead letters carry no experiment (most could not be parsed): all of them, by reason
    "dead_letters": """
        SELECT reason, count() AS n, max(received_at) AS last_received
        FROM dead_letters
        GROUP BY reason
        ORDER BY n DESC, reason""",
}
GLOBAL = ("experiments", "dead_letters")
PER_EXPERIMENT = tuple(name for name in QUERIES if name not in GLOBAL)


# ---- the data -------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Overview:
    requests: int  # distinct requests (rows of the candidate comparison)
    paired: int
    candidate_missing: int
    primary_missing: int
    split: int
    replica_pairs: int
    first_event: datetime | None
    last_event: datetime | None

    @property
    def judged(self) -> int:
        """Requests both arms should have answered: paired plus orphans."""
        return self.paired + self.candidate_missing + self.primary_missing

    @property
    def pairing_rate(self) -> float | None:
        return self.paired / self.judged if self.judged else None

    @property
    def span_seconds(self) -> float | None:
        if self.first_event is None or self.last_event is None:
            return None
        return (self.last_event - self.first_event).total_seconds()


@dataclass(frozen=True, slots=True)
class SegmentRow:
    segment: str  # "" for the total row
    n: int
    n_requests: int
    paired: int
    quality: float | None
    primary_latency_ms: tuple[float | None, float | None, float | None]  # p50, p95, p99
    candidate_latency_ms: tuple[float | None, float | None, float | None]
    primary_error_rate: float | None
    candidate_error_rate: float | None
    primary_cost_usd: float | None
    candidate_cost_usd: float | None

    @property
    def is_total(self) -> bool:
        return self.segment == ""

    @property
    def pairing_rate(self) -> float | None:
        return self.paired / self.n_requests if self.n_requests else None


@dataclass(frozen=True, slots=True)
class ArmRow:
    """One line of the comparison matrix: an arm as measured, with its policy price."""

    role: str  # primary | candidate | replica
    providers: tuple[str, ...]
    models: tuple[str, ...]
    calls: int
    latency_ms: tuple[float | None, float | None, float | None]
    error_rate: float | None
    quality: float | None  # against the primary; None for the primary itself
    cost_per_request_usd: float | None
    prices: tuple[tuple[str, Price | None], ...]  # per model, from the policy


@dataclass(frozen=True, slots=True)
class LatencyCdf:
    levels: tuple[float, ...]
    primary_ms: tuple[float, ...]
    candidate_ms: tuple[float, ...]
    n_primary: int
    n_candidate: int


@dataclass(frozen=True, slots=True)
class QualityHistogram:
    edges: tuple[float, ...]
    counts: dict[str, tuple[int, ...]]  # comparison -> count per bin


@dataclass(frozen=True, slots=True)
class Agreement:
    comparison: str
    n: int
    quality: float | None
    measures: dict[str, float | None]  # exact_match, label_agree, semantic_similarity, ...


@dataclass(frozen=True, slots=True)
class EvidenceRow:
    metric: str
    segment: str
    verdict: str
    observed: float | None
    reference: float | None
    threshold: float | None
    bound: float | None
    n: int
    critical: bool
    reason: str
    example_request_ids: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class DecisionRow:
    epoch: int
    decided_at: datetime
    action: str
    from_percent: float
    to_percent: float
    reason: str
    evidence: tuple[EvidenceRow, ...] = ()

    @property
    def failing(self) -> tuple[EvidenceRow, ...]:
        return tuple(e for e in self.evidence if e.verdict == Verdict.FAIL)


@dataclass(frozen=True, slots=True)
class CostProjection:
    primary_per_request_usd: float | None
    candidate_per_request_usd: float | None
    requests_per_second: float | None  # observed, in event time
    monthly_requests: float | None
    monthly_requests_given: bool  # True: --monthly-requests; False: the observed rate
    migration_cost_usd: float

    def monthly(self, per_request: float | None) -> float | None:
        if per_request is None or self.monthly_requests is None:
            return None
        return per_request * self.monthly_requests

    @property
    def primary_monthly_usd(self) -> float | None:
        return self.monthly(self.primary_per_request_usd)

    @property
    def candidate_monthly_usd(self) -> float | None:
        return self.monthly(self.candidate_per_request_usd)

    @property
    def monthly_savings_usd(self) -> float | None:
        p, c = self.primary_monthly_usd, self.candidate_monthly_usd
        return None if p is None or c is None else p - c

    @property
    def payback_months(self) -> float | None:
        """Months of savings that repay the migration; None when it never pays back or
        there is nothing to repay (see `payback_text`)."""
        savings = self.monthly_savings_usd
        if self.migration_cost_usd <= 0 or savings is None or savings <= 0:
            return None
        return self.migration_cost_usd / savings

    @property
    def payback_text(self) -> str:
        savings = self.monthly_savings_usd
        if self.migration_cost_usd <= 0:
            return "n/a"
        if savings is None:
            return "n/a (no cost data)"
        if savings <= 0:
            return "never (the candidate costs more per month)"
        months = self.migration_cost_usd / savings
        days = months * DAYS_PER_MONTH
        return f"{days:.0f} days" if months < 1 else f"{months:.1f} months"


@dataclass(frozen=True, slots=True)
class Check:
    """One row of the go/no-go table: a verdict of the last decision next to its limit."""

    metric: str
    segment: str
    verdict: str
    limit: str
    detail: str


@dataclass(frozen=True, slots=True)
class GoNoGo:
    status: str  # GO | NO-GO | NOT YET | NO DATA
    headline: str
    last: DecisionRow | None
    checks: tuple[Check, ...]


@dataclass(frozen=True, slots=True)
class ReportData:
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


# ---- pure pieces ----------------------------------------------------------------------------


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


def limit_text(metric: str, policy: Policy) -> str:
    """The policy limit a metric is judged against, in words."""
    if metric == Metric.LATENCY_P99:
        q = policy.latency.quantile * 100
        return f"p{q:g} <= {1 + policy.latency.max_relative_increase:.2f}x primary"
    if metric in (Metric.ERROR_RATE, Metric.REFUSAL_RATE):
        e = policy.errors if metric == Metric.ERROR_RATE else policy.refusals
        return f"<= max({e.max_absolute:.0%}, primary + {e.max_increase * 100:g} pp)"
    if metric == Metric.QUALITY:
        return f"<= {policy.quality.max_relative_drop:.0%} below reference"
    if metric == Metric.COST:
        forecast = policy.cost.forecast_usd_per_request
        ref = "primary cost" if forecast is None else f"${forecast:g}/request"
        return f"<= {policy.cost.max_relative_increase:.0%} over {ref}"
    if metric == Metric.PAIRING_RATE:
        return f">= {policy.pairing.min_pairing_rate:.0%}"
    return ""


def go_no_go(decisions: Sequence[DecisionRow], policy: Policy) -> GoNoGo:
    """Where the migration stands against the policy, from the last decision.

    NO-GO: the last decision rolled back, or one of its verdicts fails. GO: the ramp has
    reached its last stage, or every overall verdict passes (ready for the next stage).
    NOT YET: nothing fails but the evidence is still inconclusive or missing.
    """
    if not decisions:
        return GoNoGo("NO DATA", "no decision yet: the judge has not closed a window", None, ())
    last = decisions[-1]
    order = {m: i for i, m in enumerate(Metric)}
    ev = sorted(
        last.evidence, key=lambda e: (e.segment != OVERALL, order.get(e.metric, 99), e.segment)
    )
    checks = tuple(
        Check(e.metric, e.segment, e.verdict, limit_text(e.metric, policy), e.reason) for e in ev
    )
    final_stage = policy.ramp.stages_percent[-1]
    stage = f"{last.to_percent:g} % of traffic"
    if last.action == Action.ROLLBACK or last.failing:
        failing = ", ".join(f"{e.metric} [{e.segment}]" for e in last.failing) or last.reason
        return GoNoGo("NO-GO", f"{last.action} to {stage}: {failing} failed", last, checks)
    if last.to_percent >= final_stage:
        return GoNoGo("GO", f"ramp complete: the candidate serves {stage}", last, checks)
    overall = [e for e in last.evidence if e.segment == OVERALL]
    if overall and all(e.verdict == Verdict.PASS for e in overall):
        return GoNoGo("GO", f"every check passes at {stage}: ready to promote", last, checks)
    waiting = [f"{e.metric} {e.verdict}" for e in overall if e.verdict != Verdict.PASS] or [
        "no overall evidence"
    ]
    return GoNoGo("NOT YET", f"{last.action} at {stage}: {', '.join(waiting)}", last, checks)


def cost_projection(
    overview: Overview,
    total: SegmentRow | None,
    monthly_requests: float | None,
    migration_cost_usd: float,
) -> CostProjection:
    """Cost per request of each arm, scaled to a month of the observed (or given) rate."""
    span = overview.span_seconds
    rate = overview.requests / span if span and span >= 1.0 and overview.requests > 1 else None
    given = monthly_requests is not None
    monthly = monthly_requests if given else (rate * SECONDS_PER_MONTH if rate else None)
    return CostProjection(
        primary_per_request_usd=total.primary_cost_usd if total else None,
        candidate_per_request_usd=total.candidate_cost_usd if total else None,
        requests_per_second=rate,
        monthly_requests=monthly,
        monthly_requests_given=given,
        migration_cost_usd=migration_cost_usd,
    )


# ---- reading the store ----------------------------------------------------------------------


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
    )


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
    key: tuple[int, datetime] | None = None
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
                )
            )

    for r in rows:
        k = (int(r["epoch"]), r["decided_at"])
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
