"""`shadowlens report`: the pure rendering pieces, and the whole report from a replayed store.

The end-to-end fixture replays 600 requests of the shipped real sample (latency regression
throughout, 5 % lost candidates, a replica arm on 20 % of requests, malformed input)
into a chdb store, then renders the report through the CLI. The browser test
(``-m browser``) opens it in headless Chromium (Debian package ``chromium``), takes a
screenshot and fails on any console message; it fails, never skips, when Chromium is
missing.
"""

from __future__ import annotations

import re
import shutil
import struct
import subprocess
import zlib
from collections import Counter
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from html.parser import HTMLParser
from pathlib import Path

import pytest
from shadowlens.cli.app import app
from shadowlens.judge.policy import load_policy
from shadowlens.replay.faults import Faults
from shadowlens.replay.run import ReplayResult, TrafficSpec, built_payloads, run_replay
from shadowlens.report import charts
from shadowlens.report.cost import CostProjection, cost_projection
from shadowlens.report.html import render
from shadowlens.report.markup import fmt_usd
from shadowlens.report.model import ReportData, load
from shadowlens.report.rows import DecisionRow, EvidenceRow, Overview, SegmentRow
from shadowlens.report.sections import checks
from shadowlens.report.timeline import stage_level
from shadowlens.report.verdict import go_no_go
from shadowlens.store.client import Store
from shadowlens.store.dsn import redact_dsn
from typer.testing import CliRunner

POLICY = load_policy()
EXPERIMENT = "gpt4-to-llama3-70b"
EVIL = "<img src=x onerror=alert(1)>&\"'"
SECTIONS = ("summary", "matrix", "latency", "quality", "segments", "timeline", "cost")

# ---- pure pieces ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("lo", "hi", "expected"),
    [
        (0, 1, [0, 0.2, 0.4, 0.6, 0.8, 1.0]),
        (0, 34.7, [0, 10, 20, 30, 40]),
        (0, 100, [0, 25, 50, 75, 100]),
        (3, 3, [3, 4, 5, 6]),
    ],
)
def test_nice_ticks_are_round_and_cover_the_range(lo, hi, expected) -> None:
    ticks = charts.nice_ticks(lo, hi, 4 if hi == 100 else 5)
    assert ticks == pytest.approx(expected)


def test_time_ticks_are_whole_minutes_with_unambiguous_labels() -> None:
    t0 = datetime(2023, 11, 16, 18, 15, 46, tzinfo=UTC).timestamp()
    ticks = charts.time_ticks(t0, t0 + 200)
    assert all(t % 60 == 0 for t in ticks) and len(ticks) >= 3
    labels = [charts.time_format(t0, t0 + 200)(t) for t in ticks]
    assert labels[0] == "18:16:00" and len(set(labels)) == len(labels)
    assert charts.time_format(t0, t0 + 3 * 86_400)(t0) == "11-16 18:15"


def test_charts_escape_their_labels_and_say_when_empty() -> None:
    chart = charts.line_chart(
        EVIL, [charts.Series(EVIL, [1, 2], [0.1, 0.9], "#000")], xlabel=EVIL, ylabel="y"
    )
    assert EVIL not in chart and "&lt;img src=x onerror=alert(1)&gt;" in chart
    assert "no data" in charts.line_chart("t", [], xlabel="x", ylabel="y")
    assert "no data" in charts.bar_chart(
        "t", [0, 1], [charts.Series("a", [0], [0], "#000")], xlabel="x", ylabel="y"
    )


def test_histogram_bar_heights_are_proportional() -> None:
    frame = charts.Frame(width=400, height=200, top=20, bottom=20, left=20, right=20)
    chart = charts.bar_chart(
        "h",
        [0, 0.5, 1],
        [charts.Series("a", [0, 0.5], [1, 4], "#000")],
        xlabel="x",
        ylabel="y",
        frame=frame,
    )
    heights = [float(h) for h in re.findall(r'<rect [^>]*height="([\d.]+)"', chart)]
    assert len(heights) == 2 and heights[1] == pytest.approx(4 * heights[0], rel=0.02)


def test_the_password_never_reaches_the_page() -> None:
    assert redact_dsn("http://u:s3cret@ch:8123/db") == "http://u:***@ch:8123/db"
    assert redact_dsn("chdb:///tmp/x") == "chdb:///tmp/x"
    assert redact_dsn("https://ch.example:8443") == "https://ch.example:8443"


def _overview(requests: int, seconds: float) -> Overview:
    t0 = datetime(2024, 1, 1, tzinfo=UTC)
    return Overview(requests, requests, 0, 0, 0, 0, t0, t0 + timedelta(seconds=seconds))


def _total(primary: float | None, candidate: float | None) -> SegmentRow:
    none3 = (None, None, None)
    return SegmentRow("", 1, 1, 1, None, none3, none3, None, None, primary, candidate)


def test_cost_projection_scales_the_observed_rate_to_a_month() -> None:
    c = cost_projection(_overview(1_001, 1_000.0), _total(0.04, 0.01), None, 0.0)
    assert c.requests_per_second == pytest.approx(1.001)
    assert c.monthly_requests == pytest.approx(1.001 * 86_400 * 365.25 / 12)
    assert c.monthly_savings_usd == pytest.approx(0.03 * c.monthly_requests)
    assert c.payback_text == "n/a" and c.payback_months is None  # no migration cost given


@pytest.mark.parametrize(
    ("primary", "candidate", "monthly", "migration", "text"),
    [
        (0.04, 0.01, 1_000_000, 0.0, "n/a"),
        (0.04, 0.01, 1_000_000, 300_000.0, "10.0 months"),  # saves 30,000 a month
        (0.04, 0.01, 1_000_000, 15_000.0, "15 days"),
        (0.01, 0.04, 1_000_000, 300_000.0, "never (the candidate costs more per month)"),
        (None, 0.01, 1_000_000, 300_000.0, "n/a (no cost data)"),
    ],
)
def test_payback_period(primary, candidate, monthly, migration, text) -> None:
    c = CostProjection(primary, candidate, None, monthly, True, migration)
    assert c.payback_text == text


def test_unknown_rate_needs_the_monthly_volume() -> None:
    c = cost_projection(_overview(1, 0.0), _total(0.04, 0.01), None, 0.0)
    assert c.monthly_requests is None and c.primary_monthly_usd is None


def _ev(metric: str, verdict: str, segment: str = "*") -> EvidenceRow:
    return EvidenceRow(metric, segment, verdict, 1.0, 1.0, 1.2, None, 300, False, "why", ())


def _decision(action: str, to: float, *evidence: EvidenceRow) -> DecisionRow:
    return DecisionRow(3, datetime(2024, 1, 1, tzinfo=UTC), action, 5.0, to, "r", evidence)


ALL_PASS = (
    _ev("latency_p99", "pass"),
    _ev("error_rate", "pass"),
    _ev("quality", "pass"),
    _ev("cost", "pass"),
)


@pytest.mark.parametrize(
    ("decisions", "status"),
    [
        ((), "NO DATA"),
        ((_decision("rollback", 1.0, _ev("latency_p99", "fail")),), "NO-GO"),
        ((_decision("hold", 5.0, *ALL_PASS[:3], _ev("cost", "fail")),), "NO-GO"),
        ((_decision("hold", 5.0, *ALL_PASS[:3], _ev("cost", "inconclusive")),), "NOT YET"),
        ((_decision("promote", 10.0, *ALL_PASS),), "GO"),
        ((_decision("promote", 100.0),), "GO"),
        # the lifecycle (issue 11): held after a rollback, paused, waiting for approval,
        # watching at 100 %, decommission-ready
        ((replace(_decision("hold", 0.0, *ALL_PASS), phase="rolled_back"),), "NO-GO"),
        ((replace(_decision("rollback", 0.0), phase="aborted"),), "NO-GO"),
        ((replace(_decision("hold", 5.0, *ALL_PASS), phase="paused"),), "NOT YET"),
        ((replace(_decision("hold", 5.0, *ALL_PASS), phase="awaiting_approval"),), "NOT YET"),
        ((replace(_decision("hold", 100.0, *ALL_PASS), phase="stability"),), "GO"),
        ((replace(_decision("hold", 100.0, *ALL_PASS), phase="complete"),), "GO"),
    ],
)
def test_go_no_go_against_the_policy(decisions, status) -> None:
    verdict = go_no_go(decisions, POLICY)
    assert verdict.status == status
    if decisions and decisions[-1].phase == "complete":
        assert verdict.headline.startswith("decommission-ready")
    if decisions and decisions[-1].evidence:
        assert next(c.metric for c in verdict.checks) == "latency_p99"
        assert all(c.limit for c in verdict.checks)


def test_a_failure_that_has_not_passed_since_keeps_the_verdict_no_go() -> None:
    """A segment fails, then goes quiet (a batch job): the decisions since only hold, but
    the experiment's standing over its life is NO-GO, with that failure's evidence, until
    the segment passes again."""
    failed = _decision("rollback", 1.0, *ALL_PASS, _ev("latency_p99", "fail", "batch"))
    quiet = _decision("hold", 1.0, *ALL_PASS, _ev("latency_p99", "nodata", "batch"))
    verdict = go_no_go((failed, quiet, quiet), POLICY)
    assert verdict.status == "NO-GO"
    assert "latency_p99 [batch] failed at 00:00 and has not passed since: why" in verdict.headline
    passed = _decision("hold", 1.0, *ALL_PASS, _ev("latency_p99", "pass", "batch"))
    assert go_no_go((failed, quiet, passed), POLICY).status == "GO"


def test_the_verdicts_show_the_worst_segment_first(small_data: ReportData) -> None:
    last = _decision(
        "hold", 5.0, *ALL_PASS,
        _ev("quality", "pass", "a"), _ev("quality", "nodata", "b"),
        _ev("quality", "inconclusive", "c"), _ev("latency_p99", "fail", "z"),
    )  # fmt: skip
    verdict = go_no_go((last,), POLICY)
    order = list(dict.fromkeys(c.segment for c in verdict.checks))
    assert order == ["*", "z", "c", "b", "a"]
    html = checks(verdict, small_data)
    heads = re.findall(r"<th[^>]*>([^<]*)</th>", html)
    assert heads == ["metric", "policy limit", "all segments", "z", "c", "b", "a",
                     "evidence (all segments)"]  # fmt: skip


@pytest.fixture(scope="module")
def small_data(tmp_path_factory) -> ReportData:
    """A small real ReportData (its own 300-request replay) for the rendering tests."""
    return _report_data(tmp_path_factory.mktemp("small"))


def test_every_string_from_the_data_is_escaped(small_data: ReportData) -> None:
    data = small_data
    evil = replace(
        data,
        experiment=EVIL,
        segments=(replace(data.segments[0], segment=EVIL), *data.segments[1:]),
        decisions=(
            replace(
                data.decisions[-1],
                reason=EVIL,
                evidence=(
                    replace(
                        data.decisions[-1].evidence[0],
                        segment=EVIL,
                        reason=EVIL,
                        example_request_ids=(EVIL,),
                    ),
                ),
            ),
        ),
        dead_letters=((EVIL, 3),),
    )
    evil = replace(evil, verdict=go_no_go(evil.decisions, POLICY))
    html = render(evil)
    assert "<img" not in html and "onerror=alert(1)>" not in html
    assert html.count("&lt;img src=x onerror=alert(1)&gt;") >= 6


def test_a_report_without_decisions_or_costs_says_so(small_data: ReportData) -> None:
    none3 = (None, None, None)
    data = replace(
        small_data,
        decisions=(),
        verdict=go_no_go((), POLICY),
        cost=CostProjection(None, None, None, None, False, 0.0),
        arms=tuple(
            replace(a, latency_ms=none3, cost_per_request_usd=None) for a in small_data.arms
        ),
    )
    page = _parse(render(data))
    text = " ".join(page.text)
    assert "NO DATA" in text and "No decisions recorded for this experiment." in text
    assert "unknown (give --monthly-requests)" in text
    assert page.tags["svg"] == 2  # no timeline chart without decisions


def test_ramp_stages_are_evenly_spaced_on_the_timeline() -> None:
    stages = [0, 1, 5, 10, 25, 50, 75, 100]
    assert [stage_level(stages, p) for p in stages] == list(range(8))
    assert stage_level(stages, 3) == pytest.approx(1.5)
    assert stage_level(stages, -1) == 0 and stage_level(stages, 120) == 7


def test_dollar_formats() -> None:
    assert fmt_usd(0.043358) == "$0.04336"
    assert fmt_usd(12.5) == "$12.50"
    assert fmt_usd(461_671.2) == "$461,671"
    assert fmt_usd(None) == "-"


# ---- end to end: a replayed store ----------------------------------------------------------


@pytest.fixture(scope="module")
def replayed(tmp_path_factory) -> tuple[Path, ReplayResult]:
    """A chdb store filled by a replay with faults; closed again before the tests run."""
    root = tmp_path_factory.mktemp("report")
    faults = Faults(latency_factor=1.5, drop_share=0.05, malformed=True)  # slower throughout
    spec = TrafficSpec(requests=600, replica_share=0.2)
    with Store.open(f"chdb://{root}/ch") as store:
        store.migrate()
        result = run_replay(built_payloads(spec, faults), POLICY, store)
    return root, result


@pytest.fixture(scope="module")
def report_file(replayed) -> Path:
    root, _ = replayed
    out = root / "shadowlens.report.html"
    args = ["report", "--experiment", EXPERIMENT, "--dsn", f"chdb://{root}/ch", "--out", str(out)]
    run = CliRunner().invoke(app, [*args, "--migration-cost-usd", "250000"])
    assert run.exit_code == 0, run.output
    assert "shadowlens.report.html" in run.output
    return out


def _report_data(tmp_path: Path) -> ReportData:
    """A small real ReportData (its own replay) for the escaping test."""
    faults = Faults(latency_factor=1.5, latency_after_ms=60_000)
    with Store.open(f"chdb://{tmp_path}/ch") as store:
        store.migrate()
        run_replay(built_payloads(TrafficSpec(requests=300), faults), POLICY, store)
        return load(store, EXPERIMENT, POLICY)


class _Text(HTMLParser):
    """Visible text per element id, and every id."""

    def __init__(self) -> None:
        super().__init__()
        self.ids: list[str] = []
        self.text: list[str] = []
        self.tags: Counter[str] = Counter()

    def handle_starttag(self, tag, attrs) -> None:
        self.tags[tag] += 1
        for k, v in attrs:
            if k == "id" and v:
                self.ids.append(v)

    def handle_data(self, data) -> None:
        self.text.append(data)


def _parse(html: str) -> _Text:
    p = _Text()
    p.feed(html)
    return p


def test_report_has_every_section_and_no_external_resource(report_file: Path) -> None:
    html = report_file.read_text(encoding="utf-8")
    page = _parse(html)
    for section in (*SECTIONS, "data-quality", "verdicts", "decisions-table", "go-no-go"):
        assert section in page.ids, section
    assert page.tags["svg"] == 3  # CDF, histogram, timeline
    assert page.tags["script"] == 0 and page.tags["link"] == 0
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:)?//""", html)
    assert "Content-Security-Policy" in html


def test_report_numbers_match_the_store(replayed, report_file: Path) -> None:
    root, result = replayed
    html = report_file.read_text(encoding="utf-8")
    text = " ".join(_parse(html).text)
    scores = [s for s in result.memory.scores if s.comparison == "candidate"]
    paired = sum(s.outcome == "paired" for s in scores)
    orphans = sum(s.outcome == "candidate_missing" for s in scores)
    assert paired > 0 and orphans > 0
    with Store.open(f"chdb://{root}/ch") as store:
        data = load(store, EXPERIMENT, POLICY, migration_cost_usd=250_000)
        (n_pairs,) = store.query(
            "SELECT countIf(outcome = 'paired') FROM pairs FINAL "
            "WHERE experiment = {e:String} AND comparison = 'candidate'",
            {"e": EXPERIMENT},
        ).result_rows[0]
    assert data.overview.paired == n_pairs == paired
    assert data.overview.candidate_missing == orphans
    assert re.search(rf'id="card-pairs"><div class="v">{paired:,}<', html)
    # the per-segment table: one row per segment plus the total
    segments = sorted({s.segment for s in scores})
    assert [s.segment for s in data.segments] == [*segments, ""]
    assert sum(s.n for s in data.segments if not s.is_total) == len(scores)
    for seg in segments:
        assert seg in text
    # both arms in the matrix, with the policy's prices
    assert [a.role for a in data.arms] == ["primary", "candidate", "replica"]
    assert "$30 in / $60 out" in html and "$0.9 in / $0.9 out" in html
    # the quality histogram holds every pair with a quality, per comparison
    with_quality = Counter(s.comparison for s in result.memory.scores if s.quality is not None)
    assert {k: sum(v) for k, v in data.quality.counts.items()} == dict(with_quality)
    # decisions: every one, in order, each with its evidence (merges must not collapse them)
    made = [(d.epoch, d.decided_at_ms) for d in result.memory.made]
    shown = [(d.epoch, int(d.decided_at.timestamp() * 1000)) for d in data.decisions]
    assert shown == sorted(made, key=lambda k: (k[1], k[0]))
    last = result.memory.made[-1]
    assert data.decisions[-1].action == str(last.action)
    assert len(data.decisions[-1].evidence) == len(last.evidence)
    assert html.count("<details>") == sum(1 for d in data.decisions if d.evidence)
    # go/no-go: the latency regression rolled back
    assert data.verdict.status == "NO-GO" and 'id="go-no-go">NO-GO<' in html
    # cost and payback
    assert data.cost.monthly_savings_usd and data.cost.monthly_savings_usd > 0
    assert data.cost.payback_text in text
    # dead letters by reason
    reasons = Counter(letter.reason for letter in result.memory.letters)
    assert dict(data.dead_letters) == dict(reasons)


def test_unknown_experiment_is_a_clear_error(replayed) -> None:
    root, _ = replayed
    args = ["report", "--experiment", "nope", "--dsn", f"chdb://{root}/ch", "--out", "x.html"]
    run = CliRunner().invoke(app, args)
    assert run.exit_code == 2
    assert "no pairs for experiment 'nope'" in run.output and EXPERIMENT in run.output


# ---- in a real browser ----------------------------------------------------------------------


def chromium() -> str:
    path = shutil.which("chromium") or shutil.which("chromium-browser")
    if path is None:
        pytest.fail("headless Chromium is needed: apt-get install -y chromium")
    return path


def browse(page: Path, png: Path, profile: Path) -> list[str]:
    """Screenshot `page` at 1280x2000; the console messages it printed."""
    run = subprocess.run(
        [
            chromium(),
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--no-first-run",
            "--hide-scrollbars",
            f"--user-data-dir={profile}",
            "--enable-logging=stderr",
            "--v=0",
            f"--screenshot={png}",
            "--window-size=1280,2000",
            page.as_uri(),
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert run.returncode == 0, run.stderr[-2000:]
    return [line for line in run.stderr.splitlines() if ":CONSOLE" in line]


def png_size(png: Path) -> tuple[int, int]:
    data = png.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    return struct.unpack(">II", data[16:24])


def distinct_rows(png: Path) -> int:
    """Distinct scanlines of an 8-bit RGB(A) PNG: a blank page has one."""
    data = png.read_bytes()
    width, _ = png_size(png)
    channels = {2: 3, 6: 4}[data[25]]
    idat, pos = b"", 8
    while pos < len(data):
        (length,) = struct.unpack(">I", data[pos : pos + 4])
        kind = data[pos + 4 : pos + 8]
        if kind == b"IDAT":
            idat += data[pos + 8 : pos + 8 + length]
        pos += 12 + length
    raw = zlib.decompress(idat)
    stride = 1 + width * channels
    return len({raw[i + 1 : i + stride] for i in range(0, len(raw), stride)})


@pytest.mark.browser
def test_the_console_check_catches_errors(tmp_path: Path) -> None:
    """The negative control: the same check on a page that does log and fail."""
    page = tmp_path / "bad.html"
    page.write_text(
        '<!DOCTYPE html><img src="https://example.invalid/x.png">'
        '<script>console.error("boom"); undefinedFunction();</script>'
    )
    console = browse(page, tmp_path / "bad.png", tmp_path / "profile")
    assert any("boom" in line for line in console)
    assert any("undefinedFunction" in line for line in console)


@pytest.mark.browser
def test_report_renders_in_chromium_without_console_errors(report_file: Path, tmp_path) -> None:
    png = tmp_path / "report.png"
    console = browse(report_file, png, tmp_path / "profile")
    assert console == []
    assert png_size(png) == (1280, 2000)
    assert png.stat().st_size > 60_000  # text, tables and charts, not a blank page
    assert distinct_rows(png) > 300
