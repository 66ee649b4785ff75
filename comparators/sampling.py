"""Which requests a budgeted sample takes: a salted hash of the request id.

Drawing by the request id, not a random generator, makes a sample the same after a
restart, in a replay of the same events and on every worker, whatever order the pairs
arrive in, and independent of the pair's content. Each sampler has its own salt, so the
semantic and the preference samples are independent of each other.
"""

from __future__ import annotations

import hashlib


def drawn(request_id: str, p: float, salt: bytes) -> bool:
    """Whether a request is in a sample of share `p` (`salt`: at most 16 bytes)."""
    if p >= 1.0:
        return True
    digest = hashlib.blake2b(request_id.encode(), digest_size=8, person=salt).digest()
    return int.from_bytes(digest) / 2**64 < p
