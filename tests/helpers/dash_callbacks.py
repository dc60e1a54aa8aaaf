"""The dashboard's callbacks asked for as the browser asks for them (Dash's update endpoint), for
tests that drive the Flask app in process (``app.server.test_client()``)."""

from __future__ import annotations

from collections.abc import Iterable

_UPDATE = "/_dash-update-component"


def render_page(client, pathname: str):
    """The page callback's answer for ``pathname``."""
    body = {
        "output": "page.children",
        "outputs": {"id": "page", "property": "children"},
        "inputs": [{"id": "url", "property": "pathname", "value": pathname}],
        "changedPropIds": ["url.pathname"],
        "state": [],
    }
    return client.post(_UPDATE, json=body)


def analytics_answer(
    client, split: str = "device_type", actions: Iterable[str] = (), devices: Iterable[str] = (), changed: bool = True
):
    """The analytics callback's answer (graph and totals) for sessions per hour, split by ``split``,
    with the action and device filters chosen (``changed``: as after a change of the devices)."""
    body = {
        "output": "..analytics-graph.figure...analytics-totals.children..",
        "outputs": [
            {"id": "analytics-graph", "property": "figure"},
            {"id": "analytics-totals", "property": "children"},
        ],
        "inputs": [
            {"id": "analytics-metric", "property": "value", "value": "sessions"},
            {"id": "analytics-split", "property": "value", "value": split},
            {"id": "analytics-resolution", "property": "value", "value": "hour"},
            {"id": "analytics-actions", "property": "value", "value": list(actions)},
            {"id": "analytics-devices", "property": "value", "value": list(devices)},
        ],
        "changedPropIds": ["analytics-devices.value"] if changed else [],
        "state": [],
    }
    return client.post(_UPDATE, json=body)
