"""Names of the runners beam-rtbf tells apart: which run in this process, which stream locally.

A leaf module (no beam_rtbf imports) so that the driver and the filter-strategy choice can both
read it without importing each other.
"""

from __future__ import annotations

__all__ = ["LOCAL_STREAMING_RUNNERS", "EMBEDDED_PORTABLE", "LOCAL_RUNNERS"]

LOCAL_STREAMING_RUNNERS = ("LocalStreamingRunner", "BundleBasedDirectRunner")

EMBEDDED_PORTABLE = "PortableRunner[embed]"  # the in-process job service (FnApiRunner behind the Job API)

# Runners that run inside this process: --detach does not apply (the job would die with it).
LOCAL_RUNNERS = ("FnApiRunner", EMBEDDED_PORTABLE, *LOCAL_STREAMING_RUNNERS)
