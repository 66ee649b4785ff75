"""docker-compose.yml: valid against the Compose Specification, and every cross-reference
holds (mounted files, build files, service names, environment variables, commands).

There is no Docker engine here, so nothing is started: the schema
(tests/data/compose-spec.json, see tests/data/README.md) checks the structure, the rest of
the file checks what a schema cannot.
"""

from __future__ import annotations

import json
import re
from dataclasses import fields
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import typer.main
import yaml
from shadowlens.cli.app import app
from shadowlens.streams.config import PREFIX, Settings

ROOT = Path(__file__).resolve().parents[1]
COMPOSE = ROOT / "docker-compose.yml"
SCHEMA = ROOT / "tests" / "data" / "compose-spec.json"
DOCKERFILE = "deploy/shadowlens.Dockerfile"

CLI_ONLY_ENV = {"SHADOWLENS_CONFIG"}  # read by the CLI, not a worker setting


def compose() -> dict[str, Any]:
    return yaml.safe_load(COMPOSE.read_text(encoding="utf-8"))


def shadowlens_services() -> dict[str, dict[str, Any]]:
    return {
        name: s
        for name, s in compose()["services"].items()
        if s.get("build", {}).get("dockerfile") == DOCKERFILE
    }


def test_valid_against_the_compose_specification() -> None:
    schema = json.loads(SCHEMA.read_text(encoding="utf-8"))
    validator = jsonschema.Draft7Validator(schema)
    errors = sorted(validator.iter_errors(compose()), key=lambda e: list(e.path))
    assert not errors, "\n".join(f"{list(e.path)}: {e.message}" for e in errors)


def test_the_schema_rejects_a_broken_file() -> None:
    """The validation above is not vacuous."""
    schema = json.loads(SCHEMA.read_text(encoding="utf-8"))
    broken = compose()
    broken["services"]["worker"]["depends_on"]["kafka"]["condition"] = "whenever"
    broken["services"]["grafana"]["ports"] = "3000:3000"
    assert len(list(jsonschema.Draft7Validator(schema).iter_errors(broken))) >= 2


def test_the_stack_has_every_service() -> None:
    services = compose()["services"]
    assert {"kafka", "clickhouse", "grafana", "prometheus", "worker", "replayer"} <= set(services)
    assert services["kafka"]["image"].startswith("apache/kafka:")
    assert services["kafka"]["environment"]["KAFKA_PROCESS_ROLES"] == "broker,controller"
    assert "GF_PLUGINS_PREINSTALL_SYNC" in services["grafana"]["environment"]
    assert (
        "grafana-clickhouse-datasource"
        in services["grafana"]["environment"]["GF_PLUGINS_PREINSTALL_SYNC"]
    )


def test_bind_mounts_and_build_files_exist() -> None:
    doc = compose()
    for name, service in doc["services"].items():
        for volume in service.get("volumes", []):
            source = volume.split(":", 1)[0]
            if source.startswith("."):
                assert (ROOT / source).exists(), f"{name}: {source} is missing"
            else:
                assert source in doc["volumes"], f"{name}: undeclared volume {source}"
        build = service.get("build")
        if build:
            assert (ROOT / build["context"] / build["dockerfile"]).is_file()
    dockerfile = (ROOT / DOCKERFILE).read_text()
    for line in dockerfile.splitlines():
        if line.startswith("COPY "):
            for src in line.split()[1:-1]:
                assert (ROOT / src).exists(), f"{DOCKERFILE}: COPY {src} is missing"


def test_dependencies_name_services() -> None:
    services = compose()["services"]
    for name, service in services.items():
        depends = service.get("depends_on", [])
        for dep in depends:
            assert dep in services and dep != name, f"{name} depends on {dep}"


def test_every_interpolated_variable_has_a_default() -> None:
    """`docker compose up` works without a .env file (the defaults are laptop-only)."""
    text = COMPOSE.read_text(encoding="utf-8")
    for match in re.finditer(r"\$\{([^}]*)\}", text):
        assert ":-" in match.group(1), f"${{{match.group(1)}}} has no default"


def test_passwords_reach_the_services_that_read_them() -> None:
    services = compose()["services"]
    users = (ROOT / "deploy/clickhouse/users.d/shadowlens.xml").read_text()
    for var in re.findall(r'from_env="([A-Z_]+)"', users):
        assert var in services["clickhouse"]["environment"], var
    datasources = yaml.safe_load(
        (ROOT / "deploy/grafana/provisioning/datasources/shadowlens.yaml").read_text()
    )
    secrets = [v for d in datasources["datasources"] for v in d.get("secureJsonData", {}).values()]
    assert secrets
    for value in secrets:
        var = re.fullmatch(r"\$\{?([A-Z_]+)\}?", value)
        assert var, f"a secret written into the provisioning file: {value!r}"
        assert var.group(1) in services["grafana"]["environment"], var.group(1)
    dsn = services["worker"]["environment"]["SHADOWLENS_DSN"]
    assert dsn.startswith("http://shadowlens:${CLICKHOUSE_SHADOWLENS_PASSWORD:-")
    assert dsn.endswith("@clickhouse:8123")


def test_prometheus_scrapes_the_worker_metrics_port() -> None:
    services = compose()["services"]
    config = yaml.safe_load((ROOT / "deploy/prometheus/prometheus.yml").read_text())
    (job,) = [j for j in config["scrape_configs"] if j["job_name"] == "shadowlens-worker"]
    (target,) = job["static_configs"][0]["targets"]
    host, port = target.split(":")
    assert host in services
    assert services[host]["environment"]["SHADOWLENS_METRICS_PORT"] == port
    assert port in services[host]["expose"]


@pytest.mark.parametrize("service", ["migrate", "worker", "replayer"])
def test_commands_and_options_exist(service: str) -> None:
    command = shadowlens_services()[service]["command"]
    assert command[0] == "shadowlens"
    cmd: Any = typer.main.get_command(app)
    path: list[str] = []
    args = command[1:]
    while args and not args[0].startswith("-") and hasattr(cmd, "commands"):
        path.append(args.pop(0))
        cmd = cmd.commands.get(path[-1])
        assert cmd is not None, f"no command shadowlens {' '.join(path)}"
    options = {opt for p in cmd.params for opt in (*p.opts, *p.secondary_opts)}
    for arg in args:
        if arg.startswith("--"):
            flag = arg.split("=", 1)[0]
            assert flag in options, f"shadowlens {' '.join(path)} has no option {flag}"


def test_every_shadowlens_variable_is_a_real_setting() -> None:
    """A misspelt SHADOWLENS_* variable would be ignored without a word: catch it here."""
    known = {PREFIX + f.name.upper() for f in fields(Settings)} | CLI_ONLY_ENV
    found = {
        (name, var)
        for name, service in compose()["services"].items()
        for var in service.get("environment", {})
        if var.startswith(PREFIX)
    }
    assert found, "the compose file sets no SHADOWLENS_* variable"
    for name, var in sorted(found):
        assert var in known, f"{name}: {var} is not a setting (streams/config.py)"
    worker = compose()["services"]["worker"]["environment"]
    Settings.from_env(env={k: str(v) for k, v in worker.items() if "${" not in str(v)})
