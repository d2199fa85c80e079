"""Pinned server artifacts fetched once into a cache directory.

Java servers come from Maven Central through Maven itself (so repository checksums are verified
and ~/.m2 is shared with other projects); a finished fetch leaves a marker naming exactly what
was fetched, so a changed pin refetches and an interrupted fetch is never taken as complete.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import tarfile
from pathlib import Path

from infra.local_stack.errors import StackError

_JAVA_HINT = "install a Java 17+ runtime, e.g. `apt-get install -y openjdk-17-jre-headless`"
_MAVEN_HINT = "install Maven, e.g. `apt-get install -y maven`"


def require_java() -> str:
    java = shutil.which("java")
    if java is None:
        raise StackError(
            f"Java is not on PATH; Kafka and the schema registry need it: {_JAVA_HINT}"
        )
    out = subprocess.run([java, "-version"], capture_output=True, text=True).stderr
    match = re.search(r'version "(\d+)(?:\.(\d+))?', out)
    major = int(match.group(1)) if match else 0
    if major == 1 and match and match.group(2):  # "1.8" style
        major = int(match.group(2))
    if major < 17:
        raise StackError(f"{java} is Java {major or '?'}; Kafka 4 needs Java 17+: {_JAVA_HINT}")
    return java


def require_maven() -> str:
    mvn = shutil.which("mvn")
    if mvn is None:
        raise StackError(f"Maven is not on PATH; it fetches the pinned server jars: {_MAVEN_HINT}")
    return mvn


def _marker_matches(marker: Path, spec: dict) -> bool:
    try:
        return json.loads(marker.read_text()) == spec
    except (OSError, ValueError):
        return False


def _run_maven(args: list[str], cwd: Path, what: str) -> None:
    cmd = [require_maven(), "-B", "-q", "--strict-checksums", *args]
    result = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True)
    if result.returncode != 0:
        output = "\n".join((result.stdout + result.stderr).splitlines()[-25:])
        raise StackError(f"Maven could not fetch {what} (exit {result.returncode}):\n{output}")


def maven_classpath(cache_dir: Path, name: str, coordinates: list[str]) -> Path:
    """A directory holding `coordinates` ("group:artifact:version") and their runtime deps."""
    home = cache_dir / name
    lib = home / "lib"
    marker = home / "fetched.json"
    spec = {"coordinates": coordinates}
    if _marker_matches(marker, spec):
        return lib
    if lib.exists():
        shutil.rmtree(lib)
    home.mkdir(parents=True, exist_ok=True)
    deps = "".join(
        "<dependency><groupId>{}</groupId><artifactId>{}</artifactId>"
        "<version>{}</version></dependency>".format(*coord.split(":"))
        for coord in coordinates
    )
    (home / "pom.xml").write_text(
        '<project xmlns="http://maven.apache.org/POM/4.0.0"><modelVersion>4.0.0</modelVersion>'
        f"<groupId>sensorstream.stack</groupId><artifactId>{name}</artifactId><version>1</version>"
        f"<dependencies>{deps}</dependencies></project>\n"
    )
    _run_maven(
        ["dependency:copy-dependencies", "-DincludeScope=runtime", f"-DoutputDirectory={lib}"],
        cwd=home,
        what=", ".join(coordinates),
    )
    marker.write_text(json.dumps(spec))
    return lib


def maven_artifact(cache_dir: Path, name: str, coordinate: str) -> Path:
    """One artifact file ("group:artifact:version[:type[:classifier]]") without its deps."""
    home = cache_dir / name
    marker = home / "fetched.json"
    spec = {"coordinate": coordinate}
    if _marker_matches(marker, spec):
        return Path(json.loads((home / "path.json").read_text()))
    if home.exists():
        shutil.rmtree(home)
    home.mkdir(parents=True)
    out = home / "artifact"
    _run_maven(
        ["dependency:copy", f"-Dartifact={coordinate}", f"-DoutputDirectory={out}"],
        cwd=home,
        what=coordinate,
    )
    files = sorted(out.iterdir())
    if len(files) != 1:
        raise StackError(f"Maven fetched {len(files)} files for {coordinate}, expected one")
    (home / "path.json").write_text(json.dumps(str(files[0])))
    marker.write_text(json.dumps(spec))
    return files[0]


def unpacked(archive: Path, dest: Path) -> Path:
    """`archive` (a .tar.gz) extracted into `dest` once; a half-extracted tree is redone."""
    marker = dest / ".unpacked.json"
    spec = {"archive": str(archive), "size": archive.stat().st_size}
    if _marker_matches(marker, spec):
        return dest
    if dest.exists():
        shutil.rmtree(dest)
    dest.mkdir(parents=True)
    with tarfile.open(archive) as tar:
        tar.extractall(dest, filter="data")
    marker.write_text(json.dumps(spec))
    return dest
