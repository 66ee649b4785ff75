"""deploy/: the Grafana dashboard's SQL runs on a real store, and every config parses and
points at things that exist (metric names, data sources, files).

Grafana macros are replaced as the ClickHouse plugin (grafana-clickhouse-datasource, its
pkg/macros/macros.go) expands them, with the time range of the replayed data:

    $__timeFilter(c)    -> c >= toDateTime(FROM) AND c <= toDateTime(TO)
    $__timeFilter_ms(c) -> c >= fromUnixTimestamp64Milli(FROM_MS) AND ... (ms)
    $__fromTime / $__toTime        -> toDateTime(FROM) / toDateTime(TO)
    $__fromTime_ms / $__toTime_ms  -> fromUnixTimestamp64Milli(FROM_MS / TO_MS)
    $__timeInterval(c)  -> toStartOfInterval(toDateTime(c), INTERVAL N second)
    $__interval_s       -> N

and the dashboard variable ``${experiment:sqlstring}`` (Grafana quotes and escapes it) by a
bound parameter ``{experiment:String}``. A ``$`` left after that fails the test.
"""

from __future__ import annotations

import json
import re
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
import pytest
import yaml
from prometheus_client.core import Metric
from shadowlens.judge.policy import load_policy
from shadowlens.replay.faults import Faults
from shadowlens.replay.run import TrafficSpec, built_payloads, parse_start_time, run_replay
from shadowlens.store.client import Store
from shadowlens.streams.metrics import Metrics

ROOT = Path(__file__).resolve().parents[1]
DEPLOY = ROOT / "deploy"
DASHBOARD = DEPLOY / "grafana" / "dashboards" / "shadowlens-migration.json"
DATASOURCES = DEPLOY / "grafana" / "provisioning" / "datasources" / "shadowlens.yaml"
PROVIDERS = DEPLOY / "grafana" / "provisioning" / "dashboards" / "shadowlens.yaml"
EXPERIMENT = "gpt4-to-llama3-70b"
INTERVAL_S = 10
CH_TYPE = "grafana-clickhouse-datasource"


# ---- helpers --------------------------------------------------------------------------------


def exposed_metric_names() -> set[str]:
    """Every sample name the worker's registry can expose."""
    suffixes = {"counter": ("_total",), "histogram": ("_bucket", "_sum", "_count")}
    names: set[str] = set()
    family: Metric
    for family in Metrics().registry.collect():
        for suffix in suffixes.get(family.type, ("",)):
            names.add(family.name + suffix)
    return names


METRIC = re.compile(r"\bshadowlens_[a-z0-9_]+")


def metric_names_in(text: str) -> set[str]:
    return set(METRIC.findall(text))


def expand_macros(sql: str, start: datetime, end: datetime, interval_s: int) -> str:
    """The ClickHouse plugin's macro expansion (see the module doc), plus the variable."""
    f, t = int(start.timestamp()), int(end.timestamp())
    fms, tms = int(start.timestamp() * 1000), int(end.timestamp() * 1000)
    rules = [
        (r"\$__timeFilter_ms\(([^)]+)\)",
         rf"\1 >= fromUnixTimestamp64Milli({fms}) AND \1 <= fromUnixTimestamp64Milli({tms})"),
        (r"\$__timeFilter\(([^)]+)\)", rf"\1 >= toDateTime({f}) AND \1 <= toDateTime({t})"),
        (r"\$__timeInterval\(([^)]+)\)",
         rf"toStartOfInterval(toDateTime(\1), INTERVAL {interval_s} second)"),
        (r"\$__fromTime_ms\b", f"fromUnixTimestamp64Milli({fms})"),
        (r"\$__toTime_ms\b", f"fromUnixTimestamp64Milli({tms})"),
        (r"\$__fromTime\b", f"toDateTime({f})"),
        (r"\$__toTime\b", f"toDateTime({t})"),
        (r"\$__interval_s\b", str(interval_s)),
        (r"\$\{experiment:sqlstring\}", "{experiment:String}"),
    ]  # fmt: skip
    for pattern, repl in rules:
        sql = re.sub(pattern, repl, sql)
    assert "$" not in sql, f"unexpanded macro or variable in: {sql}"
    return sql


def dashboard() -> dict[str, Any]:
    return json.loads(DASHBOARD.read_text(encoding="utf-8"))


def clickhouse_targets() -> Iterator[tuple[str, dict[str, Any]]]:
    doc = dashboard()
    for panel in doc["panels"]:
        for target in panel.get("targets", []):
            if target["datasource"]["type"] == CH_TYPE:
                yield panel["title"], target
    for anno in doc["annotations"]["list"]:
        yield f"annotation {anno['name']}", anno["target"]


# ---- the dashboard on a replayed store ------------------------------------------------------


@pytest.fixture(scope="module")
def replayed_store(tmp_path_factory) -> Iterator[tuple[Store, datetime, datetime]]:
    """A store filled by a replay with a latency regression, lost candidates and bad input."""
    root = tmp_path_factory.mktemp("dashboard")
    faults = Faults(latency_factor=1.5, latency_after_ms=60_000, drop_share=0.05, malformed=True)
    with Store.open(f"chdb://{root}/ch") as store:
        store.migrate()
        run_replay(built_payloads(TrafficSpec(requests=600), faults), load_policy(), store)
        lo, hi = store.query("SELECT min(event_time), max(event_time) FROM pairs").result_rows[0]
        # dead letters carry the wall-clock time they were received: widen the range past now
        end = max(hi, datetime.now(UTC)) + timedelta(minutes=1)
        yield store, lo.replace(microsecond=0), end.replace(microsecond=0)


def test_dashboard_is_valid_and_laid_out_without_overlaps() -> None:
    doc = dashboard()
    assert doc["uid"] and doc["title"] and doc["schemaVersion"] >= 36
    panels = doc["panels"]
    ids = [p["id"] for p in panels]
    assert len(ids) == len(set(ids))
    cells: set[tuple[int, int]] = set()
    for p in panels:
        g = p["gridPos"]
        assert g["x"] + g["w"] <= 24, p["title"]
        for x in range(g["x"], g["x"] + g["w"]):
            for y in range(g["y"], g["y"] + g["h"]):
                assert (x, y) not in cells, f"{p['title']} overlaps another panel"
                cells.add((x, y))
    titles = {p["title"] for p in panels}
    for required in (
        "Pairs/s",
        "Pairing rate over time",
        "Quality by segment",
        "Latency p50 / p95 / p99 per arm",
        "Error rates per arm",
        "Decisions timeline",
        "Current stage",
        "Refusal and truncation rate by arm",
        "Semantic sampled fraction",
    ):
        assert required in titles


def test_panels_use_the_provisioned_data_sources() -> None:
    provisioned = {
        d["uid"]: d["type"] for d in yaml.safe_load(DATASOURCES.read_text())["datasources"]
    }
    doc = dashboard()
    for panel in doc["panels"]:
        for target in [panel, *panel["targets"]]:
            ds = target["datasource"]
            assert provisioned.get(ds["uid"]) == ds["type"], panel["title"]
    for var in doc["templating"]["list"]:
        assert provisioned.get(var["datasource"]["uid"]) == var["datasource"]["type"]


@pytest.mark.parametrize(("title", "target"), list(clickhouse_targets()), ids=lambda v: str(v)[:40])
def test_every_panel_query_runs_on_a_replayed_store(replayed_store, title, target) -> None:
    store, start, end = replayed_store
    sql = expand_macros(target["rawSql"], start, end, INTERVAL_S)
    params = {"experiment": EXPERIMENT} if "{experiment:String}" in sql else None
    result = store.query(sql, params)
    assert result.result_rows, f"{title}: no rows for the replayed data"
    if target.get("format") == 0:  # time series: a time column, then values
        assert "time" in result.column_names, title
        times = [row[result.column_names.index("time")] for row in result.result_rows]
        assert times == sorted(times), f"{title}: not ordered by time"


def test_template_variable_lists_the_experiments(replayed_store) -> None:
    store, _, _ = replayed_store
    (var,) = dashboard()["templating"]["list"]
    assert var["name"] == "experiment"
    assert [r[0] for r in store.query(var["query"]).result_rows] == [EXPERIMENT]


def test_stage_and_decision_panels_show_the_rollback(replayed_store) -> None:
    store, start, end = replayed_store
    panels = {p["title"]: p for p in dashboard()["panels"]}

    def run(title: str) -> list[tuple]:
        sql = expand_macros(panels[title]["targets"][0]["rawSql"], start, end, INTERVAL_S)
        return store.query(sql, {"experiment": EXPERIMENT}).result_rows

    assert run("Last decision") == [("hold, rolled back",)]  # one rollback, then held
    assert run("Current stage") == [(0.0,)]
    assert ("rollback",) in {(r[1],) for r in run("Decisions timeline")}


def test_prometheus_panels_use_existing_metrics() -> None:
    exposed = exposed_metric_names()
    exprs = [
        t["expr"]
        for p in dashboard()["panels"]
        for t in p["targets"]
        if t["datasource"]["type"] == "prometheus"
    ]
    assert exprs
    for expr in exprs:
        names = metric_names_in(expr)
        assert names and names <= exposed, expr


def test_the_dashboard_opens_on_the_compose_replay() -> None:
    """`docker compose up` shows the migration live: the replayer moves the 2023 sample to
    the present and paces it in real time, so every event it has published lies within the
    dashboard's default range while it runs, and the whole run for most of an hour after."""
    services = yaml.safe_load((ROOT / "docker-compose.yml").read_text())["services"]
    command = services["replayer"]["command"]
    assert command[:2] == ["shadowlens", "publish"]
    opts = dict(zip(command[2::2], command[3::2], strict=True))
    assert opts["--rebase-time"] == "now"
    assert float(opts["--speed"]) == 1.0  # event time = wall-clock time: nothing in the future
    window = dashboard()["time"]
    assert window["to"] == "now"
    now_ms = 1_800_000_000_000
    range_ms = now_ms - parse_start_time(window["from"], now_ms)
    times = [
        (e["start_time_ms"], e["end_time_ms"])
        for e in map(orjson.loads, (raw for raw, _ in built_payloads(
            TrafficSpec(start_ms=parse_start_time(opts["--rebase-time"], now_ms)), Faults()
        )))
    ]  # fmt: skip
    span_ms = max(end for _, end in times) - min(start for start, _ in times)
    assert min(start for start, _ in times) == now_ms
    assert 5 * 60_000 < span_ms <= range_ms  # the whole run fits, with room to look back


# ---- provisioning, Prometheus, ClickHouse ----------------------------------------------------


def test_grafana_provisioning() -> None:
    ds = {d["uid"]: d for d in yaml.safe_load(DATASOURCES.read_text())["datasources"]}
    ch = ds["shadowlens-clickhouse"]
    assert ch["type"] == CH_TYPE
    assert ch["jsonData"]["defaultDatabase"] == "shadowlens"
    assert ch["jsonData"]["username"] == "grafana"  # the read-only user
    assert ch["secureJsonData"]["password"] == "$CLICKHOUSE_GRAFANA_PASSWORD"
    providers = yaml.safe_load(PROVIDERS.read_text())["providers"]
    assert providers[0]["options"]["path"] == "/var/lib/grafana/dashboards"


def test_prometheus_config_and_alerts() -> None:
    config = yaml.safe_load((DEPLOY / "prometheus" / "prometheus.yml").read_text())
    jobs = {j["job_name"]: j for j in config["scrape_configs"]}
    assert jobs["shadowlens-worker"]["static_configs"][0]["targets"] == ["worker:9464"]
    rules = yaml.safe_load((DEPLOY / "prometheus" / "alerts.yml").read_text())
    exposed = exposed_metric_names()
    exprs = [r["expr"] for g in rules["groups"] for r in g["rules"]]
    assert len(exprs) >= 4
    for expr in exprs:
        assert metric_names_in(expr) and metric_names_in(expr) <= exposed, expr


def test_clickhouse_users_take_passwords_from_the_environment() -> None:
    root = ET.parse(DEPLOY / "clickhouse" / "users.d" / "shadowlens.xml").getroot()
    users = root.find("users")
    assert users is not None
    for name in ("shadowlens", "grafana"):
        user = users.find(name)
        assert user is not None
        password = user.find("password")
        assert password is not None and not (password.text or "").strip()
        assert password.get("from_env", "").startswith("CLICKHOUSE_")
    grafana_grants = [q.text for q in users.findall("grafana/grants/query")]
    assert grafana_grants == ["GRANT SELECT ON shadowlens.*"]
    assert {ip.text for ip in users.findall("default/networks/ip")} == {"::1", "127.0.0.1"}
    ET.parse(DEPLOY / "clickhouse" / "config.d" / "shadowlens.xml")


# ---- canary controllers ---------------------------------------------------------------------


def test_argo_rollouts_analysis_template() -> None:
    (doc,) = yaml.safe_load_all(
        (DEPLOY / "examples" / "argo-rollouts-analysistemplate.yaml").read_text()
    )
    assert doc["apiVersion"] == "argoproj.io/v1alpha1" and doc["kind"] == "AnalysisTemplate"
    assert {a["name"] for a in doc["spec"]["args"]} >= {"experiment"}
    exposed = exposed_metric_names()
    metrics = doc["spec"]["metrics"]
    assert len(metrics) >= 3
    for m in metrics:
        assert m["successCondition"] and m["provider"]["prometheus"]["address"]
        query = m["provider"]["prometheus"]["query"]
        assert "{{args.experiment}}" in query
        assert metric_names_in(query) and metric_names_in(query) <= exposed, query


def test_flagger_metric_templates_and_canary() -> None:
    docs = list(
        yaml.safe_load_all((DEPLOY / "examples" / "flagger-metrictemplate.yaml").read_text())
    )
    templates = {d["metadata"]["name"]: d for d in docs if d["kind"] == "MetricTemplate"}
    (canary,) = [d for d in docs if d["kind"] == "Canary"]
    assert len(templates) >= 2
    exposed = exposed_metric_names()
    for t in templates.values():
        assert t["apiVersion"] == "flagger.app/v1beta1"
        assert t["spec"]["provider"]["type"] == "prometheus"
        query = t["spec"]["query"]
        assert "{{ variables.experiment }}" in query
        assert metric_names_in(query) and metric_names_in(query) <= exposed, query
    for m in canary["spec"]["analysis"]["metrics"]:
        assert m["templateRef"]["name"] in templates
        assert "experiment" in m["templateVariables"] and "thresholdRange" in m


def test_signal_panels_read_the_windows(replayed_store) -> None:
    store, start, end = replayed_store
    panels = {p["title"]: p for p in dashboard()["panels"]}

    def run(title: str) -> list[tuple]:
        sql = expand_macros(panels[title]["targets"][0]["rawSql"], start, end, INTERVAL_S)
        return store.query(sql, {"experiment": EXPERIMENT}).result_rows

    rates = run("Refusal and truncation rate by arm")
    assert rates and all(0 <= v <= 1 for row in rates for v in row[1:] if v is not None)
    refusals, pairs = store.query(
        "SELECT sum(candidate_refusals), sum(refusal_pairs) FROM windows FINAL "
        "WHERE comparison = 'candidate'"
    ).result_rows[0]
    from_pairs = store.query(
        "SELECT countIf(candidate_refusal) FROM pairs FINAL WHERE comparison = 'candidate'"
    ).result_rows[0][0]
    assert pairs > 0 and refusals == from_pairs
    sampled = [row[2] for row in run("Semantic sampled fraction")]
    assert set(sampled) - {None} == {1.0}  # replay: no budget
    # NULL, not 0 or 1, where a window holds no text pair to sample (e.g. orphans only,
    # which are timed at their deadline, after the traffic)
    empty = store.query(
        "SELECT count() FROM windows FINAL WHERE comparison = 'candidate' "
        "AND quality_measured + quality_unsampled = 0"
    ).result_rows[0][0]
    assert (None in sampled) == (empty > 0)
