"""Cheap text comparisons: normalisation, lexical similarity and length ratio.

These run on every pair; the embedding model only sees what they cannot settle.
"""

from __future__ import annotations

import re
import unicodedata

from rapidfuzz import fuzz

_SPACE = re.compile(r"\s+")


def normalize(text: str) -> str:
    """Case-, width- and whitespace-insensitive form, so formatting noise is not divergence."""
    return _SPACE.sub(" ", unicodedata.normalize("NFKC", text)).strip().casefold()


def lexical_similarity(a: str, b: str) -> float:
    """Token-set similarity in [0, 1]: robust to reordering, cheap enough for every pair."""
    na, nb = normalize(a), normalize(b)
    if na == nb:
        return 1.0
    return fuzz.token_set_ratio(na, nb) / 100.0


def length_ratio(candidate: str, primary: str) -> float | None:
    """Candidate length over primary length in characters; None when the primary is empty."""
    if not primary:
        return None
    return len(candidate) / len(primary)
