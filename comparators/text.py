"""Cheap text comparisons: normalisation, lexical similarity and length ratio.

These run on every pair; the embedding model only sees what they cannot settle.
"""

from __future__ import annotations

import unicodedata
from collections.abc import Set

from rapidfuzz.distance import Indel


def words(text: str) -> list[str]:
    """The words of `normalize(text)` (NFKC, casefolded, split on whitespace), which is
    ``" ".join(words(text))``: texts are normalised equal when their word lists are, and
    the lexical similarity reads the words, so each answer is split once."""
    if not unicodedata.is_normalized("NFKC", text):  # a quick check; most texts already are
        text = unicodedata.normalize("NFKC", text)
    # casefolding maps no character to or from whitespace (checked for every code point
    # in tests/test_scoring_equivalence.py), so folding before splitting gives the same words
    return text.casefold().split()


def normalize(text: str, *, fold: bool = True) -> str:
    """Whitespace runs collapsed to one space and ends stripped, so formatting noise is not
    divergence.

    ``fold=True`` (comparisons: exact match, labels, lexical similarity) also applies NFKC
    and casefolding. ``fold=False`` (the embedding cache key) only applies NFC: MiniLM's
    tokenizer splits on whitespace and strips accents after NFD, so texts equal under it get
    the same word pieces, whereas NFKC and casefolding ("ﬁ" -> "fi", "ß" -> "ss") could
    change them.
    """
    if fold:
        return " ".join(words(text))
    if not unicodedata.is_normalized("NFC", text):
        text = unicodedata.normalize("NFC", text)
    return " ".join(text.split())  # str.split() splits on the same whitespace as re's \s+


def token_set_similarity(a: Set[str], b: Set[str]) -> float:
    """RapidFuzz's ``fuzz.token_set_ratio / 100`` of two texts, from their sets of words.

    The same arithmetic on the same numbers (the Indel distance of the sorted words each
    side has alone, and the lengths of the joined shared words), so the same float; it
    only skips RapidFuzz's own splitting and sorting of every word, since `words` has
    split them already. Robust to reordering and repetition.
    """
    if not a or not b:
        return 0.0
    shared, only_a, only_b = a & b, a - b, b - a
    if shared and not (only_a and only_b):  # one text's words hold the other's
        return 1.0
    joined_a, joined_b = " ".join(sorted(only_a)), " ".join(sorted(only_b))
    shared_len = sum(map(len, shared)) + len(shared) - 1 if shared else 0
    sep = 1 if shared else 0
    with_a, with_b = shared_len + sep + len(joined_a), shared_len + sep + len(joined_b)
    # `100 - 100 * dist / lensum`, as RapidFuzz computes it, then / 100 as callers did
    best = 100 - 100 * Indel.distance(joined_a, joined_b) / (with_a + with_b)
    if shared:
        best = max(
            best,
            100 - 100 * (sep + len(joined_a)) / (shared_len + with_a),
            100 - 100 * (sep + len(joined_b)) / (shared_len + with_b),
        )
    return best / 100


def lexical_similarity(a: str, b: str) -> float:
    """Token-set similarity in [0, 1]: robust to reordering, cheap enough for every pair."""
    wa, wb = words(a), words(b)
    return 1.0 if wa == wb else token_set_similarity(set(wa), set(wb))


def length_ratio(candidate: str, primary: str) -> float | None:
    """Candidate length over primary length in characters; None when the primary is empty."""
    if not primary:
        return None
    return len(candidate) / len(primary)
