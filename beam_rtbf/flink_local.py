"""Flink embedded in Beam's job server (``--flink_master=[local]``): its configuration, and its REST API.

Beam's Flink runner (2.62) applies ``--savepoint_path`` only when it submits to a remote Flink
(``RemoteStreamEnvironment``, apache/beam PR #7169, BEAM-5396); with ``[local]`` the option is
dropped and a "resumed" job starts from nothing ("No checkpoint found during restore" in Flink's
log). The local environment does read a Flink configuration directory (``--flink_conf_dir``), and
Flink takes ``execution.savepoint.path`` from there. So a flink-local run gets a configuration
directory of its own (``LocalFlinkConf``) that says:

- ``execution.savepoint.path``: the ``--savepoint_path`` to resume from, when one is given;
- ``rest.bind-address`` / ``rest.port``: Flink's REST API on 127.0.0.1 and a port chosen here
  (its default is every interface on a random port), so that this process can stop the job with
  a savepoint and read its checkpoint statistics (``FlinkRest``): Beam's Job API can only cancel.

A configuration directory given with ``--flink_conf_dir`` is copied and these keys set in it (a
``rest.port`` it gives is kept, so a tool beside the run can read Flink's checkpoint statistics).
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import socket
import tempfile
import time
import urllib.error
import urllib.request
from typing import Any

from apache_beam.options.pipeline_options import FlinkRunnerOptions, PipelineOptions, StandardOptions

from beam_rtbf.options import FlinkCheckpointOptions

__all__ = ["LocalFlinkConf", "FlinkRest", "FlinkRestError", "is_flink_local", "settle_checkpoint_options"]

_LOGGER = logging.getLogger(__name__)
_CONF_FILES = ("config.yaml", "flink-conf.yaml")  # Flink 1.19 reads the first it finds


class FlinkRestError(RuntimeError):
    """Flink's REST API did not answer, or refused what was asked."""


def is_flink_local(options: PipelineOptions) -> bool:
    """FlinkRunner with Flink embedded in the job server this process starts."""
    runner = (options.view_as(StandardOptions).runner or "").lower()
    return runner in ("flinkrunner", "flink") and options.view_as(FlinkRunnerOptions).flink_master == "[local]"


def settle_checkpoint_options(options: PipelineOptions, streaming: bool) -> None:
    """The Flink options a job with checkpoints needs, whatever its Flink (local or a cluster):

    - ``finish_bundle_before_checkpointing``: else Beam's runner finishes bundles during the
      snapshot and keeps their outputs in it, tagged by output number; a stage's output numbers
      come from a set's iteration order, which differs between two submissions of the same
      pipeline, so a resumed job sent held outputs to the wrong output (seen: "ClassCastException:
      IntervalWindow cannot be cast to GlobalWindow", "Couldn't flush pushed back elements");
    - ``enable_stable_input_drain`` with exactly-once outputs: else a job whose sources end fails
      on the watermark held by what waits for the next checkpoint (``sinks/stable.py``)."""
    checkpoints = options.view_as(FlinkCheckpointOptions)
    if checkpoints.checkpointing_interval:
        checkpoints.finish_bundle_before_checkpointing = True
    if checkpoints.exactly_once(streaming):
        checkpoints.enable_stable_input_drain = True


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class LocalFlinkConf:
    """A Flink configuration directory for one flink-local run (removed by ``close``)."""

    def __init__(self, options: PipelineOptions) -> None:
        checkpoints = options.view_as(FlinkCheckpointOptions)
        self.directory = tempfile.mkdtemp(prefix="rtbf-flink-conf-")
        given = checkpoints.flink_conf_dir
        name, lines = _CONF_FILES[0], []
        if given:
            for entry in os.listdir(given):
                if os.path.isfile(os.path.join(given, entry)):
                    shutil.copy(os.path.join(given, entry), self.directory)
            name = next((n for n in _CONF_FILES if os.path.isfile(os.path.join(self.directory, n))), name)
            if os.path.isfile(os.path.join(self.directory, name)):
                with open(os.path.join(self.directory, name), encoding="utf-8") as handle:
                    lines = handle.read().splitlines()
        port = next((line.split(":", 1)[1].strip().strip("'\"") for line in lines if line.startswith("rest.port:")), "")
        self.rest_port = int(port) if port.isdigit() else _free_port()  # a given fixed port is kept
        keys = {"rest.bind-address": "127.0.0.1", "rest.address": "127.0.0.1", "rest.port": str(self.rest_port)}
        if checkpoints.savepoint_path:
            keys["execution.savepoint.path"] = _as_uri(checkpoints.savepoint_path)
        kept = [line for line in lines if not any(line.startswith(f"{key}:") for key in keys)]
        with open(os.path.join(self.directory, name), "w", encoding="utf-8") as handle:
            handle.writelines(f"{line}\n" for line in kept)
            handle.write("# set by beam-rtbf for this run\n")
            handle.writelines(f"{key}: {json.dumps(value)}\n" for key, value in keys.items())
        checkpoints.flink_conf_dir = self.directory
        self.rest = FlinkRest(f"http://127.0.0.1:{self.rest_port}")

    def close(self) -> None:
        shutil.rmtree(self.directory, ignore_errors=True)


def _as_uri(path: str) -> str:
    return path if "://" in path else "file://" + os.path.abspath(path)


class FlinkRest:
    """The few calls of Flink's REST API beam-rtbf needs (loopback only; no credentials)."""

    def __init__(self, base_url: str, timeout_s: float = 10.0) -> None:
        self.base_url = base_url.rstrip("/")
        self.timeout_s = timeout_s

    def _call(self, path: str, body: dict | None = None) -> Any:
        data = json.dumps(body).encode() if body is not None else None
        request = urllib.request.Request(
            self.base_url + path, data=data, method="POST" if body is not None else "GET",
            headers={"Content-Type": "application/json"},
        )  # fmt: skip
        try:
            with urllib.request.urlopen(request, timeout=self.timeout_s) as response:  # noqa: S310 - loopback URL
                return json.loads(response.read() or b"null")
        except (urllib.error.URLError, OSError, ValueError) as exc:
            raise FlinkRestError(f"Flink REST {path}: {exc}") from exc

    def running_job(self) -> str:
        """The id of the one running job (a job server runs one job per Flink mini cluster)."""
        jobs = [j["id"] for j in self._call("/jobs").get("jobs", []) if j.get("status") == "RUNNING"]
        if len(jobs) != 1:
            raise FlinkRestError(f"expected one running Flink job, found {len(jobs)}")
        return jobs[0]

    def stop_with_savepoint(self, target_dir: str, timeout_s: float = 120.0) -> str:
        """Stop the running job with a savepoint in ``target_dir``; returns the savepoint's path.

        Flink's stop: the sources stop, a synchronous savepoint is taken, every operator is told it
        completed (Beam releases what it held back for it), then the job ends FINISHED. No drain: the
        watermark does not jump to the end, so no window fires early; a resumed job goes on."""
        job = self.running_job()
        trigger = self._call(f"/jobs/{job}/stop", {"targetDirectory": _as_uri(target_dir), "drain": False})
        request_id = trigger["request-id"]
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            status = self._call(f"/jobs/{job}/savepoints/{request_id}")
            if status.get("status", {}).get("id") == "COMPLETED":
                operation = status.get("operation") or {}
                if "location" in operation:
                    return operation["location"].removeprefix("file:")
                raise FlinkRestError(f"stop with savepoint failed: {operation.get('failure-cause', operation)}")
            time.sleep(0.5)
        raise FlinkRestError(f"stop with savepoint did not complete within {timeout_s:g} s")

    def checkpoint_stats(self, job: str | None = None) -> dict[str, Any]:
        """Flink's checkpoint statistics of the running job (counts, latest completed, sizes)."""
        return self._call(f"/jobs/{job or self.running_job()}/checkpoints")
