"""Every scenario's seeded runs through every method, on a process pool."""

from __future__ import annotations

from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import replace

from shadowlens.judge.policy import Policy, load_policy

from .baselines import FLAGGER_THRESHOLDS, run_flagger, run_kayenta, window_series
from .corpus import Corpus
from .fastpath import run_shadowlens
from .runs import MethodResult, draw_run
from .scenarios import Config, Scenario
from .variants import classifiers_for

_CORPUS: Corpus | None = None
Outcome = tuple[int, dict[str, MethodResult]]  # the run's fixed-horizon samples, per method


def _init(corpus: Corpus) -> None:
    """Give a worker process the corpus once, not with every task."""
    global _CORPUS
    _CORPUS = corpus


def scenario_policy(sc: Scenario, corpus: Corpus) -> Policy:
    """The shipped policy; with `reference`, the user sets the generation reference the
    corpus's replica answers have (what an offline study of the primary would measure)."""
    policy = load_policy()
    if not sc.reference:
        return policy
    ref = replace(policy.quality.reference, generation=corpus.reference)
    return replace(policy, quality=replace(policy.quality, reference=ref))


def _task(args: tuple[Scenario, Config, list[int]]) -> list[Outcome]:
    """One scenario's seeds in a worker: every method on the same drawn runs."""
    sc, cfg, seeds = args
    assert _CORPUS is not None
    classifiers = classifiers_for(cfg.variant)
    policy = scenario_policy(sc, _CORPUS)
    horizon = cfg.horizon_windows * policy.windows.size_ms
    reference = policy.quality.reference.of(sc.task)
    out = []
    for seed in seeds:
        run = draw_run(_CORPUS, sc, cfg, policy, seed)
        res = {"shadowlens": run_shadowlens(run, _CORPUS, policy, horizon, sc.target, classifiers)}
        if cfg.variant == "current":
            series = window_series(run, policy, cfg.horizon_windows, reference)
            for k in FLAGGER_THRESHOLDS:
                res[f"flagger-{k}"] = run_flagger(run, series, policy, k)
            res["kayenta"] = run_kayenta(run, series, policy)
        out.append((run.horizon_samples, res))
    return out


def run_all(
    corpus: Corpus, scenarios: Sequence[Scenario], cfg: Config, workers: int
) -> dict[str, list[Outcome]]:
    """Per scenario key, each run's outcome, in seed order."""
    tasks = []
    for sc in scenarios:
        runs = cfg.runs_of(sc)
        chunk = max(1, min(25, runs // max(1, workers * 2)))
        for j in range(0, runs, chunk):
            tasks.append((sc, cfg, list(range(j, min(runs, j + chunk)))))
    # expensive scenarios (no early stop) first, so the workers finish together
    tasks.sort(key=lambda t: t[0].target is not None and not t[0].within_policy)
    results: dict[str, list[Outcome]] = {sc.key: [] for sc in scenarios}
    if workers <= 1:
        _init(corpus)
        for t in tasks:
            results[t[0].key].extend(_task(t))
    else:
        with ProcessPoolExecutor(workers, initializer=_init, initargs=(corpus,)) as pool:
            for t, out in zip(tasks, pool.map(_task, tasks), strict=True):
                results[t[0].key].extend(out)
    return results
