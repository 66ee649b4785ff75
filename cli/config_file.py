"""The optional TOML config file (``--config`` or ``SHADOWLENS_CONFIG``).

    [worker]          # streams/config.py Settings: SHADOWLENS_<KEY> without the prefix
    kafka_bootstrap = "kafka:9092"
    dsn = "http://shadowlens:secret@clickhouse:8123"

    [replay]          # defaults of `shadowlens replay` options, by long name
    requests = 6000   # (--requests); `latency-factor` and `latency_factor` both work
    [publish] [report] [plan] [db.migrate] [db.query]   # likewise

Precedence: command-line flag > environment variable > this file > built-in default. The
``[worker]`` table is what the environment would say: the worker and `publish` read every
Settings field from it, and an option of any command that has a ``SHADOWLENS_*`` variable
(``--dsn``, ``--policy``, ``--redact``, ``--bootstrap``...) takes its file value from there
unless the command's own table sets that option. Unknown tables and keys are errors that name
the key and the file, never silently ignored: a typo must not drop a setting. Values are
never echoed in errors (the file may hold passwords). Relative paths are relative to the
working directory, as on the command line.
"""

from __future__ import annotations

import tomllib
from collections.abc import Collection, Mapping
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import typer
from shadowlens.streams.config import PREFIX, Settings, SettingsError
from typer.core import TyperOption

WORKER = "worker"


class ConfigFileError(ValueError):
    """The config file cannot be used; the message names the file and the key."""


@dataclass(frozen=True, slots=True)
class ConfigFile:
    path: Path
    worker: Mapping[str, Any]  # Settings field -> value, as typed in the file
    commands: Mapping[str, Mapping[str, Any]]  # "replay", "db migrate" -> option -> value

    def env(self) -> dict[str, str]:
        """``[worker]`` as the ``SHADOWLENS_*`` variables that would say the same."""
        return _as_env(self.worker)

    def settings_env(self, environ: Mapping[str, str]) -> dict[str, str]:
        """What `Settings.from_env` reads: the file, overridden by non-empty variables."""
        return self.env() | {k: v for k, v in environ.items() if v.strip()}


def _as_env(table: Mapping[str, Any]) -> dict[str, str]:
    """TOML values as environment strings (booleans as true/false)."""
    return {
        PREFIX + k.upper(): str(v).lower() if isinstance(v, bool) else str(v)
        for k, v in table.items()
    }


def _type_ok(type_name: str, value: Any) -> bool:
    """Whether a TOML value fits a Settings field (its annotation, as a string)."""
    if type_name.startswith("bool"):
        return isinstance(value, bool)
    if isinstance(value, bool):
        return False
    if type_name.startswith("int"):
        return isinstance(value, int)
    if type_name.startswith("float"):
        return isinstance(value, int | float)
    return isinstance(value, str)


def _check_worker(table: Any, path: Path) -> dict[str, Any]:
    if not isinstance(table, dict):
        raise ConfigFileError(f"{path}: [{WORKER}] must be a table")
    types = {f.name: str(f.type) for f in fields(Settings)}
    unknown = sorted(set(table) - set(types))
    if unknown:
        raise ConfigFileError(
            f"{path}: unknown key(s) in [{WORKER}]: {', '.join(unknown)} "
            "(keys are streams/config.py Settings fields, e.g. kafka_bootstrap, dsn)"
        )
    for key, value in table.items():
        if not _type_ok(types[key], value):
            raise ConfigFileError(f"{path}: [{WORKER}] {key} must be {types[key]}")
    try:  # cross-field rules (topic names differ, heartbeat below session timeout...)
        Settings.from_env(env=_as_env(table))
    except SettingsError as exc:
        raise ConfigFileError(f"{path}: [{WORKER}]: {exc}") from None
    return dict(table)


def _flatten(doc: Mapping[str, Any], commands: Collection[str], path: Path) -> dict[str, Any]:
    """{"db": {"migrate": {...}}} -> {"db migrate": {...}}, rejecting unknown tables."""
    out: dict[str, Any] = {}
    groups = {c.split(" ", 1)[0] for c in commands if " " in c}

    def walk(table: Mapping[str, Any], prefix: str) -> None:
        for key, value in table.items():
            name = f"{prefix} {key}".strip()
            if name in commands and isinstance(value, dict):
                out[name] = value
            elif name in groups and isinstance(value, dict):
                walk(value, name)
            else:
                known = ", ".join(sorted({c.replace(" ", ".") for c in (*commands, WORKER)}))
                raise ConfigFileError(
                    f"{path}: unknown key [{name.replace(' ', '.')}] (tables: {known})"
                )

    walk(doc, "")
    return out


def load_config(path: str | Path, commands: Collection[str]) -> ConfigFile:
    """Parse and check a config file; `commands` are the command paths ("db migrate")."""
    path = Path(path)
    try:
        doc = tomllib.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConfigFileError(f"cannot read config file {path}: {exc.strerror}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigFileError(f"{path} is not valid TOML: {exc}") from None
    worker = _check_worker(doc.pop(WORKER, {}), path)
    return ConfigFile(path, worker, _flatten(doc, commands, path))


def _key(param: TyperOption) -> str:
    """The file key of an option: its long name without dashes, in snake case."""
    longs = [o for o in param.opts if o.startswith("--")] or param.opts
    return longs[0].lstrip("-").replace("-", "_")


def option_defaults(config: ConfigFile, name: str, ctx: typer.Context) -> dict[str, Any]:
    """The ``default_map`` of one command: its table, then ``[worker]`` for options that have
    a SHADOWLENS_* variable. Each value is converted as the option would convert it, so a bad
    value is a config error naming the file and key, not a usage error."""
    options = {
        _key(p): p for p in ctx.command.params if isinstance(p, TyperOption) and p.expose_value
    }
    table = {k.replace("-", "_"): v for k, v in config.commands.get(name, {}).items()}
    unknown = sorted(set(table) - set(options))
    if unknown:
        raise ConfigFileError(
            f"{config.path}: unknown key(s) in [{name.replace(' ', '.')}]: {', '.join(unknown)} "
            f"(options of shadowlens {name}: {', '.join(sorted(options))})"
        )
    defaults: dict[str, Any] = {}
    for key, param in options.items():
        envvar = param.envvar if isinstance(param.envvar, str) else ""
        field = envvar.removeprefix(PREFIX).lower() if envvar.startswith(PREFIX) else None
        if key in table:
            where, value = f"[{name.replace(' ', '.')}] {key}", table[key]
        elif field in config.worker:
            where, value = f"[{WORKER}] {field}", config.worker[field]
        else:
            continue
        try:
            param.process_value(ctx, value)
        except typer.BadParameter as exc:
            raise ConfigFileError(f"{config.path}: {where}: {exc.message}") from None
        defaults[param.name or key] = value
    return defaults
