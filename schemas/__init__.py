"""Contracts of shadowlens: JSON Schemas of the topics, ClickHouse DDL, and their typed records."""

from __future__ import annotations

from functools import cache
from importlib import resources
from typing import Any

import orjson


@cache
def load_json_schema(name: str) -> dict[str, Any]:
    """A JSON Schema shipped in this package, by file name (e.g. ``event.v1.json``)."""
    return orjson.loads(resources.files(__package__).joinpath(name).read_bytes())
