"""Which language an answer is written in, cheaply: enough to see a candidate switch language.

A judge can prefer an answer in another language than the user wrote in (or one that drifts
into it); the preference guard (`shadowlens.judge.preference`) counts such switches. Two
steps over the first `READ_CHARS` characters:

1. the dominant script of the letters (Latin, Cyrillic, Greek, Arabic, Hebrew, Devanagari,
   Thai, Hangul, kana, Han): a different script is a different language;
2. within Latin script, a vote of function words ("the", "und", "le", "el", ...) among
   English, German, French, Spanish, Italian, Portuguese and Dutch.

Undetermined (None) when there are fewer than `MIN_LETTERS` letters, or Latin text has too
few function words to tell (code, lists of names, numbers; ASCII text is not counted
for `MIN_LETTERS`: its function words must make `MIN_VOTES`): a switch is only claimed
between two determined languages. Pure, no model: ~15 us for an answer in English.
"""

from __future__ import annotations

import re
from bisect import bisect_right
from collections import Counter

READ_CHARS = 400  # the opening says which language an answer is in
MIN_LETTERS = 20
MIN_VOTES = 3  # function words the winning Latin language needs ...
LEAD = 1.5  # ... and how many times the runner-up's

# (first code point, script) of the non-Latin scripts told apart, sorted; a code point maps
# to the last start at or below it, and to None past the block's end (`_ENDS`).
_BLOCKS = (
    (0x0370, 0x03FF, "el"),  # Greek
    (0x0400, 0x052F, "cyrillic"),
    (0x0590, 0x05FF, "he"),
    (0x0600, 0x06FF, "ar"),
    (0x0900, 0x097F, "hi"),  # Devanagari
    (0x0E00, 0x0E7F, "th"),
    (0x1100, 0x11FF, "ko"),  # Hangul jamo
    (0x3040, 0x30FF, "ja"),  # hiragana and katakana
    (0x4E00, 0x9FFF, "han"),
    (0xAC00, 0xD7AF, "ko"),  # Hangul syllables
)
_STARTS = [start for start, _, _ in _BLOCKS]

_FUNCTION_WORDS = {
    "en": "the and is are of to in that it with for this you be on not have as can was",
    "de": "der die das und ist nicht ein eine zu mit den von sich auch ich sie es für auf wird",
    "fr": "le la les et est des une un du que pour dans pas qui sur avec sont vous ce il",
    "es": "el la los las es de que en un una por para con se del su al lo está muy pero",
    "it": "il la di che è un una per non sono con del della gli le si nel anche questo",
    "pt": "os as é de que um uma para com não do da em se no na por são também isso",
    "nl": "de het een en is van dat niet op te zijn met voor die er ook aan wordt maar ik",
}
_VOTES: dict[str, tuple[str, ...]] = {}
for _lang, _words in _FUNCTION_WORDS.items():
    for _word in _words.split():
        _VOTES[_word] = (*_VOTES.get(_word, ()), _lang)
_WORD = re.compile(r"[^\W\d_]+")


def _script(ch: str) -> str | None:
    """The script of a non-ASCII letter among `_BLOCKS` ("latin" for Latin-1 and Latin
    Extended letters), None for anything else."""
    cp = ord(ch)
    if cp < 0x0250:
        return "latin"
    i = bisect_right(_STARTS, cp) - 1
    if i < 0:
        return None
    start, end, script = _BLOCKS[i]
    return script if start <= cp <= end else None


def _latin_language(text: str) -> str | None:
    words = Counter(_WORD.findall(text.lower()))
    votes: Counter[str] = Counter()
    for word in words.keys() & _VOTES.keys():
        for lang in _VOTES[word]:
            votes[lang] += words[word]
    ranked = votes.most_common(2)
    if not ranked or ranked[0][1] < MIN_VOTES:
        return None
    runner_up = ranked[1][1] if len(ranked) > 1 else 0
    return ranked[0][0] if ranked[0][1] >= LEAD * runner_up else None


def language(text: str) -> str | None:
    """The answer's language (ISO 639-1 code, or a script name where the script alone is
    known: "cyrillic", "han"), or None when it cannot be told."""
    head = text[:READ_CHARS]
    if head.isascii():  # the common case: Latin letters only, the words tell
        return _latin_language(head)
    scripts: Counter[str] = Counter()
    for ch in head:
        if ch.isascii():
            if ch.isalpha():
                scripts["latin"] += 1
        elif ch.isalpha():
            script = _script(ch)
            if script is not None:
                scripts[script] += 1
    if scripts.total() < MIN_LETTERS:
        return None
    if scripts["ja"]:  # Japanese mixes kana with Han
        scripts["ja"] += scripts.pop("han", 0)
    dominant = scripts.most_common(1)[0][0]
    return _latin_language(head) if dominant == "latin" else dominant


def switched(primary: str | None, candidate: str | None) -> bool | None:
    """Whether two answers' languages (`language`) differ; None unless both are known."""
    return None if primary is None or candidate is None else primary != candidate


def language_changed(primary: str, candidate: str) -> bool | None:
    """Whether the candidate answered in another language than the primary; None unless
    both languages are determined."""
    return switched(language(primary), language(candidate))
