"""Semantic scoring in the running job: build the cascade from a backend name, and run the
encoder of the Faust worker off the event loop.

`make_cascade` serves `shadowlens replay --semantic` (as the Pipeline's enrich hook) and the
worker (``SHADOWLENS_SEMANTIC``). Nothing heavy is imported unless a backend is chosen: with
``off`` neither torch nor onnxruntime is loaded.

In the worker, `SemanticStage.enrich` routes a batch on the loop (cheap), sends the pairs
that need the model to a one-thread executor (torch and ONNX Runtime release the GIL, so
heartbeats, timers and the judging agent keep running while it encodes) and applies the
result before the pairs are produced.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from concurrent.futures import ThreadPoolExecutor

from shadowlens.comparators.cascade import SemanticCascade, apply_plan, tally
from shadowlens.comparators.pairs import PairScore
from shadowlens.comparators.semantic import make_encoder, semantic_similarity
from shadowlens.judge.policy import Policy

BACKENDS = ("off", "torch", "onnx")
CACHE_ENTRIES = 10_000  # embeddings kept (1.5 KiB each): repeated outputs skip the model


def make_cascade(backend: str, policy: Policy) -> SemanticCascade | None:
    """The cascade over a cached encoder of `backend`, or None for ``off``.

    Raises ValueError for an unknown backend and `SemanticBackendUnavailable` (with the
    install or export command) when its packages or model files are missing."""
    name = backend.strip().lower()
    if name not in BACKENDS:
        raise ValueError(f"unknown semantic backend {backend!r}: use one of {', '.join(BACKENDS)}")
    if name == "off":
        return None
    encoder = make_encoder(name, cache_entries=CACHE_ENTRIES)
    return SemanticCascade(encoder, policy.semantic)


class SemanticStage:
    """The worker's semantic step: one batch of pair scores in, the same scored out."""

    def __init__(self, cascade: SemanticCascade, counts: Counter[str]) -> None:
        self.cascade = cascade
        self.counts = counts
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="semantic")

    @classmethod
    def build(cls, backend: str, policy: Policy, counts: Counter[str]) -> SemanticStage | None:
        cascade = make_cascade(backend, policy)
        return None if cascade is None else cls(cascade, counts)

    async def enrich(self, scores: list[PairScore]) -> list[PairScore]:
        plan = self.cascade.plan(scores)
        sims: list[float] = []
        if plan.texts:
            loop = asyncio.get_running_loop()
            encoded = await loop.run_in_executor(
                self._pool, semantic_similarity, self.cascade.encoder, plan.texts
            )
            sims = encoded.tolist()
        out = apply_plan(plan, sims)
        self.counts.update(tally(out))
        return out
