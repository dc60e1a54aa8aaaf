"""Parsing: raw bytes -> sessions (Arrow batches) and erasure requests, bad input -> dead letters."""
