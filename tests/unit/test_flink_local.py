"""flink-local's own Flink configuration and the REST calls that stop a job with a savepoint
(a stand-in Flink REST server on loopback; the real one: tests/integration/test_flink_resume.py)."""

from __future__ import annotations

import json
import os
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from apache_beam.options.pipeline_options import PipelineOptions

from beam_rtbf.flink_local import FlinkRest, FlinkRestError, LocalFlinkConf, settle_checkpoint_options
from beam_rtbf.options import FlinkCheckpointOptions
from beam_rtbf.stopping import savepoint_target, wait_or_cancel

FLINK_LOCAL = ["--runner=FlinkRunner", "--flink_master=[local]"]


def test_the_conf_dir_puts_rest_on_loopback_and_the_restore_path_where_flink_reads_it(tmp_path):
    options = PipelineOptions([*FLINK_LOCAL, f"--savepoint_path={tmp_path}/sp-1"])
    conf = LocalFlinkConf(options)
    try:
        assert options.view_as(FlinkCheckpointOptions).flink_conf_dir == conf.directory
        with open(os.path.join(conf.directory, "config.yaml")) as handle:
            text = handle.read()
        assert 'rest.bind-address: "127.0.0.1"' in text
        assert f'rest.port: "{conf.rest_port}"' in text
        assert f'execution.savepoint.path: "file://{tmp_path}/sp-1"' in text
    finally:
        conf.close()
    assert not os.path.exists(conf.directory)


def test_a_given_conf_dir_is_copied_and_extended_not_changed(tmp_path):
    given = tmp_path / "conf"
    given.mkdir()
    original = "taskmanager.numberOfTaskSlots: 4\nrest.port: 18081\nrest.bind-address: 0.0.0.0\n"
    (given / "flink-conf.yaml").write_text(original)
    options = PipelineOptions([*FLINK_LOCAL, f"--flink_conf_dir={given}"])
    conf = LocalFlinkConf(options)
    try:
        text = (tmp_path / conf.directory / "flink-conf.yaml").read_text()
        assert text.startswith("taskmanager.numberOfTaskSlots: 4\n") and conf.rest_port == 18081
        assert text.count("rest.port:") == 1 and 'rest.bind-address: "127.0.0.1"' in text and "0.0.0.0" not in text
        assert "execution.savepoint.path" not in text
        assert (given / "flink-conf.yaml").read_text() == original
    finally:
        conf.close()


def test_checkpoints_finish_bundles_before_the_barrier_and_drain_held_outputs():
    options = PipelineOptions(["--checkpointing_interval=1000"])
    settle_checkpoint_options(options, streaming=True)
    flink = options.view_as(FlinkCheckpointOptions)
    assert flink.finish_bundle_before_checkpointing and flink.enable_stable_input_drain
    plain = PipelineOptions([])
    settle_checkpoint_options(plain, streaming=True)
    assert not plain.view_as(FlinkCheckpointOptions).finish_bundle_before_checkpointing


def test_the_savepoint_goes_to_savepoint_dir_else_beside_the_checkpoints():
    assert savepoint_target(PipelineOptions(["--state_backend_storage_path=file:///c/"])) == "file:///c/savepoints"
    assert savepoint_target(PipelineOptions(["--savepoint_dir=/s", "--state_backend_storage_path=/c"])) == "/s"
    with pytest.raises(FlinkRestError, match="no --savepoint_dir"):
        savepoint_target(PipelineOptions([]))


class _FakeFlink(BaseHTTPRequestHandler):
    """Flink's /jobs, /jobs/ID/stop and /jobs/ID/savepoints/TRIGGER, answering as ``outcome`` says."""

    outcome = "completed"
    stops: list[dict] = []

    def _send(self, body: dict) -> None:
        data = json.dumps(body).encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self) -> None:  # noqa: N802 - http.server's name
        if self.path == "/jobs":
            self._send({"jobs": [{"id": "old", "status": "FINISHED"}, {"id": "j1", "status": "RUNNING"}]})
        elif self.path == "/jobs/j1/savepoints/t1":
            operation = (
                {"location": "file:/sp/savepoint-1"}
                if self.outcome == "completed"
                else {"failure-cause": {"class": "x"}}
            )
            self._send({"status": {"id": "COMPLETED"}, "operation": operation})
        else:
            self.send_error(404)

    def do_POST(self) -> None:  # noqa: N802
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        type(self).stops.append({"path": self.path, **body})
        self._send({"request-id": "t1"})

    def log_message(self, *args) -> None:
        pass


@pytest.fixture
def fake_flink():
    server = ThreadingHTTPServer(("127.0.0.1", 0), _FakeFlink)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    _FakeFlink.stops = []
    yield FlinkRest(f"http://127.0.0.1:{server.server_address[1]}")
    server.shutdown()
    server.server_close()


def test_stop_with_savepoint_stops_the_running_job_without_drain_and_returns_its_path(fake_flink):
    _FakeFlink.outcome = "completed"
    assert fake_flink.stop_with_savepoint("/sp") == "/sp/savepoint-1"
    assert _FakeFlink.stops == [{"path": "/jobs/j1/stop", "targetDirectory": "file:///sp", "drain": False}]


def test_a_failed_savepoint_is_an_error_and_the_job_is_cancelled_instead(fake_flink):
    _FakeFlink.outcome = "failed"
    with pytest.raises(FlinkRestError, match="stop with savepoint failed"):
        fake_flink.stop_with_savepoint("/sp")

    class Stop:
        requested, reason = True, "SIGINT"

    class Result:
        cancelled = False

        def wait_until_finish(self):
            while not self.cancelled:
                threading.Event().wait(0.01)

        def metrics(self):
            return None

        def cancel(self):
            self.cancelled = True

    result = Result()
    assert wait_or_cancel(result, Stop(), stop_first=lambda: False)
    assert result.cancelled


def test_no_rest_answer_is_an_error_not_a_hang():
    with pytest.raises(FlinkRestError, match="/jobs"):
        FlinkRest("http://127.0.0.1:9", timeout_s=2).running_job()
