"""The commands a newcomer copies from README.md and the docs' quick starts work as written on
a fresh machine, where `make` installed uv under .tools/ because none was on PATH."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest

from sensorstream.cli import build_parser

REPO = Path(__file__).resolve().parents[3]
QUICK_STARTS = [
    REPO / "README.md",
    REPO / "docs" / "local-stack.md",
    REPO / "docs" / "routing.md",
    REPO / "docs" / "containers.md",
]
PATH_STEP = 'export PATH="$PWD/.tools/uv/bin:$PATH"'


def shell_lines(path: Path) -> list[str]:
    """The commands of the ```bash blocks, without comments."""
    lines: list[str] = []
    for block in re.findall(r"```bash\n(.*?)```", path.read_text(encoding="utf-8"), re.S):
        for line in block.splitlines():
            command = line.split("  #", 1)[0].strip()
            if command and not command.startswith("#"):
                lines.append(command)
    return lines


def makefile_uv_dir() -> str:
    """Where the Makefile installs uv when none is on PATH."""
    makefile = (REPO / "Makefile").read_text(encoding="utf-8")
    (target,) = re.findall(r"^\$\(CURDIR\)/(\S+)/uv:", makefile, re.M)
    return target


def test_the_readme_puts_the_uv_make_installed_on_path_before_using_it() -> None:
    assert f'export PATH="$PWD/{makefile_uv_dir()}:$PATH"' == PATH_STEP
    lines = shell_lines(REPO / "README.md")
    uses = [i for i, line in enumerate(lines) if re.search(r"(^|\$\()uv ", line)]
    assert uses, "README.md shows no uv command"
    assert PATH_STEP in lines[: uses[0]], (
        f"README.md runs {lines[uses[0]]!r} before putting make's uv on PATH ({PATH_STEP})"
    )


@pytest.mark.parametrize("path", QUICK_STARTS, ids=lambda p: p.name)
def test_every_sensorstream_command_of_a_quick_start_parses(path: Path) -> None:
    parser = build_parser()
    commands = [
        shlex.split(m.group(1))
        for line in shell_lines(path)
        for m in [re.search(r"uv run sensorstream([^\")]*)", line)]
        if m
    ]
    assert commands, f"{path.name} shows no sensorstream command"
    copied = {  # files an earlier `cp REPO_FILE NAME` of the quick start makes
        words[2]
        for line in shell_lines(path)
        if line.startswith("cp ")
        for words in [shlex.split(line)]
        if (REPO / words[1]).is_file()
    }
    for argv in commands:
        try:
            parser.parse_args(argv)
        except SystemExit as exc:
            if exc.code == 0:  # --help
                continue
            pytest.fail(f"{path.name}: `sensorstream {shlex.join(argv)}` exits {exc.code}")
        if argv[:2] == ["routes", "apply"]:
            exists = (REPO / argv[2]).is_file() or argv[2] in copied
            assert exists, f"{path.name}: {argv[2]} does not exist"


def test_the_demo_summary_prints_the_uv_that_ran_it(monkeypatch, tmp_path) -> None:
    """`make demo` on a machine without uv runs .tools/uv/bin/uv; its summary's commands must
    name that one, not a `uv` the shell cannot find."""
    from infra.local_stack.summary import example_query, uv_command

    monkeypatch.chdir(REPO)
    monkeypatch.setenv("PATH", str(tmp_path))
    monkeypatch.setenv("UV", str(REPO / makefile_uv_dir() / "uv"))
    assert uv_command() == f"{makefile_uv_dir()}/uv"
    assert example_query("s3://lake").startswith(f"{makefile_uv_dir()}/uv run python -c ")
    installed = tmp_path / "uv"
    installed.write_text("#!/bin/sh\n")
    installed.chmod(0o755)
    assert uv_command() == "uv"
    assert example_query("s3://lake").startswith("uv run python -c ")
