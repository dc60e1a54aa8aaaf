"""Where sessions of forgotten subjects are dropped.

- ``filter_sessions``: ``FilterSessions``, the composite the pipeline applies.
- ``strategies``: the strategies by name (``FILTER_STRATEGIES``) and ``choose_strategy`` for ``auto``.
- ``strategy``: ``FilterStrategy``, the shape each strategy has, and ``FilterConfig``.
- ``outputs``: ``FilteredSessions`` (clean, suppressed, effective), the output tags, the counters.
- ``deletion_set``: the compact, vectorised set of forgotten ids.
- ``suppress``: split one batch into clean rows and a suppressed count.
- ``broadcast``: the set as a side input (bounded runs, Flink streaming).
- ``keyed_state``: requests and sessions joined in keyed state (local streaming, any runner).
- ``lookup``: one registry membership query per batch (SMISMEMBER), nothing held in memory.
- ``bloom``: a compact Bloom filter side input; the registry confirms its positives.
- ``follower``: a deletion set that follows the registry by deltas, failing closed.

Kept free of imports so that ``options`` can read ``STRATEGIES`` cheaply.
"""

__all__ = ["STRATEGIES"]

STRATEGIES = ("broadcast", "lookup", "bloom", "state", "auto")
"""The ``--filter_strategy`` choices: the names in ``strategies.FILTER_STRATEGIES``, and ``auto``."""
