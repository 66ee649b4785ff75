"""The reports of a judged replay: win rates per segment with bounds, and the lost
comparisons with both answers side by side (the store's rows, in the HTML report; the
replay's scores, in the console summary)."""

from __future__ import annotations

import io
from pathlib import Path

import pytest
from rich.console import Console
from shadowlens.comparators.preference import RecordedJudge
from shadowlens.judge.policy import load_policy
from shadowlens.replay.faults import Faults
from shadowlens.replay.run import ReplayResult, TrafficSpec, built_payloads, run_replay
from shadowlens.report.html import render
from shadowlens.report.model import load
from shadowlens.report.preference import ALL
from shadowlens.report.summary import print_summary
from shadowlens.store.client import Store
from shadowlens.streams.preference_stage import PreferenceStep, load_recorded

from tests.builders import SHARED_DATA

JUDGED = SHARED_DATA / "alpaca_eval_judge"
pytestmark = pytest.mark.skipif(not JUDGED.is_dir(), reason="../shared/data is not present")
POLICY = load_policy()
EXPERIMENT = "to-claude-2"


@pytest.fixture(scope="module")
def judged(tmp_path_factory: pytest.TempPathFactory) -> tuple[ReplayResult, Path]:
    root = tmp_path_factory.mktemp("preference-report")
    spec = TrafficSpec(SHARED_DATA, EXPERIMENT, "gpt4_1106_preview", "claude-2", requests=900)
    step = PreferenceStep(RecordedJudge(load_recorded(JUDGED)), POLICY.preference.budget)
    with Store.open(f"chdb://{root}/ch") as store:
        store.migrate()
        result = run_replay(built_payloads(spec, Faults()), POLICY, store, enrich=step)
        page = render(load(store, EXPERIMENT, POLICY))
    (root / "report.html").write_text(page)
    return result, root / "report.html"


def test_the_html_report_shows_win_rates_and_lost_comparisons(judged) -> None:
    result, path = judged
    page = path.read_text()
    section = page[page.index('<section id="preference">') :]
    section = section[: section.index("</section>")]
    assert "anytime-valid bounds" in section and "length-adjusted" in section
    segments = {s.segment for s in result.memory.scores}
    assert all(segment in section for segment in segments) and "all segments" in section
    lost = [s for s in result.memory.scores if s.preference is not None and s.preference < 0.5]
    shown = [s for s in lost if s.request_id in section]
    assert shown, "the worst-lost comparisons are listed"
    first = shown[0]
    assert first.primary_body[:80].split("\n")[0].replace("'", "&#x27;") in section
    assert "claude-2" in section and "gpt4_1106_preview" in section  # both answers, by model


def test_the_console_summary_gives_the_same_win_rates(judged) -> None:
    result, _ = judged
    out = io.StringIO()
    print_summary(
        Console(file=out, width=200), result.memory.scores, result.memory.made, result.counts
    )
    text = out.getvalue()
    assert "Preference judge: candidate vs primary, per segment" in text
    assert ALL in text and "%" in text
