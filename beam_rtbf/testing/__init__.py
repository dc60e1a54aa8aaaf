"""Helpers for tests and benchmarks that need real servers (started on loopback, stopped by PID)."""
