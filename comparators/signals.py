"""LLM-specific signals of one pair, beside similarity: what a similarity score cannot see.

Similarity models score contradictions as near-identical ("compatible" vs "not compatible"
0.97), and a refusal or a cut-off answer can still look "similar" to the full answer. These
checks are cheap (regexes and set arithmetic, tens of microseconds on a 2 KB answer) and run
on every pair:

* refusal: the answer opens by declining or by saying it cannot do the task, and does not go
  on to offer a substitute ("I'm sorry, but I can't assist with that."; "As an AI, I can't
  browse the internet. I recommend visiting ..."). Sympathy ("I'm sorry to hear that ...")
  and disclaimers followed by an answer ("As an AI, I don't hold opinions, but I can share
  ...") are not refusals. A ``content_filter`` finish reason is one.
* truncation: the finish reason says the token limit cut the answer off.
* numbers: numeric tokens (integers, decimals, percentages, thousands separators) of both
  answers compared as sets (Jaccard distance); list markers ("1. ", "2) ") and digits inside
  words ("IP3") are not numbers; signs and number words ("three") are not seen.
* negation: clauses that are otherwise alike (content-word Jaccard >= 0.6) but differ in
  the parity of their negation cues. Limits: only explicit cues (not, no, never, n't,
  cannot, ...), not antonyms ("compatible"/"incompatible"), so it misses contradictions
  made with other words and a rephrased clause below the overlap threshold; it also counts
  an added negated detail as a flip ("best friends" vs "best friends and nothing more").
* JSON: validity of an extraction answer, and conformance to a JSON Schema (from the policy)
  or to the shape of the primary's JSON (keys and value types) when there is none.
* label flips: which label became which ("positive->negative"), not just "disagree".
* language: whether the candidate answered in another language than the primary
  (`shadowlens.comparators.language`; None unless both languages can be told).

All functions are pure; `pair_signals` combines them for one pair of events. What they
derive from one answer's text (its numbers, clauses, refusal) goes through a `Reader`: the
per-pair path calls the function (`call`); a batch (`comparators.pairs.score_pairs`) passes
`Readings`, so an answer in several pairs of the batch, or repeated verbatim, is read once.
"""

from __future__ import annotations

import re
from bisect import bisect_right
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from functools import lru_cache
from itertools import accumulate
from typing import Any, Protocol, TypeVar

import fastjsonschema
import orjson
from shadowlens.comparators.language import language, switched
from shadowlens.comparators.text import normalize
from shadowlens.schemas.events import Event, Task

_T = TypeVar("_T")


class Reader(Protocol):
    """How a comparator gets ``fn(*args)`` of a pure per-answer function."""

    def __call__(self, fn: Callable[..., _T], /, *args: Any) -> _T: ...


def call(fn: Callable[..., _T], /, *args: Any) -> _T:
    """The per-pair `Reader`: compute it."""
    return fn(*args)


class Readings:
    """A batch's `Reader`: each ``fn(*args)`` computed once (the functions are pure), so an
    answer compared twice (with the candidate and the replica) or repeated verbatim (labels,
    cached or deterministic answers) is read once per batch."""

    def __init__(self) -> None:
        self._memo: dict[tuple[Any, ...], Any] = {}

    def __call__(self, fn: Callable[..., _T], /, *args: Any) -> _T:
        key = (fn, *args)
        try:
            return self._memo[key]  # type: ignore[no-any-return]
        except KeyError:
            value = self._memo[key] = fn(*args)
            return value


# ---------------------------------------------------------------------------------- refusal

OPENING_CHARS = 300  # refusals say so up front; reading further only adds false positives
_CANT = r"(?:can(?:not|'t)|can not|won'?t|will not|(?:am|'m)\s+(?:unable|not able)|unable)"
_UNCOMFORTABLE = r"(?:(?:do|'m|am)\s*(?:not|n't)\s+(?:feel\s+)?comfortable)"
_APOLOGY_DECLINE = re.compile(
    # "I'm sorry, but I can't ...", "I apologize, but I do not feel comfortable ..."
    r"\b(?:sorry|apologi[sz]e)\b[^.!?\n]{0,120}?\b(?:"
    + _CANT
    + "|"
    + _UNCOMFORTABLE
    + r"|must decline|not (?:be )?(?:possible|appropriate|feasible)|inappropriate)",
    re.IGNORECASE,
)
_DIRECT_DECLINE = re.compile(
    # a sentence that starts with "I can't / won't / cannot <do something>"
    r"(?:^|[.!?]\s+)(?:(?:therefore|so|thus|unfortunately|sadly),?\s+)?I\s*(?:"
    + _CANT
    + "|"
    + _UNCOMFORTABLE
    + r"|must decline)\s+(?:to\s+)?(?:assist|help|provide|fulfill|comply|do|write|create"
    r"|generate|engage|support|recommend|answer|complete|participate|share|give|offer"
    r"|continue|produce|role-?play|pretend|make|tell|browse|access|predict)\b",
    re.IGNORECASE,
)
_AI_CANT = re.compile(
    # "As an AI (language model), I can't / don't have the ability / access ..."
    r"\bas an? (?:AI|artificial intelligence|(?:AI )?language model|text-based AI)\b"
    r"[^.!?\n]{0,60}?\bI\s*(?:"
    + _CANT
    + r"|(?:do not|don't) have (?:the )?(?:ability|access|capabilit|real-time))",
    re.IGNORECASE,
)
_GOES_ON = re.compile(
    # after declining, the answer turns to content ("However, common challenges include ...",
    # "but I can help you weigh your options"); a redirect ("However, you can find this on
    # ...", "but I suggest consulting ...") leaves it a refusal
    r"\b(?:however|but|instead|that said|nevertheless)\b,?\s+(?!(?:you|please|consider|perhaps"
    r"|feel free|we could|I(?:'d| would)? (?:suggest|recommend)"
    r"|it'?s (?:best|important|recommended|advisable))\b)",
    re.IGNORECASE,
)
_QUOTES = str.maketrans({"\u2019": "'", "\u2018": "'"})  # typographic apostrophes
# every refusal pattern needs one of these words: one cheap scan rules out most answers
_MAY_REFUSE = re.compile(
    r"can(?:not|'t| not)|won'?t|will not|unable|not able|comfortable|decline|possible"
    r"|appropriate|feasible|n't have|not have"
)
_REFUSALS = (_APOLOGY_DECLINE, _DIRECT_DECLINE, _AI_CANT)
CONTENT_FILTER = frozenset({"content_filter", "safety", "refusal"})
TRUNCATION = frozenset({"length", "max_tokens", "max_output_tokens"})


def is_refusal(text: str, finish_reason: str | None = None) -> bool:
    """Does this answer decline the task? See the module docstring for what counts."""
    if finish_reason is not None and finish_reason.lower() in CONTENT_FILTER:
        return True
    opening = text.lstrip()[:OPENING_CHARS].translate(_QUOTES)
    if _MAY_REFUSE.search(opening.lower()) is None:
        return False
    for pattern in _REFUSALS:
        match = pattern.search(opening)
        if match is not None:
            return _GOES_ON.search(opening, match.end()) is None
    return False


def is_truncated(finish_reason: str | None) -> bool | None:
    """Cut off by the token limit (OpenAI ``length``, Anthropic ``max_tokens``); None: unknown."""
    return None if finish_reason is None else finish_reason.lower() in TRUNCATION


# ---------------------------------------------------------------------------------- numbers

_LIST_MARKER = re.compile(r"\n[ \t]*\d{1,3}[.)][ \t]")  # "1. ", "2) " at a line start
_NUMBER = re.compile(r"\d(?<![A-Za-z_\d]\d)[\d,.]*%?")  # not in words: "IP3", "#FFA07A"
_THOUSANDS = re.compile(r"\d{1,3}(?:,\d{3})+(?:\.\d+)?%?")


def _canonical(token: str) -> str:
    percent = token.endswith("%")
    digits = token.rstrip("%").replace(",", "")
    if "." in digits and digits.count(".") == 1:  # 3.50 == 3.5, 3.0 == 3; "1.2.3" stays
        digits = digits.rstrip("0").rstrip(".")
    return digits + "%" if percent else digits


def numbers(text: str) -> frozenset[str]:
    """Canonical numeric tokens: "1,200" == "1200", "3.0" == "3", "5%" != "5".

    Signs, number words ("three") and units are ignored; "1,2,3" is three numbers.
    """
    out: set[str] = set()
    for raw in _NUMBER.findall(_LIST_MARKER.sub("\n", "\n" + text)):
        token = raw.rstrip(".,")
        if "," not in token or _THOUSANDS.fullmatch(token):
            out.add(_canonical(token))
        else:
            out.update(_canonical(part) for part in token.split(",") if part)
    return frozenset(out)


def number_mismatch(primary: str, candidate: str, read: Reader = call) -> float | None:
    """Jaccard distance of the two answers' number sets in [0, 1]; None if neither has any.

    0: the same numbers; 1: no number in common ("3 days" vs "5 days").
    """
    a, b = read(numbers, primary), read(numbers, candidate)
    union = len(a | b)
    return 1.0 - len(a & b) / union if union else None


# --------------------------------------------------------------------------------- negation

# leading literal "n" (the lookbehind comes after it) lets the regex engine skip ahead fast
_NEGATION = re.compile(r"n(?<![a-z']n)(?:o(?:t|ne|thing|body|where|r)?|e(?:ver|ither))(?![a-z'])")
_CONTRACTIONS = (
    ("can't", "can not"),
    ("won't", "will not"),
    ("cannot", "can not"),
    ("n't", " not"),
)
_CLAUSE_END = re.compile(r"[.!?;,] ")
_CODE_BLOCK = re.compile(r"```.*?(?:```|$)", re.DOTALL)  # code: "none" is not a negation
_WORD = re.compile(r"[a-z0-9]+(?:'[a-z]+)?")
_NEGATORS = frozenset(
    {"not", "no", "never", "none", "nothing", "nobody", "neither", "nor", "nowhere"}
)
# idioms that start with a cue but deny nothing ("not just a project", "none other than")
_IDIOMS = (
    "not just",
    "not only",
    "not merely",
    "none other",
    "no matter",
    "no doubt",
    "nothing but",
)
MIN_WORDS = 3  # shorter clauses ("No," answering a question) align with anything
ALIGN_JACCARD = 0.6


class _Side:
    """One answer, lower-cased, "n't" spelled " not", one clause per line (cut at line ends
    and after . ! ? ; ,); clauses are tokenised lazily, as alignment needs them: most never
    are. Fenced code is dropped (``None`` in code is no negation)."""

    def __init__(self, text: str) -> None:
        text = text.lower()
        if "\u2019" in text:
            text = text.replace("\u2019", "'")
        for short, long in _CONTRACTIONS:
            text = text.replace(short, long)
        if "```" in text:
            text = _CODE_BLOCK.sub("\n", text)
        self.text = text = _CLAUSE_END.sub("\n", text)
        self.clauses = text.split("\n")
        # offset just past each clause's newline: bisect maps a position to its clause
        self._ends = list(accumulate(map((1).__add__, map(len, self.clauses))))
        self._words: dict[int, tuple[frozenset[str], int]] = {}

    def words(self, i: int) -> tuple[frozenset[str], int]:
        """Content words of clause `i` (negators removed) and its count of negators."""
        if i not in self._words:
            tokens = _WORD.findall(self.clauses[i])
            cues = sum(map(_NEGATORS.__contains__, tokens))
            self._words[i] = (frozenset(tokens) - _NEGATORS, cues)
        return self._words[i]

    def negated(self) -> set[int]:
        """Clauses with a negation cue (one scan of the whole text), idioms aside."""
        text, ends = self.text, self._ends
        return {
            bisect_right(ends, m.start())
            for m in _NEGATION.finditer(text)
            if not text.startswith(_IDIOMS, m.start())
        }

    def containing(self, keys: list[str]) -> set[int]:
        """Clauses in which one of `keys` occurs (as a substring: a superset of words)."""
        found: set[int] = set()
        for key in keys:
            pos = self.text.find(key)
            while pos != -1:
                found.add(bisect_right(self._ends, pos))
                pos = self.text.find(key, pos + 1)
        return found


def _flips(side: _Side, other: _Side) -> int:
    flips = 0
    for i in side.negated():
        words, cues = side.words(i)
        if len(words) < MIN_WORDS:
            continue
        # Jaccard >= ALIGN_JACCARD leaves at most 40 % of `words` out of the other clause,
        # so it holds one of any (40 % + 1) of them: only clauses with one are tokenised
        keys = sorted(words, key=len, reverse=True)[: int(len(words) * (1 - ALIGN_JACCARD)) + 1]
        best, best_cues = 0.0, cues
        for j in other.containing(keys):
            o_words, o_cues = other.words(j)
            jac = len(words & o_words) / len(words | o_words)
            if jac > best:
                best, best_cues = jac, o_cues
        flips += best >= ALIGN_JACCARD and (best_cues - cues) % 2 == 1
    return flips


def may_negate(text: str) -> bool:
    """Could `_Side(text)` find a negated clause? False only when it cannot: the clauses'
    cues are the lower-cased text's, or made by spelling out a contraction, and nothing
    else `_Side` does (quotes, code, clause ends) makes a cue where there was none. One
    scan instead of splitting the text into clauses; over half of answers have no cue."""
    low = text.lower()
    return _NEGATION.search(low) is not None or "n't" in low or "n\u2019t" in low or "cannot" in low


def negation_mismatch(primary: str, candidate: str, read: Reader = call) -> int:
    """Clauses whose best-aligned counterpart in the other answer has opposite polarity.

    A cheap proxy for contradiction: each clause with a negation cue is aligned with the
    most similar clause of the other answer (content words, negators removed); a pair at
    Jaccard >= `ALIGN_JACCARD` whose negator counts differ in parity is a flip. Seen from
    both sides a flip would count twice: the larger side's count is returned. Without a
    cue on either side there is nothing to align.
    """
    if not (read(may_negate, primary) or read(may_negate, candidate)):
        return 0
    p, c = read(_Side, primary), read(_Side, candidate)
    return max(_flips(p, c), _flips(c, p))


# ------------------------------------------------------------------------------------- JSON

UNPARSED = object()


def parse_json(text: str | None) -> Any:
    """The JSON document in an answer's text, or `UNPARSED` when it is not valid JSON."""
    if text is None:
        return UNPARSED
    try:
        return orjson.loads(text)
    except orjson.JSONDecodeError:
        return UNPARSED


def _same_kind(value: Any, like: Any) -> bool:
    if like is None:
        return True  # null in the primary says nothing about the field's type
    if isinstance(like, bool) or isinstance(value, bool):
        return isinstance(like, bool) and isinstance(value, bool)
    if isinstance(like, int | float):
        return isinstance(value, int | float)
    return type(value) is type(like)


def conforms(doc: Any, like: Any) -> bool:
    """Does `doc` have the shape of `like`: its keys (recursively) with the same value types?

    The schema inferred from the primary's answer: extra keys are allowed (`json_diff`
    reports them), a missing key or a changed type is not; array items must each have the
    shape of one of the primary's items.
    """
    if not _same_kind(doc, like):
        return False
    if isinstance(like, dict):
        return all(k in doc and conforms(doc[k], v) for k, v in like.items())
    if isinstance(like, list) and like:
        return all(any(conforms(item, ref) for ref in like) for item in doc)
    return True


@lru_cache(maxsize=64)
def _compiled(schema_json: bytes) -> Callable[[Any], Any]:
    return fastjsonschema.compile(orjson.loads(schema_json))


def schema_ok(doc: Any, schema: Mapping[str, Any]) -> bool:
    """Does `doc` validate against a JSON Schema (compiled once per distinct schema)?"""
    validate = _compiled(orjson.dumps(schema, option=orjson.OPT_SORT_KEYS))
    try:
        validate(doc)
    except fastjsonschema.JsonSchemaValueException:
        return False
    return True


# ----------------------------------------------------------------------------------- labels

LABEL_CHARS = 64  # a label longer than this is free text, not a class: cut for storage


def label_flip(primary: str | None, candidate: str | None) -> str | None:
    """``"primary->candidate"`` (normalised labels) when they differ, else None."""
    if primary is None or candidate is None:
        return None
    p, c = normalize(primary)[:LABEL_CHARS], normalize(candidate)[:LABEL_CHARS]
    return None if p == c else f"{p}->{c}"


# ----------------------------------------------------------------------------- entry point


@dataclass(frozen=True, slots=True)
class PairSignals:
    """The signals of one pair; None where a signal does not apply to the pair's outputs."""

    primary_refusal: bool | None = None
    candidate_refusal: bool | None = None
    primary_truncated: bool | None = None
    candidate_truncated: bool | None = None
    number_mismatch: float | None = None
    negation_mismatch: int | None = None
    primary_json_valid: bool | None = None
    candidate_json_valid: bool | None = None
    json_schema_ok: bool | None = None  # the candidate's JSON against the schema
    label_flip: str | None = None
    language_changed: bool | None = None  # both languages known and different


def json_doc(event: Event) -> Any:
    """The answer's JSON: structured output, or its text parsed; `UNPARSED` if neither."""
    out = event.output
    return out.json if out.json is not None else parse_json(out.text)


def _json_signals(primary: Event, candidate: Event, schema: Mapping[str, Any] | None) -> dict:
    p_doc, c_doc = json_doc(primary), json_doc(candidate)
    c_valid = c_doc is not UNPARSED
    found: dict[str, bool] = {
        "primary_json_valid": p_doc is not UNPARSED,
        "candidate_json_valid": c_valid,
    }
    if schema is not None:
        found["json_schema_ok"] = c_valid and schema_ok(c_doc, schema)
    elif p_doc is not UNPARSED:
        found["json_schema_ok"] = c_valid and conforms(c_doc, p_doc)
    return found


def pair_signals(
    primary: Event,
    candidate: Event,
    schema: Mapping[str, Any] | None = None,
    read: Reader = call,
) -> PairSignals:
    """All signals of one pair of successful answers.

    JSON signals are for extraction tasks: `schema` is the task's JSON Schema; without one
    the candidate must have the shape of the primary's JSON (see `conforms`).
    """
    p_text, c_text = primary.output.text, candidate.output.text
    found: dict[str, Any] = {
        "primary_truncated": is_truncated(primary.finish_reason),
        "candidate_truncated": is_truncated(candidate.finish_reason),
        "label_flip": label_flip(primary.output.label, candidate.output.label),
    }
    if p_text is not None:
        found["primary_refusal"] = read(is_refusal, p_text, primary.finish_reason)
    if c_text is not None:
        found["candidate_refusal"] = read(is_refusal, c_text, candidate.finish_reason)
    if p_text is not None and c_text is not None:
        found["number_mismatch"] = number_mismatch(p_text, c_text, read)
        found["negation_mismatch"] = negation_mismatch(p_text, c_text, read)
        found["language_changed"] = switched(read(language, p_text), read(language, c_text))
    if primary.task == Task.EXTRACTION:
        found.update(_json_signals(primary, candidate, schema))
    return PairSignals(**found)
