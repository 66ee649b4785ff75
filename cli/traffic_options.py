"""The traffic of `replay` and `publish`: one options type, declared once, for both commands.

Each field of `TrafficOptions` is a Typer option (flag, help, default) in its annotation;
`with_traffic_options` puts those options into a command's signature where it takes
``traffic: TrafficOptions``, and hands the command the parsed values as one object.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Annotated, Any, get_type_hints

import typer
from shadowlens.cli.output import fail


@dataclass(frozen=True, slots=True)
class TrafficOptions:
    """A JSONL file of raw events, or traffic built from the data sets with faults."""

    events: Annotated[
        Path | None,
        typer.Option(
            "--events",
            exists=True,
            dir_okay=False,
            help="JSONL file of raw events (one per line). Default: build traffic.",
        ),
    ] = None
    data_dir: Annotated[
        Path | None,
        typer.Option(
            "--data-dir",
            exists=True,
            file_okay=False,
            help="Full data sets (alpaca_eval/, azure_llm_trace/); default: the shipped sample.",
        ),
    ] = None
    experiment: Annotated[str, typer.Option(help="Experiment name the built events carry.")] = (
        "gpt4-to-llama3-70b"
    )
    primary: Annotated[str, typer.Option(help="AlpacaEval model of the primary arm.")] = "gpt4_0613"
    candidate: Annotated[str, typer.Option(help="AlpacaEval model of the candidate arm.")] = (
        "Meta-Llama-3-70B-Instruct"
    )
    requests: Annotated[int, typer.Option(min=1, help="Requests to build.")] = 3_000
    replica_share: Annotated[
        float,
        typer.Option(
            min=0.0,
            max=1.0,
            help="Share of requests the primary answers twice (the replica arm): quality's "
            "reference. 0: quality is not certified for generation.",
        ),
    ] = 0.2
    seed: Annotated[int, typer.Option(help="Seed of every random draw (noise, faults).")] = 0
    latency_factor: Annotated[
        float, typer.Option(min=0.01, help="Multiply candidate latency by this ...")
    ] = 1.0
    latency_after: Annotated[
        float, typer.Option(min=0.0, help="... from this many seconds into the replay.")
    ] = 0.0
    error_rate: Annotated[
        float, typer.Option(min=0.0, max=1.0, help="Candidate error share in a burst ...")
    ] = 0.0
    error_after: Annotated[float, typer.Option(min=0.0, help="... starting at s ...")] = 0.0
    error_for: Annotated[
        float | None, typer.Option(min=0.0, help="... lasting s (default: to the end).")
    ] = None
    degrade_share: Annotated[
        float,
        typer.Option(
            min=0.0,
            max=1.0,
            help="Share of candidate answers mixed up with another prompt's (a serving bug) ...",
        ),
    ] = 0.0
    degrade_after: Annotated[float, typer.Option(min=0.0, help="... from s.")] = 0.0
    drop_candidates: Annotated[
        float, typer.Option(min=0.0, max=1.0, help="Share of candidate events never sent.")
    ] = 0.0
    duplicates: Annotated[
        float, typer.Option(min=0.0, max=1.0, help="Share of events sent twice.")
    ] = 0.0
    malformed: Annotated[
        bool, typer.Option(help="Interleave malformed payloads (bad JSON, 10 MB, ...).")
    ] = False
    rebase_time: Annotated[
        str | None,
        typer.Option(
            help="Move built traffic in time: its first request starts at now, now-15m (s, m, "
            "h, d) or an ISO 8601 time. Default: the trace's own times (November 2023).",
        ),
    ] = None

    def payloads(self) -> list[tuple[bytes, str]]:
        """The (payload, source) pairs: the --events file, or built traffic with the faults
        the flags ask for (seconds on the command line, ms in Faults)."""
        import time

        from shadowlens.replay.datasets import DEFAULT_START_MS
        from shadowlens.replay.faults import Faults
        from shadowlens.replay.jsonl import load_jsonl_events
        from shadowlens.replay.run import TrafficSpec, built_payloads, parse_start_time

        if self.events is not None:
            if self.rebase_time is not None:
                raise fail("--rebase-time moves built traffic; an --events file keeps its times")
            return list(load_jsonl_events(self.events))
        try:
            start_ms = (
                DEFAULT_START_MS
                if self.rebase_time is None
                else parse_start_time(self.rebase_time, int(time.time() * 1000))
            )
        except ValueError as exc:
            raise fail(f"--rebase-time: {exc}") from None
        try:
            faults = Faults(
                latency_factor=self.latency_factor,
                latency_after_ms=int(self.latency_after * 1000),
                error_rate=self.error_rate,
                error_after_ms=int(self.error_after * 1000),
                error_for_ms=None if self.error_for is None else int(self.error_for * 1000),
                degrade_share=self.degrade_share,
                degrade_after_ms=int(self.degrade_after * 1000),
                drop_share=self.drop_candidates,
                duplicate_share=self.duplicates,
                malformed=self.malformed,
            )
            spec = TrafficSpec(
                self.data_dir,
                self.experiment,
                self.primary,
                self.candidate,
                self.requests,
                self.replica_share,
                self.seed,
                start_ms,
            )
            return built_payloads(spec, faults)
        except (ValueError, KeyError, OSError) as exc:
            raise fail(f"cannot build traffic: {exc}") from None


def with_traffic_options(command: Callable[..., None]) -> Callable[..., None]:
    """`command` with the fields of TrafficOptions as its options, in the place of its
    ``traffic`` parameter (Typer reads the signature), called with them as one object."""
    keyword = inspect.Parameter.KEYWORD_ONLY
    hints = get_type_hints(TrafficOptions, include_extras=True)
    names = [f.name for f in fields(TrafficOptions)]
    shared = [
        inspect.Parameter(f.name, keyword, default=f.default, annotation=hints[f.name])
        for f in fields(TrafficOptions)
    ]
    params: list[inspect.Parameter] = []
    for param in inspect.signature(command, eval_str=True).parameters.values():
        params += shared if param.name == "traffic" else [param.replace(kind=keyword)]

    @functools.wraps(command)
    def wrapper(**kwargs: Any) -> None:
        command(traffic=TrafficOptions(**{n: kwargs.pop(n) for n in names}), **kwargs)

    wrapper.__signature__ = inspect.Signature(params)  # type: ignore[attr-defined]
    return wrapper
