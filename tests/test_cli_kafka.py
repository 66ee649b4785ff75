"""`shadowlens publish` against the real broker, configured from a file: the compose
replayer's `--rebase-time now`, and the progress bar counting records."""

from __future__ import annotations

import time

import orjson
import pytest
from shadowlens.cli.app import app
from typer.testing import CliRunner

from tests.stream_harness import read_topic

pytestmark = pytest.mark.kafka
PARTITIONS = 2


def test_publish_from_a_config_file_rebased_to_now(kafka_bootstrap, topic_factory, tmp_path):
    events, *others = topic_factory.many(6, PARTITIONS, prefix="cli-publish")
    keys = ("topic_repartition", "topic_pairs", "topic_deadletter", "topic_control")
    keys += ("topic_commands",)
    config = tmp_path / "shadowlens.toml"
    config.write_text(
        f'[worker]\nkafka_bootstrap = "{kafka_bootstrap}"\ntopic_events = "{events}"\n'
        + "".join(f'{k} = "{v}"\n' for k, v in zip(keys, others, strict=True))
        + '[publish]\nrequests = 50\nreplica_share = 0\nrebase_time = "now"\n'
    )
    before = int(time.time() * 1000)
    tty = {"TTY_COMPATIBLE": "1", "TTY_INTERACTIVE": "1", "SHADOWLENS_KAFKA_BOOTSTRAP": ""}
    out = CliRunner().invoke(app, ["publish", "--config", str(config)], env=tty)
    assert out.exit_code == 0, out.output
    assert f"published 100 events to {events}" in out.stdout
    assert "publish" in out.stderr and "100/100" in out.stderr and "records" in out.stderr
    docs = [orjson.loads(r.value) for r in read_topic(kafka_bootstrap, events)]
    assert len(docs) == 100
    first = min(d["start_time_ms"] for d in docs)
    assert before <= first <= int(time.time() * 1000)  # the 2023 sample, moved to now
