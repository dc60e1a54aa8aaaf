"""Streaming soak: a fixed input rate for minutes, sampled from outside, to see what grows.

    python bench/streaming_soak.py [--quick] [--rate 40000] [--minutes 10] [--source synthetic|kafka]

Runs ``beam-rtbf run --streaming`` (the local streaming runner) as a child process at a fixed
offered rate: generated in the job (``synthetic://``) or produced into a real Kafka broker
(beam_rtbf/testing/kafka_broker.py) by ``beam-rtbf generate --to kafka://...`` while the job reads
it. Every interval it reads, without touching the job:

- archived sessions/s: rows of the archive Parquet files published in the interval (footers);
- end-to-end lag (``synthetic`` only, whose event times are wall-clock times): a file's
  publication time minus the newest event time in it (footer statistics), p50 and max over the
  interval's files;
- RSS and open files of the job's process tree (/proc).

At the end: the first third's rate against the last third's ("flat" when the last third keeps at
least 90 % of the first), RSS growth per minute, and whether the job kept up with the offered
rate. Prints JSON lines (bench/_common.emit).
"""

from __future__ import annotations

import argparse
import glob
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

import pyarrow.parquet as pq

from _common import effectiveness_latencies_ms, emit, quantile

BENCH = "streaming_soak"
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def process_tree(pid: int) -> list[int]:
    """``pid`` and its descendants (the SDK worker processes, if any)."""
    tree, todo = [], [pid]
    while todo:
        current = todo.pop()
        tree.append(current)
        try:
            for task in os.listdir(f"/proc/{current}/task"):
                with open(f"/proc/{current}/task/{task}/children") as handle:
                    todo.extend(int(child) for child in handle.read().split())
        except OSError:
            continue
    return tree


def rss_mb_and_files(pid: int) -> tuple[float, int]:
    rss_kb, files = 0, 0
    for member in process_tree(pid):
        try:
            with open(f"/proc/{member}/status") as handle:
                rss_kb += next(int(line.split()[1]) for line in handle if line.startswith("VmRSS:"))
            files += len(os.listdir(f"/proc/{member}/fd"))
        except (OSError, StopIteration):
            continue
    return rss_kb / 1024, files


class ArchiveWatch:
    """The archive files published since the last look: rows and lag per file, from footers only."""

    def __init__(self, archive: str) -> None:
        self.pattern = os.path.join(archive, "dt=*", "hour=*", "*.parquet")
        self.seen: set[str] = set()

    def new_files(self) -> tuple[int, list[float], list[float]]:
        """(rows, per file: published minus its newest event, published minus its oldest event): the
        first is the freshest row's lag, the second the longest any row of the file waited (with the
        local runner's 5 s gather, up to ~5 s more)."""
        rows, lags, oldest_lags = 0, [], []
        for path in glob.glob(self.pattern):
            if path in self.seen:
                continue
            try:
                meta = pq.read_metadata(path)
                published_ms = os.path.getmtime(path) * 1000
            except OSError:
                continue  # renamed or rewritten under us: counted next time
            self.seen.add(path)
            rows += meta.num_rows
            column = meta.schema.names.index("event_time_ms")
            stats = [meta.row_group(i).column(column).statistics for i in range(meta.num_row_groups)]
            stats = [st for st in stats if st is not None and st.has_min_max]
            if stats:
                lags.append((published_ms - max(st.max for st in stats)) / 1000)
                oldest_lags.append((published_ms - min(st.min for st in stats)) / 1000)
        return rows, lags, oldest_lags


def job_argv(work: str, source: str, rate: int, seconds: int, bootstrap: str | None) -> list[str]:
    requests = f"synthetic://requests?users=100000&request_rate=2&duration_s={seconds}&active_users=1000&seed=3"
    if source == "synthetic":
        sessions = f"synthetic://sessions?users=100000&rate={rate}&duration_s={seconds}&seed=3"
    else:
        sessions = f"kafka://{bootstrap}/sessions?group=soak&start=earliest"
    return [
        sys.executable, "-m", "beam_rtbf.cli", "run", "--streaming", f"--output={work}/out",
        f"--registry=embedded://{work}/registry.sqlite", "--window_s=10",
        f"--sessions={sessions}", f"--requests={requests}",
    ]  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="45 s at 20 K/s, sampled every 5 s")
    parser.add_argument("--rate", type=int, default=40_000, help="offered sessions/s")
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument("--interval", type=float, default=60.0, help="seconds between samples")
    parser.add_argument("--source", choices=("synthetic", "kafka"), default="synthetic")
    args = parser.parse_args()
    if args.quick:
        args.rate, args.minutes, args.interval = 20_000, 0.75, 5.0
    seconds = int(args.minutes * 60)
    params = {"rate": args.rate, "seconds": seconds, "source": args.source, "runner": "LocalStreamingRunner"}
    work = tempfile.mkdtemp(prefix="rtbf-soak-")
    broker = producer = None
    try:
        bootstrap = None
        if args.source == "kafka":
            from beam_rtbf.testing.kafka_broker import KafkaBroker

            broker = KafkaBroker(os.path.join(work, "kafka"))
            broker.start()
            bootstrap = broker.bootstrap
            producer = subprocess.Popen(
                [sys.executable, "-m", "beam_rtbf.cli", "generate", f"--to=kafka://{bootstrap}/sessions",
                 f"--rate={args.rate}", f"--sessions={args.rate * seconds}", "--users=100000", "--requests=0"],
                cwd=ROOT, stdout=subprocess.DEVNULL, stderr=open(os.path.join(work, "producer.log"), "wb"),
            )  # fmt: skip
        job = subprocess.Popen(
            job_argv(work, args.source, args.rate, seconds, bootstrap),
            cwd=ROOT,
            stdout=subprocess.DEVNULL,
            stderr=open(os.path.join(work, "job.log"), "wb"),
        )
        watch = ArchiveWatch(os.path.join(work, "out", "archive"))
        samples = []
        started = previous = time.monotonic()
        deadline = started + seconds + (120 if producer is None else 600)  # drain, or read a backlog
        while time.monotonic() < deadline:
            time.sleep(args.interval)
            rows, lags, oldest_lags = watch.new_files()
            rss, files = rss_mb_and_files(job.pid) if job.poll() is None else (0.0, 0)
            now = time.monotonic()
            at, span, previous = now - started, now - previous, now
            # generate --to writes past event times: no lag there
            lag = statistics.median(lags) if lags and args.source == "synthetic" else None
            samples.append({"t": at, "rows": rows, "rss": rss, "files": files, "span": span, "lag": lag})
            sample = {**params, "t_s": round(at, 1)}
            emit(BENCH, "archived_sessions_per_s", rows / span, "sessions/s", **sample)
            if lag is not None:
                emit(BENCH, "lag_p50_s", lag, "s", **sample)
                emit(BENCH, "lag_max_s", max(lags), "s", **sample)
                emit(BENCH, "oldest_row_lag_p50_s", statistics.median(oldest_lags), "s", **sample)
                emit(BENCH, "oldest_row_lag_max_s", max(oldest_lags), "s", **sample)
            if rss:
                emit(BENCH, "rss_mb", rss, "MB", **sample)
                emit(BENCH, "open_files", files, "files", **sample)
            if job.poll() is not None:
                break
            produced = producer is None or producer.poll() is not None
            if (
                producer is not None
                and produced
                and len(samples) >= 2
                and not samples[-1]["rows"]
                and not samples[-2]["rows"]
            ):
                break  # everything produced was read: the Kafka job would wait forever
        if producer is not None and producer.poll() is None:
            producer.terminate()
        if job.poll() is None:  # a Kafka source never ends: stop it as a user would (drain on SIGINT)
            job.send_signal(2)
            job.wait(120)
        summarise(samples, params, seconds, args.rate)
        latencies = effectiveness_latencies_ms(os.path.join(work, "out", "manifests"))
        if latencies:  # request accepted -> the filter drops the subject, from every manifest
            for q in (0.5, 0.99):
                emit(BENCH, f"effectiveness_latency_p{int(q * 100)}_ms", quantile(latencies, q), "ms", **params,
                     requests=len(latencies), target_p99=2_000)  # fmt: skip
    finally:
        for process in (producer,):
            if process is not None and process.poll() is None:
                process.kill()
        if broker is not None:
            broker.stop()
        shutil.rmtree(work, ignore_errors=True)


def summarise(samples: list[dict], params: dict, seconds: int, rate: int) -> None:
    """Flatness (last third vs first third of the samples with output, start-up and drain left
    out) of throughput and of lag (whether the job keeps up), RSS growth over the same span, and
    the share of the offered sessions archived."""
    with_rows = [i for i, s in enumerate(samples) if s["rows"]]
    if not with_rows:
        emit(BENCH, "archived_share_of_offered", 0.0, "x", **params)
        return
    steady = samples[with_rows[0] + 1 : with_rows[-1]]  # whole intervals of output only
    if len(steady) >= 3:
        third = len(steady) // 3

        def rate_of(part: list[dict]) -> float:
            return sum(s["rows"] for s in part) / sum(s["span"] for s in part)

        first, last = rate_of(steady[:third]), rate_of(steady[-third:])
        emit(
            BENCH,
            "last_third_vs_first_third",
            last / first,
            "x",
            **params,
            first=first,
            last=last,
            flat_if_at_least=0.9,
        )
        # Throughput can stay level while the job falls behind (at 170 K/s here: ~162 K/s every
        # minute, lag p50 0.8 s -> 29 s): it keeps up only if the lag does not grow as well.
        first_lags = [s["lag"] for s in steady[:third] if s["lag"] is not None]
        last_lags = [s["lag"] for s in steady[-third:] if s["lag"] is not None]
        if first_lags and last_lags:
            first_lag, last_lag = statistics.median(first_lags), statistics.median(last_lags)
            keeps_up = last_lag <= max(2.0, 2 * first_lag)
            emit(BENCH, "lag_p50_last_third_s", last_lag, "s", **params, first_third=round(first_lag, 3),
                 keeps_up=keeps_up, keeps_up_if="last third <= max(2 s, 2x first third)")  # fmt: skip
        rss = [s["rss"] for s in steady if s["rss"]]
        if len(rss) >= 2:
            minutes = (steady[-1]["t"] - steady[0]["t"]) / 60
            emit(BENCH, "rss_growth_mb_per_min", (rss[-1] - rss[0]) / minutes, "MB/min", **params, peak_mb=max(rss))
    archived = sum(s["rows"] for s in samples)  # clean sessions: the suppressed few are not archived
    emit(BENCH, "archived_share_of_offered", archived / (rate * seconds), "x", **params)


if __name__ == "__main__":
    main()
