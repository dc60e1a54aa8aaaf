"""The ``beam-rtbf`` command.

beam-rtbf run                                   # embedded default: generated data, SQLite registry
beam-rtbf run --sessions 'file:///d/*.jsonl' --requests file:///d/requests.jsonl --output out
beam-rtbf run --config job.yaml                 # options from YAML; flags on the command line win
beam-rtbf generate --out data --sessions 1000000 --users 100000 --requests 1000
beam-rtbf forget u0000042 --regulation ccpa     # submit an erasure request to the registry
beam-rtbf status [REQUEST_ID]                   # a request's timeline, or all requests by deadline
beam-rtbf run --runner flink --tf_outputs tf.json --dry-run   # a runner profile: final options + submit command
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import signal
import sys
import threading
import uuid
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING

import yaml

from beam_rtbf.records import ErasureRequest, iso_ms, now_ms
from beam_rtbf.redact import MaskSecretsFilter, mask_secrets

if TYPE_CHECKING:
    from beam_rtbf.local_runner import StopRequest

__all__ = ["main", "config_to_argv"]

_LOGGER = logging.getLogger("beam_rtbf")


class _UnusedCloudClients(logging.Filter):
    """Beam warns at import that the GCS and BigQuery clients are missing; beam-rtbf uses neither."""

    _NOISE = ("Failed to import GCSFileSystem", "apitools not found")

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith(self._NOISE)


for _name in ("", "apache_beam.io.filesystems"):  # the loggers those two warnings are made on
    logging.getLogger(_name).addFilter(_UnusedCloudClients())


def config_to_argv(path: str) -> list[str]:
    """A YAML mapping of option -> value as command-line flags (``true`` -> bare flag)."""
    with open(path, encoding="utf-8") as handle:
        config = yaml.safe_load(handle) or {}
    if not isinstance(config, dict):
        raise SystemExit(f"beam-rtbf: {path}: expected a mapping of option: value")
    argv: list[str] = []
    for key, value in config.items():
        flag = "--" + str(key).replace("-", "_")
        if value is True:
            argv.append(flag)
        elif value is False or value is None:
            continue
        else:
            argv.append(f"{flag}={value}")
    return argv


def _split_config(argv: list[str]) -> list[str]:
    """Expand ``--config FILE`` in place, before the other flags so those override it."""
    out: list[str] = []
    config_args: list[str] = []
    i = 0
    while i < len(argv):
        arg = argv[i]
        if arg == "--config" and i + 1 < len(argv):
            config_args += config_to_argv(argv[i + 1])
            i += 2
            continue
        if arg.startswith("--config="):
            config_args += config_to_argv(arg.split("=", 1)[1])
            i += 1
            continue
        out.append(arg)
        i += 1
    return config_args + out


def _normalise_flags(argv: list[str]) -> list[str]:
    """Accept ``--filter-strategy`` as well as Beam's ``--filter_strategy``."""
    out = []
    for arg in argv:
        if arg.startswith("--"):
            name, eq, value = arg[2:].partition("=")
            arg = "--" + name.replace("-", "_") + eq + value
        out.append(arg)
    return out


def _log_to_stderr(verbose: bool) -> None:
    """Log to stderr with every record's secrets masked (passwords in URLs, tokens...)."""
    logging.basicConfig(
        level=logging.INFO if verbose else logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    for handler in logging.getLogger().handlers:
        if not any(isinstance(f, MaskSecretsFilter) for f in handler.filters):
            handler.addFilter(MaskSecretsFilter())


def _with_profile(command: str, argv: list[str]) -> list[str] | None:
    """Apply ``--runner PROFILE`` / ``--profile``; None when ``--dry-run`` printed instead."""
    from beam_rtbf.profiles import expand, render_dry_run

    expanded = expand(command, _normalise_flags(_split_config(argv)))
    if expanded.dry_run:
        print(mask_secrets(render_dry_run(command, expanded)))
        return None
    return expanded.argv


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
            _LOGGER.warning("%s: stopping the reads and draining (send %s again to abort at once)", name, name)
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


def cmd_run(argv: list[str]) -> int:
    from apache_beam.options.pipeline_options import PipelineOptions

    from beam_rtbf.driver import execute

    final = _with_profile("run", argv)
    if final is None:
        return 0
    with _stop_on_signals() as stop:
        return execute("run", PipelineOptions(final), stop)


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
    flags += [f"--registry={args.registry}"] if args.registry else []
    options = PipelineOptions(flags)
    resolve_paths(options)
    return options


def _registry_url(args: argparse.Namespace) -> str:
    from beam_rtbf.options import RtbfOptions

    return _state_options(args).view_as(RtbfOptions).registry


def cmd_forget(args: argparse.Namespace) -> int:
    from beam_rtbf.registry import RegistryUnavailable, open_registry
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
    try:
        with output_mode(args.output_mode), open_registry(_registry_url(args)) as registry:
            (accepted,) = registry.add([request])
    except RegistryUnavailable as exc:
        print(f"beam-rtbf: deletion registry unavailable: {exc}", file=sys.stderr)
        return 2
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


def _main_purge(argv: list[str]) -> int:
    from beam_rtbf.purge.pipeline import PurgeOptions

    verbose = "-v" in argv or "--verbose" in argv
    rest = [a for a in argv if a not in ("-v", "--verbose")]
    _log_to_stderr(verbose)
    if "--help" in rest or "-h" in rest:
        help_parser = argparse.ArgumentParser(
            prog="beam-rtbf purge", description="Beam pipeline options (e.g. --runner) also apply."
        )
        PurgeOptions._add_argparse_args(help_parser)
        help_parser.print_help()
        return 0
    from apache_beam.options.pipeline_options import PipelineOptions

    from beam_rtbf.driver import execute

    try:
        final = _with_profile("purge", rest)
        if final is None:
            return 0
        return execute("purge", PipelineOptions(final))
    except ValueError as exc:
        print(f"beam-rtbf: {mask_secrets(str(exc))}", file=sys.stderr)
        return 2


def _add_registry_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--output", default="./rtbf-out", help="the run's output folder (its _state/ holds the registry)"
    )
    parser.add_argument("--state_dir", "--state-dir", default=None, help="local state folder (default OUTPUT/_state)")
    parser.add_argument("--registry", default=None, help="registry URL (default: embedded://STATE_DIR/registry.sqlite)")


def _parser() -> argparse.ArgumentParser:
    from beam_rtbf.sinks.files import OUTPUT_MODE_HELP, OUTPUT_MODES

    parser = argparse.ArgumentParser(
        prog="beam-rtbf", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="log Beam's own progress too")
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser(
        "run", help="run the pipeline (all other flags are pipeline options; see run --help)", add_help=False
    )

    sub.add_parser(
        "purge",
        help="erase history from pending manifests and write receipts (flags: see purge --help)",
        add_help=False,
    )

    gen = sub.add_parser("generate", help="write generated sessions and requests to files")
    gen.add_argument("--out", help="output folder for files")
    gen.add_argument("--to", help="write sessions to a stream: kinesis://..., kafka://..., pubsub://...")
    gen.add_argument("--requests-to", help="write the requests to a stream")
    gen.add_argument("--rate", type=float, default=None, help="sessions per second when writing to a stream")
    gen.add_argument("--sessions", type=int, default=1_000_000)
    gen.add_argument("--users", type=int, default=100_000)
    gen.add_argument("--requests", type=int, default=1_000)
    gen.add_argument("--seed", type=int, default=1)
    gen.add_argument("--bad-rate", type=float, default=0.0, help="share of extra malformed records")
    gen.add_argument("--span-s", type=int, default=86_400, help="event times spread over this many seconds")
    gen.add_argument("--format", choices=["jsonl", "csv", "tsv"], default="jsonl")
    gen.add_argument("--files", type=int, default=1, help="number of session files")

    forget = sub.add_parser("forget", help="submit an erasure request for SUBJECT")
    forget.add_argument("subject")
    forget.add_argument("--alias", action="append", default=[], help="another id of the subject (email...)")
    forget.add_argument("--regulation", choices=["gdpr", "ccpa"], default="gdpr")
    forget.add_argument("--request-id", default=None, help="idempotency key (default: generated)")
    _add_registry_flags(forget)
    forget.add_argument("--output-mode", choices=sorted(OUTPUT_MODES), default="owner", help=OUTPUT_MODE_HELP)

    status = sub.add_parser("status", help="one request's timeline, or open requests by deadline")
    status.add_argument("request_id", nargs="?")
    status.add_argument("--all", action="store_true", help="also list requests already verified")
    _add_registry_flags(status)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = _parser()
    if argv and argv[0] == "purge":
        return _main_purge(argv[1:])
    if argv and argv[0] == "run":
        verbose = "-v" in argv[1:] or "--verbose" in argv[1:]
        rest = [a for a in argv[1:] if a not in ("-v", "--verbose")]
        _log_to_stderr(verbose)
        logging.getLogger("beam_rtbf").setLevel(logging.INFO)
        if "--help" in rest or "-h" in rest:
            from beam_rtbf.options import RtbfOptions

            help_parser = argparse.ArgumentParser(
                prog="beam-rtbf run", description="Beam pipeline options (e.g. --runner, --streaming) also apply."
            )
            RtbfOptions._add_argparse_args(help_parser)
            help_parser.print_help()
            return 0
        from beam_rtbf.registry import RegistryUnavailable

        try:
            return cmd_run(rest)
        except (ValueError, RegistryUnavailable) as exc:
            print(f"beam-rtbf: {mask_secrets(str(exc))}", file=sys.stderr)
            return 2
    args = parser.parse_args(argv)
    _log_to_stderr(args.verbose)
    try:
        return {"generate": cmd_generate, "forget": cmd_forget, "status": cmd_status}[args.command](args)
    except ValueError as exc:
        print(f"beam-rtbf: {mask_secrets(str(exc))}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
