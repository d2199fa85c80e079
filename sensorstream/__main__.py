"""The `sensorstream` program: the console script and `python -m sensorstream`.

In an installed wheel the components (producers, stream_apps, sinks, schemas, audit) live in
sensorstream/_components, not at the top of site-packages, where their generic names would
clash with other distributions (`schemas` is one on PyPI) and be importable by every program
of the environment. The program alone puts them first on its own path, before it imports the
CLI. In a source checkout they sit at the repository's top and that folder does not exist.
See docs/architecture.md, "Packaging".
"""

from __future__ import annotations

import sys
from pathlib import Path

COMPONENTS = Path(__file__).resolve().parent / "_components"


def main() -> int:
    if COMPONENTS.is_dir() and str(COMPONENTS) not in sys.path:
        sys.path.insert(0, str(COMPONENTS))
    from sensorstream.cli import main as run

    return run()


if __name__ == "__main__":
    raise SystemExit(main())
