"""Kafka connection of gateway clients from the worker's ``SHADOWLENS_*`` variables.

A gateway's emitter and a router's subscriber read the same variables as the worker, so
one deployment's settings serve all three, without installing the service:

| variable | default | meaning |
|---|---|---|
| SHADOWLENS_KAFKA_BOOTSTRAP | 127.0.0.1:9092 | broker list, host:port[,host:port] |
| SHADOWLENS_TOPIC_EVENTS | shadow.events | where gateways emit events |
| SHADOWLENS_KAFKA_SECURITY_PROTOCOL | PLAINTEXT | or SSL, SASL_PLAINTEXT, SASL_SSL |
| SHADOWLENS_KAFKA_SASL_MECHANISM | PLAIN | or SCRAM-SHA-256, SCRAM-SHA-512 |
| SHADOWLENS_KAFKA_SASL_USERNAME / _PASSWORD | (none) | SASL credentials (password: secret) |
| SHADOWLENS_KAFKA_SSL_CAFILE | (system CAs) | CA bundle that signs the brokers' certificates |
| SHADOWLENS_KAFKA_SSL_CERTFILE / _KEYFILE | (none) | client certificate and key (mutual TLS) |

Credentials come from the environment only, never a command line; the password is left
out of ``repr`` and errors name variables, never values. The service builds the same
`KafkaSecurity` from its validated settings (`shadowlens.streams.kafka_security`).
"""

from __future__ import annotations

import os
import ssl
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aiokafka.helpers import create_ssl_context

PREFIX = "SHADOWLENS_"
BOOTSTRAP_ENV = "SHADOWLENS_KAFKA_BOOTSTRAP"
DEFAULT_BOOTSTRAP = "127.0.0.1:9092"
SECURITY_PROTOCOLS = ("PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL")
SASL_MECHANISMS = ("PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512")


def env_value(name: str, default: str = "", env: Mapping[str, str] | None = None) -> str:
    """``SHADOWLENS_<name>`` stripped; unset or empty gives `default`, as in the worker."""
    value = (os.environ if env is None else env).get(PREFIX + name, "").strip()
    return value or default


def bootstrap_from_env(env: Mapping[str, str] | None = None) -> str:
    """The broker list the worker uses too (``SHADOWLENS_KAFKA_BOOTSTRAP``)."""
    return env_value("KAFKA_BOOTSTRAP", DEFAULT_BOOTSTRAP, env)


@dataclass(frozen=True, slots=True)
class KafkaSecurity:
    """TLS and SASL of one Kafka client."""

    protocol: str = "PLAINTEXT"
    sasl_mechanism: str = "PLAIN"
    sasl_username: str = ""
    sasl_password: str = field(default="", repr=False)
    ssl_cafile: Path | None = None
    ssl_certfile: Path | None = None
    ssl_keyfile: Path | None = None

    def __post_init__(self) -> None:
        """Refuse what cannot connect or contradicts itself; messages name the variables,
        never their values (some are secrets)."""
        protocol = self.protocol
        if protocol not in SECURITY_PROTOCOLS:
            raise ValueError(
                f"{PREFIX}KAFKA_SECURITY_PROTOCOL must be one of {', '.join(SECURITY_PROTOCOLS)}"
            )
        if self.sasl_mechanism not in SASL_MECHANISMS:
            raise ValueError(
                f"{PREFIX}KAFKA_SASL_MECHANISM must be one of {', '.join(SASL_MECHANISMS)}"
            )
        if self.sasl and not (self.sasl_username and self.sasl_password):
            raise ValueError(
                f"{PREFIX}KAFKA_SECURITY_PROTOCOL={protocol} needs "
                f"{PREFIX}KAFKA_SASL_USERNAME and {PREFIX}KAFKA_SASL_PASSWORD"
            )
        if not self.sasl and (self.sasl_username or self.sasl_password):
            raise ValueError(
                f"{PREFIX}KAFKA_SASL_* is set but {PREFIX}KAFKA_SECURITY_PROTOCOL={protocol} "
                "does not use SASL (SASL_PLAINTEXT or SASL_SSL)"
            )
        tls_files = {
            "KAFKA_SSL_CAFILE": self.ssl_cafile,
            "KAFKA_SSL_CERTFILE": self.ssl_certfile,
            "KAFKA_SSL_KEYFILE": self.ssl_keyfile,
        }
        for name, path in tls_files.items():
            if path is not None and not protocol.endswith("SSL"):
                raise ValueError(
                    f"{PREFIX}{name} is set but {PREFIX}KAFKA_SECURITY_PROTOCOL={protocol} "
                    "does not use TLS (SSL or SASL_SSL)"
                )
            if path is not None and not path.is_file():
                raise ValueError(f"{PREFIX}{name}: no such file {path}")
        if (self.ssl_keyfile is None) != (self.ssl_certfile is None):
            raise ValueError(
                f"{PREFIX}KAFKA_SSL_CERTFILE and {PREFIX}KAFKA_SSL_KEYFILE go together"
            )

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> KafkaSecurity:
        def path(name: str) -> Path | None:
            value = env_value(name, env=env)
            return Path(value) if value else None

        return cls(
            protocol=env_value("KAFKA_SECURITY_PROTOCOL", "PLAINTEXT", env).upper(),
            sasl_mechanism=env_value("KAFKA_SASL_MECHANISM", "PLAIN", env).upper(),
            sasl_username=env_value("KAFKA_SASL_USERNAME", env=env),
            sasl_password=env_value("KAFKA_SASL_PASSWORD", env=env),
            ssl_cafile=path("KAFKA_SSL_CAFILE"),
            ssl_certfile=path("KAFKA_SSL_CERTFILE"),
            ssl_keyfile=path("KAFKA_SSL_KEYFILE"),
        )

    @property
    def sasl(self) -> bool:
        return self.protocol.startswith("SASL_")

    def ssl_context(self) -> ssl.SSLContext | None:
        """The TLS context of SSL / SASL_SSL: the system CAs or the CA file, and a client
        certificate when one is configured; None without TLS."""
        if not self.protocol.endswith("SSL"):
            return None
        return create_ssl_context(
            cafile=self.ssl_cafile, certfile=self.ssl_certfile, keyfile=self.ssl_keyfile
        )

    def aiokafka_options(self) -> dict[str, Any]:
        """Keyword arguments for `AIOKafkaProducer`, `AIOKafkaConsumer` and the admin client."""
        options: dict[str, Any] = {"security_protocol": self.protocol}
        if self.protocol == "SSL":
            options["ssl_context"] = self.ssl_context()
        elif self.sasl:
            options.update(
                sasl_mechanism=self.sasl_mechanism,
                sasl_plain_username=self.sasl_username,
                sasl_plain_password=self.sasl_password,
                ssl_context=self.ssl_context(),  # None for SASL_PLAINTEXT
            )
        return options
