"""The acknowledged-prefix bookkeeping behind every commit (no broker needed)."""

from __future__ import annotations

from kafka import TopicPartition
from shardline_kafka.offsets import OffsetTracker

A, B = TopicPartition("t", 0), TopicPartition("t", 1)


def test_an_early_ack_never_lets_the_commit_skip_an_unacknowledged_batch():
    tracker = OffsetTracker()
    tracker.assign({A})
    first = tracker.register({A: 10})
    second = tracker.register({A: 20})
    tracker.ack(second)
    assert tracker.to_commit() == {}  # 0..9 not acknowledged yet
    tracker.ack(first)
    assert tracker.to_commit() == {A: 20}


def test_partitions_advance_independently_within_one_batch():
    tracker = OffsetTracker()
    tracker.assign({A, B})
    one = tracker.register({A: 5, B: 7})
    two = tracker.register({B: 9})
    tracker.ack(two)
    assert tracker.to_commit() == {}
    tracker.ack(one)
    assert tracker.to_commit() == {A: 5, B: 9}
    tracker.committed({A: 5, B: 9})
    assert tracker.to_commit() == {} and tracker.unacked() == 0


def test_acks_of_a_revoked_partition_are_ignored_after_it_comes_back():
    tracker = OffsetTracker()
    tracker.assign({A})
    stale = tracker.register({A: 50})
    tracker.revoke({A})
    tracker.assign({A})  # re-read from the committed offset by the new epoch
    fresh = tracker.register({A: 10})
    tracker.ack(stale)
    assert tracker.to_commit() == {}
    tracker.ack(fresh)
    assert tracker.to_commit() == {A: 10}


def test_wait_acked_returns_once_the_partition_has_nothing_pending():
    tracker = OffsetTracker()
    tracker.assign({A, B})
    token = tracker.register({A: 3})
    tracker.register({B: 4})
    assert not tracker.wait_acked({A}, timeout=0.01)
    tracker.ack(token)
    assert tracker.wait_acked({A}, timeout=0.01)
    assert tracker.unacked({B}) == 1
