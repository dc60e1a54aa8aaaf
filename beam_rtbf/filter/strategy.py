"""The shape every filter strategy has: built from a ``FilterConfig``, it turns sessions into
``FilteredSessions``. ``FilterSessions`` picks one by name from ``FILTER_STRATEGIES``.
"""

from __future__ import annotations

import abc
import dataclasses
from typing import Any, ClassVar

import apache_beam as beam

from beam_rtbf.filter.outputs import FilteredSessions

__all__ = ["FilterConfig", "FilterStrategy", "effective_after"]


@dataclasses.dataclass(frozen=True)
class FilterConfig:
    """What the filter strategies need to know of a job, and nothing else."""

    registry_url: str
    refresh_interval_s: float = 1.0  # how often a streaming filter fetches the registry's delta
    max_staleness_s: float = 30.0  # a deletion set older than this holds sessions back
    registry_retry_s: float = 120.0  # how long a registry query is retried before the bundle fails
    state_shards: int = 4  # keys of the ``state`` strategy
    refresh_ticks: str = "sessions"  # what times a streaming side input's refresh (``filter/refresh.py``)

    @classmethod
    def from_options(cls, opts: Any) -> FilterConfig:
        """From ``RtbfOptions`` (or anything with its attribute names)."""
        return cls(
            registry_url=opts.registry,
            refresh_interval_s=opts.refresh_interval_s,
            max_staleness_s=opts.max_staleness_s,
            registry_retry_s=opts.registry_retry_s,
            state_shards=opts.state_shards,
            refresh_ticks=opts.refresh_ticks,
        )


class FilterStrategy(abc.ABC):
    """One way to drop the sessions of forgotten subjects.

    ``apply`` runs inside ``FilterSessions.expand``, so the labels it applies
    appear under ``FilterSessions/`` (what the Flink and Spark UIs show).
    """

    name: ClassVar[str]
    # True if its streaming form reads a side input refreshed from a PeriodicImpulse: that blocks
    # the local streaming runner and never ends on the embedded job service (``choose_strategy``).
    refreshes_side_input: ClassVar[bool] = False

    def __init__(self, config: FilterConfig, streaming: bool) -> None:
        self.config = config
        self.streaming = streaming

    @abc.abstractmethod
    def apply(self, sessions: beam.PCollection, accepted: beam.PCollection) -> FilteredSessions:
        """Session batches and this run's accepted requests -> clean, suppressed, effective."""


def effective_after(accepted: beam.PCollection, lag_ms: int) -> beam.PCollection:
    """(AcceptedRequest, accepted_at_ms + lag_ms): for strategies whose filter reads the registry,
    a request is effective once it is recorded plus the time the filter takes to see it."""
    return accepted | "EffectiveAt" >> beam.Map(lambda a, lag=lag_ms: (a, a.accepted_at_ms + lag))
