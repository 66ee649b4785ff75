"""The `shadowlens` command line.

Exit codes live in cli/exit_codes.py; the config file (``--config``) in
cli/config_file.py; progress bars in cli/progress.py.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape
from shadowlens.cli.config_file import ConfigFile, ConfigFileError, load_config, option_defaults
from shadowlens.cli.exit_codes import ExitCode, epilog
from shadowlens.judge.policy import Policy, PolicyError, load_policy
from shadowlens.store.client import MigrationError, Store, StoreError
from shadowlens.store.dsn import DEFAULT_DSN
from shadowlens.streams.config import Settings, SettingsError, redact_dsn
from typer.core import TyperGroup

CONFIG_KEY = "shadowlens.config"
DEBUG_KEY = "shadowlens.debug"

WIDTH = None if Console().is_terminal else 160  # no terminal (CI, pipes): do not wrap at 80
console = Console(width=WIDTH)
err = Console(stderr=True, width=WIDTH)


def _classify(exc: Exception) -> tuple[ExitCode, str]:
    """The exit code and the one-line message of an exception no command handled."""
    from aiokafka.errors import KafkaConnectionError
    from clickhouse_connect.driver.exceptions import OperationalError

    if isinstance(exc, ConfigFileError | SettingsError | PolicyError):
        return ExitCode.CONFIG, str(exc)
    if isinstance(exc, MigrationError):
        return ExitCode.FAILURE, str(exc)
    if isinstance(exc, StoreError):
        return ExitCode.UNAVAILABLE, str(exc)
    if isinstance(exc, OperationalError):
        return ExitCode.UNAVAILABLE, f"ClickHouse unreachable: {exc}"
    if isinstance(exc, KafkaConnectionError):
        return ExitCode.UNAVAILABLE, f"Kafka unreachable: {exc}"
    return ExitCode.FAILURE, f"{type(exc).__name__}: {exc} (rerun with --debug for the traceback)"


def _debug(ctx: typer.Context) -> bool:
    config: ConfigFile | None = ctx.meta.get(CONFIG_KEY)
    level = os.environ.get("SHADOWLENS_LOG_LEVEL", "").strip() or (
        config.worker.get("log_level", "") if config else ""
    )
    return bool(ctx.meta.get(DEBUG_KEY)) or str(level).lower() == "debug"


class _Cli(TyperGroup):
    """Turns what a command raised into one line on stderr and its exit code."""

    def invoke(self, ctx: typer.Context) -> Any:
        try:
            return super().invoke(ctx)
        except (typer.Exit, typer.Abort, typer.TyperException):
            raise
        except Exception as exc:
            code, message = _classify(exc)
            if code == ExitCode.FAILURE and _debug(ctx):
                raise
            err.print(f"[red]error:[/] {escape(_scrub(message))}", soft_wrap=True)
            raise typer.Exit(code) from None


_USERINFO = re.compile(r"(://[^\s:/@'\"]*:)[^\s@'\"]+@")


def _scrub(message: str) -> str:
    """Mask the password of any ``scheme://user:password@`` a library put into a message."""
    return _USERINFO.sub(r"\1***@", message)


app = typer.Typer(
    cls=_Cli,
    epilog=epilog(),
    no_args_is_help=True,
    add_completion=False,
)
db = typer.Typer(help="The ClickHouse store: migrations and queries.", no_args_is_help=True)
app.add_typer(db, name="db")


@app.callback()
def main(
    ctx: typer.Context,
    debug: Annotated[
        bool, typer.Option("--debug", help="Show the traceback of an unexpected error.")
    ] = False,
) -> None:
    """Shadow and canary analysis for LLM migrations: pair, compare, judge, ramp."""
    ctx.meta[DEBUG_KEY] = debug


def _command_paths(root: Any) -> list[str]:
    """Every leaf command as "replay" or "db migrate": the tables a config file may hold."""
    if not isinstance(root, TyperGroup):
        return []
    paths = []
    for name, cmd in root.commands.items():
        subs = _command_paths(cmd)
        paths += [f"{name} {s}" for s in subs] if subs else [name]
    return paths


def _use_config(ctx: typer.Context, _param: typer.CallbackParam, value: Path | None) -> None:
    """Eager: load the file before the other options, which then default to its values."""
    if value is None or ctx.resilient_parsing:
        return
    config = load_config(value, _command_paths(ctx.find_root().command))
    ctx.meta[CONFIG_KEY] = config
    name = " ".join(c.info_name or "" for c in reversed(_lineage(ctx)))
    ctx.default_map = {**(ctx.default_map or {}), **option_defaults(config, name, ctx)}


def _lineage(ctx: typer.Context) -> list[typer.Context]:
    """The contexts from this command up to (not including) the root."""
    out = []
    while ctx.parent is not None:
        out.append(ctx)
        ctx = ctx.parent
    return out


def _settings(ctx: typer.Context, **overrides: Any) -> Settings:
    """Settings from SHADOWLENS_* over the config file's [worker], flags over both."""
    config: ConfigFile | None = ctx.meta.get(CONFIG_KEY)
    env = os.environ if config is None else config.settings_env(os.environ)
    return Settings.from_env(env=env, **overrides)


ConfigOption = Annotated[
    Path | None,
    typer.Option(
        "--config",
        envvar="SHADOWLENS_CONFIG",
        dir_okay=False,
        is_eager=True,
        expose_value=False,
        callback=_use_config,
        help="TOML config file: worker settings and a table per command (docs/cli.md). "
        "Precedence: flag > env > file > default.",
    ),
]
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
ProgressOption = Annotated[
    bool, typer.Option(help="Progress bar on stderr (drawn only when run in a terminal).")
]
FailOnRollbackOption = Annotated[
    bool,
    typer.Option(
        help=f"Exit {int(ExitCode.ROLLBACK)} if the judge rolled the migration back (CI gate)."
    ),
]


def _fail(message: str, code: ExitCode = ExitCode.USAGE) -> typer.Exit:
    err.print(f"[red]error:[/] {escape(message)}", soft_wrap=True)
    return typer.Exit(code)


def _open_store(dsn: str) -> Store:
    """Store.open; a malformed DSN is bad configuration (unreachable stores raise on)."""
    try:
        return Store.open(dsn)
    except ValueError as exc:
        raise _fail(_scrub(str(exc)), ExitCode.CONFIG) from None


@db.command("migrate")
def db_migrate(
    dsn: DsnOption = DEFAULT_DSN, progress: ProgressOption = True, config: ConfigOption = None
) -> None:
    """Create the database and apply pending DDL migrations (idempotent)."""
    from shadowlens.cli.progress import spinner

    with spinner(f"migrating {redact_dsn(dsn)}", enabled=progress), _open_store(dsn) as store:
        applied = store.migrate()
    console.print(f"applied: {', '.join(applied)}" if applied else "up to date")


@db.command("query")
def db_query(
    sql: Annotated[str, typer.Argument(help="SQL; tables: pairs, windows, decisions, ...")],
    dsn: DsnOption = DEFAULT_DSN,
    config: ConfigOption = None,
) -> None:
    """Run one read-only query against the store and print the rows as a table."""
    from rich.table import Table

    with _open_store(dsn) as store:
        try:
            result = store.query(sql)
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
        raise _fail(f"policy {path}: {exc}", ExitCode.CONFIG) from None


# ---- the traffic of `replay` and `publish`: one set of options, one builder ----------------

EventsOption = Annotated[
    Path | None,
    typer.Option(
        "--events",
        exists=True,
        dir_okay=False,
        help="JSONL file of raw events (one per line). Default: build traffic.",
    ),
]
DataDirOption = Annotated[
    Path | None,
    typer.Option(
        "--data-dir",
        exists=True,
        file_okay=False,
        help="Full data sets (alpaca_eval/, azure_llm_trace/); default: the shipped sample.",
    ),
]
ExperimentOption = Annotated[str, typer.Option(help="Experiment name the built events carry.")]
PrimaryOption = Annotated[str, typer.Option(help="AlpacaEval model of the primary arm.")]
CandidateOption = Annotated[str, typer.Option(help="AlpacaEval model of the candidate arm.")]
RequestsOption = Annotated[int, typer.Option(min=1, help="Requests to build.")]
ReplicaShareOption = Annotated[
    float, typer.Option(min=0.0, max=1.0, help="Share of requests with a replica arm.")
]
SeedOption = Annotated[int, typer.Option(help="Seed of every random draw (noise, faults).")]
LatencyFactorOption = Annotated[
    float, typer.Option(min=0.01, help="Multiply candidate latency by this ...")
]
LatencyAfterOption = Annotated[
    float, typer.Option(min=0.0, help="... from this many seconds into the replay.")
]
ErrorRateOption = Annotated[
    float, typer.Option(min=0.0, max=1.0, help="Candidate error share in a burst ...")
]
ErrorAfterOption = Annotated[float, typer.Option(min=0.0, help="... starting at s ...")]
ErrorForOption = Annotated[
    float | None, typer.Option(min=0.0, help="... lasting s (default: to the end).")
]
DegradeShareOption = Annotated[
    float, typer.Option(min=0.0, max=1.0, help="Share of candidate outputs given a weaker model's")
]
DegradeAfterOption = Annotated[float, typer.Option(min=0.0, help="... from s.")]
DropCandidatesOption = Annotated[
    float, typer.Option(min=0.0, max=1.0, help="Share of candidate events never sent.")
]
DuplicatesOption = Annotated[
    float, typer.Option(min=0.0, max=1.0, help="Share of events sent twice.")
]
MalformedOption = Annotated[
    bool, typer.Option(help="Interleave malformed payloads (bad JSON, 10 MB, ...).")
]
RebaseTimeOption = Annotated[
    str | None,
    typer.Option(
        help="Move built traffic in time: its first request starts at now, now-15m (s, m, h, "
        "d) or an ISO 8601 time. Default: the trace's own times (November 2023).",
    ),
]


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
    rebase_time: str | None,
) -> list[tuple[bytes, str]]:
    """The (payload, source) pairs of `replay` and `publish`: a JSONL file, or built traffic
    with the faults the flags ask for (seconds on the command line, ms in Faults)."""
    import time

    from shadowlens.replay.datasets import DEFAULT_START_MS
    from shadowlens.replay.faults import Faults
    from shadowlens.replay.jsonl import load_jsonl_events
    from shadowlens.replay.run import TrafficSpec, built_payloads, parse_start_time

    if events is not None:
        if rebase_time is not None:
            raise _fail("--rebase-time moves built traffic; an --events file keeps its times")
        return list(load_jsonl_events(events))
    try:
        start_ms = (
            DEFAULT_START_MS
            if rebase_time is None
            else parse_start_time(rebase_time, int(time.time() * 1000))
        )
    except ValueError as exc:
        raise _fail(f"--rebase-time: {exc}") from None
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
        spec = TrafficSpec(
            data_dir, experiment, primary, candidate, requests, replica_share, seed, start_ms
        )
        return built_payloads(spec, faults)
    except (ValueError, KeyError, OSError) as exc:
        raise _fail(f"cannot build traffic: {exc}") from None


@app.command()
def replay(
    events: EventsOption = None,
    data_dir: DataDirOption = None,
    experiment: ExperimentOption = "gpt4-to-llama3-70b",
    primary: PrimaryOption = "gpt4_0613",
    candidate: CandidateOption = "Meta-Llama-3-70B-Instruct",
    requests: RequestsOption = 3_000,
    replica_share: ReplicaShareOption = 0.0,
    seed: SeedOption = 0,
    latency_factor: LatencyFactorOption = 1.0,
    latency_after: LatencyAfterOption = 0.0,
    error_rate: ErrorRateOption = 0.0,
    error_after: ErrorAfterOption = 0.0,
    error_for: ErrorForOption = None,
    degrade_share: DegradeShareOption = 0.0,
    degrade_after: DegradeAfterOption = 0.0,
    drop_candidates: DropCandidatesOption = 0.0,
    duplicates: DuplicatesOption = 0.0,
    malformed: MalformedOption = False,
    rebase_time: RebaseTimeOption = None,
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
    dsn: DsnOption = DEFAULT_DSN,
    policy_path: PolicyOption = None,
    progress: ProgressOption = True,
    fail_on_rollback: FailOnRollbackOption = False,
    config: ConfigOption = None,
) -> None:
    """Replay traffic through the whole job and print per-segment figures and decisions.

    With no flags: 3,000 requests of gpt4_0613 (primary) against Meta-Llama-3-70B-Instruct
    (candidate) from the shipped AlpacaEval sample at Azure trace arrival times, written to
    the embedded ClickHouse store.
    """
    from shadowlens.comparators.semantic import SemanticBackendUnavailable
    from shadowlens.judge.verdicts import Action
    from shadowlens.replay.jsonl import write_jsonl
    from shadowlens.replay.run import run_replay
    from shadowlens.report.summary import print_summary
    from shadowlens.streams.semantic_stage import make_cascade

    policy = _policy(policy_path)
    try:
        enrich = make_cascade(semantic, policy)
    except (ValueError, SemanticBackendUnavailable) as exc:
        raise _fail(str(exc)) from None
    payloads = _traffic(
        events, data_dir, experiment, primary, candidate, requests, replica_share, seed,
        latency_factor, latency_after, error_rate, error_after, error_for, degrade_share,
        degrade_after, drop_candidates, duplicates, malformed, rebase_time,
    )  # fmt: skip
    if export is not None:
        write_jsonl(export, (raw for raw, _ in payloads))
    ch = _open_store(dsn) if store else None
    try:
        if ch is not None:
            ch.migrate()
        result = run_replay(
            payloads, policy, ch, show_progress=progress, redact=redact, enrich=enrich
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
        raise _fail(f"the judge rolled back {len(rollbacks)} time(s), first: {first}",
                    ExitCode.ROLLBACK)  # fmt: skip


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
    config: ConfigOption = None,
) -> None:
    """How long each ramp stage must hold for the judge's bounds to reach the policy margins."""
    from rich.table import Table
    from shadowlens.judge.plan import Assumptions, Mode, plan_ramp

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
        Path("shadowlens.report.html")
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
    fail_on_rollback: Annotated[
        bool,
        typer.Option(
            help=f"Exit {int(ExitCode.ROLLBACK)} if the verdict is NO-GO (the last decision "
            "rolled back or failed a check)."
        ),
    ] = False,
    require_go: Annotated[
        bool,
        typer.Option(
            help=f"Exit {int(ExitCode.ROLLBACK)} on NO-GO and {int(ExitCode.NOT_READY)} on NOT "
            "YET / NO DATA: only GO passes (a promotion gate)."
        ),
    ] = False,
    progress: ProgressOption = True,
    config: ConfigOption = None,
) -> None:
    """Write a self-contained HTML migration report of one experiment from ClickHouse."""
    from shadowlens.cli.progress import spinner
    from shadowlens.report.model import UnknownExperimentError
    from shadowlens.report.write import write_report

    policy = _policy(policy_path)
    with (
        spinner(f"report: querying {redact_dsn(dsn)}", enabled=progress),
        _open_store(dsn) as store,
    ):
        try:
            data = write_report(
                store,
                experiment,
                policy,
                out,
                monthly_requests=monthly_requests,
                migration_cost_usd=migration_cost_usd,
            )
        except UnknownExperimentError as exc:
            raise _fail(str(exc)) from None
    console.print(
        f"{out}: {data.verdict.status} - {data.verdict.headline} "
        f"({data.overview.paired:,} pairs, {len(data.decisions)} decisions)",
        markup=False,
        highlight=False,
    )
    status = data.verdict.status
    if (fail_on_rollback or require_go) and status == "NO-GO":
        raise typer.Exit(ExitCode.ROLLBACK)
    if require_go and status != "GO":
        raise typer.Exit(ExitCode.NOT_READY)


# ---- streaming: `shadowlens worker` and `shadowlens publish` (see docs/streaming.md) ----

BootstrapOption = Annotated[
    str | None,
    typer.Option(envvar="SHADOWLENS_KAFKA_BOOTSTRAP", help="Kafka bootstrap servers."),
]


@app.command()
def worker(
    ctx: typer.Context,
    bootstrap: BootstrapOption = None,
    app_id: Annotated[
        str | None,
        typer.Option(envvar="SHADOWLENS_APP_ID", help="Faust app id = consumer group."),
    ] = None,
    processing_guarantee: Annotated[
        str | None,
        typer.Option(
            envvar="SHADOWLENS_PROCESSING_GUARANTEE", help="at_least_once or exactly_once."
        ),
    ] = None,
    web_port: Annotated[
        int | None,
        typer.Option(
            envvar="SHADOWLENS_WEB_PORT",
            help="Serve Faust's web views on 127.0.0.1:PORT (default: no web).",
        ),
    ] = None,
    dsn: Annotated[
        str | None,
        typer.Option(envvar="SHADOWLENS_DSN", help="ClickHouse: chdb://DIR or http(s)://..."),
    ] = None,
    policy_path: PolicyOption = None,
    config: ConfigOption = None,
) -> None:
    """Run the streaming job on Kafka: pair, score, window, judge; ClickHouse + control topic.

    Every other setting comes from SHADOWLENS_* environment variables (streams/config.py)
    or the config file's [worker] table. Start more workers with the same app id to split
    the partitions between them.
    """
    from shadowlens.streams.worker import run_worker

    settings = _settings(
        ctx,
        kafka_bootstrap=bootstrap,
        app_id=app_id,
        processing_guarantee=processing_guarantee and processing_guarantee.lower(),
        web_port=web_port,
        dsn=dsn,
        policy=policy_path,
    )
    run_worker(settings, _policy(settings.policy))


@app.command()
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
    events: EventsOption = None,
    data_dir: DataDirOption = None,
    experiment: ExperimentOption = "gpt4-to-llama3-70b",
    primary: PrimaryOption = "gpt4_0613",
    candidate: CandidateOption = "Meta-Llama-3-70B-Instruct",
    requests: RequestsOption = 3_000,
    replica_share: ReplicaShareOption = 0.0,
    seed: SeedOption = 0,
    latency_factor: LatencyFactorOption = 1.0,
    latency_after: LatencyAfterOption = 0.0,
    error_rate: ErrorRateOption = 0.0,
    error_after: ErrorAfterOption = 0.0,
    error_for: ErrorForOption = None,
    degrade_share: DegradeShareOption = 0.0,
    degrade_after: DegradeAfterOption = 0.0,
    drop_candidates: DropCandidatesOption = 0.0,
    duplicates: DuplicatesOption = 0.0,
    malformed: MalformedOption = False,
    rebase_time: RebaseTimeOption = None,
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

    settings = _settings(ctx, kafka_bootstrap=bootstrap, topic_events=topic)
    sourced = _traffic(
        events, data_dir, experiment, primary, candidate, requests, replica_share, seed,
        latency_factor, latency_after, error_rate, error_after, error_for, degrade_share,
        degrade_after, drop_candidates, duplicates, malformed, rebase_time,
    )  # fmt: skip
    payloads = [raw for raw, _ in sourced]

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
                seed=seed,
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
