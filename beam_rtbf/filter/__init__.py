"""Where sessions of forgotten subjects are dropped.

- ``deletion_set``: the compact, vectorised set of forgotten ids.
- ``suppress``: split one batch into clean rows and a suppressed count.
- ``broadcast``: the set as a side input (bounded runs, Flink streaming).
- ``keyed_state``: requests and sessions joined in keyed state (local streaming, any runner).
- ``lookup``: one registry membership query per batch (SMISMEMBER), nothing held in memory.
- ``bloom``: a compact Bloom filter side input; the registry confirms its positives.
- ``follower``: a deletion set that follows the registry by deltas, failing closed.
"""

STRATEGIES = ("broadcast", "lookup", "bloom", "state", "auto")
