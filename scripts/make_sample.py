"""Write the small, attributed sample of real data that ships in replay/data/.

The demo and the fast tests replay real model outputs and a real arrival trace without
needing ../shared/data; this script is how that sample was made, so it can be remade
(or enlarged) from the full files. Usage:

    .venv/bin/python scripts/make_sample.py [--data-dir ../shared/data]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
from collections import defaultdict
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
OUT_DIR = REPO / "replay" / "data"

PRIMARY = "gpt4_0613"
MODELS = (
    PRIMARY,
    "Meta-Llama-3-70B-Instruct",  # candidate: cloud API -> self-hosted open weights
    "Meta-Llama-3-8B-Instruct",  # weaker model: source of injected quality degradation
    "gpt4_0613_concise",  # sibling of the primary: stands in for its own nondeterminism
)
TRACE = "AzureLLMInferenceTrace_conv.csv"
MAX_TOTAL_BYTES = 2_000_000

SOURCES = {
    "alpaca_eval": ("tatsu-lab/alpaca_eval", "cd543a1", "Apache-2.0"),
    "azure_llm_trace": ("Azure/AzurePublicDataset", "b469a11", "CC-BY-4.0"),
    "llmperf": ("ray-project/llmperf-leaderboard", "27aa9b6", "Apache-2.0"),
}


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def sample_alpaca(data_dir: Path, per_segment: int) -> list[dict[str, object]]:
    """The first `per_segment` instructions of each AlpacaEval subset, in the original order.

    Stratified rather than "the first N": the file is sorted by subset, so its first 300
    rows hold only 3 of the 5 subsets (and just 15 oasst rows); segments need all five.
    """
    outputs = {m: json.loads((data_dir / "alpaca_eval" / f"{m}.json").read_text()) for m in MODELS}
    base = outputs[PRIMARY]
    for model, rows in outputs.items():
        if len(rows) != len(base) or any(
            a["instruction"] != b["instruction"] for a, b in zip(rows, base, strict=True)
        ):
            raise SystemExit(f"{model}: instructions do not line up with {PRIMARY}")
    taken: dict[str, int] = defaultdict(int)
    records: list[dict[str, object]] = []
    for index, row in enumerate(base):
        if taken[row["dataset"]] >= per_segment:
            continue
        taken[row["dataset"]] += 1
        records.append(
            {
                "index": index,
                "dataset": row["dataset"],
                "instruction": row["instruction"],
                "outputs": {m: outputs[m][index]["output"] for m in MODELS},
            }
        )
    return records


def dump_records(records: list[dict[str, object]]) -> bytes:
    """One record per line: small diffs when the sample is remade."""
    lines = [json.dumps(r, ensure_ascii=False, separators=(",", ":")) for r in records]
    return ("[\n" + ",\n".join(lines) + "\n]\n").encode()


def sample_trace(data_dir: Path, rows: int) -> bytes:
    """The header and first `rows` rows of the conversation trace, byte for byte (CRLF kept)."""
    with (data_dir / "azure_llm_trace" / TRACE).open("rb") as fh:
        return b"".join(line for _, line in zip(range(rows + 1), fh, strict=False))


def notice(
    data_dir: Path, records: list[dict[str, object]], per_segment: int, trace_rows: int
) -> bytes:
    segments: dict[str, int] = defaultdict(int)
    for r in records:
        segments[str(r["dataset"])] += 1
    seg_text = ", ".join(f"{k} {v}" for k, v in sorted(segments.items()))
    alpaca_files = "\n".join(
        f"  - `results/{m}/model_outputs.json` (sha256 of the copy read: "
        f"`{_sha256(data_dir / 'alpaca_eval' / f'{m}.json')[:16]}…`)"
        for m in MODELS
    )
    trace_sha = _sha256(data_dir / "azure_llm_trace" / TRACE)[:16]
    repo_a, commit_a, lic_a = SOURCES["alpaca_eval"]
    repo_z, commit_z, lic_z = SOURCES["azure_llm_trace"]
    repo_p, commit_p, lic_p = SOURCES["llmperf"]
    text = f"""# Third-party data in replay/data

Small samples of public data sets, shipped so the demo and the fast tests replay real
model outputs and real traffic. Made by `scripts/make_sample.py` from the full copies
(see `../shared/data/README.md`); remake or enlarge them with that script.

## alpaca_sample.json — AlpacaEval model outputs

- Source: https://github.com/{repo_a}, commit {commit_a}, files
{alpaca_files}
- Licence: {lic_a} (https://www.apache.org/licenses/LICENSE-2.0). Copyright the
  AlpacaEval authors (Yann Dubois, Xuechen Li, Rohan Taori, Tianyi Zhang et al.,
  Stanford Tatsu Lab). The texts are outputs of the models named below, as published
  by AlpacaEval.
- Sampled: the first {per_segment} instructions of each AlpacaEval subset, in the
  original order ({len(records)} of 805; {seg_text}), with `index` = position in the
  original files, `dataset` (the subset, used as the segment), `instruction`, and the
  unchanged outputs of {", ".join(f"`{m}`" for m in MODELS)}.

## azure_conv_sample.csv — Azure LLM inference trace (conversation)

- Source: https://github.com/{repo_z}, commit {commit_z},
  `data/{TRACE}` (sha256 of the copy read: `{trace_sha}…`)
- Licence: {lic_z} (https://creativecommons.org/licenses/by/4.0/). © Microsoft
  Corporation. Cite: Patel et al., "Splitwise: Efficient generative LLM inference using
  phase splitting", ISCA 2024.
- Sampled: the header and the first {trace_rows} of 19,366 rows (TIMESTAMP,
  ContextTokens, GeneratedTokens), otherwise unchanged. Change made: truncation only.

## Calibration figures (not shipped)

`replay/latency.py` quotes median TTFT and decode time per token computed from
https://github.com/{repo_p}, commit {commit_p}, `raw_data/individual/` ({lic_p}).
No file of that data set is shipped here.
"""
    return text.encode()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", type=Path, default=REPO.parent / "shared" / "data")
    parser.add_argument("--out-dir", type=Path, default=OUT_DIR)
    parser.add_argument("--per-segment", type=int, default=56, help="instructions per subset")
    parser.add_argument("--trace-rows", type=int, default=3000)
    args = parser.parse_args(argv)

    records = sample_alpaca(args.data_dir, args.per_segment)
    files = {
        "alpaca_sample.json": dump_records(records),
        "azure_conv_sample.csv": sample_trace(args.data_dir, args.trace_rows),
        "NOTICE.md": notice(args.data_dir, records, args.per_segment, args.trace_rows),
    }
    total = sum(len(b) for b in files.values())
    if total >= MAX_TOTAL_BYTES:
        print(
            f"sample is {total} bytes, over {MAX_TOTAL_BYTES}: lower --per-segment", file=sys.stderr
        )
        return 1
    args.out_dir.mkdir(parents=True, exist_ok=True)
    for name, blob in files.items():
        (args.out_dir / name).write_bytes(blob)
        print(f"{name}: {len(blob)} bytes")
    print(f"total {total} bytes; {len(records)} instructions, {args.trace_rows} trace rows")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
