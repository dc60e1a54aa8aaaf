"""Attacks on the dashboard's privacy guard and pages: identifier variants, escapes, echoes, hostile files."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest

from beam_rtbf.dashboard.app import DashboardConfig, build_app
from beam_rtbf.dashboard.privacy import REDACTED, Redactor
from beam_rtbf.records import ErasureRequest
from beam_rtbf.registry.embedded import EmbeddedRegistry
from tests.helpers.dash_callbacks import analytics_answer, render_page

T0 = 1_767_225_600_000


def _app(tmp_path: Path, requests: list[ErasureRequest]):
    registry = EmbeddedRegistry(str(tmp_path / "_state" / "registry.sqlite"))
    registry.add(requests)
    registry.close()
    return build_app(DashboardConfig(tmp_path, f"embedded://{tmp_path}/_state/registry.sqlite", None))


@pytest.mark.parametrize(
    "variant",
    [
        "Zoe@Example.COM",  # e-mails are compared case-folded
        "zoe\u200b@example.com",  # a zero-width space inside
        "\ufeffzoe@example.com",
        "zoe@exam\u00adple.com",  # a soft hyphen
        "zoe\u0308-4711",  # NFD of zoë-4711
        "ZOË@EXAMPLE.COM",  # alias zoë@example.com, upper case
    ],
)
def test_redactor_knows_every_spelling_of_an_identifier(variant):
    redact = Redactor(["zoe@example.com", "zo\u00eb-4711", "zo\u00eb@example.com"])
    assert redact.found(f"user {variant} unknown")
    assert redact(f"user {variant} unknown") == f"user {REDACTED} unknown"


def test_redactor_keeps_case_of_plain_ids_and_word_bounds():
    redact = Redactor(["Alice", "bo@x.io"])
    assert redact("alice Alice") == f"alice {REDACTED}"  # user ids are case-sensitive keys
    assert redact("BO@X.IOx bo@x.io") == f"BO@X.IOx {REDACTED}"
    assert redact("Straße STRASSE@x.io") == "Straße STRASSE@x.io"
    assert Redactor(["straße@x.io"])("mail STRASSE@X.IO!") == f"mail {REDACTED}!"


def test_guard_sees_identifiers_through_json_and_html_escapes(tmp_path):
    app = _app(tmp_path, [ErasureRequest("erase-zoe", "zo\u00eb-4711", T0, aliases=("zoe@example.com",))])
    server = app.server
    server.add_url_rule("/j", "j", lambda: {"who": "zo\u00eb-4711"})  # JSON: \u00eb escaped
    server.add_url_rule("/h", "h", lambda: "<p>Zoe&#64;Example.com</p>")  # HTML entity
    server.add_url_rule("/c", "c", lambda: "<p>ZOE@example.COM</p>")
    server.add_url_rule("/t", "t", lambda: ("zoe@example.com", 200, {"Content-Type": "text/plain"}))
    server.add_url_rule("/hd", "hd", lambda: ("fine", 200, {"X-Who": "zoe@example.com"}))
    client = server.test_client()
    for path in ("/j", "/h", "/c", "/t", "/hd"):
        answer = client.get(path)
        assert answer.status_code == 500, path
        assert b"zo" not in answer.data.lower() and "zoe" not in str(answer.headers).lower(), path


def test_unknown_request_page_does_not_echo_what_was_typed(tmp_path):
    app = _app(tmp_path, [ErasureRequest("erase-zoe", "zoe-4711", T0, aliases=("zoe@example.com",))])
    client = app.server.test_client()
    for typed in ("/request/Zoe@Example.COM", "/request/someone-else@example.org", "/request/<b>x</b>"):
        answer = render_page(client, typed)
        assert answer.status_code == 200
        text = answer.get_data(as_text=True)
        assert "Unknown request" in text
        assert typed[len("/request/") :] not in text
        assert "example" not in text.lower() and "<b>" not in text


def test_guard_fails_closed_when_the_registry_cannot_be_read_and_logs_no_url(tmp_path, caplog):
    state = tmp_path / "_state"
    state.mkdir()
    (state / "registry.sqlite").write_bytes(b"this is not a database" * 100)
    app = build_app(DashboardConfig(tmp_path, f"embedded://{state}/registry.sqlite", None))
    client = app.server.test_client()
    with caplog.at_level(logging.DEBUG):
        page = client.get("/request/zoe@example.com")  # the index page, for an address a person typed
        answer = render_page(client, "/request/zoe@example.com")
    assert page.status_code == 503 and page.data == b"refused: the registry cannot be read right now"
    assert answer.status_code == 503
    assert "identifiers to guard cannot be read" in caplog.text
    assert "zoe" not in caplog.text


def test_a_failing_view_logs_neither_the_url_nor_the_message(tmp_path, caplog):
    app = _app(tmp_path, [ErasureRequest("erase-zoe", "zoe-4711", T0, aliases=("zoe@example.com",))])

    def broken(who):
        raise KeyError(f"no such subject {who}")

    app.server.add_url_rule("/who/<who>", "who", broken)
    with caplog.at_level(logging.DEBUG):
        answer = app.server.test_client().get("/who/zoe@example.com")
    assert answer.status_code == 500 and b"zoe" not in answer.data
    assert "error in a dashboard view: KeyError" in caplog.text
    assert "zoe" not in caplog.text


def test_localhost_is_loopback_only_when_it_resolves_there(monkeypatch):
    import socket

    from beam_rtbf.dashboard import access

    assert access.is_loopback("localhost")

    def elsewhere(host, *args, **kwargs):
        return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", ("10.1.2.3", 0)),
                (socket.AF_INET, socket.SOCK_STREAM, 6, "", ("127.0.0.1", 0))]  # fmt: skip

    monkeypatch.setattr(socket, "getaddrinfo", elsewhere)
    assert not access.is_loopback("localhost") and not access.is_loopback("LocalHost")
    with pytest.raises(ValueError, match="--host localhost is not a loopback address"):
        access.check_binding("localhost", None)
    assert access.is_loopback("127.0.0.1") and not access.is_loopback("::ffff:10.0.0.1")


def _damaged_out(tmp_path: Path) -> tuple:
    """Two requests, each with a damaged receipt; a hand-edited summary, run ledger, purge summary and manifest."""
    import os

    from beam_rtbf.purge.hashing import SubjectHasher
    from beam_rtbf.purge.receipts import receipt_path

    key = "k" * 32
    os.environ["RTBF_SUBJECT_HASH_KEY"] = key
    requests = [ErasureRequest("erase-zoe", "zoe-4711", T0), ErasureRequest("erase-max", "max-1", T0 + 1)]
    app = _app(tmp_path, requests)
    bodies = {
        "erase-zoe": {"request_id": "erase-zoe", "records_removed": [1, 2], "verification": "str"},
        "erase-max": "{not json",
    }
    for request_id, body in bodies.items():
        path = Path(receipt_path(str(tmp_path / "receipts"), request_id))
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(body if isinstance(body, str) else json.dumps(body))
    (tmp_path / "summary.json").write_text(json.dumps({"sessions_in": "lots", "sessions_per_s": "fast", "clean": 7}))
    (tmp_path / "_runs").mkdir()
    (tmp_path / "_runs" / "r1.json").write_text(json.dumps({"run_id": "r1", "summary": "x"}))
    (tmp_path / "receipts" / "_runs").mkdir()
    (tmp_path / "receipts" / "_runs" / "p1-summary.json").write_text(json.dumps({"incomplete": 5, "verified": "x"}))
    return app, SubjectHasher(key=key.encode())


def test_damaged_files_show_as_such_and_the_rest_still_answers(tmp_path, monkeypatch):
    from beam_rtbf.dashboard.privacy import request_ref

    monkeypatch.setenv("RTBF_SUBJECT_HASH_KEY", "k" * 32)
    app, hasher = _damaged_out(tmp_path)
    client = app.server.test_client()
    overview = render_page(client, "/")
    assert overview.status_code == 200
    text = overview.get_data(as_text=True)
    assert text.count('"unreadable"') == 2  # the receipt column of both requests
    assert '"id":"run-clean"' in text and '"7"' in text  # the good figure still shows
    for request_id, why in [
        ("erase-zoe", "receipt unreadable: the receipt's records_removed, verification are not what a receipt holds"),
        ("erase-max", "receipt unreadable: the receipt file is not readable JSON"),
    ]:
        page = render_page(client, f"/request/{request_ref(hasher, request_id)}")
        assert page.status_code == 200 and why in page.get_data(as_text=True)


def test_a_manifest_whose_subject_ids_is_a_string_does_not_redact_letters(tmp_path):
    from beam_rtbf.manifests.build import manifest_path

    path = Path(manifest_path(str(tmp_path / "manifests"), "erase-al"))
    path.parent.mkdir(parents=True)
    path.write_text(json.dumps({"request_id": "erase-al", "subject_ids": "a", "regulation": "gdpr"}))
    app = build_app(DashboardConfig(tmp_path, None, None))
    answer = render_page(app.server.test_client(), "/")
    assert answer.status_code == 200 and "erase-al" not in answer.get_data(as_text=True)


def test_analytics_labels_that_are_identifiers_or_e_mails_are_masked_not_refused(tmp_path):
    rows = [
        {"window_start": "2026-01-01T00:00:00.000Z", "window_end": "2026-01-01T00:01:00.000Z", "action_type": a,
         "device_type": d, "sessions": n, "distinct_users": 1, "avg_secs_elapsed": 1.0}
        for a, d, n in [("view", "iPhone", 4), ("view", "Zoe@Example.COM", 3), ("someone@else.org", "Mac", 2),
                        ("<script>alert(1)</script>", "zoe-4711", 5)]
    ]  # fmt: skip
    path = tmp_path / "analytics" / "dt=2026-01-01" / "hour=00" / "pane-a.jsonl"
    path.parent.mkdir(parents=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    app = _app(tmp_path, [ErasureRequest("erase-zoe", "zoe-4711", T0, aliases=("zoe@example.com",))])
    client = app.server.test_client()
    overview = render_page(client, "/")
    assert overview.status_code == 200  # not refused by the guard: the labels are masked
    text = overview.get_data(as_text=True)
    assert "zoe" not in text.lower() and "else.org" not in text and REDACTED in text
    answer = analytics_answer(client)
    assert answer.status_code == 200 and "zoe" not in answer.get_data(as_text=True).lower()
    assert '"id":"analytics-sessions"' in answer.get_data(as_text=True)
    masked = analytics_answer(client, devices=[REDACTED])  # the masked devices can still be chosen
    assert masked.status_code == 200
    figures = json.loads(masked.data)["response"]["analytics-totals"]["children"]
    sessions = next(f for f in figures if f["props"]["children"][1]["props"]["id"] == "analytics-sessions")
    assert sessions["props"]["children"][1]["props"]["children"] == "8"


def test_the_redactor_of_a_large_registry_is_compiled_once_per_set_of_identifiers():
    """Compiling tens of thousands of ids takes seconds: each request page and guard check built its own."""
    ids = [f"user-{i}" for i in range(3000)] + [f"user{i}@example.com" for i in range(3000)]
    first, again = Redactor(ids), Redactor(list(reversed(ids)))
    assert first._exact is again._exact and first._folded is again._folded  # noqa: SLF001
    assert Redactor([*ids, "one-more"])._exact is not first._exact  # noqa: SLF001
    assert again("mail USER2999@example.com or user-0") == f"mail {REDACTED} or {REDACTED}"


def test_chart_labels_from_the_data_are_not_plotly_markup(tmp_path):
    link = '<a href="https://evil.example/">click</a>'
    path = tmp_path / "analytics" / "dt=2026-01-01" / "hour=00" / "pane-a.jsonl"
    path.parent.mkdir(parents=True)
    path.write_text(json.dumps({"window_start": "2026-01-01T00:00:00.000Z", "window_end": "2026-01-01T00:01:00.000Z",
                                "action_type": link, "device_type": "Mac", "sessions": 1, "distinct_users": 1,
                                "avg_secs_elapsed": 1.0}) + "\n")  # fmt: skip
    letters = tmp_path / "deadletter" / "sessions" / "a.jsonl"
    letters.parent.mkdir(parents=True)
    letters.write_text(
        json.dumps({"stream": "sessions", "reason": "bad <b>bold</b> <a href=https://evil.example/>x</a>"}) + "\n"
    )
    app = build_app(DashboardConfig(tmp_path, None, None))
    client = app.server.test_client()
    answer = analytics_answer(client, split="action_type", changed=False)
    figure = json.loads(answer.data)["response"]["analytics-graph"]["figure"]
    assert [trace["name"] for trace in figure["data"]] == ['&lt;a href="https://evil.example/"&gt;click&lt;/a&gt;']
    overview = json.loads(render_page(client, "/").data)

    def graphs(node):
        if isinstance(node, dict):
            if node.get("props", {}).get("id") == "deadletters-graph":
                yield node["props"]["figure"]
            for value in node.values():
                yield from graphs(value)
        elif isinstance(node, list):
            for value in node:
                yield from graphs(value)

    (dead,) = graphs(overview)
    assert dead["data"][0]["y"] == [
        "sessions: bad &lt;b&gt;bold&lt;/b&gt; &lt;a href=https://evil.example/&gt;x&lt;/a&gt;"
    ]


def test_an_analytics_error_quoting_a_value_reaches_neither_page_nor_log(tmp_path, monkeypatch, caplog):
    from beam_rtbf.dashboard import data

    def broken(paths):
        raise ValueError("Could not convert 'someone@else.org' with type str: tried to convert to int64")

    monkeypatch.setattr(data, "read_analytics_files", broken)
    app = build_app(DashboardConfig(tmp_path, None, None))
    client = app.server.test_client()
    with caplog.at_level(logging.DEBUG):
        overview = render_page(client, "/")
        answer = analytics_answer(client)
    assert overview.status_code == 200 and answer.status_code == 200
    text = answer.get_data(as_text=True)
    assert "analytics unavailable: ValueError while reading the analytics" in text
    assert "else.org" not in text + overview.get_data(as_text=True) + caplog.text
