"""The real data a replay is built from: AlpacaEval outputs and the Azure LLM trace.

Real instructions with real outputs of several models on them (AlpacaEval) give the
comparators and the judge honest text; real arrival times and token counts (Azure LLM
inference trace) give honest load and latency. The project ships a small attributed
sample (replay/data, made by scripts/make_sample.py); `load_full` reads the whole data
sets from ../shared/data (`--data-dir`) for benchmarks and long demos.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from importlib import resources
from importlib.resources.abc import Traversable
from pathlib import Path
from typing import Any

import orjson
from shadowlens.replay.models import SAMPLE_MODELS

# The first arrival of the Azure conversation trace, 2023-11-16 18:15:46.680 (read as UTC).
DEFAULT_START_MS = 1_700_158_546_680

ALPACA_SAMPLE = "alpaca_sample.json"
TRACE_SAMPLE = "azure_conv_sample.csv"
TRACE_FILES = {"conv": "AzureLLMInferenceTrace_conv.csv", "code": "AzureLLMInferenceTrace_code.csv"}


@dataclass(frozen=True, slots=True)
class Instruction:
    """One AlpacaEval instruction with the real outputs of several models."""

    index: int  # position in AlpacaEval: the same across models
    instruction: str
    segment: str  # AlpacaEval subset (`dataset`): helpful_base, koala, oasst, ...
    outputs: Mapping[str, str]  # model -> output text

    @property
    def prompt_id(self) -> str:
        return f"alpaca_eval/{self.index}"


@dataclass(frozen=True, slots=True)
class Arrival:
    """One request of the Azure trace: when it came and how many tokens it had."""

    offset_ms: int  # since the first row of the trace
    input_tokens: int  # ContextTokens
    output_tokens: int  # GeneratedTokens


@dataclass(frozen=True, slots=True)
class Sample:
    instructions: tuple[Instruction, ...]
    arrivals: tuple[Arrival, ...]
    trace_start_ms: int  # epoch ms of the trace's first row (timestamps read as UTC)


def parse_alpaca_records(records: Sequence[Mapping[str, Any]]) -> tuple[Instruction, ...]:
    """Records of alpaca_sample.json (index, dataset, instruction, outputs)."""
    return tuple(
        Instruction(
            index=int(r["index"]),
            instruction=str(r["instruction"]),
            segment=str(r["dataset"]),
            outputs=dict(r["outputs"]),
        )
        for r in records
    )


def _epoch_us(timestamp: str) -> int:
    """'2023-11-16 18:15:46.6805900' -> epoch microseconds (7 fractional digits, read as UTC)."""
    whole, _, frac = timestamp.strip().partition(".")
    base = datetime.fromisoformat(whole).replace(tzinfo=UTC)
    return int(base.timestamp()) * 1_000_000 + int((frac + "000000")[:6])


def parse_trace(text: str) -> tuple[tuple[Arrival, ...], int]:
    """Azure trace CSV (TIMESTAMP,ContextTokens,GeneratedTokens) -> arrivals, start epoch ms."""
    rows = []
    for line in text.splitlines()[1:]:
        if not line.strip():
            continue
        ts, ctx, gen = line.split(",")
        rows.append((_epoch_us(ts), int(ctx), int(gen)))
    if not rows:
        raise ValueError("trace has no rows")
    rows.sort(key=lambda r: r[0])
    t0 = rows[0][0]
    arrivals = tuple(Arrival(round((t - t0) / 1000), ctx, gen) for t, ctx, gen in rows)
    return arrivals, t0 // 1000


def _read_sample_dir(root: Path | Traversable) -> Sample:
    instructions = parse_alpaca_records(orjson.loads(root.joinpath(ALPACA_SAMPLE).read_bytes()))
    arrivals, t0 = parse_trace(root.joinpath(TRACE_SAMPLE).read_text())
    return Sample(instructions, arrivals, t0)


def load_sample(path: str | Path | None = None) -> Sample:
    """The shipped sample (replay/data), or one written by scripts/make_sample.py to `path`."""
    if path is None:
        return _read_sample_dir(resources.files("shadowlens.replay").joinpath("data"))
    return _read_sample_dir(Path(path))


def load_full(
    data_dir: str | Path, *, models: Sequence[str] = SAMPLE_MODELS, trace: str = "conv"
) -> Sample:
    """All 805 instructions and the whole trace from ../shared/data (benchmarks, long demos)."""
    root = Path(data_dir)
    per_model = {m: orjson.loads((root / "alpaca_eval" / f"{m}.json").read_bytes()) for m in models}
    base = per_model[models[0]]
    instructions = tuple(
        Instruction(
            index=i,
            instruction=row["instruction"],
            segment=row["dataset"],
            outputs={m: per_model[m][i]["output"] for m in models},
        )
        for i, row in enumerate(base)
    )
    arrivals, t0 = parse_trace((root / "azure_llm_trace" / TRACE_FILES[trace]).read_text())
    return Sample(instructions, arrivals, t0)
