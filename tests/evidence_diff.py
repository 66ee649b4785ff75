"""Compare the judge's evidence of two runs over the same events: everything exactly, floats
to 1e-9 relative. Float sums made in another order differ in their last bits (moments,
sketch sums); nothing else may differ (issue 14). A number printed in a text (a decision's
reason) may therefore round the other way in its last printed digit, and nothing more."""

from __future__ import annotations

import math
import re
from typing import Any

REL_TOL = 1e-9
ABS_TOL = 1e-12
_NUMBER = re.compile(r"\d+(?:\.\d+)?")


def differences(a: Any, b: Any, path: str = "") -> list[str]:
    """Where JSON-like documents `a` and `b` differ, one line per difference."""
    if isinstance(a, float) or isinstance(b, float):
        numbers = all(isinstance(x, int | float) and not isinstance(x, bool) for x in (a, b))
        if numbers and math.isclose(a, b, rel_tol=REL_TOL, abs_tol=ABS_TOL):
            return []
        return [f"{path}: {a!r} != {b!r}"]
    if isinstance(a, dict) and isinstance(b, dict):
        out = [f"{path}/{k}: only in one" for k in a.keys() ^ b.keys()]
        for k in sorted(a.keys() & b.keys(), key=str):
            out += differences(a[k], b[k], f"{path}/{k}")
        return out
    if isinstance(a, list | tuple) and isinstance(b, list | tuple):
        if len(a) != len(b):
            return [f"{path}: {len(a)} items != {len(b)}"]
        pairs = enumerate(zip(a, b, strict=True))
        return [d for i, (x, y) in pairs for d in differences(x, y, f"{path}[{i}]")]
    if isinstance(a, str) and isinstance(b, str) and _same_text(a, b):
        return []
    return [] if a == b else [f"{path}: {a!r} != {b!r}"]


def _same_text(a: str, b: str) -> bool:
    """Equal but for printed decimals one unit apart in their last digit (integers, such
    as counts, must be equal)."""
    if _NUMBER.split(a) != _NUMBER.split(b):
        return False
    for x, y in zip(_NUMBER.findall(a), _NUMBER.findall(b), strict=True):
        decimals = len(x.partition(".")[2])
        if x != y and (not decimals or decimals != len(y.partition(".")[2])):
            return False
        if abs(float(x) - float(y)) > 10.0**-decimals * (1 + REL_TOL):
            return False
    return True
