"""The `shadowlens` command as an operator meets it: --help everywhere, exit codes, progress
bars only in a terminal, --rebase-time. Exit codes are checked by running the real CLI
(CliRunner in process; a subprocess where the entry point itself matters)."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import fields
from pathlib import Path
from typing import Any

import orjson
import pytest
import typer.main
from shadowlens.cli.app import app
from shadowlens.cli.exit_codes import MEANINGS, ExitCode
from shadowlens.replay.run import parse_start_time
from shadowlens.streams.config import PREFIX, Settings
from typer.core import TyperGroup
from typer.testing import CliRunner

CLI_ONLY_ENV = {"SHADOWLENS_CONFIG"}  # the config file's path: not a worker setting
SETTINGS_ENV = {PREFIX + f.name.upper() for f in fields(Settings)}


def commands(cmd: Any = None, path: tuple[str, ...] = ()) -> Iterator[tuple[tuple[str, ...], Any]]:
    """Every command and group of the CLI with its path, the root first."""
    cmd = cmd or typer.main.get_command(app)
    yield path, cmd
    if isinstance(cmd, TyperGroup):
        for name, sub in cmd.commands.items():
            yield from commands(sub, (*path, name))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run(*args: str, env: dict[str, str] | None = None):
    return CliRunner().invoke(app, list(args), env=env)


# ---- --help ---------------------------------------------------------------------------------


@pytest.mark.parametrize("path", [p for p, _ in commands()], ids=lambda p: " ".join(p) or "root")
def test_help_on_every_command_and_every_option_has_help_text(path) -> None:
    cmd = dict(commands())[path]
    out = run(*path, "--help")
    assert out.exit_code == 0, out.output
    assert "Usage:" in out.output and (cmd.help or "").split("\n")[0][:40] in out.output
    for param in cmd.params:
        assert (getattr(param, "help", None) or "").strip(), f"{path} {param.name} has no help"


def test_the_root_help_lists_the_exit_codes() -> None:
    out = run("--help").output
    for code in ExitCode:
        assert f"{int(code)} {MEANINGS[code].split()[0]}" in out


def test_every_declared_envvar_is_a_setting() -> None:
    declared = {
        (" ".join(path), p.envvar)
        for path, cmd in commands()
        for p in cmd.params
        if getattr(p, "envvar", None)
    }
    assert declared, "no command declares an environment variable"
    for where, envvar in declared:
        assert isinstance(envvar, str) and envvar.startswith(PREFIX), (where, envvar)
        assert envvar in SETTINGS_ENV | CLI_ONLY_ENV, f"{where}: {envvar} is no setting"


# ---- exit codes -----------------------------------------------------------------------------


def test_ok_and_usage_errors() -> None:
    assert run("plan", "--rate", "2").exit_code == ExitCode.OK
    assert run("replay", "--requests", "0").exit_code == ExitCode.USAGE
    assert run("replay", "--no-such-flag").exit_code == ExitCode.USAGE
    bad_time = run("replay", "--no-store", "--rebase-time", "yesterday")
    assert bad_time.exit_code == ExitCode.USAGE and "is not a time" in bad_time.output


def test_bad_configuration(tmp_path: Path) -> None:
    env = {"SHADOWLENS_HEARTBEAT_INTERVAL_S": "60"}  # not below the session timeout
    worker = run("worker", env=env)
    assert worker.exit_code == ExitCode.CONFIG
    assert "HEARTBEAT_INTERVAL_S must be below" in worker.output
    policy = tmp_path / "policy.toml"
    policy.write_text("[errors]\nmax_absolut = 0.1\n")
    out = run("plan", "--rate", "2", "--policy", str(policy))
    assert out.exit_code == ExitCode.CONFIG and "max_absolut" in out.output
    bad_dsn = run("db", "migrate", "--dsn", "mysql://root:hunter2@db:3306")
    assert bad_dsn.exit_code == ExitCode.CONFIG
    assert "unsupported ClickHouse DSN" in bad_dsn.output and "hunter2" not in bad_dsn.output


def test_unreachable_store_and_broker() -> None:
    port = free_port()  # nothing listens there
    store = run("db", "migrate", "--dsn", f"http://shadowlens:hunter2@127.0.0.1:{port}")
    assert store.exit_code == ExitCode.UNAVAILABLE, store.output
    assert "ClickHouse unreachable" in store.output and "hunter2" not in store.output
    broker = run("publish", "--bootstrap", f"127.0.0.1:{port}", "--requests", "5")
    assert broker.exit_code == ExitCode.UNAVAILABLE, broker.output
    assert "Kafka unreachable" in broker.output


def test_replay_fails_on_rollback_only_when_asked() -> None:
    args = ["replay", "--no-store", "--requests", "600", "--latency-factor", "2"]
    gated = run(*args, "--fail-on-rollback")
    assert gated.exit_code == ExitCode.ROLLBACK, gated.output
    assert "the judge rolled back" in gated.output and "latency_p99" in gated.output
    assert run(*args).exit_code == ExitCode.OK
    clean = run("replay", "--no-store", "--requests", "600", "--fail-on-rollback")
    assert clean.exit_code == ExitCode.OK, clean.output


@pytest.fixture(scope="module")
def store_dsn(tmp_path_factory) -> str:
    """A store with a rolled-back experiment and one too small to decide anything."""
    dsn = f"chdb://{tmp_path_factory.mktemp('cli')}/ch"
    common = ["replay", "--dsn", dsn, "--no-progress"]
    for experiment, requests in (("slow", "600"), ("tiny", "60")):
        extra = ["--latency-factor", "2"] if experiment == "slow" else []
        out = run(*common, "--experiment", experiment, "--requests", requests, *extra)
        assert out.exit_code == 0, out.output
    return dsn


@pytest.mark.parametrize(
    "experiment, flag, code",
    [
        ("slow", None, ExitCode.OK),
        ("slow", "--fail-on-rollback", ExitCode.ROLLBACK),
        ("slow", "--require-go", ExitCode.ROLLBACK),
        ("tiny", "--fail-on-rollback", ExitCode.OK),
        ("tiny", "--require-go", ExitCode.NOT_READY),
    ],
)
def test_report_gates_on_the_verdict(store_dsn, tmp_path, experiment, flag, code) -> None:
    args = ["report", "--experiment", experiment, "--dsn", store_dsn]
    out = run(*args, "--out", str(tmp_path / "r.html"), *([flag] if flag else []))
    assert out.exit_code == code, out.output
    assert ("NO-GO" if experiment == "slow" else "NOT YET") in out.output


def test_unexpected_error_is_one_line_and_debug_shows_the_traceback(tmp_path) -> None:
    target = tmp_path / "no" / "x.jsonl"  # its directory does not exist
    args = ["replay", "--no-store", "--requests", "10", "--export", str(target)]
    plain = run(*args)
    assert plain.exit_code == ExitCode.FAILURE
    assert plain.output.strip().splitlines() == [
        f"error: FileNotFoundError: [Errno 2] No such file or directory: '{target}' "
        "(rerun with --debug for the traceback)"
    ]
    # --debug, through the installed entry point as a shell runs it
    env = {k: v for k, v in os.environ.items() if k != "SHADOWLENS_LOG_LEVEL"}
    cli = [sys.executable, "-c", "from shadowlens.cli.app import app; app()", "--debug", *args]
    debug = subprocess.run(cli, capture_output=True, text=True, env=env, timeout=120)
    assert debug.returncode == ExitCode.FAILURE and "Traceback" in debug.stderr
    assert "write_jsonl" in debug.stderr  # the frame that raised
    assert run(*args, env={"SHADOWLENS_LOG_LEVEL": "debug"}).exception is not None


# ---- progress bars --------------------------------------------------------------------------


@pytest.mark.parametrize("tty, flag, drawn", [(True, None, True), (True, "--no-progress", False),
                                              (False, None, False)])  # fmt: skip
def test_progress_bar_only_in_a_terminal(tty, flag, drawn) -> None:
    """TTY_COMPATIBLE/TTY_INTERACTIVE make rich take the captured streams for a terminal."""
    env = {"TTY_COMPATIBLE": "1", "TTY_INTERACTIVE": "1"} if tty else {}
    args = ["replay", "--no-store", "--requests", "50", *([flag] if flag else [])]
    out = CliRunner().invoke(app, args, env=env)
    assert out.exit_code == 0, out.output
    assert ("replay" in out.stderr and "events" in out.stderr) is drawn, out.stderr
    assert "\x1b[?25l" not in out.stdout  # no live display (it hides the cursor) on stdout


# ---- --rebase-time --------------------------------------------------------------------------


@pytest.mark.parametrize(
    "text, expected",
    [
        ("now", 1_000_000_000),
        ("now-15m", 1_000_000_000 - 900_000),
        ("now+2h", 1_000_000_000 + 7_200_000),
        ("now-1d", 1_000_000_000 - 86_400_000),
        ("2023-11-16T18:15:46.680Z", 1_700_158_546_680),
        ("2023-11-16 18:15:46.680", 1_700_158_546_680),  # no zone: UTC
        ("2023-11-16T19:15:46.680+01:00", 1_700_158_546_680),
    ],
)
def test_parse_start_time(text, expected) -> None:
    assert parse_start_time(text, 1_000_000_000) == expected


@pytest.mark.parametrize("text", ["yesterday", "now-15", "now-3w", ""])
def test_parse_start_time_rejects(text) -> None:
    with pytest.raises(ValueError, match="is not a time"):
        parse_start_time(text, 0)


def test_rebase_time_moves_built_traffic_keeping_its_shape(tmp_path) -> None:
    def export(*extra: str) -> list[dict]:
        path = tmp_path / "e.jsonl"
        args = ["replay", "--no-store", "--requests", "40", "--export", str(path), *extra]
        assert run(*args).exit_code == 0
        return [orjson.loads(line) for line in path.read_bytes().splitlines()]

    original = export()
    before = int(time.time() * 1000)
    moved = export("--rebase-time", "now-15m")
    first = min(e["start_time_ms"] for e in moved)
    assert before - 900_000 <= first <= int(time.time() * 1000) - 900_000
    shift = first - min(e["start_time_ms"] for e in original)
    assert [e["start_time_ms"] - shift for e in moved] == [e["start_time_ms"] for e in original]
    assert [e["latency_ms"] for e in moved] == [e["latency_ms"] for e in original]


def test_rebase_time_is_refused_for_a_recorded_file(tmp_path) -> None:
    path = tmp_path / "e.jsonl"
    path.write_text("{}\n")
    out = run("replay", "--no-store", "--events", str(path), "--rebase-time", "now")
    assert out.exit_code == ExitCode.USAGE and "keeps its times" in out.output
