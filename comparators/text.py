"""Cheap text comparisons: normalisation, lexical similarity and length ratio.

These run on every pair; the embedding model only sees what they cannot settle.
"""

from __future__ import annotations

import unicodedata

from rapidfuzz import fuzz


def normalize(text: str, *, fold: bool = True) -> str:
    """Whitespace runs collapsed to one space and ends stripped, so formatting noise is not
    divergence.

    ``fold=True`` (comparisons: exact match, labels, lexical similarity) also applies NFKC
    and casefolding. ``fold=False`` (the embedding cache key) only applies NFC: MiniLM's
    tokenizer splits on whitespace and strips accents after NFD, so texts equal under it get
    the same word pieces, whereas NFKC and casefolding ("ﬁ" -> "fi", "ß" -> "ss") could
    change them.
    """
    form = "NFKC" if fold else "NFC"
    if not unicodedata.is_normalized(form, text):  # a quick check; most texts already are
        text = unicodedata.normalize(form, text)
    text = " ".join(text.split())  # str.split() splits on the same whitespace as re's \s+
    return text.casefold() if fold else text


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
