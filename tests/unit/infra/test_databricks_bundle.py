"""The Databricks asset bundle (infra/databricks) against the rules `databricks bundle validate`
applies before it talks to a workspace.

The Databricks CLI is a Go binary that cannot be installed from the package registries this
project's machines and CI reach, so these tests check, on the files, the rules of the CLI's own
validation that a deployment of this bundle meets: a production target names its
`workspace.root_path` (without it `validate -t prod` fails for a user), a development target
keeps every path inside the deploying user's home, every `${var.*}` is declared and every
variable without a default gets a value in every target, and every path the resources name
exists. When a `databricks` binary is on PATH, the CLI itself validates every target.
"""

from __future__ import annotations

import fnmatch
import os
import re
import shutil
import subprocess
from functools import cache
from pathlib import Path
from typing import Any

import pytest
import yaml

REPO = Path(__file__).resolve().parents[3]
BUNDLE_DIR = REPO / "infra" / "databricks"
BUNDLE = BUNDLE_DIR / "databricks.yml"
REFERENCE = re.compile(r"\$\{([\w.\-\[\]]+)\}")
# What `${...}` may name in a bundle: variables and the bundle's own computed values.
REFERENCE_ROOTS = {"var", "bundle", "workspace", "resources", "artifacts", "variables"}
PAUSE_STATUSES = {"PAUSED", "UNPAUSED"}


def _load(path: Path) -> dict[str, Any]:
    return yaml.safe_load(path.read_text(encoding="utf-8")) or {}


@cache
def bundle() -> dict[str, Any]:
    return _load(BUNDLE)


def resource_files() -> list[Path]:
    files: list[Path] = []
    for pattern in bundle().get("include", []):
        matched = sorted(BUNDLE_DIR.glob(pattern))
        assert matched, f"databricks.yml include {pattern!r} matches no file"
        files += matched
    return files


def _walk(node: Any, path: str = "") -> list[tuple[str, Any]]:
    """(dotted path, value) of every scalar under `node`."""
    if isinstance(node, dict):
        return [item for key, value in node.items() for item in _walk(value, f"{path}.{key}")]
    if isinstance(node, list):
        return [item for i, value in enumerate(node) for item in _walk(value, f"{path}[{i}]")]
    return [(path.lstrip("."), node)]


def all_scalars() -> list[tuple[Path, str, Any]]:
    return [(BUNDLE, p, v) for p, v in _walk(bundle())] + [
        (f, p, v) for f in resource_files() for p, v in _walk(_load(f))
    ]


def test_every_production_target_names_its_root_path() -> None:
    """`mode: production` without an explicit `workspace.root_path` fails `bundle validate`
    for a user that sets no `run_as` ("must set 'workspace.root_path' to make sure only one
    copy is deployed"), and is a recommendation even for a service principal."""
    targets = bundle()["targets"]
    production = [name for name, t in targets.items() if t.get("mode") == "production"]
    assert production
    for name in production:
        root = (targets[name].get("workspace") or {}).get("root_path")
        assert root, f"databricks.yml targets.{name}: mode production needs workspace.root_path"
        assert root.startswith("/Workspace/"), f"targets.{name}.workspace.root_path: {root}"
        assert "${bundle.target}" in root and "${bundle.name}" in root, (
            f"targets.{name}.workspace.root_path must be unique to the bundle and the target"
        )


def test_development_targets_keep_their_paths_in_the_users_home() -> None:
    """`mode: development` refuses a root, file, artifact or state path that neither starts
    with ~/ nor names the current user: two developers would deploy over each other."""
    for name, target in bundle()["targets"].items():
        if target.get("mode") != "development":
            continue
        for key, value in (target.get("workspace") or {}).items():
            if key.endswith("_path"):
                assert value.startswith("~/") or "current_user" in value, (
                    f"targets.{name}.workspace.{key}: {value}"
                )


def test_exactly_one_default_target() -> None:
    defaults = [n for n, t in bundle()["targets"].items() if t.get("default")]
    assert len(defaults) == 1, f"default targets: {defaults}"


def test_every_variable_is_declared_and_has_a_value_in_every_target() -> None:
    declared = bundle().get("variables") or {}
    referenced = {
        (path.name, where, ref.split(".", 1)[1])
        for path, where, value in all_scalars()
        if isinstance(value, str)
        for ref in REFERENCE.findall(value)
        if ref.startswith("var.")
    }
    unknown = sorted(f"{f}: {w} uses ${{var.{v}}}" for f, w, v in referenced if v not in declared)
    assert not unknown, "undeclared variables:\n  " + "\n  ".join(unknown)
    for name, target in bundle()["targets"].items():
        values = target.get("variables") or {}
        assert set(values) <= set(declared), f"targets.{name} sets undeclared {set(values)}"
        missing = [v for v, spec in declared.items() if "default" not in spec and v not in values]
        assert not missing, f"targets.{name}: no value for required variables {missing}"


def test_references_name_what_a_bundle_can_resolve() -> None:
    wrong = [
        f"{path.name}: {where}: ${{{ref}}}"
        for path, where, value in all_scalars()
        if isinstance(value, str)
        for ref in REFERENCE.findall(value)
        if ref.split(".", 1)[0] not in REFERENCE_ROOTS
    ]
    assert not wrong, "\n".join(wrong)


def test_paths_the_resources_name_exist() -> None:
    """Relative paths in a resource file are relative to that file; the wheel glob points at
    the artifact's output directory, which the build creates."""
    artifact_dirs = {
        (BUNDLE_DIR / a.get("path", ".")).resolve() / "dist"
        for a in (bundle().get("artifacts") or {}).values()
    }
    problems = []
    for path, where, value in all_scalars():
        if not isinstance(value, str) or path == BUNDLE:
            continue
        leaf = where.rsplit(".", 1)[-1]
        if leaf not in {"path", "root_path", "whl", "notebook_path", "python_file"}:
            continue
        target = (path.parent / value).resolve()
        if leaf == "whl":
            if target.parent not in artifact_dirs:
                problems.append(f"{path.name}: {where}: {value} is no artifact's output")
        elif not target.exists():
            problems.append(f"{path.name}: {where}: {value} does not exist")
    assert not problems, "\n".join(problems)


def test_schedules_have_a_valid_pause_status_in_every_target() -> None:
    declared = bundle().get("variables") or {}
    for name, target in bundle()["targets"].items():
        values = {k: v.get("default") for k, v in declared.items()} | (
            target.get("variables") or {}
        )
        for path, where, value in all_scalars():
            if where.endswith("pause_status") and isinstance(value, str):
                resolved = value
                for ref in REFERENCE.findall(value):
                    resolved = resolved.replace(f"${{{ref}}}", str(values[ref.split(".", 1)[1]]))
                assert resolved in PAUSE_STATUSES, f"{path.name} {where} in {name}: {resolved}"


def clean_checkout_files() -> list[str]:
    """The bundle's files as a fresh clone has them (nothing built, no caches)."""
    listed = subprocess.run(
        ["git", "ls-files", "-z", "--", "."],
        cwd=BUNDLE_DIR,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return [name for name in listed.split("\0") if name]


def _matches(pattern: str, name: str) -> bool:
    """gitignore-style: a pattern without a slash matches a name at any depth, a directory
    pattern everything under it."""
    pattern = pattern.lstrip("!").removeprefix("**/").rstrip("/")
    parts = Path(name).parts
    candidates = [
        "/".join(parts[i:j]) for i in range(len(parts)) for j in range(i + 1, 1 + len(parts))
    ]
    return any(fnmatch.fnmatch(c, pattern) for c in candidates)


def test_sync_patterns_match_files_of_a_clean_checkout() -> None:
    """`bundle validate` warns "Pattern X does not match any files" for a sync include or
    exclude that matches nothing, and `--strict` makes that an error: an exclude of build
    output (dist, __pycache__) fails a fresh clone. Build output is kept out of the sync by
    .gitignore, which the CLI honours."""
    files = clean_checkout_files()
    assert "databricks.yml" in files
    sync = bundle().get("sync") or {}
    for key in ("include", "exclude"):
        for pattern in sync.get(key) or []:
            assert any(_matches(pattern, f) for f in files), (
                f"databricks.yml sync.{key} {pattern!r} matches no file of a clean checkout"
            )


def test_build_output_stays_out_of_the_sync() -> None:
    ignored = (BUNDLE_DIR / ".gitignore").read_text(encoding="utf-8").split()
    assert {"dist/", "__pycache__/", ".databricks/"} <= set(ignored)


# -- the CLI itself, where it is installed -------------------------------------------------------


@pytest.mark.skipif(shutil.which("databricks") is None, reason="no databricks CLI on PATH")
@pytest.mark.parametrize("target", sorted(_load(BUNDLE)["targets"]))
def test_the_databricks_cli_validates_every_target_strictly(target: str) -> None:
    """Needs a workspace to resolve the current user: DATABRICKS_HOST and a token (or a
    profile) from the environment."""
    if not os.environ.get("DATABRICKS_HOST") and not os.environ.get("DATABRICKS_CONFIG_PROFILE"):
        pytest.skip("no Databricks workspace configured (DATABRICKS_HOST)")
    result = subprocess.run(
        ["databricks", "bundle", "validate", "--strict", "-t", target],
        cwd=BUNDLE_DIR,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stdout + result.stderr
