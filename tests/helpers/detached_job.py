"""A cluster-shaped run, in one process tree: Beam's job service and an SDK worker pool as their
own processes (the Flink JobManager and the TaskManager's worker-pool sidecar stand-ins), and
`beam-rtbf run --detach` submitting to them with environment EXTERNAL. Then the job's state
is polled through the Job API until it ends. Prints one JSON line; meant for tests.netns.

    python -m tests.helpers.detached_job OUTPUT_DIR [beam-rtbf run flags...]
"""

from __future__ import annotations

import json
import re
import socket
import subprocess
import sys
import time

import grpc
from apache_beam.portability.api import beam_job_api_pb2, beam_job_api_pb2_grpc

from beam_rtbf.testing.redis_server import free_port


def _start(argv: list[str], port: int) -> subprocess.Popen:
    process = subprocess.Popen([sys.executable, *argv], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{argv[1]} exited with {process.returncode}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return process
        except OSError:
            time.sleep(0.1)
    process.kill()
    raise RuntimeError(f"{argv[1]} did not listen on {port} within 60 s")


def main(out: str, flags: list[str]) -> dict:
    pool_port, job_port = free_port(), free_port()
    children = []
    try:
        children.append(
            _start(["-m", "apache_beam.runners.worker.worker_pool_main", f"--service_port={pool_port}"], pool_port)
        )
        children.append(
            _start(["-m", "apache_beam.runners.portability.local_job_service_main", f"--port={job_port}"], job_port)
        )
        started = time.monotonic()
        submit = subprocess.run(
            [sys.executable, "-m", "beam_rtbf.cli", "run", "--runner=portable", f"--job_endpoint=localhost:{job_port}",
             "--environment_type=EXTERNAL", f"--environment_config=localhost:{pool_port}", "--detach",
             f"--output={out}", *flags],
            capture_output=True, text=True, timeout=300,
        )  # fmt: skip
        submitted_s = time.monotonic() - started
        found = re.search(r"job (\S+) submitted to (\S+) \((\w+)\)", submit.stdout)
        states = []
        if submit.returncode == 0 and found:
            stub = beam_job_api_pb2_grpc.JobServiceStub(grpc.insecure_channel(f"localhost:{job_port}"))
            terminal = {"DONE", "FAILED", "CANCELLED", "UPDATED", "DRAINED"}
            deadline = time.monotonic() + 300
            while time.monotonic() < deadline:
                state = beam_job_api_pb2.JobState.Enum.Name(
                    stub.GetState(beam_job_api_pb2.GetJobStateRequest(job_id=found.group(1))).state
                )
                if not states or states[-1] != state:
                    states.append(state)
                if state in terminal:
                    break
                time.sleep(0.2)
        return {
            "returncode": submit.returncode,
            "stdout": submit.stdout,
            "stderr_tail": submit.stderr[-2000:],
            "submitted_s": round(submitted_s, 2),
            "finished_s": round(time.monotonic() - started, 2),
            "runner": found.group(2) if found else None,
            "state_at_submit": found.group(3) if found else None,
            "states": states,
        }
    finally:
        for child in children:  # stopped by the PIDs started here
            child.terminate()
            child.wait(timeout=20)


if __name__ == "__main__":
    print(json.dumps(main(sys.argv[1], sys.argv[2:])))
