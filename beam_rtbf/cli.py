"""The ``beam-rtbf`` command.

beam-rtbf run                                   # embedded default: generated data, SQLite registry
beam-rtbf run --sessions 'file:///d/*.jsonl' --requests file:///d/requests.jsonl --output out
beam-rtbf run --config job.yaml                 # options from YAML; flags on the command line win
beam-rtbf run --runner flink --tf_outputs tf.json --dry-run   # a runner profile: final options + submit command
beam-rtbf purge --output out                    # erase what the manifests name, write receipts
beam-rtbf generate --out data --sessions 1000000 --users 100000 --requests 1000
beam-rtbf forget u0000042 --regulation ccpa     # submit an erasure request to the registry
beam-rtbf status [REQUEST_ID]                   # a request's timeline, or all requests by deadline
beam-rtbf dashboard --output out                # read-only web view: analytics, runs, requests, receipts

-v/--verbose and --registry may come before or after the command. Options are spelled with
- or _ alike; an unknown one is refused (exit 2) before anything runs.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import logging
import os
import signal
import sys
import threading
import uuid
from collections.abc import Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from beam_rtbf.flags import (
    JOB_GROUP,
    Parser,
    PipelineFlag,
    UsageError,
    add_pipeline_flags,
    flag_key,
    pipeline_options_classes,
)
from beam_rtbf.records import ErasureRequest, iso_ms, now_ms
from beam_rtbf.redact import MaskSecretsFilter, mask_secrets
from beam_rtbf.registry.base import RegistryUnavailable

if TYPE_CHECKING:
    from beam_rtbf.jobspec import JobSpec
    from beam_rtbf.local_runner import StopRequest

__all__ = ["main", "job_spec"]

_LOGGER = logging.getLogger("beam_rtbf")
JOB_COMMANDS = ("run", "purge")


class UnusedCloudClients(logging.Filter):
    """Beam warns at import that the GCS and BigQuery clients are missing; beam-rtbf uses neither."""

    _NOISE = ("Failed to import GCSFileSystem", "apitools not found")

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith(self._NOISE)


def _configure_logging(verbose: bool) -> None:
    """Log to stderr, every record's secrets masked; Beam's unused-client warnings silenced.

    Called by ``main`` (never at import), as often as it likes: nothing is added twice.
    """
    for name in ("", "apache_beam.io.filesystems"):  # the loggers those two warnings are made on
        logger = logging.getLogger(name)
        if not any(isinstance(f, UnusedCloudClients) for f in logger.filters):
            logger.addFilter(UnusedCloudClients())
    logging.basicConfig(
        level=logging.INFO if verbose else logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    for handler in logging.getLogger().handlers:
        if not any(isinstance(f, MaskSecretsFilter) for f in handler.filters):
            handler.addFilter(MaskSecretsFilter())


@contextlib.contextmanager
def _stop_on_signals() -> Iterator[StopRequest]:
    """SIGINT/SIGTERM end a local streaming run cleanly; a second one aborts at once.

    First signal: the reads stop, the pipeline drains (windows close, archive and analytics
    are flushed, the sources checkpoint) and the summary is written; exit 0. A second signal
    while draining, or a signal during a run that cannot stop this way (bounded runs, cluster
    runners), gets the signal's default action: exit 130 (SIGINT) / 143 (SIGTERM).
    """
    from beam_rtbf.local_runner import StopRequest

    stop = StopRequest()
    watched = (signal.SIGINT, signal.SIGTERM)
    if threading.current_thread() is not threading.main_thread():  # signals reach the main thread only
        yield stop
        return

    def handle(signum: int, _frame) -> None:
        name = signal.Signals(signum).name
        if stop.armed and not stop.requested:
            _LOGGER.warning("%s: %s (send %s again to abort at once)", name, stop.action, name)
            stop.stop(name)
            return
        for sig in watched:
            signal.signal(sig, signal.SIG_DFL)
        os.kill(os.getpid(), signum)

    previous = {sig: signal.signal(sig, handle) for sig in watched}
    try:
        yield stop
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def cmd_generate_to(args: argparse.Namespace) -> int:
    """Load a stream: generated sessions (and requests) written with batched puts at ``--rate``."""
    from beam_rtbf.generate import batch_to_jsonl
    from beam_rtbf.records import RawBatch
    from beam_rtbf.sinks.streams import lines_and_keys, write_at_rate, writer_for
    from beam_rtbf.sources.synthetic import SyntheticConfig, planned_requests, request_lines, session_batches

    cfg = SyntheticConfig(
        users=args.users,
        sessions=args.sessions,
        requests=args.requests,
        seed=args.seed,
        bad_rate=args.bad_rate,
        span_s=args.span_s,
        shards=1,
        batch_rows=5_000,
    )
    cfg.validate("beam-rtbf generate")
    report = {}
    if args.to:

        def batches():
            for element in session_batches(cfg, 0):
                if isinstance(element, RawBatch):
                    lines = element.data.splitlines()
                    yield lines, [f"bad-{i}" for i in range(len(lines))]
                else:
                    yield from lines_and_keys(batch_to_jsonl(element), element.column("user_id"))

        report["sessions"] = write_at_rate(writer_for(args.to), batches(), args.rate)
    if args.requests_to:
        requests = planned_requests(cfg)
        lines = request_lines(requests).splitlines()
        report["requests"] = write_at_rate(
            writer_for(args.requests_to), [(lines, [r.subject_id for r in requests])], None
        )
    print(json.dumps(report, indent=2))
    return 0


def cmd_generate(args: argparse.Namespace) -> int:
    from beam_rtbf.generate import generate_files
    from beam_rtbf.sources.synthetic import SyntheticConfig

    if args.to or args.requests_to:
        return cmd_generate_to(args)
    if not args.out:
        raise ValueError("generate needs --out DIR (files) or --to URI (a stream)")
    cfg = SyntheticConfig(
        users=args.users,
        sessions=args.sessions,
        requests=args.requests,
        seed=args.seed,
        bad_rate=args.bad_rate,
        span_s=args.span_s,
    )
    cfg.validate("beam-rtbf generate")
    result = generate_files(cfg, args.out, args.format, args.files)
    print(
        json.dumps(
            {
                "session_files": result.session_files,
                "requests_file": result.requests_file,
                "sessions": result.sessions,
                "bad_records": result.bad_records,
                "requests": result.requests,
            },
            indent=2,
        )
    )
    return 0


def _state_options(args: argparse.Namespace):
    """--output/--state_dir/--registry resolved as run and purge resolve them (registry under OUTPUT/_state)."""
    from apache_beam.options.pipeline_options import PipelineOptions

    from beam_rtbf.options import resolve_paths

    flags = [f"--output={args.output}"]
    flags += [f"--state_dir={args.state_dir}"] if args.state_dir else []
    flags += [f"--registry={args.registry}"] if getattr(args, "registry", None) else []
    options = PipelineOptions(flags)
    resolve_paths(options)
    return options


def _registry_url(args: argparse.Namespace) -> str:
    from beam_rtbf.options import RtbfOptions

    return _state_options(args).view_as(RtbfOptions).registry


def cmd_forget(args: argparse.Namespace) -> int:
    from beam_rtbf.registry import open_registry
    from beam_rtbf.registry.record import is_conflict
    from beam_rtbf.sinks.files import output_mode

    request = ErasureRequest.from_dict(
        {
            "request_id": args.request_id or f"cli-{uuid.uuid4().hex[:12]}",
            "subject_id": args.subject,
            "requested_at": now_ms(),
            "regulation": args.regulation,
            "aliases": list(args.alias),
        }
    )
    with output_mode(args.output_mode), open_registry(_registry_url(args)) as registry:
        (accepted,) = registry.add([request])
    if is_conflict(request, accepted):
        print(
            f"beam-rtbf: request id {request.request_id!r} is already registered for a different subject; "
            "nothing was recorded (use another request id)",
            file=sys.stderr,
        )
        return 2
    print(
        json.dumps(
            {
                "request_id": accepted.request.request_id,
                "subject_ids": list(accepted.request.subject_ids),
                "accepted_at": iso_ms(accepted.accepted_at_ms),
                "registry_version": accepted.version,
                "duplicate": accepted.duplicate,
                "deadline": iso_ms(accepted.request.deadline_ms),
            },
            indent=2,
        )
    )
    return 0


def _with_hashed_ids(request: dict, args: argparse.Namespace) -> dict:
    """A verified request's ids as the receipts show them: keyed hashes, never the erased ids."""
    from beam_rtbf.options import subject_key_file
    from beam_rtbf.purge.hashing import SubjectHasher

    hasher = SubjectHasher(key_file=subject_key_file(_state_options(args)))
    out = {k: v for k, v in request.items() if k not in ("subject_id", "aliases")}
    out["subject_hash"] = hasher.hash(request["subject_id"])
    out["alias_hashes"] = [hasher.hash(alias) for alias in request["aliases"]]
    return out


def cmd_status(args: argparse.Namespace) -> int:
    from beam_rtbf.registry import open_registry

    url = _registry_url(args)
    with open_registry(url) as registry:
        if args.request_id:
            accepted = registry.get_request(args.request_id)
            if accepted is None:
                print(f"beam-rtbf: no request {args.request_id!r} in {url}", file=sys.stderr)
                return 1
            timeline = registry.timeline(args.request_id)
            request = accepted.request.to_dict()
            if any(e.status == "verified" for e in timeline):
                request = _with_hashed_ids(request, args)
            print(
                json.dumps(
                    {
                        "request": request,
                        "deadline": iso_ms(accepted.request.deadline_ms),
                        "timeline": [{"status": e.status, "at": iso_ms(e.at_ms), "detail": e.detail} for e in timeline],
                    },
                    indent=2,
                )
            )
            return 0
        now = now_ms()
        # Earliest deadline first: overdue requests (deadline passed) come before all others.
        rows = sorted(registry.requests(), key=lambda a: a.request.deadline_ms)
        shown = 0
        for accepted in rows:
            steps = [e.status for e in registry.timeline(accepted.request.request_id)]
            status = "verified" if "verified" in steps else steps[-1]  # a late step does not reopen it
            if status == "verified" and not args.all:
                continue
            days_left = (accepted.request.deadline_ms - now) / 86_400_000
            if status == "verified":
                flag = "done"
            else:
                flag = f"OVERDUE by {-days_left:.1f} days" if days_left < 0 else f"{days_left:.1f} days left"
            print(
                f"{accepted.request.request_id}\t{accepted.request.regulation}\t{status}\t"
                f"deadline {iso_ms(accepted.request.deadline_ms)}\t{flag}"
            )
            shown += 1
        if not shown:
            print("no open requests" if not args.all else "no requests")
    return 0


def cmd_dashboard(args: argparse.Namespace) -> int:
    """Serve the read-only dashboard of ``--output`` (its registry and key resolved as status finds them)."""
    from pathlib import Path

    from beam_rtbf.dashboard.app import DashboardConfig
    from beam_rtbf.dashboard.serve import serve
    from beam_rtbf.options import RtbfOptions, subject_key_file

    if "://" in args.output and not args.output.startswith("file://"):
        raise UsageError(f"--output {args.output}: the dashboard reads a local output folder")
    options = _state_options(args)
    config = DashboardConfig(
        output=Path(options.view_as(RtbfOptions).output),
        registry_url=options.view_as(RtbfOptions).registry,
        key_file=subject_key_file(options),
        analytics_url=args.analytics,
    )
    return serve(config, args.host, args.port)


# -- parsers -------------------------------------------------------------------------------------

_RUNNER_HELP = (
    "direct|flink|spark|portable|prism: a runner profile (beam_rtbf/profiles/NAME.yaml: the runner and its "
    "options); any other value is a Beam runner (FlinkRunner, SparkRunner, PortableRunner...). "
    "Without it: the local runners"
)
_PURGE_GROUP = "purge: which requests, blast-radius guard, erasure API"


@dataclasses.dataclass(frozen=True)
class _JobParser:
    """A run/purge parser and the pipeline options it knows (dest -> flag)."""

    parser: Parser
    flags: dict[str, PipelineFlag]


def _add_global_flags(parser: argparse.ArgumentParser, registry: bool = True) -> None:
    """-v and --registry after the command; SUPPRESS keeps a value given before it."""
    parser.add_argument("-v", "--verbose", action="store_true", default=argparse.SUPPRESS, help="log progress (INFO)")
    if registry:
        parser.add_argument(
            "--registry",
            default=argparse.SUPPRESS,
            help="deletion registry URL (default: embedded://STATE_DIR/registry.sqlite)",
        )


def _add_job_parser(sub: Any, command: str, help_text: str) -> _JobParser:
    """run/purge: the job-spec flags, then every PipelineOptions option the command reads."""
    from beam_rtbf.options import PURGE_READS, PurgeOptions, RtbfOptions

    parser = sub.add_parser(command, help=help_text, description=help_text, usage=f"beam-rtbf {command} [options]")
    _add_global_flags(parser, registry=False)  # --registry is RtbfOptions'
    job = parser.add_argument_group(JOB_GROUP)
    job.add_argument(
        "--config", metavar="FILE", help="options from YAML (runner, options: {name: value}); the command line wins"
    )
    job.add_argument("--profile", metavar="FILE", help="a runner profile file of one's own (same YAML as --config)")
    job.add_argument(
        "--tf_outputs", metavar="FILE", help="`terraform output -json` for the ${tf.NAME} placeholders of the YAML"
    )
    job.add_argument(
        "--dry-run",
        action="store_true",
        help="print every option with its source, the submission command and the next step; run nothing",
    )
    groups: dict[str, Any] = {JOB_GROUP: job}
    order = ["sources", "outputs", "registry", "filter", "analytics and manifests", "streaming"]
    for title in order if command == "run" else ["outputs", "registry", _PURGE_GROUP, "analytics and manifests"]:
        groups[title] = parser.add_argument_group(title)

    def accept(dest: str, cls: type) -> bool:
        if cls is RtbfOptions:
            return command == "run" or dest in PURGE_READS
        return cls is not PurgeOptions or command == "purge"

    flags = add_pipeline_flags(
        parser,
        pipeline_options_classes(),
        accept=accept,
        group_titles={"beam-rtbf purge": _PURGE_GROUP},
        groups=groups,
        help_overrides={"runner": _RUNNER_HELP},
        hidden=() if command == "run" else ("streaming",),
    )
    return _JobParser(parser, flags)


def _add_registry_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--output", default="./rtbf-out", help="the run's output folder (its _state/ holds the registry)"
    )
    parser.add_argument("--state_dir", default=None, help="local state folder (default OUTPUT/_state)")


def _parser() -> tuple[Parser, dict[str, argparse.ArgumentParser], dict[str, _JobParser]]:
    """The beam-rtbf parser, its subcommand parsers, and the run/purge ones with their options."""
    from beam_rtbf.sinks.files import OUTPUT_MODE_HELP, OUTPUT_MODES

    parser = Parser(prog="beam-rtbf", description=__doc__)
    parser.add_argument("-v", "--verbose", action="store_true", default=False, help="log progress (INFO)")
    parser.add_argument("--registry", default=argparse.SUPPRESS, help="deletion registry URL, for any command")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND", parser_class=Parser)
    jobs = {
        "run": _add_job_parser(sub, "run", "run the pipeline: sources -> filter -> analytics, archive, manifests"),
        "purge": _add_job_parser(sub, "purge", "erase history from pending manifests and write receipts"),
    }

    gen = sub.add_parser("generate", help="write generated sessions and requests to files or a stream")
    _add_global_flags(gen, registry=False)
    gen.add_argument("--out", help="output folder for files")
    gen.add_argument("--to", help="write sessions to a stream: kinesis://..., kafka://..., pubsub://...")
    gen.add_argument("--requests-to", help="write the requests to a stream")
    gen.add_argument("--rate", type=float, default=None, help="sessions per second when writing to a stream")
    gen.add_argument("--sessions", type=int, default=1_000_000, help="sessions to generate")
    gen.add_argument("--users", type=int, default=100_000, help="distinct users")
    gen.add_argument("--requests", type=int, default=1_000, help="erasure requests")
    gen.add_argument("--seed", type=int, default=1, help="random seed")
    gen.add_argument("--bad-rate", type=float, default=0.0, help="share of extra malformed records")
    gen.add_argument("--span-s", type=int, default=86_400, help="event times spread over this many seconds")
    gen.add_argument("--format", choices=["jsonl", "csv", "tsv"], default="jsonl", help="file format")
    gen.add_argument("--files", type=int, default=1, help="number of session files")

    forget = sub.add_parser("forget", help="submit an erasure request for SUBJECT")
    _add_global_flags(forget)
    forget.add_argument("subject", help="the subject's id")
    forget.add_argument("--alias", action="append", default=[], help="another id of the subject (email...)")
    forget.add_argument("--regulation", choices=["gdpr", "ccpa"], default="gdpr", help="the deadline's law")
    forget.add_argument("--request-id", default=None, help="idempotency key (default: generated)")
    _add_registry_flags(forget)
    forget.add_argument("--output-mode", choices=sorted(OUTPUT_MODES), default="owner", help=OUTPUT_MODE_HELP)

    status = sub.add_parser("status", help="one request's timeline, or open requests by deadline")
    _add_global_flags(status)
    status.add_argument("request_id", nargs="?", help="a request id (default: list the open requests)")
    status.add_argument("--all", action="store_true", help="also list requests already verified")
    _add_registry_flags(status)

    dashboard = sub.add_parser(
        "dashboard", help="a read-only web view of a run's output: analytics, runs, requests, receipts"
    )
    _add_global_flags(dashboard)
    _add_registry_flags(dashboard)
    dashboard.add_argument(
        "--analytics",
        metavar="URL",
        default=None,
        help="read analytics from postgresql://[USER@]HOST:PORT/DB?table=NAME (password from "
        "$RTBF_POSTGRES_PASSWORD; default table rtbf_analytics) instead of OUTPUT/analytics",
    )
    dashboard.add_argument(
        "--host",
        default="127.0.0.1",
        help="address to listen on; any non-loopback address needs $RTBF_DASHBOARD_TOKEN, which every "
        "request must then carry (?token=..., then a cookie; or an Authorization: Bearer header)",
    )
    dashboard.add_argument("--port", type=int, default=8050, help="TCP port (0: a free one, printed at start)")
    return parser, dict(sub.choices), jobs


# -- run and purge -------------------------------------------------------------------------------


def _spec(args: argparse.Namespace, jobs: dict[str, _JobParser], env: Mapping[str, str] | None = None) -> JobSpec:
    """The validated job spec of a parsed run/purge command line."""
    from beam_rtbf.jobspec import build_spec

    job = jobs[args.command]
    other = jobs["purge" if args.command == "run" else "run"]
    return build_spec(
        args.command,
        job.parser,
        job.flags,
        {dest: getattr(args, dest) for dest in job.flags if hasattr(args, dest)},
        config=args.config,
        profile=args.profile,
        tf_outputs=args.tf_outputs,
        dry_run=args.dry_run,
        ignorable=[flag_key(f.flag) for d, f in other.flags.items() if d not in job.flags],
        env=env,
    )


def job_spec(argv: Sequence[str], env: Mapping[str, str] | None = None) -> JobSpec:
    """The spec ``beam-rtbf run|purge ARGV...`` would run (``env`` fills ``${env.NAME}``); runs nothing.

    Raises UsageError (or ValueError) for what ``main`` reports as a user error.
    """
    parser, commands, jobs = _parser()
    args, extras = parser.parse_known_args(argv)
    if extras:
        raise commands[args.command].unknown(extras)
    if args.command not in JOB_COMMANDS:
        raise UsageError(f"{args.command} has no job spec (only {', '.join(JOB_COMMANDS)})")
    return _spec(args, jobs, env)


def cmd_job(args: argparse.Namespace, jobs: dict[str, _JobParser]) -> int:
    """run/purge: the job spec from flags, --config and the profile; printed (--dry-run) or executed."""
    from beam_rtbf.driver import execute

    spec = _spec(args, jobs)
    if spec.dry_run:
        print(spec.render_dry_run())
        return 0
    options = spec.pipeline_options()
    if args.command == "run":
        with _stop_on_signals() as stop:
            return execute("run", options, stop)
    return execute("purge", options)


def main(argv: Sequence[str] | None = None) -> int:
    """``beam-rtbf``; returns the exit status: 0 done, 1 a job's own failure, 2 a user error."""
    argv = list(sys.argv[1:] if argv is None else argv)
    _configure_logging("-v" in argv or "--verbose" in argv)
    prog = "beam-rtbf"
    try:
        parser, commands, jobs = _parser()
        args, extras = parser.parse_known_args(argv)
        prog = f"beam-rtbf {args.command}"
        if extras:
            raise commands[args.command].unknown(extras)
        if args.verbose:
            logging.getLogger().setLevel(logging.INFO)
        if args.command == "run":
            _LOGGER.setLevel(logging.INFO)
        if args.command in JOB_COMMANDS:
            return cmd_job(args, jobs)
        if args.command == "generate" and hasattr(args, "registry"):
            raise UsageError("--registry does not apply to generate")
        commands_run = {
            "generate": cmd_generate,
            "forget": cmd_forget,
            "status": cmd_status,
            "dashboard": cmd_dashboard,
        }
        return commands_run[args.command](args)
    except SystemExit as exc:  # --help, or a job's own refusal with its message
        if isinstance(exc.code, str):
            print(mask_secrets(exc.code), file=sys.stderr)
            return 2
        return exc.code or 0
    except UsageError as exc:
        print(f"{exc.prog or prog}: {mask_secrets(_one_line(exc))}", file=sys.stderr)
        return 2
    except BrokenPipeError:  # the reader went away (`beam-rtbf status | head`): stop quietly, as cat would
        sys.stdout = open(os.devnull, "w")  # noqa: SIM115 - Python flushes stdout at exit; nothing may fail then
        return 141
    except RegistryUnavailable as exc:
        text = _one_line(exc)
        if not text.startswith(_UNAVAILABLE):  # the run's bounded wait already says so, with how long it tried
            text = f"{_UNAVAILABLE}: {text}"
        print(f"{prog}: {mask_secrets(text)}", file=sys.stderr)
        return 2
    except (ValueError, OSError) as exc:
        print(f"{prog}: {mask_secrets(_one_line(exc))}", file=sys.stderr)
        return 2


_UNAVAILABLE = "deletion registry unavailable"


def _one_line(exc: BaseException) -> str:
    """An error's message on one line (OSError: its text and the file it names)."""
    if isinstance(exc, OSError) and exc.strerror:
        text = f"{exc.filename}: {exc.strerror}" if exc.filename else exc.strerror
    else:
        text = str(exc) or type(exc).__name__
    return " ".join(text.split())


if __name__ == "__main__":
    sys.exit(main())
