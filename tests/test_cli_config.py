"""The config file (cli/config_file.py) through the real CLI: the shipped example loads,
precedence is flag > env > file > default, unknown keys are rejected by name, and a
password in the file is never printed."""

from __future__ import annotations

from pathlib import Path

import pytest
from shadowlens.cli.app import app
from shadowlens.cli.config_file import ConfigFile, ConfigFileError, load_config
from shadowlens.cli.exit_codes import ExitCode
from shadowlens.streams.config import Settings
from typer.testing import CliRunner

from tests.test_cli import commands, free_port

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "deploy" / "shadowlens.example.toml"
LEAVES = [" ".join(p) for p, cmd in commands() if p and not hasattr(cmd, "commands")]


def run(*args: str, env: dict[str, str] | None = None):
    return CliRunner().invoke(app, list(args), env=env)


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "shadowlens.toml"
    path.write_text(text)
    return path


def test_the_example_loads_and_every_key_is_a_setting_or_an_option() -> None:
    config = load_config(EXAMPLE, LEAVES)
    assert config.worker and set(config.commands) >= {"replay", "publish", "report"}
    Settings.from_env(env=config.env())  # every [worker] value is one the worker accepts
    for path, _ in commands():
        if path and " ".join(path) in LEAVES:  # --config first: its check runs before --help
            out = run(*path, "--config", str(EXAMPLE), "--help")
            assert out.exit_code == 0, f"{' '.join(path)}: {out.output}"


def test_precedence_flag_over_file_over_default(tmp_path) -> None:
    config = write(tmp_path, "[replay]\nrequests = 30\nstore = false\n")
    export = tmp_path / "e.jsonl"

    def lines(*extra: str, env: dict[str, str] | None = None) -> int:
        out = run("replay", "--export", str(export), "--replica-share", "0", *extra, env=env)
        assert out.exit_code == 0, out.output
        return len(export.read_bytes().splitlines())

    assert lines("--no-store", "--requests", "20") == 40  # no file: flags
    assert lines("--config", str(config)) == 60  # the file: 30 requests, two arms each
    assert lines("--config", str(config), "--requests", "10") == 20  # a flag beats the file
    assert lines(env={"SHADOWLENS_CONFIG": str(config)}) == 60  # the file from the environment


def test_precedence_env_over_file_for_settings(tmp_path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    config = write(tmp_path, '[worker]\ndsn = "chdb://./from-file/ch"\n')
    assert run("db", "migrate", "--config", str(config)).exit_code == 0
    assert (tmp_path / "from-file" / "ch").is_dir()
    env = {"SHADOWLENS_DSN": "chdb://./from-env/ch"}
    assert run("db", "migrate", "--config", str(config), env=env).exit_code == 0
    assert (tmp_path / "from-env" / "ch").is_dir()
    flag = ["--dsn", "chdb://./from-flag/ch"]
    assert run("db", "migrate", "--config", str(config), *flag, env=env).exit_code == 0
    assert (tmp_path / "from-flag" / "ch").is_dir()


def test_worker_settings_merge_file_and_environment(tmp_path) -> None:
    text = '[worker]\napp_id = "from-file"\nbatch_size = 10\nredact = true\nidle_after_s = 5\n'
    config = load_config(write(tmp_path, text), LEAVES)
    env = {"SHADOWLENS_APP_ID": "from-env", "SHADOWLENS_BATCH_SIZE": " "}  # blank: unset
    settings = Settings.from_env(env=config.settings_env(env))
    assert settings.app_id == "from-env"
    assert settings.batch_size == 10 and settings.redact is True and settings.idle_after_s == 5.0
    assert settings.kafka_bootstrap == Settings().kafka_bootstrap  # neither: the default
    overridden = Settings.from_env(env=config.settings_env(env), app_id="from-flag")
    assert overridden.app_id == "from-flag"


@pytest.mark.parametrize(
    "text, message",
    [
        ("[worker]\nbatch_sise = 3\n", "unknown key(s) in [worker]: batch_sise"),
        ("[worker]\nbatch_size = '3'\n", "[worker] batch_size must be int"),
        ("[worker]\nredact = 1\n", "[worker] redact must be bool"),
        ("[worker]\nprocessing_guarantee = 'twice'\n", "PROCESSING_GUARANTEE must be one of"),
        ("[replay]\nrequets = 3\n", "unknown key(s) in [replay]: requets"),
        ("[replay]\nrequests = 0\n", "[replay] requests:"),
        ("[repaly]\nrequests = 3\n", "unknown key [repaly]"),
        ("[db.migate]\n", "unknown key [db.migate]"),
        ("verbose = true\n", "unknown key [verbose]"),
        ("[worker\n", "is not valid TOML"),
    ],
)
def test_bad_files_are_configuration_errors_naming_file_and_key(tmp_path, text, message) -> None:
    path = write(tmp_path, text)
    out = run("replay", "--no-store", "--config", str(path))
    assert out.exit_code == ExitCode.CONFIG, out.output
    assert message in out.output and str(path) in out.output


def test_a_missing_file_is_a_configuration_error(tmp_path) -> None:
    out = run("plan", "--rate", "1", env={"SHADOWLENS_CONFIG": str(tmp_path / "nope.toml")})
    assert out.exit_code == ExitCode.CONFIG and "cannot read config file" in out.output


def test_passwords_in_the_file_are_never_printed(tmp_path) -> None:
    dsn = f"http://shadowlens:hunter2@127.0.0.1:{free_port()}"
    path = write(tmp_path, f'[worker]\ndsn = "{dsn}"\npolicy = "missing.toml"\n')
    missing_policy = run("report", "--experiment", "x", "--config", str(path))
    assert missing_policy.exit_code == ExitCode.CONFIG, missing_policy.output
    assert "[worker] policy" in missing_policy.output and "hunter2" not in missing_policy.output
    path.write_text(f'[worker]\ndsn = "{dsn}"\n')
    for args in (["report", "--experiment", "x"], ["db", "migrate"], ["db", "query", "SELECT 1"]):
        out = run(*args, "--config", str(path))
        assert out.exit_code == ExitCode.UNAVAILABLE, out.output
        assert "hunter2" not in out.output
    shown = run("report", "--config", str(path), "--help")
    assert shown.exit_code == 0 and "hunter2" not in shown.output
    config = load_config(path, LEAVES)
    assert "hunter2" not in repr(Settings.from_env(env=config.env()).describe())


def test_load_config_is_pure_data(tmp_path) -> None:
    path = write(tmp_path, '[worker]\napp_id = "a"\n[db.migrate]\ndsn = "chdb://./x"\n')
    config = load_config(path, LEAVES)
    assert config == ConfigFile(path, {"app_id": "a"}, {"db migrate": {"dsn": "chdb://./x"}})
    assert config.env() == {"SHADOWLENS_APP_ID": "a"}
    with pytest.raises(ConfigFileError, match="tables: "):
        load_config(write(tmp_path, "[db.nope]\n"), LEAVES)
