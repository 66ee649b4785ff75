"""Shared fixtures: the real Kafka broker started by scripts/test.sh, and topic factories."""

pytest_plugins = ["tests.kafka_fixtures"]
