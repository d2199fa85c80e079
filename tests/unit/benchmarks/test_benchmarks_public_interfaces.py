"""Benchmarks drive the components through their public interfaces only.

A benchmark that reads a private member of a component (`sink._write`), or replaces one of
its methods at run time (`DeltaTableWriter.write = timed`), breaks unseen when the component
is refactored: nothing but the benchmark uses that name, and nothing runs the benchmark in CI.
This scans benchmarks/ and fails on:

- an attribute starting with `_` (dunders aside) read or written on a project object: a name
  imported from a project package, or a variable assigned from one (`sink = DeltaSink(...)`,
  `lanes = sink.lanes`), followed through the module;
- any assignment to an attribute of such an object, or `setattr` on one (monkeypatching);
- an import of quixstreams beyond its top-level package (its internals are
  stream_apps/quixstreams_internals.py's business alone).

Each check is also shown to catch what it forbids on a small module, so a typo cannot make
the scan vacuous.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[3]
BENCHMARKS = REPO / "benchmarks"
PROJECT_PACKAGES = {"sensorstream", "producers", "stream_apps", "sinks", "schemas", "audit"}


def _root(node: ast.AST) -> str | None:
    """The name an expression starts from: `a` for `a.b.c`, `a(...)`, `a.b(...)[0]`."""
    while True:
        if isinstance(node, ast.Name):
            return node.id
        if isinstance(node, ast.Attribute | ast.Subscript):
            node = node.value
        elif isinstance(node, ast.Call):
            node = node.func
        elif isinstance(node, ast.Await):
            node = node.value
        else:
            return None


def _is_private(name: str) -> bool:
    return name.startswith("_") and not (name.startswith("__") and name.endswith("__"))


def _bound_names(target: ast.expr) -> list[str]:
    """The variables an assignment target binds (`a`, `a, b`, `*a`), not `a.b` or `a[0]`."""
    if isinstance(target, ast.Name):
        return [target.id]
    if isinstance(target, ast.Tuple | ast.List):
        return [name for item in target.elts for name in _bound_names(item)]
    if isinstance(target, ast.Starred):
        return _bound_names(target.value)
    return []


def _assigned(target: ast.expr) -> list[ast.expr]:
    """What an assignment target assigns to, unpacked: `a.b, c[0]` gives `a.b` and `c[0]`."""
    if isinstance(target, ast.Tuple | ast.List):
        return [leaf for item in target.elts for leaf in _assigned(item)]
    if isinstance(target, ast.Starred):
        return _assigned(target.value)
    return [target]


def _project_names(tree: ast.Module) -> set[str]:
    """Names bound to project code: imported from a project package, or assigned (anywhere in
    the module) from an expression that starts from such a name, to a fixed point."""
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            if node.module.split(".")[0] in PROJECT_PACKAGES:
                names.update(a.asname or a.name for a in node.names)
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.split(".")[0] in PROJECT_PACKAGES:
                    names.add(alias.asname or alias.name.split(".")[0])
    bindings: list[tuple[list[ast.expr], ast.expr]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Assign):
            bindings.append((node.targets, node.value))
        elif isinstance(node, ast.AnnAssign | ast.NamedExpr) and node.value is not None:
            bindings.append(([node.target], node.value))
        elif isinstance(node, ast.withitem) and node.optional_vars is not None:
            bindings.append(([node.optional_vars], node.context_expr))
        elif isinstance(node, ast.For | ast.comprehension):
            bindings.append(([node.target], node.iter))
        elif isinstance(node, ast.FunctionDef):  # a helper returning a project object
            name = ast.Name(node.name, ast.Store())
            for inner in ast.walk(node):
                if isinstance(inner, ast.Return) and inner.value is not None:
                    bindings.append(([name], inner.value))
    grew = True
    while grew:
        grew = False
        for targets, value in bindings:
            if _root(value) not in names:
                continue
            for target in targets:
                for leaf in _bound_names(target):
                    if leaf not in names:
                        names.add(leaf)
                        grew = True
    return names


def violations(source: str, filename: str = "<benchmark>") -> list[str]:
    """Where `source` reaches past a component's public interface, one line per place."""
    tree = ast.parse(source, filename)
    project = _project_names(tree)
    found: list[str] = []

    def say(node: ast.AST, what: str) -> None:
        found.append(f"{filename}:{node.lineno}: {what}")

    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and _is_private(node.attr):
            if _root(node.value) in project:
                say(node, f"private member `{ast.unparse(node)}` of project code")
        elif isinstance(node, ast.Assign | ast.AugAssign | ast.AnnAssign):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            for target in targets:
                for leaf in _assigned(target):
                    if isinstance(leaf, ast.Attribute) and _root(leaf.value) in project:
                        say(leaf, f"assignment to `{ast.unparse(leaf)}` of project code")
        elif isinstance(node, ast.Call) and isinstance(node.func, ast.Name):
            patching = node.func.id in {"setattr", "delattr"} and node.args
            if patching and _root(node.args[0]) in project:
                say(node, f"`{node.func.id}` on project code `{ast.unparse(node.args[0])}`")
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            if node.module.startswith("quixstreams."):
                say(node, f"import from quixstreams internals `{node.module}`")
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.startswith("quixstreams."):
                    say(node, f"import of quixstreams internals `{alias.name}`")
    return sorted(set(found), key=lambda line: (line.split(":")[0], int(line.split(":")[1])))


def test_benchmarks_use_public_interfaces_only() -> None:
    found = [
        line
        for path in sorted(BENCHMARKS.rglob("*.py"))
        for line in violations(path.read_text(encoding="utf-8"), str(path.relative_to(REPO)))
    ]
    assert not found, (
        "benchmarks reach past the components' public interfaces; use a setting, a "
        "constructor parameter or a public hook of the component instead:\n" + "\n".join(found)
    )


@pytest.mark.parametrize(
    "source",
    [
        "from sinks.app import DeltaSink\nsink = DeltaSink(s, c)\nsink._write(1)\n",
        "from sinks.app import DeltaSink\ndef f():\n    x = DeltaSink(s, c).lanes\n    x._wait()\n",
        "from sinks.delta_writer import DeltaTableWriter\nDeltaTableWriter.write = lambda: 0\n",
        "from producers.tailer import EdgeTailer\nt = EdgeTailer(s, c)\nt.source.table = 'x'\n",
        "from sinks.app import DeltaSink\nsetattr(DeltaSink, 'run', None)\n",
        "import sinks.app\nsinks.app._private()\n",
        "def f():\n    from quixstreams.checkpointing import checkpoint\n",
        "import quixstreams.checkpointing\n",
        "from sinks.delta_writer import DeltaTableWriter as W\n"
        "def make():\n    return W(t, None)\nwriter = make()\nwriter._adopted = True\n",
    ],
)
def test_the_scan_catches_what_it_forbids(source: str) -> None:
    assert violations(source)


def test_the_scan_leaves_a_benchmarks_own_objects_alone() -> None:
    source = (
        "from sinks.app import DeltaSink\n"
        "class Timer:\n"
        "    def __init__(self):\n"
        "        self._started = 0.0\n"
        "sink = DeltaSink(s, c)\n"
        "result = sink.run()\n"
        "other = object()\n"
        "other._x = 1\n"
        "print(sink.__class__)\n"
    )
    assert violations(source) == []
