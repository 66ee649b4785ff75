"""The models a replay knows: who serves each and how fast, and the default migration.

Every model of the AlpacaEval data (../shared/data/alpaca_eval) has a profile, so any pair
of them replays. Real latency measurements exist only for Llama-2 on eight hosted
providers (llmperf, see `shadowlens.replay.latency`), so each model gets the parameter set
of the measured deployment closest to how it is served, by provider, else by family and
size, else the documented cloud default:

- gpt4_0613 -> openai, GPT4_API: the primary, public gpt-4-0613 API figures.
- gpt4_0613_concise, gpt4_0613_verbose -> openai, GPT4_API: the same model and
  deployment with another system prompt.
- gpt4_1106_preview, gpt-3.5-turbo-0613, gpt-3.5-turbo-1106, gpt-4o-2024-05-13,
  gpt-4o-mini-2024-07-18 -> openai, GPT4_API, the documented default: llmperf measured no
  OpenAI deployment, so a migration among OpenAI models replays latency-neutral and is
  judged on quality, errors and cost (`--latency-factor` injects a latency change).
- claude-2, claude-2.1 -> aws-bedrock, BEDROCK_70B: AWS Bedrock serves Claude 2 and 2.1
  and is the one provider of them llmperf measured (Llama-2-70B there: 388 ms TTFT,
  43.9 ms/token); Claude's size is not public, so the provider, not the size, decides.
- Meta-Llama-3-70B-Instruct -> onprem-vllm, SELF_HOSTED_70B: the candidate, llmperf
  perplexity_70b.
- Qwen1.5-72B-Chat -> onprem-vllm, SELF_HOSTED_70B: a dense model of the same size on the
  same deployment.
- Mixtral-8x7B-Instruct-v0.1 -> onprem-vllm, SELF_HOSTED_70B: 47B weights, 13B active per
  token, but under batching every expert is read each step. llmperf measured no MoE, and
  on fireworks (whose size ratios set the 8B) 13B decodes only 3 % faster than 70B, so a
  13B class would equal the 70B within noise.
- Meta-Llama-3-8B-Instruct -> onprem-vllm, SELF_HOSTED_8B: the 70B scaled by fireworks
  7B/70B.
- FuseChat-Llama-3.2-3B-Instruct, FuseChat-Llama-3.2-1B-Instruct -> onprem-vllm,
  SELF_HOSTED_8B: llmperf measured nothing under 7B; the smallest measured class is an
  upper bound.

A name outside `MODELS` is refused with the list of known ones, not replayed with
made-up latency.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from shadowlens.replay.latency import (
    BEDROCK_70B,
    GPT4_API,
    SELF_HOSTED_8B,
    SELF_HOSTED_70B,
    LatencyModel,
)

PRIMARY_MODEL = "gpt4_0613"
CANDIDATE_MODEL = "Meta-Llama-3-70B-Instruct"
WEAKER_MODEL = "Meta-Llama-3-8B-Instruct"  # a smaller candidate on the same hardware
REPLICA_OUTPUT_MODEL = "gpt4_0613_concise"  # stands in for a second sample of the primary
SAMPLE_MODELS = (PRIMARY_MODEL, CANDIDATE_MODEL, WEAKER_MODEL, REPLICA_OUTPUT_MODEL)
DEFAULT_EXPERIMENT = "gpt4-to-llama3-70b"


@dataclass(frozen=True, slots=True)
class ModelProfile:
    """How a model is served in a replay: the events' `provider` and the latency drawn."""

    provider: str
    latency: LatencyModel


_OPENAI = ModelProfile("openai", GPT4_API)
_BEDROCK = ModelProfile("aws-bedrock", BEDROCK_70B)
_SELF_HOSTED_70B = ModelProfile("onprem-vllm", SELF_HOSTED_70B)
_SELF_HOSTED_8B = ModelProfile("onprem-vllm", SELF_HOSTED_8B)

MODELS: dict[str, ModelProfile] = {
    PRIMARY_MODEL: _OPENAI,
    REPLICA_OUTPUT_MODEL: _OPENAI,  # the same deployment as the primary
    "gpt4_0613_verbose": _OPENAI,
    "gpt4_1106_preview": _OPENAI,
    "gpt-3.5-turbo-0613": _OPENAI,
    "gpt-3.5-turbo-1106": _OPENAI,
    "gpt-4o-2024-05-13": _OPENAI,
    "gpt-4o-mini-2024-07-18": _OPENAI,
    "claude-2": _BEDROCK,
    "claude-2.1": _BEDROCK,
    CANDIDATE_MODEL: _SELF_HOSTED_70B,
    "Qwen1.5-72B-Chat": _SELF_HOSTED_70B,
    "Mixtral-8x7B-Instruct-v0.1": _SELF_HOSTED_70B,
    WEAKER_MODEL: _SELF_HOSTED_8B,
    "FuseChat-Llama-3.2-3B-Instruct": _SELF_HOSTED_8B,
    "FuseChat-Llama-3.2-1B-Instruct": _SELF_HOSTED_8B,
}


class UnknownModelError(ValueError):
    """A model without a profile; the message lists the known ones, as a typo is likeliest."""

    def __init__(self, model: str, known: Iterable[str]) -> None:
        names = ", ".join(sorted(known, key=str.lower))
        super().__init__(f"unknown model {model!r}; known models: {names}")
        self.model = model


def profile(model: str, models: Mapping[str, ModelProfile] = MODELS) -> ModelProfile:
    """The profile of `model`, or UnknownModelError naming every model in `models`."""
    try:
        return models[model]
    except KeyError:
        raise UnknownModelError(model, models) from None
