"""The raw archive of clean sessions, partitioned by event time, with a subject index."""
