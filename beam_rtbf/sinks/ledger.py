"""The run ledger: a bounded run's files become visible when the run commits, once per input.

    OUTPUT/_runs/<run_id>.json                         one record per run: inputs, fingerprint, state
    ARCHIVE/_staging/<run_id>/dt=.../part-<run_id>-*.parquet    (object stores: in place, see below)
    ARCHIVE/_staging/<run_id>/_index/part-<run_id>-*.parquet
    ANALYTICS/_staging/<run_id>/dt=.../hour=../pane-<run_id>-*.jsonl
    DEADLETTER/_staging/<run_id>/deadletter-<run_id>-*.jsonl

The protocol of a bounded run (the driver does every step but the writes):

1. ``recover``: records of runs that are not committed are settled first. A run that
   died while ``running`` is dead: its staging folders are deleted (they were never
   visible). A run that died while ``publishing`` had finished its pipeline: its
   publish is resumed (renames are idempotent) and it is marked committed.
2. A committed run with the same input fingerprint makes the new run a no-op, unless
   ``--append``.
3. ``begin``: the record says ``running``; workers write under ``_staging/<run_id>/``
   of each output root (archive, analytics, dead letters), names carrying the run id.
4. ``publish``: after the pipeline finished, the record says ``publishing`` (with the
   run's figures), each staged file is renamed to the same relative path under its
   root (archive data before the index, so an index entry never names a missing
   file), the staging folders are removed and the record says ``committed``.

On object stores (s3://, gs://) a rename is a copy, and in a versioned bucket the
staged key's old versions would keep the data: files are written in place (a PUT is
atomic), named with the run id, and a dead run's files are deleted by that name (with
their old versions). There a dead run's files are visible until the next run.

A run with ``--analytics_sink`` (PostgreSQL) names it in its record: its rows there are
parts of a ``staged`` writer, invisible in the table's view until ``publish`` commits
them (after the files, before the record says ``committed``; a resumed publish does it
again, idempotently), and a dead run's parts are deleted by ``recover``.

Readers (the subject index, manifests, purge planning, analytics purge) list only
the published paths; leftovers of a dead run stay under their output root, where a
full scan of the archive or dead-letter root still sees them, until the next run on
that output removes them. One bounded run per output at a time: a live run on this
host is detected by its process id and refused; across hosts that is the operator's
job, as is not purging an output while a bounded run writes into it (recovery also
removes temporaries a killed run left in the manifests folder). Streaming runs do
not stage: their files appear as written (atomically per file), and re-reads are
absorbed by dedupe on ``event_id``.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import logging
import os
import socket
import uuid
from collections.abc import Mapping, Sequence
from typing import Any

from apache_beam.io.filesystems import FileSystems

from beam_rtbf.sinks.files import STAGING_DIR, is_object_store, join, staging_dir, write_bytes_atomically
from beam_rtbf.sinks.versions import purge_noncurrent_versions

__all__ = [
    "RUNS_DIR",
    "STAGING_DIR",
    "STAGED_KINDS",
    "RunLedger",
    "RunRecord",
    "RunInProgress",
    "input_fingerprint",
    "new_run_id",
    "staging_dir",
]

_LOGGER = logging.getLogger(__name__)

RUNS_DIR = "_runs"
STAGED_KINDS = ("archive", "analytics", "deadletter")  # publish order: archive first (its index last)
INDEX_DIR = "_index"  # the archive's subject index (archive.write.INDEX_DIR; not imported: no cycle)

RUNNING, PUBLISHING, COMMITTED = "running", "publishing", "committed"

RunRecord = dict[str, Any]


class RunInProgress(RuntimeError):
    """Another bounded run on this host writes into the same output right now."""


def new_run_id() -> str:
    """Sortable and unique: ``r20260101T120000Z-1a2b3c4d``."""
    return f"r{dt.datetime.now(dt.timezone.utc):%Y%m%dT%H%M%SZ}-{uuid.uuid4().hex[:8]}"


def input_fingerprint(inputs: Sequence[Mapping[str, Any]]) -> str:
    """A stable digest of what a run reads (source URIs, and for files their paths, sizes, mtimes)."""
    canonical = json.dumps(list(inputs), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()


def _now_iso() -> str:
    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _list(pattern: str) -> list[str]:
    try:
        return sorted(m.path for result in FileSystems.match([pattern]) for m in result.metadata_list)
    except Exception:  # BeamIOError: nothing there (some object stores raise on an empty prefix)
        return []


def pid_alive(pid: int) -> bool:
    """Whether process ``pid`` on this host is running (a zombie is not)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie (killed, not yet reaped by its parent) still answers kill(0); it writes nothing.
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii") as handle:
            return handle.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return True


class RunLedger:
    """Run records under ``OUTPUT/_runs`` and the staged files of each output root."""

    def __init__(self, output: str, roots: Mapping[str, str], manifests: str | None = None) -> None:
        unknown = set(roots) - set(STAGED_KINDS)
        if unknown:
            raise ValueError(f"unknown staged output kinds {sorted(unknown)}; known: {STAGED_KINDS}")
        self.output = output
        self.roots = dict(roots)
        self.directory = join(output, RUNS_DIR)
        self.manifests = manifests  # written in place (once per request); a killed run may leave a temporary

    @classmethod
    def for_locations(cls, output: str, where: Any) -> RunLedger:
        """The ledger of ``output`` whose staged roots and manifests are ``where``'s (``options.Locations``)."""
        return cls(output, {kind: getattr(where, kind) for kind in STAGED_KINDS}, where.manifests)

    # -- records -------------------------------------------------------------------------

    def _record_path(self, run_id: str) -> str:
        return join(self.directory, f"{run_id}.json")

    def _write(self, record: RunRecord) -> None:
        record["updated_at"] = _now_iso()
        write_bytes_atomically(self._record_path(record["run_id"]), json.dumps(record, indent=2).encode())

    def runs(self) -> list[RunRecord]:
        """Every run record, oldest first (a record that cannot be read is skipped and logged)."""
        records = []
        for path in _list(join(self.directory, "*.json")):
            if "/.tmp-" in path:
                continue
            try:
                with FileSystems.open(path) as handle:
                    records.append(json.loads(handle.read()))
            except (OSError, ValueError) as exc:
                _LOGGER.warning("run ledger: cannot read %s: %s", path, exc)
        return sorted(records, key=lambda r: r.get("run_id", ""))

    def committed_with(self, fingerprint: str) -> RunRecord | None:
        """The first committed run that read exactly this input, if any."""
        for record in self.runs():
            if record.get("state") == COMMITTED and record.get("fingerprint") == fingerprint:
                return record
        return None

    def _stored_root(self, root: str) -> str:
        """A root as a run record keeps it: relative to the output when inside it (the output may move)."""
        prefix = self.output.rstrip("/") + "/"
        return root[len(prefix) :] if root.startswith(prefix) else root

    def _record_roots(self, record: RunRecord) -> dict[str, str]:
        """A record's roots, resolved against the output as it is now (older records hold full paths)."""
        roots = record.get("roots") or self.roots
        return {
            kind: root if root.startswith("/") or "://" in root else join(self.output, root)
            for kind, root in roots.items()
        }

    # -- the protocol ----------------------------------------------------------------------

    def recover(self) -> dict[str, list[str]]:
        """Settle runs that did not commit: delete a dead run's staging, finish an interrupted publish.

        Raises ``RunInProgress`` if such a run is still alive on this host.
        """
        removed, resumed = [], []
        host = socket.gethostname()
        for record in self.runs():
            state = record.get("state")
            if state == COMMITTED:
                continue
            if record.get("host") == host and record.get("pid") != os.getpid() and pid_alive(record.get("pid", -1)):
                raise RunInProgress(
                    f"run {record['run_id']} (pid {record['pid']}) is still writing into {self.output}; "
                    "wait for it to end, or use another --output"
                )
            if state == PUBLISHING:
                self._publish_files(record)
                self._publish_table(record)
                record["state"] = COMMITTED
                record["committed_at"] = _now_iso()
                record["resumed_publish"] = True
                self._write(record)
                resumed.append(record["run_id"])
            else:
                self._drop_staging(record)
                self._drop_table(record)
                record["state"] = "abandoned"
                record["abandoned_at"] = _now_iso()
                self._write(record)
                removed.append(record["run_id"])
        # Staging folders without a live record (a record deleted by hand, or roots moved since).
        live = {r["run_id"] for r in self.runs() if r.get("state") in (RUNNING, PUBLISHING)}
        for root in self.roots.values():
            prefix = join(root, STAGING_DIR).rstrip("/") + "/"
            orphans = {p[len(prefix) :].split("/", 1)[0] for p in _list(prefix + "**") if p.startswith(prefix)}
            for run_id in sorted(orphans - live):
                self._delete_tree(staging_dir(root, run_id))
        for folder in (self.output, self.directory, self.manifests):
            if folder:
                self._delete_tmp(folder)
        if removed or resumed:
            _LOGGER.info("run ledger: removed dead runs %s, finished the publish of %s", removed, resumed)
        return {"removed": removed, "resumed": resumed}

    def begin(
        self,
        inputs: Sequence[Mapping[str, Any]],
        append: bool,
        run_id: str | None = None,
        analytics_sink: str | None = None,
    ) -> RunRecord:
        """Record a new run as ``running``; its files go to ``staging_dir(root, run_id)``, its analytics
        rows to ``analytics_sink`` (a PostgreSQL URI, no password) as a staged writer."""
        run_id = run_id or new_run_id()
        record: RunRecord = {
            "run_id": run_id,
            "state": RUNNING,
            "fingerprint": input_fingerprint(inputs),
            "inputs": list(inputs),
            "append": append,
            "roots": {kind: self._stored_root(root) for kind, root in self.roots.items()},
            "host": socket.gethostname(),
            "pid": os.getpid(),
            "started_at": _now_iso(),
        }
        if analytics_sink:
            record["analytics_sink"] = analytics_sink
        self._write(record)
        return record

    def publish(self, record: RunRecord, summary: Mapping[str, Any]) -> RunRecord:
        """Make the run's staged files visible (resumable: ``recover`` finishes it after a crash)."""
        record["state"] = PUBLISHING
        record["summary"] = dict(summary)
        self._write(record)
        record["published_files"] = self._publish_files(record)
        self._publish_table(record)
        record["state"] = COMMITTED
        record["committed_at"] = _now_iso()
        self._write(record)
        return record

    # -- files ------------------------------------------------------------------------------

    def _publish_files(self, record: RunRecord) -> int:
        """Rename every staged file to its place; a file already moved is skipped. Returns files moved."""
        moved = 0
        for kind in STAGED_KINDS:
            root = self._record_roots(record).get(kind)
            if not root:
                continue
            staging = staging_dir(root, record["run_id"])
            files = [p for p in _list(join(staging, "**")) if "/.tmp-" not in p]
            # Data before the index: an index entry never names a file that is not there yet.
            files.sort(key=lambda p: (f"/{INDEX_DIR}/" in p, p))
            prefix = staging.rstrip("/") + "/"
            sources, targets = [], []
            for path in files:
                if not path.startswith(prefix):
                    continue
                target = join(root, path[len(prefix) :])
                sources.append(path)
                targets.append(target)
            made: set[str] = set()
            for source, target in zip(sources, targets):
                parent = target.rsplit("/", 1)[0]
                if parent not in made:
                    _ensure_dir(parent)
                    made.add(parent)
                FileSystems.rename([source], [target])
                moved += 1
            self._delete_tree(staging)
            _remove_if_empty(join(root, STAGING_DIR))
        return moved

    @staticmethod
    def _publish_table(record: RunRecord) -> None:
        """The run's rows in its analytics table count from now on (raises while the database is down:
        the record stays ``publishing`` and the next run or purge on this output finishes it)."""
        if record.get("analytics_sink"):
            from beam_rtbf.sinks.postgres import publish_writer

            record["published_table_parts"] = publish_writer(record["analytics_sink"], record["run_id"])

    @staticmethod
    def _drop_table(record: RunRecord) -> None:
        """A dead run's rows in its analytics table are deleted. They are invisible (staged) anyway, so a
        database that cannot be reached now only delays the clean-up: logged, not raised."""
        if not record.get("analytics_sink"):
            return
        from beam_rtbf.sinks.postgres import AnalyticsSinkError, AnalyticsSinkUnavailable, discard_writer

        try:
            discard_writer(record["analytics_sink"], record["run_id"])
        except (AnalyticsSinkUnavailable, AnalyticsSinkError) as exc:
            _LOGGER.warning("run ledger: dead run %s keeps its staged (invisible) rows: %s", record["run_id"], exc)

    def _drop_staging(self, record: RunRecord) -> None:
        run_id = record["run_id"]
        for root in self._record_roots(record).values():
            if not is_object_store(root):
                self._delete_tree(staging_dir(root, run_id))
                continue
            # Object stores are written in place: the dead run's files are the ones named with its id.
            marker = f"-{run_id}-"
            doomed = [p for p in _list(join(root, "**")) if marker in p.rsplit("/", 1)[-1]]
            if doomed:
                FileSystems.delete(doomed)
                for path in doomed:
                    purge_noncurrent_versions(path)  # a versioned bucket keeps deleted data in old versions

    @staticmethod
    def _delete_tree(folder: str) -> None:
        if not is_object_store(folder):
            if FileSystems.exists(folder):
                FileSystems.delete([folder])  # recursive on local and HDFS filesystems
            return
        files = _list(join(folder, "**"))
        if files:
            FileSystems.delete(files)

    @staticmethod
    def _delete_tmp(folder: str) -> None:
        """Temporaries of atomic writes a killed run left (summary, run records, manifests)."""
        leftovers = [p for p in _list(join(folder, ".tmp-*")) if "/.tmp-" in p]
        if leftovers:
            FileSystems.delete(leftovers)


def _ensure_dir(directory: str) -> None:
    if directory and not is_object_store(directory) and not FileSystems.exists(directory):
        try:
            FileSystems.mkdirs(directory)
        except OSError:
            pass  # created concurrently, or an object store without directories


def _remove_if_empty(folder: str) -> None:
    """Remove a local folder if nothing is left in it (another run's staging keeps it)."""
    if (FileSystems.get_scheme(folder) or "file") != "file":
        return
    try:
        os.rmdir(folder.removeprefix("file://"))
    except OSError:
        pass  # not empty, or already gone
