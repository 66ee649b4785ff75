"""The migration policy: thresholds, windows and the traffic ramp, parsed once and frozen.

Defaults are the seeds' thresholds. Unknown keys are an error, never silently ignored: a
typo in a rollback threshold must not turn the threshold off.
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass, field, fields, is_dataclass
from enum import Enum, StrEnum
from importlib import resources
from pathlib import Path
from typing import Any, get_type_hints

from shadowlens.comparators.cascade import SemanticPolicy
from shadowlens.comparators.cost import Price
from shadowlens.comparators.preference_budget import JudgeBudget


@dataclass(frozen=True, slots=True)
class LatencyPolicy:
    quantile: float = 0.99
    max_relative_increase: float = 0.20  # candidate p99 may be at most 20 % above primary
    critical: bool = False


@dataclass(frozen=True, slots=True)
class ErrorPolicy:
    max_absolute: float = 0.05  # candidate error rate above 5 % ...
    max_increase: float = 0.02  # ... and above primary + 2 pp
    critical: bool = True  # errors roll back to 0 %, not one stage


@dataclass(frozen=True, slots=True)
class RefusalPolicy:
    """Refusals (`shadowlens.comparators.signals.is_refusal`) of pairs where both arms answered."""

    max_absolute: float = 0.05  # candidate refusal rate above 5 % ...
    max_increase: float = 0.02  # ... and above primary + 2 pp
    critical: bool = False  # a behaviour regression: roll back one stage


@dataclass(frozen=True, slots=True)
class QualityReferencePolicy:
    """The primary's agreement with itself per task, the reference where no replica arm
    measures it. A deterministic primary's labels, embeddings and extracted fields agree
    with themselves (1.0); free text does not, so generation has none unless set (from an
    offline study of the primary answering twice, say)."""

    classification: float | None = 1.0
    embedding: float | None = 1.0
    extraction: float | None = 1.0
    generation: float | None = None

    def __post_init__(self) -> None:
        for name in ("classification", "embedding", "extraction", "generation"):
            value = getattr(self, name)
            if value is not None and not 0.0 < value <= 1.0:
                raise ValueError(f"{name} must be in (0, 1], got {value!r}")

    def of(self, task: str) -> float | None:
        """The reference of `task` (an unknown task has none)."""
        value = getattr(self, task, None)
        return value if isinstance(value, float | int) else None


@dataclass(frozen=True, slots=True)
class QualityPolicy:
    max_relative_drop: float = 0.10  # agreement/similarity down more than 10 % relative
    baseline_pairs: int = 200  # the candidate's first pairs: a drift signal, never a reference
    require_reference: bool = True  # quality not certified (no reference): no promotion
    reference: QualityReferencePolicy = field(default_factory=QualityReferencePolicy)
    critical: bool = False


@dataclass(frozen=True, slots=True)
class PreferencePolicy:
    """The pairwise preference judge (`[preference]`): the candidate's win rate against the
    primary, and the guard that keeps a judge-fooling candidate from passing on it.

    Generation quality passes only if the win rate's bound clears `min_win_rate` *and* the
    answers stay answers: lexical similarity to the primary's above a floor, no collapse of
    length or language, no refusal regression (`shadowlens.judge.preference`)."""

    min_win_rate: float = 0.45  # ties count half; parity (an identical candidate) is 0.5
    critical: bool = False
    min_lexical_similarity: float = 0.45  # mean token-set similarity to the primary's answers
    min_length_ratio: float = 0.10  # geometric mean of candidate / primary answer length
    max_language_change: float = 0.10  # share of answers in another language than the primary's
    budget: JudgeBudget = field(default_factory=JudgeBudget)  # [preference.budget]

    def __post_init__(self) -> None:
        if not 0 < self.min_win_rate < 1 or not 0 <= self.min_lexical_similarity < 1:
            raise ValueError("min_win_rate must be in (0, 1), min_lexical_similarity in [0, 1)")
        if not 0 < self.min_length_ratio <= 1 or not 0 < self.max_language_change <= 1:
            raise ValueError("min_length_ratio and max_language_change must be in (0, 1]")


@dataclass(frozen=True, slots=True)
class CostPolicy:
    max_relative_increase: float = 0.10  # more than 10 % over forecast
    forecast_usd_per_request: float | None = None  # None: forecast = the primary's cost
    critical: bool = False


@dataclass(frozen=True, slots=True)
class WindowPolicy:
    size_ms: int = 60_000
    grace_ms: int = 10_000


@dataclass(frozen=True, slots=True)
class PairingPolicy:
    """Pairing and the watermark: made for model calls of minutes and clocks that disagree."""

    max_call_ms: int = 600_000  # the longest call (a common client timeout): halves pair this long
    max_skew_ms: int = 120_000  # how far two gateways' clocks (or one event) may run ahead
    lateness_ms: int = 5_000
    retention_ms: int = 120_000
    min_pairing_rate: float = 0.90  # below this, promotion is blocked
    max_pending: int = 200_000  # open requests per experiment before the oldest are shed

    def __post_init__(self) -> None:
        if self.max_call_ms <= 0 or self.max_skew_ms < 0 or self.lateness_ms < 0:
            raise ValueError("max_call_ms must be > 0, max_skew_ms and lateness_ms >= 0")


class AfterRollback(StrEnum):
    """What a rolled-back experiment does next (`ramp.after_rollback`)."""

    HOLD = "hold"  # wait for an operator's `resume` (the seeds' default)
    RETRY = "retry"  # promote again on fresh passing evidence for what failed


class Approval(StrEnum):
    """Which of the judge's steps wait for `shadowlens control approve` (`ramp.approval`)."""

    NONE = "none"
    PROMOTIONS = "promotions"  # Flagger's confirm-promotion gate
    ROLLBACKS = "rollbacks"  # an incident commander approves each rollback
    BOTH = "both"

    def gates(self, promote: bool) -> bool:
        """Whether a promotion (or, with promote=False, a rollback) needs approval."""
        wanted = Approval.PROMOTIONS if promote else Approval.ROLLBACKS
        return self in (wanted, Approval.BOTH)


DAY_MS = 24 * 3600 * 1000


@dataclass(frozen=True, slots=True)
class RampPolicy:
    stages_percent: tuple[float, ...] = (0, 1, 5, 10, 25, 50, 75, 100)
    min_hold_ms: int = 120_000  # event time a stage must run before promotion
    min_pairs: int = 200  # pairs a stage must see before promotion
    heartbeat_ms: int = 10_000
    lease_ms: int = 30_000  # routers fall back to the primary if no message within this
    after_rollback: AfterRollback = AfterRollback.HOLD
    retry_after_ms: int = 600_000  # retry: event time after a rollback before a retry
    max_retries: int = 2  # retry: automatic retries; then an operator must resume
    approval: Approval = Approval.NONE
    stability_ms: int = 30 * DAY_MS  # at 100 %: how long drift is watched before the old
    # deployment may be decommissioned (replays pass --stability-ms: they are short)

    def __post_init__(self) -> None:
        if min(self.retry_after_ms, self.max_retries, self.stability_ms) < 0:
            raise ValueError("retry_after_ms, max_retries and stability_ms must be >= 0")


@dataclass(frozen=True, slots=True)
class JudgePolicy:
    min_pairs: int = 50  # per metric and segment in a stage; fewer gives a NODATA verdict
    alpha: float = 0.01  # chance of one false rollback over the whole ramp
    pass_alpha: float = 0.05  # chance a promotion's non-inferiority bounds are wrong, per ramp
    max_segments: int = 8  # segments the error budget is split over; beyond: "(other)"
    optimal_n: int = 500  # pairs at which the latency/cost bounds are tightest
    shrinkage_pairs: int = 200  # a segment's p99 ratio weighs n / (n + this) vs the global


@dataclass(frozen=True, slots=True)
class LimitsPolicy:
    """Names are client-chosen: at most this many are windowed and judged
    (`shadowlens.pipeline.cardinality`); overflow is counted and reported."""

    max_experiments: int = 64  # per worker; pairs of later experiments are stored, not judged
    max_segments: int = 64  # per experiment; later segments are windowed as "(other)"

    def __post_init__(self) -> None:
        if min(self.max_experiments, self.max_segments) < 1:
            raise ValueError("max_experiments and max_segments must be >= 1")


@dataclass(frozen=True, slots=True)
class Policy:
    latency: LatencyPolicy = field(default_factory=LatencyPolicy)
    errors: ErrorPolicy = field(default_factory=ErrorPolicy)
    refusals: RefusalPolicy = field(default_factory=RefusalPolicy)
    quality: QualityPolicy = field(default_factory=QualityPolicy)
    preference: PreferencePolicy = field(default_factory=PreferencePolicy)
    cost: CostPolicy = field(default_factory=CostPolicy)
    windows: WindowPolicy = field(default_factory=WindowPolicy)
    pairing: PairingPolicy = field(default_factory=PairingPolicy)
    ramp: RampPolicy = field(default_factory=RampPolicy)
    judge: JudgePolicy = field(default_factory=JudgePolicy)
    semantic: SemanticPolicy = field(default_factory=SemanticPolicy)
    limits: LimitsPolicy = field(default_factory=LimitsPolicy)
    prices: dict[str, Price] = field(default_factory=dict)


class PolicyError(ValueError):
    pass


def _build(cls: type, data: dict[str, Any], where: str) -> Any:
    if not isinstance(data, dict):
        raise PolicyError(f"[{where}] must be a table")
    hints = get_type_hints(cls)
    known = {f.name for f in fields(cls)}
    unknown = sorted(set(data) - known)
    if unknown:
        raise PolicyError(f"unknown key(s) in [{where}]: {', '.join(unknown)}")
    kwargs: dict[str, Any] = {}
    for name, value in data.items():
        hint = hints[name]
        if is_dataclass(hint):
            kwargs[name] = _build(hint, value, f"{where}.{name}".lstrip("."))
        elif isinstance(hint, type) and issubclass(hint, Enum):
            if value not in {str(v) for v in hint}:
                allowed = ", ".join(f'"{v}"' for v in hint)
                raise PolicyError(f"[{where}] {name} must be one of {allowed}, got {value!r}")
            kwargs[name] = hint(value)
        elif name == "prices":
            kwargs[name] = {
                model: _build(Price, spec, f"prices.{model}") for model, spec in value.items()
            }
        elif name == "stages_percent":
            kwargs[name] = tuple(float(v) for v in value)
        else:
            kwargs[name] = value
    try:
        return cls(**kwargs)
    except PolicyError:
        raise
    except (TypeError, ValueError) as exc:  # e.g. a comparator's own config check
        raise PolicyError(f"[{where}]: {exc}") from None


def parse_policy(doc: dict[str, Any]) -> Policy:
    """Build a Policy from a parsed TOML document; reject unknown keys and bad stages."""
    policy: Policy = _build(Policy, doc, "")
    stages = policy.ramp.stages_percent
    if not stages or stages[0] != 0 or list(stages) != sorted(set(stages)) or stages[-1] > 100:
        raise PolicyError(f"ramp.stages_percent must rise strictly from 0 to <= 100: {stages}")
    if policy.judge.max_segments > policy.limits.max_segments:
        raise PolicyError(
            f"judge.max_segments ({policy.judge.max_segments}) exceeds limits.max_segments "
            f"({policy.limits.max_segments}): the judge cannot split over segments it never sees"
        )
    return policy


def load_policy(path: str | Path | None = None) -> Policy:
    """The policy in a TOML file, or the shipped default (defaults plus example prices)."""
    if path is None:
        text = resources.files("shadowlens.judge").joinpath("default_policy.toml").read_text()
        return parse_policy(tomllib.loads(text))
    with open(path, "rb") as fh:
        return parse_policy(tomllib.load(fh))
