"""Contracts of shadowlens: the typed records of the topics and the ClickHouse DDL.

The wire contracts (event.v1.json, control.v1.json) ship with the gateway SDK
(`shadowlens.gateway.load_json_schema`), which gateways install without the service.
"""
