"""The replayed data, computed once: per-instruction similarities, refusals and the trace."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from shadowlens.comparators.signals import is_refusal
from shadowlens.comparators.text import lexical_similarity
from shadowlens.replay.datasets import Sample
from shadowlens.replay.models import PRIMARY_MODEL, REPLICA_OUTPUT_MODEL

SIBLING = REPLICA_OUTPUT_MODEL  # gpt4_0613_concise: the primary's equal-quality sibling


@dataclass(frozen=True, slots=True)
class Corpus:
    """Everything expensive, computed once: per-instruction similarities and the trace."""

    source: str
    segments: tuple[str, ...]
    segment_of: np.ndarray  # instruction -> segment index
    sim_sibling: np.ndarray  # similarity of the primary's output to the sibling's
    sim_offtopic: np.ndarray  # ... to the sibling's answer to another instruction
    offtopic_of: np.ndarray  # which other instruction's answer that is
    refused_primary: np.ndarray  # bool: the primary's output is a refusal (the judge's signal)
    refused_sibling: np.ndarray  # ... the sibling's
    offsets_ms: np.ndarray  # trace arrivals, from 0
    input_tokens: np.ndarray
    output_tokens: np.ndarray
    period_ms: int  # the trace repeats after this

    @property
    def rate_per_s(self) -> float:
        return len(self.offsets_ms) / (self.period_ms / 1000)


def build_corpus(sample: Sample, source: str) -> Corpus:
    """What the pipeline would compute per pair, done once per instruction."""
    ins = sample.instructions
    segments = tuple(sorted({i.segment for i in ins}))
    k = len(ins)
    shift = np.random.default_rng(12345).permutation(k)  # a fixed other instruction for each
    shift = np.where(shift == np.arange(k), (shift + 1) % k, shift)
    primary = [i.outputs[PRIMARY_MODEL] for i in ins]
    sibling = [i.outputs[SIBLING] for i in ins]
    offsets = np.array([a.offset_ms for a in sample.arrivals], dtype=np.int64)
    span = int(offsets[-1] - offsets[0])
    return Corpus(
        source=source,
        segments=segments,
        segment_of=np.array([segments.index(i.segment) for i in ins]),
        sim_sibling=np.array(
            [lexical_similarity(p, s) for p, s in zip(primary, sibling, strict=True)]
        ),
        sim_offtopic=np.array(
            [lexical_similarity(primary[j], sibling[shift[j]]) for j in range(k)]
        ),
        offtopic_of=shift,
        refused_primary=np.array([is_refusal(t) for t in primary]),
        refused_sibling=np.array([is_refusal(t) for t in sibling]),
        offsets_ms=offsets - offsets[0],
        input_tokens=np.array([a.input_tokens for a in sample.arrivals], dtype=np.float64),
        output_tokens=np.array([a.output_tokens for a in sample.arrivals], dtype=np.float64),
        period_ms=span + max(1, round(span / max(1, len(offsets) - 1))),
    )
