"""Serve the dashboard: waitress (a production WSGI server, pure Python) on loopback by default.

``beam-rtbf dashboard`` checks what it can before it listens (the output folder exists, a
non-loopback address has a token, the analytics database answers) so that a mistake is one
line and exit 2, not a page of errors later. It prints the address it serves and runs until
SIGINT/SIGTERM; it writes nothing.
"""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path

from beam_rtbf.dashboard.access import TOKEN_ENV, check_binding, is_loopback, require_token
from beam_rtbf.dashboard.app import DashboardConfig, build_app

__all__ = ["check_config", "serve"]

_LOGGER = logging.getLogger(__name__)


def check_config(config: DashboardConfig, host: str, port: int) -> str | None:
    """Validate before listening (ValueError, one line); returns the token to require, if any."""
    if not (0 <= port <= 65535):
        raise ValueError(f"--port {port} is not a TCP port (0..65535; 0 picks a free one)")
    if not config.output.is_dir():
        raise ValueError(f"--output {config.output}: no such folder (give the folder a run wrote)")
    token = os.environ.get(TOKEN_ENV) or None
    check_binding(host, token)
    if config.analytics_url:
        from beam_rtbf.dashboard.analytics_pg import AnalyticsUnavailable, PostgresAnalytics

        try:
            PostgresAnalytics(config.analytics_url).read()
        except AnalyticsUnavailable as exc:
            raise ValueError(str(exc)) from None
    return token


def serve(config: DashboardConfig, host: str, port: int, threads: int = 4) -> int:
    """Listen on ``host:port`` until interrupted; returns the exit status."""
    from waitress import create_server

    token = check_config(config, host, port)
    app = build_app(config)
    if token:
        require_token(app.server, token)
    logging.getLogger("waitress.queue").setLevel(logging.ERROR)
    server = create_server(app.server, host=host, port=port, threads=threads, ident="beam-rtbf")
    shown = f"[{host}]" if ":" in host else host
    access = "loopback only" if is_loopback(host) and not token else f"token required (${TOKEN_ENV})"
    print(
        f"beam-rtbf dashboard: http://{shown}:{server.effective_port}/ ({access}; read-only view of "
        f"{Path(config.output)}; Ctrl-C stops)",
        flush=True,
    )
    try:
        server.run()
    except KeyboardInterrupt:
        pass
    finally:
        server.close()
    print("beam-rtbf dashboard: stopped", file=sys.stderr, flush=True)
    return 0
