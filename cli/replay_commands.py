"""`shadowlens replay` and `shadowlens publish`: the same traffic (cli/traffic_options.py),
judged in-process or published to Kafka for the worker (docs/streaming.md)."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Annotated

import typer
from shadowlens.cli.exit_codes import ExitCode
from shadowlens.cli.options import (
    BootstrapOption,
    ConfigOption,
    DsnOption,
    FailOnRollbackOption,
    PolicyOption,
    ProgressOption,
    open_store,
    policy_from,
    settings_from,
)
from shadowlens.cli.output import console, err, fail
from shadowlens.cli.traffic_options import TrafficOptions, with_traffic_options
from shadowlens.comparators.pairs import PairScore
from shadowlens.job.pipeline import Enricher
from shadowlens.store.dsn import DEFAULT_DSN
from shadowlens.streams.config import redact_dsn
from shadowlens.streams.preference_stage import DEFAULT_JUDGE_DATA


def _chain(*steps: Enricher | None) -> Enricher | None:
    """The enrich steps that are on, run one after the other (semantic, then the judge)."""
    on = [step for step in steps if step is not None]
    if not on:
        return None

    def run(scores: list[PairScore]) -> list[PairScore]:
        for step in on:
            scores = step(scores)
        return scores

    return run


@with_traffic_options
def replay(
    traffic: TrafficOptions,
    export: Annotated[
        Path | None, typer.Option(help="Also write the payloads to this JSONL file.")
    ] = None,
    store: Annotated[bool, typer.Option(help="Write pairs, windows, decisions.")] = True,
    redact: Annotated[
        bool,
        typer.Option(
            envvar="SHADOWLENS_REDACT",
            help="Store hashes and lengths instead of bodies (pairs and dead letters).",
        ),
    ] = False,
    semantic: Annotated[
        str,
        typer.Option(help="Semantic similarity of text pairs: off, torch or onnx."),
    ] = "off",
    judge: Annotated[
        str,
        typer.Option(
            help="Pairwise preference judge of the candidate's text answers: off, recorded "
            "(AlpacaEval annotations from --judge-data) or litellm:MODEL (any "
            "OpenAI-compatible chat model; docs/preference.md)."
        ),
    ] = "off",
    judge_data: Annotated[
        Path,
        typer.Option(
            file_okay=False, help="Recorded judgments (AlpacaEval annotation *.json files)."
        ),
    ] = DEFAULT_JUDGE_DATA,
    judge_api_base: Annotated[
        str | None,
        typer.Option(
            envvar="SHADOWLENS_JUDGE_API_BASE",
            help="Endpoint of the litellm judge (default: its provider's).",
        ),
    ] = None,
    judge_api_key: Annotated[
        str | None,
        typer.Option(
            envvar="SHADOWLENS_JUDGE_API_KEY",
            show_default=False,
            help="API key of the litellm judge (default: its provider's variable).",
        ),
    ] = None,
    allow_self_judge: Annotated[
        bool,
        typer.Option(help="Let the judge model be one of the compared models."),
    ] = False,
    dsn: DsnOption = DEFAULT_DSN,
    policy_path: PolicyOption = None,
    progress: ProgressOption = True,
    fail_on_rollback: FailOnRollbackOption = False,
    stability_ms: Annotated[
        int,
        typer.Option(
            min=0,
            help="Stability period at 100 % before the old deployment may be decommissioned "
            "(policy ramp.stability_ms, 30 days in production; a replay is short).",
        ),
    ] = 600_000,
    config: ConfigOption = None,
) -> None:
    """Replay traffic through the whole job and print per-segment figures and decisions.

    With no flags: 3,000 requests of gpt4_0613 (primary) against Meta-Llama-3-70B-Instruct
    (candidate) from the shipped AlpacaEval sample at Azure trace arrival times, written to
    the embedded ClickHouse store.
    """
    from shadowlens.cli.progress import progress_bar
    from shadowlens.comparators.semantic import SemanticBackendUnavailable
    from shadowlens.judge.verdicts import Action
    from shadowlens.replay.jsonl import write_jsonl
    from shadowlens.replay.run import run_replay
    from shadowlens.report.summary import print_summary
    from shadowlens.streams.judge_litellm import JudgeUnavailable
    from shadowlens.streams.preference_stage import JudgeSettings, PreferenceStep
    from shadowlens.streams.semantic_stage import make_cascade

    policy = policy_from(policy_path)
    policy = replace(policy, ramp=replace(policy.ramp, stability_ms=stability_ms))
    try:
        cascade = make_cascade(semantic, policy)
        judging = JudgeSettings(
            judge, judge_data, judge_api_base, judge_api_key, allow_self=allow_self_judge
        )
        if traffic.events is None:  # built traffic: the arms' models are known up front
            judging.refuse_self_judging((traffic.primary, traffic.candidate))
        judge_step = PreferenceStep.build(judging, policy)
    except (ValueError, SemanticBackendUnavailable, JudgeUnavailable) as exc:
        raise fail(str(exc)) from None
    enrich = _chain(cascade, judge_step)
    payloads = traffic.payloads()
    if export is not None:
        write_jsonl(export, (raw for raw, _ in payloads))
    ch = open_store(dsn) if store else None
    try:
        if ch is not None:
            ch.migrate()
        with progress_bar("replay", "events", enabled=progress) as bar:
            task = bar.add_task("replay", total=len(payloads))
            result = run_replay(
                payloads,
                policy,
                ch,
                on_progress=lambda done: bar.update(task, completed=done),
                redact=redact,
                enrich=enrich,
            )
    finally:
        if ch is not None:
            ch.close()
    print_summary(console, result.memory.scores, result.memory.made, result.counts)
    letters = result.memory.letters
    if letters:
        console.print(f"[yellow]{len(letters)} dead letters[/] (kept with their bytes):")
        for letter in letters[:20]:
            console.print(
                f"  {letter.source}: {letter.reason}: {letter.detail[:120]}", markup=False
            )
    where = f" -> {redact_dsn(dsn)}: " + ", ".join(f"{k}={v}" for k, v in result.written.items())
    console.print(
        f"{len(payloads)} events in {result.seconds:.1f} s" + (where if store else ""),
        highlight=False,
    )
    rollbacks = [d for d in result.memory.made if d.action == Action.ROLLBACK]
    if fail_on_rollback and rollbacks:
        first = rollbacks[0].reason.splitlines()[0]
        raise fail(f"the judge rolled back {len(rollbacks)} time(s), first: {first}",
                   ExitCode.ROLLBACK)  # fmt: skip


@with_traffic_options
def publish(
    ctx: typer.Context,
    bootstrap: BootstrapOption = None,
    topic: Annotated[
        str | None, typer.Option(envvar="SHADOWLENS_TOPIC_EVENTS", help="Events topic.")
    ] = None,
    speed: Annotated[
        float,
        typer.Option(min=0.0, help="Pace: 1 = real time, 10 = ten times faster, 0 = at once."),
    ] = 0.0,
    end_marker: Annotated[
        bool,
        typer.Option(
            help="Finish with an end-of-input marker per partition, so the worker closes "
            "every request and window. Never on a topic live gateways write to."
        ),
    ] = False,
    misroute_share: Annotated[
        float,
        typer.Option(
            min=0.0, max=1.0, help="Share of events published under a wrong key (re-keyed)."
        ),
    ] = 0.0,
    *,
    traffic: TrafficOptions,
    progress: ProgressOption = True,
    config: ConfigOption = None,
) -> None:
    """Publish replay traffic to Kafka keyed by request_id, as gateways do.

    The traffic and fault flags are those of `shadowlens replay`. For a live dashboard:
    --rebase-time now --speed 1 (event times then follow the wall clock).
    """
    import asyncio

    from shadowlens.cli.progress import progress_bar
    from shadowlens.replay.publish import Published
    from shadowlens.replay.publish import publish as publish_payloads
    from shadowlens.streams.kafka_security import aiokafka_options
    from shadowlens.streams.topics import ensure_topics

    settings = settings_from(ctx, kafka_bootstrap=bootstrap, topic_events=topic)
    payloads = [raw for raw, _ in traffic.payloads()]

    async def run() -> Published:
        await ensure_topics(settings)  # the events topic with SHADOWLENS_EVENTS_PARTITIONS
        with progress_bar("publish", "records", enabled=progress) as bar:
            task = bar.add_task("publish", total=len(payloads))
            return await publish_payloads(
                payloads,
                settings.kafka_bootstrap,
                settings.topic_events,
                speed=speed,
                end_marker=end_marker,
                misroute_share=misroute_share,
                seed=traffic.seed,
                on_sent=lambda n: bar.update(task, completed=n),
                client_options=aiokafka_options(settings),  # TLS / SASL from the env
            )

    result = asyncio.run(run())
    console.print(
        f"published {result.records} events"
        + (f" and {result.markers} end markers" if result.markers else "")
        + f" to {settings.topic_events} in {result.seconds:.1f} s",
        highlight=False,
    )
    if result.too_large:
        err.print(
            f"{result.too_large} payload(s) larger than a Kafka request were not published",
            highlight=False,
        )
