"""How the worker signs what it publishes and checks what operators send
(streams/control.py), and the `keys new` / `control` commands that make and send them."""

from __future__ import annotations

import logging
import os
import stat
from pathlib import Path

import orjson
import pytest
from shadowlens.cli.app import app
from shadowlens.cli.exit_codes import ExitCode
from shadowlens.gateway.control import Verifier, sign
from shadowlens.gateway.keys import generate, parse_key_ring, parse_signing_key
from shadowlens.judge.decide import ExperimentState
from shadowlens.judge.policy import RampPolicy
from shadowlens.judge.verdicts import Command
from shadowlens.streams.config import Settings, SettingsError
from shadowlens.streams.control import (
    CommandRejected,
    command_message,
    control_signer,
    heartbeat_message,
    operator_verifier,
    read_command,
)
from typer.testing import CliRunner

WORKER, ALICE = generate("worker-1"), generate("alice")
NOW = 1_800_000_000_000
MAX_AGE_MS = 600_000
HB = heartbeat_message("exp", ExperimentState(), RampPolicy(), NOW)


def test_the_worker_signs_with_its_key() -> None:
    signer = control_signer(Settings(signing_key=WORKER.private_line()))
    signed = signer(HB)
    assert Verifier(parse_key_ring(WORKER.public_line())).verify(signed) == "worker-1"
    assert signer.describe() == "ed25519 key 'worker-1'" and not signer.unsigned


def test_without_a_key_the_worker_refuses_unless_allowed_and_then_says_it_loudly(
    caplog: pytest.LogCaptureFixture,
) -> None:
    with pytest.raises(SettingsError, match=r"no signing key.*shadowlens keys new"):
        control_signer(Settings())
    with caplog.at_level(logging.ERROR):
        signer = control_signer(Settings(allow_unsigned=True))
    assert signer.unsigned and signer(HB) == HB
    assert "CONTROL MESSAGES ARE UNSIGNED" in caplog.text


def test_the_legacy_hmac_key_publishes_version_1(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING):
        signed = control_signer(Settings(control_key="shared"))(HB)
    assert signed["schema_version"] == 1 and "phase" not in signed
    assert Verifier(hmac_key=b"shared").verify(signed) == "hmac"
    assert "every router that verifies can also forge" in caplog.text


def test_key_settings_are_checked_and_secret(tmp_path: Path) -> None:
    with pytest.raises(SettingsError, match="SIGNING_KEY"):
        control_signer(Settings(signing_key=WORKER.public_line()))
    with pytest.raises(SettingsError, match="OPERATOR_KEYS"):
        operator_verifier(Settings(operator_keys=ALICE.private_line()))
    key_file = tmp_path / "worker.key"
    key_file.write_text(WORKER.private_line())
    s = Settings.from_env({"SHADOWLENS_SIGNING_KEY_FILE": str(key_file)})
    assert control_signer(s).key is not None
    s = Settings.from_env(
        {"SHADOWLENS_SIGNING_KEY": WORKER.private_line(), "SHADOWLENS_CONTROL_KEY": "shared-secret"}
    )
    assert s.describe()["signing_key"] == s.describe()["control_key"] == "***"
    assert WORKER.private_line().split()[-1] in s.secrets() and "shared-secret" in s.secrets()
    assert WORKER.private_line().split()[-1] not in repr(s)


def test_commands_are_read_only_from_allowlisted_keys_and_while_fresh() -> None:
    verifier = operator_verifier(Settings(operator_keys=ALICE.public_line()))
    good = sign(command_message("exp", Command.PAUSE, 3, "freeze", NOW), ALICE)
    cmd = read_command(orjson.dumps(good), verifier, NOW + 1_000, MAX_AGE_MS)
    assert (cmd.command, cmd.key_id, cmd.epoch, cmd.reason) == (Command.PAUSE, "alice", 3, "freeze")
    cases = {
        b"{not json": "invalid",
        orjson.dumps({**good, "command": "promote"}): "invalid",
        orjson.dumps(HB): "invalid",
        orjson.dumps({**good, "epoch": 4}): "bad_signature",
        orjson.dumps(
            sign(command_message("exp", Command.PAUSE, 3, "x", NOW), generate("eve"))
        ): "unknown_key",
        orjson.dumps(
            sign(command_message("exp", Command.PAUSE, 3, "x", NOW - 700_000), ALICE)
        ): "expired",
    }
    for raw, reason in cases.items():
        with pytest.raises(CommandRejected) as info:
            read_command(raw, verifier, NOW, MAX_AGE_MS)
        assert info.value.reason == reason, raw


def test_keys_new_writes_a_private_and_a_public_file_and_never_overwrites(tmp_path: Path) -> None:
    out = CliRunner().invoke(app, ["keys", "new", "--id", "alice", "--out", str(tmp_path)])
    assert out.exit_code == 0, out.output
    private, public = tmp_path / "alice.key", tmp_path / "alice.pub"
    assert stat.S_IMODE(os.stat(private).st_mode) == 0o600
    key = parse_signing_key(private.read_text())
    assert public.read_text().strip() == key.public_line() and key.public_line() in out.output
    again = CliRunner().invoke(app, ["keys", "new", "--id", "alice", "--out", str(tmp_path)])
    assert again.exit_code == ExitCode.CONFIG and "never overwritten" in again.output
    bad = CliRunner().invoke(app, ["keys", "new", "--id", "a b", "--out", str(tmp_path)])
    assert bad.exit_code == ExitCode.USAGE


def test_control_needs_an_operator_key() -> None:
    env = {"SHADOWLENS_OPERATOR_KEY": ""}
    out = CliRunner().invoke(app, ["control", "pause", "exp", "--reason", "r"], env=env)
    assert out.exit_code == ExitCode.CONFIG and "no operator key" in out.output
