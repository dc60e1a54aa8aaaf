"""The bounded job side by side: beam-rtbf (direct runner), DuckDB, PySpark local[2], plain pyarrow.

    python bench/peers.py            # 2,000,010 JSON-lines sessions, 3 runs per system, plot
    python bench/peers.py --quick    # 100,010 sessions, 1 run per system (PySpark's start-up is most of it)

The job, the same in every system: read the sessions (JSON lines in 4 files, 10 of them
malformed: dead letters, kept raw), drop every session of the 701 forgotten subjects of
``requests.jsonl``, archive the rest as Parquet partitioned by event hour
(``dt=YYYY-MM-DD/hour=HH``, zstd), and write one-minute analytics per (action_type,
device_type): sessions, distinct users, mean ``secs_elapsed``.

beam-rtbf does more than the job (a durable registry, manifests, a subject index, run
ledger, summary); the peers do only the job. ``pyarrow`` is a plain in-process script
(one core's worth of vectorised kernels): what the job costs without an engine.

Each system runs in its own process (``--system``), systems interleaved, ``--runs`` times;
the parent samples the process tree's RSS (peak, JVM included for Spark). ``job_s`` is the
job alone (after imports, and after the SparkSession is up); ``wall_s`` is the whole process.
Every system's output is checked against the pyarrow reference: clean and dead-letter
counts, archived rows, analytics rows, and per (action_type, device_type) the totals of
sessions, distinct users and mean seconds. JSON lines on stdout, and a bar chart
(``--plot``; matplotlib from the ``bench`` extra).
"""

from __future__ import annotations

import argparse
import datetime
import glob
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time

from _common import emit  # noqa: I001 - sets sys.path for beam_rtbf

BENCH = "peers"
SYSTEMS = ("beam-rtbf", "duckdb", "pyspark", "pyarrow")
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
USERS = 100_000
FORGOTTEN = 701
FILES = 4
WINDOW_MS = 60_000
BAD_LINES = [  # malformed JSON in every parser: dead letters everywhere
    b'{"user_id": "u0000001", "event_time": 17672256',
    b"not json at all",
    b'{"user_id": "u0000002" "event_time": 1767225600000}',
    b'{"user_id": "u0000004", "event_time": 1767225600000',
    b"]",
    b'{"user_id": u0000005}',
    b"{{}}",
    b'{"user_id": "u0000006", "event_time": }',
    b"<html>",
    b'{"user_id": "u0000007", "action": "show", "secs_elapsed": 1.5e',
]
SESSION_FIELDS = ("user_id", "event_time", "action", "action_type", "action_detail", "device_type", "secs_elapsed")


# -- input --------------------------------------------------------------------------------


def make_input(folder: str, sessions: int) -> dict:
    """Generated sessions in FILES JSON-lines files with BAD_LINES spread among them, and the requests."""
    from beam_rtbf.generate import generate_files
    from beam_rtbf.sources.synthetic import SyntheticConfig

    done = os.path.join(folder, "input.json")
    if os.path.exists(done):
        with open(done) as handle:
            return json.load(handle)
    staging = f"{folder}.tmp-{os.getpid()}"
    shutil.rmtree(staging, ignore_errors=True)
    cfg = SyntheticConfig(users=USERS, sessions=sessions, requests=FORGOTTEN, seed=1, bad_rate=0.0)
    data = generate_files(cfg, staging, "jsonl", files=FILES)
    for i, bad in enumerate(BAD_LINES):  # each after a line in the middle of a file
        path = data.session_files[i % FILES]
        with open(path, "rb") as handle:
            body = handle.read()
        cut = body.index(b"\n", len(body) * (i + 1) // (len(BAD_LINES) + 2)) + 1
        with open(path, "wb") as handle:
            handle.write(body[:cut] + bad + b"\n" + body[cut:])
    info = {
        "sessions": [os.path.join(folder, os.path.basename(p)) for p in data.session_files],
        "requests": os.path.join(folder, os.path.basename(data.requests_file)),
        "good": data.sessions,
        "bad": len(BAD_LINES),
        "forgotten": len(set(data.forgotten_subjects)),
    }
    with open(os.path.join(staging, "input.json"), "w") as handle:
        json.dump(info, handle)
    shutil.rmtree(folder, ignore_errors=True)
    os.rename(staging, folder)
    return info


def _forgotten(requests: str) -> list[str]:
    with open(requests) as handle:
        return sorted({json.loads(line)["subject_id"] for line in handle if line.strip()})


# -- the systems (each runs in its own process) ----------------------------------------------


def job_beam(info: dict, out: str) -> dict:
    from beam_rtbf.pipeline import run

    pattern = os.path.join(os.path.dirname(info["sessions"][0]), "sessions-*.jsonl")
    started = time.perf_counter()
    summary = run(
        [
            f"--output={out}",
            f"--registry=embedded://{out}/registry.sqlite",
            f"--sessions=file://{pattern}",
            f"--requests=file://{info['requests']}",
        ]
    )
    job_s = time.perf_counter() - started
    return {"job_s": job_s, "clean": summary["clean"], "dead_lettered": summary["dead_lettered"]}


def job_duckdb(info: dict, out: str) -> dict:
    import duckdb

    files = info["sessions"]
    columns = "{" + ", ".join(f"'{f}': '{_sql_type(f)}'" for f in SESSION_FIELDS) + "}"
    lines = f"read_csv({files!r}, columns={{'line': 'VARCHAR'}}, header=false, delim='\x1f', quote='', escape='', auto_detect=false)"
    started = time.perf_counter()
    con = duckdb.connect()
    con.execute("SET threads = 2; SET preserve_insertion_order = false; SET TimeZone = 'UTC'")
    os.makedirs(os.path.join(out, "deadletter"))
    con.execute(
        f"COPY (SELECT line FROM {lines} WHERE NOT json_valid(line)) "
        f"TO '{out}/deadletter/bad.txt' (FORMAT csv, HEADER false, QUOTE '', DELIMITER '\x1f')"
    )
    con.execute(f"CREATE TEMP TABLE forgotten AS SELECT DISTINCT subject_id FROM read_json('{info['requests']}')")
    con.execute(
        f"""CREATE TEMP TABLE clean AS
        SELECT s.*, make_timestamp(s.event_time * 1000) AS ts
        FROM read_json({files!r}, format='newline_delimited', ignore_errors=true, columns={columns}) s
        WHERE s.user_id IS NOT NULL AND s.user_id NOT IN (SELECT subject_id FROM forgotten)"""
    )
    con.execute(
        f"""COPY (SELECT * EXCLUDE (ts), strftime(ts, '%Y-%m-%d') AS dt, strftime(ts, '%H') AS hour FROM clean)
        TO '{out}/archive' (FORMAT parquet, COMPRESSION zstd, PARTITION_BY (dt, hour))"""
    )
    con.execute(
        f"""COPY (SELECT (event_time // {WINDOW_MS}) * {WINDOW_MS} AS window_start, action_type, device_type,
                 count(*) AS sessions, count(DISTINCT user_id) AS distinct_users,
                 avg(secs_elapsed) AS avg_secs_elapsed
          FROM clean GROUP BY ALL) TO '{out}/analytics.jsonl' (FORMAT json)"""
    )
    (clean,) = con.execute("SELECT count(*) FROM clean").fetchone()
    job_s = time.perf_counter() - started
    with open(f"{out}/deadletter/bad.txt", "rb") as handle:
        dead = sum(1 for line in handle if line.strip())
    return {"job_s": job_s, "clean": clean, "dead_lettered": dead}


def _sql_type(field: str) -> str:
    return {"event_time": "BIGINT", "secs_elapsed": "DOUBLE"}.get(field, "VARCHAR")


def job_pyspark(info: dict, out: str) -> dict:
    from pyspark.sql import SparkSession
    from pyspark.sql import functions as F
    from pyspark.sql import types as T

    started_session = time.perf_counter()
    spark = (
        SparkSession.builder.master("local[2]")
        .appName("rtbf-peers")
        .config("spark.sql.session.timeZone", "UTC")
        .config("spark.sql.shuffle.partitions", "4")
        .config("spark.driver.memory", "4g")
        .config("spark.ui.enabled", "false")
        .config("spark.ui.showConsoleProgress", "false")
        .config("spark.sql.parquet.compression.codec", "zstd")
        .getOrCreate()
    )
    spark.sparkContext.setLogLevel("ERROR")
    session_s = time.perf_counter() - started_session
    fields = [
        T.StructField(
            f, T.LongType() if f == "event_time" else T.DoubleType() if f == "secs_elapsed" else T.StringType()
        )
        for f in SESSION_FIELDS
    ]
    schema = T.StructType([*fields, T.StructField("_corrupt_record", T.StringType())])
    started = time.perf_counter()
    raw = (
        spark.read.schema(schema)
        .option("mode", "PERMISSIVE")
        .option("columnNameOfCorruptRecord", "_corrupt_record")
        .json(info["sessions"])
        .cache()
    )
    bad = raw.filter(F.col("_corrupt_record").isNotNull()).select("_corrupt_record")
    bad.write.text(os.path.join(out, "deadletter"))
    forgotten = spark.read.json(info["requests"]).select(F.col("subject_id").alias("user_id")).distinct()
    good = raw.filter(F.col("_corrupt_record").isNull() & F.col("user_id").isNotNull()).drop("_corrupt_record")
    clean = good.join(F.broadcast(forgotten), "user_id", "left_anti").cache()
    ts = (F.col("event_time") / 1000).cast("timestamp")
    clean.withColumn("dt", F.date_format(ts, "yyyy-MM-dd")).withColumn(
        "hour", F.date_format(ts, "HH")
    ).write.partitionBy("dt", "hour").parquet(os.path.join(out, "archive"))
    analytics = clean.groupBy(
        (F.floor(F.col("event_time") / WINDOW_MS) * WINDOW_MS).alias("window_start"), "action_type", "device_type"
    ).agg(
        F.count(F.lit(1)).alias("sessions"),
        F.countDistinct("user_id").alias("distinct_users"),
        F.avg("secs_elapsed").alias("avg_secs_elapsed"),
    )
    analytics.write.json(os.path.join(out, "analytics"))
    result = {"clean": clean.count(), "dead_lettered": bad.count()}
    job_s = time.perf_counter() - started
    spark.stop()
    return {"job_s": job_s, "session_s": session_s, **result}


def job_pyarrow(info: dict, out: str) -> dict:
    import numpy as np
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.dataset as ds
    import pyarrow.json as pj
    import pyarrow.parquet as pq

    started = time.perf_counter()
    forgotten = pa.array(_forgotten(info["requests"]), pa.string())
    schema = pa.schema(
        [
            (f, pa.int64() if f == "event_time" else pa.float64() if f == "secs_elapsed" else pa.string())
            for f in SESSION_FIELDS
        ]
    )
    options = pj.ParseOptions(explicit_schema=schema, unexpected_field_behavior="ignore")
    tables, dead = [], []
    for path in info["sessions"]:
        with open(path, "rb") as handle:
            body = handle.read()
        _parse(body, options, tables, dead)
    table = pa.concat_tables(tables)
    table = table.filter(pc.and_(pc.is_valid(table["user_id"]), pc.invert(pc.is_in(table["user_id"], forgotten))))
    os.makedirs(os.path.join(out, "deadletter"))
    with open(os.path.join(out, "deadletter", "bad.txt"), "wb") as handle:
        handle.write(b"".join(line + b"\n" for line in dead))
    # One file per event hour: rows ordered by hour once (numpy), then a slice per hour.
    hours = table["event_time"].to_numpy() // 3_600_000
    order = np.argsort(hours, kind="stable")
    by_hour, ordered = hours[order], table.take(pa.array(order))
    cuts = (np.flatnonzero(np.diff(by_hour)) + 1).tolist()
    for lo, hi in zip([0, *cuts], [*cuts, len(by_hour)]):
        hour = datetime.datetime.fromtimestamp(int(by_hour[lo]) * 3600, datetime.timezone.utc)
        folder = os.path.join(out, "archive", f"dt={hour:%Y-%m-%d}", f"hour={hour:%H}")
        os.makedirs(folder)
        pq.write_table(
            ordered.slice(lo, hi - lo),
            os.path.join(folder, "part-0.parquet"),
            compression="zstd",
            use_dictionary=["action", "action_type", "action_detail", "device_type"],
        )
    keyed = pa.table(
        {
            "window_start": pc.multiply(pc.divide(table["event_time"], WINDOW_MS), WINDOW_MS),
            "action_type": table["action_type"],
            "device_type": table["device_type"],
            "user_id": table["user_id"],
            "secs_elapsed": table["secs_elapsed"],
        }
    )
    analytics = keyed.group_by(["window_start", "action_type", "device_type"]).aggregate(
        [("user_id", "count"), ("user_id", "count_distinct"), ("secs_elapsed", "mean")]
    )
    analytics = analytics.rename_columns(
        ["window_start", "action_type", "device_type", "sessions", "distinct_users", "avg_secs_elapsed"]
    )
    ds.write_dataset(analytics, os.path.join(out, "analytics"), format="parquet")
    job_s = time.perf_counter() - started
    return {"job_s": job_s, "clean": table.num_rows, "dead_lettered": len(dead)}


def _parse(body: bytes, options, tables: list, dead: list[bytes]) -> None:
    """JSON lines -> tables, in chunks of ~4 MB; a chunk that fails is halved until its bad lines
    stand alone (dead letters), so a bad line costs a few re-parses of its chunk, not of the file."""
    import pyarrow as pa
    import pyarrow.json as pj

    read = pj.ReadOptions(block_size=1 << 20)
    pending = []
    start = 0
    while start < len(body):
        end = body.find(b"\n", min(start + (4 << 20), len(body) - 1))
        end = len(body) if end < 0 else end + 1
        pending.append(body[start:end])
        start = end
    while pending:
        chunk = pending.pop()
        if not chunk or chunk.isspace():
            continue
        try:
            tables.append(pj.read_json(pa.BufferReader(chunk), read_options=read, parse_options=options))
            continue
        except pa.ArrowInvalid:
            pass
        cut = chunk.find(b"\n", len(chunk) // 2)
        if cut < 0 or cut >= len(chunk) - 1:
            cut = chunk.rfind(b"\n", 0, len(chunk) - 1)
        if cut < 0:  # one line: a dead letter
            dead.append(chunk.rstrip(b"\n"))
            continue
        pending += [chunk[: cut + 1], chunk[cut + 1 :]]


JOBS = {"beam-rtbf": job_beam, "duckdb": job_duckdb, "pyspark": job_pyspark, "pyarrow": job_pyarrow}


# -- checking ------------------------------------------------------------------------------


def outputs(system: str, out: str) -> dict:
    """What every system must agree on, read back from its output folder."""
    import pyarrow.dataset as ds

    archive = os.path.join(out, "archive")
    data_files = [p for p in glob.glob(os.path.join(archive, "**", "*.parquet"), recursive=True) if "/_index/" not in p]
    archived = ds.dataset(data_files, format="parquet").count_rows()
    hours = {os.path.relpath(os.path.dirname(p), archive) for p in data_files}
    if system == "beam-rtbf":
        rows = _json_lines(glob.glob(os.path.join(out, "analytics", "**", "*.jsonl"), recursive=True))
    elif system == "duckdb":
        rows = _json_lines([os.path.join(out, "analytics.jsonl")])
    elif system == "pyspark":
        rows = _json_lines(glob.glob(os.path.join(out, "analytics", "*.json")))
    else:
        rows = ds.dataset(os.path.join(out, "analytics"), format="parquet").to_table().to_pylist()
    per_key: dict[str, list[float]] = {}
    for row in rows:
        totals = per_key.setdefault(f"{row.get('action_type')}|{row.get('device_type')}", [0, 0, 0.0])
        totals[0] += row["sessions"]
        totals[1] += row["distinct_users"]
        totals[2] += row.get("avg_secs_elapsed") or 0.0
    return {
        "archived": archived,
        "archive_hours": len(hours),
        "analytics_rows": len(rows),
        "per_key": {k: [v[0], v[1], round(v[2], 3)] for k, v in sorted(per_key.items())},
    }


def _json_lines(paths: list[str]) -> list[dict]:
    rows = []
    for path in paths:
        with open(path) as handle:
            rows.extend(json.loads(line) for line in handle if line.strip())
    return rows


def _same(reference: dict, other: dict) -> list[str]:
    problems = [f"{k}: {other[k]} != {reference[k]}" for k in reference if k != "per_key" and other[k] != reference[k]]
    ref_keys, keys = reference["per_key"], other["per_key"]
    if set(ref_keys) != set(keys):
        problems.append(f"analytics keys differ: {sorted(set(ref_keys) ^ set(keys))[:5]}")
    for key in set(ref_keys) & set(keys):
        a, b = ref_keys[key], keys[key]
        if a[:2] != b[:2] or abs(a[2] - b[2]) > 1e-6 * max(1.0, abs(a[2])) + 0.01:
            problems.append(f"analytics {key}: {b} != {a}")
    return problems


# -- running -------------------------------------------------------------------------------


def _tree_rss_kb(pid: int) -> int:
    """RSS of a process and its descendants, from /proc."""
    total, todo = 0, [pid]
    while todo:
        current = todo.pop()
        try:
            with open(f"/proc/{current}/status") as handle:
                for line in handle:
                    if line.startswith("VmRSS:"):
                        total += int(line.split()[1])
            for task in os.listdir(f"/proc/{current}/task"):
                with open(f"/proc/{current}/task/{task}/children") as handle:
                    todo.extend(int(c) for c in handle.read().split())
        except (OSError, ValueError):
            continue
    return total


def run_system(system: str, info_path: str, out: str) -> dict:
    """One run of ``system`` in its own process: its result, wall time and peak RSS of its process tree."""
    shutil.rmtree(out, ignore_errors=True)
    os.makedirs(os.path.dirname(out), exist_ok=True)
    started = time.perf_counter()
    process = subprocess.Popen(
        [sys.executable, os.path.abspath(__file__), "--system", system, "--input", info_path, "--out", out],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": REPO},
    )
    peak = [0]

    def sample() -> None:
        while process.poll() is None:
            peak[0] = max(peak[0], _tree_rss_kb(process.pid))
            time.sleep(0.05)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    stdout, stderr = process.communicate()
    wall = time.perf_counter() - started
    sampler.join()
    if process.returncode != 0:
        raise SystemExit(f"bench peers: {system} failed:\n{stderr[-3000:]}")
    result = json.loads(stdout.strip().splitlines()[-1])
    return {**result, "wall_s": wall, "peak_rss_mb": peak[0] / 1024}


def plot(medians: dict[str, float], sessions: int, path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = sorted(medians, key=lambda s: medians[s])
    rates = [sessions / medians[s] / 1000 for s in names]
    fig, ax = plt.subplots(figsize=(7, 3))
    bars = ax.barh(names, rates, color=["#4c72b0" if n != "beam-rtbf" else "#dd8452" for n in names])
    ax.bar_label(bars, labels=[f"{r:,.0f} K/s ({medians[n]:.1f} s)" for r, n in zip(rates, names)], padding=3)
    ax.set_xlabel("sessions per second (thousands), job time, median")
    ax.set_title(f"Same bounded job, {sessions:,} JSON-lines sessions, 2 cores")
    ax.set_xlim(0, max(rates) * 1.45)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--sessions", type=int, default=None)
    parser.add_argument("--runs", type=int, default=None)
    parser.add_argument("--systems", default=",".join(SYSTEMS))
    parser.add_argument("--cache", default=os.path.join(tempfile.gettempdir(), "rtbf-bench-peers"))
    parser.add_argument("--plot", default=None, help="bar chart PNG (default: bench/results/peers.png, not in --quick)")
    parser.add_argument("--system", help=argparse.SUPPRESS)  # one run in this process (the parent's child)
    parser.add_argument("--input", help=argparse.SUPPRESS)
    parser.add_argument("--out", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.system:
        with open(args.input) as handle:
            info = json.load(handle)
        print(json.dumps(JOBS[args.system](info, args.out)))
        return

    sessions = args.sessions or (100_000 if args.quick else 2_000_000)
    runs = args.runs or (1 if args.quick else 3)
    systems = [s for s in args.systems.split(",") if s]
    folder = os.path.join(args.cache, f"input-{sessions}")
    info = make_input(folder, sessions)
    info_path = os.path.join(folder, "input.json")
    lines = info["good"] + info["bad"]
    results: dict[str, list[dict]] = {s: [] for s in systems}
    checks: dict[str, dict] = {}
    for i in range(runs):
        for system in systems[i % len(systems) :] + systems[: i % len(systems)]:
            out = os.path.join(args.cache, "out", system)
            results[system].append(run_system(system, info_path, out))
            checks[system] = outputs(system, out)
            shutil.rmtree(out, ignore_errors=True)
    expected_clean = None
    reference = checks.get("pyarrow") or next(iter(checks.values()))
    for system in systems:
        first = results[system][0]
        problems = _same(reference, checks[system])
        if first["dead_lettered"] != info["bad"]:
            problems.append(f"dead letters {first['dead_lettered']} != {info['bad']}")
        if checks[system]["archived"] != first["clean"]:
            problems.append(f"archived {checks[system]['archived']} != clean {first['clean']}")
        expected_clean = expected_clean if expected_clean is not None else first["clean"]
        if first["clean"] != expected_clean:
            problems.append(f"clean {first['clean']} != {expected_clean}")
        if problems:
            raise SystemExit(f"bench peers: {system} disagrees: " + "; ".join(problems))
    params = {"sessions": lines, "bad_lines": info["bad"], "forgotten_subjects": info["forgotten"], "runs": runs}
    medians = {}
    for system in systems:
        runs_of = results[system]
        medians[system] = statistics.median(r["job_s"] for r in runs_of)
        extra = (
            {"session_start_s": round(statistics.median(r["session_s"] for r in runs_of), 2)}
            if system == "pyspark"
            else {}
        )
        common = {**params, "system": system, "clean": runs_of[0]["clean"], **extra}
        emit(BENCH, "job_s", medians[system], "s", **common, all_s=[round(r["job_s"], 2) for r in runs_of])
        emit(BENCH, "sessions_per_s", lines / medians[system], "sessions/s", **common)
        emit(BENCH, "wall_s", statistics.median(r["wall_s"] for r in runs_of), "s", **common, note="whole process")
        emit(BENCH, "peak_rss_mb", max(r["peak_rss_mb"] for r in runs_of), "MB", **common, note="process tree")
    if "beam-rtbf" in medians:
        for system in systems:
            if system != "beam-rtbf":
                emit(BENCH, "beam_rtbf_time_ratio", medians["beam-rtbf"] / medians[system], "x", **params, peer=system)
    emit(
        BENCH, "outputs_agree", 1, "bool", **params, checked=sorted(reference), analytics_keys=len(reference["per_key"])
    )
    target = args.plot or (None if args.quick else os.path.join(REPO, "bench", "results", "peers.png"))
    if target:
        plot(medians, lines, target)
        print(f"plot: {target}", file=sys.stderr)


if __name__ == "__main__":
    sys.exit(main())
