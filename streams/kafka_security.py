"""Kafka TLS and SASL for every client the project makes, from `Settings` only.

The Faust worker gets `faust_credentials` (``broker_credentials``); the plain aiokafka
clients (``shadowlens publish``, the gateway emitter, the topic admin) get
`aiokafka_options`, derived from the same credentials by Faust's own mapping, so the two
cannot disagree. The values come from ``SHADOWLENS_KAFKA_*`` (see `shadowlens.streams.config`);
Faust's credential objects print the user name, never the password.
"""

from __future__ import annotations

import ssl
from typing import Any

from aiokafka.helpers import create_ssl_context
from faust.auth import SASLCredentials, SSLCredentials
from faust.transport.drivers.aiokafka import credentials_to_aiokafka_auth
from faust.types.auth import CredentialsT
from shadowlens.streams.config import Settings


def ssl_context(settings: Settings) -> ssl.SSLContext | None:
    """The TLS context of SSL / SASL_SSL: the system CAs or ``KAFKA_SSL_CAFILE``, and a
    client certificate when one is configured."""
    if not settings.kafka_security_protocol.endswith("SSL"):
        return None
    return create_ssl_context(
        cafile=settings.kafka_ssl_cafile,
        certfile=settings.kafka_ssl_certfile,
        keyfile=settings.kafka_ssl_keyfile,
    )


def faust_credentials(settings: Settings) -> CredentialsT | None:
    """Faust's ``broker_credentials``; None for PLAINTEXT."""
    protocol, context = settings.kafka_security_protocol, ssl_context(settings)
    if protocol == "SSL":
        return SSLCredentials(context)
    if protocol.startswith("SASL_"):
        return SASLCredentials(
            username=settings.kafka_sasl_username,
            password=settings.kafka_sasl_password,
            mechanism=settings.kafka_sasl_mechanism,
            ssl_context=context,  # SASL_SSL when set
        )
    return None


def aiokafka_options(settings: Settings) -> dict[str, Any]:
    """Keyword arguments for `AIOKafkaProducer`, `AIOKafkaConsumer` and the admin client."""
    return dict(credentials_to_aiokafka_auth(faust_credentials(settings)))
