"""Every shell command block of README.md runs, as written, in README order.

The blocks run in a scratch checkout: a directory whose entries are symlinks to the repo's
(so `.venv/bin/shadowlens`, `bash scripts/setup.sh` and `bench/` work as in a clone) with
`../shared` beside it, and its own `./.shadowlens/ch`, so a developer's store is never
touched. Later blocks see what earlier ones wrote (`db query` reads the replays' rows).

Only two substitutions are made: the README's broker address `127.0.0.1:9092` becomes the
test broker's, and a long-running `shadowlens worker` is started in the background and
stopped (SIGTERM, clean exit expected) once the block's other commands are done. Skipped,
each for its reason: the test command itself (`bash scripts/test.sh`: this suite) and
anything that needs Docker.
"""

from __future__ import annotations

import os
import re
import shlex
import signal
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
README_BROKER = "127.0.0.1:9092"
SKIPPED = {
    "bash scripts/test.sh": "the test command runs this suite",
}
COMMAND_TIMEOUT_S = 900


@dataclass(frozen=True)
class Block:
    line: int  # README line of the opening fence
    commands: tuple[str, ...]

    @property
    def needs_kafka(self) -> bool:
        return any("--bootstrap" in c for c in self.commands)


def shell_blocks(text: str) -> list[Block]:
    """The ```bash blocks, each split into complete commands (continuation lines and
    quoted strings that span lines are joined; comments dropped)."""
    blocks: list[Block] = []
    lines = text.splitlines()
    i = 0
    while i < len(lines):
        match = re.fullmatch(r"```(\w*)\s*", lines[i])
        if not match:
            i += 1
            continue
        start, lang, body = i + 1, match.group(1), []
        i += 1
        while not lines[i].startswith("```"):
            body.append(lines[i])
            i += 1
        i += 1
        if lang in ("bash", "sh", "shell"):
            blocks.append(Block(start, tuple(split_commands(body))))
    return blocks


def split_commands(body: list[str]) -> list[str]:
    commands: list[str] = []
    pending = ""
    for raw in body:
        line = raw if pending else raw.strip()
        if not pending and (not line or line.startswith("#")):
            continue
        pending = f"{pending}\n{line}" if pending else line
        if pending.endswith("\\"):
            continue
        try:
            shlex.split(pending, comments=True)
        except ValueError:  # an open quote: the command goes on
            continue
        commands.append(pending)
        pending = ""
    assert not pending, f"unterminated command in README: {pending!r}"
    return commands


BLOCKS = shell_blocks(README.read_text())


def skip_reason(command: str) -> str | None:
    if "docker" in command.split():
        return "needs Docker"
    for prefix, reason in SKIPPED.items():
        if command.strip() == prefix:
            return reason
    return None


@pytest.fixture(scope="module")
def workspace(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A scratch checkout: `<tmp>/main` with the repo's entries as symlinks, `<tmp>/shared`."""
    base = tmp_path_factory.mktemp("readme")
    main = base / "main"
    main.mkdir()
    for entry in ROOT.iterdir():
        if entry.name not in {".git", ".shadowlens", "report.html", "my-events.jsonl"}:
            (main / entry.name).symlink_to(entry)
    (base / "shared").symlink_to(ROOT.parent / "shared")
    return main


def run(command: str, cwd: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["bash", "-euo", "pipefail", "-c", command],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=COMMAND_TIMEOUT_S,
        stdin=subprocess.DEVNULL,
    )


def test_the_readme_has_the_two_set_up_commands() -> None:
    """The runner must see the blocks it claims to run (a parser bug would pass vacuously)."""
    commands = [c for b in BLOCKS for c in b.commands]
    assert "bash scripts/setup.sh && .venv/bin/shadowlens replay" in commands
    assert "bash scripts/test.sh" in commands
    assert any(c.startswith(".venv/bin/shadowlens worker") for c in commands)
    assert len(BLOCKS) >= 6


@pytest.mark.parametrize(
    "block",
    [
        pytest.param(
            b, id=f"README.md:{b.line}", marks=[pytest.mark.kafka] if b.needs_kafka else []
        )
        for b in BLOCKS
    ],
)
def test_readme_block_runs(block: Block, workspace: Path) -> None:
    env = {**os.environ, "NO_COLOR": "1", "COLUMNS": "120"}
    env.pop("SHADOWLENS_CONFIG", None)
    broker = os.environ.get("SHADOWLENS_KAFKA_BOOTSTRAP", "")
    if block.needs_kafka:
        assert broker, "no test broker: run through scripts/test.sh"
    background: list[tuple[str, subprocess.Popen[bytes]]] = []
    ran = 0
    try:
        for command in block.commands:
            if skip_reason(command):
                continue
            command = command.replace(README_BROKER, broker) if broker else command
            if re.match(r"\S*shadowlens worker\b", command):
                log = open(workspace / f"worker-{block.line}.log", "wb")  # noqa: SIM115
                proc = subprocess.Popen(
                    ["bash", "-c", f"exec {command}"],
                    cwd=workspace,
                    env=env,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    stdin=subprocess.DEVNULL,
                )
                background.append((command, proc))
                continue
            result = run(command, workspace, env)
            assert result.returncode == 0, (
                f"README.md:{block.line}: `{command}` exited {result.returncode}\n"
                f"--- stdout\n{result.stdout[-4000:]}\n--- stderr\n{result.stderr[-4000:]}"
            )
            ran += 1
        for command, proc in background:
            assert proc.poll() is None, f"`{command}` ended early with {proc.returncode}"
            ran += 1
    finally:
        for _, proc in background:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
    for command, proc in background:
        deadline = time.monotonic() + 60
        while proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.2)
        if proc.poll() is None:
            proc.kill()
        assert proc.returncode == 0, f"`{command}` did not stop cleanly: {proc.returncode}"
    assert ran or all(skip_reason(c) for c in block.commands)
