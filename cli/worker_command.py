"""`shadowlens worker`: the streaming job on Kafka (streams/worker.py); flags override the
SHADOWLENS_* environment and the config file's [worker] table."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from shadowlens.cli.options import (
    BootstrapOption,
    ConfigOption,
    PolicyOption,
    policy_from,
    settings_from,
)


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
    signing_key: Annotated[
        Path | None,
        typer.Option(
            envvar="SHADOWLENS_SIGNING_KEY_FILE",
            exists=True,
            dir_okay=False,
            help="The worker's Ed25519 key file (`shadowlens keys new`): signs every control "
            "message.",
        ),
    ] = None,
    operator_keys: Annotated[
        Path | None,
        typer.Option(
            envvar="SHADOWLENS_OPERATOR_KEYS_FILE",
            exists=True,
            dir_okay=False,
            help="Allowlist of operators' public keys (.pub lines): whose `shadowlens control` "
            "commands are obeyed. None: every command is refused.",
        ),
    ] = None,
    allow_unsigned: Annotated[
        bool | None,
        typer.Option(
            "--allow-unsigned",
            envvar="SHADOWLENS_ALLOW_UNSIGNED",
            help="Publish unsigned control messages when no key is given (logged loudly; "
            "shadowlens_control_unsigned=1). Never in production.",
        ),
    ] = None,
    policy_path: PolicyOption = None,
    config: ConfigOption = None,
) -> None:
    """Run the streaming job on Kafka: pair, score, window, judge; ClickHouse + control topic.

    Every other setting comes from SHADOWLENS_* environment variables (streams/config.py)
    or the config file's \\[worker] table. Start more workers with the same app id to split
    the partitions between them. Without a signing key the worker does not start, unless
    --allow-unsigned.
    """
    from shadowlens.streams.worker import run_worker

    settings = settings_from(
        ctx,
        kafka_bootstrap=bootstrap,
        app_id=app_id,
        processing_guarantee=processing_guarantee and processing_guarantee.lower(),
        web_port=web_port,
        dsn=dsn,
        policy=policy_path,
        signing_key_file=signing_key,
        operator_keys_file=operator_keys,
        allow_unsigned=allow_unsigned or None,
    )
    run_worker(settings, policy_from(settings.policy))
