"""The one driver of run and purge: exit codes, a live run as a user error, runner resolution,
the shared steps of ``run_job`` on a small job, and no upward import from purge."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import subprocess
import sys
import tempfile
from typing import Any

import apache_beam as beam
import pytest
from apache_beam.options.pipeline_options import PipelineOptions
from apache_beam.runners.portability.fn_api_runner import FnApiRunner

from beam_rtbf import driver
from beam_rtbf.cli import main
from beam_rtbf.job import OutputInUse, job_options, resolve_runner, run_job, runner_name
from beam_rtbf.local_runner import LocalStreamingRunner, StopRequest
from beam_rtbf.pipeline import run
from beam_rtbf.purge.pipeline import run_purge
from beam_rtbf.runner_names import EMBEDDED_PORTABLE
from beam_rtbf.sinks.ledger import RunLedger
from beam_rtbf.summary import purge_exit_code, run_exit_code

# -- exit codes ---------------------------------------------------------------------------------


def test_run_exits_0_when_conservation_holds_and_1_when_it_is_violated():
    assert run_exit_code({"conservation_ok": True}) == 0
    assert run_exit_code({"conservation_ok": False}) == 1
    assert run_exit_code({}) == 1  # no figure is not a success
    assert run_exit_code({"job_jar": "/tmp/job.jar"}) == 0  # nothing ran here: nothing to account for
    assert run_exit_code({"detached": True, "job_id": "j-1"}) == 0


def test_purge_exits_0_all_verified_1_left_open_or_bad_manifest_3_guard():
    assert purge_exit_code({"verified": 2, "incomplete": [], "blocked": [], "manifest_problems": []}) == 0
    assert purge_exit_code({"requests_pending": 0, "manifest_problems": []}) == 0  # nothing pending
    assert purge_exit_code({"incomplete": ["r-1"], "blocked": [], "manifest_problems": []}) == 1
    assert purge_exit_code({"incomplete": [], "manifest_problems": [{"path": "m.json", "reason": "bad"}]}) == 1
    assert purge_exit_code({"incomplete": ["r-1"], "blocked": ["r-2"], "manifest_problems": []}) == 3
    assert purge_exit_code({"job_jar": "/tmp/purge.jar", "manifest_problems": [{"path": "m", "reason": "r"}]}) == 0


def _violated() -> dict[str, Any]:
    return {
        "sessions_in": 10,
        "clean": 7,
        "suppressed": 1,
        "dead_lettered": 1,
        "conservation_ok": False,
        "runner": "FnApiRunner",
        "filter_strategy": "broadcast",
        "output": "/out",
    }


def _execute_with(monkeypatch, tmp_path, command: str, summary: dict[str, Any]) -> int:
    """``driver.execute`` with the job run replaced by ``summary`` (the wiring alone is under test)."""
    jobs: list[Any] = []
    monkeypatch.setattr(driver, "run_job", lambda job, stop=None: jobs.append(job) or summary)
    monkeypatch.setattr(driver, "COMMANDS", {**driver.COMMANDS})
    kind = driver.COMMANDS[command]
    monkeypatch.setitem(driver.COMMANDS, command, kind._replace(job=lambda options: ("job", command)))
    code = driver.execute(command, PipelineOptions([f"--output={tmp_path}/out"]))
    assert jobs == [("job", command)]
    return code


@pytest.mark.parametrize(
    ("command", "summary", "code"),
    [
        ("run", _violated(), 1),
        ("run", {**_violated(), "clean": 8, "conservation_ok": True}, 0),
        ("purge", {"run": "p-1", "blocked": ["r-1"], "manifest_problems": [], "guard": {"reasons": ["x"]}}, 3),
        ("purge", {"run": "p-1", "incomplete": ["r-2"], "manifest_problems": []}, 1),
        ("purge", {"run": "p-1", "verified": 1, "manifest_problems": []}, 0),
    ],
)
def test_execute_returns_the_commands_exit_code(monkeypatch, capsys, tmp_path, command, summary, code):
    assert _execute_with(monkeypatch, tmp_path, command, summary) == code
    assert capsys.readouterr().out.startswith(f"beam-rtbf {command} summary\n")


def test_a_violated_run_prints_its_figures_and_says_violated(monkeypatch, capsys, tmp_path):
    assert _execute_with(monkeypatch, tmp_path, "run", _violated()) == 1
    assert capsys.readouterr().out == (
        "beam-rtbf run summary\n"
        "  sessions_in        10\n"
        "  clean              7\n"
        "  suppressed         1\n"
        "  dead_lettered      1\n"
        "  requests_accepted  None\n"
        "  manifests_written  None\n"
        "  elapsed_s          None\n"
        "  sessions_per_s     None\n"
        "  runner             FnApiRunner\n"
        "  filter_strategy    broadcast\n"
        "  conservation (in = clean + suppressed + dead-lettered): VIOLATED\n"
        "  outputs in /out (summary.json has every figure)\n"
    )


def test_a_purge_stopped_by_the_guard_prints_why(monkeypatch, capsys, tmp_path):
    summary = {"run": "p-1", "blocked": ["r-1"], "manifest_problems": [], "guard": {"reasons": ["too much"]}}
    assert _execute_with(monkeypatch, tmp_path, "purge", summary) == 3
    printed = capsys.readouterr().out.splitlines()
    assert printed[-2:] == [
        "  STOPPED by the blast-radius guard (nothing was deleted); re-run with --confirm if intended:",
        "    too much",
    ]


def test_execute_refuses_an_unknown_command(tmp_path):
    with pytest.raises(ValueError, match="unknown command 'forgets'"):
        driver.execute("forgets", PipelineOptions([f"--output={tmp_path}"]))  # type: ignore[arg-type]


# -- a live run in the output -------------------------------------------------------------------


def _live_run_in(out) -> str:
    """A run record in ``out`` as a run still going on this host leaves it (its pid: our parent, alive)."""
    roots = {kind: str(out / kind) for kind in ("archive", "analytics", "deadletter")}
    record = RunLedger(str(out), roots, str(out / "manifests")).begin([{"uri": "synthetic://x"}], append=False)
    record["pid"] = os.getppid()
    (out / "_runs" / f"{record['run_id']}.json").write_text(json.dumps(record))
    return record["run_id"]


def _small_run_argv(tmp_path) -> list[str]:
    return [
        "--sessions=synthetic://sessions?users=50&sessions=100&seed=1",
        "--requests=synthetic://requests?users=50&requests=2&seed=1",
        f"--output={tmp_path}/out",
        f"--registry=embedded://{tmp_path}/registry.sqlite",
    ]


@pytest.mark.parametrize("command", ["run", "purge"])
def test_a_live_run_in_the_output_is_a_value_error_not_system_exit(tmp_path, command):
    run_id = _live_run_in(tmp_path / "out")
    argv = _small_run_argv(tmp_path) if command == "run" else [f"--output={tmp_path}/out"]
    with pytest.raises(OutputInUse) as caught:
        run(argv) if command == "run" else run_purge(argv)
    assert isinstance(caught.value, ValueError)
    assert str(caught.value) == (
        f"run {run_id} (pid {os.getppid()}) is still writing into {tmp_path}/out; "
        "wait for it to end, or use another --output"
    )
    assert not (tmp_path / "out" / "summary.json").exists()


@pytest.mark.parametrize("command", ["run", "purge"])
def test_the_cli_prints_a_live_run_in_one_line_and_exits_2(tmp_path, capsys, command):
    run_id = _live_run_in(tmp_path / "out")
    argv = _small_run_argv(tmp_path) if command == "run" else [f"--output={tmp_path}/out"]
    assert main([command, *argv]) == 2
    printed = capsys.readouterr()
    assert printed.out == ""
    assert printed.err == (
        f"beam-rtbf {command}: run {run_id} (pid {os.getppid()}) is still writing into {tmp_path}/out; "
        "wait for it to end, or use another --output\n"
    )


# -- runner resolution --------------------------------------------------------------------------


@pytest.mark.parametrize("name", [None, "", "direct", "DirectRunner", "SwitchingDirectRunner"])
def test_the_direct_runner_names_are_fnapi_bounded_and_local_streaming_streaming(name):
    assert type(resolve_runner(name, streaming=False)) is FnApiRunner
    stop = StopRequest()
    streaming = resolve_runner(name, streaming=True, stop=stop)
    assert type(streaming) is LocalStreamingRunner
    assert streaming.stop is stop  # a signal reaches the runner that drains


def test_a_named_runner_passes_through_and_the_embedded_job_service_has_its_own_name():
    embedded = PipelineOptions(["--job_endpoint=embed"])
    remote = PipelineOptions(["--job_endpoint=localhost:8099"])
    assert resolve_runner("PortableRunner", streaming=False) == "PortableRunner"
    assert resolve_runner("FlinkRunner", streaming=True) == "FlinkRunner"
    assert runner_name("PortableRunner", embedded) == EMBEDDED_PORTABLE == "PortableRunner[embed]"
    assert runner_name("PortableRunner", remote) == "PortableRunner"
    assert runner_name("FlinkRunner", embedded) == "FlinkRunner"
    assert runner_name(FnApiRunner(), remote) == "FnApiRunner"


# -- the shared steps on a small job ------------------------------------------------------------


class _CountJob:
    """The smallest job kind: counts a few numbers; ``done`` makes it finish in ``prepare``."""

    command = "count"
    streaming = False
    detachable = True

    def __init__(self, options: PipelineOptions, path: str, done: dict[str, Any] | None = None) -> None:
        self.options = options
        self.path = path
        self.done = done
        self.prepared_for: str | None = None
        self.built = False
        self.events: list[str] = []

    @contextlib.contextmanager
    def exclusive(self):
        self.events.append("locked")
        try:
            yield
        finally:
            self.events.append("unlocked, summary written" if os.path.exists(self.path) else "unlocked")

    def prepare(self, runner_name: str) -> dict[str, Any] | None:
        self.events.append("prepare")
        self.prepared_for = runner_name
        return self.done

    def describe(self) -> str:
        return "three numbers (a test)"

    def build(self, pipeline: beam.Pipeline) -> None:
        self.built = True
        _ = pipeline | beam.Create([1, 2, 3]) | beam.combiners.Count.Globally()

    def jar_summary(self, jar: str) -> dict[str, Any]:
        return {"job_jar": jar}

    def finish(self, result, elapsed_s: float, stopped_by: str | None) -> dict[str, Any]:
        return {"state": str(result.state), "stopped_by": stopped_by, "timed": elapsed_s > 0}

    def summary_path(self) -> str:
        return self.path


def test_run_job_resolves_the_runner_logs_one_start_line_runs_waits_and_writes_the_summary(tmp_path, caplog):
    caplog.set_level(logging.INFO, logger="beam_rtbf.job")
    job = _CountJob(job_options([f"--output={tmp_path}/out"]), str(tmp_path / "summary.json"))

    summary = run_job(job)

    assert summary == {"state": "DONE", "stopped_by": None, "timed": True}
    assert json.loads((tmp_path / "summary.json").read_text()) == summary
    assert job.events == ["locked", "prepare", "unlocked, summary written"]
    assert job.prepared_for == "FnApiRunner" and job.built
    assert [r.getMessage() for r in caplog.records if r.name == "beam_rtbf.job"] == [
        "beam-rtbf: bounded count on FnApiRunner, three numbers (a test)"
    ]


def test_a_job_done_in_prepare_writes_that_summary_and_builds_nothing(tmp_path, caplog):
    caplog.set_level(logging.INFO, logger="beam_rtbf.job")
    done = {"already": "done"}
    job = _CountJob(job_options([f"--output={tmp_path}/out"]), str(tmp_path / "summary.json"), done)

    assert run_job(job) == done
    assert json.loads((tmp_path / "summary.json").read_text()) == done
    assert not job.built
    assert [r for r in caplog.records if r.name == "beam_rtbf.job"] == []


class _BrokenBuildJob(_CountJob):
    def build(self, pipeline: beam.Pipeline) -> None:
        raise RuntimeError("the registry went away while the graph was built")


@pytest.mark.parametrize("job_kind", [_CountJob, _BrokenBuildJob])
def test_run_job_leaves_no_temporary_folder_whether_the_build_fails_or_not(tmp_path, monkeypatch, job_kind):
    """Beam makes a temporary folder per Pipeline and removes it only after a run: a failed build
    left one in $TMPDIR per attempt (hundreds over a day of retries)."""
    temp = tmp_path / "tmp"
    temp.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(temp))
    job = job_kind(job_options([f"--output={tmp_path}/out"]), str(tmp_path / "summary.json"))
    if job_kind is _BrokenBuildJob:
        with pytest.raises(RuntimeError, match="registry went away"):
            run_job(job)
        assert job.events == ["locked", "prepare", "unlocked"]  # let go of on a failure too
    else:
        assert run_job(job)["state"] == "DONE"
    assert sorted(p.name for p in temp.iterdir() if p.name.startswith("beam-pipeline-temp")) == []


def test_job_options_makes_local_paths_absolute(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    options = job_options(["--output=rel-out"])
    assert options.get_all_options()["output"] == f"{tmp_path}/rel-out"


# -- layering -----------------------------------------------------------------------------------


def test_purge_does_not_import_the_run_pipeline():
    code = "import beam_rtbf.purge.pipeline, sys; assert 'beam_rtbf.pipeline' not in sys.modules, 'imported'"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]


def test_the_job_steps_import_no_job_kind():
    code = (
        "import beam_rtbf.job, beam_rtbf.summary, sys; "
        "assert not {'beam_rtbf.pipeline', 'beam_rtbf.purge.pipeline', 'beam_rtbf.driver'} & set(sys.modules)"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
