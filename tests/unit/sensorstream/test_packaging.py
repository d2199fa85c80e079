"""The wheel and the installs per role (README.md "Install", docs/architecture.md "Packaging").

The wheel holds the product only, under one top-level package, and an install with one role's
extra runs that role's commands without the other roles' libraries. Both are checked on a wheel
built from this checkout by uv, the way a release is built; the role install is a fresh virtual
environment filled from uv's cache only (no network), so it runs in CI like any unit test.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import zipfile
from email.parser import Parser
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[3]
COMPONENTS = ("producers", "stream_apps", "sinks", "schemas", "audit")
HUB_LIBRARIES = ("quixstreams", "deltalake", "polars", "pyarrow")

pytestmark = pytest.mark.slow


def uv() -> str:
    # `uv run` (make test) names itself in UV; else the one on PATH or bootstrapped by make.
    found = os.environ.get("UV") or shutil.which("uv") or str(REPO / ".tools/uv/bin/uv")
    assert Path(found).exists(), "no uv on PATH nor in .tools/uv/bin: run `make bootstrap`"
    return found


def run(command: list[str], **kwargs) -> subprocess.CompletedProcess[str]:
    return subprocess.run(command, capture_output=True, text=True, timeout=600, **kwargs)


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("dist")
    built = run([uv(), "build", "--wheel", "--out-dir", str(out), str(REPO)])
    assert built.returncode == 0, built.stderr[-3000:]
    (path,) = out.glob("sensorstream-*.whl")
    return path


def wheel_names(wheel: Path) -> list[str]:
    with zipfile.ZipFile(wheel) as archive:
        return archive.namelist()


def test_wheel_installs_one_top_level_package_without_the_dev_tooling(wheel: Path) -> None:
    names = wheel_names(wheel)
    top = {name.split("/")[0] for name in names}
    assert top == {"sensorstream", "sensorstream-0.1.0.dist-info"}, sorted(top)
    for component in COMPONENTS:
        assert f"sensorstream/_components/{component}/__init__.py" in names, component
    assert "sensorstream/_components/producers/tailer.py" in names
    assert "sensorstream/cli.py" in names
    dev = [n for n in names if {"infra", "local_stack", "benchmarks", "tests"} & set(n.split("/"))]
    assert not dev, f"development tooling in the wheel: {dev[:10]}"
    assert not [n for n in names if "__pycache__" in n or n.endswith(".pyc")]


def test_wheel_keeps_the_hub_libraries_in_role_extras(wheel: Path) -> None:
    with zipfile.ZipFile(wheel) as archive:
        metadata_name = next(n for n in archive.namelist() if n.endswith(".dist-info/METADATA"))
        metadata = Parser().parsestr(archive.read(metadata_name).decode())
    extras = set(metadata.get_all("Provides-Extra"))
    assert {"producer", "router", "sink", "audit", "all"} <= extras, extras
    unconditional = [r for r in metadata.get_all("Requires-Dist") if "extra ==" not in r]
    heavy = [r for r in unconditional if r.split()[0].split("[")[0].lower() in HUB_LIBRARIES]
    assert not heavy, f"every install pulls {heavy}"


@pytest.fixture(scope="module")
def producer_install(wheel: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh virtual environment with `sensorstream[producer]`: what an edge node installs.
    The dependencies are uv.lock's versions for that extra, taken from uv's cache alone (no
    network); then the wheel itself."""
    where = tmp_path_factory.mktemp("edge")
    venv, lock = where / "venv", where / "pylock.toml"
    python = str(venv / "bin" / "python")
    steps = [
        [uv(), "venv", "--python", sys.executable, str(venv)],
        [uv(), "export", "--frozen", "--format", "pylock.toml", "--extra", "producer",
         "--no-default-groups", "--no-emit-project", "--output-file", str(lock)],
        [uv(), "pip", "install", "--offline", "--python", python, "-r", str(lock)],
        [uv(), "pip", "install", "--offline", "--no-deps", "--python", python, str(wheel)],
    ]  # fmt: skip
    for step in steps:
        done = run(step, cwd=REPO)
        assert done.returncode == 0, f"{step}: {done.stderr[-3000:]}"
    return venv


def edge_env(venv: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in {"PYTHONPATH", "VIRTUAL_ENV"}}
    env["PATH"] = f"{venv / 'bin'}{os.pathsep}{env.get('PATH', '')}"
    return env


def edge_command(venv: Path, cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """The `sensorstream` program of the install `venv`, run as on an edge node."""
    return run([str(venv / "bin" / "sensorstream"), *args], cwd=cwd, env=edge_env(venv))


def test_producer_install_has_no_hub_libraries_and_no_generic_names(
    producer_install: Path, tmp_path: Path
) -> None:
    probe = (
        "import importlib.util, json, sys; "
        "print(json.dumps({m: importlib.util.find_spec(m) is not None for m in sys.argv[1:]}))"
    )
    found = run(
        [str(producer_install / "bin" / "python"), "-c", probe, *HUB_LIBRARIES, *COMPONENTS],
        cwd=tmp_path,
        env=edge_env(producer_install),
    )
    assert found.returncode == 0, found.stderr[-3000:]
    importable = [name for name, present in json.loads(found.stdout).items() if present]
    assert importable == [], f"importable in the user's environment: {importable}"


def test_producer_install_runs_the_edge_commands(producer_install: Path, tmp_path: Path) -> None:
    helped = edge_command(producer_install, tmp_path, "produce", "--help")
    assert helped.returncode == 0 and "--sqlite" in helped.stdout, helped.stderr[-3000:]
    # A --config file is checked against every role's settings, the sink's included.
    config = tmp_path / "edge.yaml"
    config.write_text("simulator:\n  sensors: 2\n", encoding="utf-8")
    db = tmp_path / "edge.db"
    simulated = edge_command(
        producer_install, tmp_path,
        "simulate", "--db", str(db), "--count", "20", "--rate", "0", "--config", str(config),
    )  # fmt: skip
    assert simulated.returncode == 0, simulated.stderr[-3000:]
    assert db.exists()


@pytest.mark.parametrize(
    ("command", "extra"),
    [
        (["sink", "--once"], "sink"),
        (["route", "--once"], "router"),
        (["compact", "s3://lake/raw"], "sink"),
        (["audit", "--lake", "s3://lake", "--no-checkpoints"], "audit"),
    ],
)
def test_a_command_of_another_role_names_its_extra(
    producer_install: Path, tmp_path: Path, command: list[str], extra: str
) -> None:
    result = edge_command(producer_install, tmp_path, *command)
    assert result.returncode == 2, (result.returncode, result.stderr[-3000:])
    assert f"pip install 'sensorstream[{extra}]'" in result.stderr, result.stderr[-3000:]


@pytest.mark.parametrize("command", [["stack", "status"], ["demo", "--duration", "1"]])
def test_dev_tooling_is_a_source_checkout_away(
    producer_install: Path, tmp_path: Path, command: list[str]
) -> None:
    result = edge_command(producer_install, tmp_path, *command)
    assert result.returncode == 2, (result.returncode, result.stderr[-3000:])
    assert "development tooling" in result.stderr and "make demo" in result.stderr, result.stderr
