"""tests/unit/test_streaming_semantics.py's TestStream tests, run on PrismRunner instead of the
local streaming runner: ``python -m tests.helpers.prism_semantics PRISM_BINARY`` prints one
``PASS name`` / ``FAIL name: why`` line per test (run it in a network namespace: Prism binds every
interface). Used by tests/integration/test_prism.py.
"""

from __future__ import annotations

import sys
import tempfile
import types
from pathlib import Path

import apache_beam as beam
from apache_beam.options.pipeline_options import PortableOptions, PrismRunnerOptions

import tests.unit.test_streaming_semantics as semantics

TESTS = (
    "test_request_mid_stream_stops_later_sessions_and_lists_earlier_ones",
    "test_windows_close_on_the_watermark_and_late_data_is_dropped",
)


def on_prism(prism: str) -> None:
    """Make the module's ``beam.Pipeline(runner=LocalStreamingRunner(), ...)`` a Prism pipeline."""

    class PrismPipeline(beam.Pipeline):
        def __init__(self, runner=None, options=None):
            del runner
            options.view_as(PrismRunnerOptions).prism_location = prism
            options.view_as(PortableOptions).environment_type = "LOOPBACK"
            super().__init__(runner="PrismRunner", options=options)

    shim = types.ModuleType("beam_on_prism")
    shim.__dict__.update({k: getattr(beam, k) for k in dir(beam) if not k.startswith("__")})
    shim.Pipeline = PrismPipeline
    semantics.beam = shim


def main(prism: str) -> int:
    on_prism(prism)
    for name in TESTS:
        folder = Path(tempfile.mkdtemp(prefix="prism-semantics-"))
        try:
            getattr(semantics, name)(folder, f"embedded://{folder / 'registry.sqlite'}")
            print(f"PASS {name}", flush=True)
        except Exception as exc:  # noqa: BLE001 - reported, one line per test
            text = " ".join(str(exc).split())
            if "Failed assert" in text:  # the assertion, not the trace before it
                text = text[text.find("Failed assert") :]
            print(f"FAIL {name}: {type(exc).__name__}: {text[:600]}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
