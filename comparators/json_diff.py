"""Field-level diff of two JSON documents, for extraction tasks.

Paths are JSON Pointers (RFC 6901) so analysts can query them in ClickHouse as strings.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True, slots=True)
class JsonDiff:
    missing: tuple[str, ...]  # in the primary, absent from the candidate
    extra: tuple[str, ...]  # in the candidate, absent from the primary
    changed: tuple[str, ...]  # in both, with different leaf values or types
    leaves: int  # leaf paths of the primary, the denominator of field agreement

    @property
    def field_agreement(self) -> float:
        """Share of the primary's leaf fields that the candidate reproduced exactly."""
        if self.leaves == 0:
            return 1.0 if not (self.extra or self.changed) else 0.0
        return max(0.0, 1.0 - (len(self.missing) + len(self.changed)) / self.leaves)


def _escape(key: str) -> str:
    return key.replace("~", "~0").replace("/", "~1")


def _leaves(doc: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(doc, dict):
        if not doc:
            return {prefix: {}}
        out: dict[str, Any] = {}
        for key, value in doc.items():
            out.update(_leaves(value, f"{prefix}/{_escape(str(key))}"))
        return out
    if isinstance(doc, list):
        if not doc:
            return {prefix: []}
        out = {}
        for i, value in enumerate(doc):
            out.update(_leaves(value, f"{prefix}/{i}"))
        return out
    return {prefix: doc}


def _same(a: Any, b: Any) -> bool:
    # bool is an int in Python; true != 1 in JSON
    return (type(a) is type(b) and a == b) or (
        isinstance(a, int | float)
        and isinstance(b, int | float)
        and not isinstance(a, bool)
        and not isinstance(b, bool)
        and a == b
    )


def json_diff(primary: Any, candidate: Any) -> JsonDiff:
    """Compare leaf paths: which the candidate misses, adds, or changes."""
    p, c = _leaves(primary), _leaves(candidate)
    return JsonDiff(
        missing=tuple(sorted(p.keys() - c.keys())),
        extra=tuple(sorted(c.keys() - p.keys())),
        changed=tuple(sorted(k for k in p.keys() & c.keys() if not _same(p[k], c[k]))),
        leaves=len(p),
    )
