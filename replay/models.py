"""The models a replay knows: who serves each and how fast, and the default migration.

A model's profile is the provider its events name and the latency parameter set
(`shadowlens.replay.latency`) its calls draw from.
"""

from __future__ import annotations

from dataclasses import dataclass

from shadowlens.replay.latency import (
    GPT4_API,
    SELF_HOSTED_8B,
    SELF_HOSTED_70B,
    LatencyModel,
)

PRIMARY_MODEL = "gpt4_0613"
CANDIDATE_MODEL = "Meta-Llama-3-70B-Instruct"
WEAKER_MODEL = "Meta-Llama-3-8B-Instruct"  # injected quality degradation
REPLICA_OUTPUT_MODEL = "gpt4_0613_concise"  # stands in for a second sample of the primary
SAMPLE_MODELS = (PRIMARY_MODEL, CANDIDATE_MODEL, WEAKER_MODEL, REPLICA_OUTPUT_MODEL)
DEFAULT_EXPERIMENT = "gpt4-to-llama3-70b"


@dataclass(frozen=True, slots=True)
class ModelProfile:
    """How a model is served in a replay: the events' `provider` and the latency drawn."""

    provider: str
    latency: LatencyModel


_OPENAI = ModelProfile("openai", GPT4_API)
_SELF_HOSTED_70B = ModelProfile("onprem-vllm", SELF_HOSTED_70B)
_SELF_HOSTED_8B = ModelProfile("onprem-vllm", SELF_HOSTED_8B)

MODELS: dict[str, ModelProfile] = {
    PRIMARY_MODEL: _OPENAI,
    REPLICA_OUTPUT_MODEL: _OPENAI,  # the same deployment as the primary
    CANDIDATE_MODEL: _SELF_HOSTED_70B,
    WEAKER_MODEL: _SELF_HOSTED_8B,
}
