"""JSON codecs for the worker's table values: what goes into the changelog topics.

Faust tables persist by sending each assigned value to a changelog topic; ours hold
`bytes` produced here (orjson), never pickles, so a changelog can be read by anything and
a poisoned record cannot run code in a worker.

* `Pending` (the pairing state of one request): its events in their wire form
  (`Event.to_dict`), decoded back through `shadowlens.schemas.events.decode_event`.
* Window and judge state (`WindowState`, `ExperimentState` and what they hold): a
  dataclass is ``{"__": "ClassName", field: value, ...}`` for a closed registry of
  classes; tuples and the judge's enums are restored from the field annotations;
  DDSketches keep their bins. A field a value lacks (written by an older version) takes
  its default: a judge state from before the lifecycle reads as ramping.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import fields, is_dataclass
from typing import Any

import orjson
from ddsketch import DDSketch
from shadowlens.comparators.aggregate import (
    Aggregate,
    LengthBins,
    Moments,
    PairedCounts,
    PairedMoments,
)
from shadowlens.judge.decide import ExperimentState
from shadowlens.judge.evidence_state import SegmentEvidence
from shadowlens.judge.lifecycle import Lifecycle
from shadowlens.judge.preference import PreferenceEvidence
from shadowlens.judge.ramp import RampState
from shadowlens.judge.standing import Segments
from shadowlens.judge.stats_means import BoundedMeanCS, GaussianMixtureCS
from shadowlens.judge.verdicts import Action, Blocker, Metric, Phase, Proposal
from shadowlens.pipeline.pairing import Pending
from shadowlens.pipeline.windows import WindowState
from shadowlens.schemas.events import Event, decode_event

_RECOVERY_MAX_BYTES = 1 << 31  # an event already accepted once is not re-checked for size

STATE_TYPES: dict[str, type] = {
    cls.__name__: cls
    for cls in (
        WindowState,
        Aggregate,
        Moments,
        PairedCounts,
        PairedMoments,
        LengthBins,
        ExperimentState,
        SegmentEvidence,
        PreferenceEvidence,
        BoundedMeanCS,
        GaussianMixtureCS,
        RampState,
        Lifecycle,
        Blocker,
        Proposal,
        Segments,
    )
}
ENUM_TYPES: dict[str, type] = {cls.__name__: cls for cls in (Phase, Metric, Action)}


class CodecError(ValueError):
    """A changelog value this version cannot read."""


# --------------------------------------------------------------------------- pairing


def check_storable(event: Event) -> None:
    """Raise `CodecError` for a valid event the pairing table could not hold: orjson reads
    JSON nested up to 1024 levels (so `decode_event` accepts it in ``output.json``) but
    writes at most 254, and the changelog record would fail after the batch was made."""
    if event.output.json is not None:
        try:
            orjson.dumps(event.output.json)
        except orjson.JSONEncodeError as exc:
            raise CodecError(f"output.json cannot be stored: {exc}") from None


def encode_pending(pending: Pending) -> bytes:
    return orjson.dumps(
        {
            "s": pending.start_time_ms,
            "e": [e.to_dict() for e in pending.events],
            "p": pending.paired_arms,
            "c": pending.closed,
            "a": pending.seen_arms,
        }
    )


def decode_pending(raw: bytes) -> Pending:
    doc = orjson.loads(raw)
    events = tuple(decode_event(orjson.dumps(e), max_bytes=_RECOVERY_MAX_BYTES) for e in doc["e"])
    return Pending(
        start_time_ms=int(doc["s"]),
        events=events,
        paired_arms=tuple(doc["p"]),
        closed=bool(doc["c"]),
        seen_arms=tuple(doc.get("a", ())),
    )


# --------------------------------------------------------------------------- windows, judge


def encode_state(obj: Any) -> bytes:
    """A registered dataclass (and everything inside it) as JSON bytes."""
    return orjson.dumps(_to_doc(obj))


def decode_state(raw: bytes) -> Any:
    return _from_doc(orjson.loads(raw), "")


def _to_doc(obj: Any) -> Any:
    if isinstance(obj, DDSketch):
        return _sketch_doc(obj)
    if is_dataclass(obj) and not isinstance(obj, type):
        name = type(obj).__name__
        if STATE_TYPES.get(name) is not type(obj):
            raise CodecError(f"{name} is not a registered state type")
        doc = {"__": name}
        doc.update({f.name: _to_doc(getattr(obj, f.name)) for f in fields(obj)})
        return doc
    if isinstance(obj, Mapping):
        return {"__": "map", "v": {str(k): _to_doc(v) for k, v in obj.items()}}
    if isinstance(obj, (list, tuple)):
        return [_to_doc(x) for x in obj]
    if isinstance(obj, float) and not math.isfinite(obj):
        return {"__": "float", "v": repr(obj)}
    return obj


def _from_doc(doc: Any, hint: str) -> Any:
    if isinstance(doc, list):
        items = [_from_doc(x, "") for x in doc]
        if hint.startswith("tuple"):
            return tuple(items)
        if hint.startswith("list[tuple"):
            return [tuple(x) for x in items]
        return items
    if not isinstance(doc, dict):
        return ENUM_TYPES[hint](doc) if hint in ENUM_TYPES else doc
    kind = doc.get("__")
    if kind == "map":
        return {k: _from_doc(v, "") for k, v in doc["v"].items()}
    if kind == "float":
        return float(doc["v"])
    if kind == "DDSketch":
        return _sketch_from(doc)
    cls = STATE_TYPES.get(str(kind))
    if cls is None:
        raise CodecError(f"unknown state type {kind!r} in changelog value")
    hints = {f.name: str(f.type) for f in fields(cls)}
    kwargs = {k: _from_doc(v, hints[k]) for k, v in doc.items() if k in hints}
    return cls(**kwargs)


def _sketch_doc(sketch: DDSketch) -> dict[str, Any]:
    def bins(store: Any) -> dict[str, float]:
        if not store.count:
            return {}
        return {str(store.offset + i): c for i, c in enumerate(store.bins) if c}

    doc: dict[str, Any] = {
        "__": "DDSketch",
        "ra": sketch._relative_accuracy,
        "pos": bins(sketch._store),
        "neg": bins(sketch._negative_store),
        "zero": sketch._zero_count,
        "count": sketch._count,
        "sum": sketch._sum,
    }
    if sketch._count:
        doc["min"], doc["max"] = sketch._min, sketch._max
    return doc


def _sketch_from(doc: dict[str, Any]) -> DDSketch:
    sketch = DDSketch(relative_accuracy=doc["ra"])
    for key, count in doc["pos"].items():
        sketch._store.add(int(key), count)
    for key, count in doc["neg"].items():
        sketch._negative_store.add(int(key), count)
    sketch._zero_count = doc["zero"]
    sketch._count = doc["count"]
    sketch._sum = doc["sum"]
    if "min" in doc:
        sketch._min, sketch._max = doc["min"], doc["max"]
    return sketch
