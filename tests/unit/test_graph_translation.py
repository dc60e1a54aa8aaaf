"""Graph forms that cannot run locally are still built and translated to Beam's portable form."""

from __future__ import annotations

import apache_beam as beam
from apache_beam.options.pipeline_options import PipelineOptions

from beam_rtbf.filter.strategies import choose_strategy
from beam_rtbf.options import RtbfOptions
from beam_rtbf.pipeline import build_pipeline


def _transform_names(proto) -> list[str]:
    return [t.unique_name for t in proto.components.transforms.values()]


def test_streaming_broadcast_graph_translates_with_a_periodic_side_input(tmp_path, registry_url):
    options = PipelineOptions(
        [
            "--streaming",
            f"--output={tmp_path}",
            f"--registry={registry_url}",
            "--sessions=synthetic://sessions?users=10&rate=100",
            "--requests=synthetic://requests?users=10&request_rate=1",
        ]
    )
    p = beam.Pipeline(options=options)
    build_pipeline(p, options.view_as(RtbfOptions), streaming=True, strategy="broadcast")
    names = _transform_names(p.to_runner_api())
    assert any(name.startswith("FilterSessions/DeletionSet/RefreshTicks") for name in names)
    assert any(name.startswith("FilterSessions/DeletionSet/FetchRegistryDelta") for name in names)
    assert any(name.startswith("FilterSessions/DropForgotten") for name in names)
    # The polling sources expand to splittable DoFns for portable runners.
    assert any(name.startswith("ReadSessions/Poll") for name in names)


def test_auto_strategy_choice_says_why():
    assert choose_strategy("auto", False, "FnApiRunner")[0] == "broadcast"
    strategy, why = choose_strategy("auto", True, "LocalStreamingRunner")
    assert strategy == "state" and "keyed state" in why
    assert choose_strategy("auto", True, "FlinkRunner")[0] == "broadcast"
    assert choose_strategy("state", False, "FnApiRunner") == ("state", "chosen by --filter_strategy")
    strategy, why = choose_strategy("auto", True, "FlinkRunner", checkpoints=True)
    assert strategy == "state" and "cannot checkpoint a side input" in why


def test_a_named_strategy_the_runner_cannot_run_is_refused_with_what_to_use():
    import pytest

    with pytest.raises(ValueError, match="--filter_strategy=bloom needs a stream-fed side input.*use state or lookup"):
        choose_strategy("bloom", True, "LocalStreamingRunner")
    with pytest.raises(ValueError, match="--filter_strategy=broadcast refreshes its side input from a PeriodicImpulse"):
        choose_strategy("broadcast", True, "PortableRunner[embed]")
    assert choose_strategy("broadcast", False, "LocalStreamingRunner")[0] == "broadcast"  # bounded: no refresh
    assert choose_strategy("lookup", True, "LocalStreamingRunner")[0] == "lookup"
    for strategy in ("broadcast", "bloom"):
        with pytest.raises(ValueError, match=f"--filter_strategy={strategy} reads its deletion set as a side input"):
            choose_strategy(strategy, True, "FlinkRunner", checkpoints=True)
    assert choose_strategy("broadcast", True, "FlinkRunner")[0] == "broadcast"  # no checkpoints: it runs
    assert choose_strategy("lookup", True, "FlinkRunner", checkpoints=True)[0] == "lookup"
    with pytest.raises(ValueError, match="unknown --filter_strategy='brodcast'; expected one of broadcast, lookup"):
        choose_strategy("brodcast", False, "FnApiRunner")


def test_kafka_cross_language_read_goes_to_the_given_expansion_service():
    """ReadFromKafka (Java) expands through an expansion service; with none listening there, the
    pipeline cannot be built, which is as far as this machine (no Java jars) can check it."""
    import grpc
    import pytest

    from beam_rtbf.sources import source_for
    from beam_rtbf.testing.redis_server import free_port

    port = free_port()
    source = source_for(f"kafka://127.0.0.1:9092/t?impl=xlang&expansion_service=127.0.0.1:{port}", "sessions")
    with pytest.raises(grpc.RpcError, match=f"127.0.0.1:{port}"):
        beam.Pipeline() | source.streaming_read()
    with pytest.raises(ValueError, match="impl must be native"):
        source_for("kafka://127.0.0.1:9092/t?impl=java", "sessions")
