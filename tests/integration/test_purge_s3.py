"""The purge on s3:// against a local S3-compatible server (moto's, over HTTP), in a versioned bucket:
no current object and no older version may hold a forgotten identifier afterwards."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import time
from pathlib import Path

import pytest

from beam_rtbf.job import OutputInUse
from beam_rtbf.purge import lock as lock_module
from beam_rtbf.purge.lock import LockLost, PurgeLock, check_held
from beam_rtbf.purge.receipts import receipt_path
from beam_rtbf.testing.s3_server import ACCESS_KEY, REGION, SECRET_KEY, S3Server
from tests.helpers.crash_purge import crash_purge_command
from tests.helpers.purge_setup import ALL_IDS, FORGOTTEN, archive_counts, build, fetch_local, files_mentioning

pytestmark = [pytest.mark.slow, pytest.mark.integration]


@pytest.fixture(scope="module")
def s3_server():
    with S3Server() as server:
        yield server


@pytest.fixture
def s3_setup(s3_server, tmp_path, registry_url, monkeypatch, request):
    monkeypatch.setenv("RTBF_SUBJECT_HASH_KEY", "test-key")
    monkeypatch.chdir(tmp_path)
    # fetch_local's own boto3 client reads these; the pipeline gets Beam's --s3_* options instead.
    for name, value in {
        "AWS_ACCESS_KEY_ID": ACCESS_KEY,
        "AWS_SECRET_ACCESS_KEY": SECRET_KEY,
        "AWS_DEFAULT_REGION": REGION,
        "AWS_ENDPOINT_URL_S3": s3_server.endpoint,
    }.items():
        monkeypatch.setenv(name, value)
    bucket = f"rtbf-{request.node.name.replace('_', '-')[:40].lower()}"
    client = s3_server.client()
    client.create_bucket(Bucket=bucket)
    client.put_bucket_versioning(Bucket=bucket, VersioningConfiguration={"Status": "Enabled"})
    return build(tmp_path, registry_url, output=f"s3://{bucket}/run", extra=s3_server.pipeline_args())


def _receipt(local_out, request_id: str) -> dict:
    return json.loads(Path(receipt_path(str(local_out / "receipts"), request_id)).read_text())


def test_purge_on_s3_leaves_no_identifier_in_any_object_or_version(s3_setup):
    before = fetch_local(s3_setup.out, s3_setup.root, all_versions=True)
    assert any(p.startswith("archive/dt=") for p in files_mentioning(before, ALL_IDS))
    assert not [p for p in before.rglob("*") if ".tmp-" in p.name]  # object stores are written in place

    assert s3_setup.purge() == 0

    current = fetch_local(s3_setup.out, s3_setup.root)
    assert archive_counts(current) == s3_setup.expected_after
    every_version = fetch_local(s3_setup.out, s3_setup.root, all_versions=True)
    assert files_mentioning(every_version, ALL_IDS) == {}
    for request_id in FORGOTTEN:
        receipt = _receipt(current, request_id)
        assert receipt["status"] == "verified"
        assert receipt["records_removed"]["archive_partition"] == s3_setup.subject_records[request_id]
        archive = [loc for loc in receipt["locations"] if loc["kind"] == "archive_partition"]
        # Relative to the archive root, wherever that bucket is.
        assert archive and all(loc["path"].startswith("dt=2026-01-01/hour=") for loc in archive)
        assert sum(loc["noncurrent_versions_deleted"] for loc in archive) >= 1


def test_keep_old_versions_leaves_them_to_the_lifecycle_rule(s3_setup):
    assert s3_setup.purge("--keep_old_versions") == 0
    current = fetch_local(s3_setup.out, s3_setup.root)
    assert files_mentioning(current, ALL_IDS) == {}
    older = files_mentioning(fetch_local(s3_setup.out, s3_setup.root, all_versions=True), ALL_IDS)
    assert older and all("@" in path for path in older)  # only older versions still hold them


def test_crash_between_put_and_version_purge_then_rerun_purges_the_versions(s3_setup):
    argv, env = crash_purge_command(
        "after_replace:1",
        ["purge", f"--output={s3_setup.out}", f"--registry={s3_setup.registry}", *s3_setup.extra],
        dict(os.environ),
    )
    crashed = subprocess.run(argv, env=env, capture_output=True, timeout=300)
    assert crashed.returncode == 86, crashed.stderr[-2000:]
    left = files_mentioning(fetch_local(s3_setup.out, s3_setup.root, all_versions=True), ALL_IDS)
    assert any("@" in path for path in left), sorted(left)  # the rewritten object's old version still holds them

    assert s3_setup.purge() == 0
    assert files_mentioning(fetch_local(s3_setup.out, s3_setup.root, all_versions=True), ALL_IDS) == {}
    assert archive_counts(fetch_local(s3_setup.out, s3_setup.root)) == s3_setup.expected_after


def test_run_reads_sessions_and_requests_from_s3_globs(s3_server, tmp_path):
    """s3:// sources are the same files as file:// ones, read through Beam's S3 filesystem."""
    from beam_rtbf.pipeline import run
    from tests.helpers.purge_setup import BAD_LINES, T0, sample_sessions

    data = tmp_path / "in"
    data.mkdir()
    lines = [json.dumps(r).encode() for r in sample_sessions()]
    (data / "sessions-1.jsonl").write_bytes(b"\n".join(lines[:200] + BAD_LINES) + b"\n")
    (data / "sessions-2.jsonl").write_bytes(b"\n".join(lines[200:]) + b"\n")
    requests = [{"request_id": f"r-{u}", "subject_id": u, "requested_at": T0} for u in ("alice", "bob")]
    (data / "requests.jsonl").write_text("".join(json.dumps(r) + "\n" for r in requests))
    client = s3_server.client()
    client.create_bucket(Bucket="rtbf-s3-sources")
    for path in data.iterdir():
        client.upload_file(str(path), "rtbf-s3-sources", f"in/{path.name}")
    flags = ["--archive_partition_s=3600", "--dedupe=off"]
    local = run([f"--sessions=file://{data}/sessions-*.jsonl", f"--requests=file://{data}/requests.jsonl",
                 f"--output={tmp_path}/local", f"--registry=embedded://{tmp_path}/local.sqlite", *flags])  # fmt: skip
    from_s3 = run(["--sessions=s3://rtbf-s3-sources/in/sessions-*.jsonl",
                   "--requests=s3://rtbf-s3-sources/in/requests.jsonl",
                   f"--output={tmp_path}/s3", f"--registry=embedded://{tmp_path}/s3.sqlite", *flags,
                   *s3_server.pipeline_args()])  # fmt: skip
    for key in ("sessions_in", "clean", "suppressed", "dead_lettered", "requests_accepted", "manifests_written"):
        assert from_s3[key] == local[key], key
    assert (from_s3["sessions_in"], from_s3["dead_lettered"], from_s3["requests_accepted"]) == (
        len(lines) + len(BAD_LINES), len(BAD_LINES), 2,
    )  # fmt: skip
    assert archive_counts(tmp_path / "s3") == archive_counts(tmp_path / "local")
    assert not {"alice", "bob"} & set(archive_counts(tmp_path / "s3"))


def test_s3_sources_that_match_nothing_or_name_no_bucket_fail_before_the_run(s3_server, tmp_path):
    from beam_rtbf.pipeline import run

    s3_server.client().create_bucket(Bucket="rtbf-s3-empty")
    common = [f"--output={tmp_path}/out", f"--registry=embedded://{tmp_path}/r.sqlite", *s3_server.pipeline_args(),
              "--requests=synthetic://requests?requests=0"]  # fmt: skip
    with pytest.raises(ValueError, match=r"no file matches s3://rtbf-s3-empty/in/\*\.jsonl"):
        run(["--sessions=s3://rtbf-s3-empty/in/*.jsonl", *common])
    with pytest.raises(ValueError, match=r"s3://no-such-bucket-rtbf/in/\*\.jsonl"):
        run(["--sessions=s3://no-such-bucket-rtbf/in/*.jsonl", *common])
    assert not (tmp_path / "out").exists()


def _lock(s3_server, bucket: str, run_id: str, **timing: float) -> PurgeLock:
    return PurgeLock(f"s3://{bucket}/run/archive", run_id, client=s3_server.client(), **timing)


@pytest.fixture
def lock_bucket(s3_server, request) -> str:
    bucket = f"rtbf-lock-{request.node.name.replace('_', '-')[:30].lower()}"
    client = s3_server.client()
    client.create_bucket(Bucket=bucket)
    client.put_bucket_versioning(Bucket=bucket, VersioningConfiguration={"Status": "Enabled"})
    return bucket


def test_the_s3_purge_lock_has_one_holder_and_is_deleted_by_it(s3_server, lock_bucket):
    client = s3_server.client()
    key = "run/archive.purge.lock"
    first = _lock(s3_server, lock_bucket, "run-a")
    first.acquire()
    assert json.loads(client.get_object(Bucket=lock_bucket, Key=key)["Body"].read())["run"] == "run-a"
    with pytest.raises(OutputInUse, match=r"purge run-a \(host \S+, pid \d+, since .*one purge at a time"):
        _lock(s3_server, lock_bucket, "run-b").acquire()
    first.release()
    assert "Contents" not in client.list_objects_v2(Bucket=lock_bucket, Prefix=key)
    second = _lock(s3_server, lock_bucket, "run-b")  # created again over the delete marker
    second.acquire()
    assert json.loads(client.get_object(Bucket=lock_bucket, Key=key)["Body"].read())["run"] == "run-b"
    second.release()


def test_a_beating_s3_lock_stays_a_dead_one_is_taken_over_and_its_holder_learns_it(s3_server, lock_bucket):
    alive = _lock(s3_server, lock_bucket, "run-a", heartbeat_s=0.3, stale_after_s=2.0)
    alive.acquire()
    time.sleep(3.0)  # longer than stale_after_s: the heartbeats keep it
    with pytest.raises(OutputInUse, match="purge run-a"):
        _lock(s3_server, lock_bucket, "run-b", stale_after_s=2.0).acquire()
    alive._impl._stop.set()  # the holder stops beating (as if hung or killed) ...
    alive._impl._thread.join()
    time.sleep(3.0)  # ... for longer than stale_after_s
    taker = _lock(s3_server, lock_bucket, "run-b", stale_after_s=2.0)
    taker.acquire()
    time.sleep(0.6)  # the old holder's next beat (had it not stopped) ... its release finds out
    with pytest.raises(LockLost, match="taken over by another purge"):
        alive.release()  # the old holder does not delete the new holder's lock, and fails
    check_held()  # the process holds no lock any more: nothing to lose
    with pytest.raises(OutputInUse, match="purge run-b"):
        _lock(s3_server, lock_bucket, "run-c", stale_after_s=2.0).acquire()
    taker.release()


def test_a_purge_on_s3_is_refused_while_another_holds_the_lock(s3_setup, s3_server, capsys):
    bucket = str(s3_setup.out).split("/")[2]
    holder = _lock(s3_server, bucket, "run-elsewhere")
    holder.acquire()
    try:
        assert s3_setup.purge() == 2
        assert "purge run-elsewhere (host" in capsys.readouterr().err
    finally:
        holder.release()
    assert s3_setup.purge() == 0
    client = s3_server.client()
    assert "Contents" not in client.list_objects_v2(Bucket=bucket, Prefix="run/archive.purge.lock")


def test_an_s3_lock_of_a_dead_process_of_this_host_is_taken_over_at_once(s3_server, lock_bucket):
    dead = subprocess.Popen(["true"])
    dead.wait()
    body = {"run": "run-crashed", "host": socket.gethostname(), "machine": lock_module._machine(), "pid": dead.pid}
    body["since"] = time.time()
    key = "run/archive.purge.lock"
    s3_server.client().put_object(Bucket=lock_bucket, Key=key, Body=json.dumps(body).encode())
    # The same host name and a pid not running here, but another pid namespace (a container): alive.
    elsewhere = {**body, "machine": body["machine"] + "0", "run": "run-elsewhere"}
    taker = _lock(s3_server, lock_bucket, "run-b")
    taker.acquire()  # fresh, but its holder is gone: no need to wait five minutes
    taker.release()
    s3_server.client().put_object(Bucket=lock_bucket, Key=key, Body=json.dumps(elsewhere).encode())
    with pytest.raises(OutputInUse, match="purge run-elsewhere"):  # a process elsewhere: cannot tell
        _lock(s3_server, lock_bucket, "run-c").acquire()


def test_a_holder_that_learns_its_lock_was_taken_replaces_no_file_and_writes_no_receipt(
    s3_server, lock_bucket, tmp_path
):
    from beam_rtbf.archive.write import write_data_file
    from beam_rtbf.purge.rewrite import FileTask, rewrite_file
    from tests.unit.test_idfilter import _table

    holder = _lock(s3_server, lock_bucket, "run-a", heartbeat_s=0.2)
    holder.acquire()
    # Another purge wrote the lock over (as a takeover after a stall would): the next beat sees it.
    s3_server.client().put_object(Bucket=lock_bucket, Key="run/archive.purge.lock", Body=b'{"run": "run-b"}')
    deadline = time.monotonic() + 10
    while not holder._impl.lost:
        assert time.monotonic() < deadline
        time.sleep(0.05)
    path = tmp_path / "dt=2026-01-01" / "part.parquet"
    path.parent.mkdir()
    write_data_file(str(path), _table(email=["gone@x.com", None]))
    before = path.read_bytes()
    with pytest.raises(Exception, match="not replaced: .*taken over by another purge"):
        rewrite_file(FileTask("archive", str(path)), {"user-0": ("req-0",)}, str(tmp_path / "journal"))
    assert path.read_bytes() == before
    with pytest.raises(LockLost):
        holder.release()
    check_held()


class _AnotherWriter:
    """At the purge's first replace, another writer (as a second purge would) removes user-01's
    rows from every archive object: a copy the purge read before that must not replace it."""

    def __init__(self, client, bucket: str) -> None:
        import threading

        self.client, self.bucket, self.done = client, bucket, False
        self.lock = threading.Lock()  # rewrites on other threads wait until the other writer is done

    def reached(self, point: str) -> None:
        if point != "before_replace":
            return
        with self.lock:
            if not self.done:
                self._remove_user_01()
                self.done = True

    def _remove_user_01(self) -> None:
        import io

        import pyarrow.compute as pc
        import pyarrow.parquet as pq

        keys = [o["Key"] for o in self.client.list_objects_v2(Bucket=self.bucket, Prefix="run/archive/dt=")["Contents"]]
        for key in keys:
            table = pq.read_table(io.BytesIO(self.client.get_object(Bucket=self.bucket, Key=key)["Body"].read()))
            sink = io.BytesIO()
            pq.write_table(table.filter(pc.not_equal(table.column("user_id"), "user-01")), sink)
            self.client.put_object(Bucket=self.bucket, Key=key, Body=sink.getvalue())


def test_a_rewrite_never_replaces_an_object_another_writer_changed_after_it_was_read(s3_setup, s3_server):
    from beam_rtbf.purge import faults

    bucket = str(s3_setup.out).split("/")[2]
    writer = _AnotherWriter(s3_server.client(), bucket)
    previous = faults.install(writer)
    try:
        assert s3_setup.purge() == 1  # the files changed under it: errors, the requests stay open
    finally:
        faults.install(previous)
    assert writer.done
    current = fetch_local(s3_setup.out, s3_setup.root)
    assert archive_counts(current)["user-01"] == 0  # the other writer's removal was not undone
    assert {_receipt(current, r)["status"] for r in FORGOTTEN} == {"incomplete"}
    errors = [loc for r in FORGOTTEN for loc in _receipt(current, r)["locations"] if loc.get("status") == "error"]
    assert errors and all("changed since this purge read it" in loc["verification"] for loc in errors)

    assert s3_setup.purge() == 0  # re-run: reads the new objects, verified
    current = fetch_local(s3_setup.out, s3_setup.root)
    assert archive_counts(current)["user-01"] == 0
    assert files_mentioning(fetch_local(s3_setup.out, s3_setup.root, all_versions=True), ALL_IDS) == {}
    assert {_receipt(current, r)["status"] for r in FORGOTTEN} == {"verified"}
