"""Semantic scoring throughput: the model's raw encode rate vs the pipeline's, torch vs ONNX.

    .venv/bin/python bench/semantic_throughput.py               # 120 requests of the sample
    .venv/bin/python bench/semantic_throughput.py --requests 400 --data-dir ../shared/data

Traffic: `--requests` requests of gpt4_0613 (primary) against Meta-Llama-3-70B-Instruct
(candidate), real AlpacaEval outputs at Azure trace arrivals (`shadowlens.replay.traffic`), each
instruction at most once (the shipped sample has 280, the full set 805), so no text
repeats and the embedding cache cannot flatter the pipeline. Per backend, side by side:

(a) raw: one ``encoder.encode`` call on exactly the texts the pipeline sent to the model
    (recorded in (b), checked equal as a multiset), batched by the encoder itself;
(b) pipeline: the requests' wire events through `shadowlens.job.pipeline.Pipeline` (decode, pair,
    lexical scores, the semantic cascade with no budget limit behind a fresh LRU cache,
    windows, judge), i.e. ``shadowlens replay --semantic <backend> --no-store``.

Both rates are in pairs per second (pairs / wall time); each is the best of `--rounds`
rounds, alternating (a) and (b) so the machine's background load hits both alike. The
pipeline scores in the batches it drains (every 256 pairs or each tenth of a window of
event time), so its batches are smaller than (a)'s single call; the table shows how many
calls it made and the share of its time spent inside the model (the rest is decoding,
pairing, lexical scores, windows and the judge). Models run with their backends' default
thread counts; on shared cores the figures move with the load, both sides alike. Last line:

    RESULT ratio_pipeline_vs_raw=<b/a, torch> speedup_fast_backend=<b onnx / b torch>
        max_cos_diff=<max |cos_onnx - cos_torch| over the pairs>
"""

from __future__ import annotations

import argparse
import sys
import time
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from shadowlens.comparators.cascade import SemanticCascade, SemanticPolicy  # noqa: E402
from shadowlens.comparators.pairs import PairScore  # noqa: E402
from shadowlens.comparators.semantic import CachedEncoder, Encoder, make_encoder  # noqa: E402
from shadowlens.job.pipeline import Pipeline  # noqa: E402
from shadowlens.job.sinks import MemorySink  # noqa: E402
from shadowlens.judge.policy import load_policy  # noqa: E402
from shadowlens.replay.datasets import load_full, load_sample  # noqa: E402
from shadowlens.replay.faults import Faults, wire_payloads  # noqa: E402
from shadowlens.replay.traffic import build_events  # noqa: E402
from shadowlens.streams.semantic_stage import CACHE_ENTRIES  # noqa: E402

PRIMARY, CANDIDATE = "gpt4_0613", "Meta-Llama-3-70B-Instruct"
NO_LIMIT = SemanticPolicy(max_pairs_per_s=0)


class Recorder:
    """Passes through to the model; keeps every text it was asked for and the time spent."""

    def __init__(self, encoder: Encoder) -> None:
        self.encoder = encoder
        self.texts: list[str] = []
        self.calls = 0
        self.seconds = 0.0

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        self.texts += texts
        self.calls += 1
        started = time.perf_counter()
        try:
            return self.encoder.encode(texts)
        finally:
            self.seconds += time.perf_counter() - started


def payloads(requests: int, data_dir: Path | None) -> list[bytes]:
    sample = load_sample() if data_dir is None else load_full(data_dir, models=(PRIMARY, CANDIDATE))
    n = min(requests, len(sample.instructions))
    events = build_events(
        sample.instructions, sample.arrivals, primary=PRIMARY, candidate=CANDIDATE, requests=n
    )
    return wire_payloads(events, Faults())


def run_pipeline(raw: Sequence[bytes], model: Encoder) -> tuple[float, list[PairScore], Recorder]:
    """Seconds for the whole replay, its pair scores, and what reached the model."""
    recorder = Recorder(model)
    cascade = SemanticCascade(CachedEncoder(recorder, CACHE_ENTRIES), NO_LIMIT)
    sink = MemorySink()
    pipeline = Pipeline(load_policy(), sink, cascade)
    started = time.perf_counter()
    for payload in raw:
        pipeline.feed(payload)
    pipeline.finish()
    return time.perf_counter() - started, sink.scores, recorder


def measure(backend: str, raw: Sequence[bytes], rounds: int) -> dict:
    model = make_encoder(backend)
    model.encode(["warm up", "the model and its thread pool"])
    best_pipe = best_raw = float("inf")
    for _ in range(rounds):
        seconds, scores, recorder = run_pipeline(raw, model)
        if seconds < best_pipe:
            best_pipe, in_model = seconds, recorder.seconds
        started = time.perf_counter()
        model.encode(recorder.texts)
        best_raw = min(best_raw, time.perf_counter() - started)
    scored = [s for s in scores if s.semantic_similarity is not None]
    pairs = len(scored)
    wanted = Counter(
        t for s in scored if not s.exact_match for t in (s.primary_body, s.candidate_body)
    )
    if Counter(recorder.texts) != Counter(dict.fromkeys(wanted, 1)):
        raise SystemExit("the pipeline did not send each distinct text of its pairs once")
    return {
        "backend": backend,
        "pairs": pairs,
        "texts": len(recorder.texts),
        "raw_pps": pairs / best_raw,
        "pipe_pps": pairs / best_pipe,
        "model_share": in_model / best_pipe,
        "calls": recorder.calls,
        "cos": {s.request_id: s.semantic_similarity for s in scored},
    }


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--requests", type=int, default=120, help="requests (pairs) to replay")
    ap.add_argument("--rounds", type=int, default=3, help="best of this many rounds")
    ap.add_argument("--data-dir", type=Path, default=None, help="../shared/data: all 805")
    args = ap.parse_args(argv)

    raw = payloads(args.requests, args.data_dir)
    results = {b: measure(b, raw, args.rounds) for b in ("torch", "onnx")}
    print(f"{len(raw)} events; pairs and texts sent to the model, pairs/s (best of {args.rounds})")
    print(
        f"{'backend':8} {'pairs':>6} {'texts':>6} {'raw':>9} {'pipeline':>9} {'ratio':>6} "
        f"{'pipeline batches':>17} {'pipeline time in model':>23}"
    )
    for r in results.values():
        ratio = r["pipe_pps"] / r["raw_pps"]
        print(
            f"{r['backend']:8} {r['pairs']:6d} {r['texts']:6d} {r['raw_pps']:9.1f} "
            f"{r['pipe_pps']:9.1f} {ratio:6.2f} {r['calls']:17d} {r['model_share']:23.1%}"
        )
    torch, onnx = results["torch"], results["onnx"]
    common = sorted(set(torch["cos"]) & set(onnx["cos"]))
    diffs = np.array([abs(onnx["cos"][k] - torch["cos"][k]) for k in common])
    print(
        f"onnx int8 vs torch: raw x{onnx['raw_pps'] / torch['raw_pps']:.2f}, pipeline "
        f"x{onnx['pipe_pps'] / torch['pipe_pps']:.2f}; |cos diff| over {len(common)} pairs: "
        f"mean {diffs.mean():.4f}, max {diffs.max():.4f}"
    )
    print(
        f"RESULT ratio_pipeline_vs_raw={torch['pipe_pps'] / torch['raw_pps']:.3f} "
        f"speedup_fast_backend={onnx['pipe_pps'] / torch['pipe_pps']:.3f} "
        f"max_cos_diff={diffs.max():.4f}"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
