"""Container health probe: does the command answer on its own Prometheus metrics endpoint?

The endpoint is served from inside the running command, so an answer means the process is up
and not wedged; a bare process check would call a deadlocked producer healthy. Used by the
HEALTHCHECK of the images in infra/docker/Dockerfile as `healthcheck.py <component>`, it reads
the same settings the command reads (SENSORSTREAM_<COMPONENT>_METRICS_PORT / _HOST), so moving
the port moves the probe with it. Port 0 means metrics are off: nothing to probe, healthy.
Standard library only: it runs in the slim image with no extra packages.
"""

from __future__ import annotations

import os
import sys
import urllib.error
import urllib.request

_WILDCARDS = {"", "0.0.0.0", "::"}


def probe_url(component: str, environ: dict[str, str]) -> str | None:
    """The metrics URL to ask, or None when metrics are disabled (port 0)."""
    prefix = f"SENSORSTREAM_{component.upper()}_METRICS_"
    port = environ.get(f"{prefix}PORT")
    if port is None:
        raise SystemExit(f"healthcheck: {prefix}PORT is not set; the image should set it")
    if port.strip() == "0":
        return None
    host = environ.get(f"{prefix}HOST", "").strip()
    if host in _WILDCARDS:
        host = "127.0.0.1"  # listening on every interface includes loopback
    if ":" in host:
        host = f"[{host}]"
    return f"http://{host}:{port.strip()}/metrics"


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print("usage: healthcheck.py producer|router|sink|maintain", file=sys.stderr)
        return 2
    url = probe_url(argv[1], dict(os.environ))
    if url is None:
        return 0
    try:
        with urllib.request.urlopen(url, timeout=4) as response:
            return 0 if response.status == 200 else 1
    except (urllib.error.URLError, OSError) as exc:
        print(f"healthcheck: {url}: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main(sys.argv))
