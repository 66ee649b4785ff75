"""`shadowlens.streams.transactions` without a broker: what Faust's recovery is told (issue 6)."""

from __future__ import annotations

import asyncio

from faust.types import TP
from shadowlens.streams.task_state import task_table
from shadowlens.streams.transactions import ShadowApp


def test_recovery_is_never_told_a_changelog_was_read_before_its_last_record_is_applied() -> None:
    """Faust guesses, after two idle 5 s polls of its changelog queue, that a changelog
    ends in aborted records once the consumer's position is at the highwater, and then
    drops what it has not applied yet. The position it gets must be what recovery applied,
    not what was fetched (streams/transactions.py, point 7: seen after a kill -9)."""
    app = ShadowApp("guess-test", broker="kafka://127.0.0.1:1", processing_guarantee="exactly_once")
    table = task_table(app, "pairing", 2)
    tp = TP(table.changelog_topic_name, 1)
    recovery = app.tables.recovery
    recovery.active_highwaters[tp] = 10  # Faust's highwater: the last record's offset

    async def positions(applied: list[int]) -> list[int | None]:
        out = []
        for offset in applied:
            recovery.active_offsets[tp] = offset
            out.append(await app.consumer.position(tp))
        return out

    seen = asyncio.run(positions([-1, 5, 9, 10]))
    assert [p is not None and p >= 10 for p in seen] == [False, False, False, True]
