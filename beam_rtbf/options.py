"""Pipeline options of beam-rtbf, validated before any graph is built."""

from __future__ import annotations

import dataclasses
import os
from urllib.parse import urlparse

from apache_beam.options.pipeline_options import PipelineOptions

from beam_rtbf.filter import STRATEGIES
from beam_rtbf.parse.lines import DEFAULT_MAX_RECORD_BYTES
from beam_rtbf.sinks.files import OUTPUT_MODE_HELP, OUTPUT_MODES

__all__ = [
    "FlinkCheckpointOptions",
    "PurgeOptions",
    "validate_purge_options",
    "RtbfOptions",
    "Locations",
    "locations",
    "DEFAULT_SESSIONS",
    "DEFAULT_REQUESTS",
    "validate_options",
    "resolve_paths",
    "subject_key_file",
    "PURGE_READS",
    "ViewCachingOptions",
    "with_cached_views",
]


class ViewCachingOptions(PipelineOptions):
    """PipelineOptions whose views are built once per options class.

    Beam's ``view_as`` builds an argument parser for the class and parses the flags again on
    every call, and graph construction calls it hundreds of times (type checks call
    ``view_as(TypeOptions)`` per transform and per type comparison): a tenth of a second of a
    small job's fixed cost. A view holds no values of its own (they live in the ``_all_options``
    dict every view shares), so handing out the same view object again changes nothing a
    caller can see. Copies and pickles start with no cached views.
    """

    def view_as(self, cls):
        views = self.__dict__.get("_views")
        if views is None:
            views = {}
            object.__setattr__(self, "_views", views)
        view = views.get(cls)
        if view is None:
            view = views[cls] = super().view_as(cls)
        return view

    def __getstate__(self):
        return {k: v for k, v in super().__getstate__().items() if k != "_views"}


def with_cached_views(options: PipelineOptions) -> ViewCachingOptions:
    """``options`` as ViewCachingOptions sharing its flags and values (set before or after)."""
    if isinstance(options, ViewCachingOptions):
        return options
    cached = ViewCachingOptions(options._flags)
    cached._all_options = options._all_options  # the same dict: a value set through either is seen by both
    return cached


# Where each kind of output goes: OUTPUT/<kind> unless --<kind>_dir says otherwise (separate
# buckets in production: the archive and dead letters hold personal data, analytics do not).
LOCATION_KINDS = ("analytics", "archive", "manifests", "deadletter", "receipts", "audit")


@dataclasses.dataclass(frozen=True)
class Locations:
    analytics: str
    archive: str
    manifests: str
    deadletter: str
    receipts: str
    audit: str


def locations(options: PipelineOptions) -> Locations:
    from beam_rtbf.sinks.files import join

    opts = options.view_as(RtbfOptions)
    return Locations(**{k: getattr(opts, f"{k}_dir") or join(opts.output, k) for k in LOCATION_KINDS})


DEFAULT_SESSIONS = "synthetic://sessions?users=100000&sessions=1000000&seed=1&bad_rate=0.0001"
DEFAULT_REQUESTS = "synthetic://requests?users=100000&requests=1000&seed=1"
NO_REQUESTS = "synthetic://requests?users=1&requests=0"  # an empty bounded requests input

# The RtbfOptions a purge reads (where the outputs and the registry are; window and stream
# retention for the manifests it builds itself): ``beam-rtbf purge`` accepts these and no others.
PURGE_READS = frozenset(
    {"output", "output_mode", "registry", "state_dir", "window_s", "stream_retention_s", "analytics_sink"}
    | {f"{kind}_dir" for kind in LOCATION_KINDS}
)


class RtbfOptions(PipelineOptions):
    @classmethod
    def _add_argparse_args(cls, parser) -> None:
        sources = parser.add_argument_group("sources")
        outputs = parser.add_argument_group("outputs")
        registry = parser.add_argument_group("registry")
        filtering = parser.add_argument_group("filter")
        analytics = parser.add_argument_group("analytics and manifests")
        streaming = parser.add_argument_group("streaming")
        sources.add_argument(
            "--sessions",
            default=DEFAULT_SESSIONS,
            help="Sessions source URI: file://GLOB (jsonl/csv/tsv) or synthetic://sessions?... "
            "(default: a generated bounded run)",
        )
        sources.add_argument(
            "--requests",
            default=None,
            help="Erasure-requests source URI (a dedicated stream, or a shared event stream with --request_tag_field); "
            "default: generated requests with the generated default sessions, none with any other --sessions "
            "(made-up requests must never reach a real registry)",
        )
        outputs.add_argument(
            "--output",
            default="./rtbf-out",
            help="Output directory on any Beam filesystem: analytics/, archive/, manifests/, "
            "deadletter/ and summary.json",
        )
        for kind in LOCATION_KINDS:
            outputs.add_argument(f"--{kind}_dir", default=None, help=f"{kind}/ elsewhere than OUTPUT/{kind}")
        outputs.add_argument(
            "--analytics_sink",
            default=None,
            help="Also write the analytics to PostgreSQL (15+): postgresql://[USER@]HOST[:PORT]/DB?table=NAME "
            "(default table rtbf_analytics, created and migrated by beam-rtbf; other parameters are libpq's, "
            "e.g. sslmode, service). The password comes from $RTBF_POSTGRES_PASSWORD or libpq (service file, "
            "~/.pgpass), never from the URI. purge: the table for manifests it builds itself (default: the "
            "last run's)",
        )
        outputs.add_argument("--output_mode", default="owner", choices=sorted(OUTPUT_MODES), help=OUTPUT_MODE_HELP)
        registry.add_argument(
            "--registry",
            default=None,
            help="Deletion registry URL: embedded://PATH (SQLite file, no server) or redis[s]://HOST:PORT/DB "
            "(default: embedded://STATE_DIR/registry.sqlite)",
        )
        registry.add_argument(
            "--state_dir",
            default=None,
            help="Local folder for the embedded registry and the subject-hash key file (default: OUTPUT/_state "
            "when OUTPUT is local; give it, or --registry and $RTBF_SUBJECT_HASH_KEY, for an object-store OUTPUT)",
        )
        filtering.add_argument(
            "--filter_strategy",
            default="auto",
            choices=STRATEGIES,
            help="broadcast: the deletion set as a side input; lookup: one registry query per batch; "
            "bloom: a Bloom filter side input, positives confirmed by the registry; state: requests "
            "joined with sessions in keyed state; auto: chosen by deletion-set size and runner "
            "(the run summary says what and why)",
        )
        analytics.add_argument("--window_s", type=int, default=60, help="Analytics window length in seconds")
        analytics.add_argument(
            "--allowed_lateness_s",
            type=int,
            default=0,
            help="How late (behind the watermark) a session may be and still count in analytics",
        )
        outputs.add_argument(
            "--archive_partition_s",
            type=int,
            default=3600,
            help="Archive partition length in seconds (3600: dt=/hour= folders)",
        )
        outputs.add_argument(
            "--archive_flush_s",
            type=int,
            default=None,
            help="Streaming: gather archive rows per partition for this many seconds of processing time, "
            "then write one file per partition and writer (fewer, larger files, so a manifest's lookup and "
            "the purge read fewer); 0: a file per partition per bundle. Default: 5 on the local streaming "
            "runner, 1 with exactly-once outputs (which always gather), else 0",
        )
        sources.add_argument(
            "--request_tag_field",
            default=None,
            help="On a shared event stream: the field naming the event type. Unset: every "
            "record on --requests is an erasure request",
        )
        sources.add_argument(
            "--request_tag_values",
            default="erasure_request",
            help="Comma-separated event types that are erasure requests",
        )
        sources.add_argument(
            "--request_payload_field",
            default=None,
            help="On a shared stream: field holding the request object, if nested",
        )
        sources.add_argument(
            "--max_record_bytes",
            type=int,
            default=DEFAULT_MAX_RECORD_BYTES,
            help="Records longer than this are dead-lettered as oversize",
        )
        filtering.add_argument(
            "--state_shards", type=int, default=4, help="state strategy: number of keys sessions are sharded over"
        )
        streaming.add_argument(
            "--read_trace",
            default=None,
            help="Diagnostics: a local file each shard reader appends one JSON line to per call that read "
            "records (process, reader, shard, rows, times): who read what, e.g. across Flink task slots",
        )
        streaming.add_argument(
            "--read_call_s",
            type=float,
            default=1.0,
            help="Streaming reads on portable runners (Flink): each splittable-DoFn call polls at least this "
            "long before deferring; fewer deferred residuals, which Beam's Flink runner keeps in every "
            "checkpoint (apache/beam#27648). 0: defer after the first empty poll (or, with --read_gather_s, "
            "after the first poll). The requests read ends its call as soon as it read a request",
        )
        streaming.add_argument(
            "--read_gather_s",
            type=float,
            default=0.25,
            help="Streaming sessions reads on portable runners (Flink): the pause after a poll that read "
            "something, within a --read_call_s call (whose outputs leave its stage when it ends anyway): "
            "fewer, bigger batches. 0: poll back to back while data flows",
        )
        streaming.add_argument(
            "--refresh_interval_s",
            type=float,
            default=1.0,
            help="Streaming: how often the deletion set fetches the registry delta",
        )
        streaming.add_argument(
            "--refresh_ticks",
            default="sessions",
            choices=["sessions", "periodic_impulse"],
            help="Streaming broadcast/bloom: what times the registry refreshes. sessions (default): a timer "
            "every --refresh_interval_s while the sessions stream runs, so the job ends with its sources; "
            "periodic_impulse: Beam's PeriodicImpulse, which never ends (stop the job with a signal)",
        )
        streaming.add_argument(
            "--max_staleness_s",
            type=float,
            default=30.0,
            help="Streaming: a deletion set older than this holds sessions back (fail closed)",
        )
        filtering.add_argument(
            "--dedupe",
            default="auto",
            choices=["auto", "on", "off"],
            help="Drop sessions whose event_id was seen before (at-least-once sources redeliver); "
            "auto: on for streaming runs, off for bounded replays",
        )
        filtering.add_argument(
            "--dedupe_max_ids",
            type=int,
            default=2_000_000,
            help="Dedupe remembers at least this many recent event ids per shard, at most twice as many (8 bytes each)",
        )
        registry.add_argument(
            "--registry_retry_s",
            type=float,
            default=120.0,
            help="How long a step waits for an unreachable registry (retrying with backoff) before it "
            "fails its bundle; sessions are never passed unfiltered meanwhile",
        )
        filtering.add_argument(
            "--broadcast_max_subjects",
            type=int,
            default=20_000_000,
            help="auto: above this many forgotten ids, use bloom (bounded) or lookup (streaming) "
            "instead of broadcasting the exact set (8 bytes per id)",
        )
        streaming.add_argument(
            "--detach",
            action="store_true",
            default=False,
            help="Return once a cluster runner has accepted the job (a streaming job on Flink runs "
            "until cancelled); the job's figures are then in the runner's metrics, not summary.json",
        )
        outputs.add_argument(
            "--append",
            action="store_true",
            default=False,
            help="Bounded runs: add this input's data to an output that already committed a run of the "
            "same input (counts add up). Without it, re-running a committed input is a no-op",
        )
        analytics.add_argument(
            "--stream_retention_s",
            type=int,
            default=7 * 86_400,
            help="Retention of the raw input streams, for the manifests' stream entries",
        )


def _is_local(path: str) -> bool:
    scheme = urlparse(path).scheme
    return scheme in ("", "file") or (len(scheme) == 1 and os.name == "nt")


def _absolute(path: str) -> str:
    if path.startswith("file://"):
        path = path[len("file://") :]
    return os.path.abspath(os.path.expanduser(path))


def resolve_paths(options: PipelineOptions) -> None:
    """Make every local location absolute, fill in the state dir, default registry and requests, in place.

    Nothing then depends on the working directory: not the workers', not a later purge's.
    Stored paths (index, manifests, receipts) are relative to these roots, so the output
    folder can also be moved.
    """
    opts = options.view_as(RtbfOptions)
    if opts.requests is None:
        opts.requests = DEFAULT_REQUESTS if opts.sessions == DEFAULT_SESSIONS else NO_REQUESTS
    if _is_local(opts.output):
        opts.output = _absolute(opts.output)
    for kind in LOCATION_KINDS:
        value = getattr(opts, f"{kind}_dir")
        if value and _is_local(value):
            setattr(opts, f"{kind}_dir", _absolute(value))
    if opts.state_dir:
        if not _is_local(opts.state_dir):
            raise ValueError(f"--state_dir must be a local folder, not {opts.state_dir!r}")
        opts.state_dir = _absolute(opts.state_dir)
    elif _is_local(opts.output):
        opts.state_dir = os.path.join(opts.output, "_state")
    if not opts.registry:
        if not opts.state_dir:
            raise ValueError(
                f"--output {opts.output} is not a local folder: give --registry (e.g. redis://HOST:6379/0) "
                "or a local --state_dir for the embedded registry"
            )
        opts.registry = f"embedded://{os.path.join(opts.state_dir, 'registry.sqlite')}"
    elif opts.registry.startswith("embedded://"):
        opts.registry = "embedded://" + _absolute(opts.registry[len("embedded://") :])


def subject_key_file(options: PipelineOptions) -> str | None:
    """The local file holding the subject-hash key when ``$RTBF_SUBJECT_HASH_KEY`` is not set."""
    state_dir = options.view_as(RtbfOptions).state_dir
    return os.path.join(state_dir, "subject-hash.key") if state_dir else None


def validate_options(opts: RtbfOptions) -> None:
    """Fail before building anything, with a message that says how to fix it."""
    problems = []
    if opts.window_s < 1:
        problems.append("--window_s must be >= 1")
    if opts.archive_partition_s < 1:
        problems.append("--archive_partition_s must be >= 1")
    if opts.archive_flush_s is not None and opts.archive_flush_s < 0:
        problems.append("--archive_flush_s must be >= 0")
    if opts.allowed_lateness_s < 0:
        problems.append("--allowed_lateness_s must be >= 0")
    if opts.state_shards < 1:
        problems.append("--state_shards must be >= 1")
    if opts.refresh_interval_s <= 0 or opts.max_staleness_s <= 0:
        problems.append("--refresh_interval_s and --max_staleness_s must be > 0")
    if opts.max_staleness_s < opts.refresh_interval_s:
        problems.append("--max_staleness_s must be at least --refresh_interval_s")
    if opts.registry_retry_s < 0:
        problems.append("--registry_retry_s must be >= 0")
    if opts.max_record_bytes < 64:
        problems.append("--max_record_bytes must be >= 64")
    problems += analytics_sink_problems(opts)
    if problems:
        raise ValueError("invalid options: " + "; ".join(problems))


def analytics_sink_problems(opts: RtbfOptions) -> list[str]:
    """What is wrong with ``--analytics_sink`` (nothing when unset): run and purge check it alike."""
    if not opts.analytics_sink:
        return []
    from beam_rtbf.sinks.postgres import parse_sink

    try:
        parse_sink(opts.analytics_sink)
    except ValueError as exc:
        return [str(exc)]
    return []


class PurgeOptions(PipelineOptions):
    @classmethod
    def _add_argparse_args(cls, parser) -> None:
        # --output, the --<kind>_dir locations and --registry are RtbfOptions'.
        group = parser.add_argument_group("beam-rtbf purge")
        group.add_argument("--request_ids", default="", help="Comma-separated request ids (default: all pending)")
        group.add_argument(
            "--max_partition_share",
            type=float,
            default=0.5,
            help="Blast-radius guard: stop if a partition would lose more than this share of its records",
        )
        group.add_argument(
            "--max_total_share",
            type=float,
            default=0.05,
            help="Blast-radius guard: stop if the archive would lose more than this share of all records",
        )
        group.add_argument(
            "--guard_min_partition_records",
            type=int,
            default=100,
            help="Partitions smaller than this are judged by the archive-wide share only",
        )
        group.add_argument("--confirm", action="store_true", help="Purge even if the blast-radius guard objects")
        group.add_argument("--full_scan", action="store_true", help="Scan every archive file, not just indexed ones")
        group.add_argument(
            "--keep_old_versions",
            action="store_true",
            help="Do not delete noncurrent object versions of rewritten files (rely on a lifecycle rule)",
        )
        group.add_argument(
            "--one_step_max_files",
            type=int,
            default=64,
            help="A plan of at most this many files (and no --erasure_api_url) runs as one Beam step, "
            "without the wide graph's fixed cost (~0.7 s locally); 0: always the wide graph",
        )
        group.add_argument("--erasure_api_url", default="", help="HTTPS API to call per request (token from env)")
        group.add_argument("--erasure_api_action", default="delete", choices=("delete", "anonymize"))
        group.add_argument("--erasure_api_rate_per_s", type=float, default=10.0)
        group.add_argument("--erasure_api_max_attempts", type=int, default=6)


def validate_purge_options(opts: PurgeOptions) -> None:
    """Fail before planning anything, with a message that says how to fix it."""
    problems = analytics_sink_problems(opts.view_as(RtbfOptions))
    for name in ("max_partition_share", "max_total_share"):
        if not 0 < getattr(opts, name) <= 1:
            problems.append(f"--{name} must be in (0, 1]")
    if opts.guard_min_partition_records < 0:
        problems.append("--guard_min_partition_records must be >= 0")
    if opts.one_step_max_files < 0:
        problems.append("--one_step_max_files must be >= 0")
    if opts.erasure_api_url:
        from beam_rtbf.purge.api_sink import TOKEN_ENV, check_api_url

        try:
            check_api_url(opts.erasure_api_url)
        except ValueError as exc:
            problems.append(str(exc))
        if not os.environ.get(TOKEN_ENV):
            problems.append(f"--erasure_api_url needs a bearer token in ${TOKEN_ENV}")
        if opts.erasure_api_rate_per_s <= 0:
            problems.append("--erasure_api_rate_per_s must be > 0")
        if opts.erasure_api_max_attempts < 1:
            problems.append("--erasure_api_max_attempts must be >= 1")
    if problems:
        raise ValueError("; ".join(problems))


class FlinkCheckpointOptions(PipelineOptions):
    """Checkpoints and restore for Flink run by a job server (flink-local, or your own job server).

    These are Beam's Java FlinkPipelineOptions by the same names. Python has no class for them,
    and the portable runner sends the job server only the options Python knows: declared here,
    they reach Flink. (A Flink cluster configured by its operator, the ``flink`` profile, sets
    checkpointing in its own configuration instead.) ``--stop_with``, ``--savepoint_dir`` and
    ``--exactly_once_outputs`` are beam-rtbf's own: how a run stops and how its files are written.
    """

    def exactly_once(self, streaming: bool) -> bool:
        """Whether the outputs are written once per checkpoint (``sinks/stable.py``)."""
        if self.exactly_once_outputs == "auto":
            return streaming and self.checkpointing_interval is not None
        return streaming and self.exactly_once_outputs == "on"  # a bounded run has its run ledger

    @classmethod
    def _add_argparse_args(cls, parser) -> None:
        group = parser.add_argument_group("Flink checkpoints (job server runs)")
        group.add_argument(
            "--checkpointing_interval", type=int, default=None,
            help="Take a checkpoint every this many milliseconds (default: none, no checkpoints)",
        )  # fmt: skip
        group.add_argument(
            "--state_backend", choices=("filesystem", "rocksdb"), default=None,
            help="Where keyed state lives between checkpoints (rocksdb needs its jar on the job server)",
        )  # fmt: skip
        group.add_argument(
            "--state_backend_storage_path", default=None,
            help="Directory URI the checkpoints are written to (e.g. file:///var/rtbf/checkpoints)",
        )  # fmt: skip
        group.add_argument(
            "--retain_externalized_checkpoints_on_cancellation", action="store_true", default=False,
            help="Keep the last checkpoint when the job is cancelled, to resume from it with --savepoint_path",
        )  # fmt: skip
        group.add_argument(
            "--shutdown_sources_after_idle_ms", type=int, default=None,
            help="End the job this long after every source ended (with checkpoints Flink's default is never)",
        )  # fmt: skip
        group.add_argument(
            "--max_bundle_time_mills", type=int, default=None,
            help="Close a bundle after this many milliseconds (Flink's default 1000): lower, less latency",
        )  # fmt: skip
        group.add_argument(
            "--max_bundle_size", type=int, default=None,
            help="Close a bundle after this many elements (Flink's default 1000)",
        )  # fmt: skip
        group.add_argument(
            "--savepoint_path", default=None,
            help="Start from this savepoint or retained checkpoint (its _metadata's directory)",
        )  # fmt: skip
        group.add_argument(
            "--flink_conf_dir", default=None,
            help="A Flink configuration directory for the job (flink-local adds its REST port and restore path)",
        )  # fmt: skip
        group.add_argument(
            "--stop_with", choices=("savepoint", "cancel"), default="savepoint",
            help="What the first Ctrl-C/SIGTERM does to a flink-local streaming job with checkpoints: stop it with "
            "a savepoint (default) or cancel it (its last checkpoint is kept with "
            "--retain_externalized_checkpoints_on_cancellation); either is printed as the path to resume from",
        )  # fmt: skip
        group.add_argument(
            "--savepoint_dir", default=None,
            help="Where --stop_with=savepoint writes (default: STATE_BACKEND_STORAGE_PATH/savepoints)",
        )  # fmt: skip
        group.add_argument(
            "--exactly_once_outputs", choices=("auto", "on", "off"), default="auto",
            help="Archive, analytics and dead letters written once per checkpoint, under names that a replay "
            "overwrites, so a resume from a checkpoint or savepoint duplicates nothing (auto: on when "
            "--checkpointing_interval is set). Outputs then appear after the checkpoint that covers them",
        )  # fmt: skip
        group.add_argument(
            "--finish_bundle_before_checkpointing", action="store_true", default=False,
            help="Finish bundles before a checkpoint barrier instead of holding their outputs in the checkpoint "
            "(set when checkpoints are on: Beam 2.62 restores held outputs of a multi-output stage to the "
            "wrong output)",
        )  # fmt: skip
        group.add_argument(
            "--enable_stable_input_drain", action="store_true", default=False,
            help="Let a job whose sources end write what it held for its next checkpoint (set with exactly-once outputs)",
        )  # fmt: skip
