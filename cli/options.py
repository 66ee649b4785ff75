"""The options several commands share, and what their values become: the config file
(``--config``, loaded before the other options so they default to its values), the
ClickHouse store, the policy, the worker Settings."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, Any

import typer
from shadowlens.cli.config_file import ConfigFile, load_config, option_defaults
from shadowlens.cli.exit_codes import ExitCode
from shadowlens.cli.output import fail, scrub
from shadowlens.judge.policy import Policy, PolicyError, load_policy
from shadowlens.store.client import Store
from shadowlens.streams.config import Settings
from typer.core import TyperGroup

CONFIG_KEY = "shadowlens.config"


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


def settings_from(ctx: typer.Context, **overrides: Any) -> Settings:
    """Settings from SHADOWLENS_* over the config file's [worker], flags over both."""
    config: ConfigFile | None = ctx.meta.get(CONFIG_KEY)
    env = os.environ if config is None else config.settings_env(os.environ)
    return Settings.from_env(env=env, **overrides)


def policy_from(path: Path | None) -> Policy:
    """The policy TOML, or the built-in one; a bad file is bad configuration."""
    try:
        return load_policy(path)
    except (PolicyError, OSError) as exc:
        raise fail(f"policy {path}: {exc}", ExitCode.CONFIG) from None


def open_store(dsn: str, *, readonly: bool = False) -> Store:
    """Store.open; a malformed DSN is bad configuration (unreachable stores raise on).
    Analysts' paths (`db query`, the report) open it `readonly`: no SQL can write."""
    try:
        return Store.open(dsn, readonly=readonly)
    except ValueError as exc:
        raise fail(scrub(str(exc)), ExitCode.CONFIG) from None


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
BootstrapOption = Annotated[
    str | None,
    typer.Option(envvar="SHADOWLENS_KAFKA_BOOTSTRAP", help="Kafka bootstrap servers."),
]
