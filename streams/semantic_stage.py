"""Semantic scoring in the running job: build the cascade from a backend name, and run the
encoder of the Faust worker off the event loop.

`make_cascade` serves `shadowlens replay --semantic` (as the Pipeline's enrich hook) and the
worker (``SHADOWLENS_SEMANTIC``). Nothing heavy is imported unless a backend is chosen: with
``off`` neither torch nor onnxruntime is loaded.

In the worker, `SemanticStage` never holds a batch. It routes the batch on the loop
(cheap) within its task's share of ``[semantic]`` (`comparators.cascade.Share`: the rate
and the burst divided by the events partitions, so all workers together stay within the
policy). A batch that needs the model goes out at once with its drawn pairs unmeasured
(weight 0: counted unsampled until their scores come), and the encode runs in a one-thread
pool (torch and ONNX Runtime release the GIL); the pairing task collects the scores with a
later batch or timer run and produces them as ``semantic`` records
(`shadowlens.streams.later`), which the judging side adds to the pairs' windows
(`Aggregate.add_semantic`) and writes over the pairs' rows. An encode that fails or is not
done ``SHADOWLENS_SEMANTIC_TIMEOUT_S`` after it was queued degrades its batch: every pair
drawn in it stays unsampled, counted (``semantic.timeout`` / ``semantic.error``,
``shadowlens_semantic_degraded_total``). A batch the model need not see (all exact matches)
is scored at once, as in the replay.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from concurrent.futures import Future, ThreadPoolExecutor
from functools import partial

import numpy as np
from shadowlens.comparators.aggregate import Later
from shadowlens.comparators.cascade import (
    DRAWN,
    Budget,
    Plan,
    SemanticCascade,
    Share,
    ahead,
    apply_plan,
    plan_batch,
    similarities,
    tally,
    with_similarity,
)
from shadowlens.comparators.pairs import PairScore
from shadowlens.comparators.semantic import make_encoder, semantic_similarity
from shadowlens.judge.policy import Policy
from shadowlens.streams.later import FollowUps, Update, Work, pair_key
from shadowlens.streams.metrics import Metrics

log = logging.getLogger(__name__)

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
    """The worker's semantic step: pairs go out at once, scores follow per task
    (`shadowlens.streams.later.FollowUps`); each task draws on its share of the budget."""

    def __init__(
        self,
        cascade: SemanticCascade,
        counts: Counter[str],
        later: FollowUps,
        partitions: int,
        timeout_s: float,
        metrics: Metrics | None = None,
    ) -> None:
        self.cascade = cascade
        self.counts = counts
        self.later = later
        self.share = Share.of(cascade.policy, partitions)
        self.timeout_s = timeout_s
        self.metrics = metrics
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="semantic")

    @classmethod
    def build(
        cls,
        backend: str,
        policy: Policy,
        counts: Counter[str],
        later: FollowUps,
        partitions: int,
        timeout_s: float,
        metrics: Metrics | None = None,
    ) -> SemanticStage | None:
        cascade = make_cascade(backend, policy)
        if cascade is None:
            return None
        return cls(cascade, counts, later, partitions, timeout_s, metrics)

    def full_budget(self) -> Budget:
        """A task's bucket when nothing was saved: its share of the burst."""
        return Budget.full(self.share)

    def enrich(
        self, scores: list[PairScore], task: int, budget: Budget
    ) -> tuple[list[PairScore], Budget]:
        """`scores` as they go out now, and `task`'s budget after them. A batch the model
        need not see (exact matches, unsampled) is scored here; otherwise its drawn pairs
        go out unmeasured and the encode runs in the pool for `task` to collect."""
        plan, budget = plan_batch(scores, budget, self.share)
        if not plan.texts:
            out = apply_plan(plan, [])
            self.counts.update(tally(out))
            return out, budget
        out = ahead(plan)
        drawn = [pair_key(s) for s, r in zip(out, plan.routes, strict=True) if r in DRAWN]
        call = self._pool.submit(semantic_similarity, self.cascade.encoder, plan.texts)
        deadline = time.monotonic() + self.timeout_s
        work = Work(Later.SEMANTIC, tuple(drawn), call, partial(self._settle, plan), deadline)
        self.later.start(task, work)
        self.later.sent(task, out)
        self.counts["semantic.deferred"] += len(drawn)
        rest = [s for s, r in zip(out, plan.routes, strict=True) if r not in DRAWN]
        self.counts.update(tally(rest))
        return out, budget

    def _settle(self, plan: Plan, call: Future[np.ndarray] | None) -> list[Update] | None:
        """The drawn pairs' scores, or None when the encode failed or timed out: the whole
        batch then stays unsampled (counted), exact matches too, so the measured sample
        loses whole batches, never a part of one."""
        drawn = sum(r in DRAWN for r in plan.routes)
        if call is None or call.exception() is not None:
            reason = "timeout" if call is None else "error"
            if not self.counts[f"semantic.{reason}"]:
                log.warning(
                    "semantic encode %s (%s): the batch's pairs stay unsampled; later ones "
                    "are counted (semantic.%s, shadowlens_semantic_degraded_total)",
                    reason,
                    f"over {self.timeout_s} s" if call is None else repr(call.exception()),
                    reason,
                )
            self.counts[f"semantic.{reason}"] += drawn
            self.counts["semantic.unsampled"] += drawn
            if self.metrics is not None:
                self.metrics.observe_semantic_degraded(reason, drawn)
            return None
        self.counts["semantic.measured"] += drawn
        sims = similarities(plan, call.result().tolist())
        return [partial(with_similarity, similarity=x, fraction=plan.fraction) for x in sims]

    def stop(self) -> None:
        """The worker is stopping: encodes not started are not run."""
        self._pool.shutdown(wait=False, cancel_futures=True)
