"""Runner profiles: ``--runner direct|flink|spark|portable`` -> the options of that target.

A profile (``beam_rtbf/profiles/<name>.yaml``, or any file given with ``--profile FILE``) names
the Beam runner and the options a platform team sets once: endpoints, environment,
checkpointing, where the streams, the registry and the buckets are. It is written in the same
YAML as ``--config`` files (``runner``, ``description``, ``options``, ``then``) and read by
``beam_rtbf.jobspec``, which also fills its ``${tf.NAME}`` and ``${env.NAME:-default}``
placeholders and gives the command line and the config file precedence over it.
"""

from __future__ import annotations

from importlib import resources

__all__ = ["PROFILES", "profile_path"]

PROFILES = ("direct", "flink", "spark", "portable", "flink-local", "spark-local", "prism")


def profile_path(name: str) -> str:
    """The YAML file of the built-in profile ``name`` (one of ``PROFILES``)."""
    if name not in PROFILES:
        raise ValueError(f"no runner profile {name!r}; known: {', '.join(PROFILES)}")
    return str(resources.files(__package__).joinpath(f"{name}.yaml"))
