"""Where the lake's Delta tables are: a local path or s3://bucket/prefix, one level or two below
the lake (`<lake>/<route>` or `<lake>/<route>/<region>`, DESIGN section 8).

Shared by the audit, which reads every table, and `sensorstream maintain`, which looks after
every table: both must find the same tables the sink writes. pyarrow is imported where it is
used: the edge image, which runs `sensorstream` without it, imports this package too.
"""

from __future__ import annotations

from typing import TYPE_CHECKING
from urllib.parse import urlsplit

if TYPE_CHECKING:
    import pyarrow.fs as pafs


class LakeNotFound(Exception):
    """The lake URI names nothing: a usage error, not a finding."""


def filesystem(lake_uri: str, options: dict[str, str]) -> tuple[pafs.FileSystem, str]:
    """A filesystem for the lake and the lake's path on it (local path or s3://bucket/prefix)."""
    import pyarrow.fs as pafs

    parts = urlsplit(lake_uri)
    if parts.scheme in ("s3", "s3a"):
        endpoint = options.get("AWS_ENDPOINT_URL")
        fs = pafs.S3FileSystem(
            access_key=options.get("AWS_ACCESS_KEY_ID"),
            secret_key=options.get("AWS_SECRET_ACCESS_KEY"),
            session_token=options.get("AWS_SESSION_TOKEN"),
            region=options.get("AWS_REGION"),
            endpoint_override=urlsplit(endpoint).netloc if endpoint else None,
            scheme=urlsplit(endpoint).scheme if endpoint else "https",
        )
        return fs, f"{parts.netloc}{parts.path}".rstrip("/")
    if parts.scheme not in ("", "file"):
        raise ValueError(f"{lake_uri}: the audit reads local paths and s3:// lakes")
    return pafs.LocalFileSystem(), (parts.path if parts.scheme else lake_uri).rstrip("/")


def discover_tables(lake_uri: str, options: dict[str, str]) -> dict[str, str]:
    """Table name (`raw`, `regional/eu-west-1`, ...) -> URI of every Delta table in the lake,
    at `<lake>/<route>` or `<lake>/<route>/<region>` (DESIGN section 8)."""
    import pyarrow.fs as pafs

    fs, root = filesystem(lake_uri, options)
    base = lake_uri.rstrip("/")
    info = fs.get_file_info(root)
    if info.type == pafs.FileType.NotFound:
        raise LakeNotFound(lake_uri)
    tables: dict[str, str] = {}
    for first in _dirs(fs, root):
        if _is_delta(fs, first):
            name = first.rsplit("/", 1)[-1]
            tables[name] = f"{base}/{name}"
            continue
        for second in _dirs(fs, first):
            if _is_delta(fs, second):
                name = "/".join(second.rsplit("/", 2)[-2:])
                tables[name] = f"{base}/{name}"
    return dict(sorted(tables.items()))


def _dirs(fs: pafs.FileSystem, path: str) -> list[str]:
    import pyarrow.fs as pafs

    selector = pafs.FileSelector(path, allow_not_found=True)
    return [
        i.path.rstrip("/")
        for i in fs.get_file_info(selector)
        if i.type == pafs.FileType.Directory and not i.base_name.startswith(("_", "."))
    ]


def _is_delta(fs: pafs.FileSystem, path: str) -> bool:
    import pyarrow.fs as pafs

    return fs.get_file_info(f"{path}/_delta_log").type == pafs.FileType.Directory


def missing_bucket(lake_uri: str, options: dict[str, str]) -> str | None:
    """The bucket of an s3:// lake when it does not exist (a typo, not a lake yet to be
    written: the sinks would fail on it too); None otherwise."""
    import pyarrow.fs as pafs

    parts = urlsplit(lake_uri)
    if parts.scheme not in ("s3", "s3a"):
        return None
    fs, _ = filesystem(lake_uri, options)
    if fs.get_file_info(parts.netloc).type == pafs.FileType.NotFound:
        return parts.netloc
    return None
