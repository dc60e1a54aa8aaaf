"""One bounded input, run on any runner, and the outputs two runs must agree on.

Runs that start Beam's job services (embedded, Flink, Spark) happen in a network namespace of
their own (tests/helpers/netns.py): those services bind every interface.
"""

from __future__ import annotations

import glob
import json
import os
import sys
from pathlib import Path
from typing import Any

from tests.helpers.netns import run_in_netns
from tests.helpers.purge_setup import analytics_rows, archive_table

ROOT = Path(__file__).resolve().parents[2]
T0 = 1_767_225_600_000
SUMMARY_COUNTS = ("sessions_in", "clean", "suppressed", "dead_lettered", "requests_accepted", "manifests_written")
# Fields of a manifest that say when it was written, not what it says.
_MANIFEST_TIMES = ("accepted_at", "effective_at", "retention_holds_until")


def cli_in_netns(*args: str, cwd: Path = ROOT, env: dict | None = None, timeout: float = 600) -> int:
    """`beam-rtbf ARGS` in its own network namespace (its gRPC servers reachable from nowhere)."""
    done = run_in_netns(
        [sys.executable, "-m", "beam_rtbf.cli", *args], timeout=timeout, cwd=cwd, env={**os.environ, **(env or {})}
    )
    assert done.returncode in (0, 1, 2, 3), done.stderr[-3000:]
    return done.returncode


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def sessions(n_users: int = 60, per_user: int = 12) -> list[dict]:
    """``n_users`` users with ``per_user`` sessions each, 7 s apart: two hours, many 1-minute windows."""
    return [
        {"user_id": f"u{u:03d}", "event_time": T0 + (u * per_user + k) * 7_000, "action": "show",
         "action_type": "view", "device_type": ["iPhone", "Mac Desktop"][k % 2], "secs_elapsed": float(k),
         "event_id": f"u{u:03d}-{k}"}
        for u in range(n_users) for k in range(per_user)
    ]  # fmt: skip


def summary(out: Path) -> dict[str, Any]:
    return json.loads((out / "summary.json").read_text())


def archived_records(out: Path) -> list[tuple]:
    """Every archived record, every column, in a stable order."""
    rows = archive_table(out).to_pylist()
    return sorted(tuple(sorted((k, repr(v)) for k, v in r.items())) for r in rows)


def manifests(out: Path) -> dict[str, dict]:
    """request id -> its manifest without the times it was written at."""

    def strip(value: Any) -> Any:
        if isinstance(value, dict):
            return {k: strip(v) for k, v in value.items() if k not in _MANIFEST_TIMES}
        if isinstance(value, list):
            return [strip(v) for v in value]
        return value

    found = [
        json.loads(Path(p).read_text()) for p in glob.glob(str(out / "manifests" / "**" / "*.json"), recursive=True)
    ]
    return {m["request_id"]: strip(m) for m in found}


def dead_letters(out: Path) -> list[str]:
    """Every dead-letter line, sorted (reasons and raw payloads)."""
    lines = []
    for path in glob.glob(str(out / "deadletter" / "**" / "*"), recursive=True):
        if os.path.isfile(path) and not os.path.basename(path).startswith((".", "_")):
            lines += Path(path).read_text().splitlines()
    return sorted(lines)


def assert_same_outputs(out: Path, reference: Path) -> None:
    """Two runs of the same input agree on every figure, record, window, manifest and dead letter."""
    got, want = summary(out), summary(reference)
    assert {k: got[k] for k in SUMMARY_COUNTS} == {k: want[k] for k in SUMMARY_COUNTS}
    assert got["conservation_ok"] and want["conservation_ok"]
    assert archived_records(out) == archived_records(reference)
    assert analytics_rows(out) == analytics_rows(reference)
    assert manifests(out) == manifests(reference)
    assert dead_letters(out) == dead_letters(reference)
