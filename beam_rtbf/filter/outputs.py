"""What every filter strategy gives back: the output tags, ``FilteredSessions`` and their counters.

Named once here so that the strategies, ``FilterSessions`` and the tests agree
on them. The counter names themselves live in ``beam_rtbf.metrics``.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import NamedTuple

import apache_beam as beam
import pyarrow as pa
from apache_beam.metrics import Metrics
from apache_beam.transforms import window
from apache_beam.utils.timestamp import Timestamp

from beam_rtbf import metrics as rtbf_metrics

__all__ = ["CLEAN_TAG", "SUPPRESSED_TAG", "EFFECTIVE_TAG", "FilteredSessions", "SplitCounters"]

CLEAN_TAG = "clean"  # main output: session batches with no forgotten subject
SUPPRESSED_TAG = "suppressed"  # counts only: forgotten data is never emitted anywhere
EFFECTIVE_TAG = "effective"  # (AcceptedRequest, effective_at_ms)


class FilteredSessions(NamedTuple):
    """The three outputs of ``FilterSessions``, whatever the strategy.

    ``clean``: ``pyarrow.RecordBatch`` of sessions of subjects not forgotten.
    ``suppressed``: one int per filtered batch that lost rows (how many).
    ``effective``: ``(AcceptedRequest, effective_at_ms)``, from when on the
    request filters every session (the manifests report it).
    """

    clean: beam.PCollection
    suppressed: beam.PCollection
    effective: beam.PCollection


class SplitCounters:
    """The clean and suppressed counters of a filter DoFn; ``emit`` counts a split and yields it.

    Create it in the DoFn's ``__init__`` (Beam counters pickle with the DoFn).
    """

    def __init__(self) -> None:
        self.clean = Metrics.counter(rtbf_metrics.NAMESPACE, rtbf_metrics.SESSIONS_CLEAN)
        self.suppressed = Metrics.counter(rtbf_metrics.NAMESPACE, rtbf_metrics.SESSIONS_SUPPRESSED)

    def emit(self, clean: pa.RecordBatch, suppressed: int, timestamp: Timestamp | None = None) -> Iterator:
        """The suppressed count (tagged) if any, then the clean rows if any (at ``timestamp`` if given)."""
        if suppressed:
            self.suppressed.inc(suppressed)
            yield beam.pvalue.TaggedOutput(SUPPRESSED_TAG, suppressed)
        if clean.num_rows:
            self.clean.inc(clean.num_rows)
            yield clean if timestamp is None else window.TimestampedValue(clean, timestamp)
