"""Tests of comparators/semantic.py.

Tests marked ``semantic`` run the real all-MiniLM-L6-v2 model on real AlpacaEval outputs, with
both backends. They never skip: when torch / sentence-transformers / onnxruntime / tokenizers
or the model package are missing they fail with the install command. The ONNX export is
created on first use (``scripts/export_onnx.py``, ~30 s, needs torch) in
``${SHADOWLENS_CACHE:-~/.cache/shadowlens}/minilm-onnx-int8``.

The other tests use a fake encoder and need numpy only.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import re
import subprocess
import sys
import tomllib
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pytest
from shadowlens.comparators.semantic import (
    EMBEDDING_DIM,
    CachedEncoder,
    Encoder,
    OnnxEncoder,
    SemanticBackendUnavailable,
    default_onnx_dir,
    make_encoder,
    semantic_similarity,
    text_key,
)
from shadowlens.comparators.text import normalize

ROOT = Path(__file__).resolve().parents[1]


# --------------------------------------------------------------------------------------------
# fake encoder: deterministic unit vectors, counts calls
# --------------------------------------------------------------------------------------------


class CountingEncoder:
    """Deterministic pseudo-embeddings from a hash of the text; records every call."""

    def __init__(self, dim: int = 16) -> None:
        self.dim = dim
        self.calls: list[list[str]] = []

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        texts = list(texts)
        self.calls.append(texts)
        rows = []
        for t in texts:
            seed = int.from_bytes(hashlib.sha256(t.encode()).digest()[:8], "little")
            v = np.random.default_rng(seed).standard_normal(self.dim)
            rows.append(v / np.linalg.norm(v))
        return np.asarray(rows, dtype=np.float32).reshape(len(texts), self.dim)

    @property
    def texts_encoded(self) -> int:
        return sum(len(c) for c in self.calls)


def test_counting_encoder_satisfies_protocol():
    assert isinstance(CountingEncoder(), Encoder)


def test_cache_hits_do_not_call_encoder_again():
    inner = CountingEncoder()
    enc = CachedEncoder(inner, max_entries=100)
    first = enc.encode(["a", "b", "c"])
    assert len(inner.calls) == 1 and inner.calls[0] == ["a", "b", "c"]

    again = enc.encode(["c", "a", "b"])
    assert len(inner.calls) == 1, "all hits: the wrapped encoder must not be called"
    np.testing.assert_array_equal(again, first[[2, 0, 1]])

    mixed = enc.encode(["a", "d", "b", "e", "d"])
    assert len(inner.calls) == 2, "misses go out in one batch"
    assert inner.calls[1] == ["d", "e"], "only the misses, deduplicated, in first-seen order"
    np.testing.assert_array_equal(mixed[1], mixed[4])
    np.testing.assert_array_equal(mixed[0], first[0])
    assert enc.stats() == {"entries": 5, "max_entries": 100, "hits": 6, "misses": 5}


def test_cache_key_uses_normalised_text():
    inner = CountingEncoder()
    enc = CachedEncoder(inner, max_entries=10)
    enc.encode(["Hello   world\n"])
    enc.encode([" Hello world", "Hello\tworld"])
    assert inner.texts_encoded == 1
    assert normalize("  Caf\u0065\u0301 \n\n au\tlait ", fold=False) == "Caf\u00e9 au lait"
    assert text_key("x  y") == text_key("x y") != text_key("x z")
    # no folding in the key: casefolding or NFKC could change MiniLM's word pieces
    assert text_key("Stra\u00dfe") != text_key("STRASSE") and text_key("\ufb01") != text_key("fi")
    assert normalize("Stra\u00dfe") == normalize("STRASSE") and normalize("\ufb01") == "fi"
    assert len(text_key("anything")) == 16


def test_cache_is_lru_and_bounded():
    inner = CountingEncoder()
    enc = CachedEncoder(inner, max_entries=2)
    enc.encode(["a", "b"])
    enc.encode(["a"])  # a becomes most recent
    enc.encode(["c"])  # evicts b
    assert len(enc) == 2
    calls = len(inner.calls)
    enc.encode(["a", "c"])
    assert len(inner.calls) == calls, "a and c are cached"
    enc.encode(["b"])
    assert inner.calls[-1] == ["b"], "b was evicted"


def test_cache_with_zero_entries_still_dedups_within_a_call():
    inner = CountingEncoder()
    enc = CachedEncoder(inner, max_entries=0)
    out = enc.encode(["x", "x", "y"])
    assert inner.calls == [["x", "y"]]
    np.testing.assert_array_equal(out[0], out[1])
    enc.encode(["x"])
    assert len(inner.calls) == 2 and len(enc) == 0


def test_cached_rows_cannot_be_corrupted_by_callers():
    enc = CachedEncoder(CountingEncoder(), max_entries=10)
    out = enc.encode(["a"])
    out[:] = 0
    assert np.linalg.norm(enc.encode(["a"])[0]) == pytest.approx(1.0, abs=1e-6)


def test_semantic_similarity_batches_and_dedups():
    inner = CountingEncoder()
    pairs = [("a", "b"), ("b", "c"), ("a", "a"), ("c", "a"), ("", "b")]
    sims = semantic_similarity(inner, pairs)
    assert len(inner.calls) == 1, "one encode call for all pairs"
    assert sorted(inner.calls[0]) == ["", "a", "b", "c"], "each distinct text once"
    assert sims.dtype == np.float32 and sims.shape == (5,)
    assert sims[2] == 1.0
    e = dict(zip(inner.calls[0], inner.encode(inner.calls[0]), strict=True))
    assert sims[0] == pytest.approx(float(e["a"] @ e["b"]), abs=1e-6)
    assert sims[3] == pytest.approx(float(e["c"] @ e["a"]), abs=1e-6)
    assert np.all(np.abs(sims) <= 1.0)


def test_semantic_similarity_edge_cases():
    inner = CountingEncoder()
    assert semantic_similarity(inner, []).shape == (0,)
    assert semantic_similarity(inner, [("same", "same")]).tolist() == [1.0]
    assert inner.calls == [], "identical pairs need no embedding"
    with pytest.raises(TypeError):
        semantic_similarity(inner, [("a", None)])  # type: ignore[list-item]
    with pytest.raises(TypeError):
        CachedEncoder(inner).encode("not a list")


def test_similarity_through_cache_encodes_each_text_once():
    inner = CountingEncoder()
    enc = CachedEncoder(inner, max_entries=100)
    pairs = [("p1", "c1"), ("p2", "c2")]
    s1 = semantic_similarity(enc, pairs)
    s2 = semantic_similarity(enc, [*pairs, ("p1", "c2")])
    assert len(inner.calls) == 1 and inner.texts_encoded == 4
    np.testing.assert_allclose(s2[:2], s1, atol=1e-7)


def test_missing_onnx_export_names_the_command(tmp_path):
    with pytest.raises(SemanticBackendUnavailable, match=r"scripts/export_onnx\.py"):
        OnnxEncoder(tmp_path / "nothing-here")


def test_unknown_backend():
    with pytest.raises(ValueError, match="onnx"):
        make_encoder("tensorflow")


def test_default_onnx_dir_follows_env(monkeypatch, tmp_path):
    monkeypatch.setenv("SHADOWLENS_CACHE", str(tmp_path))
    assert default_onnx_dir() == tmp_path / "minilm-onnx-int8"


def test_module_imports_without_heavy_dependencies():
    code = (
        "import sys, comparators.semantic as s; "
        "heavy = [m for m in ('torch', 'onnxruntime', 'sentence_transformers', 'tokenizers') "
        "if m in sys.modules]; "
        "assert not heavy, heavy"
    )
    subprocess.run([sys.executable, "-c", code], cwd=ROOT, check=True)


# --------------------------------------------------------------------------------------------
# real model, real data
# --------------------------------------------------------------------------------------------


def _alpaca_dir() -> Path:
    env = os.environ.get("SHADOWLENS_DATA")
    base = Path(env) if env else ROOT.parent / "shared" / "data"
    return base / "alpaca_eval"


def _outputs(name: str) -> list[dict]:
    path = _alpaca_dir() / f"{name}.json"
    assert path.is_file(), f"AlpacaEval data not found at {path} (set SHADOWLENS_DATA)"
    return json.loads(path.read_text())


# 100 instructions spread over the 805; primary = gpt4_0613, candidate = its "concise" variant
# (same model, same instruction: a paraphrase with less detail).
IDX = list(range(0, 800, 8))
SHIFT = 4  # an unrelated pair: primary of instruction i, candidate of instruction i + SHIFT


@pytest.fixture(scope="module")
def alpaca_pairs() -> dict[str, list[tuple[str, str]]]:
    a, b = _outputs("gpt4_0613"), _outputs("gpt4_0613_concise")
    assert all(x["instruction"] == y["instruction"] for x, y in zip(a, b, strict=True))
    same = [(a[i]["output"], b[i]["output"]) for i in IDX]
    other = [(a[i]["output"], b[(i + SHIFT) % len(b)]["output"]) for i in IDX]
    return {"same": same, "other": other}


@pytest.fixture(scope="module")
def torch_encoder():
    return make_encoder("torch")


def _ensure_onnx_export() -> Path:
    out = default_onnx_dir()
    if not (out / "export.json").is_file():
        spec = importlib.util.spec_from_file_location(
            "shadowlens_export_onnx", ROOT / "scripts" / "export_onnx.py"
        )
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        assert module.main(["--out", str(out)]) == 0
    return out


@pytest.fixture(scope="module")
def onnx_encoder():
    return make_encoder("onnx", model_dir=_ensure_onnx_export())


@pytest.fixture(scope="module")
def similarities(alpaca_pairs, torch_encoder, onnx_encoder) -> dict[str, dict[str, np.ndarray]]:
    out: dict[str, dict[str, np.ndarray]] = {}
    for name, enc in (("torch", torch_encoder), ("onnx", onnx_encoder)):
        out[name] = {k: semantic_similarity(enc, v) for k, v in alpaca_pairs.items()}
    return out


@pytest.mark.semantic
@pytest.mark.parametrize("backend", ["torch", "onnx"])
def test_embeddings_are_unit_float32_rows(backend, request, alpaca_pairs):
    enc = request.getfixturevalue(f"{backend}_encoder")
    texts = [alpaca_pairs["same"][0][0], "", "ok", "x " * 1000]
    emb = enc.encode(texts)
    assert emb.dtype == np.float32 and emb.shape == (4, EMBEDDING_DIM)
    np.testing.assert_allclose(np.linalg.norm(emb, axis=1), 1.0, atol=1e-5)
    assert enc.encode([]).shape == (0, EMBEDDING_DIM)


@pytest.mark.semantic
@pytest.mark.parametrize("backend", ["torch", "onnx"])
def test_identical_text_scores_one(backend, request, alpaca_pairs):
    enc = request.getfixturevalue(f"{backend}_encoder")
    text = alpaca_pairs["same"][3][0]
    assert semantic_similarity(enc, [(text, text)])[0] == 1.0
    # Same words, different whitespace: a different string, so it goes through the model.
    spaced = "  " + text.replace(" ", "  ") + "\n"
    assert semantic_similarity(enc, [(text, spaced)])[0] > 0.999
    # The same text encoded alone and inside a batch of other texts. int8 dynamic
    # quantization picks activation scales per batch, hence the looser bound for onnx.
    alone = enc.encode([text])[0]
    batched = enc.encode([alpaca_pairs["other"][5][1], text, alpaca_pairs["same"][9][0]])[1]
    assert float(alone @ batched) > (0.9999 if backend == "torch" else 0.995)


@pytest.mark.semantic
def test_onnx_int8_matches_torch(similarities):
    for kind in ("same", "other"):
        diff = np.abs(similarities["onnx"][kind] - similarities["torch"][kind])
        assert diff.max() <= 0.03, f"{kind}: max |cos_onnx - cos_torch| = {diff.max():.4f}"
        assert diff.mean() <= 0.01, f"{kind}: mean |cos_onnx - cos_torch| = {diff.mean():.4f}"


@pytest.mark.semantic
@pytest.mark.parametrize("backend", ["torch", "onnx"])
def test_paraphrases_score_higher_than_unrelated_answers(backend, similarities):
    same, other = similarities[backend]["same"], similarities[backend]["other"]
    assert np.median(same) > np.median(other) + 0.3
    # Rank test over all (paraphrase, unrelated) combinations: nearly always ordered right.
    auc = float((same[:, None] > other[None, :]).mean())
    assert auc > 0.95, f"AUC {auc:.3f}"


@pytest.mark.semantic
def test_cached_real_encoder_skips_repeated_outputs(onnx_encoder, alpaca_pairs):
    calls: list[int] = []

    class Spy:
        def encode(self, texts):
            calls.append(len(texts))
            return onnx_encoder.encode(texts)

    enc = CachedEncoder(Spy(), max_entries=1000)
    pairs = alpaca_pairs["same"][:20]
    distinct = {t for a, b in pairs if a != b for t in (a, b)}
    first = semantic_similarity(enc, pairs)
    second = semantic_similarity(enc, pairs)
    assert calls == [len(distinct)]
    np.testing.assert_array_equal(first, second)


# --------------------------------------------------------------------------------------------
# the job: replay --semantic and the worker's SHADOWLENS_SEMANTIC, with a tight budget
# --------------------------------------------------------------------------------------------

SEMANTIC_REQUESTS = 60  # of the shipped sample: ~12 s of event time
TIGHT_BUDGET = "[semantic]\nmax_pairs_per_s = 0.5\nburst_pairs = 8\nmin_sample_fraction = 0.05\n"


def _tight_policy(tmp_path: Path) -> Path:
    path = tmp_path / "policy.toml"
    path.write_text(TIGHT_BUDGET)
    return path


def _check_sampled(scores) -> tuple[int, int]:
    """Measured pairs carry one cosine and 1/p >= 1; the others weight 0 and no cosine."""
    measured = [s for s in scores if s.semantic_similarity is not None]
    unsampled = [s for s in scores if s.weight == 0]
    assert len(measured) + len(unsampled) == SEMANTIC_REQUESTS
    assert all(-1.0 <= s.semantic_similarity <= 1.0 and s.weight >= 1.0 for s in measured)
    assert all(s.semantic_similarity is None for s in unsampled)
    return len(measured), len(unsampled)


@pytest.mark.semantic
def test_replay_with_semantic_onnx_samples_over_budget(onnx_encoder, tmp_path):
    from shadowlens.cli.app import app
    from typer.testing import CliRunner

    args = ["replay", "--semantic", "onnx", "--requests", str(SEMANTIC_REQUESTS)]
    args += ["--replica-share", "0"]  # candidate pairs only: the counts below are theirs
    args += ["--no-store", "--no-progress", "--policy", str(_tight_policy(tmp_path))]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    counts = dict(re.findall(r"(semantic\.\w+)=(\d+)", result.output))
    measured, unsampled = int(counts["semantic.measured"]), int(counts["semantic.unsampled"])
    assert measured + unsampled == SEMANTIC_REQUESTS and 8 <= measured < SEMANTIC_REQUESTS
    assert f"semantic: {measured} of {SEMANTIC_REQUESTS} text pairs measured" in result.output


@pytest.mark.semantic
def test_replay_semantic_scores_weights_and_windows(onnx_encoder):
    from shadowlens.judge.policy import parse_policy
    from shadowlens.pipeline.windows import ClosedWindow
    from shadowlens.replay.faults import Faults
    from shadowlens.replay.run import TrafficSpec, built_payloads, run_replay
    from shadowlens.streams.semantic_stage import make_cascade

    policy = parse_policy(tomllib.loads(TIGHT_BUDGET))
    payloads = built_payloads(TrafficSpec(requests=SEMANTIC_REQUESTS), Faults())
    cascade = make_cascade("onnx", policy)
    result = run_replay(payloads, policy, None, enrich=cascade)
    measured, unsampled = _check_sampled(result.memory.scores)
    assert unsampled > 0, "the tight budget must sample"
    windows: list[ClosedWindow] = result.memory.closed
    assert sum(w.aggregate.quality_measured for w in windows) == measured
    assert sum(w.aggregate.quality_unsampled for w in windows) == unsampled
    weights = sum(s.weight for s in result.memory.scores)
    assert weights > measured, "over budget, a measured pair stands for 1/p pairs"
    assert sum(w.aggregate.quality.n for w in windows) == pytest.approx(weights)
    with pytest.raises(ValueError, match="unknown semantic backend"):
        make_cascade("tf", policy)
    assert make_cascade("off", policy) is None


@pytest.mark.kafka
@pytest.mark.semantic
def test_worker_scores_semantic_similarity_off_the_event_loop(
    onnx_encoder, kafka_bootstrap, topic_factory, tmp_path
):
    from shadowlens.replay.faults import Faults
    from shadowlens.replay.run import TrafficSpec, built_payloads
    from shadowlens.streams.wire import PAIRS, SEMANTIC, decode_pairs, record_type

    from tests.stream_harness import (
        WorkerProcess,
        make_topics,
        publish_payloads,
        read_topic,
        wait_for,
        worker_env,
    )

    topics = make_topics(topic_factory, events_partitions=2)
    payloads = [raw for raw, _ in built_payloads(TrafficSpec(requests=SEMANTIC_REQUESTS), Faults())]
    publish_payloads(kafka_bootstrap, topics.events, payloads, end_marker=True)
    env = worker_env(
        kafka_bootstrap,
        topics,
        f"chdb://{tmp_path / 'ch'}",
        policy=_tight_policy(tmp_path),
        SHADOWLENS_SEMANTIC="onnx",
    )
    worker = WorkerProcess(env, tmp_path / "worker.log")

    def pairs_produced() -> list:
        """Each pair's last row: as it went out, or with the score that followed it."""
        latest = {
            s.request_id: s
            for r in read_topic(kafka_bootstrap, topics.pairs)
            if record_type(r.headers) in (PAIRS, SEMANTIC)
            for s in decode_pairs(r.value)
        }
        return list(latest.values()) if len(latest) >= SEMANTIC_REQUESTS else []

    def counted() -> dict:
        stats = worker.stats()
        seen = stats.get("semantic.measured", 0) + stats.get("semantic.unsampled", 0)
        return stats if seen >= SEMANTIC_REQUESTS else {}

    try:
        stats = wait_for(counted, timeout=120, what="every pair scored", workers=[worker])
        scores = wait_for(pairs_produced, timeout=10, what="every pair", workers=[worker])
    finally:
        code = worker.stop()
    assert code == 0, worker.tail()
    measured, unsampled = _check_sampled(scores)
    assert (measured, unsampled) == (stats["semantic.measured"], stats["semantic.unsampled"])
    assert unsampled > 0
