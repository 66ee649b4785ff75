"""The `shadowlens` command line."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.markup import escape

from judge.policy import Policy, PolicyError, load_policy
from streams.store import DEFAULT_DSN, Store, StoreError

app = typer.Typer(
    help="Shadow and canary analysis for LLM migrations: pair, compare, judge, ramp.",
    no_args_is_help=True,
    add_completion=False,
)
db = typer.Typer(help="The ClickHouse store: migrations and queries.", no_args_is_help=True)
app.add_typer(db, name="db")

WIDTH = None if Console().is_terminal else 160  # no terminal (CI, pipes): do not wrap at 80
console = Console(width=WIDTH)
err = Console(stderr=True, width=WIDTH)

DsnOption = Annotated[
    str,
    typer.Option(
        "--dsn",
        envvar="SHADOWLENS_DSN",
        help="ClickHouse: chdb://DIR for the embedded engine, or http(s)://user:pw@host:8123.",
    ),
]
PolicyOption = Annotated[
    Path | None,
    typer.Option(
        "--policy",
        envvar="SHADOWLENS_POLICY",
        exists=True,
        dir_okay=False,
        help="Policy TOML (thresholds, windows, ramp, prices). Default: the built-in policy.",
    ),
]


def _fail(message: str, code: int = 2) -> typer.Exit:
    err.print(f"[red]error:[/] {escape(message)}")
    return typer.Exit(code)


@db.command("migrate")
def db_migrate(dsn: DsnOption = DEFAULT_DSN) -> None:
    """Create the database and apply pending DDL migrations (idempotent)."""
    try:
        with Store.open(dsn) as store:
            applied = store.migrate()
    except (StoreError, ValueError) as exc:
        raise _fail(str(exc)) from None
    console.print(f"applied: {', '.join(applied)}" if applied else "up to date")


@db.command("query")
def db_query(
    sql: Annotated[str, typer.Argument(help="SQL; tables: pairs, windows, decisions, ...")],
    dsn: DsnOption = DEFAULT_DSN,
) -> None:
    """Run one read-only query against the store and print the rows as a table."""
    from rich.table import Table

    try:
        with Store.open(dsn) as store:
            result = store.query(sql)
    except (StoreError, ValueError) as exc:
        raise _fail(str(exc)) from None
    except Exception as exc:  # the server's own message is the most useful one
        raise _fail(f"query failed: {exc}") from None
    table = Table(*result.column_names)
    for row in result.result_rows:
        table.add_row(*(str(v) for v in row))
    console.print(table)


def _policy(path: Path | None) -> Policy:
    try:
        return load_policy(path)
    except (PolicyError, OSError) as exc:
        raise _fail(f"policy {path}: {exc}") from None


def _traffic(
    events: Path | None,
    data_dir: Path | None,
    experiment: str,
    primary: str,
    candidate: str,
    requests: int,
    replica_share: float,
    seed: int,
    latency_factor: float,
    latency_after: float,
    error_rate: float,
    error_after: float,
    error_for: float | None,
    degrade_share: float,
    degrade_after: float,
    drop_candidates: float,
    duplicates: float,
    malformed: bool,
) -> list[tuple[bytes, str]]:
    """The (payload, source) pairs of `replay` and `publish`: a JSONL file, or built traffic
    with the faults the flags ask for (seconds on the command line, ms in Faults)."""
    from streams.replay import TrafficSpec, built_payloads
    from streams.traffic import Faults, load_jsonl_events

    if events is not None:
        return list(load_jsonl_events(events))
    try:
        faults = Faults(
            latency_factor=latency_factor,
            latency_after_ms=int(latency_after * 1000),
            error_rate=error_rate,
            error_after_ms=int(error_after * 1000),
            error_for_ms=None if error_for is None else int(error_for * 1000),
            degrade_share=degrade_share,
            degrade_after_ms=int(degrade_after * 1000),
            drop_share=drop_candidates,
            duplicate_share=duplicates,
            malformed=malformed,
        )
        spec = TrafficSpec(data_dir, experiment, primary, candidate, requests, replica_share, seed)
        return built_payloads(spec, faults)
    except (ValueError, KeyError, OSError) as exc:
        raise _fail(f"cannot build traffic: {exc}") from None


@app.command()
def replay(
    events: Annotated[
        Path | None,
        typer.Option(
            "--events",
            exists=True,
            dir_okay=False,
            help="JSONL file of raw events (one per line). Default: build traffic.",
        ),
    ] = None,
    data_dir: Annotated[
        Path | None,
        typer.Option(
            "--data-dir",
            exists=True,
            file_okay=False,
            help="Full data sets (alpaca_eval/, azure_llm_trace/); default: the shipped sample.",
        ),
    ] = None,
    experiment: str = "gpt4-to-llama3-70b",
    primary: Annotated[str, typer.Option(help="AlpacaEval model of the primary arm.")] = (
        "gpt4_0613"
    ),
    candidate: Annotated[str, typer.Option(help="AlpacaEval model of the candidate arm.")] = (
        "Meta-Llama-3-70B-Instruct"
    ),
    requests: Annotated[int, typer.Option(min=1, help="Requests to build.")] = 3_000,
    replica_share: Annotated[
        float, typer.Option(min=0.0, max=1.0, help="Share of requests with a replica arm.")
    ] = 0.0,
    seed: int = 0,
    latency_factor: Annotated[
        float, typer.Option(min=0.01, help="Multiply candidate latency by this ...")
    ] = 1.0,
    latency_after: Annotated[
        float, typer.Option(min=0.0, help="... from this many seconds into the replay.")
    ] = 0.0,
    error_rate: Annotated[
        float, typer.Option(min=0.0, max=1.0, help="Candidate error share in a burst ...")
    ] = 0.0,
    error_after: Annotated[float, typer.Option(min=0.0, help="... starting at s ...")] = 0.0,
    error_for: Annotated[
        float | None, typer.Option(min=0.0, help="... lasting s (default: to the end).")
    ] = None,
    degrade_share: Annotated[
        float,
        typer.Option(min=0.0, max=1.0, help="Share of candidate outputs given a weaker model's"),
    ] = 0.0,
    degrade_after: Annotated[float, typer.Option(min=0.0, help="... from s.")] = 0.0,
    drop_candidates: Annotated[
        float, typer.Option(min=0.0, max=1.0, help="Share of candidate events never sent.")
    ] = 0.0,
    duplicates: Annotated[
        float, typer.Option(min=0.0, max=1.0, help="Share of events sent twice.")
    ] = 0.0,
    malformed: Annotated[
        bool, typer.Option(help="Interleave malformed payloads (bad JSON, 10 MB, ...).")
    ] = False,
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
    dsn: DsnOption = DEFAULT_DSN,
    policy_path: PolicyOption = None,
    progress: Annotated[bool, typer.Option(help="Show a progress bar.")] = True,
) -> None:
    """Replay traffic through the whole job and print per-segment figures and decisions.

    With no flags: 3,000 requests of gpt4_0613 (primary) against Meta-Llama-3-70B-Instruct
    (candidate) from the shipped AlpacaEval sample at Azure trace arrival times, written to
    the embedded ClickHouse store.
    """
    from streams.replay import run_replay
    from streams.summary import print_summary
    from streams.traffic import write_jsonl

    policy = _policy(policy_path)
    payloads = _traffic(
        events, data_dir, experiment, primary, candidate, requests, replica_share, seed,
        latency_factor, latency_after, error_rate, error_after, error_for, degrade_share,
        degrade_after, drop_candidates, duplicates, malformed,
    )  # fmt: skip
    if export is not None:
        write_jsonl(export, (raw for raw, _ in payloads))
    try:
        ch = Store.open(dsn) if store else None
    except (StoreError, ValueError) as exc:
        raise _fail(str(exc)) from None
    try:
        if ch is not None:
            ch.migrate()
        result = run_replay(payloads, policy, ch, show_progress=progress, redact=redact)
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
    where = f" -> {dsn}: " + ", ".join(f"{k}={v}" for k, v in result.written.items())
    console.print(
        f"{len(payloads)} events in {result.seconds:.1f} s" + (where if store else ""),
        highlight=False,
    )


def _duration(ms: float) -> str:
    s = round(ms / 1000)
    return f"{s // 3600}h{s % 3600 // 60:02d}m" if s >= 3600 else f"{s // 60}m{s % 60:02d}s"


@app.command()
def plan(
    rate: Annotated[float, typer.Option(min=0.001, help="Requests per second (all traffic).")],
    mode: Annotated[
        str, typer.Option(help="shadow: every request is paired; split: one arm per request.")
    ] = "shadow",
    latency_sd: Annotated[
        float,
        typer.Option(min=1e-6, help="sd of per-request log latency ratio (split: log latency)."),
    ] = 0.3,
    error_rate: Annotated[
        float, typer.Option(min=0.0, max=0.99, help="Error rate of a healthy arm.")
    ] = 0.01,
    quality_reference: Annotated[
        float, typer.Option(min=0.01, max=1.0, help="Mean agreement of a healthy candidate.")
    ] = 0.68,
    quality_sd: Annotated[float, typer.Option(min=1e-6, max=0.5, help="Its sd.")] = 0.125,
    cost_cv: Annotated[
        float | None, typer.Option(min=1e-6, help="CV of per-request cost; omit to skip cost.")
    ] = None,
    policy_path: PolicyOption = None,
) -> None:
    """How long each ramp stage must hold for the judge's bounds to reach the policy margins."""
    from rich.table import Table

    from judge.plan import Assumptions, Mode, plan_ramp

    if mode not in {m.value for m in Mode}:
        raise _fail(f"--mode must be shadow or split, got {mode!r}")
    policy = _policy(policy_path)
    try:
        assumptions = Assumptions(
            rate, Mode(mode), latency_sd, error_rate, quality_reference, quality_sd, cost_cv
        )
        result = plan_ramp(policy, assumptions)
    except ValueError as exc:
        raise _fail(str(exc)) from None
    metrics = [n.metric for n in result.needs]
    table = Table(title=f"ramp plan: {rate:g} requests/s, {mode} mode, alpha {result.alpha:.2e}")
    table.add_column("stage", justify="right")
    table.add_column("pairs/s", justify="right")
    for need in result.needs:
        table.add_column(f"{need.metric} n", justify="right")
    table.add_column("binding")
    table.add_column("hold", justify="right")
    table.add_column("cumulative", justify="right")
    elapsed = 0
    for stage in result.stages:
        elapsed += stage.hold_ms
        cells = [
            "-" if stage.final or m not in stage.seconds
            else f"{next(n.n for n in result.needs if n.metric == m)} ({stage.seconds[m]:.0f} s)"
            for m in metrics
        ]  # fmt: skip
        table.add_row(
            f"{stage.percent:g} %" + ("" if stage.shadow or stage.final else " split"),
            f"{stage.pairs_per_s:.2f}",
            *cells,
            "ramp complete" if stage.final else stage.binding,
            "-" if stage.final else _duration(stage.hold_ms),
            _duration(elapsed),
        )
    console.print(table)
    for need in result.needs:
        console.print(
            f"  {need.metric}: n={need.n} to reach +-{need.effect:.4g} (sd {need.sd:.3g}, "
            f"alpha {need.alpha:.2e}, {need.method}); {need.note}",
            highlight=False,
        )
    console.print(
        f"total ramp time {_duration(result.total_ms)} (event time, every stage passing at "
        f"first sight; min hold {_duration(policy.ramp.min_hold_ms)}, min pairs "
        f"{policy.ramp.min_pairs}, windows of {policy.windows.size_ms // 1000} s)",
        highlight=False,
    )


@app.command()
def report(
    experiment: Annotated[str, typer.Option("--experiment", help="Experiment to report on.")],
    out: Annotated[Path, typer.Option("--out", dir_okay=False, help="HTML file to write.")] = (
        Path("report.html")
    ),
    monthly_requests: Annotated[
        float | None,
        typer.Option(min=0.0, help="Requests per month for the projection (default: observed)."),
    ] = None,
    migration_cost_usd: Annotated[
        float, typer.Option(min=0.0, help="One-off migration cost, for the payback period.")
    ] = 0.0,
    dsn: DsnOption = DEFAULT_DSN,
    policy_path: PolicyOption = None,
) -> None:
    """Write a self-contained HTML migration report of one experiment from ClickHouse."""
    from streams.report import UnknownExperimentError, write_report

    policy = _policy(policy_path)
    try:
        with Store.open(dsn) as store:
            data = write_report(
                store,
                experiment,
                policy,
                out,
                monthly_requests=monthly_requests,
                migration_cost_usd=migration_cost_usd,
            )
    except (StoreError, ValueError, UnknownExperimentError) as exc:
        raise _fail(str(exc)) from None
    console.print(
        f"{out}: {data.verdict.status} - {data.verdict.headline} "
        f"({data.overview.paired:,} pairs, {len(data.decisions)} decisions)",
        markup=False,
        highlight=False,
    )


# ---- streaming: `shadowlens worker` and `shadowlens publish` (see docs/streaming.md) ----


@app.command()
def worker(
    bootstrap: Annotated[
        str | None,
        typer.Option(help="Kafka bootstrap servers (env SHADOWLENS_KAFKA_BOOTSTRAP)."),
    ] = None,
    app_id: Annotated[
        str | None,
        typer.Option(help="Faust app id = consumer group (env SHADOWLENS_APP_ID)."),
    ] = None,
    processing_guarantee: Annotated[
        str | None,
        typer.Option(help="at_least_once or exactly_once (env SHADOWLENS_PROCESSING_GUARANTEE)."),
    ] = None,
    web_port: Annotated[
        int | None,
        typer.Option(help="Serve Faust's web views on 127.0.0.1:PORT (default: no web)."),
    ] = None,
    dsn: Annotated[
        str | None,
        typer.Option(help="ClickHouse DSN (env SHADOWLENS_DSN); chdb://DIR or http(s)://..."),
    ] = None,
    policy_path: PolicyOption = None,
) -> None:
    """Run the streaming job on Kafka: pair, score, window, judge; ClickHouse + control topic.

    Every other setting comes from SHADOWLENS_* environment variables (streams/config.py).
    Start more workers with the same app id to split the partitions between them.
    """
    from streams.config import Settings, SettingsError
    from streams.worker import run_worker

    try:
        settings = Settings.from_env(
            kafka_bootstrap=bootstrap,
            app_id=app_id,
            processing_guarantee=processing_guarantee,
            web_port=web_port,
            dsn=dsn,
            policy=policy_path,
        )
    except SettingsError as exc:
        raise _fail(str(exc)) from None
    run_worker(settings, _policy(settings.policy))


@app.command()
def publish(
    bootstrap: Annotated[
        str | None,
        typer.Option(help="Kafka bootstrap servers (env SHADOWLENS_KAFKA_BOOTSTRAP)."),
    ] = None,
    topic: Annotated[
        str | None, typer.Option(help="Events topic (env SHADOWLENS_TOPIC_EVENTS).")
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
    events: Annotated[
        Path | None,
        typer.Option("--events", exists=True, dir_okay=False, help="JSONL file of raw events."),
    ] = None,
    data_dir: Annotated[
        Path | None,
        typer.Option("--data-dir", exists=True, file_okay=False, help="Full data sets."),
    ] = None,
    experiment: str = "gpt4-to-llama3-70b",
    primary: str = "gpt4_0613",
    candidate: str = "Meta-Llama-3-70B-Instruct",
    requests: Annotated[int, typer.Option(min=1, help="Requests to build.")] = 3_000,
    replica_share: Annotated[float, typer.Option(min=0.0, max=1.0)] = 0.0,
    seed: int = 0,
    latency_factor: Annotated[float, typer.Option(min=0.01)] = 1.0,
    latency_after: Annotated[float, typer.Option(min=0.0)] = 0.0,
    error_rate: Annotated[float, typer.Option(min=0.0, max=1.0)] = 0.0,
    error_after: Annotated[float, typer.Option(min=0.0)] = 0.0,
    error_for: Annotated[float | None, typer.Option(min=0.0)] = None,
    degrade_share: Annotated[float, typer.Option(min=0.0, max=1.0)] = 0.0,
    degrade_after: Annotated[float, typer.Option(min=0.0)] = 0.0,
    drop_candidates: Annotated[float, typer.Option(min=0.0, max=1.0)] = 0.0,
    duplicates: Annotated[float, typer.Option(min=0.0, max=1.0)] = 0.0,
    malformed: Annotated[bool, typer.Option(help="Interleave malformed payloads.")] = False,
) -> None:
    """Publish replay traffic to Kafka keyed by request_id, as gateways do.

    The traffic and fault flags are those of `shadowlens replay` (see its --help).
    """
    import asyncio

    from streams.config import Settings, SettingsError
    from streams.publish import Published
    from streams.publish import publish as publish_payloads
    from streams.topics import ensure_topics

    try:
        settings = Settings.from_env(kafka_bootstrap=bootstrap, topic_events=topic)
    except SettingsError as exc:
        raise _fail(str(exc)) from None
    sourced = _traffic(
        events, data_dir, experiment, primary, candidate, requests, replica_share, seed,
        latency_factor, latency_after, error_rate, error_after, error_for, degrade_share,
        degrade_after, drop_candidates, duplicates, malformed,
    )  # fmt: skip
    payloads = [raw for raw, _ in sourced]

    async def run() -> Published:
        await ensure_topics(settings)  # the events topic with SHADOWLENS_EVENTS_PARTITIONS
        return await publish_payloads(
            payloads,
            settings.kafka_bootstrap,
            settings.topic_events,
            speed=speed,
            end_marker=end_marker,
            misroute_share=misroute_share,
            seed=seed,
        )

    try:
        result = asyncio.run(run())
    except Exception as exc:  # the client's own message says what went wrong
        raise _fail(f"publish to {settings.topic_events} failed: {exc!r}") from None
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
