"""Score one pair: the primary's response against the candidate's (or the replica's).

Pure and cheap: every comparator here runs on every pair, and so do the LLM-specific signals
of `comparators.signals` (refusal, truncation, number and negation mismatch, JSON validity,
label flips). The semantic score is filled in later, batched across pairs, by
`shadowlens.comparators.semantic`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, fields
from enum import StrEnum
from typing import Any

import numpy as np
import orjson
from shadowlens.comparators.cost import Price, call_cost_usd
from shadowlens.comparators.json_diff import json_diff
from shadowlens.comparators.signals import (
    UNPARSED,
    PairSignals,
    Reader,
    Readings,
    call,
    json_doc,
    pair_signals,
)
from shadowlens.comparators.text import length_ratio, normalize, token_set_similarity, words
from shadowlens.schemas.events import Arm, Event, Status, Task

MISSING = "missing"


class Outcome(StrEnum):
    PAIRED = "paired"
    CANDIDATE_MISSING = "candidate_missing"  # the other arm never arrived: its failure
    PRIMARY_MISSING = "primary_missing"
    SPLIT = "split"  # split-mode traffic: one arm served the request, nothing to pair


@dataclass(frozen=True, slots=True)
class PairScore:
    """Everything known about one request's pair; one row of the pairs table."""

    request_id: str
    experiment: str
    segment: str
    task: str
    mode: str
    comparison: str  # the arm compared with the primary: candidate | replica
    outcome: Outcome
    # When the request's evidence was complete, on the primary's clock: the primary's start
    # plus the slower arm's own latency_ms (no other gateway's clock is read); an orphan's
    # is its pairing deadline, a split single's its completion. Windows use it.
    event_time_ms: int
    primary_model: str = ""
    primary_provider: str = ""
    candidate_model: str = ""
    candidate_provider: str = ""
    primary_status: str = MISSING
    candidate_status: str = MISSING
    primary_error_type: str | None = None
    candidate_error_type: str | None = None
    primary_latency_ms: float | None = None
    candidate_latency_ms: float | None = None
    primary_ttft_ms: float | None = None
    candidate_ttft_ms: float | None = None
    latency_ratio: float | None = None
    latency_delta_ms: float | None = None
    # the compared half's start_time_ms minus the primary's: the gateways' clock offset
    # plus dispatch delay; observed (metrics, report), never used to pair
    start_skew_ms: int | None = None
    primary_cost_usd: float | None = None
    candidate_cost_usd: float | None = None
    cost_delta_usd: float | None = None
    primary_output_tokens: int | None = None
    candidate_output_tokens: int | None = None
    length_ratio: float | None = None
    primary_finish_reason: str | None = None
    candidate_finish_reason: str | None = None
    finish_reason_changed: bool | None = None
    error_disagreement: bool | None = None
    exact_match: bool | None = None
    label_agree: bool | None = None
    embedding_cosine: float | None = None
    lexical_similarity: float | None = None
    semantic_similarity: float | None = None
    json_field_agreement: float | None = None
    json_missing: tuple[str, ...] = ()
    json_extra: tuple[str, ...] = ()
    json_changed: tuple[str, ...] = ()
    # LLM-specific signals (shadowlens.comparators.signals): None where they do not apply
    primary_refusal: bool | None = None
    candidate_refusal: bool | None = None
    primary_truncated: bool | None = None
    candidate_truncated: bool | None = None
    number_mismatch: float | None = None  # Jaccard distance of the answers' number sets
    negation_mismatch: int | None = None  # aligned clauses of opposite polarity
    primary_json_valid: bool | None = None
    candidate_json_valid: bool | None = None
    json_schema_ok: bool | None = None
    label_flip: str | None = None  # "primary->candidate" label when they differ
    language_changed: bool | None = None  # answered in another language (comparators.language)
    primary_body: str = ""
    candidate_body: str = ""
    weight: float = 1.0  # inverse sampling probability of the costly scores
    prompt: str = ""  # the user's request, if the gateway sent it (attribute "prompt")
    # the preference judge's verdict (`comparators.preference`): the candidate's win against
    # the primary, 1 / 0.5 (tie) / 0; None when not judged
    preference: float | None = None
    preference_weight: float = 0.0  # 1 / p of the judge's sample; 0 when not judged
    preference_skip: str | None = None  # why an eligible pair was not judged (`Skip`)
    judge_cost_usd: float | None = None

    @property
    def primary_failed(self) -> bool:
        return self.primary_status != Status.OK

    @property
    def candidate_failed(self) -> bool:
        """A missing candidate counts as its failure (the request got no usable answer)."""
        return self.candidate_status != Status.OK

    @property
    def quality(self) -> float | None:
        """The task's headline agreement in [0, 1]; None unless both arms answered."""
        if self.outcome != Outcome.PAIRED or self.primary_failed or self.candidate_failed:
            return None
        if self.task == Task.CLASSIFICATION:
            return None if self.label_agree is None else float(self.label_agree)
        if self.task == Task.EMBEDDING:
            return self.embedding_cosine
        if self.task == Task.EXTRACTION:
            return self.json_field_agreement
        if self.semantic_similarity is not None:
            return self.semantic_similarity
        return None if self.weight == 0 else self.lexical_similarity  # 0: not drawn (cascade)


def body(event: Event) -> str:
    """The response as text for storage and text comparators."""
    out = event.output
    if out.text is not None:
        return out.text
    if out.label is not None:
        return out.label
    if out.json is not None:
        return orjson.dumps(out.json, option=orjson.OPT_SORT_KEYS).decode()
    return ""


def embedding_cosine(a: tuple[float, ...], b: tuple[float, ...]) -> float | None:
    """Cosine of two output vectors; None when dimensions differ or a vector is zero."""
    if len(a) != len(b) or not a:
        return None
    va, vb = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    denom = float(np.linalg.norm(va) * np.linalg.norm(vb))
    return float(va @ vb / denom) if denom > 0 else None


def _ratio(num: float, den: float) -> float | None:
    return num / den if den > 0 else None


_SIGNALS = tuple(f.name for f in fields(PairSignals))


def _word_set(text: str) -> frozenset[str]:
    return frozenset(words(text))


def _content_scores(
    primary: Event,
    other: Event,
    p_body: str,
    o_body: str,
    json_schema: Mapping[str, Any] | None,
    read: Reader,
) -> dict[str, object]:
    scores: dict[str, object] = {}
    if primary.status != Status.OK or other.status != Status.OK:
        return scores
    pl, ol = primary.output.label, other.output.label
    if pl is not None and ol is not None:
        scores["label_agree"] = normalize(pl) == normalize(ol)
    pe, oe = primary.output.embedding, other.output.embedding
    if pe is not None and oe is not None:
        scores["embedding_cosine"] = embedding_cosine(pe, oe)
    structured = primary.output.json is not None or other.output.json is not None
    if structured or primary.task == Task.EXTRACTION:
        p_doc, o_doc = json_doc(primary), json_doc(other)  # JSON answered as text counts too
    else:
        p_doc = o_doc = UNPARSED
    if p_doc is not UNPARSED or o_doc is not UNPARSED:
        diff = json_diff(None if p_doc is UNPARSED else p_doc, None if o_doc is UNPARSED else o_doc)
        scores.update(
            json_field_agreement=diff.field_agreement,
            json_missing=diff.missing,
            json_extra=diff.extra,
            json_changed=diff.changed,
        )
    if primary.output.text is not None and other.output.text is not None:
        # text.lexical_similarity on words read once, here, for exact_match too
        exact = read(words, p_body) == read(words, o_body)  # the normalised texts are equal
        scores["exact_match"] = exact
        scores["lexical_similarity"] = (
            1.0 if exact else token_set_similarity(read(_word_set, p_body), read(_word_set, o_body))
        )
        scores["length_ratio"] = length_ratio(o_body, p_body)
    signals = pair_signals(primary, other, json_schema, read)
    scores.update((name, getattr(signals, name)) for name in _SIGNALS)
    return scores


def _prompt(event: Event) -> str:
    """The request text a gateway may send as the ``prompt`` attribute (the live preference
    judge shows it to its model); "" when absent."""
    prompt = event.attributes.get("prompt")
    return prompt if isinstance(prompt, str) else ""


def _arm_fields(prefix: str, event: Event, prices: Mapping[str, Price]) -> dict[str, object]:
    return {
        f"{prefix}_model": event.model,
        f"{prefix}_provider": event.provider,
        f"{prefix}_status": str(event.status),
        f"{prefix}_error_type": event.error_type,
        f"{prefix}_latency_ms": event.latency_ms,
        f"{prefix}_ttft_ms": event.ttft_ms,
        f"{prefix}_cost_usd": call_cost_usd(
            event.cost_usd, event.model, event.input_tokens, event.output_tokens, prices
        ),
        f"{prefix}_output_tokens": event.output_tokens,
        f"{prefix}_finish_reason": event.finish_reason,
        f"{prefix}_body": body(event),
    }


def score_pair(
    primary: Event,
    other: Event,
    prices: Mapping[str, Price],
    json_schema: Mapping[str, Any] | None = None,
    read: Reader = call,
) -> PairScore:
    """Compare both halves of one request: deltas, status disagreement, content scores and
    signals. `json_schema` is the extraction task's schema (default: the primary's shape).
    This is what a score means; `score_pairs` scores a batch with it."""
    p, o = _arm_fields("primary", primary, prices), _arm_fields("candidate", other, prices)
    p_cost, o_cost = p["primary_cost_usd"], o["candidate_cost_usd"]
    both_ok = primary.status == Status.OK and other.status == Status.OK
    return PairScore(
        request_id=primary.request_id,
        experiment=primary.experiment,
        segment=primary.segment,
        task=str(primary.task),
        mode=other.mode,
        comparison=str(other.arm),
        outcome=Outcome.PAIRED,
        event_time_ms=primary.start_time_ms + round(max(primary.latency_ms, other.latency_ms)),
        latency_ratio=_ratio(other.latency_ms, primary.latency_ms) if both_ok else None,
        latency_delta_ms=other.latency_ms - primary.latency_ms if both_ok else None,
        start_skew_ms=other.start_time_ms - primary.start_time_ms,
        cost_delta_usd=(o_cost - p_cost)
        if isinstance(p_cost, float) and isinstance(o_cost, float)
        else None,
        finish_reason_changed=(primary.finish_reason != other.finish_reason) if both_ok else None,
        error_disagreement=(primary.status == Status.OK) != (other.status == Status.OK),
        prompt=_prompt(primary),
        **p,
        **o,
        **_content_scores(
            primary, other, str(p["primary_body"]), str(o["candidate_body"]), json_schema, read
        ),
    )


def score_pairs(
    pairs: Sequence[tuple[Event, Event]],
    prices: Mapping[str, Price],
    json_schema: Mapping[str, Any] | None = None,
) -> list[PairScore]:
    """`score_pair` for a batch, with one `Readings` for all of it: what the comparators
    derive from one answer's text (words, numbers, clauses, refusal) is computed once per
    distinct answer in the batch. The same scores, by the same function."""
    read = Readings()
    return [score_pair(primary, other, prices, json_schema, read) for primary, other in pairs]


def score_orphan(
    present: Event, missing_arm: str, prices: Mapping[str, Price], deadline_ms: int
) -> PairScore:
    """A request whose other half never came: kept, and counted against the missing arm.
    It is windowed when it was declared, at its pairing deadline, not at its start, so a
    window never waits `max_call_ms` for the orphans it might get."""
    if present.arm == Arm.PRIMARY:
        return _single(present, Outcome.CANDIDATE_MISSING, missing_arm, prices, deadline_ms)
    return _single(present, Outcome.PRIMARY_MISSING, str(present.arm), prices, deadline_ms)


def score_split(event: Event, prices: Mapping[str, Price]) -> PairScore:
    """Split-mode traffic: one arm served the request; its latency, cost and errors count."""
    comparison = str(Arm.CANDIDATE) if event.arm == Arm.PRIMARY else str(event.arm)
    done_ms = event.start_time_ms + round(event.latency_ms)
    return _single(event, Outcome.SPLIT, comparison, prices, done_ms)


def _single(
    present: Event,
    outcome: Outcome,
    comparison: str,
    prices: Mapping[str, Price],
    event_time_ms: int,
) -> PairScore:
    prefix = "primary" if present.arm == Arm.PRIMARY else "candidate"
    return PairScore(
        request_id=present.request_id,
        experiment=present.experiment,
        segment=present.segment,
        task=str(present.task),
        mode=present.mode,
        comparison=comparison,
        outcome=outcome,
        event_time_ms=event_time_ms,
        **_arm_fields(prefix, present, prices),
    )
