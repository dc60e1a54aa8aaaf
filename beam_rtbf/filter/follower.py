"""Follow the registry: a deletion set refreshed by deltas, with a staleness bound.

One follower per worker process and registry (shared across DoFn instances and
bundles through ``apache_beam.utils.shared``, see ``SharedFollower``), so a
refresh costs one delta query per interval, not one full read per bundle.

Fail closed: ``current()`` returns ``None`` when the set is older than
``max_staleness_s`` (registry unreachable for too long); callers then hold
sessions back instead of passing them unfiltered.
"""

from __future__ import annotations

import logging
import threading
import time

from apache_beam.metrics import Metrics
from apache_beam.utils import shared

from beam_rtbf import metrics as rtbf_metrics
from beam_rtbf.filter.deletion_set import DeletionSet
from beam_rtbf.registry import RegistryUnavailable, open_registry

__all__ = ["RegistryFollower", "SharedFollower"]

_LOGGER = logging.getLogger(__name__)


class RegistryFollower:
    """A deletion set that follows a registry by versioned deltas."""

    def __init__(self, registry_url: str, refresh_interval_s: float, max_staleness_s: float) -> None:
        self.registry_url = registry_url
        self.refresh_interval_s = refresh_interval_s
        self.max_staleness_s = max_staleness_s
        self._lock = threading.Lock()
        self._registry = None
        self._set: DeletionSet | None = None
        self._fresh_at = 0.0  # wall time of the last successful read
        self._tried_at = 0.0
        self._errors = Metrics.counter(rtbf_metrics.NAMESPACE, rtbf_metrics.REGISTRY_ERRORS)
        self._refresh_ms = Metrics.distribution(rtbf_metrics.NAMESPACE, rtbf_metrics.REFRESH_MS)
        self._age_ms = Metrics.distribution(rtbf_metrics.NAMESPACE, rtbf_metrics.SIDE_INPUT_AGE_MS)

    def _refresh(self, now: float) -> None:
        self._tried_at = now
        started = time.perf_counter()
        try:
            if self._registry is None:
                self._registry = open_registry(self.registry_url)
            base = self._set.version if self._set is not None else 0
            delta = self._registry.delta_since(base)
        except (RegistryUnavailable, OSError) as exc:
            self._errors.inc()
            _LOGGER.warning("deletion set refresh from %s failed: %s", self.registry_url, exc)
            if self._registry is not None:
                try:
                    self._registry.close()
                except Exception:  # noqa: BLE001 - closing a broken client
                    pass
                self._registry = None
            return
        if self._set is None:
            self._set = DeletionSet.of(delta.subject_ids, delta.to_version)
        elif delta.subject_ids or delta.to_version != self._set.version:
            self._set = self._set.with_ids(delta.subject_ids, delta.to_version)
        self._fresh_at = time.time()
        self._refresh_ms.update(int((time.perf_counter() - started) * 1000))

    def current(self, force: bool = False) -> DeletionSet | None:
        """The deletion set, refreshed if due; ``None`` if it is too stale to trust."""
        with self._lock:
            now = time.time()
            if force or self._set is None or now - self._tried_at >= self.refresh_interval_s:
                self._refresh(now)
            if self._set is None or now - self._fresh_at > self.max_staleness_s:
                return None
            self._age_ms.update(int((now - self._fresh_at) * 1000))
            return self._set

    def age_s(self) -> float:
        return time.time() - self._fresh_at if self._fresh_at else float("inf")


class SharedFollower:
    """Holds a ``RegistryFollower`` so that ``apache_beam.utils.shared.Shared`` can cache it.

    ``Shared`` keeps weak references, which a follower's lock rules out; this
    holder is weak-referenceable. A DoFn creates a ``Shared()`` handle in
    ``__init__`` and calls ``SharedFollower.acquire`` in ``setup``: every
    instance of that DoFn in a worker process then uses one follower.
    """

    def __init__(self, follower: RegistryFollower) -> None:
        self.follower = follower

    @classmethod
    def acquire(
        cls, handle: shared.Shared, registry_url: str, refresh_interval_s: float, max_staleness_s: float
    ) -> SharedFollower:
        """The process's holder for ``handle``; keep a reference to it while the follower is in use."""
        return handle.acquire(
            lambda: cls(RegistryFollower(registry_url, refresh_interval_s, max_staleness_s)),
            tag=f"follow:{registry_url}:{refresh_interval_s}:{max_staleness_s}",
        )
