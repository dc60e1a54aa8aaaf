"""The filter strategies by name, and the rule ``auto`` follows to pick one.

``FILTER_STRATEGIES`` is the one place a strategy is registered; tests may add
or swap entries (or pass their own mapping to ``FilterSessions``).
"""

from __future__ import annotations

from beam_rtbf.filter.bloom import BloomStrategy
from beam_rtbf.filter.broadcast import BroadcastStrategy
from beam_rtbf.filter.keyed_state import KeyedStateStrategy
from beam_rtbf.filter.lookup import LookupStrategy
from beam_rtbf.filter.strategy import FilterStrategy
from beam_rtbf.runner_names import EMBEDDED_PORTABLE, LOCAL_STREAMING_RUNNERS, PRISM, PRISM_EXTERNAL

__all__ = ["FILTER_STRATEGIES", "AUTO", "choose_strategy"]

FILTER_STRATEGIES: dict[str, type[FilterStrategy]] = {
    strategy.name: strategy for strategy in (BroadcastStrategy, LookupStrategy, BloomStrategy, KeyedStateStrategy)
}

AUTO = "auto"


def choose_strategy(
    requested: str,
    streaming: bool,
    runner_name: str,
    registry_size: int = 0,
    broadcast_max: int = 20_000_000,
    checkpoints: bool = False,
) -> tuple[str, str]:
    """(strategy, why). ``auto`` picks by runner and deletion-set size; a named strategy is
    checked against the runner (ValueError, with what to use instead, if it cannot run there).

    ``checkpoints``: the job takes Flink checkpoints (``--checkpointing_interval``). Beam's Flink
    runner (2.62) cannot snapshot a Python streaming stage's side input (the first checkpoint
    fails: "ClassCastException ... cannot be cast to WindowedValue", the job restarts forever;
    tests/integration/test_flink_known_issues.py), so the side-input strategies are refused."""
    local_streaming = streaming and runner_name in LOCAL_STREAMING_RUNNERS
    embedded_streaming = streaming and runner_name == EMBEDDED_PORTABLE
    prism_streaming = streaming and runner_name in (PRISM, PRISM_EXTERNAL)
    checkpointed_flink = streaming and checkpoints and runner_name == "FlinkRunner"
    if requested != AUTO:
        if requested not in FILTER_STRATEGIES:
            raise ValueError(
                f"unknown --filter_strategy={requested!r}; expected one of {', '.join([*FILTER_STRATEGIES, AUTO])}"
            )
        refreshes_side_input = FILTER_STRATEGIES[requested].refreshes_side_input
        if local_streaming and refreshes_side_input:
            raise ValueError(
                f"--filter_strategy={requested} needs a stream-fed side input, which blocks the local "
                "streaming runner; use state or lookup locally, or run on Flink"
            )
        if embedded_streaming and refreshes_side_input:
            raise ValueError(
                f"--filter_strategy={requested} refreshes its side input from a PeriodicImpulse, which never "
                "ends on the embedded job service (FnApiRunner): the run would never finish nor write a window; "
                "use state or lookup there, or a real job service (--job_endpoint=HOST:PORT)"
            )
        if checkpointed_flink and refreshes_side_input:
            raise ValueError(
                f"--filter_strategy={requested} reads its deletion set as a side input, and Beam's Flink runner "
                "fails every checkpoint of a streaming stage with a side input (the job restarts forever); "
                "with --checkpointing_interval use state or lookup, or run without checkpoints"
            )
        if prism_streaming and refreshes_side_input:
            raise ValueError(
                f"--filter_strategy={requested} needs a stream-fed global-window side input, which Prism "
                "refuses (unsupported feature: Unbounded GlobalWindow Triggered SideInput, apache/beam#31438); "
                "use state or lookup on Prism, or run on Flink"
            )
        return requested, "chosen by --filter_strategy"
    big = registry_size > broadcast_max
    size = f"{registry_size:,} forgotten ids ({registry_size * 8 / 1e6:.0f} MB as an exact set)"
    if local_streaming:
        return "state", "local streaming: stream-fed side inputs block the BundleBasedDirectRunner; keyed state streams"
    if embedded_streaming:
        return "state", "streaming on the embedded job service: a PeriodicImpulse side input never ends there"
    if prism_streaming:
        return "state", "streaming on Prism: it refuses stream-fed global-window side inputs (apache/beam#31438)"
    if checkpointed_flink:
        return "state", "streaming on Flink with checkpoints: Beam's Flink runner cannot checkpoint a side input"
    if not streaming:
        if big:
            return "bloom", f"bounded run, {size} > --broadcast_max_subjects: Bloom side input, registry confirms"
        return "broadcast", f"bounded run, {size}: the whole deletion set as of the run is one side input"
    if big:
        return "lookup", f"streaming, {size} > --broadcast_max_subjects: one registry query per batch"
    return "broadcast", f"streaming on a portable runner, {size}: slowly updating side input refreshed by deltas"
