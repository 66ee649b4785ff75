"""Every scenario's seeded runs through every method, on a process pool."""

from __future__ import annotations

from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor

from shadowlens.judge.policy import load_policy

from .baselines import run_flagger, run_kayenta, window_series
from .corpus import Corpus
from .fastpath import run_shadowlens
from .runs import MethodResult, draw_run
from .scenarios import Config, Scenario
from .variants import classifiers_for

_CORPUS: Corpus | None = None


def _init(corpus: Corpus) -> None:
    """Give a worker process the corpus once, not with every task."""
    global _CORPUS
    _CORPUS = corpus


def _task(args: tuple[Scenario, Config, list[int]]) -> list[tuple[int, dict[str, MethodResult]]]:
    """One scenario's seeds in a worker: every method on the same drawn runs."""
    sc, cfg, seeds = args
    assert _CORPUS is not None
    classifiers = classifiers_for(cfg.variant)
    policy = load_policy()
    horizon = cfg.horizon_windows * policy.windows.size_ms
    out = []
    for seed in seeds:
        run = draw_run(_CORPUS, sc, cfg, policy, seed)
        series = window_series(run, policy, cfg.horizon_windows)
        shadowlens = run_shadowlens(run, _CORPUS, policy, horizon, sc.target, classifiers)
        res = {"shadowlens": shadowlens}
        if cfg.variant == "current":
            res["flagger"] = run_flagger(run, series, policy)
            res["kayenta"] = run_kayenta(run, series, policy)
        out.append((seed, res))
    return out


def run_all(
    corpus: Corpus, scenarios: Sequence[Scenario], cfg: Config, workers: int
) -> dict[str, list[dict[str, MethodResult]]]:
    """Per scenario key, each run's result per method, in seed order."""
    chunk = max(1, min(25, cfg.runs // max(1, workers * 2)))
    tasks = []
    for sc in scenarios:
        seeds = list(range(cfg.runs))
        for j in range(0, len(seeds), chunk):
            tasks.append((sc, cfg, seeds[j : j + chunk]))
    # expensive scenarios (no early stop) first, so both workers finish together
    tasks.sort(key=lambda t: t[0].target is not None)
    results: dict[str, list[dict[str, MethodResult]]] = {sc.key: [] for sc in scenarios}
    if workers <= 1:
        _init(corpus)
        done = map(_task, tasks)
        for t, out in zip(tasks, done, strict=True):
            results[t[0].key].extend(r for _, r in out)
    else:
        with ProcessPoolExecutor(workers, initializer=_init, initargs=(corpus,)) as pool:
            for t, out in zip(tasks, pool.map(_task, tasks), strict=True):
                results[t[0].key].extend(r for _, r in out)
    return results
