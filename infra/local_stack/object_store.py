"""An S3-compatible object store: S3Proxy with its filesystem backend.

S3Proxy was chosen over MinIO built from source: one checksum-verified Maven Central jar on the
Java 17 the broker already needs, ready in about 1.5 s, against a cold `go install` of MinIO of
about 4 minutes and 2 GB of Go caches. Both honour `If-None-Match: *` on PutObject (a second
writer gets 412), which is what makes concurrent delta-rs commits safe without a lock service.
"""

from __future__ import annotations

import pyarrow.fs as pafs

from infra.local_stack.artifacts import maven_artifact, require_java
from infra.local_stack.errors import StackError
from infra.local_stack.server import LocalServer, accepts_connections

S3PROXY_VERSION = "4.1.0"


def s3_filesystem(endpoint_url: str, access_key: str, secret_key: str, region: str):
    scheme, _, authority = endpoint_url.partition("://")
    return pafs.S3FileSystem(
        access_key=access_key,
        secret_key=secret_key,
        region=region,
        endpoint_override=authority.rstrip("/"),
        scheme=scheme,
        connect_timeout=2,
        request_timeout=5,
        retry_strategy=pafs.AwsStandardS3RetryStrategy(max_attempts=1),
        allow_bucket_creation=True,
    )


def list_buckets(endpoint_url: str, access_key: str, secret_key: str, region: str) -> list[str]:
    fs = s3_filesystem(endpoint_url, access_key, secret_key, region)
    return [info.path for info in fs.get_file_info(pafs.FileSelector("", recursive=False))]


def create_bucket(
    endpoint_url: str, access_key: str, secret_key: str, region: str, bucket: str
) -> None:
    """Create `bucket` unless it exists."""
    if bucket in list_buckets(endpoint_url, access_key, secret_key, region):
        return
    s3_filesystem(endpoint_url, access_key, secret_key, region).create_dir(bucket)


class ObjectStoreServer(LocalServer):
    name = "s3"

    @property
    def ports(self) -> list[int]:
        return [self.settings.s3_port]

    @property
    def port(self) -> int:
        return self.settings.s3_port

    @property
    def endpoint_url(self) -> str:
        return f"http://{self.settings.host}:{self.settings.s3_port}"

    def version(self) -> str:
        return f"s3proxy {S3PROXY_VERSION}"

    def _jar(self):
        return maven_artifact(
            self.settings.cache_dir,
            f"s3proxy-{S3PROXY_VERSION}",
            f"org.gaul:s3proxy:{S3PROXY_VERSION}:jar:jar-with-dependencies",
        )

    def _properties_file(self):
        return self.settings.dir.resolve() / "config" / "s3proxy.properties"

    def prepare(self) -> None:
        require_java()
        self._jar()
        s = self.settings
        self.data_dir.mkdir(parents=True, exist_ok=True)
        path = self._properties_file()
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(
            "\n".join(
                [
                    f"s3proxy.endpoint={self.endpoint_url}",
                    "s3proxy.authorization=aws-v2-or-v4",
                    f"s3proxy.identity={s.s3_access_key}",
                    f"s3proxy.credential={s.s3_secret_key}",
                    "jclouds.provider=filesystem",
                    f"jclouds.filesystem.basedir={self.data_dir}",
                    "jclouds.identity=unused",
                    "jclouds.credential=unused",
                    "",
                ]
            )
        )
        path.chmod(0o600)

    def command(self) -> list[str]:
        return [
            require_java(),
            "-XX:TieredStopAtLevel=1",
            "-XX:+UseSerialGC",
            "-Xms32m",
            "-Xmx256m",
            "-jar",
            str(self._jar()),
            "--properties",
            str(self._properties_file()),
        ]

    def _list(self) -> list[str]:
        s = self.settings
        return list_buckets(self.endpoint_url, s.s3_access_key, s.s3_secret_key, s.s3_region)

    def is_ready(self) -> bool:
        if not accepts_connections(self.settings.host, self.settings.s3_port):
            return False
        try:
            self._list()
        except OSError:
            return False
        return True

    def after_ready(self) -> None:
        """The lake bucket exists once the stack is up, so `stack env` URIs work at once."""
        s = self.settings
        try:
            create_bucket(
                self.endpoint_url, s.s3_access_key, s.s3_secret_key, s.s3_region, s.s3_bucket
            )
        except OSError as exc:
            raise StackError(
                f"creating bucket {s.s3_bucket} on {self.endpoint_url}: {exc}"
            ) from exc

    def exports(self) -> dict[str, str]:
        s = self.settings
        return {
            "SENSORSTREAM_LAKE_URI": f"s3://{s.s3_bucket}/lake",
            "AWS_ENDPOINT_URL": self.endpoint_url,
            "AWS_REGION": s.s3_region,
            "AWS_ACCESS_KEY_ID": s.s3_access_key,
            "AWS_SECRET_ACCESS_KEY": s.s3_secret_key,
            "AWS_ALLOW_HTTP": "true",
        }
