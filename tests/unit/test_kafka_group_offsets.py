"""KafkaPoller waits for a group coordinator that is moving or loading, and only for that."""

from __future__ import annotations

import pytest
from confluent_kafka import KafkaError, KafkaException, TopicPartition

from beam_rtbf.sources.kafka import KafkaPoller


class FlakyCoordinator:
    """A consumer whose committed() fails with ``errors`` first, then answers."""

    def __init__(self, errors: list[int]) -> None:
        self.errors = list(errors)
        self.calls = 0

    def committed(self, partitions, timeout):
        self.calls += 1
        if self.errors:
            raise KafkaException(KafkaError(self.errors.pop(0)))
        return [TopicPartition(p.topic, p.partition, 7) for p in partitions]


def poller_with(consumer) -> KafkaPoller:
    poller = KafkaPoller("127.0.0.1:1", "t", "g")
    poller._consumer = consumer  # noqa: SLF001 - the unit under test reads it
    return poller


@pytest.mark.parametrize(
    "code",
    [KafkaError.NOT_COORDINATOR, KafkaError.COORDINATOR_LOAD_IN_PROGRESS, KafkaError.COORDINATOR_NOT_AVAILABLE],
)
def test_a_coordinator_moving_or_loading_is_waited_for(code):
    consumer = FlakyCoordinator([code, code])
    got = poller_with(consumer)._group_offsets([TopicPartition("t", 0), TopicPartition("t", 1)])  # noqa: SLF001
    assert [(tp.partition, tp.offset) for tp in got] == [(0, 7), (1, 7)]
    assert consumer.calls == 3


def test_other_errors_are_raised_at_once():
    consumer = FlakyCoordinator([KafkaError.GROUP_AUTHORIZATION_FAILED])
    with pytest.raises(KafkaException):
        poller_with(consumer)._group_offsets([TopicPartition("t", 0)])  # noqa: SLF001
    assert consumer.calls == 1


def test_the_wait_is_bounded():
    consumer = FlakyCoordinator([KafkaError.NOT_COORDINATOR] * 1000)
    with pytest.raises(KafkaException):
        poller_with(consumer)._group_offsets([TopicPartition("t", 0)], patience_s=0.5)  # noqa: SLF001
    assert 2 <= consumer.calls < 10
