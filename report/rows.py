"""The rows the report's queries return, one frozen dataclass per kind.

They are the vocabulary every other report module shares (the cost projection, the
go/no-go verdict, the loader and the HTML), so they sit below all of them and import no
other report module.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from shadowlens.comparators.cost import Price
from shadowlens.judge.verdicts import Verdict

OVERALL = "*"  # the segment name of evidence about all segments together


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
class SkewRow:
    """How far one arm and provider's halves started from their primaries' (clock skew)."""

    arm: str  # candidate | replica
    provider: str
    pairs: int
    skew_ms: tuple[float | None, float | None, float | None]  # p1, median, p99


@dataclass(frozen=True, slots=True)
class LatencyCdf:
    levels: tuple[float, ...]
    primary_ms: tuple[float, ...]
    candidate_ms: tuple[float, ...]
    n_primary: int
    n_candidate: int


@dataclass(frozen=True, slots=True)
class LimitsRow:
    """What `policy.limits` kept out of the experiment's windows (`pipeline.cardinality`)."""

    other_pairs: int = 0  # pairs of segments beyond limits.max_segments, judged as "(other)"
    other_segments: int = 0  # how many such segments
    windowed_segments: int = 1  # segments with a closed window; 0: nothing judged yet


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
    phase: str = "ramping"  # the lifecycle phase it left the experiment in
    operator: str = ""  # the key id of the operator whose command made it
    decommission_after: datetime | None = None  # at 100 %: when the old deployment may go

    @property
    def failing(self) -> tuple[EvidenceRow, ...]:
        return tuple(e for e in self.evidence if e.verdict == Verdict.FAIL)
