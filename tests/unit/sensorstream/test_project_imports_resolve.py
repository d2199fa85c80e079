"""Every `from <project module> import <name>` in the project names something that exists.

Benchmarks and tools import inside functions (to keep start-up light), so a name moved or
removed elsewhere breaks them only when that function runs: a benchmark that runs for minutes
in CI failed at its last step when a constant it imported had been moved. This test resolves
every such import without running the code around it.
"""

from __future__ import annotations

import ast
import importlib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[3]
PACKAGES = (
    "audit",
    "benchmarks",
    "infra",
    "producers",
    "schemas",
    "sensorstream",
    "sinks",
    "stream_apps",
    "tests",
)
# Run on a Databricks cluster, with the bundle's own package on the path.
OUTSIDE = ("infra/databricks/",)


def project_files() -> list[Path]:
    files = []
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            relative = path.relative_to(ROOT).as_posix()
            if not relative.startswith(OUTSIDE):
                files.append(path)
    return files


def project_imports(path: Path) -> list[tuple[int, str, str]]:
    """(line, module, name) of each `from X import name` whose X is one of ours."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if (
            isinstance(node, ast.ImportFrom)
            and node.level == 0
            and node.module
            and node.module.split(".")[0] in PACKAGES
        ):
            found.extend((node.lineno, node.module, alias.name) for alias in node.names)
    return found


def unresolved(module: str, name: str) -> str | None:
    try:
        loaded = importlib.import_module(module)
    except ImportError as exc:
        return f"module {module} does not import: {exc}"
    if name == "*" or hasattr(loaded, name):
        return None
    try:
        importlib.import_module(f"{module}.{name}")
    except ImportError:
        return f"{module} has no {name}"
    return None


def test_the_project_has_files_to_check():
    assert len(project_files()) > 100


def test_the_check_finds_a_missing_name(tmp_path):
    """The checker itself: a name that is not there is reported."""
    assert unresolved("stream_apps.app", "DEFAULT_ROUTES") is None
    assert unresolved("infra.local_stack.chaos", "ROUTES_FILE") == (
        "infra.local_stack.chaos has no ROUTES_FILE"
    )


@pytest.mark.parametrize("path", project_files(), ids=lambda p: p.relative_to(ROOT).as_posix())
def test_every_project_import_resolves(path):
    problems = [
        f"{path.relative_to(ROOT)}:{line}: {problem}"
        for line, module, name in project_imports(path)
        if (problem := unresolved(module, name)) is not None
    ]
    assert problems == []
