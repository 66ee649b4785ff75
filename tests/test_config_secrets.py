"""Kafka TLS/SASL and ClickHouse credentials: only from the environment, never shown.

Pure checks of `Settings`, `redact_secrets`, `redact_dsn` and `shadowlens.streams.kafka_security`
(which builds on the gateway SDK's `KafkaSecurity`),
then real workers on the test broker with a recognisable password in their environment:
the password must appear nowhere in what they print, whether they run (PLAINTEXT) or fail
to authenticate (SASL against a PLAINTEXT listener).
"""

from __future__ import annotations

import asyncio
import ssl
import traceback
import urllib.request
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

import certifi
import pytest
from faust.transport.drivers.aiokafka import credentials_to_aiokafka_auth
from shadowlens.gateway.kafka_env import KafkaSecurity
from shadowlens.replay.datasets import load_sample
from shadowlens.replay.faults import Faults, apply_faults
from shadowlens.replay.traffic import build_events
from shadowlens.store.client import Store
from shadowlens.store.dsn import redact_dsn
from shadowlens.streams.ch_writer import ClickHouseWriter
from shadowlens.streams.config import Settings, SettingsError, redact_secrets
from shadowlens.streams.kafka_security import aiokafka_options, faust_credentials

from tests.stream_harness import (
    WORKER_KEY,
    WorkerProcess,
    final_decision_seen,
    last_window_end,
    make_topics,
    publish_payloads,
    report,
    wait_for,
    worker_env,
)
from tests.test_stream_worker import free_port

if TYPE_CHECKING:
    from tests.kafka_fixtures import TopicFactory

SECRET = "Zq9-s3cr3t/p@ss word"  # with characters a URL must encode
SASL = {
    "SHADOWLENS_KAFKA_SECURITY_PROTOCOL": "SASL_PLAINTEXT",
    "SHADOWLENS_KAFKA_SASL_MECHANISM": "SCRAM-SHA-512",
    "SHADOWLENS_KAFKA_SASL_USERNAME": "shadowlens",
    "SHADOWLENS_KAFKA_SASL_PASSWORD": SECRET,
}
CLICKHOUSE = {
    "SHADOWLENS_CLICKHOUSE_USER": "analyst",
    "SHADOWLENS_CLICKHOUSE_PASSWORD": SECRET,
}


def full_text(exc: BaseException) -> str:
    """The exception as a traceback prints it: every chained cause and context too."""
    return "".join(traceback.format_exception(exc))


# ---------------------------------------------------------------------------- settings


def test_secrets_are_masked_in_describe_and_left_out_of_repr() -> None:
    s = Settings.from_env({**SASL, **CLICKHOUSE, "SHADOWLENS_DSN": "http://ch:8123"})
    assert s.kafka_sasl_password == SECRET and s.clickhouse_password == SECRET
    assert SECRET not in repr(s) and SECRET not in str(s.describe())
    assert s.describe()["kafka_sasl_password"] == s.describe()["clickhouse_password"] == "***"
    assert Settings().describe()["kafka_sasl_password"] == ""  # unset is not masked as set
    edited = s.with_(kafka_sasl_password="other-secret")
    assert "other-secret" not in repr(edited) and "other-secret" not in str(edited.describe())


def test_dsn_passwords_are_masked_in_describe() -> None:
    s = Settings.from_env({"SHADOWLENS_DSN": "http://analyst:hunter2@ch:8123"})
    assert s.describe()["dsn"] == "http://analyst:***@ch:8123"
    assert "hunter2" not in repr(s.describe())


def test_clickhouse_user_and_password_join_a_server_dsn_url_encoded() -> None:
    s = Settings.from_env({**CLICKHOUSE, "SHADOWLENS_DSN": "https://ch.example:8443/"})
    assert s.store_dsn == "https://analyst:Zq9-s3cr3t%2Fp%40ss%20word@ch.example:8443/"
    assert redact_secrets(f"error at {s.store_dsn}", s.store_dsn) == (
        "error at https://analyst:***@ch.example:8443/"
    )
    chdb = Settings.from_env({**CLICKHOUSE, "SHADOWLENS_DSN": "chdb:///tmp/x"})
    assert chdb.store_dsn == "chdb:///tmp/x"  # an embedded engine has no users


def test_redact_secrets_masks_raw_and_url_encoded_forms() -> None:
    text = f"a {SECRET} b Zq9-s3cr3t%2Fp%40ss%20word c"
    assert redact_secrets(text, SECRET) == "a *** b *** c"
    assert redact_secrets("nothing here", "", SECRET) == "nothing here"


@pytest.mark.parametrize(
    ("env", "names"),
    [
        ({**SASL, "SHADOWLENS_KAFKA_SECURITY_PROTOCOL": "PLAINTEXT"}, "KAFKA_SASL_*"),
        ({**SASL, "SHADOWLENS_KAFKA_SASL_USERNAME": ""}, "KAFKA_SASL_USERNAME"),
        ({**SASL, "SHADOWLENS_KAFKA_SECURITY_PROTOCOL": "SASL"}, "KAFKA_SECURITY_PROTOCOL"),
        ({**SASL, "SHADOWLENS_KAFKA_SASL_MECHANISM": "GSSAPI"}, "KAFKA_SASL_MECHANISM"),
        (
            {**CLICKHOUSE, "SHADOWLENS_DSN": f"http://u:{quote(SECRET, safe='')}@ch:8123"},
            "CLICKHOUSE_USER",
        ),
        (
            {"SHADOWLENS_KAFKA_SECURITY_PROTOCOL": "SSL", "SHADOWLENS_KAFKA_SSL_CAFILE": "/nope"},
            "KAFKA_SSL_CAFILE",
        ),
    ],
)
def test_bad_security_settings_name_the_variable_never_the_secret(
    env: dict[str, str], names: str
) -> None:
    with pytest.raises(SettingsError) as info:
        Settings.from_env(env)
    assert names in str(info.value)
    assert SECRET not in full_text(info.value)


@pytest.mark.parametrize(
    "dsn",
    [
        f"ftp://analyst:{SECRET}@ch:8123",  # unsupported scheme
        f"http://analyst:{SECRET}@/db",  # no host
        f"analyst:{SECRET}@ch:8123",  # no scheme at all
        f"http://analyst:{SECRET}@ch:port",  # a port that is not a number
        f"http://analyst:{SECRET}@127.0.0.1:9",  # nothing listens (discard port)
    ],
)
def test_a_bad_dsn_fails_without_showing_its_password(dsn: str) -> None:
    with pytest.raises(Exception) as info:  # any error, as long as it is clean
        Store.open(dsn)
    assert SECRET not in full_text(info.value)
    assert SECRET not in redact_dsn(dsn)


def test_the_writer_reports_a_bad_dsn_without_its_password() -> None:
    writer = ClickHouseWriter(f"ftp://analyst:{SECRET}@ch:8123", "shadowlens", 10)
    writer.open()
    try:
        with pytest.raises(RuntimeError) as info:
            asyncio.run(writer.drain())
    finally:
        writer.shutdown()
    assert "unsupported ClickHouse DSN" in str(info.value)
    assert SECRET not in full_text(info.value)


# ---------------------------------------------------------------------------- Kafka clients


def test_sasl_scram_reaches_faust_and_aiokafka_alike() -> None:
    s = Settings.from_env(SASL)
    credentials = faust_credentials(s)
    assert SECRET not in repr(credentials)
    options = aiokafka_options(s)
    assert options["security_protocol"] == "SASL_PLAINTEXT"
    assert options["sasl_mechanism"] == "SCRAM-SHA-512"
    assert options["sasl_plain_username"] == "shadowlens"
    assert options["sasl_plain_password"] == SECRET
    assert options["ssl_context"] is None


def test_sasl_ssl_and_ssl_carry_a_tls_context_from_the_ca_file() -> None:
    tls = {**SASL, "SHADOWLENS_KAFKA_SECURITY_PROTOCOL": "SASL_SSL"}
    ca = "SHADOWLENS_KAFKA_SSL_CAFILE"
    tls[ca] = certifi.where()  # a real CA bundle
    sasl_ssl = aiokafka_options(Settings.from_env(tls))
    assert sasl_ssl["security_protocol"] == "SASL_SSL"
    assert isinstance(sasl_ssl["ssl_context"], ssl.SSLContext)
    assert sasl_ssl["ssl_context"].verify_mode == ssl.CERT_REQUIRED
    only_tls = Settings.from_env(
        {"SHADOWLENS_KAFKA_SECURITY_PROTOCOL": "SSL", "SHADOWLENS_KAFKA_SSL_CAFILE": tls[ca]}
    )
    options = aiokafka_options(only_tls)
    assert options["security_protocol"] == "SSL" and "sasl_plain_password" not in options
    assert aiokafka_options(Settings()) == {"security_protocol": "PLAINTEXT"}
    assert faust_credentials(Settings()) is None


def comparable(options: dict[str, Any]) -> dict[str, Any]:
    """aiokafka options with the TLS context (a new object per call) as its verify mode."""
    context = options.get("ssl_context")
    return {**options, "ssl_context": context and context.verify_mode}


@pytest.mark.parametrize("protocol", ["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"])
def test_the_worker_its_clients_and_gateways_connect_alike(protocol: str) -> None:
    """Faust's own mapping of the worker's credentials, the service's aiokafka options and
    a gateway's (the SDK reading the same environment) are one and the same."""
    env = {"SHADOWLENS_KAFKA_SECURITY_PROTOCOL": protocol}
    if protocol.startswith("SASL_"):
        env = {**SASL, **env}
    if protocol.endswith("SSL"):
        env["SHADOWLENS_KAFKA_SSL_CAFILE"] = certifi.where()
    settings = Settings.from_env(env)
    service = comparable(aiokafka_options(settings))
    assert comparable(dict(credentials_to_aiokafka_auth(faust_credentials(settings)))) == service
    assert comparable(KafkaSecurity.from_env(env).aiokafka_options()) == service


# ---------------------------------------------------------------------------- real workers


def shedding_policy(tmp_path: Path) -> Path:
    """The shipped policy with room for only 20 open requests per experiment and task."""
    path = tmp_path / "policy.toml"
    text = resources.files("shadowlens.judge").joinpath("default_policy.toml").read_text()
    text = text.replace("max_pending = 200000 ", "max_pending = 20 ")
    assert "max_pending = 20 " in text
    path.write_text(text)
    return path


@pytest.mark.kafka
@pytest.mark.reliability
def test_a_running_worker_prints_no_secret_and_meters_shed_pairs(
    kafka_bootstrap: str,
    topic_factory: TopicFactory,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """PLAINTEXT broker, chdb store: the ClickHouse password is configured (and unused),
    so the start-up settings line is where it would show. The policy's tiny
    ``max_pending`` makes the pairing table shed: the metric must say so."""
    sample = load_sample()
    events = build_events(sample.instructions, sample.arrivals, requests=600, seed=2)
    events = apply_faults(events, Faults(drop_share=0.05), sample.instructions)
    topics = make_topics(topic_factory)
    publish_payloads(kafka_bootstrap, topics.events, [e.to_json() for e in events], end_marker=True)
    port = free_port()
    env = worker_env(
        kafka_bootstrap,
        topics,
        f"chdb://{tmp_path / 'ch'}",
        policy=shedding_policy(tmp_path),
        SHADOWLENS_METRICS_PORT=str(port),
        SHADOWLENS_LOG_LEVEL="debug",  # the most a worker ever prints
        **CLICKHOUSE,
    )
    worker = WorkerProcess(env, tmp_path / "worker.log")
    try:
        wait_for(
            lambda: final_decision_seen(kafka_bootstrap, topics.control, last_window_end(events)),
            timeout=120,
            what="the decision of the last window",
            workers=[worker],
        )
        stats = worker.stats()
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as resp:
            metrics = resp.read().decode()
    finally:
        code = worker.stop()
    assert code == 0, worker.tail()
    log = worker.log_path.read_bytes()
    assert b"clickhouse_password': '***'" in log, "the settings line is logged, masked"
    assert SECRET.encode() not in log
    assert b"Zq9-s3cr3t%2Fp%40ss%20word" not in log
    assert WORKER_KEY.private_line().split()[-1].encode() not in log  # the signing key
    assert b"signing_key': '***'" in log
    assert SECRET not in metrics
    shed_lines = [x for x in metrics.splitlines() if x.startswith("shadowlens_pairs_shed_total{")]
    shed_metric = sum(float(x.rsplit(" ", 1)[1]) for x in shed_lines)
    report(capsys, secret_leaks=0, pairs_shed=stats["pairing.shed"], shed_metric=shed_metric)
    assert 'experiment="gpt4-to-llama3-70b"' in shed_lines[0]
    assert shed_metric == stats["pairing.shed"] > 0


@pytest.mark.kafka
@pytest.mark.reliability
def test_a_worker_that_cannot_authenticate_prints_no_secret(
    kafka_bootstrap: str, topic_factory: TopicFactory, tmp_path: Path
) -> None:
    """SASL against the PLAINTEXT listener: the worker fails at start; its errors and
    tracebacks must not carry the password."""
    topics = make_topics(topic_factory)
    env = worker_env(
        kafka_bootstrap, topics, f"chdb://{tmp_path / 'ch'}", SHADOWLENS_LOG_LEVEL="debug", **SASL
    )
    worker = WorkerProcess(env, tmp_path / "worker.log")
    try:
        worker.proc.wait(60)
    finally:
        worker.kill()
    log = worker.log_path.read_bytes()
    assert worker.proc.returncode != 0, log[-2000:]
    assert SECRET.encode() not in log
