"""Clean analytics: windowed aggregates of sessions that survived the filter."""
