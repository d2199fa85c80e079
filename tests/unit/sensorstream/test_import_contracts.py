"""Imports point one way, down (docs/architecture.md, "Package dependencies").

The contracts live in pyproject.toml (`[tool.importlinter]`) and `make lint` checks them; this
test runs the same check so that a violation also fails the test suite, with import-linter's
report (the importing module, the line and the chain) as the failure message. Function-local
and TYPE_CHECKING imports count like any other.

Each contract is also shown to catch what it forbids, on a copy of the code with one offending
import added: a contract that a typo made vacuous would fail here.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[3]
LINT_IMPORTS = Path(sys.executable).with_name("lint-imports")
CONFIG = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))["tool"][
    "importlinter"
]


def lint_imports(root: Path, *contracts: str) -> subprocess.CompletedProcess[str]:
    assert LINT_IMPORTS.exists(), (
        f"{LINT_IMPORTS} is missing: import-linter is in the dev dependency group; run `uv sync`"
    )
    args = [str(LINT_IMPORTS), "--no-cache", "--no-logo"]
    for contract in contracts:
        args += ["--contract", contract]
    return subprocess.run(args, cwd=root, capture_output=True, text=True, timeout=300)


def test_every_import_keeps_the_contracts() -> None:
    result = lint_imports(REPO)
    assert result.returncode == 0, (
        "an import breaks the dependency rule of docs/architecture.md:\n"
        f"{result.stdout}{result.stderr}"
    )
    assert f"{len(CONFIG['contracts'])} kept, 0 broken" in result.stdout, result.stdout


# One offending module per contract: (contract id, file to add, its text).
VIOLATIONS = {
    "layers": ("schemas/_probe.py", "from stream_apps.settings import RouterSettings\n"),
    "components": ("sinks/_probe.py", "def f():\n    from producers.settings import X\n"),
    "ground": (
        "sensorstream/_probe.py",
        "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    import schemas.registry\n",
    ),
    "cli": ("sensorstream/_probe.py", "from sensorstream.cli import main\n"),
    "acyclic": ("stream_apps/routing/_probe.py", "from stream_apps.routing import config\n"),
}


def test_every_contract_is_checked_here() -> None:
    assert sorted(VIOLATIONS) == sorted(c["id"] for c in CONFIG["contracts"])


@pytest.mark.parametrize("contract", sorted(VIOLATIONS))
def test_the_contract_catches_an_offending_import(contract: str, tmp_path: Path) -> None:
    for package in CONFIG["root_packages"]:
        shutil.copytree(
            REPO / package, tmp_path / package, ignore=shutil.ignore_patterns("__pycache__")
        )
    shutil.copy(REPO / "pyproject.toml", tmp_path)
    path, text = VIOLATIONS[contract]
    (tmp_path / path).write_text(text, encoding="utf-8")
    if contract == "acyclic":  # the other half of the cycle
        config = tmp_path / "stream_apps/routing/config.py"
        config.write_text(
            config.read_text(encoding="utf-8") + "\nfrom stream_apps.routing import _probe\n",
            encoding="utf-8",
        )
    result = lint_imports(tmp_path, contract)
    assert result.returncode == 1, f"{contract} did not catch {path}:\n{result.stdout}"
    assert "BROKEN" in result.stdout and "_probe" in result.stdout, result.stdout
