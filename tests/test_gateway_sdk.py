"""The gateway SDK (gateway/, distribution shadowlens-gateway) stands alone.

Gateways must emit without installing the service: the SDK imports nothing but itself,
the standard library and its four dependencies (litellm only in its adapter), pins them
as the service does, and ships the wire contracts the service reuses. The Kafka test
installs it alone into a fresh venv and emits from there to the real broker.
"""

from __future__ import annotations

import ast
import json
import os
import re
import shutil
import subprocess
import sys
import tomllib
import venv
from collections import Counter
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
import shadowlens.schemas.events as service_events
from shadowlens.gateway import events as sdk_events
from shadowlens.gateway.emitter import ShadowEmitter
from shadowlens.gateway.kafka_env import KafkaSecurity, bootstrap_from_env

from tests.builders import event
from tests.test_emitter_kafka import drain, run

if TYPE_CHECKING:
    from tests.kafka_fixtures import TopicFactory

ROOT = Path(__file__).resolve().parents[1]
GATEWAY = ROOT / "gateway"
SDK = GATEWAY / "src"
# cryptography: routers verify Ed25519 signatures with the worker's public keys (issue 11)
DEPENDENCIES = {"aiokafka", "orjson", "fastjsonschema", "cryptography"}
EXTRAS = {"litellm": "litellm_callback.py"}  # an optional dependency and its only importer
SERVICE_ONLY = ("faust", "clickhouse_connect", "numpy", "scipy", "pyarrow", "shadowlens.streams")


def pins(requirements: list[str]) -> dict[str, str]:
    """``name[extra]==version`` lines as name -> version."""
    out = {}
    for line in requirements:
        match = re.fullmatch(r"([A-Za-z0-9_.-]+)(?:\[[^\]]*\])?==(\S+)", line)
        assert match, f"not pinned: {line}"
        out[match.group(1).lower()] = match.group(2)
    return out


def project(pyproject: Path) -> dict[str, Any]:
    return tomllib.loads(pyproject.read_text())["project"]


# --------------------------------------------------------------------------- no broker


def test_the_sdk_imports_only_itself_its_dependencies_and_the_standard_library() -> None:
    allowed = set(sys.stdlib_module_names) | DEPENDENCIES
    found = []
    for path in sorted(SDK.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                assert node.level == 0, f"{path.name}:{node.lineno}: relative import"
                names = [node.module or ""]
            else:
                continue
            for name in names:
                top = name.split(".")[0]
                ours = name == "shadowlens.gateway" or name.startswith("shadowlens.gateway.")
                extra = EXTRAS.get(top) == path.name
                if not (ours or extra or top in allowed):
                    found.append(f"{path.relative_to(ROOT)}:{node.lineno} {name}")
    assert found == []


def test_the_sdk_pins_its_dependencies_as_the_service_does() -> None:
    sdk, service = project(GATEWAY / "pyproject.toml"), project(ROOT / "pyproject.toml")
    assert sdk["name"] == "shadowlens-gateway"
    sdk_pins = pins(sdk["dependencies"])
    assert set(sdk_pins) == DEPENDENCIES
    service_pins = pins(service["dependencies"])
    assert {name: service_pins[name] for name in DEPENDENCIES} == sdk_pins
    assert service_pins["shadowlens-gateway"] == sdk["version"]
    assert set(sdk["optional-dependencies"]) == set(EXTRAS)
    assert pins(service["optional-dependencies"]["litellm"]) == {
        "shadowlens-gateway": sdk["version"]
    }  # the service's litellm extra is the SDK's: one pin


def test_the_wire_contracts_ship_in_one_place() -> None:
    schemas = [
        p.relative_to(ROOT)
        for p in ROOT.rglob("*.v1.json")
        if not {".venv", "build", ".git"} & set(p.relative_to(ROOT).parts)
    ]
    assert sorted(map(str, schemas)) == ["gateway/src/control.v1.json", "gateway/src/event.v1.json"]
    for name in ("Event", "Output", "Arm", "Task", "Status", "InvalidEvent", "decode_event"):
        assert getattr(service_events, name) is getattr(sdk_events, name), name


def test_kafka_security_reads_the_workers_variables_and_hides_the_password() -> None:
    secret = "pa55-word"
    env = {
        "SHADOWLENS_KAFKA_BOOTSTRAP": " kafka:9093 ",
        "SHADOWLENS_KAFKA_SECURITY_PROTOCOL": "sasl_plaintext",
        "SHADOWLENS_KAFKA_SASL_MECHANISM": "scram-sha-256",
        "SHADOWLENS_KAFKA_SASL_USERNAME": "gw",
        "SHADOWLENS_KAFKA_SASL_PASSWORD": secret,
    }
    security = KafkaSecurity.from_env(env)
    assert secret not in repr(security)
    assert security.aiokafka_options() == {
        "security_protocol": "SASL_PLAINTEXT",
        "sasl_mechanism": "SCRAM-SHA-256",
        "sasl_plain_username": "gw",
        "sasl_plain_password": secret,
        "ssl_context": None,
    }
    assert bootstrap_from_env(env) == "kafka:9093"
    assert bootstrap_from_env({}) == "127.0.0.1:9092"
    assert KafkaSecurity.from_env({}).aiokafka_options() == {"security_protocol": "PLAINTEXT"}
    assert ShadowEmitter.from_env(env={"SHADOWLENS_TOPIC_EVENTS": "gw.events"}).topic == "gw.events"


@pytest.mark.parametrize(
    ("change", "variable"),
    [
        ({"SHADOWLENS_KAFKA_SECURITY_PROTOCOL": "TLS"}, "KAFKA_SECURITY_PROTOCOL"),
        ({"SHADOWLENS_KAFKA_SASL_PASSWORD": ""}, "KAFKA_SASL_PASSWORD"),
        ({"SHADOWLENS_KAFKA_SASL_MECHANISM": "GSSAPI"}, "KAFKA_SASL_MECHANISM"),
        ({"SHADOWLENS_KAFKA_SSL_CAFILE": "/etc/hosts"}, "KAFKA_SSL_CAFILE"),  # without TLS
    ],
)
def test_bad_kafka_security_names_the_variable_never_the_secret(
    change: dict[str, str], variable: str
) -> None:
    env = {
        "SHADOWLENS_KAFKA_SECURITY_PROTOCOL": "SASL_PLAINTEXT",
        "SHADOWLENS_KAFKA_SASL_USERNAME": "gw",
        "SHADOWLENS_KAFKA_SASL_PASSWORD": "pa55-word",
        **change,
    }
    with pytest.raises(ValueError, match=variable) as info:
        KafkaSecurity.from_env(env)
    assert "pa55-word" not in str(info.value)


# --------------------------------------------------------------------------- on Kafka

# Run by the venv's interpreter: checks and emits the JSON lines on stdin, prints the stats.
EMIT = f"""
import asyncio, dataclasses, importlib.util, json, sys
from shadowlens.gateway.emitter import ShadowEmitter
from shadowlens.gateway.events import decode_event

async def main():
    events = [decode_event(line.encode()) for line in sys.stdin.read().splitlines()]
    async with ShadowEmitter.from_env() as emitter:  # broker and topic from SHADOWLENS_*
        for event in events:
            await emitter.emit(event)
        stats = await emitter.flush()
    present = [m for m in {SERVICE_ONLY!r} if importlib.util.find_spec(m) is not None]
    print(json.dumps({{"stats": dataclasses.asdict(stats), "service_modules": present}}))

asyncio.run(main())
"""


@pytest.mark.kafka
def test_the_sdk_alone_installs_into_a_fresh_venv_and_emits_to_the_broker(
    kafka_bootstrap: str, topic_factory: TopicFactory, tmp_path: Path
) -> None:
    # a copy: pip builds a local folder in place and would leave build/ in the repo
    source = tmp_path / "gateway"
    shutil.copytree(GATEWAY, source, ignore=shutil.ignore_patterns("build", "*.egg-info"))
    venv.create(tmp_path / "venv", with_pip=True)
    bin_dir = tmp_path / "venv" / "bin"
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    pip = subprocess.run(
        [bin_dir / "python", "-m", "pip", "install", "-q", "--disable-pip-version-check", source],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert pip.returncode == 0, pip.stdout + pip.stderr
    router = subprocess.run(
        [bin_dir / "shadowlens-router", "--help"], env=env, capture_output=True, text=True
    )
    assert router.returncode == 0 and "--experiment" in router.stdout, router.stderr

    topic = topic_factory()
    events = [
        event(f"sdk-{i}", arm, start=1_700_000_000_000 + i)
        for i in range(5)
        for arm in ("primary", "candidate")
    ]
    emitted = subprocess.run(
        [bin_dir / "python", "-c", EMIT],
        input="\n".join(e.to_json().decode() for e in events),
        env={
            **env,
            "SHADOWLENS_KAFKA_BOOTSTRAP": kafka_bootstrap,
            "SHADOWLENS_TOPIC_EVENTS": topic,
        },
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert emitted.returncode == 0, emitted.stderr
    report = json.loads(emitted.stdout)
    assert report["service_modules"] == []  # faust, clickhouse_connect, numpy ... absent
    assert (report["stats"]["delivered"], report["stats"]["failed"]) == (len(events), 0)

    records = run(lambda: drain(kafka_bootstrap, topic))
    assert Counter((r.key, r.value) for r in records) == Counter(
        (e.request_id.encode(), e.to_json()) for e in events
    )
    assert all(sdk_events.decode_event(r.value).request_id.encode() == r.key for r in records)
