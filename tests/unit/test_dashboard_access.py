"""Who may open the dashboard, the command's refusals, and the server's identifier guard (Flask's test client)."""

from __future__ import annotations

import json

import pytest
from flask import Flask

from beam_rtbf.cli import main
from beam_rtbf.dashboard.access import COOKIE, TOKEN_ENV, check_binding, is_loopback, require_token
from beam_rtbf.dashboard.analytics_pg import parse_analytics_url
from beam_rtbf.dashboard.app import DashboardConfig, build_app
from beam_rtbf.records import ErasureRequest
from beam_rtbf.registry.embedded import EmbeddedRegistry
from tests.helpers.dash_callbacks import render_page

TOKEN = "a-test-token-of-32-characters-xx"


@pytest.mark.parametrize(
    "host, loopback",
    [
        ("127.0.0.1", True),
        ("127.3.4.5", True),
        ("::1", True),
        ("[::1]", True),
        ("localhost", True),
        ("0.0.0.0", False),
        ("::", False),
        ("192.168.1.4", False),
        ("dash.example.com", False),
    ],
)
def test_is_loopback(host, loopback):
    assert is_loopback(host) is loopback


def test_check_binding():
    check_binding("127.0.0.1", None)
    check_binding("0.0.0.0", TOKEN)
    with pytest.raises(ValueError, match=r"--host 0.0.0.0 is not a loopback address: set \$RTBF_DASHBOARD_TOKEN"):
        check_binding("0.0.0.0", None)
    with pytest.raises(ValueError, match="shorter than 16"):
        check_binding("0.0.0.0", "short")


def _protected() -> Flask:
    app = Flask("t")
    app.add_url_rule("/", "index", lambda: "hello")
    app.add_url_rule("/page", "page", lambda: "page")
    require_token(app, TOKEN)
    return app


def test_token_required_by_header_query_or_cookie():
    client = _protected().test_client()
    assert client.get("/").status_code == 401
    assert client.get("/", headers={"Authorization": "Bearer wrong"}).status_code == 401
    assert client.get("/", headers={"Authorization": f"Bearer {TOKEN}"}).data == b"hello"
    assert client.get("/", headers={"X-RTBF-Token": TOKEN}).status_code == 200
    assert client.get("/?token=nope").status_code == 401
    first = client.get(f"/page?a=1&token={TOKEN}")
    assert first.status_code == 303 and first.headers["Location"] == "/page?a=1"  # the token leaves the address
    cookie = first.headers["Set-Cookie"]
    assert cookie.startswith(f"{COOKIE}=") and "HttpOnly" in cookie and "SameSite=Strict" in cookie
    assert TOKEN not in cookie  # a digest, not the token
    assert client.get("/page").data == b"page"  # the cookie now carries it
    fresh = _protected().test_client()
    fresh.set_cookie(COOKIE, "forged")
    assert fresh.get("/page").status_code == 401


def test_command_refuses_a_wide_address_without_token(tmp_path, monkeypatch, capsys):
    monkeypatch.delenv(TOKEN_ENV, raising=False)
    assert main(["dashboard", f"--output={tmp_path}", "--host", "0.0.0.0"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert err.startswith("beam-rtbf dashboard: --host 0.0.0.0 is not a loopback address: set $RTBF_DASHBOARD_TOKEN")


def test_command_refuses_a_missing_folder_and_a_bad_port(tmp_path, capsys):
    assert main(["dashboard", f"--output={tmp_path / 'nope'}"]) == 2
    assert (
        capsys.readouterr().err
        == f"beam-rtbf dashboard: --output {tmp_path / 'nope'}: no such folder (give the folder a run wrote)\n"
    )
    assert main(["dashboard", f"--output={tmp_path}", "--port", "70000"]) == 2
    assert "is not a TCP port" in capsys.readouterr().err
    assert main(["dashboard", f"--output={tmp_path}", "--analytics", "postgresql://u:pw@h:5432/db"]) == 2
    assert capsys.readouterr().err == (
        "beam-rtbf dashboard: --analytics postgresql://u:***@h:5432/db: a password in the URI is refused (it "
        "would reach shell history, logs and manifests); put it in $RTBF_POSTGRES_PASSWORD, ~/.pgpass or a libpq "
        "service file\n"
    )


def test_analytics_url():
    assert parse_analytics_url("postgresql://rtbf@127.0.0.1:5432/db?table=rtbf_analytics&sslmode=disable") == (
        "postgresql://rtbf@127.0.0.1:5432/db?sslmode=disable",
        "rtbf_analytics",
    )
    assert parse_analytics_url("postgresql://h/db") == ("postgresql://h/db", "rtbf_analytics")
    assert parse_analytics_url("postgresql://h/db?table=metrics.windows")[1] == "metrics.windows"
    for bad, message in [
        ("mysql://h/db", "expected postgresql://"),
        ("postgresql://h/db?table=x;drop", "must be NAME or SCHEMA.NAME"),
        ("postgresql://h/db?password=p", "a password parameter is refused"),
        # the sink's limit (room for its _parts/_runs/_meta suffixes): a table it cannot have written
        ("postgresql://h/db?table=" + "a" * 49, "at most 48 characters"),
    ]:
        with pytest.raises(ValueError, match=message):
            parse_analytics_url(bad)


def test_overview_answer_holds_no_identifier_and_the_guard_refuses_one(tmp_path):
    registry = EmbeddedRegistry(str(tmp_path / "_state" / "registry.sqlite"))
    registry.add([ErasureRequest("erase-zoe@example.com", "zoe-4711", 1_767_225_600_000, aliases=("zoe@example.com",))])
    registry.close()
    app = build_app(DashboardConfig(tmp_path, f"embedded://{tmp_path}/_state/registry.sqlite", None))
    app.server.add_url_rule("/leak", "leak", lambda: {"who": "zoe-4711"})  # a view that would leak
    client = app.server.test_client()
    leak = client.get("/leak")  # before any view has read the requests: the guard reads them itself
    assert leak.status_code == 500 and b"zoe" not in leak.data
    answer = render_page(client, "/")
    assert answer.status_code == 200
    text = answer.get_data(as_text=True)
    assert "requests-count-received" in text
    assert not any(i in text for i in ("zoe-4711", "zoe@example.com", "erase-zoe"))
    leak = client.get("/leak")
    assert leak.status_code == 500 and b"zoe" not in leak.data
    assert json.loads(client.get("/_dash-layout").data)  # the layout itself is served


def test_requests_table_pages(tmp_path):
    registry = EmbeddedRegistry(str(tmp_path / "_state" / "registry.sqlite"))
    registry.add(
        [ErasureRequest(f"req-{i:02d}", f"subject-{i:02d}", 1_767_225_600_000 + i * 60_000) for i in range(30)]
    )
    registry.close()
    app = build_app(DashboardConfig(tmp_path, f"embedded://{tmp_path}/_state/registry.sqlite", None))
    body = {
        "output": "requests-table-box.children",
        "outputs": {"id": "requests-table-box", "property": "children"},
        "inputs": [
            {"id": "requests-filter", "property": "value", "value": "all"},
            {"id": "requests-page", "property": "value", "value": 2},
        ],
        "changedPropIds": ["requests-page.value"],
        "state": [],
    }
    text = app.server.test_client().post("/_dash-update-component", json=body).get_data(as_text=True)
    assert "requests 26–30 of 30 (page 2 of 2), earliest deadline first" in text
    assert text.count('"className":"request-link"') == 5 and "subject-" not in text
