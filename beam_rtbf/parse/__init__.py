"""Parsing: raw bytes -> sessions (Arrow batches) and erasure requests, bad input -> dead letters.

- ``lines``: line bounds, record positions, the JSON pre-screen, the record size limit.
- ``session_batch``, ``request_events``: the pure parsers (no Beam).
- ``sessions``, ``requests``: their Beam steps (``ParseSessions``, ``ParseRequests``).
- ``dedupe``: drop repeated ``event_id`` sessions in keyed state.
"""
