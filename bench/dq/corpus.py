"""The replayed data, computed once: per-instruction answers, similarities, refusals, trace.

A replica is a second sample of the primary, and LLMs disagree with themselves: the same
model asked twice words its answer differently. The data hold one sibling answer per
instruction (gpt4_0613_concise), so each instruction gets `VARIANTS` answers of the primary
"asked again": the sibling's, and the sibling's with a random fifth of its words left out.
The replica and an A/A candidate each draw one, independently, for every request: their
similarity to the primary and their refusals then come from the same distribution and are
never the same per-request value by construction. Every variant is real text, so the
pipeline's own comparators give the same numbers (tests/test_bench_decision_quality.py).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from shadowlens.comparators.signals import is_refusal
from shadowlens.comparators.text import lexical_similarity
from shadowlens.replay.datasets import Sample
from shadowlens.replay.models import PRIMARY_MODEL, REPLICA_OUTPUT_MODEL

SIBLING = REPLICA_OUTPUT_MODEL  # gpt4_0613_concise: the primary's equal-quality sibling
VARIANTS = 6  # answers per instruction of the primary asked again
DROPOUT = 0.2  # share of words a variant leaves out


def variant(text: str, instruction: int, k: int) -> str:
    """The k-th answer of the primary asked again (k = 0: the sibling's own)."""
    if k == 0:
        return text
    words = text.split(" ")
    keep = np.random.default_rng([instruction, k]).random(len(words)) >= DROPOUT
    keep[0] = keep[0] or not keep.any()
    return " ".join(w for w, kept in zip(words, keep, strict=True) if kept)


@dataclass(frozen=True, slots=True)
class Corpus:
    """Everything expensive, computed once: per-instruction similarities and the trace."""

    source: str
    segments: tuple[str, ...]
    segment_of: np.ndarray  # instruction -> segment index
    sim_variant: np.ndarray  # (instruction, variant): similarity to the primary's answer
    refused_variant: np.ndarray  # (instruction, variant): the answer is a refusal
    sim_offtopic: np.ndarray  # the sibling's answer to another instruction, vs the primary
    offtopic_of: np.ndarray  # which other instruction's answer that is
    refused_primary: np.ndarray  # bool: the primary's output is a refusal (the judge's signal)
    offsets_ms: np.ndarray  # trace arrivals, from 0
    input_tokens: np.ndarray
    output_tokens: np.ndarray
    period_ms: int  # the trace repeats after this

    @property
    def rate_per_s(self) -> float:
        return len(self.offsets_ms) / (self.period_ms / 1000)

    @property
    def reference(self) -> float:
        """The primary's mean agreement with itself: what an offline study would measure
        and a user set as `[quality.reference] generation`."""
        return round(float(self.sim_variant.mean()), 2)


def build_corpus(sample: Sample, source: str) -> Corpus:
    """What the pipeline would compute per pair, done once per instruction."""
    ins = sample.instructions
    segments = tuple(sorted({i.segment for i in ins}))
    k = len(ins)
    shift = np.random.default_rng(12345).permutation(k)  # a fixed other instruction for each
    shift = np.where(shift == np.arange(k), (shift + 1) % k, shift)
    primary = [i.outputs[PRIMARY_MODEL] for i in ins]
    answers = [
        [variant(i.outputs[SIBLING], j, v) for v in range(VARIANTS)] for j, i in enumerate(ins)
    ]
    offsets = np.array([a.offset_ms for a in sample.arrivals], dtype=np.int64)
    span = int(offsets[-1] - offsets[0])
    return Corpus(
        source=source,
        segments=segments,
        segment_of=np.array([segments.index(i.segment) for i in ins]),
        sim_variant=np.array(
            [
                [lexical_similarity(p, a) for a in row]
                for p, row in zip(primary, answers, strict=True)
            ]
        ),
        refused_variant=np.array([[is_refusal(a) for a in row] for row in answers]),
        sim_offtopic=np.array(
            [lexical_similarity(primary[j], answers[shift[j]][0]) for j in range(k)]
        ),
        offtopic_of=shift,
        refused_primary=np.array([is_refusal(t) for t in primary]),
        offsets_ms=offsets - offsets[0],
        input_tokens=np.array([a.input_tokens for a in sample.arrivals], dtype=np.float64),
        output_tokens=np.array([a.output_tokens for a in sample.arrivals], dtype=np.float64),
        period_ms=span + max(1, round(span / max(1, len(offsets) - 1))),
    )
