"""purge_noncurrent_versions: exact key only, delete markers too, batches of 1000, errors fail closed."""

from __future__ import annotations

import pytest

from beam_rtbf.sinks.versions import OldVersionsError, purge_noncurrent_versions


class FakeS3:
    def __init__(self, versions, markers=(), errors=()):
        self.pages = [{"Versions": list(versions), "DeleteMarkers": list(markers)}]
        self.errors = list(errors)
        self.deleted: list[list[dict]] = []

    def get_paginator(self, name):
        assert name == "list_object_versions"
        return self

    def paginate(self, Bucket, Prefix):  # noqa: N803 - boto3's names
        assert (Bucket, Prefix) == ("bkt", "a/part-1.parquet")
        return self.pages

    def delete_objects(self, Bucket, Delete):  # noqa: N803
        self.deleted.append(Delete["Objects"])
        return {"Errors": self.errors}


def _v(key, version, latest=False):
    return {"Key": key, "VersionId": version, "IsLatest": latest}


def test_only_older_versions_and_markers_of_the_exact_key_go():
    s3 = FakeS3(
        [_v("a/part-1.parquet", "v3", latest=True), _v("a/part-1.parquet", "v2"), _v("a/part-1.parquet.bak", "x1")],
        markers=[_v("a/part-1.parquet", "m1"), _v("a/part-1.parquet.bak", "m2")],
    )
    assert purge_noncurrent_versions("s3://bkt/a/part-1.parquet", client=s3) == 2
    assert s3.deleted == [
        [{"Key": "a/part-1.parquet", "VersionId": "v2"}, {"Key": "a/part-1.parquet", "VersionId": "m1"}]
    ]


def test_many_versions_are_deleted_in_batches_of_1000():
    s3 = FakeS3([_v("a/part-1.parquet", f"v{i}") for i in range(2500)])
    assert purge_noncurrent_versions("s3://bkt/a/part-1.parquet", client=s3) == 2500
    assert [len(batch) for batch in s3.deleted] == [1000, 1000, 500]


def test_refused_deletes_raise_so_the_request_stays_open():
    s3 = FakeS3([_v("a/part-1.parquet", "v2")], errors=[{"Code": "AccessDenied", "Message": "object lock"}])
    with pytest.raises(OldVersionsError, match="1 older versions not deleted .AccessDenied: object lock"):
        purge_noncurrent_versions("s3://bkt/a/part-1.parquet", client=s3)


def test_local_paths_have_no_versions():
    assert purge_noncurrent_versions("/tmp/archive/part-1.parquet", client=object()) == 0
