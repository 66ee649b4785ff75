"""Worker settings: one frozen dataclass read from ``SHADOWLENS_*`` environment variables.

Everything the streaming worker needs to know that is not the migration policy: where the
broker and ClickHouse are, the topic names, the processing guarantee and the timeouts that
matter in tests. Parsed once, validated, never mutated; `describe()` is what gets logged
(the ClickHouse password and any other secret never are).

Secrets (Kafka SASL password, ClickHouse password or a DSN with one) come only from the
environment (or a config file feeding `from_env`), never from the command line. They are
left out of ``repr``, masked by `describe()` and `redact_secrets`, and the Kafka ones reach
Faust and aiokafka only through `shadowlens.streams.kafka_security`.

| variable | default | meaning |
|---|---|---|
| SHADOWLENS_KAFKA_BOOTSTRAP | 127.0.0.1:9092 | broker list, host:port[,host:port] |
| SHADOWLENS_APP_ID | shadowlens | Faust app id = consumer group = changelog topic prefix |
| SHADOWLENS_DSN | chdb://./.shadowlens/ch | ClickHouse (chdb://DIR or http(s)://...) |
| SHADOWLENS_DATABASE | shadowlens | ClickHouse database |
| SHADOWLENS_POLICY | (built-in) | policy TOML file |
| SHADOWLENS_PROCESSING_GUARANTEE | exactly_once | or at_least_once: no transactions (docs) |
| SHADOWLENS_TOPIC_EVENTS | shadow.events | gateway events, keyed by request_id |
| SHADOWLENS_TOPIC_REPARTITION | shadow.events.repartition | re-keyed events |
| SHADOWLENS_TOPIC_PAIRS | shadow.pairs | scored pairs + watermarks, keyed by experiment |
| SHADOWLENS_TOPIC_DEADLETTER | shadow.deadletter | rejected input, original bytes |
| SHADOWLENS_TOPIC_CONTROL | shadow.control | decisions and heartbeats for routers |
| SHADOWLENS_TOPIC_COMMANDS | shadow.commands | signed operator commands (`shadowlens control`) |
| SHADOWLENS_EVENTS_PARTITIONS | 8 | partitions when the worker must create shadow.events |
| SHADOWLENS_PAIRS_PARTITIONS | 1 | partitions of shadow.pairs / shadow.deadletter (see docs) |
| SHADOWLENS_CONTROL_PARTITIONS | 1 | partitions of shadow.control |
| SHADOWLENS_REPLICATION_FACTOR | 1 | of the topics the worker creates (changelogs too) |
| SHADOWLENS_BATCH_SIZE | 1000 | events per agent batch (stream.take) |
| SHADOWLENS_BATCH_WITHIN_S | 0.2 | longest wait to fill a batch |
| SHADOWLENS_PRODUCER_BATCH_BYTES | 16384 | producer batch per partition, bytes |
| SHADOWLENS_SWEEP_INTERVAL_S | 1.0 | orphan sweep + watermark publication timer |
| SHADOWLENS_IDLE_AFTER_S | 60 | a silent events partition follows the others' event time (0: off) |
| SHADOWLENS_COMMIT_INTERVAL_S | 2.0 | offset commit (and ClickHouse flush) interval |
| SHADOWLENS_COMMIT_EVERY | 10000 | also commit once this many records were acked (Faust's) |
| SHADOWLENS_SESSION_TIMEOUT_S | 30 | consumer group session timeout |
| SHADOWLENS_HEARTBEAT_INTERVAL_S | 3 | consumer group heartbeat |
| SHADOWLENS_REBALANCE_TIMEOUT_S | 60 | consumer group rebalance timeout |
| SHADOWLENS_STATE_DIR | ./.shadowlens/worker | Faust data dir (a subdirectory per app id) |
| SHADOWLENS_WEB_PORT | (none) | Faust web on 127.0.0.1:PORT; unset = --without-web |
| SHADOWLENS_METRICS_PORT | (none) | Prometheus /metrics on ADDR:PORT (streams/metrics.py) |
| SHADOWLENS_METRICS_ADDR | 127.0.0.1 | its bind address (0.0.0.0 in a container network) |
| SHADOWLENS_CH_BATCH | 5000 | pairs per ClickHouse insert |
| SHADOWLENS_CH_MAX_BUFFERED_ROWS | 50000 | rows buffered (store failing) before judging waits |
| SHADOWLENS_CH_RETRY_INITIAL_S | 0.5 | first backoff after a failed ClickHouse write |
| SHADOWLENS_CH_RETRY_MAX_S | 30 | longest backoff (exponential, with jitter) |
| SHADOWLENS_CLICKHOUSE_USER | (none) | ClickHouse user for an http(s) DSN without one |
| SHADOWLENS_CLICKHOUSE_PASSWORD | (none) | its password (secret) |
| SHADOWLENS_KAFKA_SECURITY_PROTOCOL | PLAINTEXT | or SSL, SASL_PLAINTEXT, SASL_SSL |
| SHADOWLENS_KAFKA_SASL_MECHANISM | PLAIN | or SCRAM-SHA-256, SCRAM-SHA-512 |
| SHADOWLENS_KAFKA_SASL_USERNAME | (none) | SASL user |
| SHADOWLENS_KAFKA_SASL_PASSWORD | (none) | SASL password (secret) |
| SHADOWLENS_KAFKA_SSL_CAFILE | (system CAs) | CA bundle that signs the brokers' certificates |
| SHADOWLENS_KAFKA_SSL_CERTFILE | (none) | client certificate (mutual TLS) |
| SHADOWLENS_KAFKA_SSL_KEYFILE | (none) | its private key |
| SHADOWLENS_SIGNING_KEY_FILE | (none) | the worker's Ed25519 key file (`shadowlens keys new`) |
| SHADOWLENS_SIGNING_KEY | (none) | or the key's line itself (secret) |
| SHADOWLENS_OPERATOR_KEYS_FILE | (none) | allowlist: operators' public keys, one line each |
| SHADOWLENS_OPERATOR_KEYS | (none) | or the lines themselves (comma-separated) |
| SHADOWLENS_COMMAND_MAX_AGE_S | 600 | older commands are refused (replays) |
| SHADOWLENS_CONTROL_KEY | (none) | legacy HMAC key shared with routers: version 1 (secret) |
| SHADOWLENS_ALLOW_UNSIGNED | false | publish unsigned control messages when there is no key |
| SHADOWLENS_STATS_INTERVAL_S | 5 | how often the worker logs its counters |
| SHADOWLENS_REDACT | false | pairs leave the pairing stage with body hashes, not bodies |
| SHADOWLENS_SEMANTIC | off | semantic similarity of text pairs: off, torch or onnx |
| SHADOWLENS_SEMANTIC_TIMEOUT_S | 30 | an encode still queued or running after it: batch unsampled |
| SHADOWLENS_JUDGE | off | preference judge: off, recorded or litellm:MODEL (docs/preference.md) |
| SHADOWLENS_JUDGE_DATA | ../shared/data/alpaca_eval_judge | recorded judgments (annotation files) |
| SHADOWLENS_JUDGE_API_BASE | (provider's) | endpoint of the litellm judge |
| SHADOWLENS_JUDGE_API_KEY | (provider's) | its API key (secret); else the provider's variable |
| SHADOWLENS_JUDGE_ALLOW_SELF | false | let the judge model be one of the compared models |
| SHADOWLENS_JUDGE_MAX_PENDING | 1000 | judge calls in flight; pairs drawn beyond go out unjudged |
| SHADOWLENS_LOG_LEVEL | info | worker log level |
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any
from urllib.parse import quote, unquote, urlsplit, urlunsplit

from shadowlens.gateway.kafka_env import KafkaSecurity
from shadowlens.store.dsn import DEFAULT_DATABASE, DEFAULT_DSN, redact_dsn

__all__ = ["Settings", "SettingsError", "redact_dsn", "redact_secrets"]

PREFIX = "SHADOWLENS_"
GUARANTEES = ("at_least_once", "exactly_once")
MASK = "***"


class SettingsError(ValueError):
    """A setting has a value the worker cannot use; the message names the variable."""


@dataclass(frozen=True, slots=True)
class Settings:
    kafka_bootstrap: str = "127.0.0.1:9092"
    app_id: str = "shadowlens"
    dsn: str = DEFAULT_DSN
    database: str = DEFAULT_DATABASE
    policy: Path | None = None
    processing_guarantee: str = "exactly_once"  # crash-exact evidence: docs/streaming.md
    topic_events: str = "shadow.events"
    topic_repartition: str = "shadow.events.repartition"
    topic_pairs: str = "shadow.pairs"
    topic_deadletter: str = "shadow.deadletter"
    topic_control: str = "shadow.control"
    topic_commands: str = "shadow.commands"
    events_partitions: int = 8
    pairs_partitions: int = 1
    control_partitions: int = 1
    replication_factor: int = 1
    batch_size: int = 1000
    batch_within_s: float = 0.2
    producer_batch_bytes: int = 16384
    sweep_interval_s: float = 1.0
    idle_after_s: float = 60.0
    commit_interval_s: float = 2.0
    commit_every: int = 10_000
    session_timeout_s: float = 30.0
    heartbeat_interval_s: float = 3.0
    rebalance_timeout_s: float = 60.0
    state_dir: Path = Path(".shadowlens/worker")
    web_port: int | None = None
    metrics_port: int | None = None
    metrics_addr: str = "127.0.0.1"
    ch_batch: int = 5000
    ch_max_buffered_rows: int = 50_000
    ch_retry_initial_s: float = 0.5
    ch_retry_max_s: float = 30.0
    clickhouse_user: str = ""
    clickhouse_password: str = field(default="", repr=False)
    kafka_security_protocol: str = "PLAINTEXT"
    kafka_sasl_mechanism: str = "PLAIN"
    kafka_sasl_username: str = ""
    kafka_sasl_password: str = field(default="", repr=False)
    kafka_ssl_cafile: Path | None = None
    kafka_ssl_certfile: Path | None = None
    kafka_ssl_keyfile: Path | None = None
    signing_key_file: Path | None = None
    signing_key: str = field(default="", repr=False)
    operator_keys_file: Path | None = None
    operator_keys: str = ""
    command_max_age_s: float = 600.0
    control_key: str = field(default="", repr=False)
    allow_unsigned: bool = False
    stats_interval_s: float = 5.0
    redact: bool = False
    semantic: str = "off"
    semantic_timeout_s: float = 30.0
    judge: str = "off"
    judge_data: Path = Path("../shared/data/alpaca_eval_judge")
    judge_api_base: str = ""
    judge_api_key: str = field(default="", repr=False)
    judge_allow_self: bool = False
    judge_max_pending: int = 1000
    log_level: str = "info"

    def __post_init__(self) -> None:
        if self.processing_guarantee not in GUARANTEES:
            raise SettingsError(
                f"{PREFIX}PROCESSING_GUARANTEE must be one of {', '.join(GUARANTEES)}, "
                f"got {self.processing_guarantee!r}"
            )
        for name in (
            "events_partitions",
            "pairs_partitions",
            "control_partitions",
            "replication_factor",
            "commit_every",
        ):
            if getattr(self, name) < 1:
                raise SettingsError(f"{PREFIX}{name.upper()} must be >= 1")
        if self.batch_size < 1 or self.ch_batch < 1:
            raise SettingsError(f"{PREFIX}BATCH_SIZE and {PREFIX}CH_BATCH must be >= 1")
        if self.producer_batch_bytes < 1024:
            raise SettingsError(f"{PREFIX}PRODUCER_BATCH_BYTES must be >= 1024")
        for name in (
            "batch_within_s",
            "sweep_interval_s",
            "commit_interval_s",
            "stats_interval_s",
            "ch_retry_initial_s",
            "command_max_age_s",
            "semantic_timeout_s",
        ):
            if getattr(self, name) <= 0:
                raise SettingsError(f"{PREFIX}{name.upper()} must be > 0")
        if self.heartbeat_interval_s >= self.session_timeout_s:
            raise SettingsError(
                f"{PREFIX}HEARTBEAT_INTERVAL_S must be below {PREFIX}SESSION_TIMEOUT_S"
            )
        if self.ch_max_buffered_rows < 1 or self.ch_retry_max_s < self.ch_retry_initial_s:
            raise SettingsError(
                f"{PREFIX}CH_MAX_BUFFERED_ROWS must be >= 1 and "
                f"{PREFIX}CH_RETRY_MAX_S >= {PREFIX}CH_RETRY_INITIAL_S"
            )
        self._check_security()
        names = [self.topic_events, self.topic_repartition, self.topic_pairs]
        names += [self.topic_deadletter, self.topic_control, self.topic_commands]
        if len(set(names)) != len(names):
            raise SettingsError(f"the six {PREFIX}TOPIC_* names must differ: {names}")

    def _check_security(self) -> None:
        """Messages name the variables, never their values (some are secrets)."""
        try:
            self.kafka_security()  # Kafka TLS / SASL: checked where gateways check theirs
        except ValueError as exc:
            raise SettingsError(str(exc)) from None
        if (self.clickhouse_user or self.clickhouse_password) and urlsplit(self.dsn).username:
            raise SettingsError(
                f"ClickHouse credentials both in {PREFIX}DSN and in {PREFIX}CLICKHOUSE_USER/"
                "PASSWORD: give them once"
            )

    def kafka_security(self) -> KafkaSecurity:
        """Kafka TLS / SASL in the gateway SDK's form, which every aiokafka client and
        Faust's credentials are built from (`shadowlens.streams.kafka_security`)."""
        return KafkaSecurity(
            protocol=self.kafka_security_protocol,
            sasl_mechanism=self.kafka_sasl_mechanism,
            sasl_username=self.kafka_sasl_username,
            sasl_password=self.kafka_sasl_password,
            ssl_cafile=self.kafka_ssl_cafile,
            ssl_certfile=self.kafka_ssl_certfile,
            ssl_keyfile=self.kafka_ssl_keyfile,
        )

    @property
    def exactly_once(self) -> bool:
        return self.processing_guarantee == "exactly_once"

    @property
    def store_dsn(self) -> str:
        """The DSN to connect with: `dsn` plus ``CLICKHOUSE_USER``/``PASSWORD`` for a
        server (chdb has no users). Secret: never log it (`describe` masks it)."""
        parts = urlsplit(self.dsn)
        if parts.scheme not in ("http", "https") or not self.clickhouse_user:
            return self.dsn
        user = quote(self.clickhouse_user, safe="")
        password = quote(self.clickhouse_password, safe="")
        auth = f"{user}:{password}@" if password else f"{user}@"
        return urlunsplit(parts._replace(netloc=auth + parts.netloc))

    def secrets(self) -> list[str]:
        """Every secret value set, for `redact_secrets`."""
        values = [self.kafka_sasl_password, self.clickhouse_password, self.control_key]
        values.append(self.judge_api_key)
        values += self.signing_key.split()[-1:]  # the base64: the secret part of the key's line
        values.append(urlsplit(self.dsn).password or "")
        return [v for v in values if v]

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None, **overrides: Any) -> Settings:
        """Read ``SHADOWLENS_<FIELD>`` for every field; unset or empty keeps the default."""
        env = os.environ if env is None else env
        values: dict[str, Any] = {}
        for f in fields(cls):
            raw = env.get(PREFIX + f.name.upper(), "").strip()
            if raw:
                values[f.name] = _parse(f.name, str(f.type), raw)
        values.update({k: v for k, v in overrides.items() if v is not None})
        return cls(**values)

    def with_(self, **changes: Any) -> Settings:
        return replace(self, **changes)

    def describe(self) -> dict[str, Any]:
        """The settings as they may be logged: passwords masked, in the DSN too."""
        out = {f.name: getattr(self, f.name) for f in fields(self)}
        out["dsn"] = redact_dsn(self.dsn)
        out["policy"] = str(self.policy) if self.policy else "(built-in)"
        secret = ("kafka_sasl_password", "clickhouse_password", "signing_key", "control_key")
        for name in (*secret, "judge_api_key"):
            out[name] = MASK if out[name] else ""
        return out


def _parse(name: str, type_name: str, raw: str) -> Any:
    var = PREFIX + name.upper()
    try:
        if type_name.startswith("int"):
            return int(raw)
        if type_name.startswith("float"):
            return float(raw)
    except ValueError:
        raise SettingsError(f"{var}={raw!r} is not a number") from None
    if type_name.startswith("Path"):
        return Path(raw)
    if type_name == "bool":
        if raw.lower() in ("1", "true", "yes", "on"):
            return True
        if raw.lower() in ("0", "false", "no", "off"):
            return False
        raise SettingsError(f"{var}={raw!r} is not a boolean (true/false)")
    if name in ("processing_guarantee", "log_level"):
        return raw.lower()
    if name in ("kafka_security_protocol", "kafka_sasl_mechanism"):
        return raw.upper()
    return raw


def redact_secrets(text: str, *secrets: str) -> str:
    """`text` with every secret (and its URL-encoded form, as in a DSN) masked; a DSN
    among `secrets` contributes its password."""
    values: set[str] = set()
    for secret in secrets:
        password = urlsplit(secret).password if "://" in secret else None
        for value in (secret if password is None else password, password and unquote(password)):
            if value:
                values |= {value, quote(value, safe="")}
    for value in sorted(values, key=len, reverse=True):
        text = text.replace(value, MASK)
    return text
