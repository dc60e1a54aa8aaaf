"""Names of the runners beam-rtbf tells apart: which run in this process, which stream locally.

A leaf module (no beam_rtbf imports) so that the driver and the filter-strategy choice can both
read it without importing each other.
"""

from __future__ import annotations

__all__ = ["LOCAL_STREAMING_RUNNERS", "EMBEDDED_PORTABLE", "PRISM", "PRISM_EXTERNAL", "LOCAL_RUNNERS"]

LOCAL_STREAMING_RUNNERS = ("LocalStreamingRunner", "BundleBasedDirectRunner")

EMBEDDED_PORTABLE = "PortableRunner[embed]"  # the in-process job service (FnApiRunner behind the Job API)

PRISM = "PrismRunner"  # Beam's Go runner, its binary started (and stopped) by this process
PRISM_EXTERNAL = "PrismRunner[external]"  # a Prism job service already running (--job_endpoint)

# Runners that run inside this process: --detach does not apply (the job would die with it).
LOCAL_RUNNERS = ("FnApiRunner", EMBEDDED_PORTABLE, PRISM, *LOCAL_STREAMING_RUNNERS)
