"""Fail closed: a stale or unreadable deletion set holds sessions back, never passes them.

Pure logic, so the DoFns are driven directly with small stand-ins for Beam's
state and timers, and the registry follower with a registry that fails on cue.
"""

from __future__ import annotations

import time

import pyarrow as pa
import pytest
from apache_beam.pvalue import TaggedOutput
from apache_beam.transforms.window import TimestampedValue
from apache_beam.utils.timestamp import Timestamp

from beam_rtbf.filter import follower as follower_module
from beam_rtbf.filter.broadcast import DeletionSetView, DropForgottenFn, StaleDeletionSet
from beam_rtbf.filter.deletion_set import DeletionSet
from beam_rtbf.filter.follower import RegistryFollower
from beam_rtbf.filter.keyed_state import DropForgottenInStateFn
from beam_rtbf.records import AcceptedRequest, ErasureRequest
from beam_rtbf.registry import RegistryDelta, RegistryUnavailable
from tests.helpers.data import T0, sessions


def _clean_users(outputs) -> list[str]:
    users = []
    for out in outputs:
        value = out.value if isinstance(out, TimestampedValue) else out
        if isinstance(value, pa.RecordBatch):
            users += value.column("user_id").to_pylist()
    return users


def test_side_input_older_than_its_bound_fails_the_bundle():
    fn = DropForgottenFn(max_staleness_s=5.0)
    batch = sessions([("gone", T0), ("kept", T0)])
    view = DeletionSetView(DeletionSet.of(["gone"]), version=3, fresh_at_s=time.time() - 60)
    with pytest.raises(StaleDeletionSet, match="version 3 is 6[0-9].[0-9]s old"):
        list(fn.process(batch, view))
    fresh = DeletionSetView(DeletionSet.of(["gone"]), version=4, fresh_at_s=time.time())
    outputs = list(fn.process(batch, fresh))
    assert _clean_users(outputs) == ["kept"]
    assert [o.value for o in outputs if isinstance(o, TaggedOutput)] == [1]


class _FlakyRegistry:
    """Answers deltas while ``up`` is True, raises RegistryUnavailable otherwise."""

    def __init__(self, state: dict) -> None:
        self.state = state

    def delta_since(self, version: int) -> RegistryDelta:
        if not self.state["up"]:
            raise RegistryUnavailable("connection refused")
        ids = tuple(s for v, s in self.state["log"] if v > version)
        return RegistryDelta(version, self.state["version"], ids)

    def close(self) -> None:
        pass


@pytest.fixture
def flaky(monkeypatch):
    state = {"up": True, "version": 1, "log": [(1, "first")]}
    monkeypatch.setattr(follower_module, "open_registry", lambda url: _FlakyRegistry(state))
    return state


def test_follower_fetches_deltas_and_returns_none_once_too_stale(flaky):
    follower = RegistryFollower("flaky://", refresh_interval_s=0.0, max_staleness_s=0.3)
    current = follower.current()
    assert current is not None and "first" in current and current.version == 1
    flaky["log"].append((2, "second"))
    flaky["version"] = 2
    assert "second" in follower.current() and follower.current().version == 2
    flaky["up"] = False
    assert follower.current() is not None  # still within its staleness bound
    time.sleep(0.35)
    assert follower.current() is None  # too stale: callers must hold sessions
    flaky["up"] = True
    flaky["log"].append((3, "third"))
    flaky["version"] = 3
    recovered = follower.current()
    assert recovered is not None and recovered.version == 3
    assert all(subject in recovered for subject in ("first", "second", "third"))


class _Bag:
    def __init__(self) -> None:
        self.items: list = []

    def add(self, value) -> None:
        self.items.append(value)

    def read(self):
        return list(self.items)

    def clear(self) -> None:
        self.items = []


class _Value:
    def __init__(self) -> None:
        self.value = None

    def read(self):
        return self.value

    def write(self, value) -> None:
        self.value = value


class _Timer:
    def __init__(self) -> None:
        self.set_at: list[Timestamp] = []

    def set(self, when) -> None:
        self.set_at.append(when)


class _StubFollower:
    def __init__(self) -> None:
        self.answer: DeletionSet | None = None

    def current(self, force: bool = False):
        return self.answer


def test_state_filter_holds_batches_while_registry_is_stale_and_releases_them_filtered():
    fn = DropForgottenInStateFn("unused://", refresh_interval_s=0.5, max_staleness_s=1.0)
    fn.setup()  # its per-process caches; the follower (not yet connected) is replaced by a stub
    fn._follower = _StubFollower()
    requests, count, held, retry = _Bag(), _Value(), _Bag(), _Timer()
    state = dict(requests_state=requests, count_state=count, held_state=held, retry=retry)
    stamp = Timestamp(micros=(T0 + 5_000) * 1000)

    # A request that arrived through the pipeline is in keyed state even while the registry is down.
    accepted = AcceptedRequest(ErasureRequest("r1", "alice", T0), accepted_at_ms=int(time.time() * 1000), version=1)
    effective = list(fn.process((0, accepted), timestamp=stamp, **state))
    assert [o.tag for o in effective] == ["effective"]

    batch = sessions([("alice", T0 + 1), ("bob", T0 + 2), ("carol", T0 + 3)])
    assert list(fn.process((0, batch), timestamp=stamp, **state)) == []  # held, nothing passes
    assert len(held.items) == 1 and len(retry.set_at) == 1

    assert list(fn.on_retry(key=0, **state)) == []  # still down: re-armed
    assert len(retry.set_at) == 2 and len(held.items) == 1

    fn._follower.answer = DeletionSet.of(["carol"], version=7)  # registry back; it also forgot carol
    released = list(fn.on_retry(key=0, **state))
    assert _clean_users(released) == ["bob"]
    assert all(o.timestamp == stamp for o in released if isinstance(o, TimestampedValue))
    assert [o.value for o in released if isinstance(o, TaggedOutput)] == [2]
    assert held.items == []
