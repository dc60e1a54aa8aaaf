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

T0 = 1_767_225_600_000


def _app(tmp_path: Path, requests: list[ErasureRequest]):
    registry = EmbeddedRegistry(str(tmp_path / "_state" / "registry.sqlite"))
    registry.add(requests)
    registry.close()
    return build_app(DashboardConfig(tmp_path, f"embedded://{tmp_path}/_state/registry.sqlite", None))


def _render(client, pathname: str):
    body = {
        "output": "page.children",
        "outputs": {"id": "page", "property": "children"},
        "inputs": [{"id": "url", "property": "pathname", "value": pathname}],
        "changedPropIds": ["url.pathname"],
        "state": [],
    }
    return client.post("/_dash-update-component", json=body)


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
