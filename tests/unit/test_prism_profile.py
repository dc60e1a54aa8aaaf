"""--runner prism: the profile, where the binary comes from (never a download), the runner's name,
the filter strategy it gets, and the stop token of the splittable read. No Prism is started here
(tests/integration/test_prism.py runs it)."""

from __future__ import annotations

import os
import stat

import pytest
from apache_beam.options.pipeline_options import PipelineOptions, PrismRunnerOptions
from apache_beam.version import __version__ as beam_version

import beam_rtbf.options  # noqa: F401 - registers RtbfOptions
from beam_rtbf.cli import job_spec, main
from beam_rtbf.filter.strategies import choose_strategy
from beam_rtbf.job import runner_name, use_local_prism
from beam_rtbf.prism import GO_INSTALL, prism_binary
from beam_rtbf.runner_names import LOCAL_RUNNERS
from beam_rtbf.sources.polling import (
    PollerPosition,
    PositionTracker,
    ReadFromPoller,
    release_stop,
    stop_reads_on,
    stop_requested,
)

GO_COMMAND = f"go install github.com/apache/beam/sdks/v2/go/cmd/prism@v{beam_version}"


@pytest.fixture
def nowhere(tmp_path, monkeypatch):
    """No Prism in any default place: an empty working directory, PATH and home."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("PATH", str(tmp_path / "bin"))
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    return tmp_path


def _executable(path):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("#!/bin/sh\n")
    path.chmod(path.stat().st_mode | stat.S_IXUSR)
    return path


def test_the_prism_profile_names_the_runner_and_loopback_workers():
    spec = job_spec(["run", "--runner", "prism", "--dry-run"], env={})
    assert spec.value("runner") == "PrismRunner" and spec.source("runner") == "runner profile prism"
    assert spec.value("environment_type") == "LOOPBACK"
    assert spec.value("state_shards") == 1  # one worker process: shards only cost on Prism
    assert spec.argv()[:1] == ["--runner=PrismRunner"]


def test_a_dry_run_needs_no_binary(nowhere, capsys):
    assert main(["run", "--runner", "prism", "--dry-run"]) == 0
    assert "--runner=PrismRunner" in capsys.readouterr().out


def test_missing_binary_is_one_line_naming_the_go_install_command(nowhere, capsys):
    assert main(["run", "--runner", "prism", f"--output={nowhere / 'out'}"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    assert err.startswith(
        "beam-rtbf run: no Prism binary (looked for ./.tools/bin/prism, prism on PATH, ~/go/bin/prism)"
    )
    assert GO_COMMAND in err and GO_INSTALL == GO_COMMAND
    assert not (nowhere / "out").exists()  # refused before anything was written


def test_a_missing_prism_location_is_one_line_too(nowhere, capsys):
    assert main(["run", "--runner", "prism", f"--prism_location={nowhere}/no/prism", "--streaming",
                 "--sessions=synthetic://sessions?rate=10", f"--output={nowhere / 'out'}"]) == 2  # fmt: skip
    err = capsys.readouterr().err.strip()
    assert (
        err
        == f"beam-rtbf run: --prism_location={nowhere}/no/prism: no such file; build Prism with `GOBIN=DIR {GO_COMMAND}`"
    )


def test_purge_refuses_a_missing_binary_the_same_way(nowhere, capsys):
    assert main(["purge", "--runner", "prism", f"--output={nowhere / 'out'}"]) == 2
    assert GO_COMMAND in capsys.readouterr().err


def test_binary_search_order_and_checks(nowhere):
    (nowhere / "plain").write_text("not a program")
    with pytest.raises(ValueError, match="not an executable file"):
        prism_binary(str(nowhere / "plain"))
    with pytest.raises(ValueError, match=r"no Prism binary \(looked for"):
        prism_binary(None)
    home = _executable(nowhere / "home" / "go" / "bin" / "prism")
    assert prism_binary(None) == str(home)
    on_path = _executable(nowhere / "bin" / "prism")
    assert prism_binary(None) == str(on_path)
    checkout = _executable(nowhere / ".tools" / "bin" / "prism")
    assert prism_binary(None) == str(checkout)  # a checkout's own build first
    assert prism_binary(f"file://{home}") == str(home)
    assert prism_binary("gs://bucket/prism.zip") == "gs://bucket/prism.zip"  # Beam fetches what the user names


def test_use_local_prism_sets_the_location_and_leaves_a_job_endpoint_alone(nowhere):
    binary = _executable(nowhere / ".tools" / "bin" / "prism")
    options = PipelineOptions(["--runner=PrismRunner"])
    use_local_prism(options)
    assert options.view_as(PrismRunnerOptions).prism_location == str(binary)
    os.remove(binary)
    remote = PipelineOptions(["--runner=PrismRunner", "--job_endpoint=prism.internal:8073"])
    use_local_prism(remote)  # no binary needed: the job goes to a running Prism
    assert remote.view_as(PrismRunnerOptions).prism_location is None


def test_runner_names():
    assert runner_name("PrismRunner", PipelineOptions([])) == "PrismRunner"
    assert runner_name("PrismRunner", PipelineOptions(["--job_endpoint=h:8073"])) == "PrismRunner[external]"
    assert "PrismRunner" in LOCAL_RUNNERS and "PrismRunner[external]" not in LOCAL_RUNNERS  # --detach: not locally


@pytest.mark.parametrize("name", ["PrismRunner", "PrismRunner[external]"])
def test_streaming_on_prism_uses_keyed_state_and_refuses_stream_fed_side_inputs(name):
    strategy, why = choose_strategy("auto", True, name)
    assert strategy == "state" and "apache/beam#31438" in why
    for refused in ("broadcast", "bloom"):
        with pytest.raises(ValueError, match=r"Prism refuses .*apache/beam#31438.*use state or lookup"):
            choose_strategy(refused, True, name)
    assert choose_strategy("lookup", True, name)[0] == "lookup"
    assert choose_strategy("auto", False, name)[0] == "broadcast"  # bounded: one side input, as anywhere


def test_the_open_ended_restriction_reports_no_progress_and_splits_only_at_checkpoints():
    tracker = PositionTracker(PollerPosition({}))
    # Beam 2.77 would turn a RestrictionProgress into NaN before its first byte sample.
    assert tracker.current_progress() is None
    assert tracker.try_claim({"offset": 7})
    # Prism's split of a slow bundle (0.5 of the remainder): refused, the read goes on.
    assert tracker.try_split(0.5) is None and tracker.try_claim({"offset": 9})
    primary, residual = tracker.try_split(0)  # a checkpoint: the rest resumes where the read stands
    assert primary.done and residual == PollerPosition({"offset": 9})


def test_stop_reads_on_gives_each_read_its_runs_token():
    import apache_beam as beam

    from beam_rtbf.local_runner import StopRequest

    pipeline = beam.Pipeline()
    pipeline | "A" >> ReadFromPoller(lambda: None)  # noqa: B018 - applied for its graph
    pipeline | "B" >> ReadFromPoller(lambda: None)  # noqa: B018
    stop = StopRequest()
    token = stop_reads_on(pipeline, stop)
    fns = []

    class Collect(beam.pipeline.PipelineVisitor):
        def visit_transform(self, applied) -> None:
            if hasattr(getattr(applied.transform, "fn", None), "stop_token"):
                fns.append(applied.transform.fn)

    pipeline.visit(Collect())
    assert len(fns) == 2 and {fn.stop_token for fn in fns} == {token}
    assert not stop_requested(token)
    stop.stop("SIGTERM")
    assert stop_requested(token)
    release_stop(token)
    assert not stop_requested(token) and not stop_requested(None)
