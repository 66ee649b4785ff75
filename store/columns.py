"""Rows to columns: pairs, windows, decisions and dead letters as the columnar batches
`Store` inserts (one list per table column, datetimes as UTC `datetime`)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

from shadowlens.comparators.aggregate import SIGNAL_KINDS, PairedCounts
from shadowlens.comparators.pairs import PairScore
from shadowlens.judge.verdicts import Decision
from shadowlens.pipeline.windows import ClosedWindow
from shadowlens.schemas.events import DeadLetter

QUANTILES = (("p50", 0.50), ("p95", 0.95), ("p99", 0.99))
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def _dt(ms: int) -> datetime:
    """Exact UTC datetime of epoch milliseconds (no float rounding)."""
    return _EPOCH + timedelta(milliseconds=ms)


def _dt_or_none(ms: int | None) -> datetime | None:
    return None if ms is None else _dt(ms)


# ---- rows -> columns ------------------------------------------------------------------------

# PairScore fields stored as they are, in table order; enum-ish ones go through str().
_PAIR_PLAIN = (
    "experiment",
    "segment",
    "request_id",
    "comparison",
    "outcome",
    "task",
    "mode",
    "primary_model",
    "primary_provider",
    "candidate_model",
    "candidate_provider",
    "primary_status",
    "candidate_status",
)
_PAIR_VALUES = (
    "primary_error_type",
    "candidate_error_type",
    "primary_latency_ms",
    "candidate_latency_ms",
    "primary_ttft_ms",
    "candidate_ttft_ms",
    "latency_ratio",
    "latency_delta_ms",
    "start_skew_ms",
    "primary_cost_usd",
    "candidate_cost_usd",
    "cost_delta_usd",
    "primary_output_tokens",
    "candidate_output_tokens",
    "length_ratio",
    "primary_finish_reason",
    "candidate_finish_reason",
    "finish_reason_changed",
    "error_disagreement",
    "exact_match",
    "label_agree",
    "embedding_cosine",
    "lexical_similarity",
    "semantic_similarity",
    "json_field_agreement",
    "primary_refusal",
    "candidate_refusal",
    "primary_truncated",
    "candidate_truncated",
    "number_mismatch",
    "negation_mismatch",
    "primary_json_valid",
    "candidate_json_valid",
    "json_schema_ok",
    "label_flip",
    "language_changed",
    "weight",
    "preference",
    "preference_weight",
    "preference_skip",
    "judge_cost_usd",
    "primary_body",
    "candidate_body",
    "prompt",
)
_PAIR_ARRAYS = ("json_missing", "json_extra", "json_changed")


def pair_columns(scores: Sequence[PairScore]) -> dict[str, list[Any]]:
    """One list per column of ``pairs``."""
    cols: dict[str, list[Any]] = {
        name: [str(getattr(s, name)) for s in scores] for name in _PAIR_PLAIN
    }
    cols["event_time"] = [_dt(s.event_time_ms) for s in scores]
    cols["primary_failed"] = [s.primary_failed for s in scores]
    cols["candidate_failed"] = [s.candidate_failed for s in scores]
    for name in _PAIR_VALUES:
        cols[name] = [getattr(s, name) for s in scores]
    for name in _PAIR_ARRAYS:
        cols[name] = [list(getattr(s, name)) for s in scores]
    cols["quality"] = [s.quality for s in scores]
    return cols


_SIGNAL_COUNTS = (
    "number_mismatches",
    "negation_mismatches",
    "primary_invalid_json",
    "candidate_invalid_json",
    "schema_misfits",
    "label_flips",
    "language_changes",
)


# Aggregate's paired tables (`PairedCounts`): n, primary, candidate, only_candidate, only_primary
_PAIRED_COLUMNS = {
    "refusals": (
        "refusal_pairs",
        "primary_refusals",
        "candidate_refusals",
        "only_candidate_refused",
        "only_primary_refused",
    ),
    "truncations": (
        "truncation_pairs",
        "primary_truncations",
        "candidate_truncations",
        "only_candidate_truncated",
        "only_primary_truncated",
    ),
}


def window_columns(windows: Sequence[ClosedWindow]) -> dict[str, list[Any]]:
    """One list per column of ``windows``."""
    rows: list[dict[str, Any]] = []
    for w in windows:
        agg = w.aggregate
        row: dict[str, Any] = {
            "experiment": w.key.experiment,
            "segment": w.key.segment,
            "comparison": w.key.comparison,
            "window_start": _dt(w.key.start_ms),
            "window_end": _dt(w.end_ms),
            "first_event_time": _dt_or_none(agg.first_event_ms),
            "last_event_time": _dt_or_none(agg.last_event_ms),
            "n_requests": agg.n_requests,
            "n_paired": agg.n_paired,
            "n_candidate_missing": agg.n_candidate_missing,
            "n_primary_missing": agg.n_primary_missing,
            "n_split": agg.n_split,
            "primary_failures": agg.primary_failures,
            "candidate_failures": agg.candidate_failures,
            "only_candidate_failed": agg.only_candidate_failed,
            "only_primary_failed": agg.only_primary_failed,
            "exact_matches": agg.exact_matches,
            **{name: getattr(agg, name) for name in _SIGNAL_COUNTS},
            "late_pairs": w.late_pairs,
            "pairing_rate": agg.pairing_rate,
            "primary_error_rate": agg.error_rate("primary"),
            "candidate_error_rate": agg.error_rate("candidate"),
            "quality_n": agg.quality.n,
            "quality_mean": agg.quality.mean,
            "quality_var": agg.quality.variance,
            "quality_measured": agg.quality_measured,
            "quality_unsampled": agg.quality_unsampled,
            "quality_sampled_fraction": agg.quality_sampled_fraction,
            "preference_judged": agg.preference_judged,
            "preference_unjudged": agg.preference_unjudged,
            "preference_win_rate": agg.preference.mean,
            "judge_cost_usd": agg.judge_cost_usd,
            "preference_lost_ids": agg.examples("preference"),
            "log_latency_ratio_n": agg.log_latency_ratio.n,
            "log_latency_ratio_mean": agg.log_latency_ratio.mean,
            "log_latency_ratio_var": agg.log_latency_ratio.variance,
            "primary_cost_n": agg.primary_cost_usd.n,
            "primary_cost_mean_usd": agg.primary_cost_usd.mean,
            "candidate_cost_n": agg.candidate_cost_usd.n,
            "candidate_cost_mean_usd": agg.candidate_cost_usd.mean,
            "worst_quality_ids": agg.examples("quality"),
            "slowest_ratio_ids": agg.examples("latency"),
            "candidate_failed_ids": agg.examples("errors"),
            "signal_example_ids": {k: agg.examples(k) for k in SIGNAL_KINDS if k in agg.signal_ids},
        }
        for attr, names in _PAIRED_COLUMNS.items():
            c: PairedCounts = getattr(agg, attr)
            values = (c.n, c.primary, c.candidate, c.only_candidate, c.only_primary)
            row.update(zip(names, values, strict=True))
        for arm in ("primary", "candidate"):
            for label, q in QUANTILES:
                row[f"{arm}_latency_{label}_ms"] = agg.latency_quantile(arm, q)
        rows.append(row)
    return _pivot(rows)


def decision_columns(decisions: Sequence[Decision]) -> dict[str, list[Any]]:
    """One list per column of ``decisions``; evidence as the Nested ``evidence.*`` arrays."""
    cols: dict[str, list[Any]] = {
        "experiment": [d.experiment for d in decisions],
        "epoch": [d.epoch for d in decisions],
        "action": [str(d.action) for d in decisions],
        "from_percent": [float(d.from_percent) for d in decisions],
        "to_percent": [float(d.to_percent) for d in decisions],
        "decided_at": [_dt(d.decided_at_ms) for d in decisions],
        "reason": [d.reason for d in decisions],
        **_lifecycle_columns(decisions),
    }
    evidence: dict[str, Callable[[Any], Any]] = {
        "metric": str,
        "segment": str,
        "verdict": str,
        "observed": _identity,
        "reference": _identity,
        "threshold": _identity,
        "bound": _identity,
        "n": int,
        "critical": bool,
        "reason": str,
        "example_request_ids": list,
    }
    for name, convert in evidence.items():
        cols[f"evidence.{name}"] = [
            [convert(getattr(e, name)) for e in d.evidence] for d in decisions
        ]
    return cols


def _lifecycle_columns(decisions: Sequence[Decision]) -> dict[str, list[Any]]:
    """The lifecycle of each decision (migration 0008): phase, blockers, the proposal, the
    operator who made it by command, and when the old deployment may be decommissioned."""
    ops = [d.operator for d in decisions]
    return {
        "phase": [str(d.phase) for d in decisions],
        "blocking.metric": [[str(b.metric) for b in d.blocking] for d in decisions],
        "blocking.segment": [[b.segment for b in d.blocking] for d in decisions],
        "proposal_action": [str(d.proposal.action) if d.proposal else "" for d in decisions],
        "proposal_percent": [d.proposal.to_percent if d.proposal else None for d in decisions],
        "command": [str(o.command) if o else "" for o in ops],
        "command_id": [o.command_id if o else "" for o in ops],
        "operator_key_id": [o.key_id if o else "" for o in ops],
        "operator_reason": [o.reason if o else "" for o in ops],
        "decommission_after": [_dt_or_none(d.decommission_after_ms) for d in decisions],
    }


def dead_letter_columns(letters: Sequence[DeadLetter]) -> dict[str, list[Any]]:
    """One list per column of ``dead_letters``; ``raw`` stays bytes, byte for byte."""
    return {
        "received_at": [_dt(d.received_ms) for d in letters],
        "reason": [d.reason for d in letters],
        "detail": [d.detail for d in letters],
        "request_id": [d.request_id for d in letters],
        "source": [d.source for d in letters],
        "raw": [bytes(d.raw) for d in letters],
    }


def _identity(value: Any) -> Any:
    return value


def _pivot(rows: list[dict[str, Any]]) -> dict[str, list[Any]]:
    if not rows:
        return {}
    return {name: [row[name] for row in rows] for name in rows[0]}
