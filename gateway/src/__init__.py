"""The shadowlens gateway SDK: the two wire contracts and the clients that speak them.

Gateways install this alone (aiokafka, orjson, fastjsonschema and cryptography; litellm as
an extra) to emit events (`emitter`, `litellm_callback`); routers use it to follow signed
control messages (`keys`, `control`, `router`, `subscriber`). The service depends on it, so
the event and control schemas shipped here are the only copies.
"""

from __future__ import annotations

from functools import cache
from importlib import resources
from typing import Any

import orjson


@cache
def load_json_schema(name: str) -> dict[str, Any]:
    """A JSON Schema shipped in this package: ``event.v1.json`` or ``control.v1.json``."""
    return orjson.loads(resources.files(__package__).joinpath(name).read_bytes())
