"""`shadowlens control resume|pause|abort|approve` and `shadowlens keys new`: operators steer
a migration with signed commands, and make the Ed25519 keys that sign them.

A command names the experiment, the epoch the operator acts on (read from the latest
control message unless `--epoch` says), a reason and a fresh id; it is signed with the
operator's key and sent to shadow.commands keyed by experiment. The worker applies it and
publishes the decision it made (with the key id and the reason) on shadow.control, or
refuses it and dead-letters it with the reason; this command waits for either and says
which (docs/operations.md).
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

import orjson
import typer
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.partitioner import murmur2
from shadowlens.cli.exit_codes import ExitCode
from shadowlens.cli.options import BootstrapOption, ConfigOption, settings_from
from shadowlens.cli.output import console, fail
from shadowlens.gateway.control import sign
from shadowlens.gateway.keys import KeyFormatError, SigningKey, generate, parse_signing_key
from shadowlens.judge.verdicts import Command
from shadowlens.streams.config import Settings
from shadowlens.streams.control import command_message
from shadowlens.streams.kafka_security import aiokafka_options
from shadowlens.streams.wire import H_DETAIL

OPERATOR_KEY_ENV = "SHADOWLENS_OPERATOR_KEY"  # the key's line itself, when --key is not given
DEFAULT_KEY_DIR = Path.home() / ".shadowlens" / "keys"  # outside any checkout
TAIL_RECORDS = 5000  # how far back the latest control message of an experiment is looked for

control = typer.Typer(
    help="Steer a migration: signed operator commands the worker applies and records.",
    no_args_is_help=True,
)
keys = typer.Typer(help="Ed25519 keys for the worker and for operators.", no_args_is_help=True)


# --------------------------------------------------------------------------- keys new


@keys.command("new")
def keys_new(
    key_id: Annotated[
        str, typer.Option("--id", help="Key id: who signs (e.g. alice, worker-2027-01).")
    ],
    out: Annotated[
        Path,
        typer.Option(help="Directory for ID.key (private, 0600) and ID.pub; not in a repo."),
    ] = DEFAULT_KEY_DIR,
    config: ConfigOption = None,
) -> None:
    """Make an Ed25519 key pair: ID.key signs, ID.pub goes to whoever verifies.

    The worker's .pub goes to every router (SHADOWLENS_CONTROL_PUBLIC_KEYS_FILE), an
    operator's .pub to the worker's allowlist (SHADOWLENS_OPERATOR_KEYS_FILE).
    """
    try:
        pair = generate(key_id)
    except KeyFormatError as exc:
        raise fail(str(exc)) from None
    private, public = out / f"{key_id}.key", out / f"{key_id}.pub"
    for path in (private, public):
        if path.exists():
            raise fail(f"{path} exists: keys are never overwritten", ExitCode.CONFIG)
    out.mkdir(parents=True, exist_ok=True)
    fd = os.open(private, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(pair.private_line() + "\n")
    public.write_text(pair.public_line() + "\n")
    console.print(f"private key: {private} (keep it secret)\npublic key:  {public}")
    console.print(pair.public_line(), highlight=False, soft_wrap=True)


# --------------------------------------------------------------------------- control


@dataclass(frozen=True, slots=True)
class Answer:
    """What the worker did with a command: its decision, or the refusal's reason."""

    applied: bool
    text: str


def _operator_key(path: Path | None) -> SigningKey:
    text = path.read_text() if path is not None else os.environ.get(OPERATOR_KEY_ENV, "")
    if not text.strip():
        raise fail(f"no operator key: --key FILE or {OPERATOR_KEY_ENV}", ExitCode.CONFIG)
    try:
        return parse_signing_key(text)
    except KeyFormatError as exc:
        raise fail(f"operator key: {exc}", ExitCode.CONFIG) from None


async def _partitions(consumer: AIOKafkaConsumer, topic: str) -> list[TopicPartition]:
    partitions = consumer.partitions_for_topic(topic)
    if not partitions:
        await consumer._client.force_metadata_update()
        partitions = consumer.partitions_for_topic(topic)
    if not partitions:
        raise fail(f"no topic {topic}: is the worker running?", ExitCode.UNAVAILABLE)
    return [TopicPartition(topic, p) for p in sorted(partitions)]


async def _control_partition(
    consumer: AIOKafkaConsumer, s: Settings, experiment: str
) -> TopicPartition:
    """Where the worker publishes `experiment` (keyed by it, the default partitioner)."""
    tps = await _partitions(consumer, s.topic_control)
    return tps[(murmur2(experiment.encode()) & 0x7FFFFFFF) % len(tps)]


def _json(raw: bytes | None) -> dict[str, Any]:
    try:
        doc = orjson.loads(raw or b"")
    except orjson.JSONDecodeError:
        return {}
    return doc if isinstance(doc, dict) else {}


async def _latest_epoch(s: Settings, experiment: str, wait_s: float) -> int | None:
    """The epoch of the experiment's latest control message (the topic's tail), waiting up
    to `wait_s` for a first one (a worker that has not judged a window yet)."""
    consumer = AIOKafkaConsumer(
        bootstrap_servers=s.kafka_bootstrap, enable_auto_commit=False, **aiokafka_options(s)
    )
    await consumer.start()
    try:
        tp = await _control_partition(consumer, s, experiment)
        consumer.assign([tp])
        begin = (await consumer.beginning_offsets([tp]))[tp]
        end = (await consumer.end_offsets([tp]))[tp]
        consumer.seek(tp, max(begin, end - TAIL_RECORDS))
        epoch = None
        deadline = time.monotonic() + wait_s
        while epoch is None or await consumer.position(tp) < end:
            if epoch is None and await consumer.position(tp) >= end:
                if time.monotonic() > deadline:
                    return None
                end = (await consumer.end_offsets([tp]))[tp]
            for record in (await consumer.getmany(tp, timeout_ms=500)).get(tp, []):
                message = _json(record.value)
                if message.get("experiment") == experiment and "epoch" in message:
                    epoch = int(message["epoch"])
        return epoch
    finally:
        await consumer.stop()


async def _send_and_wait(
    s: Settings, experiment: str, raw: bytes, command_id: str, wait_s: float
) -> Answer | None:
    """Send the command; then read the control and dead-letter topics from where they
    ended before it, for its decision or its refusal (None: no answer in time)."""
    options = aiokafka_options(s)
    admin = AIOKafkaAdminClient(bootstrap_servers=s.kafka_bootstrap, **options)
    await admin.start()
    try:
        if s.topic_commands not in await admin.list_topics():
            raise fail(f"no topic {s.topic_commands}: start the worker first", ExitCode.UNAVAILABLE)
    finally:
        await admin.close()
    consumer = AIOKafkaConsumer(
        bootstrap_servers=s.kafka_bootstrap, enable_auto_commit=False, **options
    )
    producer = AIOKafkaProducer(bootstrap_servers=s.kafka_bootstrap, acks="all", **options)
    await consumer.start()
    await producer.start()
    try:
        tps = [await _control_partition(consumer, s, experiment)]
        tps += await _partitions(consumer, s.topic_deadletter)
        consumer.assign(tps)
        for tp, end in (await consumer.end_offsets(tps)).items():
            consumer.seek(tp, end)
        await producer.send_and_wait(s.topic_commands, raw, key=experiment.encode())
        deadline = time.monotonic() + wait_s
        while time.monotonic() < deadline:
            for records in (await consumer.getmany(timeout_ms=250)).values():
                for record in records:
                    answer = _answer(record, raw, command_id, s.topic_deadletter)
                    if answer is not None:
                        return answer
        return None
    finally:
        await producer.stop()
        await consumer.stop()


def _answer(record: Any, raw: bytes, command_id: str, deadletter: str) -> Answer | None:
    if record.topic == deadletter:
        if record.value != raw:  # the dead letter keeps the command's bytes as sent
            return None
        detail = dict(record.headers or []).get(H_DETAIL, b"").decode()
        return Answer(False, detail)
    message = _json(record.value)
    operator = message.get("operator") or {}
    if message.get("type") == "decision" and operator.get("command_id") == command_id:
        where = f"epoch {message['epoch']}, {message['traffic_percent']:g} %"
        return Answer(
            True, f"{message['action']} ({where}, {message['phase']}): {message['reason']}"
        )
    return None


def _command(command: Command) -> Callable[..., None]:
    """The typer command of one operator command (they share every option)."""

    def run(
        ctx: typer.Context,
        experiment: Annotated[str, typer.Argument(help="The experiment to steer.")],
        reason: Annotated[str, typer.Option(help="Why, in words: recorded with the decision.")],
        key: Annotated[
            Path | None,
            typer.Option(
                exists=True,
                dir_okay=False,
                help=f"The operator's private key file (`shadowlens keys new`); else "
                f"{OPERATOR_KEY_ENV} holds the key.",
            ),
        ] = None,
        epoch: Annotated[
            int | None,
            typer.Option(min=0, help="The epoch acted on (default: the latest on shadow.control)."),
        ] = None,
        wait: Annotated[
            float, typer.Option(min=0.0, help="Seconds to wait for the worker's answer; 0: none.")
        ] = 30.0,
        bootstrap: BootstrapOption = None,
        config: ConfigOption = None,
    ) -> None:
        settings = settings_from(ctx, kafka_bootstrap=bootstrap)
        operator = _operator_key(key)
        if not reason.strip():
            raise fail("--reason must say why")
        if epoch is None:
            epoch = asyncio.run(_latest_epoch(settings, experiment, wait))
            if epoch is None:
                raise fail(
                    f"no control message for {experiment!r} on {settings.topic_control}: is it "
                    "judged yet? (or pass --epoch)",
                    ExitCode.UNAVAILABLE,
                )
        now_ms = time.time_ns() // 1_000_000
        message = sign(command_message(experiment, command, epoch, reason, now_ms), operator)
        raw = orjson.dumps(message)
        answer = asyncio.run(_send_and_wait(settings, experiment, raw, message["command_id"], wait))
        sent = f"{command} {experiment} (epoch {epoch}) signed by {operator.key_id}"
        if answer is None:
            if wait:
                raise fail(f"sent {sent}; no answer within {wait:g} s: is the worker running?",
                           ExitCode.UNAVAILABLE)  # fmt: skip
            console.print(f"sent {sent}", highlight=False)
        elif answer.applied:
            console.print(f"applied {sent}: {answer.text}", highlight=False, soft_wrap=True)
        else:
            raise fail(f"refused {sent}: {answer.text}", ExitCode.REFUSED)

    run.__doc__ = _HELP[command]
    run.__name__ = str(command)
    return run


_HELP = {
    Command.RESUME: "Resume a rolled-back or paused migration: the judge walks the ramp again.",
    Command.PAUSE: "Pause a migration: no promotion until resume (regressions still roll back).",
    Command.ABORT: "Abort a migration: the candidate gets 0 %, for good.",
    Command.APPROVE: "Approve the step the judge proposed (policy ramp.approval).",
}

for _c in Command:
    control.command(str(_c))(_command(_c))
