"""The dashboard end to end: a known run and purge, ``beam-rtbf dashboard`` as a process, headless Chromium.

What a person sees is checked against the files: the run figures against summary.json and
the ledger, requests by status against the registry, dead letters by reason against
OUTPUT/deadletter, analytics totals against OUTPUT/analytics (also after a filter). A
receipt is reached by clicking in the requests table. No identifier of any request, nor
any user id of the inputs, is in any page, callback answer or DOM. Off loopback, the
token is required (in a network namespace of its own). Screenshots are kept under the
test's temporary folder (the path is printed).
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

from beam_rtbf.dashboard.privacy import reason_category, request_ref
from beam_rtbf.purge.hashing import SubjectHasher
from beam_rtbf.purge.receipts import receipt_path
from beam_rtbf.registry.embedded import EmbeddedRegistry
from tests.helpers.dashboard import (
    ROOT,
    DashboardProcess,
    DashboardRun,
    build_run,
    identifier_pattern,
    launch_browser,
)
from tests.helpers.netns import netns_prefix

pytestmark = [pytest.mark.slow, pytest.mark.integration]


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> DashboardRun:
    with pytest.MonkeyPatch.context() as patch:
        patch.delenv("RTBF_SUBJECT_HASH_KEY", raising=False)  # the local key file, as the embedded default
        patch.delenv("RTBF_DASHBOARD_TOKEN", raising=False)
        return build_run(tmp_path_factory.mktemp("dashboard"))


@pytest.fixture(scope="module")
def dashboard(run):
    server = DashboardProcess(run.out, env={"RTBF_SUBJECT_HASH_KEY": "", "RTBF_DASHBOARD_TOKEN": ""})
    yield server
    server.stop()


@pytest.fixture(scope="module")
def screens(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("dashboard-screenshots")
    print(f"dashboard screenshots in {folder}")
    return folder


def _number(text: str) -> float:
    return float(text.replace(",", ""))


def _expected_requests(out: Path) -> tuple[dict[str, str], list[tuple[int, str]]]:
    """request id -> status (verified once verified, else the newest step), and (deadline, id) sorted, from the registry."""
    registry = EmbeddedRegistry(str(out / "_state" / "registry.sqlite"))
    try:
        statuses, deadlines = {}, []
        for accepted in registry.requests():
            rid = accepted.request.request_id
            steps = [e.status for e in registry.timeline(rid)]
            statuses[rid] = "verified" if "verified" in steps else steps[-1]
            deadlines.append((accepted.request.deadline_ms, rid))
    finally:
        registry.close()
    return statuses, sorted(deadlines)


def _analytics_sessions(out: Path, device: str | None = None) -> int:
    total = 0
    for path in (out / "analytics").glob("dt=*/hour=*/*.jsonl"):
        for line in path.read_text().splitlines():
            row = json.loads(line)
            if device is None or row["device_type"] == device:
                total += row["sessions"]
    return total


def _table(page, selector: str) -> list[list[str]]:
    return page.eval_on_selector_all(
        f"{selector} tbody tr", "rows => rows.map(r => [...r.cells].map(c => c.innerText))"
    )


def test_dashboard_shows_the_run_exactly_and_no_identifier(run, dashboard, screens):
    from playwright.sync_api import sync_playwright

    out = run.out
    summary = json.loads((out / "summary.json").read_text())
    ledger = {p.stem: json.loads(p.read_text()) for p in (out / "_runs").glob("*.json")}
    statuses, deadlines = _expected_requests(out)
    hasher = SubjectHasher(key_file=str(out / "_state" / "subject-hash.key"))
    refs = {rid: request_ref(hasher, rid) for rid in statuses}
    letters = [json.loads(line) for p in (out / "deadletter").glob("*.jsonl") for line in p.read_text().splitlines()]
    expected_letters = Counter((d["stream"], reason_category(d["reason"])) for d in letters)
    pattern = identifier_pattern(run.identifiers + run.user_ids)

    answers: list = []
    texts: list[tuple[str, int, str, str]] = []  # (url, status, content type, body) of every answer

    def read_answers() -> None:
        """Bodies can be read only until the page navigates away: read what came so far."""
        while answers:
            answer = answers.pop(0)
            body = answer.text() if answer.status < 300 or answer.status >= 400 else ""
            texts.append((answer.url, answer.status, answer.headers.get("content-type", ""), body))

    with sync_playwright() as playwright:
        browser = launch_browser(playwright)
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        page.on("response", lambda answer: answers.append(answer))
        page.goto(dashboard.url + "/")
        for element in ("#run-sessions_in", "#analytics-sessions", "#requests-table", "#deadletters-table"):
            page.wait_for_selector(element, timeout=60_000)
        doms = [page.content()]

        # Run figures: the latest summary.json, and one ledger row per bounded run.
        for key in ("sessions_in", "clean", "suppressed", "dead_lettered", "requests_accepted"):
            assert _number(page.inner_text(f"#run-{key}")) == summary[key], key
        assert _number(page.inner_text("#run-sessions_per_s")) == pytest.approx(summary["sessions_per_s"], abs=0.05)
        assert summary["sessions_in"] == 2000 + summary["dead_lettered"] and summary["suppressed"] > 0
        runs = _table(page, "#runs-table")
        assert sorted((r[0], int(_number(r[4]))) for r in runs) == sorted(
            (rid, record["summary"]["sessions_in"]) for rid, record in ledger.items()
        )
        assert len(runs) == 3 and {r[1] for r in runs} == {"committed"}

        # Requests: counts by status as the registry says, the table by deadline, the overdue one marked.
        assert Counter(statuses.values()) == {"verified": 5, "suppressed": 1, "received": 2}
        for status, count in Counter(statuses.values()).items():
            assert _number(page.inner_text(f"#requests-count-{status}")) == count
        assert _number(page.inner_text("#requests-total")) == 8
        assert _number(page.inner_text("#requests-overdue")) == 1
        rows = _table(page, "#requests-table")
        assert [r[0] for r in rows] == [refs[rid] for _, rid in deadlines]
        assert {r[0]: r[3] for r in rows} == {refs[rid]: s for rid, s in statuses.items()}
        overdue = page.eval_on_selector_all("#requests-table tr.overdue", "rows => rows.map(r => r.cells[0].innerText)")
        assert overdue == [refs["late-u0000066-gdpr"]]
        assert next(r for r in rows if r[0] == refs["late-u0000066-gdpr"])[5].startswith("OVERDUE by ")

        # Latency: one per request with a manifest (the two `forget`s have none yet).
        assert _number(page.inner_text("#latency-count")) == 6

        # Dead letters by reason, exactly as the files hold them.
        shown = Counter({(s, r): int(_number(n)) for s, r, n in _table(page, "#deadletters-table")})
        assert shown == expected_letters and sum(shown.values()) == len(letters) > 0
        assert _number(page.inner_text("#deadletters-total")) == len(letters)

        # Analytics totals, then filtered to one device type with the dropdown.
        assert _number(page.inner_text("#analytics-sessions")) == _analytics_sessions(out)
        page.click("#analytics-devices")
        page.click('#analytics-devices ~ * input[value="iPhone"], input[value="iPhone"]')
        page.keyboard.press("Escape")
        iphone = _analytics_sessions(out, "iPhone")
        assert 0 < iphone < _analytics_sessions(out)
        page.wait_for_function(
            "n => document.querySelector('#analytics-sessions').innerText.replace(/,/g, '') === String(n)", arg=iphone
        )
        page.screenshot(path=str(screens / "overview.png"), full_page=True)
        doms.append(page.content())

        # A receipt, reached by clicking its request in the table.
        verified = next(rid for _, rid in deadlines if statuses[rid] == "verified")
        receipt = json.loads(Path(receipt_path(str(out / "receipts"), verified)).read_text())
        read_answers()
        page.click(f"#requests-table a:text-is('{refs[verified]}')")
        page.wait_for_selector("#receipt-status", timeout=60_000)
        assert page.url == f"{dashboard.url}/request/{refs[verified]}"
        assert page.inner_text("#receipt-status") == "verified"
        assert _number(page.inner_text("#receipt-archive")) == receipt["records_removed"]["archive_partition"] > 0
        assert _number(page.inner_text("#receipt-index")) == receipt["records_removed"]["index"]
        assert page.inner_text("#receipt-verification") == "passed"
        assert page.inner_text("#request-subject-hash") == receipt["subject_hash"]
        steps = [r[0] for r in _table(page, "#request-timeline")]
        assert steps == ["requested", "accepted", "effective", "purged", "verified"]
        locations = _table(page, "#receipt-locations")
        archive_removed = sum(int(_number(r[3])) for r in locations if r[0] == "archive_partition")
        assert archive_removed == receipt["records_removed"]["archive_partition"]
        page.screenshot(path=str(screens / "receipt.png"), full_page=True)
        doms.append(page.content())

        # The request no purge has seen: its timeline, no receipt.
        read_answers()
        page.goto(f"{dashboard.url}/request/{refs['late-u0000066-gdpr']}")
        page.wait_for_selector("#receipt-missing", timeout=60_000)
        assert page.inner_text("#request-status") == "suppressed"
        assert page.inner_text("#request-days").startswith("OVERDUE by ")
        doms.append(page.content())
        read_answers()
        browser.close()

    assert not [(url, status) for url, status, _, _ in texts if status >= 400]  # the server's guard never fired
    served = [(url, text) for url, _, kind, text in texts if "json" in kind or "html" in kind]
    assert len([u for u, _ in served if "_dash-update-component" in u]) >= 5
    leaks = [(url, pattern.search(text).group()) for url, text in served if pattern.search(text)]
    leaks += [("DOM", pattern.search(dom).group()) for dom in doms if pattern.search(dom)]
    assert leaks == []
    # The check itself finds an identifier where one is.
    assert pattern.search(f"<td>{run.identifiers[0]}</td>") and pattern.search('"u0000011"')


def test_token_required_off_loopback(run):
    token = "dashboard-test-token-0123456789abcdef"
    probe = subprocess.run(
        [
            *netns_prefix(),
            sys.executable,
            str(ROOT / "tests" / "helpers" / "dashboard_token_probe.py"),
            str(run.out),
            token,
        ],
        capture_output=True,
        text=True,
        timeout=180,
        cwd=ROOT,
    )
    assert probe.returncode == 0, probe.stderr[-3000:]
    answers = json.loads(probe.stdout.strip().splitlines()[-1])
    assert answers["first_line"].startswith("beam-rtbf dashboard: http://0.0.0.0:")
    assert "token required" in answers["first_line"]
    for key in ("no_token", "layout_no_token", "wrong_token"):
        assert answers[key]["status"] == 401, key
        assert answers[key]["body_start"].startswith("401 Unauthorized")
    for key in ("bearer", "layout_bearer", "cookie", "layout_cookie"):
        assert answers[key]["status"] == 200, key
    assert answers["query"]["status"] == 303 and answers["query"]["location"] == "/"
    assert token not in (answers["query"]["set_cookie"] or "")
