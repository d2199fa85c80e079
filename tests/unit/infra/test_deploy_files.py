"""The deployment files (Dockerfile, compose, Bacalhau job specs, observability) against the code.

A renamed setting or a typo in an environment key would otherwise surface as a container on an
edge node silently running with a default. Nothing here needs a Docker engine: the files are
parsed and checked against what the product really reads. The valid environment names are
derived from the pydantic settings classes themselves (env_prefix + field name, or the field's
aliases), never from a list kept by hand.
"""

from __future__ import annotations

import difflib
import fnmatch
import importlib
import importlib.util
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import tomllib
import typing
from dataclasses import dataclass, field
from functools import cache
from importlib import metadata
from pathlib import Path
from typing import Any

import pytest
import yaml
from pydantic import AliasChoices, AliasPath, SecretStr
from pydantic_settings import BaseSettings

REPO = Path(__file__).resolve().parents[3]
DOCKERFILE = REPO / "infra" / "docker" / "Dockerfile"
COMPOSE = REPO / "infra" / "docker" / "compose.yml"
BACALHAU_DIR = REPO / "infra" / "bacalhau"
OBSERVABILITY_DIR = REPO / "infra" / "observability"
DOCKERIGNORE = REPO / ".dockerignore"

# Key families the product reads: in our own containers every key of these families must be a
# setting. Other images (Redpanda Console's KAFKA_BROKERS, ...) have their own names.
PRODUCT_KEY_PREFIXES = ("SENSORSTREAM_", "KAFKA_", "SCHEMA_REGISTRY_", "AWS_")
SERVICE_TARGETS = ("producer", "router", "sink", "maintain")  # long-running, with metrics
BACALHAU_JOB_TYPES = {"batch", "ops", "daemon", "service"}


# -- what the code defines ----------------------------------------------------------------------


@cache
def pyproject() -> dict[str, Any]:
    return tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))


def wheel_packages() -> list[str]:
    """The repository folders the wheel is built from (tests/unit/sensorstream/test_packaging.py
    checks where they land inside it)."""
    return list(pyproject()["tool"]["hatch"]["build"]["targets"]["wheel"]["only-include"])


@cache
def settings_classes() -> tuple[type[BaseSettings], ...]:
    """Every pydantic-settings class defined in the product's packages."""
    definition = re.compile(r"^class \w+\((?:\w+\.)?(?:LayeredSettings|BaseSettings)\)", re.M)
    for package in wheel_packages():
        for path in sorted((REPO / package).rglob("*.py")):
            if definition.search(path.read_text(encoding="utf-8")):
                importlib.import_module(".".join(path.relative_to(REPO).with_suffix("").parts))
    found: list[type[BaseSettings]] = []
    pending = [BaseSettings]
    while pending:
        for sub in pending.pop().__subclasses__():
            pending.append(sub)
            if sub.__module__.split(".")[0] in wheel_packages():
                found.append(sub)
    return tuple(found)


def _field_env_names(cls: type[BaseSettings], name: str) -> set[str]:
    info = cls.model_fields[name]
    aliases: set[str] = set()
    for alias in (info.validation_alias, info.alias):
        choices = alias.choices if isinstance(alias, AliasChoices) else [alias]
        for choice in choices:
            if isinstance(choice, str):
                aliases.add(choice)
            elif isinstance(choice, AliasPath) and isinstance(choice.path[0], str):
                aliases.add(choice.path[0])
    if aliases:
        return {a.upper() for a in aliases}
    prefix = cls.model_config.get("env_prefix", "") or ""
    return {f"{prefix}{name}".upper()}


def _is_secret(annotation: Any) -> bool:
    if annotation is SecretStr:
        return True
    return any(_is_secret(arg) for arg in typing.get_args(annotation))


@cache
def env_names() -> dict[str, str]:
    """Environment name -> the settings class that reads it."""
    names: dict[str, str] = {}
    for cls in settings_classes():
        for name in cls.model_fields:
            for env in _field_env_names(cls, name):
                names[env] = f"{cls.__module__}.{cls.__qualname__}"
    return names


@cache
def secret_env_names() -> frozenset[str]:
    return frozenset(
        env
        for cls in settings_classes()
        for name, info in cls.model_fields.items()
        if _is_secret(info.annotation)
        for env in _field_env_names(cls, name)
    )


def cli_commands() -> set[str]:
    from sensorstream.cli import build_parser

    parser = build_parser()
    (subparsers,) = [a for a in parser._actions if isinstance(a.choices, dict)]
    return set(subparsers.choices)


# -- the Dockerfile -----------------------------------------------------------------------------


@dataclass
class Stage:
    name: str
    base: str
    instructions: list[tuple[str, str]] = field(default_factory=list)


@dataclass
class Dockerfile:
    global_args: dict[str, str]
    stages: dict[str, Stage]

    def chain(self, name: str) -> list[Stage]:
        """The stage and the stages it is built FROM, nearest first."""
        stages = []
        while name in self.stages:
            stages.append(self.stages[name])
            name = self.stages[name].base
        return stages

    def last(self, target: str, keyword: str) -> str | None:
        for stage in self.chain(target):
            for kw, args in reversed(stage.instructions):
                if kw == keyword:
                    return args
        return None

    def env(self, target: str) -> dict[str, str]:
        env: dict[str, str] = {}
        for stage in reversed(self.chain(target)):
            for kw, args in stage.instructions:
                if kw == "ENV":
                    env.update(_env_pairs(args))
        return env

    def args(self, target: str) -> dict[str, str]:
        values = dict(self.global_args)
        for stage in reversed(self.chain(target)):
            for kw, args in stage.instructions:
                if kw == "ARG" and "=" in args:
                    key, _, value = args.partition("=")
                    values[key.strip()] = value.strip().strip('"')
        return values

    def external_images(self) -> list[str]:
        refs = [_substitute(stage.base, self.global_args) for stage in self.stages.values()]
        return [ref for ref in refs if ref not in self.stages]


def _substitute(text: str, values: dict[str, str]) -> str:
    return re.sub(r"\$\{(\w+)\}|\$(\w+)", lambda m: values[m.group(1) or m.group(2)], text)


def _env_pairs(args: str) -> dict[str, str]:
    tokens = shlex.split(args)
    if tokens and "=" not in tokens[0]:  # legacy form: ENV KEY value
        return {tokens[0]: " ".join(tokens[1:])}
    return dict(token.split("=", 1) for token in tokens)


def _logical_lines(text: str) -> list[str]:
    lines, pending = [], ""
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        lines.append(pending + line)
        pending = ""
    return lines


@cache
def dockerfile() -> Dockerfile:
    global_args: dict[str, str] = {}
    stages: dict[str, Stage] = {}
    current: Stage | None = None
    for line in _logical_lines(DOCKERFILE.read_text(encoding="utf-8")):
        keyword, _, args = line.partition(" ")
        keyword = keyword.upper()
        if keyword == "FROM":
            words = [w for w in args.split() if not w.startswith("--")]
            name = words[2] if len(words) == 3 and words[1].upper() == "AS" else words[0]
            current = stages[name] = Stage(name, words[0])
        elif current is None:
            assert keyword == "ARG", f"{DOCKERFILE}: only ARG may precede the first FROM"
            key, _, value = args.partition("=")
            global_args[key.strip()] = value.strip().strip('"')
        else:
            current.instructions.append((keyword, args.strip()))
    return Dockerfile(global_args, stages)


def healthcheck_command(target: str) -> list[str] | None:
    args = dockerfile().last(target, "HEALTHCHECK")
    if args is None or args.upper() == "NONE":
        return None
    return json.loads(args[args.index("CMD") + 3 :].strip())


# -- compose and Bacalhau -----------------------------------------------------------------------


@cache
def compose() -> dict[str, Any]:
    return yaml.safe_load(COMPOSE.read_text(encoding="utf-8"))


def compose_services() -> dict[str, dict[str, Any]]:
    return compose()["services"]


def compose_environment(service: dict[str, Any]) -> dict[str, str]:
    environment = service.get("environment") or {}
    if isinstance(environment, list):
        return dict(item.split("=", 1) if "=" in item else (item, "") for item in environment)
    return {key: "" if value is None else str(value) for key, value in environment.items()}


def own_build_target(service: dict[str, Any]) -> str | None:
    """The Dockerfile target a compose service is built from, when it is one of ours."""
    build = service.get("build")
    if not isinstance(build, dict):
        return None
    built_file = (COMPOSE.parent / build.get("context", ".") / build["dockerfile"]).resolve()
    return build.get("target") if built_file == DOCKERFILE else None


def bacalhau_specs() -> list[Path]:
    return sorted(BACALHAU_DIR.glob("*.yaml"))


@cache
def bacalhau_spec(path: Path) -> dict[str, Any]:
    return yaml.safe_load(path.read_text(encoding="utf-8"))


def bacalhau_tasks() -> list[tuple[Path, dict[str, Any]]]:
    return [(path, task) for path in bacalhau_specs() for task in bacalhau_spec(path)["Tasks"]]


def task_environment(task: dict[str, Any]) -> tuple[dict[str, str], dict[str, str]]:
    """(the docker engine's EnvironmentVariables, the task's Env) of a Bacalhau task."""
    params = task["Engine"].get("Params", {})
    engine = dict(item.split("=", 1) for item in params.get("EnvironmentVariables", []))
    return engine, {key: str(value) for key, value in (task.get("Env") or {}).items()}


def task_command(task: dict[str, Any]) -> list[str]:
    return list(task["Engine"]["Params"].get("Parameters", []))


def environment_uses() -> list[tuple[str, str, bool]]:
    """(where, key, in one of our images) for every environment key the deployment files set."""
    uses = [
        (f"Dockerfile target {t}", key, True)
        for t in dockerfile().stages
        for key in dockerfile().env(t)
    ]
    for command in filter(None, (healthcheck_command(t) for t in dockerfile().stages)):
        component = command[-1]
        uses.append(
            (f"healthcheck.py {component}", f"SENSORSTREAM_{component.upper()}_METRICS_PORT", True)
        )
    for name, service in compose_services().items():
        ours = own_build_target(service) is not None
        uses += [(f"compose service {name}", key, ours) for key in compose_environment(service)]
    for path, task in bacalhau_tasks():
        engine, env = task_environment(task)
        where = f"{path.name} task {task['Name']}"
        uses += [(where, key, True) for key in [*engine, *env]]
        uses += [
            (f"{where} (node variable)", value[4:], True)
            for value in env.values()
            if value.startswith("env:")
        ]
    return uses


# -- the tests ----------------------------------------------------------------------------------


def deployment_yaml_files() -> list[Path]:
    files = [COMPOSE, *bacalhau_specs(), BACALHAU_DIR / "node" / "config.yaml"]
    files += sorted(p for p in OBSERVABILITY_DIR.rglob("*") if p.suffix in {".yml", ".yaml"})
    return files


@pytest.mark.parametrize("path", deployment_yaml_files(), ids=lambda p: str(p.relative_to(REPO)))
def test_every_deployment_yaml_parses(path: Path) -> None:
    document = yaml.safe_load(path.read_text(encoding="utf-8"))
    assert isinstance(document, dict), f"{path}: expected a mapping at the top"


def test_observability_dashboards_parse() -> None:
    for path in sorted(OBSERVABILITY_DIR.rglob("*.json")):
        assert isinstance(json.loads(path.read_text(encoding="utf-8")), dict), path


def test_settings_are_discovered_from_the_code() -> None:
    """Guards the guard: if discovery broke, every key check below would pass vacuously."""
    names = env_names()
    assert {"KAFKA_BOOTSTRAP_SERVERS", "SENSORSTREAM_LAKE_URI"} <= set(names)
    assert any(n.startswith("SENSORSTREAM_PRODUCER_") for n in names)
    assert "KAFKA_SASL_PASSWORD" in secret_env_names()


def test_every_environment_key_is_a_real_setting() -> None:
    valid = env_names()
    unknown = []
    for where, key, ours in environment_uses():
        checked = key.startswith(PRODUCT_KEY_PREFIXES) if ours else key.startswith("SENSORSTREAM_")
        if checked and key.upper() not in valid:
            close = difflib.get_close_matches(key.upper(), list(valid), n=1)
            hint = f" (did you mean {close[0]}?)" if close else ""
            unknown.append(f"{where}: {key}{hint}")
    assert not unknown, "environment keys no settings class reads:\n  " + "\n  ".join(unknown)


def test_secret_settings_are_never_written_into_the_files() -> None:
    secrets = secret_env_names()
    literal = [
        f"Dockerfile target {t}: {key}"
        for t in dockerfile().stages
        for key in dockerfile().env(t)
        if key in secrets
    ]
    for name, service in compose_services().items():
        literal += [
            f"compose service {name}: {key}"
            for key, value in compose_environment(service).items()
            if key in secrets and not value.startswith("${")  # must be interpolated
        ]
    for path, task in bacalhau_tasks():
        engine, env = task_environment(task)
        literal += [
            f"{path.name}: {key} in EnvironmentVariables" for key in engine if key in secrets
        ]
        literal += [
            f"{path.name}: {key}"
            for key, value in env.items()
            if key in secrets and not value.startswith("env:")  # must come from the node
        ]
    assert not literal, "secret settings with literal values:\n  " + "\n  ".join(literal)


def test_every_compose_service_has_an_image_or_a_build() -> None:
    missing = [
        name for name, s in compose_services().items() if not (s.get("image") or s.get("build"))
    ]
    assert not missing


def _tag(reference: str) -> str | None:
    if "@sha256:" in reference:
        return "digest"
    name = reference.rsplit("/", 1)[-1]
    return name.split(":", 1)[1] if ":" in name else None


def test_every_image_is_pinned() -> None:
    version = pyproject()["project"]["version"]
    images = [("Dockerfile", ref) for ref in dockerfile().external_images()]
    images += [
        (f"compose service {n}", s["image"]) for n, s in compose_services().items() if "image" in s
    ]
    images += [(path.name, task["Engine"]["Params"]["Image"]) for path, task in bacalhau_tasks()]
    problems = []
    for where, reference in images:
        tag = _tag(reference)
        if tag in (None, "latest") or "{{" in str(tag):
            problems.append(f"{where}: {reference} is not pinned to a version")
        elif reference.rsplit("/", 1)[-1].startswith("sensorstream-") and tag != version:
            problems.append(f"{where}: {reference} should carry the project version {version}")
    assert not problems, "\n".join(problems)


def test_compose_builds_name_existing_dockerfile_targets() -> None:
    for name, service in compose_services().items():
        build = service.get("build")
        if build is None:
            continue
        context = (COMPOSE.parent / build["context"]).resolve()
        assert context == REPO, f"{name}: the build context must be the repository root"
        assert (context / build["dockerfile"]).is_file(), f"{name}: no {build['dockerfile']}"
        assert build.get("target") in dockerfile().stages, (
            f"{name}: no target {build.get('target')}"
        )


def compose_cli() -> list[str] | None:
    """Docker Compose v2: the standalone binary, or the docker CLI's plugin."""
    if shutil.which("docker-compose"):
        return ["docker-compose"]
    if shutil.which("docker"):
        probe = subprocess.run(["docker", "compose", "version"], capture_output=True, timeout=60)
        if probe.returncode == 0:
            return ["docker", "compose"]
    return None


@pytest.mark.skipif(compose_cli() is None, reason="no Docker Compose on PATH")
def test_docker_compose_accepts_the_compose_file() -> None:
    """`docker compose config` loads the file with Compose's own schema and interpolation,
    offline, the way `up` does before it starts anything."""
    result = subprocess.run(
        [*(compose_cli() or []), "-f", str(COMPOSE), "config", "--quiet"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_compose_dependencies_exist_and_can_become_ready() -> None:
    services = compose_services()
    for name, service in services.items():
        for dependency, spec in (service.get("depends_on") or {}).items():
            assert dependency in services, f"{name} depends on unknown service {dependency}"
            if spec.get("condition") != "service_healthy":
                continue
            target = own_build_target(services[dependency])
            has_check = "healthcheck" in services[dependency] or (
                target is not None and healthcheck_command(target) is not None
            )
            assert has_check, f"{name} waits for {dependency} to be healthy; it has no healthcheck"


def test_compose_mounts_exist() -> None:
    declared_volumes = set(compose().get("volumes") or {})
    missing = []
    for name, service in compose_services().items():
        for volume in service.get("volumes", []):
            source = volume.split(":", 1)[0]
            if source.startswith((".", "/")):
                if not (COMPOSE.parent / source).resolve().exists():
                    missing.append(f"{name}: {source} does not exist in the repository")
            elif source not in declared_volumes:
                missing.append(f"{name}: named volume {source} is not declared")
    assert not missing, "\n".join(missing)


def test_observability_config_matches_the_compose_services() -> None:
    """Prometheus scrapes each command where its image serves metrics; Grafana finds what
    compose mounts for it."""
    services = compose_services()
    expected = set()
    for name, service in services.items():
        target = own_build_target(service)
        if target in SERVICE_TARGETS:
            key = f"SENSORSTREAM_{target.upper()}_METRICS_PORT"
            port = {**dockerfile().env(target), **compose_environment(service)}[key]
            expected.add(f"{name}:{port}")
    prometheus = yaml.safe_load((OBSERVABILITY_DIR / "prometheus.yml").read_text(encoding="utf-8"))
    scraped = {
        target
        for job in prometheus["scrape_configs"]
        for static in job.get("static_configs", [])
        for target in static["targets"]
    }
    assert scraped == expected, f"prometheus.yml scrapes {sorted(scraped)}, serving: {expected}"

    grafana_mounts = {volume.split(":")[1] for volume in services["grafana"]["volumes"]}
    provisioning = OBSERVABILITY_DIR / "grafana" / "provisioning"
    for path in sorted((provisioning / "dashboards").glob("*.y*ml")):
        for provider in yaml.safe_load(path.read_text(encoding="utf-8"))["providers"]:
            assert provider["options"]["path"] in grafana_mounts, f"{path}: not mounted"
    for path in sorted((provisioning / "datasources").glob("*.y*ml")):
        for source in yaml.safe_load(path.read_text(encoding="utf-8"))["datasources"]:
            host = re.sub(r"^\w+://", "", source["url"]).split(":")[0]
            assert host in services, f"{path}: {source['url']} is no compose service"


def test_producers_have_a_stable_node_id_and_a_read_only_database() -> None:
    """The node id keys the checkpoint and the transactional id; the default is the hostname,
    which in a container is a new container id on every start: a full replay each time."""
    producers = 0
    for name, service in compose_services().items():
        if own_build_target(service) == "producer":
            producers += 1
            assert "SENSORSTREAM_PRODUCER_NODE_ID" in compose_environment(service), name
            assert all(v.endswith(":ro") for v in service.get("volumes", [])), name
    for path, task in bacalhau_tasks():
        if task_command(task)[:1] == ["produce"]:
            producers += 1
            engine, env = task_environment(task)
            assert "SENSORSTREAM_PRODUCER_NODE_ID" in {**engine, **env}, path.name
            for source in task.get("InputSources", []):
                assert source["Source"]["Params"].get("ReadWrite") is False, path.name
    assert producers >= 2


def test_runtime_targets_run_the_cli_as_a_fixed_non_root_user() -> None:
    commands = cli_commands()
    targets = {own_build_target(s) for s in compose_services().values()} - {None}
    assert set(SERVICE_TARGETS) <= targets
    for target in targets:
        user = _substitute(dockerfile().last(target, "USER") or "0", dockerfile().args(target))
        uid = user.split(":", 1)[0]
        assert uid.isdigit() and int(uid) != 0, f"target {target} runs as {user!r}"
        assert json.loads(dockerfile().last(target, "ENTRYPOINT") or "[]") == ["sensorstream"]
        command = json.loads(dockerfile().last(target, "CMD") or "[]")
        assert command[:1] and command[0] in commands, f"target {target}: CMD {command}"


def test_long_running_targets_probe_their_own_metrics_on_all_interfaces() -> None:
    for target in SERVICE_TARGETS:
        command = healthcheck_command(target)
        assert command is not None and command[-1] == target, f"target {target}: {command}"
        env = dockerfile().env(target)
        assert env.get(f"SENSORSTREAM_{target.upper()}_METRICS_HOST") == "0.0.0.0", target


def test_images_leave_out_the_dev_and_spark_groups() -> None:
    syncs = [
        (stage.name, args)
        for stage in dockerfile().stages.values()
        for kw, args in stage.instructions
        if kw == "RUN" and "uv sync" in args
    ]
    assert syncs
    for stage, args in syncs:
        flags = set(args.split())
        assert "--frozen" in flags, f"{stage}: uv sync must install exactly uv.lock"
        no_groups = "--no-default-groups" in flags or {"--no-dev", "--no-group"} <= flags
        assert no_groups, f"{stage}: uv sync must leave out the dev and spark groups"
    for stage in dockerfile().stages.values():
        steps = [args for kw, args in stage.instructions if kw in {"RUN", "COPY"}]
        if any("uv sync" in s for s in steps):
            first_sync = next(i for i, s in enumerate(steps) if "uv sync" in s)
            copy_all = next(i for i, s in enumerate(steps) if s.startswith(". "))
            assert first_sync < copy_all and "--no-install-project" in steps[first_sync], (
                f"{stage.name}: install the locked dependencies before copying the code, so "
                "code changes do not rebuild the dependency layer"
            )


def run_mounts() -> list[tuple[str, dict[str, str]]]:
    """(stage, options) of every `RUN --mount=...` flag in the Dockerfile."""
    mounts = []
    for stage in dockerfile().stages.values():
        for kw, args in stage.instructions:
            if kw != "RUN":
                continue
            for flag in re.findall(r"--mount=(\S+)", args):
                options = dict(
                    item.split("=", 1) if "=" in item else (item, "") for item in flag.split(",")
                )
                mounts.append((stage.name, options))
    return mounts


def test_run_mounts_are_accepted_by_buildah_and_podman() -> None:
    """BuildKit resolves a relative mount target against WORKDIR; buildah (and so podman
    build) refuses it. Absolute targets mean the same to both."""
    mounts = run_mounts()
    assert any(options.get("type") == "bind" for _, options in mounts)
    patterns = [
        line.strip()
        for line in DOCKERIGNORE.read_text(encoding="utf-8").splitlines()
        if line.strip() and not line.startswith("#")
    ]
    problems = []
    for stage, options in mounts:
        target = options.get("target") or options.get("dst") or options.get("destination")
        if not target or not target.startswith("/"):
            problems.append(f"{stage}: --mount={options} needs an absolute target")
        if options.get("type") == "bind" and "from" not in options:
            source = options.get("source") or options.get("src") or ""
            if not (REPO / source).exists() or not _docker_context_includes(
                Path(source).parts[0], patterns
            ):
                problems.append(f"{stage}: bind source {source!r} is not in the build context")
    assert not problems, "\n".join(problems)


def _stage_extras(stage: str) -> list[str]:
    """The extras every `uv sync` of a build stage installs (--extra NAME)."""
    syncs = [
        args.split() for kw, args in dockerfile().stages[stage].instructions if "uv sync" in args
    ]
    assert syncs, f"{stage} runs no uv sync"
    extras = {tuple(w[i + 1] for i, flag in enumerate(w) if flag == "--extra") for w in syncs}
    assert len(extras) == 1, f"{stage}: the dependency and project syncs differ: {extras}"
    return list(next(iter(extras)))


def _hub_only_modules() -> list[str]:
    """Top-level modules of the libraries the router and sink extras add."""
    extras = pyproject()["project"]["optional-dependencies"]
    distributions = [
        re.split(r"[\[<>=!~ ;]", requirement)[0]
        for requirement in extras["router"] + extras["sink"]
    ]

    def normal(name: str) -> str:
        return re.sub(r"[-_.]+", "-", name).lower()

    wanted = {normal(d) for d in distributions}
    return sorted(
        module
        for module, dists in metadata.packages_distributions().items()
        if wanted & {normal(d) for d in dists}
    )


def test_images_install_the_extras_of_their_role() -> None:
    assert _stage_extras("build-edge") == ["producer"]
    assert sorted(_stage_extras("build-hub")) == ["router", "sink"]
    for stage in dockerfile().stages.values():
        for _kw, args in stage.instructions:
            assert "--no-install-package" not in args, f"{stage.name}: install extras, skip none"


_EDGE_IMPORT_CHECK = """
import importlib, importlib.abc, pkgutil, sys
blocked = set(sys.argv[1].split(","))

class NotInTheEdgeImage(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in blocked:
            raise ImportError(f"{name} is not in the producer extra (the edge image)")

sys.meta_path.insert(0, NotInTheEdgeImage())
for package in ("producers", "sensorstream"):
    root = importlib.import_module(package)
    for info in pkgutil.walk_packages(root.__path__, package + "."):
        if not info.name.endswith("__main__"):
            importlib.import_module(info.name)
from sensorstream.cli import main
sys.exit(main(["simulate", "--db", sys.argv[2], "--count", "50", "--rate", "0", "--seed", "1"]))
"""


def test_edge_image_leaves_out_only_what_the_producer_never_imports(tmp_path: Path) -> None:
    modules = _hub_only_modules()
    assert {"deltalake", "polars", "pyarrow", "quixstreams"} <= set(modules)
    result = subprocess.run(
        [sys.executable, "-c", _EDGE_IMPORT_CHECK, ",".join(modules), str(tmp_path / "edge.db")],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr[-3000:]


def _docker_context_includes(name: str, patterns: list[str]) -> bool:
    """Whether a top-level entry of the repository reaches the build context (last match wins)."""
    included = True
    for pattern in patterns:
        negated = pattern.startswith("!")
        pattern = pattern.lstrip("!").rstrip("/").removeprefix("**/")
        if "/" not in pattern and fnmatch.fnmatch(name, pattern):
            included = negated
    return included


def test_dockerignore_keeps_the_build_context_to_the_wheel_sources() -> None:
    patterns = [
        line.strip()
        for line in DOCKERIGNORE.read_text(encoding="utf-8").splitlines()
        if line.strip() and not line.startswith("#")
    ]
    needed = {"pyproject.toml", "uv.lock", pyproject()["project"]["readme"], *wheel_packages()}
    for stage in dockerfile().stages.values():
        for kw, args in stage.instructions:
            if kw == "COPY" and "--from" not in args:
                needed |= {Path(src).parts[0] for src in args.split()[:-1] if src != "."}
    left_out = sorted(n for n in needed if not _docker_context_includes(n, patterns))
    assert not left_out, f"the image build needs {left_out}, which .dockerignore leaves out"
    unwanted = [".git", ".venv", ".stack", ".tools", "lake", "tests", "benchmarks", "docs"]
    sent = [n for n in unwanted if _docker_context_includes(n, patterns)]
    assert not sent, f".dockerignore sends {sent} to the Docker daemon"


def test_bacalhau_specs_are_valid_jobs_of_real_commands() -> None:
    commands = cli_commands()
    readme = (BACALHAU_DIR / "README.md").read_text(encoding="utf-8")
    assert bacalhau_specs()
    for path in bacalhau_specs():
        spec = bacalhau_spec(path)
        assert spec["Type"] in BACALHAU_JOB_TYPES, f"{path.name}: Type {spec['Type']}"
        assert spec.get("Constraints"), f"{path.name}: select nodes by label"
        for task in spec["Tasks"]:
            assert task["Engine"]["Type"] == "docker", path.name
            assert task_command(task)[:1] and task_command(task)[0] in commands, path.name
            _, env = task_environment(task)
            for key, value in env.items():
                # Bacalhau's own rules for task Env (models.ValidateEnvVars).
                assert re.fullmatch(r"[A-Z][A-Z0-9_]*", key), f"{path.name}: Env {key}"
                assert not key.startswith("BACALHAU_"), f"{path.name}: Env {key} is reserved"
                assert value, f"{path.name}: Env {key} is empty"
            for source in task.get("InputSources", []):
                assert source["Source"]["Type"] == "localDirectory", path.name
        text = path.read_text(encoding="utf-8")
        variables = set(re.findall(r"\{\{\s*\.(\w+)", text))
        variables |= set(re.findall(r'index \. "(\w+)"', text))
        undocumented = sorted(v for v in variables if f"`{v}`" not in readme)
        assert not undocumented, f"{path.name}: template variables not in README.md: {undocumented}"


# Values for the specs' required template variables, as an operator gives them with -V.
BACALHAU_EXAMPLE_VALUES = {
    "region": "eu-west-1",
    "registry": "registry.example.com/sensorstream",
    "kafka_bootstrap_servers": "kafka-1.example.com:9093",
}


@pytest.mark.skipif(shutil.which("bacalhau") is None, reason="no bacalhau CLI on PATH")
def test_the_bacalhau_cli_renders_and_validates_every_spec(tmp_path: Path) -> None:
    """`bacalhau job run --dry-run -V ...` renders the spec with Bacalhau's own template engine
    and runs the job model's submission checks, offline, without submitting anything."""
    for path in bacalhau_specs():
        variables = [f"--template-vars={k}={v}" for k, v in BACALHAU_EXAMPLE_VALUES.items()]
        result = subprocess.run(
            ["bacalhau", "job", "run", "--dry-run", *variables, str(path)],
            capture_output=True,
            text=True,
            timeout=120,
            env={**os.environ, "BACALHAU_DIR": str(tmp_path / "bacalhau")},
        )
        output = result.stdout + result.stderr
        assert result.returncode == 0, f"{path.name}:\n{output}"
        top = dict(re.findall(r"^(Name|Type): (.+)$", result.stdout, re.M))
        assert top.get("Name", "").endswith("eu-west-1"), f"{path.name}:\n{output}"
        assert top.get("Type") == bacalhau_spec(path)["Type"], f"{path.name}:\n{output}"


def test_healthcheck_probe_reads_the_metrics_settings() -> None:
    spec = importlib.util.spec_from_file_location(
        "healthcheck", DOCKERFILE.parent / "healthcheck.py"
    )
    assert spec is not None and spec.loader is not None
    probe = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(probe)
    environ = {
        "SENSORSTREAM_SINK_METRICS_PORT": "9466",
        "SENSORSTREAM_SINK_METRICS_HOST": "0.0.0.0",
    }
    assert probe.probe_url("sink", environ) == "http://127.0.0.1:9466/metrics"
    assert probe.probe_url("sink", {**environ, "SENSORSTREAM_SINK_METRICS_PORT": "0"}) is None
    assert probe.probe_url(
        "router",
        {"SENSORSTREAM_ROUTER_METRICS_PORT": "1", "SENSORSTREAM_ROUTER_METRICS_HOST": "::1"},
    ) == ("http://[::1]:1/metrics")
    with pytest.raises(SystemExit):
        probe.probe_url("producer", {})


# -- what the producer reads, against the Bacalhau specs and the compute node's allow-list -----

BACALHAU_NODE_CONFIG = BACALHAU_DIR / "node" / "config.yaml"


def producer_env_names() -> tuple[frozenset[str], frozenset[str]]:
    """(every environment name the producer reads, the secret ones among them).

    Derived from the code, not listed: all of ProducerSettings, plus the ConnectionSettings
    fields the edge tailer actually touches while it builds its clients (recorded on a
    subclass), so a setting the tailer starts reading later is included without anyone
    remembering to add it here.
    """
    from producers.settings import ProducerSettings
    from producers.tailer import EdgeTailer
    from sensorstream.settings import ConnectionSettings

    touched: set[str] = set()

    class Recording(ConnectionSettings):
        def __getattribute__(self, name: str) -> Any:
            if name in ConnectionSettings.model_fields:
                touched.add(name)
            return super().__getattribute__(name)

    values: dict[str, Any] = {}
    for name, info in ConnectionSettings.model_fields.items():
        values[name] = SecretStr("x:y") if _is_secret(info.annotation) else "x"
    values["schema_registry_url"] = "http://registry.invalid:8081"
    connection = Recording(**values)
    touched.clear()
    EdgeTailer(ProducerSettings(sqlite=Path("edge.db"), node_id="n"), connection)
    read = [(ProducerSettings, name) for name in ProducerSettings.model_fields]
    read += [(ConnectionSettings, name) for name in sorted(touched)]
    names = {env for cls, name in read for env in _field_env_names(cls, name)}
    secrets = {
        env
        for cls, name in read
        if _is_secret(cls.model_fields[name].annotation)
        for env in _field_env_names(cls, name)
    }
    return frozenset(names), frozenset(secrets)


def producer_tasks() -> list[tuple[Path, dict[str, Any]]]:
    return [(p, t) for p, t in bacalhau_tasks() if task_command(t)[:1] == ["produce"]]


def node_allow_list() -> list[str]:
    config = yaml.safe_load(BACALHAU_NODE_CONFIG.read_text(encoding="utf-8"))
    return list(config["Compute"]["Env"]["AllowList"])


def allowed_by_node(name: str, patterns: list[str]) -> bool:
    """Whether the compute node resolves `env:name`. Bacalhau's host resolver matches each
    entry as an unanchored Go regular expression while its docs call them glob patterns:
    an entry must admit the name under both readings, so it works whichever the node runs."""
    return any(re.search(p, name) for p in patterns) and any(
        fnmatch.fnmatchcase(name, p) for p in patterns
    )


def test_producer_settings_are_derived_from_the_tailer() -> None:
    """Guards the derivation: the tailer's Kafka and registry settings are seen, the lake's
    are not (the producer never writes to S3, so its jobs get no AWS credentials)."""
    names, secrets = producer_env_names()
    assert {"KAFKA_SASL_USERNAME", "SCHEMA_REGISTRY_URL", "SENSORSTREAM_PRODUCER_NODE_ID"} <= names
    assert {"KAFKA_SASL_PASSWORD", "SCHEMA_REGISTRY_BASIC_AUTH_USER_INFO"} <= secrets
    lake = {n for n in names if n.startswith("AWS_") or n == "SENSORSTREAM_LAKE_URI"}
    assert not lake


def test_producer_jobs_get_every_secret_the_producer_reads_from_the_node() -> None:
    _, secrets = producer_env_names()
    tasks = producer_tasks()
    assert len(tasks) >= 2
    missing = []
    for path, task in tasks:
        _, env = task_environment(task)
        missing += [
            f'{path.name}: {name} (expected Env {name}: "env:{name}")'
            for name in sorted(secrets)
            if env.get(name) != f"env:{name}"
        ]
    assert not missing, "producer secrets the job does not pass:\n  " + "\n  ".join(missing)


def test_producer_jobs_pass_only_settings_the_producer_reads() -> None:
    """Least privilege: an edge job that asks for the lake's AWS keys would get them."""
    names, _ = producer_env_names()
    extra = []
    for path, task in producer_tasks():
        engine, env = task_environment(task)
        extra += [f"{path.name}: {key}" for key in [*engine, *env] if key not in names]
        extra += [
            f"{path.name}: {key} reads node variable {value[4:]}"
            for key, value in env.items()
            if value.startswith("env:") and value[4:] != key
        ]
    assert not extra, "settings the producer does not read:\n  " + "\n  ".join(extra)


def test_the_compute_node_allow_lists_every_variable_the_jobs_read() -> None:
    patterns = node_allow_list()
    refused = [
        f"{path.name}: env:{value[4:]}"
        for path, task in bacalhau_tasks()
        for value in task_environment(task)[1].values()
        if value.startswith("env:") and not allowed_by_node(value[4:], patterns)
    ]
    assert not refused, (
        f"{BACALHAU_NODE_CONFIG.relative_to(REPO)} Compute.Env.AllowList does not admit:\n  "
        + "\n  ".join(refused)
    )
    unused = {
        p
        for p in patterns
        if not any(
            allowed_by_node(value[4:], [p])
            for _, task in bacalhau_tasks()
            for value in task_environment(task)[1].values()
            if value.startswith("env:")
        )
    }
    assert not unused, f"allow-listed but no job reads them: {sorted(unused)}"


def test_node_allow_list_semantics() -> None:
    """The check above against Bacalhau's matching: exact names pass, others do not."""
    assert allowed_by_node("KAFKA_SASL_PASSWORD", ["KAFKA_SASL_PASSWORD"])
    assert not allowed_by_node("KAFKA_SASL_PASSWORD", ["KAFKA_SASL_USERNAME"])
    assert not allowed_by_node("AWS_SECRET_ACCESS_KEY", ["^AWS_SECRET_ACCESS_KEY$"])  # glob
    assert not allowed_by_node("XAWS_KEY", ["AWS_*"])  # glob reading refuses it


def test_the_bacalhau_readme_shows_the_node_config() -> None:
    readme = (BACALHAU_DIR / "README.md").read_text(encoding="utf-8")
    assert "node/config.yaml" in readme
    for name in node_allow_list():
        assert name in readme, f"README.md does not mention allow-listed {name}"
    assert "may carry basic-auth credentials" not in "".join(
        p.read_text(encoding="utf-8") for p in bacalhau_specs()
    ), "the registry URL may not carry credentials: they are refused at start"
