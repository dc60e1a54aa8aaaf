"""A run directory with known history, then erasure requests for some of its subjects.

Run 1 archives everything (no requests yet); run 2 brings the requests, so the
registry accepts them and manifests name the archive files that hold them.
"""

from __future__ import annotations

import dataclasses
import glob
import json
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from beam_rtbf.cli import main
from beam_rtbf.manifests.build import manifest_path
from beam_rtbf.purge.receipts import receipt_path

T0 = 1_767_225_600_000  # 2026-01-01T00:00:00Z
HOUR = 3_600_000

# Subjects to forget, with every identifier a request names for them.
FORGOTTEN = {
    "req-a": ("alice", "alice@example.com"),  # user id and email alias
    "req-b": ("bob",),
    "req-c": ("carol", "dev-carol-1"),  # a device id alias
}
ALL_IDS = sorted({i for ids in FORGOTTEN.values() for i in ids})  # every identifier of every request
# A guest session that carries only Alice's email: the alias must find it.
GUEST_WITH_ALIAS = "guest-77"


@dataclasses.dataclass
class PurgeSetup:
    root: Path
    out: Path | str  # a local folder, or an s3:// URI
    registry: str
    counts_before: Counter  # records per user id in the archive after run 1
    expected_after: Counter  # records per user id with no forgotten identifier: what must remain
    subject_records: dict[str, int]  # request id -> archive records of that subject (all identifiers)
    extra: Sequence[str] = ()  # options every command gets (e.g. --s3_endpoint_url)

    def purge(self, *extra: str) -> int:
        return main(["purge", f"--output={self.out}", f"--registry={self.registry}", *self.extra, *extra])


def sample_sessions() -> list[dict]:
    """The purge setup's session records (40 other users and the forgotten subjects, over three hours)."""
    rows = []
    others = [f"user-{i:02d}" for i in range(40)]
    for hour in range(3):
        for i, user in enumerate(others):
            for k in range(5):
                rows.append(_row(user, T0 + hour * HOUR + (i * 5 + k) * 1000))
        for k in range(4):
            rows.append(_row("alice", T0 + hour * HOUR + 700_000 + k, email="alice@example.com"))
            rows.append(_row("bob", T0 + hour * HOUR + 800_000 + k))
        rows.append(_row("carol", T0 + hour * HOUR + 900_000, device_id="dev-carol-1"))
    rows.append(_row(GUEST_WITH_ALIAS, T0 + 950_000, email="alice@example.com"))
    rows.append(_row("user-00", T0 + 960_000, device_id="dev-carol-1"))  # carol's device, another user id
    return rows


def _row(user: str, t: int, email: str | None = None, device_id: str | None = None) -> dict:
    row = {
        "user_id": user,
        "event_time": t,
        "action": "show",
        "action_type": "view",
        "device_type": "iPhone",
        "secs_elapsed": 3.0,
        "event_id": f"{user}-{t}",
    }
    if email:
        row["email"] = email
    if device_id:
        row["device_id"] = device_id
    return row


BAD_LINES = [
    b'{"user_id": "bob", "event_time": "not-a-time"}',  # a dead letter holding Bob's id
    b'{"user_id": "user-03", "secs_elapsed": -1}',  # someone else's dead letter: must stay
    b'{"user_id": "alice@example.com" "broken json',
]


def archive_table(out: Path) -> pa.Table:
    files = sorted(glob.glob(str(out / "archive" / "dt=*" / "**" / "*.parquet"), recursive=True))
    return pa.concat_tables([pq.read_table(f) for f in files]) if files else pa.table({})


def build(
    root: Path,
    registry: str,
    output: str | None = None,
    extra: Sequence[str] = (),
    forgotten: dict[str, tuple[str, ...]] | None = None,
    bad_lines: Sequence[bytes] = BAD_LINES,
) -> PurgeSetup:
    """Two runs into ``output`` (default ROOT/out; s3:// is read back with ``fetch_local``).

    ``forgotten`` (default FORGOTTEN): request id -> identifiers; ``bad_lines``: raw input lines
    that become dead letters in run 1.
    """
    forgotten = FORGOTTEN if forgotten is None else forgotten
    out = output or root / "out"
    data = root / "data"
    data.mkdir(parents=True)
    sessions = data / "sessions.jsonl"
    sessions.write_bytes(
        b"".join(json.dumps(r).encode() + b"\n" for r in sample_sessions()) + b"\n".join(bad_lines) + b"\n"
    )
    empty = data / "empty.jsonl"
    empty.write_bytes(b"")
    requests = data / "requests.jsonl"
    requests.write_text(
        "".join(
            json.dumps(
                {"request_id": rid, "subject_id": ids[0], "aliases": list(ids[1:]), "requested_at": T0 + 4 * HOUR}
            )
            + "\n"
            for rid, ids in forgotten.items()
        )
    )
    common = [f"--output={out}", f"--registry={registry}", "--archive_partition_s=3600", "--dedupe=off", *extra]
    assert main(["run", *common, f"--sessions=file://{sessions}", f"--requests=file://{empty}"]) == 0
    assert main(["run", *common, f"--sessions=file://{empty}", f"--requests=file://{requests}"]) == 0
    local = out if output is None else fetch_local(out, root)
    return PurgeSetup(root, out, registry, *expectations(local, forgotten), extra)


def expectations(
    local_out: Path, forgotten: dict[str, tuple[str, ...]] | None = None
) -> tuple[Counter, Counter, dict[str, int]]:
    """From a run directory on disk: counts before, what must remain, and each subject's records."""
    forgotten = FORGOTTEN if forgotten is None else forgotten
    table = archive_table(local_out)
    counts = Counter(table.column("user_id").to_pylist())
    rows = table.to_pylist()
    subject_records = {
        rid: sum(1 for r in rows if {r["user_id"], r["email"], r["device_id"]} & set(ids))
        for rid, ids in forgotten.items()
    }
    every_id = {i for ids in forgotten.values() for i in ids}
    expected_after = Counter(r["user_id"] for r in rows if not {r["user_id"], r["email"], r["device_id"]} & every_id)
    return counts, expected_after, subject_records


def fetch_local(uri: str, root: Path, all_versions: bool = False) -> Path:
    """Copy an s3:// run directory to disk; ``all_versions`` adds every older version as NAME@VERSION.EXT."""
    import boto3

    bucket, _, prefix = uri[len("s3://") :].partition("/")
    client = boto3.client("s3")  # endpoint and keys from the AWS_* environment the test sets
    target = root / ("versions" if all_versions else "current")
    if target.exists():
        import shutil

        shutil.rmtree(target)
    for page in client.get_paginator("list_object_versions").paginate(Bucket=bucket, Prefix=prefix + "/"):
        for version in page.get("Versions", []):
            if not version["IsLatest"] and not all_versions:
                continue
            relative = version["Key"][len(prefix) + 1 :]
            if not version["IsLatest"]:  # keep the suffix: files_mentioning decodes .parquet
                stem, dot, suffix = relative.rpartition(".")
                relative = (
                    f"{stem}@{version['VersionId']}{dot}{suffix}" if dot else f"{relative}@{version['VersionId']}"
                )
            local = target / relative
            local.parent.mkdir(parents=True, exist_ok=True)
            body = client.get_object(Bucket=bucket, Key=version["Key"], VersionId=version["VersionId"])["Body"]
            local.write_bytes(body.read())
    return target


def files_mentioning(root: Path, needles: list[str]) -> dict[str, list[str]]:
    """Every file under ``root`` (Parquet decoded to text) that still contains one of ``needles``."""
    found: dict[str, list[str]] = {}
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        if path.suffix == ".parquet":
            text = json.dumps(pq.read_table(path).to_pylist(), default=str)
        else:
            text = path.read_bytes().decode("utf-8", "replace")
        hits = [n for n in needles if f'"{n}"' in text or f'\\"{n}\\"' in text]
        if hits:
            found[str(path.relative_to(root))] = hits
    return found


def archive_counts(out: Path) -> Counter:
    table = archive_table(out)
    return Counter(table.column("user_id").to_pylist()) if table.num_rows else Counter()


def read_receipt(out: Path, request_id: str) -> dict:
    return json.loads(Path(receipt_path(str(out / "receipts"), request_id)).read_text())


def manifest_file(out: Path, request_id: str) -> Path:
    return Path(manifest_path(str(out / "manifests"), request_id))


def manifest(out: Path, request_id: str) -> dict:
    return json.loads(manifest_file(out, request_id).read_text())


def analytics_rows(out: Path) -> dict[tuple[str, str, str], tuple[int, int, float]]:
    """(window_start, action_type, device_type) -> (sessions, distinct users, avg secs) from DIR/analytics."""
    rows = {}
    for path in glob.glob(str(out / "analytics" / "**" / "*.jsonl"), recursive=True):
        for line in Path(path).read_text().splitlines():
            r = json.loads(line)
            key = (r["window_start"], r["action_type"], r["device_type"])
            assert key not in rows, f"window row {key} written twice"
            rows[key] = (r["sessions"], r["distinct_users"], round(r["avg_secs_elapsed"], 6))
    return rows


def analytics_sessions(out: Path) -> int:
    return sum(v[0] for v in analytics_rows(out).values())


def aggregate_archive(out: Path, window_ms: int = 60_000) -> dict[tuple[str, str, str], tuple[int, int, float]]:
    """The same aggregates computed independently (plain Python) from the archive's records."""
    import datetime as dt

    groups: dict[tuple[str, str, str], list[dict]] = {}
    for r in archive_table(out).to_pylist():
        start = r["event_time_ms"] // window_ms * window_ms
        iso = dt.datetime.fromtimestamp(start / 1000, dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.000Z")
        groups.setdefault((iso, r["action_type"], r["device_type"]), []).append(r)
    return {
        key: (len(rs), len({r["user_id"] for r in rs}), round(sum(r["secs_elapsed"] for r in rs) / len(rs), 6))
        for key, rs in groups.items()
    }
