"""Minimal Beam pipelines (no beam-rtbf code) that show what Beam 2.62's Flink runner does wrong for
Python streaming, as beam-rtbf found it; each prints one JSON line of what happened.

    python -m tests.helpers.beam_repros side_input_checkpoint     # a side input + checkpoints
    python -m tests.helpers.beam_repros global_side_input_refresh  # a refreshed global side input

Run inside a network namespace of its own (the job server binds every interface);
tests/integration/test_flink_known_issues.py runs them, so a Beam upgrade that fixes one shows.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import tempfile
import time

import apache_beam as beam
from apache_beam.options.pipeline_options import PipelineOptions
from apache_beam.transforms import trigger, window
from apache_beam.transforms.periodicsequence import PeriodicImpulse

from beam_rtbf.job_servers import job_server_jar
from beam_rtbf.options import FlinkCheckpointOptions  # noqa: F401 - declares --checkpointing_interval

_RUN_S = 60


class _Captured(logging.Handler):
    """Keeps the job server's log lines (Beam logs its Java output through Python logging)."""

    def __init__(self) -> None:
        super().__init__()
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(record.getMessage())


def _options(*flags: str) -> PipelineOptions:
    return PipelineOptions([
        "--runner=FlinkRunner", "--flink_master=[local]", f"--flink_job_server_jar={job_server_jar('flink')}",
        "--environment_type=LOOPBACK", "--streaming", "--parallelism=1", *flags,
    ])  # fmt: skip


def _side_input_checkpoint_once(captured: _Captured) -> dict:
    captured.lines.clear()
    out = tempfile.mktemp()
    p = beam.Pipeline(options=_options("--checkpointing_interval=2000", "--finish_bundle_before_checkpointing"))
    side = p | "Side" >> beam.Create(["x"])
    _ = (
        p
        | "Main" >> PeriodicImpulse(fire_interval=1, apply_windowing=False)
        | "UseSide" >> beam.Map(lambda t, s: open(out, "a").write(f"{t}\n"), beam.pvalue.AsSingleton(side))  # noqa: SIM115
    )
    result = p.run()
    deadline = time.monotonic() + _RUN_S
    while time.monotonic() < deadline and not any("Checkpoint was declined" in line for line in captured.lines):
        time.sleep(1)
    result.cancel()
    text = "\n".join(captured.lines)
    return {
        "declined": text.count("Checkpoint was declined"),
        "cast_error": "cannot be cast to class org.apache.beam.sdk.util.WindowedValue" in text,
        "main_outputs": sum(1 for _ in open(out)) if os.path.exists(out) else 0,
    }


def side_input_checkpoint() -> dict:
    """A ParDo over ticks with a one-element side input, checkpoints every 2 s, bundles finished
    before each checkpoint as beam-rtbf runs its Flink jobs (``flink_local.settle_checkpoint_options``;
    without it about half the runs here moved nothing at all: every task idle, no error).

    Flink's log shows a declined checkpoint (WARN) but not a completed one (INFO is off), so a run
    is conclusive when a checkpoint is declined or ticks flow past the side input with none
    declined. A run that moves nothing says nothing and is tried again, at most three times."""
    captured = _Captured()
    logging.getLogger().addHandler(captured)
    logging.getLogger().setLevel(logging.INFO)
    attempts = []
    for _ in range(3):
        attempts.append(_side_input_checkpoint_once(captured))
        if attempts[-1]["declined"] or attempts[-1]["main_outputs"]:
            break
    return {**attempts[-1], "attempts": attempts}


def global_side_input_refresh() -> dict:
    """A global-window side input re-emitted every second; the main input reads its age without
    (``plain``) and with (``windowed``) a window parameter."""
    out = tempfile.mkdtemp()
    start = time.time()

    class Age(beam.DoFn):
        def __init__(self, name: str) -> None:
            self._name = name

        def process(self, tick, made_at):
            with open(os.path.join(out, self._name), "a") as handle:
                handle.write(f"{time.time() - made_at:.2f}\n")
            yield tick

    class AgeWithWindow(Age):
        def process(self, tick, made_at, _window=beam.DoFn.WindowParam):
            yield from super().process(tick, made_at)

    p = beam.Pipeline(options=_options())
    side = (
        p
        | "SideTicks" >> PeriodicImpulse(fire_interval=1, apply_windowing=False, stop_timestamp=start + _RUN_S)
        | "MadeAt" >> beam.Map(lambda _: time.time())
        | "Global"
        >> beam.WindowInto(
            window.GlobalWindows(),
            trigger=trigger.Repeatedly(trigger.AfterCount(1)),
            accumulation_mode=trigger.AccumulationMode.DISCARDING,
        )
    )
    ticks = p | "MainTicks" >> PeriodicImpulse(fire_interval=2, apply_windowing=False, stop_timestamp=start + _RUN_S)
    _ = ticks | "Plain" >> beam.ParDo(Age("plain"), beam.pvalue.AsSingleton(side))
    _ = ticks | "Windowed" >> beam.ParDo(AgeWithWindow("windowed"), beam.pvalue.AsSingleton(side))
    p.run().wait_until_finish()
    ages = {}
    for name in ("plain", "windowed"):
        with open(os.path.join(out, name)) as handle:
            values = [float(v) for v in handle.read().split()]
        ages[name] = {"reads": len(values), "max_age_s": max(values), "last_age_s": values[-1], "ages_s": values}
    return ages


if __name__ == "__main__":
    print(json.dumps({"side_input_checkpoint": side_input_checkpoint,
                      "global_side_input_refresh": global_side_input_refresh}[sys.argv[1]]()))  # fmt: skip
