"""What keeps a purge's fixed cost down without changing what it proves: a small graph (no empty
branches, no global combiners), one registry transaction per bundle of receipts, no second full scan
of a renamed file (but a check that the path holds the verified bytes), and local path joins."""

from __future__ import annotations

import json
import os
from pathlib import Path

import apache_beam as beam
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from apache_beam.io.filesystems import FileSystems

from beam_rtbf.archive.write import write_data_file
from beam_rtbf.job import job_options
from beam_rtbf.options import PurgeOptions
from beam_rtbf.purge import pipeline as purge_pipeline
from beam_rtbf.purge.finish import RequestFinisher
from beam_rtbf.purge.manifests import PendingManifest
from beam_rtbf.purge.plan import PurgePlan
from beam_rtbf.purge.rewrite import FileTask, PurgeFileError, rewrite_file
from beam_rtbf.purge.verify import VerificationSummary
from beam_rtbf.records import SESSION_SCHEMA
from beam_rtbf.sinks.files import join


def _manifest(root: Path, request_id: str, subject: str) -> PendingManifest:
    path = root / "manifests" / f"{request_id}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"request_id": request_id, "subject_ids": [subject], "status": "pending"}))
    return PendingManifest(str(path), request_id, (subject,), "gdpr", "2026-02-01T00:00:00Z", (), ())


def _graph(tmp_path: Path, *flags: str) -> list[str]:
    options = job_options([f"--output={tmp_path}", f"--registry=embedded://{tmp_path}/r.sqlite", *flags])
    manifests = [_manifest(tmp_path, "req-a", "alice")]
    plan = PurgePlan((FileTask("archive", f"{tmp_path}/archive/a.parquet"),), {"alice": ("req-a",)}, 10, "")
    p = beam.Pipeline(options=options)
    purge_pipeline.build_purge_pipeline(p, options.view_as(PurgeOptions), manifests, plan, "run-1")
    proto = p.to_runner_api()
    return sorted(t.unique_name for t in proto.components.transforms.values() if not t.subtransforms)


def test_the_purge_graph_has_no_empty_branches_nor_global_combiners(tmp_path):
    leaves = _graph(tmp_path, "--one_step_max_files=0")
    for absent in (
        "Analytics",
        "RecomputeWindows",
        "RecomputeTableRows",
        "NoApi",
        "CallErasureApi",
        "Combine",
        "Count",
    ):
        assert not [n for n in leaves if absent in n], absent
    for present in ("ScanFiles", "BlastRadius", "RewriteFiles", "VerifyErasure/ScanStoredFiles", "FinishRequests"):
        assert [n for n in leaves if present in n], present
    # The whole graph: was 91 leaf transforms (ToList/Count combiners, empty analytics and API branches).
    assert len(leaves) == 41, leaves


def test_a_small_plan_is_one_step_unless_it_calls_an_erasure_api(tmp_path):
    one_step = _graph(tmp_path)
    assert [n for n in one_step if not n.startswith("Start/")] == ["PurgeInOneStep"]
    assert _graph(tmp_path, "--one_step_max_files=1") == one_step  # the plan has one file
    assert len(_graph(tmp_path, "--one_step_max_files=0")) == 41
    assert [n for n in _graph(tmp_path, "--erasure_api_url=http://127.0.0.1:9/erase") if n.startswith("CallErasureApi")]


def test_the_erasure_api_branch_is_there_when_asked_for(tmp_path):
    leaves = _graph(tmp_path, "--erasure_api_url=http://127.0.0.1:9/erase")
    assert [n for n in leaves if n.startswith("CallErasureApi")]


class _Registry:
    def __init__(self, manifests: list[PendingManifest]) -> None:
        self.calls: list[list[tuple]] = []
        self.manifests = manifests

    def record_events(self, events):
        # Redaction comes after the events: at this point every manifest still names its subject.
        assert all("subject_ids" in json.loads(Path(m.path).read_text()) for m in self.manifests)
        self.calls.append(list(events))

    def record_event(self, *args):
        raise AssertionError("one event at a time: a commit each")

    def close(self):
        pass


def test_finishing_requests_records_a_batchs_events_in_one_transaction_then_redacts(tmp_path, monkeypatch):
    monkeypatch.setenv("RTBF_SUBJECT_HASH_KEY", "test-key")
    manifests = [_manifest(tmp_path, f"req-{s}", s) for s in ("alice", "bob", "carol")]
    finisher = RequestFinisher(
        {m.request_id: m for m in manifests}, f"embedded://{tmp_path}/r.sqlite", str(tmp_path / "receipts"),
        "run-1", True, None, {"archive": str(tmp_path / "archive")},
    )  # fmt: skip
    finisher._registry.close()
    finisher._registry = registry = _Registry(manifests)
    ids = [m.request_id for m in manifests]
    scanned = {"archive_files": 3, "index_files": 0, "deadletter_files": 0, "other_files": 0, "rows": 30, "bytes": 1}
    summary = VerificationSummary(scanned, dict.fromkeys(ids, 0), {r: [] for r in ids}, [], 0.0, 0.0)
    for request_id in ids:
        finisher.finish(request_id, {"request": [request_id], "files": []}, summary)
    assert registry.calls == []  # nothing recorded before the batch ends
    finisher.flush()
    assert len(registry.calls) == 1
    assert sorted((e[0], e[1]) for e in registry.calls[0]) == sorted(
        (r, s) for r in ids for s in ("purged", "verified")
    )
    for m in manifests:
        body = json.loads(Path(m.path).read_text())
        assert "subject_ids" not in body and len(body["subject_hashes"]) == 1
        assert json.loads(Path(tmp_path / "receipts" / body["receipt"]).read_text())["status"] == "verified"


def _archive_file(tmp_path: Path) -> Path:
    rows = [{"user_id": u, "event_time_ms": 1_767_225_600_000 + i} for i, u in enumerate(["alice", "bob"] * 5)]
    table = pa.Table.from_pylist(rows, schema=SESSION_SCHEMA)
    path = tmp_path / "archive" / "dt=2026-01-01" / "part-0.parquet"
    path.parent.mkdir(parents=True)
    write_data_file(str(path), table)
    return path


class _Overwrite:
    def __init__(self, path: Path, payload: bytes) -> None:
        self.path, self.payload = path, payload

    def reached(self, point: str) -> None:
        if point == "after_replace":
            self.path.write_bytes(self.payload)


@pytest.mark.parametrize("root", ["out", "out[1]*"])  # a local path is not a glob pattern
def test_a_renamed_file_is_checked_to_be_the_verified_one(tmp_path, root):
    tmp_path = tmp_path / root
    path = _archive_file(tmp_path)
    result = rewrite_file(FileTask("archive", str(path)), {"alice": ("req-a",)}, str(tmp_path / "j"))
    assert (result.status, result.records_before, result.records_after, result.verified) == ("purged", 10, 5, True)
    assert set(pq.read_table(path, columns=["user_id"]).column(0).to_pylist()) == {"bob"}


def test_a_path_that_does_not_hold_the_verified_bytes_after_the_replace_fails_the_file(tmp_path):
    path = _archive_file(tmp_path)
    original = path.read_bytes()  # something replaced the file again right after the rename
    with pytest.raises(PurgeFileError, match="not the verified"):
        rewrite_file(
            FileTask("archive", str(path)),
            {"alice": ("req-a",)},
            str(tmp_path / "j"),
            faults=_Overwrite(path, original),
        )


def test_a_purge_re_encodes_only_the_row_groups_holding_the_subject(tmp_path):
    from beam_rtbf.archive.write import DATA_ROW_GROUP_ROWS
    from beam_rtbf.purge.verify import StoredFile, VerifyIdentifiers, verify_file

    n = 3 * DATA_ROW_GROUP_ROWS
    rows = [
        {
            "user_id": "alice" if i in (9_000, 9_001) else f"user-{i % 5_000}",
            "event_time_ms": 1_767_225_600_000 + i,
            "email": "Alice@Example.org" if i == 9_002 else None,
            "action": "view",
        }
        for i in range(n)
    ]
    table = pa.Table.from_pylist(rows, schema=SESSION_SCHEMA)
    path = tmp_path / "archive" / "dt=2026-01-01" / "part-0.parquet"
    path.parent.mkdir(parents=True)
    write_data_file(str(path), table)
    before = path.read_bytes()
    old = pq.read_metadata(path)
    assert old.num_row_groups == 3
    result = rewrite_file(
        FileTask("archive", str(path)), {"alice": ("req-a",), "alice@example.org": ("req-a",)}, str(tmp_path / "j")
    )
    assert (result.status, result.records_before, result.records_after, result.verified) == ("purged", n, n - 3, True)
    assert result.removed == {"req-a": 3}
    assert pq.read_table(path).to_pylist() == [
        r | {} for i, r in enumerate(table.to_pylist()) if i not in (9_000, 9_001, 9_002)
    ]
    new = pq.read_metadata(path)
    assert [new.row_group(g).num_rows for g in range(3)] == [
        DATA_ROW_GROUP_ROWS,
        DATA_ROW_GROUP_ROWS - 3,
        DATA_ROW_GROUP_ROWS,
    ]
    first = new.row_group(0).column(0)
    assert first.data_page_offset == old.row_group(0).column(0).data_page_offset  # the untouched group stayed
    end0 = max(
        new.row_group(0).column(j).data_page_offset + new.row_group(0).column(j).total_compressed_size
        for j in range(new.num_columns)
    )
    assert path.read_bytes()[:end0] == before[:end0]
    ids = VerifyIdentifiers({"req-a": ("alice", "alice@example.org")})
    verified = verify_file(StoredFile("archive", str(path), path.stat().st_size), ids)
    assert verified.found == {} and verified.by_metadata and verified.rows == n - 3


@pytest.mark.parametrize("base,parts", [("/a/b", ("c",)), ("/a/b/", ("c", "d.json")), ("rel/x", ("y",)), ("/a", ())])
def test_local_join_is_what_the_file_system_joins(base, parts):
    assert join(base, *parts) == FileSystems.join(base, *parts) == os.path.join(base, *parts)


@pytest.mark.parametrize(
    "files,size,chunks", [(0, 1, 0), (1, 1, 1), (32, 1, 32), (33, 2, 17), (536, 17, 32), (5000, 64, 79)]
)
def test_the_verification_scans_the_listing_in_chunks(files, size, chunks):
    from beam_rtbf.purge.verify import chunk_size

    assert chunk_size(files) == size
    assert len(range(0, files, size)) == chunks


def test_every_listed_file_is_scanned_once_whatever_the_chunks(tmp_path):
    from beam_rtbf.purge.verify import VerifyErasure

    archive = tmp_path / "archive"
    for i in range(70):  # 3 chunks of 3 files and more
        (archive / f"h{i % 7}").mkdir(parents=True, exist_ok=True)
        (archive / f"h{i % 7}" / f"x{i}.txt").write_text("nobody\nalice\n" if i == 69 else "nobody\n")
    (tmp_path / "deadletter").mkdir()
    with beam.Pipeline() as p:
        done = p | beam.Create([1])
        summary = done | VerifyErasure(str(archive), str(tmp_path / "deadletter"), {"req-a": ("alice",)})
        (
            summary
            | beam.Map(lambda s: (s.scanned["other_files"], s.scanned["rows"], s.found))
            | beam.Map(lambda got: _expect(got, (70, 71, {"req-a": 1})))
        )


def _expect(got, want):
    assert got == want, got


def test_option_views_are_built_once_per_class_and_share_their_values():
    import copy
    import pickle

    from apache_beam.options.pipeline_options import PipelineOptions, StandardOptions

    from beam_rtbf.options import RtbfOptions, ViewCachingOptions, with_cached_views

    original = PipelineOptions(["--output=/x", "--registry=embedded:///x/r.sqlite"])
    options = with_cached_views(original)
    assert isinstance(options, ViewCachingOptions) and with_cached_views(options) is options
    assert options.view_as(RtbfOptions) is options.view_as(RtbfOptions)
    assert options.view_as(RtbfOptions).output == "/x"
    options.view_as(StandardOptions).streaming = True
    assert original.view_as(StandardOptions).streaming is True  # one set of values
    original.view_as(RtbfOptions).output = "/y"
    assert options.view_as(RtbfOptions).output == "/y"
    for other in (copy.deepcopy(options), pickle.loads(pickle.dumps(options))):
        assert other.view_as(RtbfOptions) is not options.view_as(RtbfOptions)
        assert (other.view_as(RtbfOptions).output, other.view_as(StandardOptions).streaming) == ("/y", True)
        other.view_as(RtbfOptions).output = "/z"
        assert options.view_as(RtbfOptions).output == "/y"


def test_building_the_purge_graph_parses_the_flags_a_bounded_number_of_times(tmp_path, monkeypatch):
    from apache_beam.options import pipeline_options

    parses = []
    original = pipeline_options._BeamArgumentParser.parse_known_args
    monkeypatch.setattr(
        pipeline_options._BeamArgumentParser,
        "parse_known_args",
        lambda self, *a, **k: parses.append(1) or original(self, *a, **k),
    )
    _graph(tmp_path)
    assert len(parses) <= 40, len(parses)  # was 300 and more: one parse per view_as


class _SamplingPeriod(beam.DoFn):
    def process(self, element):
        from apache_beam.runners.worker import statesampler

        yield statesampler.get_current_tracker().sampling_period_ms


def test_a_bundle_of_the_direct_runner_samples_its_steps_every_10_ms_so_it_ends_when_its_work_does(tmp_path):
    # Beam's default (200 ms) made a bundle's end wait up to 200 ms for its sampler thread.
    from beam_rtbf.job import STATE_SAMPLING_PERIOD_MS, resolve_runner

    runner = resolve_runner("direct", streaming=False)
    out = tmp_path / "period"
    with beam.Pipeline(runner=runner) as p:
        _ = p | beam.Create([0]) | beam.ParDo(_SamplingPeriod()) | beam.Map(lambda v: out.write_text(str(v)))
    assert STATE_SAMPLING_PERIOD_MS == 10
    assert out.read_text() == "10"


def test_a_rewrite_uses_what_the_scan_read_only_while_the_file_is_unchanged(tmp_path, monkeypatch):
    from beam_rtbf.purge import rewrite as rewrite_module

    path = _archive_file(tmp_path)
    task, ids = FileTask("archive", str(path)), {"alice": ("req-a",)}
    scan, scanned = rewrite_module.scan_and_keep(task, ids, rewrite_module.ReadBudget(1 << 20))
    assert (scan.total, scan.removed_total, scan.removed) == (10, 5, {"req-a": 5}) and scanned is not None

    def no_second_read(task):
        raise AssertionError("read again")

    with monkeypatch.context() as patch:  # unchanged: read once, by the scan
        patch.setattr(rewrite_module, "_read_archive_file", no_second_read)
        result = rewrite_file(task, ids, str(tmp_path / "j"), scanned=scanned)
    assert (result.status, result.records_before, result.records_after, result.verified) == ("purged", 10, 5, True)

    # Changed since the scan (another alice row written): read again, and every alice row goes.
    path.unlink()
    rows = [{"user_id": u, "event_time_ms": 1_767_225_600_000 + i} for i, u in enumerate(["alice", "bob", "alice"])]
    write_data_file(str(path), pa.Table.from_pylist(rows, schema=SESSION_SCHEMA))
    os.utime(path, ns=(1, 1))
    result = rewrite_file(task, ids, str(tmp_path / "j"), scanned=scanned)
    assert (result.status, result.records_before, result.records_after) == ("purged", 3, 1)
    assert pq.read_table(path, columns=["user_id"]).column(0).to_pylist() == ["bob"]


def test_the_scans_keep_files_for_their_rewrites_only_within_the_budget(tmp_path):
    from beam_rtbf.purge.rewrite import ReadBudget, scan_and_keep

    path = _archive_file(tmp_path)
    size = path.stat().st_size
    budget = ReadBudget(size + size // 2)
    task, ids = FileTask("archive", str(path)), {"alice": ("req-a",)}
    assert scan_and_keep(task, ids, budget)[1] is not None
    assert scan_and_keep(task, ids, budget)[1] is None  # over the budget: the rewrite reads it again
    assert scan_and_keep(task, {"carol": ("req-c",)}, ReadBudget(1 << 30))[1] is None  # nothing to remove
    assert scan_and_keep(FileTask("archive", str(tmp_path / "gone.parquet")), ids, budget)[0].total == 0


def test_a_replaced_file_keeping_size_and_modification_time_is_read_again(tmp_path):
    # cp -p, rsync -a or a restore keep the modification time: the inode and change time tell.
    from beam_rtbf.purge.rewrite import ReadBudget, scan_and_keep

    def rows(bob_time: int) -> pa.Table:
        values = [
            {"user_id": u, "event_time_ms": bob_time if i == 3 else 1_767_225_600_000 + i, "event_id": f"e{i}"}
            for i, u in enumerate(["alice", "bob"] * 5)
        ]
        return pa.Table.from_pylist(values, schema=SESSION_SCHEMA)

    path = tmp_path / "part-0.parquet"
    write_data_file(str(path), rows(1_000))
    task, ids = FileTask("archive", str(path)), {"alice": ("req-a",)}
    _, scanned = scan_and_keep(task, ids, ReadBudget(1 << 20))
    status = path.stat()
    replacement = tmp_path / "replacement.parquet"
    for bob_time in range(1_001, 1_100):  # another version: bob's session 3 changed, the same size
        write_data_file(str(replacement), rows(bob_time))
        if replacement.stat().st_size == status.st_size:
            break
    assert replacement.stat().st_size == status.st_size
    os.utime(replacement, ns=(status.st_atime_ns, status.st_mtime_ns))
    os.replace(replacement, path)
    result = rewrite_file(task, ids, str(tmp_path / "j"), scanned=scanned)
    assert (result.status, result.records_after) == ("purged", 5)
    assert pq.read_table(path).column("event_time_ms")[1].as_py() == bob_time  # the replacement's, not the scan's


def test_a_column_that_does_not_decode_fails_its_file_not_the_purge(tmp_path):
    from beam_rtbf.archive.idfilter import write_parquet
    from beam_rtbf.archive.write import DATA_DICTIONARY_COLUMNS, INDEX_ID_COLUMNS
    from beam_rtbf.purge.rewrite import rewrite_or_error

    rows = [
        {"user_id": "alice" if i == 1_500 else f"user-{i}", "event_time_ms": i, "event_id": f"event-{i:08d}"}
        for i in range(4_000)
    ]
    table = pa.Table.from_pylist(rows, schema=SESSION_SCHEMA)
    for group_rows in (1_000, 4_000):  # spliced, and re-encoded whole
        sink = pa.BufferOutputStream()
        write_parquet(
            sink, table, INDEX_ID_COLUMNS, row_group_rows=group_rows, dictionary_columns=DATA_DICTIONARY_COLUMNS
        )
        data = bytearray(sink.getvalue().to_pybytes())
        group = 1 if group_rows == 1_000 else 0
        column = pq.read_metadata(pa.BufferReader(bytes(data))).row_group(group).column(7)  # event_id
        data[column.data_page_offset : column.data_page_offset + 3] = b"\x15\xff\xff"  # a damaged page header
        path = tmp_path / f"part-{group_rows}.parquet"
        path.write_bytes(bytes(data))
        result = rewrite_or_error(
            FileTask("archive", str(path)), {"alice": ("req-a",)}, str(tmp_path / "j"), True, "", False
        )
        assert result.status == "error" and "not a readable Parquet file" in result.detail
        assert path.read_bytes() == bytes(data)  # the original stays
