"""The dashboard's pages, in Dash: the overview (``/``) and one page per request (``/request/<ref>``).

Every figure is computed when a page or a control asks for it, from ``data``'s functions,
so a reload shows the output folder and registry as they are now. Totals are text beside
each chart (an element id per figure, e.g. ``run-sessions_in``), for a reader and a test.

A last guard sits on the server: an HTML or JSON answer that holds an identifier the
registry or the manifests name is refused (500) instead of served. It never fires when the
views are right; it is there so that a view added later cannot leak one.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import html as html_lib
import json
import logging
import re
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import plotly.graph_objects as go
import pyarrow as pa
from dash import Dash, Input, Output, dcc, html

from beam_rtbf.dashboard import data
from beam_rtbf.dashboard.privacy import REDACTED, Redactor, load_hasher
from beam_rtbf.records import now_ms
from beam_rtbf.registry.base import DeletionRegistry

__all__ = ["DashboardConfig", "build_app"]

_LOGGER = logging.getLogger(__name__)
PAGE_ROWS = 25  # Dash's renderer slows down with every component on the page: a page of requests at a time
READ_TTL_S = 5.0
_REF = re.compile(r"r-[0-9a-f]{16}")  # the callbacks of one page view share one read of the requests
_STYLE = """
body { font-family: system-ui, sans-serif; margin: 0; background: #f5f6f8; color: #1d2330; }
header { background: #1d2330; color: #fff; padding: 10px 24px; display: flex; gap: 24px; align-items: baseline; }
header h1 { font-size: 20px; margin: 0; } header a { color: #cfe0ff; } header .where { color: #9aa3b5; font-size: 13px; }
main { padding: 12px 24px; }
section { background: #fff; border-radius: 6px; padding: 12px 16px; margin-bottom: 14px; box-shadow: 0 1px 2px #0001;
          overflow-x: auto; }
section h2 { font-size: 16px; margin: 0 0 8px 0; }
.figures { display: flex; flex-wrap: wrap; gap: 10px; margin-bottom: 8px; }
.figure { border: 1px solid #dde1e8; border-radius: 5px; padding: 6px 12px; min-width: 120px; }
.figure .label { font-size: 12px; color: #5b6476; } .figure .value { font-size: 20px; font-weight: 600; }
table.grid { border-collapse: collapse; font-size: 13px; width: 100%; }
table.grid th, table.grid td { border-bottom: 1px solid #e6e8ee; padding: 3px 8px; text-align: left; }
table.grid td { white-space: nowrap; } table.grid td.wrap { white-space: normal; }
table.grid th { background: #f0f2f6; }
tr.overdue td { background: #fde2e1; color: #8a1c12; font-weight: 600; }
.controls { display: flex; flex-wrap: wrap; gap: 12px; } .controls > div { min-width: 200px; flex: 1; }
.row2 { display: flex; gap: 14px; flex-wrap: wrap; } .row2 > section { flex: 1; min-width: 420px; }
.note { color: #5b6476; font-size: 12px; } .bad { color: #a8200d; font-weight: 600; } .good { color: #1d7a35; }
code { font-size: 12px; }
"""
_INDEX = (
    """<!DOCTYPE html>
<html><head>{%metas%}<title>{%title%}</title>{%favicon%}{%css%}<style>"""
    + _STYLE
    + """</style></head>
<body>{%app_entry%}<footer>{%config%}{%scripts%}{%renderer%}</footer></body></html>"""
)


@dataclasses.dataclass(frozen=True)
class DashboardConfig:
    """What one dashboard shows: an output folder, its registry and key, and where analytics live."""

    output: Path
    registry_url: str | None = None  # None: requests from the manifests only
    key_file: str | None = None  # the local subject-hash key (``$RTBF_SUBJECT_HASH_KEY`` wins)
    analytics_url: str | None = None  # postgresql://...; None: OUTPUT/analytics files
    clock: Callable[[], int] = now_ms


# -- formatting ----------------------------------------------------------------------------------


def fmt_int(value: int | float | None) -> str:
    return "n/a" if value is None else f"{int(value):,}"


def fmt_float(value: float | None, digits: int = 1) -> str:
    return "n/a" if value is None else f"{value:,.{digits}f}"


def fmt_time(ms: int | None, seconds: bool = True) -> str:
    """UTC, as the files write it (the column or label says UTC)."""
    if ms is None:
        return ""
    return dt.datetime.fromtimestamp(ms / 1000, dt.timezone.utc).strftime(
        "%Y-%m-%d %H:%M:%S" if seconds else "%Y-%m-%d %H:%M"
    )


def short_hash(value: str) -> str:
    """``hmac-sha256:<12 hex>…``: enough to tell subjects apart in a table; the request page has it whole."""
    kind, _, digest = value.partition(":")
    return f"{kind}:{digest[:12]}…" if digest else value


def fmt_days(row: data.RequestRow) -> str:
    if row.status == "verified":
        return "done"
    if row.days_left is None:
        return ""
    return f"OVERDUE by {-row.days_left:.1f} days" if row.overdue else f"{row.days_left:.1f} days left"


def _chart_text(text: str) -> str:
    """A label for a Plotly chart: Plotly reads ``<a href>``, ``<b>``, ``<br>``... in labels as markup, so a
    value from the data (an action type, a dead letter's reason) has its ``<``, ``>`` and ``&`` escaped."""
    return html_lib.escape(text, quote=False)


def _figure(label: str, value: str, element_id: str) -> html.Div:
    return html.Div(
        [html.Div(label, className="label"), html.Div(value, id=element_id, className="value")], className="figure"
    )


def _grid(headers: list[str], rows: list[list], element_id: str, row_classes: list[str] | None = None) -> html.Table:
    body = [
        html.Tr([html.Td(cell) for cell in row], className=(row_classes[i] if row_classes else None) or None)
        for i, row in enumerate(rows)
    ]
    return html.Table(
        [html.Thead(html.Tr([html.Th(h) for h in headers])), html.Tbody(body)], id=element_id, className="grid"
    )


def _layout_figure(fig: go.Figure, height: int = 300) -> go.Figure:
    fig.update_layout(
        height=height,
        margin={"l": 50, "r": 10, "t": 30, "b": 40},
        template="plotly_white",
        legend={"orientation": "h", "y": -0.2},
    )
    return fig


# -- the app -------------------------------------------------------------------------------------


class _Sources:
    """Opens the registry per page view and caches the analytics files by their names, sizes and times."""

    def __init__(self, config: DashboardConfig) -> None:
        self.config = config
        self.hasher = load_hasher(config.key_file)
        self._lock = threading.Lock()
        self._analytics_key: tuple | None = None
        self._analytics: pa.Table | None = None
        self._redactor: Redactor | None = None  # from the latest read of the requests (the server guard's list)
        self._requests: tuple[float, list[data.RequestRecord], data.RequestsView] | None = None
        self._pg = None
        if config.analytics_url:
            from beam_rtbf.dashboard.analytics_pg import PostgresAnalytics

            self._pg = PostgresAnalytics(config.analytics_url)

    @contextmanager
    def registry(self) -> Iterator[DeletionRegistry | None]:
        url = self.config.registry_url
        if not url or (url.startswith("embedded://") and not Path(url[len("embedded://") :]).is_file()):
            yield None  # no registry (yet): the manifests say what is known
            return
        from beam_rtbf.registry import open_registry

        with open_registry(url) as registry:
            yield registry

    def redactor(self) -> Redactor:
        """The identifiers of the latest read of the requests (read once if none has happened yet)."""
        with self._lock:
            known = self._redactor
        return known if known is not None else self.requests()[1].redactor

    def analytics(self, filters: data.AnalyticsFilters) -> pa.Table:
        """The rows that pass ``filters``, labels that name someone masked (``data.mask_labels``)."""
        redactor = self.redactor()
        if self._pg is not None:
            masked_chosen = REDACTED in (*filters.action_types, *filters.device_types)
            # The database filters on true values: a choice of masked ones is filtered here.
            table = self._pg.read(data.AnalyticsFilters() if masked_chosen else filters)
        else:
            files = data.analytics_files(self.config.output)
            key = tuple((str(p), *(lambda s: (s.st_size, s.st_mtime_ns))(p.stat())) for p in files)
            with self._lock:
                if key != self._analytics_key:
                    self._analytics, self._analytics_key = data.read_analytics_files(files), key
                table = self._analytics
        return data.filter_analytics(data.mask_labels(table, redactor), filters)

    def requests(self) -> tuple[list[data.RequestRecord], data.RequestsView]:
        """Every request (raw, for the views) and the table; one read serves the callbacks of a page view."""
        with self._lock:
            cached = self._requests
        if cached is not None and time.monotonic() - cached[0] < READ_TTL_S:
            return cached[1], cached[2]
        with self.registry() as registry:
            records = data.request_records(self.config.output, registry)
        view = data.requests_table(self.config.output, None, self.config.clock(), self.hasher, records)
        with self._lock:
            self._redactor = view.redactor
            self._requests = (time.monotonic(), records, view)
        return records, view


def _runs_section(figures: data.RunFigures) -> html.Section:
    latest = figures.latest or {}
    cards = html.Div(
        [
            _figure("sessions in", fmt_int(latest.get("sessions_in")), "run-sessions_in"),
            _figure("clean", fmt_int(latest.get("clean")), "run-clean"),
            _figure("suppressed", fmt_int(latest.get("suppressed")), "run-suppressed"),
            _figure("dead-lettered", fmt_int(latest.get("dead_lettered")), "run-dead_lettered"),
            _figure("throughput (sessions/s)", fmt_float(latest.get("sessions_per_s")), "run-sessions_per_s"),
            _figure("requests accepted", fmt_int(latest.get("requests_accepted")), "run-requests_accepted"),
            _figure(
                "conservation",
                {True: "holds", False: "BROKEN"}.get(latest.get("conservation_ok"), "n/a"),
                "run-conservation",
            ),
        ],
        className="figures",
    )
    runs = _grid(
        [
            "run",
            "state",
            "started",
            "mode",
            "sessions in",
            "clean",
            "suppressed",
            "dead-lettered",
            "sessions/s",
            "elapsed s",
        ],
        [
            [
                r.run_id,
                r.state,
                r.started_at or "",
                r.mode or "",
                fmt_int(r.sessions_in),
                fmt_int(r.clean),
                fmt_int(r.suppressed),
                fmt_int(r.dead_lettered),
                fmt_float(r.sessions_per_s),
                fmt_float(r.elapsed_s, 2),
            ]
            for r in figures.runs
        ],
        "runs-table",
    )
    purges = _grid(
        ["purge run", "requests pending", "verified", "incomplete", "blocked", "archive records removed", "elapsed s"],
        [
            [
                p.run,
                fmt_int(p.requests_pending),
                fmt_int(p.verified),
                fmt_int(p.incomplete),
                fmt_int(p.blocked),
                fmt_int(p.archive_records_removed),
                fmt_float(p.elapsed_s, 2),
            ]
            for p in figures.purges
        ],
        "purges-table",
    )
    source = (
        f"latest run {latest.get('run_id') or ''} ({latest.get('mode') or 'unknown mode'}, "
        f"{latest.get('runner') or 'unknown runner'}, filter {latest.get('filter_strategy') or 'n/a'})"
    )
    return html.Section(
        [
            html.H2("Run figures"),
            html.Div(source if figures.latest else "no summary.json in this output folder", className="note"),
            cards,
            html.H3("Last runs (run ledger)", style={"fontSize": "14px"}),
            runs if figures.runs else html.Div("no bounded runs in _runs/", className="note"),
            html.H3("Purge runs", style={"fontSize": "14px"}),
            purges if figures.purges else html.Div("no purge has run", className="note"),
        ]
    )


def _analytics_section(choices: tuple[list[str], list[str]]) -> html.Section:
    actions, devices = choices

    def dropdown(element_id: str, options, value, multi: bool = False, placeholder: str = "") -> dcc.Dropdown:
        return dcc.Dropdown(
            id=element_id, options=options, value=value, multi=multi, clearable=multi, placeholder=placeholder
        )

    return html.Section(
        [
            html.H2("Analytics over time"),
            html.Div(
                [
                    html.Div(
                        [
                            html.Label("metric"),
                            dropdown(
                                "analytics-metric",
                                [{"label": v, "value": k} for k, v in data.METRICS.items()],
                                "sessions",
                            ),
                        ]
                    ),
                    html.Div(
                        [
                            html.Label("split by"),
                            dropdown(
                                "analytics-split",
                                [{"label": v, "value": k} for k, v in data.SPLITS.items()],
                                "action_type",
                            ),
                        ]
                    ),
                    html.Div(
                        [
                            html.Label("resolution"),
                            dropdown(
                                "analytics-resolution",
                                [{"label": v, "value": k} for k, v in data.RESOLUTIONS.items()],
                                "hour",
                            ),
                        ]
                    ),
                    html.Div(
                        [
                            html.Label("action types"),
                            dropdown("analytics-actions", actions, [], multi=True, placeholder="all action types"),
                        ]
                    ),
                    html.Div(
                        [
                            html.Label("device types"),
                            dropdown("analytics-devices", devices, [], multi=True, placeholder="all device types"),
                        ]
                    ),
                ],
                className="controls",
            ),
            html.Div(id="analytics-totals", className="figures", style={"marginTop": "8px"}),
            dcc.Graph(id="analytics-graph", config={"displaylogo": False}),
        ]
    )


def _requests_section(view: data.RequestsView) -> html.Section:
    counts = view.counts_by_status
    statuses = sorted(counts)
    cards = [
        _figure("requests", fmt_int(len(view.rows)), "requests-total"),
        _figure("overdue", fmt_int(view.overdue), "requests-overdue"),
    ]
    cards += [_figure(status, fmt_int(counts[status]), f"requests-count-{status}") for status in statuses]
    bar = _layout_figure(go.Figure(go.Bar(x=statuses, y=[counts[s] for s in statuses], marker_color="#4c72b0")), 240)
    bar.update_layout(title="requests by status")
    filter_options = [
        {"label": "all", "value": "all"},
        {"label": "open (not verified)", "value": "open"},
        {"label": "overdue", "value": "overdue"},
    ] + [{"label": s, "value": s} for s in statuses]
    return html.Section(
        [
            html.H2("Erasure requests"),
            html.Div(
                "Requests are named by a keyed hash of their id, subjects by the keyed hash the receipts use; "
                "no identifier is shown.",
                className="note",
            ),
            html.Div(
                [
                    html.Div(cards, className="figures", style={"flex": "1", "alignContent": "flex-start"}),
                    dcc.Graph(
                        id="requests-by-status", figure=bar, config={"displaylogo": False}, style={"width": "520px"}
                    ),
                ],
                style={"display": "flex", "gap": "14px", "flexWrap": "wrap"},
            ),
            html.Div(
                [
                    html.Div(
                        [
                            html.Label("show"),
                            dcc.Dropdown(id="requests-filter", options=filter_options, value="all", clearable=False),
                        ],
                        style={"width": "300px"},
                    ),
                    html.Div(
                        [
                            html.Label("page"),
                            dcc.Input(
                                id="requests-page",
                                type="number",
                                min=1,
                                step=1,
                                value=1,
                                debounce=True,
                                style={"width": "80px", "display": "block"},
                            ),
                        ]
                    ),
                ],
                className="controls",
                style={"maxWidth": "480px"},
            ),
            html.Div(_requests_rows(view, "all", 1), id="requests-table-box"),
        ]
    )


def _requests_rows(view: data.RequestsView, which: str, page: int) -> html.Div:
    rows = view.rows
    if which == "open":
        rows = [r for r in rows if r.status != "verified"]
    elif which == "overdue":
        rows = [r for r in rows if r.overdue]
    elif which != "all":
        rows = [r for r in rows if r.status == which]
    pages = max(1, -(-len(rows) // PAGE_ROWS))
    page = min(max(1, page), pages)
    first = (page - 1) * PAGE_ROWS
    shown = rows[first : first + PAGE_ROWS]
    table = _grid(
        [
            "request",
            "subject (keyed hash)",
            "regulation",
            "status",
            "deadline (UTC)",
            "days left",
            "accepted (UTC)",
            "effective (UTC)",
            "records removed",
            "receipt",
        ],
        [
            [
                dcc.Link(r.ref, href=f"/request/{r.ref}", className="request-link"),
                short_hash(r.subject_hash),
                r.regulation,
                r.status,
                fmt_time(r.deadline_ms, False),
                fmt_days(r),
                fmt_time(r.accepted_at_ms, False),
                fmt_time(r.effective_at_ms, False),
                fmt_int(r.records_removed) if r.has_receipt else "",
                "yes" if r.has_receipt else ("unreadable" if r.receipt_problem else "not yet"),
            ]
            for r in shown
        ],
        "requests-table",
        ["overdue" if r.overdue else "" for r in shown],
    )
    note = (
        f"requests {first + 1 if shown else 0}–{first + len(shown)} of {len(rows)} (page {page} of {pages}), "
        "earliest deadline first"
    )
    return html.Div([html.Div(note, id="requests-shown", className="note"), table])


def _latency_section(lat: data.Latencies) -> html.Section:
    hist = _layout_figure(go.Figure(go.Histogram(x=lat.values_s, nbinsx=40, marker_color="#55a868")), 260)
    hist.update_layout(title="accepted → effective (s)", xaxis_title="seconds", yaxis_title="requests")
    return html.Section(
        [
            html.H2("Effectiveness latency"),
            html.Div("From the registry accepting a request to the filter dropping its subject.", className="note"),
            html.Div(
                [
                    _figure("requests measured", fmt_int(lat.count), "latency-count"),
                    _figure("p50 (s)", fmt_float(lat.p50_s, 3), "latency-p50"),
                    _figure("p99 (s)", fmt_float(lat.p99_s, 3), "latency-p99"),
                    _figure("max (s)", fmt_float(lat.max_s, 3), "latency-max"),
                ],
                className="figures",
            ),
            dcc.Graph(id="latency-histogram", figure=hist, config={"displaylogo": False}),
        ]
    )


def _dead_letters_section(counts: data.DeadLetterCounts) -> html.Section:
    reasons = list(reversed(counts.by_reason))
    bar = _layout_figure(
        go.Figure(
            go.Bar(
                y=[_chart_text(f"{s}: {r}") for s, r, _ in reasons],
                x=[n for _, _, n in reasons],
                orientation="h",
                marker_color="#c44e52",
            )
        ),
        max(200, 28 * len(reasons) + 80),
    )
    bar.update_layout(margin={"l": 380})
    return html.Section(
        [
            html.H2("Dead letters by reason"),
            html.Div(
                "Rejected records are counted by stream and reason (quoted values masked); their bytes are "
                "never shown.",
                className="note",
            ),
            html.Div(
                [
                    _figure("dead letters", fmt_int(counts.total), "deadletters-total"),
                    _figure("files", fmt_int(counts.files), "deadletters-files"),
                ],
                className="figures",
            ),
            _grid(
                ["stream", "reason", "count"], [[s, r, fmt_int(n)] for s, r, n in counts.by_reason], "deadletters-table"
            ),
            dcc.Graph(id="deadletters-graph", figure=bar, config={"displaylogo": False}) if reasons else html.Div(),
        ]
    )


def _why_unavailable(exc: BaseException) -> str:
    """What the page and the log say when analytics cannot be read: the database reader's own message
    (one line, secrets masked, no data in it); for anything else only its kind, as a parser's or a
    converter's message may quote a value from the data (an e-mail in a column)."""
    from beam_rtbf.dashboard.analytics_pg import AnalyticsUnavailable

    if isinstance(exc, AnalyticsUnavailable):
        return str(exc)
    return f"{type(exc).__name__} while reading the analytics (are they what beam-rtbf writes?)"


def _overview(sources: _Sources) -> html.Div:
    config = sources.config
    _records, view = sources.requests()
    try:
        choices = data.analytics_choices(sources.analytics(data.AnalyticsFilters()))
    except Exception as exc:  # noqa: BLE001 - a database outage shows on the page, the rest still works
        _LOGGER.warning("analytics unavailable: %s", _why_unavailable(exc))
        choices = ([], [])
    return html.Div(
        [
            _runs_section(data.run_figures(config.output)),
            _analytics_section(choices),
            _requests_section(view),
            html.Div(
                [
                    _latency_section(data.latencies(view.rows)),
                    _dead_letters_section(data.dead_letters(config.output, view.redactor)),
                ],
                className="row2",
            ),
        ]
    )


def _request_page(sources: _Sources, ref: str) -> html.Div:
    records, _view = sources.requests()
    page = data.receipt_view(sources.config.output, None, sources.hasher, ref, sources.config.clock(), records)
    back = dcc.Link("← all requests", href="/")
    if page is None:
        # What was typed is not echoed: a person may have typed a subject's e-mail instead of a ref.
        shown = ref if _REF.fullmatch(ref) else "with that address"
        return html.Div([back, html.Section([html.H2("Unknown request"), html.Div(f"no request {shown}")])])
    row: data.RequestRow = page["row"]
    head = html.Section(
        [
            html.H2(f"Request {row.ref}", id="request-ref"),
            html.Div(
                [
                    _figure("status", row.status, "request-status"),
                    _figure("regulation", row.regulation, "request-regulation"),
                    _figure("deadline (UTC)", fmt_time(row.deadline_ms), "request-deadline"),
                    _figure("days left", fmt_days(row), "request-days"),
                    _figure(
                        "records removed",
                        fmt_int(row.records_removed) if row.has_receipt else "no receipt yet",
                        "request-removed",
                    ),
                ],
                className="figures",
            ),
            html.Div(["subject (keyed hash): ", html.Code(row.subject_hash, id="request-subject-hash")]),
        ]
    )
    timeline = html.Section(
        [
            html.H2("Timeline"),
            _grid(
                ["step", "at (UTC)", "detail"],
                [[s["step"], fmt_time(s["at_ms"]), s.get("detail", "")] for s in page["timeline"]],
                "request-timeline",
            ),
        ]
    )
    receipt = page["receipt"]
    if receipt is None and row.receipt_problem:
        body = html.Section(
            [
                html.H2("Receipt"),
                html.Div(f"receipt unreadable: {row.receipt_problem}", id="receipt-unreadable", className="bad"),
            ]
        )
        return html.Div([back, head, timeline, body])
    if receipt is None:
        body = html.Section(
            [
                html.H2("Receipt"),
                html.Div("no receipt yet: the purge has not completed this request", id="receipt-missing"),
            ]
        )
        return html.Div([back, head, timeline, body])
    removed = receipt["records_removed"]
    locations = _grid(
        ["kind", "where", "status", "removed", "verified", "verification"],
        [
            [
                _cell(loc.get("kind", "")),
                _cell(loc.get("path") or loc.get("uri") or loc.get("location") or ""),
                _cell(loc.get("status", "")),
                _removed_text(loc),
                "yes" if loc.get("verified") is True else "no",
                _cell(loc.get("verification") or loc.get("reason") or ""),
            ]
            for loc in receipt["locations"]
        ],
        "receipt-locations",
    )
    verification = receipt["verification"]
    scanned = verification.get("scanned") or {}
    body = html.Section(
        [
            html.H2("Receipt"),
            html.Div(
                [
                    _figure("receipt status", str(receipt["status"]), "receipt-status"),
                    _figure("archive records removed", fmt_int(removed.get("archive_partition")), "receipt-archive"),
                    _figure("index rows removed", fmt_int(removed.get("index")), "receipt-index"),
                    _figure("dead letters removed", fmt_int(removed.get("deadletter")), "receipt-deadletter"),
                    _figure(
                        "verification", "passed" if verification.get("passed") else "NOT passed", "receipt-verification"
                    ),
                    _figure(
                        "records of the subject found by the re-scan",
                        fmt_int(verification.get("found")),
                        "receipt-found",
                    ),
                ],
                className="figures",
            ),
            html.Div(
                f"purge run {receipt.get('purge_run')}, completed {receipt.get('completed_at') or 'no'}; "
                f"alias hashes: {len(receipt['alias_hashes'])}",
                className="note",
            ),
            html.H3("Records removed per location", style={"fontSize": "14px"}),
            locations,
            html.H3("Verification", style={"fontSize": "14px"}),
            html.Div(
                f"scanned {fmt_int(scanned.get('rows'))} rows in {fmt_int(scanned.get('archive_files'))} "
                f"archive, {fmt_int(scanned.get('index_files'))} index and "
                f"{fmt_int(scanned.get('deadletter_files'))} dead-letter files",
                id="receipt-scanned",
            ),
            html.Div(verification.get("method") or "", className="note"),
        ]
    )
    return html.Div([back, head, timeline, body])


def _cell(value) -> str:
    """A receipt's value as table text, whatever type a damaged file gave it."""
    return value if isinstance(value, str) else json.dumps(value, ensure_ascii=False, default=str)


def _removed_text(location: dict) -> str:
    """Records removed at a file location; for an analytics window, its sessions before -> after."""
    if "records_removed" in location:
        return fmt_int(data._number(location["records_removed"]))  # noqa: SLF001
    if "sessions_before" in location:
        before, after = (data._number(location.get(k)) for k in ("sessions_before", "sessions_after"))  # noqa: SLF001
        return f"sessions {fmt_int(before)} → {fmt_int(after)}"
    return ""


_GUARDED = ("text/html", "application/json", "text/plain")


def _strings(value) -> Iterator[str]:
    """Every string (keys too) inside a decoded JSON value."""
    if isinstance(value, str):
        yield value
    elif isinstance(value, list):
        for item in value:
            yield from _strings(item)
    elif isinstance(value, dict):
        for key, item in value.items():
            yield str(key)
            yield from _strings(item)


def _answer_text(response) -> str:
    """What a reader of ``response`` sees: its headers (URL-decoded) and its body as written and decoded
    (JSON strings with their ``\\uXXXX`` escapes resolved, HTML with its entities resolved)."""
    from urllib.parse import unquote

    parts = [f"{k}: {v}\n{unquote(v)}" for k, v in response.headers.items()]
    if not response.direct_passthrough and response.mimetype in _GUARDED:
        body = response.get_data(as_text=True)
        parts.append(body)
        if response.mimetype == "application/json":
            try:
                parts.extend(_strings(json.loads(body)))
            except ValueError:
                pass
        else:
            parts.append(html_lib.unescape(body))
    return "\n".join(parts)


def _refuse(response, status: int, text: str):
    response.direct_passthrough = False
    response.set_data(text)
    response.status_code = status
    response.mimetype = "text/plain"
    for header in [k for k in response.headers.keys() if k.lower() not in ("content-type", "content-length")]:
        del response.headers[header]
    return response


def _guard(server, sources: _Sources) -> None:
    """Refuse (500) an answer whose body or headers hold a known identifier, in any spelling: a last
    line, never the first. When the identifiers cannot be read it refuses too (503): it never fails open.
    Unhandled errors are logged by their type and place only (never the URL asked for, which a person
    may have typed an identifier into, nor an exception's message)."""

    @server.after_request
    def refuse_identifiers(response):
        try:
            redactor = sources.redactor()
        except Exception as exc:  # noqa: BLE001 - whatever broke, nothing is served unchecked
            _LOGGER.error(
                "refused to serve an answer: the identifiers to guard cannot be read (%s)", type(exc).__name__
            )
            return _refuse(response, 503, "refused: the registry cannot be read right now")
        if redactor.found(_answer_text(response)):
            _LOGGER.error("refused to serve an answer holding an identifier (a dashboard view is wrong)")
            return _refuse(response, 500, "refused: the answer held an identifier")
        return response

    def log_exception(exc_info) -> None:
        import traceback

        kind, _exc, tb = exc_info
        where = traceback.extract_tb(tb)[-1] if tb else None
        _LOGGER.error(
            "error in a dashboard view: %s%s",
            getattr(kind, "__name__", "exception"),
            f" at {Path(where.filename).name}:{where.lineno} ({where.name})" if where else "",
        )

    server.log_exception = log_exception


def build_app(config: DashboardConfig) -> Dash:
    """The Dash app for ``config`` (``app.server`` is its Flask WSGI app)."""
    sources = _Sources(config)
    app = Dash(
        __name__,
        title="beam-rtbf dashboard",
        update_title=None,
        suppress_callback_exceptions=True,
        serve_locally=True,
        index_string=_INDEX,
    )
    where = f"analytics from {sources._pg.table if sources._pg else 'files'}; registry {'set' if config.registry_url else 'none'}"  # noqa: SLF001
    app.layout = html.Div(
        [
            dcc.Location(id="url"),
            html.Header(
                [
                    html.H1("beam-rtbf"),
                    dcc.Link("overview", href="/"),
                    html.Span(f"{config.output.name or config.output} · read-only · {where}", className="where"),
                ]
            ),
            html.Main(id="page"),
        ]
    )

    @app.callback(Output("page", "children"), Input("url", "pathname"))
    def render(pathname: str | None):
        path = pathname or "/"
        if path.startswith("/request/"):
            return _request_page(sources, path[len("/request/") :].strip("/"))
        if path in ("/", ""):
            return _overview(sources)
        return html.Section([html.H2("Not found"), dcc.Link("overview", href="/")])

    @app.callback(
        Output("analytics-graph", "figure"),
        Output("analytics-totals", "children"),
        Input("analytics-metric", "value"),
        Input("analytics-split", "value"),
        Input("analytics-resolution", "value"),
        Input("analytics-actions", "value"),
        Input("analytics-devices", "value"),
    )
    def analytics(metric, split, resolution, actions, devices):
        filters = data.AnalyticsFilters(tuple(actions or ()), tuple(devices or ()))
        try:
            table = sources.analytics(filters)
        except Exception as exc:  # noqa: BLE001 - shown on the page
            return _layout_figure(go.Figure()), [
                html.Div(f"analytics unavailable: {_why_unavailable(exc)}", className="bad", id="analytics-error")
            ]
        totals = data.analytics_totals(table)
        series = data.analytics_series(table, metric or "sessions", split or "action_type", resolution or "hour")
        fig = go.Figure(
            [go.Scatter(x=xs, y=ys, name=_chart_text(name), mode="lines") for name, (xs, ys) in series.items()]
        )
        _layout_figure(fig, 340).update_layout(yaxis_title=data.METRICS[metric or "sessions"])
        cards = [
            _figure("sessions", fmt_int(totals.sessions), "analytics-sessions"),
            _figure("distinct users (summed per window)", fmt_int(totals.distinct_users), "analytics-distinct-users"),
            _figure("average duration (s)", fmt_float(totals.avg_secs_elapsed, 2), "analytics-avg-secs"),
            _figure("windows", fmt_int(totals.windows), "analytics-windows"),
            _figure("rows", fmt_int(totals.rows), "analytics-rows"),
        ]
        return fig, cards

    @app.callback(
        Output("requests-table-box", "children"),
        Input("requests-filter", "value"),
        Input("requests-page", "value"),
        prevent_initial_call=True,  # the overview comes with the first page
    )
    def requests(which, page):
        _records, view = sources.requests()
        return _requests_rows(view, which or "all", int(page or 1))

    _guard(app.server, sources)
    return app
