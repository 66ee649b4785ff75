"""Cost of a call: what the gateway reported, or tokens priced from the configured table."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Price:
    input_per_mtok_usd: float
    output_per_mtok_usd: float


def call_cost_usd(
    reported_usd: float | None,
    model: str,
    input_tokens: int | None,
    output_tokens: int | None,
    prices: Mapping[str, Price],
) -> float | None:
    """The reported cost wins; otherwise price the tokens; None when neither is known."""
    if reported_usd is not None:
        return reported_usd
    price = prices.get(model)
    if price is None or (input_tokens is None and output_tokens is None):
        return None
    return (
        (input_tokens or 0) * price.input_per_mtok_usd
        + (output_tokens or 0) * price.output_per_mtok_usd
    ) / 1e6
