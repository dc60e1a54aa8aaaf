"""Older object versions in a versioned bucket keep erased records: delete them after a rewrite.

A rewrite (PUT) or a delete on a versioned S3 bucket does not remove the previous content: it
becomes a noncurrent version (or sits behind a delete marker) that anyone with
``s3:GetObjectVersion`` can still read. After the purge replaces or deletes an object, every
version of that exact key except the current one is deleted, and so are its delete markers.

``--keep_old_versions`` skips this and leaves it to the bucket's lifecycle rule
(terraform/modules/storage expires noncurrent versions well inside the erasure deadline).

A storage concern, so it lives with the sinks: the purge's rewrites and manifests
and the run ledger's publishing all call it.
"""

from __future__ import annotations

import threading
from typing import Any

from apache_beam.io.filesystems import FileSystems

__all__ = [
    "purge_noncurrent_versions",
    "OldVersionsError",
    "s3_client",
    "split_s3_path",
    "s3_error_code",
    "CONDITION_FAILED",
]

_BATCH = 1000  # DeleteObjects takes at most 1000 keys


class OldVersionsError(RuntimeError):
    """Older versions could not be listed or deleted (permissions, object lock, MFA delete...)."""


# An S3 conditional write (If-Match / If-None-Match) refused: the object is not what was expected.
CONDITION_FAILED = ("PreconditionFailed", "412", "ConditionalRequestConflict", "409")
_NO_OPTIONS: dict = {}
_client_lock = threading.Lock()
_client: tuple[Any, Any] | None = None  # (the options it was built from, the client)


def split_s3_path(path: str) -> tuple[str, str]:
    """``s3://bucket/key`` -> (bucket, key)."""
    if not path.startswith("s3://"):
        raise ValueError(f"not an s3:// path: {path}")
    bucket, _, key = path[len("s3://") :].partition("/")
    return bucket, key


def s3_error_code(exc: Any) -> str:
    """A botocore ClientError's code, or its HTTP status when the body named none."""
    return str(exc.response.get("Error", {}).get("Code", "")) or str(
        exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", "")
    )


def s3_client() -> Any:
    """A boto3 client with the same --s3_* options Beam's S3 filesystem uses in this process.

    One per options object: building a client costs ~140 ms here, and a purge asks for one per
    request it sends (boto3 clients may be shared between threads)."""
    global _client
    from apache_beam.io.aws.clients.s3.boto3_client import Client

    # Beam keeps the pipeline options its filesystems were configured with (driver and workers).
    options = FileSystems._pipeline_options or _NO_OPTIONS  # noqa: SLF001 - no public accessor
    with _client_lock:
        if _client is None or _client[0] is not options:
            _client = (options, Client(options).client)
        return _client[1]


def purge_noncurrent_versions(path: str, client: Any = None) -> int:
    """Delete every noncurrent version and delete marker of ``path``; returns how many went.

    Only s3:// paths have versions here; other schemes return 0.
    """
    if not path.startswith("s3://"):
        return 0
    bucket, key = split_s3_path(path)
    client = client or s3_client()
    doomed: list[dict[str, str]] = []
    try:
        for page in client.get_paginator("list_object_versions").paginate(Bucket=bucket, Prefix=key):
            for version in page.get("Versions", []):
                if version["Key"] == key and not version["IsLatest"]:
                    doomed.append({"Key": key, "VersionId": version["VersionId"]})
            for marker in page.get("DeleteMarkers", []):
                if marker["Key"] == key:
                    doomed.append({"Key": key, "VersionId": marker["VersionId"]})
        for start in range(0, len(doomed), _BATCH):
            batch = doomed[start : start + _BATCH]
            response = client.delete_objects(Bucket=bucket, Delete={"Objects": batch, "Quiet": True})
            errors = response.get("Errors", [])
            if errors:
                first = errors[0]
                raise OldVersionsError(
                    f"{path}: {len(errors)} older versions not deleted ({first.get('Code')}: {first.get('Message')})"
                )
    except OldVersionsError:
        raise
    except Exception as exc:  # botocore ClientError / EndpointConnectionError: fail closed, keep it open
        raise OldVersionsError(f"{path}: older versions could not be purged ({type(exc).__name__}: {exc})") from exc
    return len(doomed)
