"""Every AlpacaEval model replays, on either arm, and a wrong name says which ones exist."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import orjson
import pytest
from shadowlens.cli.app import app
from shadowlens.cli.exit_codes import ExitCode
from shadowlens.replay.datasets import load_sample
from shadowlens.replay.models import MODELS, SAMPLE_MODELS, UnknownModelError
from shadowlens.replay.traffic import build_events
from shadowlens.schemas.events import Arm
from typer.testing import CliRunner

from tests.builders import SHARED_DATA

needs_shared_data = pytest.mark.skipif(
    not (SHARED_DATA / "alpaca_eval").is_dir(), reason="../shared/data is not present"
)
DATA_MODELS = sorted(p.stem for p in (SHARED_DATA / "alpaca_eval").glob("*.json"))
# Each model once as primary and once as candidate: against its neighbour in name order.
PAIRS = [(m, DATA_MODELS[(i + 1) % len(DATA_MODELS)]) for i, m in enumerate(DATA_MODELS)]


def replay(*args: str):
    return CliRunner().invoke(app, ["replay", "--no-store", "--no-progress", *args])


@needs_shared_data
def test_the_profiles_are_exactly_the_models_of_the_data() -> None:
    assert len(DATA_MODELS) == 16
    assert set(MODELS) == set(DATA_MODELS)  # a misspelt profile would leave a model out


@needs_shared_data
@pytest.mark.parametrize(("primary", "candidate"), PAIRS, ids=[p for p, _ in PAIRS])
def test_every_model_replays_as_primary_and_candidate(
    primary: str, candidate: str, tmp_path: Path
) -> None:
    export = tmp_path / "out.jsonl"
    out = replay(
        "--data-dir", str(SHARED_DATA), "--requests", "40", "--replica-share", "0.2",
        "--primary", primary, "--candidate", candidate, "--export", str(export),
    )  # fmt: skip
    assert out.exit_code == 0, out.output
    events = [orjson.loads(line) for line in export.read_bytes().splitlines()]
    arms = Counter(e["arm"] for e in events)
    assert arms["primary"] == arms["candidate"] == 40 and arms["replica"] > 0
    models = {Arm.PRIMARY: primary, Arm.CANDIDATE: candidate, Arm.REPLICA: primary}
    for e in events:
        model = models[Arm(e["arm"])]
        assert (e["model"], e["provider"]) == (model, MODELS[model].provider)
        assert 0 < e["ttft_ms"] < e["latency_ms"]


@pytest.mark.parametrize("flag", ["--primary", "--candidate"])
@pytest.mark.parametrize("data_dir", [False, True], ids=["sample", "data-dir"])
def test_an_unknown_model_is_a_usage_error_that_lists_the_known_ones(
    flag: str, data_dir: bool
) -> None:
    """Not a missing file or a KeyError: the name is checked before any data is read."""
    args = ["--data-dir", str(SHARED_DATA)] if data_dir and SHARED_DATA.is_dir() else []
    out = replay(*args, flag, "gpt-5-turbo")
    assert out.exit_code == ExitCode.USAGE, out.output
    assert "unknown model 'gpt-5-turbo'; known models:" in out.output
    assert all(model in out.output for model in MODELS)


def test_a_model_the_shipped_sample_lacks_points_to_the_full_data() -> None:
    out = replay("--primary", "gpt-4o-2024-05-13")
    assert out.exit_code == ExitCode.USAGE, out.output
    assert "no outputs of 'gpt-4o-2024-05-13'" in out.output and "--data-dir" in out.output
    assert all(model in out.output for model in SAMPLE_MODELS)


def test_build_events_refuses_a_model_without_a_profile() -> None:
    s = load_sample()
    with pytest.raises(UnknownModelError, match=r"known models: .*gpt4_0613"):
        build_events(s.instructions, s.arrivals, requests=10, candidate="Llama-4")


@needs_shared_data
def test_the_readme_cost_migration_example_runs() -> None:
    """README, "other migrations": gpt-4o -> gpt-4o-mini on the full data, a replica arm."""
    out = replay(
        "--data-dir", str(SHARED_DATA), "--requests", "20000",
        "--primary", "gpt-4o-2024-05-13", "--candidate", "gpt-4o-mini-2024-07-18",
        "--replica-share", "0.2",
    )  # fmt: skip
    assert out.exit_code == 0, out.output
    assert "Primary vs candidate, per segment" in out.output
    assert "Primary vs replica, per segment" in out.output
    assert "44006 events" in out.output  # 20,000 requests, both arms, 4,006 replicas
