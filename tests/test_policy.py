"""The policy file: defaults, strict parsing, and the shipped default file."""

from __future__ import annotations

import tomllib
from importlib import resources

import pytest
from shadowlens.judge.policy import Policy, PolicyError, load_policy, parse_policy


def test_defaults_are_the_seed_thresholds() -> None:
    p = Policy()
    assert p.latency.max_relative_increase == 0.20 and p.latency.quantile == 0.99
    assert (p.errors.max_absolute, p.errors.max_increase) == (0.05, 0.02)
    assert p.quality.max_relative_drop == 0.10 and p.cost.max_relative_increase == 0.10
    assert p.ramp.stages_percent == (0, 1, 5, 10, 25, 50, 75, 100)


def test_shipped_default_file_equals_the_defaults_plus_prices() -> None:
    text = resources.files("shadowlens.judge").joinpath("default_policy.toml").read_text()
    p = parse_policy(tomllib.loads(text))
    assert p.prices["gpt4_0613"].output_per_mtok_usd == 60.0
    assert Policy(prices=p.prices) == p


def test_overrides_and_nested_prices(tmp_path) -> None:
    f = tmp_path / "p.toml"
    f.write_text(
        "[latency]\nmax_relative_increase = 0.5\n[prices.m]\ninput_per_mtok_usd = 1\n"
        "output_per_mtok_usd = 2\n[ramp]\nstages_percent = [0, 50, 100]\n"
    )
    p = load_policy(f)
    assert p.latency.max_relative_increase == 0.5 and p.latency.quantile == 0.99
    assert p.prices["m"].output_per_mtok_usd == 2
    assert p.ramp.stages_percent == (0.0, 50.0, 100.0)


@pytest.mark.parametrize(
    ("doc", "message"),
    [
        ({"latency": {"max_relativ_increase": 0.3}}, "unknown key(s) in [latency]"),
        ({"latncy": {}}, "unknown key(s) in []"),
        ({"ramp": {"stages_percent": [1, 5]}}, "must rise strictly from 0"),
        ({"ramp": {"stages_percent": [0, 10, 5]}}, "must rise strictly from 0"),
        ({"prices": {"m": {"input_per_mtok_usd": 1}}}, "prices.m"),
        ({"errors": 3}, "must be a table"),
    ],
)
def test_bad_policies_are_rejected_with_a_reason(doc: dict, message: str) -> None:
    with pytest.raises(PolicyError, match=None) as exc:
        parse_policy(doc)
    assert message in str(exc.value)
