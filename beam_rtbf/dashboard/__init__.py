"""``beam-rtbf dashboard``: a read-only web view of one run's output folder.

Reading is kept apart from showing: ``data`` (and the analytics readers it uses) are pure
functions of the files, the registry and a clock, unit-tested on small folders; ``app``
lays them out in Dash; ``access`` decides who may look; ``serve`` runs it.

What it serves never holds a raw identifier: requests are named by keyed hashes
(``privacy``), dead letters by their reason only, and every free text that could quote
a record passes through the redactor first.
"""
