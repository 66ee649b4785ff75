"""The house rules: rooms import one way (import-linter), every import goes through the
`shadowlens` namespace, and the built wheel installs nothing but that namespace."""

from __future__ import annotations

import ast
import os
import shutil
import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent


def package_dirs() -> dict[str, Path]:
    """`shadowlens.<room>` -> its folder, as every pyproject.toml of the repo maps them."""
    mapping: dict[str, Path] = {}
    for pyproject in (ROOT / "pyproject.toml", *ROOT.glob("*/pyproject.toml")):
        config = tomllib.loads(pyproject.read_text())["tool"]["setuptools"]
        for name, folder in config.get("package-dir", {}).items():
            mapping[name] = pyproject.parent / folder
    return mapping


def rooms() -> dict[str, Path]:
    """The top-level rooms: `shadowlens.X` (not its subpackages) -> folder."""
    return {
        name.split(".")[1]: path for name, path in package_dirs().items() if name.count(".") == 1
    }


def sources() -> list[Path]:
    skip = {".venv", ".git", "node_modules"}
    return [
        p
        for p in ROOT.rglob("*.py")
        if not skip & set(p.relative_to(ROOT).parts) and "build" not in p.relative_to(ROOT).parts
    ]


def test_every_room_is_mapped_into_the_namespace() -> None:
    mapped = rooms()
    for room in ("schemas", "comparators", "pipeline", "judge", "job", "store", "streams"):
        assert mapped[room].is_dir(), room
    assert mapped["streams"] == ROOT / "streams"


def test_no_bare_import_of_a_room() -> None:
    """`import pipeline` would work from the repo root by accident and collide elsewhere."""
    bare = set(rooms())
    found = []
    for path in sources():
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            names: list[str] = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            found += [
                f"{path.relative_to(ROOT)}:{node.lineno} {n}"
                for n in names
                if n.split(".")[0] in bare
            ]
    assert found == []


def test_the_layers_hold(tmp_path: Path) -> None:
    """import-linter's contracts (pyproject.toml) on a view of the folders as `shadowlens`:
    grimp cannot follow setuptools' editable finder, so the view is a tree of symlinks."""
    view = tmp_path / "shadowlens"
    view.mkdir()
    for room, folder in rooms().items():
        (view / room).symlink_to(folder, target_is_directory=True)
    env = {**os.environ, "PYTHONPATH": str(tmp_path)}
    result = subprocess.run(
        [str(BIN / "lint-imports"), "--config", str(ROOT / "pyproject.toml")],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "0 broken" in result.stdout


def test_the_wheel_installs_only_the_namespace(tmp_path: Path) -> None:
    """No bare `pipeline`, `schemas` or `cli` package, no `shadowlens/__init__.py` (the
    gateway SDK shares the namespace), and the package data travels with it."""
    source = tmp_path / "src"  # a copy: setuptools writes build/ beside the sources
    shutil.copytree(
        ROOT,
        source,
        ignore=shutil.ignore_patterns(
            ".git", ".venv", "build", "*.egg-info", ".shadowlens", "__pycache__", "tests"
        ),
    )
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "-q",
            "--no-deps",
            "--no-build-isolation",
            "-w",
            str(tmp_path),
            str(source),
        ],
        check=True,
        capture_output=True,
        timeout=300,
    )
    (wheel,) = tmp_path.glob("shadowlens-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    assert {n.split("/")[0] for n in names} == {
        "shadowlens",
        wheel.name.split("-py3")[0] + ".dist-info",
    }
    assert "shadowlens/__init__.py" not in names
    for data in (
        "shadowlens/schemas/clickhouse/0001_pairs.sql",
        "shadowlens/judge/default_policy.toml",
        "shadowlens/replay/data/alpaca_sample.json",
    ):
        assert data in names


@pytest.mark.parametrize("room", ["pipeline", "schemas", "cli", "streams", "judge"])
def test_no_bare_room_is_importable_outside_the_repo(room: str, tmp_path: Path) -> None:
    """From another directory (the repo root not on sys.path) only `shadowlens.X` imports."""
    code = f"import importlib.util as u; print(u.find_spec({room!r}) is None)"
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, check=True
    )
    assert out.stdout.strip() == "True"
