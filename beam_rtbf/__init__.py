"""beam-rtbf: the right to be forgotten (GDPR Art. 17, CCPA) for streaming analytics on Apache Beam.

The data flows through the package in this order:
``sources`` -> ``parse`` -> ``registry`` -> ``filter`` -> ``analytics`` / ``archive`` / ``manifests``.
``pipeline`` wires them into one graph; ``cli`` is the ``beam-rtbf`` command.
"""

__version__ = "0.1.0"
