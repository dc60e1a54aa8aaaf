"""Who may look: loopback by default; anything wider needs ``$RTBF_DASHBOARD_TOKEN``.

On a loopback address only the users of this machine can connect. Bound to any other
address (``0.0.0.0``, a LAN address, a host name) the dashboard refuses to start without
a token, and then every request must carry it:

- ``Authorization: Bearer TOKEN`` or ``X-RTBF-Token: TOKEN`` (scripts), or
- ``?token=TOKEN`` once (a browser): the answer sets an HttpOnly, SameSite=Strict cookie
  holding a keyed digest of the token (not the token) and redirects to the same page
  without the token in its address, so it stays out of the history and of later links.

Anything else is 401. A token given on loopback is required there too.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import socket
from typing import TYPE_CHECKING
from urllib.parse import urlencode

if TYPE_CHECKING:
    from flask import Flask

__all__ = ["TOKEN_ENV", "COOKIE", "is_loopback", "require_token", "check_binding", "MIN_TOKEN_CHARS"]

TOKEN_ENV = "RTBF_DASHBOARD_TOKEN"
COOKIE = "rtbf_dashboard"
MIN_TOKEN_CHARS = 16


def is_loopback(host: str) -> bool:
    """True for 127.0.0.0/8, ::1 and ``localhost`` when every address it resolves to is one of those
    (a hosts file may map ``localhost`` elsewhere); every other address or name is not."""
    name = host.strip().lower()
    if name == "localhost":
        try:
            addresses = {info[4][0] for info in socket.getaddrinfo(name, None, proto=socket.IPPROTO_TCP)}
        except OSError:
            return False
        return bool(addresses) and all(_loopback_address(a) for a in addresses)
    return _loopback_address(host.strip().strip("[]"))


def _loopback_address(text: str) -> bool:
    try:
        return ipaddress.ip_address(text.split("%", 1)[0]).is_loopback
    except ValueError:
        return False


def check_binding(host: str, token: str | None) -> None:
    """ValueError (one line) when ``host`` is not loopback and no usable token is set."""
    if is_loopback(host):
        if token is not None and len(token) < MIN_TOKEN_CHARS:
            raise ValueError(f"${TOKEN_ENV} is shorter than {MIN_TOKEN_CHARS} characters")
        return
    if not token:
        raise ValueError(
            f"--host {host} is not a loopback address: set ${TOKEN_ENV} (at least {MIN_TOKEN_CHARS} characters) "
            "so that every request must carry it, or bind to 127.0.0.1"
        )
    if len(token) < MIN_TOKEN_CHARS:
        raise ValueError(f"${TOKEN_ENV} is shorter than {MIN_TOKEN_CHARS} characters")


def _cookie_value(token: str) -> str:
    return hmac.new(token.encode(), b"beam-rtbf dashboard cookie", hashlib.sha256).hexdigest()


def _same(given: str | None, expected: str) -> bool:
    return given is not None and hmac.compare_digest(given.encode(), expected.encode())


def require_token(server: Flask, token: str) -> None:
    """Every request to ``server`` must carry ``token`` (header, cookie, or ``?token=`` once)."""
    from flask import Response, redirect, request

    cookie = _cookie_value(token)

    def check():
        header = request.headers.get("Authorization", "")
        bearer = header[len("Bearer ") :] if header.startswith("Bearer ") else None
        if _same(bearer, token) or _same(request.headers.get("X-RTBF-Token"), token):
            return None
        if _same(request.cookies.get(COOKIE), cookie):
            return None
        if _same(request.args.get("token"), token):
            rest = [(k, v) for k, v in request.args.items(multi=True) if k != "token"]
            response = redirect(request.path + (f"?{urlencode(rest)}" if rest else ""), code=303)
            response.set_cookie(COOKIE, cookie, httponly=True, samesite="Strict", path="/")
            return response
        return Response(
            "401 Unauthorized: this dashboard needs its token (?token=..., or an Authorization: Bearer header)\n",
            status=401,
            mimetype="text/plain",
            headers={"WWW-Authenticate": 'Bearer realm="beam-rtbf dashboard"'},
        )

    server.before_request(check)
