"""Records on the events topic that are not events: the header that types them and the
end-of-input marker a finite replay sends last. Publishers (`shadowlens publish`) and the
worker's pairing stage both speak it, so it lives with the other contracts."""

from __future__ import annotations

import orjson

TYPE_HEADER = "shadowlens-type"
END_OF_INPUT = b"end-of-input"


def end_of_input_record() -> tuple[bytes, list[tuple[str, bytes]]]:
    """Value and headers of the end-of-input marker a finite replay sends last."""
    return orjson.dumps({"marker": "end-of-input"}), [(TYPE_HEADER, END_OF_INPUT)]
