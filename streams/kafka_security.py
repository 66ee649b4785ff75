"""Kafka TLS and SASL for every client the service makes, from `Settings` only.

The aiokafka clients (``shadowlens publish``, the topic admin) get `aiokafka_options`, the
Faust worker `faust_credentials` (``broker_credentials``); both come from one
`KafkaSecurity` of the gateway SDK, the builder gateways use on the same
``SHADOWLENS_KAFKA_*`` variables, so worker, service clients and gateways cannot disagree.
`Settings` validated the values first (see `shadowlens.streams.config`); Faust's
credential objects print the user name, never the password.
"""

from __future__ import annotations

from typing import Any

from faust.auth import SASLCredentials, SSLCredentials
from faust.types.auth import CredentialsT
from shadowlens.streams.config import Settings


def faust_credentials(settings: Settings) -> CredentialsT | None:
    """Faust's ``broker_credentials``; None for PLAINTEXT."""
    security = settings.kafka_security()
    context = security.ssl_context()
    if security.protocol == "SSL":
        return SSLCredentials(context)
    if security.sasl:
        return SASLCredentials(
            username=security.sasl_username,
            password=security.sasl_password,
            mechanism=security.sasl_mechanism,
            ssl_context=context,  # SASL_SSL when set
        )
    return None


def aiokafka_options(settings: Settings) -> dict[str, Any]:
    """Keyword arguments for `AIOKafkaProducer`, `AIOKafkaConsumer` and the admin client."""
    return settings.kafka_security().aiokafka_options()
