"""Every filter strategy gives the same clean output, on the embedded registry and on real Redis."""

from __future__ import annotations

import pytest

from beam_rtbf.pipeline import run
from beam_rtbf.records import ErasureRequest
from beam_rtbf.registry import open_registry
from beam_rtbf.testing.redis_server import RedisServer
from tests.helpers.data import archive_rows

pytestmark = pytest.mark.slow

SESSIONS = "synthetic://sessions?users=3000&sessions=40000&seed=21&bad_rate=0.001"
REQUESTS = "synthetic://requests?users=3000&requests=60&seed=21"


def _run(tmp_path, name: str, registry: str, strategy: str) -> tuple[dict, list[str]]:
    out = tmp_path / name
    summary = run(
        [
            f"--output={out}",
            f"--registry={registry}",
            f"--filter_strategy={strategy}",
            f"--sessions={SESSIONS}",
            f"--requests={REQUESTS}",
        ]
    )
    return summary, sorted(archive_rows(str(out)).column("event_id").to_pylist())


@pytest.mark.parametrize("backend", ["embedded", pytest.param("redis", marks=pytest.mark.integration)])
def test_strategies_agree(tmp_path, backend):
    server = None
    if backend == "redis":
        server = RedisServer(str(tmp_path / "redis"))
        server.start()
    try:
        results = {}
        for index, strategy in enumerate(["broadcast", "lookup", "bloom"]):
            if server is not None:
                registry = f"{server.url.rsplit('/', 1)[0]}/{index}"  # a fresh Redis database per run
            else:
                registry = f"embedded://{tmp_path}/registry-{strategy}.sqlite"
            results[strategy] = _run(tmp_path, strategy, registry, strategy)
        counts = {s: (r[0]["clean"], r[0]["suppressed"], r[0]["dead_lettered"]) for s, r in results.items()}
        assert len(set(counts.values())) == 1, counts
        clean, suppressed, dead = counts["broadcast"]
        assert suppressed > 0 and dead > 0
        assert results["broadcast"][1] == results["lookup"][1] == results["bloom"][1]
        assert len(results["broadcast"][1]) == clean
    finally:
        if server is not None:
            server.stop()


def test_auto_picks_bloom_for_a_big_set_and_says_why(tmp_path):
    with open_registry(f"embedded://{tmp_path}/r.sqlite") as registry:
        registry.add([ErasureRequest(f"old-{i}", f"old-user-{i}", 1) for i in range(11)])
    summary = run(
        [
            f"--output={tmp_path / 'o'}",
            f"--registry=embedded://{tmp_path}/r.sqlite",
            "--broadcast_max_subjects=10",
            f"--sessions={SESSIONS}",
            f"--requests={REQUESTS}",
        ]
    )
    assert summary["filter_strategy"] == "bloom"
    assert summary["filter_strategy_reason"].startswith("bounded run, 11 forgotten ids")
    assert "> --broadcast_max_subjects" in summary["filter_strategy_reason"]
