"""Poison pills the pairing stage must turn into dead letters rather than crash on
(pytest -m reliability; the end-to-end test on Kafka is in test_reliability_kafka.py)."""

from __future__ import annotations

import pytest
from shadowlens.schemas.events import Output, Task, decode_event
from shadowlens.schemas.markers import TYPE_HEADER
from shadowlens.streams.codec import CodecError, check_storable
from shadowlens.streams.wire import WATERMARK, record_type

from tests.builders import event

pytestmark = pytest.mark.reliability


def nested_json(depth: int) -> bytes:
    """An extraction event whose output.json nests `depth` levels: valid for the schema."""
    raw = event("deep", task=Task.EXTRACTION, output=Output(json=[])).to_json()
    return raw.replace(b'"json":[]', b'"json":' + b"[" * depth + b"]" * depth)


def test_json_the_decoder_accepts_but_the_pairing_table_cannot_write_is_refused() -> None:
    check_storable(decode_event(nested_json(200)))
    deep = decode_event(nested_json(300))  # orjson reads 1024 levels, writes 254
    with pytest.raises(CodecError, match=r"output\.json"):
        check_storable(deep)


def test_a_null_type_header_is_no_type() -> None:
    assert record_type([(TYPE_HEADER, None), ("other", b"\xff")]) is None
    assert record_type([("x", None), (TYPE_HEADER, WATERMARK)]) == WATERMARK
