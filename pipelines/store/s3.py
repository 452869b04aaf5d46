"""The asset store's S3 backend: one PUT per publish (conditional on a version), one GET per read.

boto3 rather than Arrow's S3 filesystem: a read must be one GET (Arrow's reader fetches a Parquet
file in ranged GETs, which a republish in between tears: docs/asset-store.md), a publish must be
conditional (If-Match / If-None-Match, which Arrow does not expose), and boto3 honours
AWS_ENDPOINT_URL as the rest of the code location does.
"""

from __future__ import annotations

import functools
from typing import Any

from pipelines.store.asset_store import ANY, AssetConflict

def s3_client_for(region: str | None = None) -> Any:
    """A boto3 S3 client; boto3 reads AWS_ENDPOINT_URL(_S3) and the credentials itself, when the
    process's first client for `region` is made. One per process and region (making a client costs
    0.25 s and more: an ad-hoc query would pay it each time); boto3 clients are thread-safe."""
    return _client(region)


@functools.lru_cache(maxsize=8)
def _client(region: str | None) -> Any:
    import boto3
    from botocore.config import Config

    session = boto3.session.Session()
    return session.client("s3", region_name=region or session.region_name or "us-east-1",
                          config=Config(retries={"max_attempts": 3, "mode": "standard"}, max_pool_connections=16))


class S3Backend:
    def __init__(self, bucket: str, prefix: str, client: Any):
        self.bucket, self.prefix, self.client = bucket, prefix, client

    def key(self, name: str) -> str:
        return f"{self.prefix}/{name}" if self.prefix else name

    def describe(self, name: str) -> str:
        return f"s3://{self.bucket}/{self.key(name)}"

    def get(self, name: str) -> tuple[bytes, str] | None:
        try:
            answer = self.client.get_object(Bucket=self.bucket, Key=self.key(name))
        except self.client.exceptions.NoSuchKey:
            return None
        # One GET, one version: the body and the ETag come from the same response.
        return answer["Body"].read(), answer["ETag"]

    def put(self, name: str, data: bytes, expect: object) -> str:
        condition: dict[str, str] = {}
        if expect is None:
            condition = {"IfNoneMatch": "*"}
        elif expect is not ANY:
            condition = {"IfMatch": str(expect)}
        try:
            answer = self.client.put_object(Bucket=self.bucket, Key=self.key(name), Body=data,
                                            ContentType="application/vnd.apache.parquet", **condition)
        except self.client.exceptions.ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in ("PreconditionFailed", "ConditionalRequestConflict"):
                raise AssetConflict(f"{self.describe(name)} changed since it was loaded "
                                    f"(expected {'no object' if expect is None else expect})") from None
            raise
        return answer["ETag"]
