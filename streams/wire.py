"""What the worker writes to and reads from Kafka besides the gateway events.

* Routing: the pairing partition of a request is ``murmur2(request_id) % partitions`` (the
  Java client's and aiokafka's default for a record keyed by ``request_id``). An event
  found anywhere else is re-keyed through the repartition topic, so both halves meet.
* ``shadow.pairs`` records, told apart by the ``shadowlens-type`` header:
  ``pairs`` (a JSON array of scored `PairScore`s of one experiment, keyed by it; many per
  record, up to `PAIRS_RECORD_BYTES`, because a Kafka record costs far more to move than
  its bytes), ``judgment`` and ``semantic`` (the same, for pairs that went out before
  their preference judgment or their semantic score: each again with every score that
  followed it so far, sent by the pairing task that sent it; `shadowlens.streams.later`)
  and ``watermark`` (a pairing partition's event-time progress, sent to every pairs
  partition). A task that has ended its input holds its end watermark back while such
  scores are in flight.
* ``shadow.events`` may carry an ``end-of-input`` marker (sent by `shadowlens publish
  --end-marker` to every partition): a finite replay is over, close everything.
* ``shadow.deadletter``: the original bytes as the value, unchanged, and the reason,
  detail, source and time in headers (see `dead_letter_record`).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, fields
from operator import itemgetter
from typing import Any

import orjson
from aiokafka.partitioner import murmur2
from shadowlens.comparators.aggregate import Later
from shadowlens.comparators.pairs import Outcome, PairScore
from shadowlens.schemas.events import DeadLetter
from shadowlens.schemas.markers import TYPE_HEADER

PAIRS = b"pairs"
JUDGMENT = Later.JUDGMENT.encode()
SEMANTIC = Later.SEMANTIC.encode()
LATER = {JUDGMENT: Later.JUDGMENT, SEMANTIC: Later.SEMANTIC}  # record type -> what followed
WATERMARK = b"watermark"
END_MS = 2**62  # the watermark of a partition whose input has ended

MAX_RECORD_BYTES = 16 * 1024 * 1024  # worker-written topics: a pair of two 1 MiB events fits
PAIRS_RECORD_BYTES = 256 * 1024  # a pairs record holds scores up to about this size
DLQ_KEEP_BYTES = 64 * 1024  # a `too_large` event keeps this much of its value in the DLQ

_TUPLE_FIELDS = {f.name for f in fields(PairScore) if str(f.type).startswith("tuple")}
_PAIR_FIELDS = {f.name for f in fields(PairScore)}
_in_field_order = itemgetter(*(f.name for f in fields(PairScore)))
_OUTCOMES = {str(o): o for o in Outcome}


def pairing_partition(request_id: str, partitions: int) -> int:
    """Where a request is paired: the default Kafka partitioner's choice for its id."""
    return (murmur2(request_id.encode()) & 0x7FFFFFFF) % partitions


def record_type(headers: Any) -> bytes | None:
    """The ``shadowlens-type`` header of a record (faust gives a list or a mapping); a
    null header value (any client may send one) is no type."""
    if not headers:
        return None
    items = headers.items() if isinstance(headers, dict) else headers
    for name, value in items:
        if name == TYPE_HEADER:
            return bytes(value) if value is not None else None
    return None


# --------------------------------------------------------------------------- pairs


def encode_pairs(scores: list[PairScore], limit: int = PAIRS_RECORD_BYTES) -> list[bytes]:
    """Scores as JSON arrays of at most about `limit` bytes each (at least one score)."""
    records: list[bytes] = []
    chunk: list[bytes] = []
    size = 0
    for score in scores:
        doc = orjson.dumps(score)
        if chunk and size + len(doc) > limit:
            records.append(b"[" + b",".join(chunk) + b"]")
            chunk, size = [], 0
        chunk.append(doc)
        size += len(doc) + 1
    if chunk:
        records.append(b"[" + b",".join(chunk) + b"]")
    return records


def decode_pairs(raw: bytes) -> list[PairScore]:
    return [_pair(doc) for doc in orjson.loads(raw)]


def _pair(doc: dict[str, Any]) -> PairScore:
    doc["outcome"] = _OUTCOMES[doc["outcome"]]
    for name in _TUPLE_FIELDS:
        if name in doc:
            doc[name] = tuple(doc[name])
    if doc.keys() == _PAIR_FIELDS:  # positional: keyword matching is slow for parsed keys
        return PairScore(*_in_field_order(doc))
    return PairScore(**{k: v for k, v in doc.items() if k in _PAIR_FIELDS})  # other versions


@dataclass(frozen=True, slots=True)
class Watermark:
    """Pairing partition `partition` (of `partitions`) will emit no pair older than
    `watermark_ms` any more; `END_MS` once its finite input has ended."""

    partition: int
    partitions: int
    watermark_ms: int

    def encode(self) -> bytes:
        return orjson.dumps({"p": self.partition, "n": self.partitions, "wm": self.watermark_ms})

    @classmethod
    def decode(cls, raw: bytes) -> Watermark:
        doc = orjson.loads(raw)
        return cls(int(doc["p"]), int(doc["n"]), int(doc["wm"]))

    @property
    def key(self) -> bytes:
        return f"~watermark/{self.partition}".encode()


# --------------------------------------------------------------------------- dead letters

H_REASON = "shadowlens-reason"
H_DETAIL = "shadowlens-detail"
H_SOURCE = "shadowlens-source"
H_RECEIVED = "shadowlens-received-ms"
H_REQUEST_ID = "shadowlens-request-id"
H_ORIGINAL_BYTES = "shadowlens-original-bytes"
H_SHA256 = "shadowlens-sha256"


def dead_letter_record(letter: DeadLetter) -> tuple[bytes, list[tuple[str, bytes]]]:
    """(value, headers) of a dead letter: the original bytes, untouched, plus why.

    Only a `too_large` value is cut to its first `DLQ_KEEP_BYTES` (it would not fit in a
    Kafka message either); its full size and SHA-256 travel in headers.
    """
    headers = [
        (H_REASON, letter.reason.encode()),
        (H_DETAIL, letter.detail[:2000].encode()),
        (H_SOURCE, letter.source.encode()),
        (H_RECEIVED, str(letter.received_ms).encode()),
    ]
    if letter.request_id is not None:
        headers.append((H_REQUEST_ID, letter.request_id.encode()))
    value = letter.raw
    if len(value) > DLQ_KEEP_BYTES:
        headers.append((H_ORIGINAL_BYTES, str(len(value)).encode()))
        headers.append((H_SHA256, hashlib.sha256(value).hexdigest().encode()))
        value = value[:DLQ_KEEP_BYTES]
    return value, headers


def read_dead_letter(value: bytes | None, headers: Any) -> DeadLetter:
    """A dead-letter record back as a `DeadLetter` (for sinks and tests)."""
    items = headers.items() if isinstance(headers, dict) else (headers or [])
    h = {name: bytes(v).decode("utf-8", "replace") for name, v in items}
    return DeadLetter(
        reason=h.get(H_REASON, ""),
        detail=h.get(H_DETAIL, ""),
        raw=value or b"",
        received_ms=int(h.get(H_RECEIVED, "0")),
        request_id=h.get(H_REQUEST_ID),
        source=h.get(H_SOURCE, ""),
    )
