"""``FilterSessions``: the one composite that drops the sessions of forgotten subjects.

    filtered = session_batches | "FilterSessions" >> FilterSessions(
        "broadcast", accepted, FilterConfig.from_options(opts), streaming=False
    )
    filtered.clean, filtered.suppressed, filtered.effective

The strategy is looked up by name in ``FILTER_STRATEGIES`` (``auto`` must be
resolved first, by ``choose_strategy``); every strategy returns the same
``FilteredSessions``.
"""

from __future__ import annotations

from collections.abc import Mapping

import apache_beam as beam

from beam_rtbf.filter.outputs import FilteredSessions
from beam_rtbf.filter.strategies import AUTO, FILTER_STRATEGIES
from beam_rtbf.filter.strategy import FilterConfig, FilterStrategy

__all__ = ["FilterSessions"]


class FilterSessions(beam.PTransform):
    """Session batches -> ``FilteredSessions(clean, suppressed, effective)`` by the named strategy.

    ``accepted``: this run's accepted requests (``AcceptedRequest``), which every
    strategy must apply. ``strategies``: name -> strategy class, by default
    ``FILTER_STRATEGIES`` (read when the transform is built, so tests may patch it).
    """

    def __init__(
        self,
        strategy: str,
        accepted: beam.PCollection,
        config: FilterConfig,
        *,
        streaming: bool,
        strategies: Mapping[str, type[FilterStrategy]] | None = None,
    ) -> None:
        super().__init__()
        known = FILTER_STRATEGIES if strategies is None else strategies
        if strategy == AUTO:
            raise ValueError("FilterSessions needs a concrete strategy: resolve 'auto' with choose_strategy first")
        if strategy not in known:
            raise ValueError(f"unknown filter strategy {strategy!r}; expected one of {', '.join(known)}")
        self._strategy = known[strategy](config, streaming)
        self._accepted = accepted

    def expand(self, sessions: beam.PCollection) -> FilteredSessions:
        return self._strategy.apply(sessions, self._accepted)
