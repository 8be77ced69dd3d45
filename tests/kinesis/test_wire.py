"""The Kinesis wire: limits, fragments and bodies Kinesis accepts, and the outcome of each error."""

from __future__ import annotations

import base64

import numpy as np
import orjson
import pyarrow as pa
import pytest
from shardline.errors import StreamNotFoundError, TransportError
from shardline.transport import PutFailure
from shardline.wire import Outcome, Placement, RequestOutcome, Wire
from shardline_kinesis.client import KinesisError, KinesisKMSError, KinesisThrottledError
from shardline_kinesis.wire import KinesisWire


class _Ranges:
    """A shard map's ``address`` (the starting hash key of each lane)."""

    def __init__(self, starts: list[int]) -> None:
        self.starts = starts

    def address(self, lane: int) -> str:
        return str(self.starts[lane])


def _placement(data: list[bytes], keys: list[str], lanes: list[int], addressed: bool = False) -> Placement:
    distinct = sorted(set(keys))
    return Placement(
        data=pa.array(data, pa.large_binary()),
        key_json=pa.array([orjson.dumps(k) for k in distinct], pa.large_binary()),
        key_index=np.array([distinct.index(k) for k in keys], np.int64),
        shards=np.array(lanes, np.int64),
        shard_map=_Ranges([0, 2**127, 2**127 + 5]),  # type: ignore[arg-type]
        addressed=addressed,
        client_info=None,
    )


def _body(wire: KinesisWire, placement: Placement) -> bytes:
    frags = wire.fragments(placement)
    return wire.body([b"".join(v.as_py() for v in frags)])


def test_wire_satisfies_the_contract_with_kinesis_limits() -> None:
    wire = KinesisWire("orders")
    assert isinstance(wire, Wire)
    lim = wire.limits
    assert (lim.max_records_per_request, lim.max_request_bytes, lim.max_record_bytes) == (
        500,
        5 * 2**20,
        2**20,
    )
    assert lim.record_counts_key and lim.key_required and not lim.client_info
    assert (lim.max_key_length, lim.key_length_unit, lim.min_key_length) == (256, "chars", 1)
    assert lim.addressing == "hash-range"


def test_body_is_a_putrecords_document_with_every_record_in_order() -> None:
    wire = KinesisWire("orders")
    data = [b"\x00\xffbinary", b"", b'{"a": "\xc3\xa9"}', b"x" * 1000]
    keys = ['k"1', "ключ", 'k"1', "z"]
    doc = orjson.loads(_body(wire, _placement(data, keys, [0, 0, 1, 1])))
    assert doc["StreamName"] == "orders"
    assert [base64.b64decode(r["Data"]) for r in doc["Records"]] == data
    assert [r["PartitionKey"] for r in doc["Records"]] == keys
    assert all("ExplicitHashKey" not in r for r in doc["Records"])


def test_a_record_without_a_key_has_no_partition_key_field() -> None:
    """Kinesis dead-letters keyless rows before placement; a wire given one anyway (key index -1)
    still writes valid JSON, the other records keeping their keys."""
    wire = KinesisWire("orders")
    placement = _placement([b"a", b"bb", b"ccc"], ["k", "k", "m"], [0, 0, 1])
    placement.key_index[1] = -1
    doc = orjson.loads(_body(wire, placement))
    assert [r.get("PartitionKey") for r in doc["Records"]] == ["k", None, "m"]
    assert [base64.b64decode(r["Data"]) for r in doc["Records"]] == [b"a", b"bb", b"ccc"]


def test_addressed_records_name_their_shard_by_explicit_hash_key() -> None:
    wire = KinesisWire("s")
    doc = orjson.loads(
        _body(wire, _placement([b"a", b"b", b"c"], ["x", "y", "z"], [0, 1, 2], addressed=True))
    )
    assert [r["ExplicitHashKey"] for r in doc["Records"]] == ["0", str(2**127), str(2**127 + 5)]


def test_body_overhead_counts_the_bytes_around_the_fragments() -> None:
    wire = KinesisWire("a-stream.name_1")
    frags = wire.fragments(_placement([b"12", b"345"], ["a", "b"], [0, 0]))
    parts = [v.as_py() for v in frags]
    assert len(wire.body(parts)) == wire.body_overhead + sum(map(len, parts))
    assert orjson.loads(wire.body([])) == {"StreamName": "a-stream.name_1", "Records": []}


def test_fragments_of_no_records_are_empty() -> None:
    assert len(KinesisWire("s").fragments(_placement([], [], []))) == 0


@pytest.mark.parametrize(
    ("name", "outcome"),
    [
        ("ProvisionedThroughputExceededException", Outcome.THROTTLED),
        ("KMSThrottlingException", Outcome.THROTTLED),
        ("InternalFailure", Outcome.RETRY),
        ("KMSDisabledException", Outcome.RETRY),
    ],
)
def test_record_failures_are_throttled_or_retried(name: str, outcome: Outcome) -> None:
    assert KinesisWire("s").classify(PutFailure(0, -1, name, "shard 1 of account 0")) is outcome


@pytest.mark.parametrize(
    ("error", "outcome"),
    [
        (
            KinesisThrottledError("x", name="LimitExceededException", status=400, retryable=True),
            RequestOutcome.THROTTLED,
        ),
        (KinesisError("x", name="HTTP 503", status=503, retryable=True), RequestOutcome.THROTTLED),
        (KinesisError("x", name="InternalFailure", status=500, retryable=True), RequestOutcome.UNREACHABLE),
        (KinesisError("x", name="ConnectionError", status=None, retryable=True), RequestOutcome.UNREACHABLE),
        (
            KinesisError("x", name="ResourceInUseException", status=400, retryable=True),
            RequestOutcome.UNREACHABLE,
        ),
        (StreamNotFoundError("x"), RequestOutcome.FATAL),
        (
            KinesisKMSError("x", name="KMSDisabledException", status=400, retryable=False),
            RequestOutcome.FATAL,
        ),
        (KinesisError("x", name="ValidationException", status=400, retryable=False), RequestOutcome.FATAL),
    ],
)
def test_request_failures_are_classified(error: TransportError, outcome: RequestOutcome) -> None:
    assert KinesisWire("s").classify_request(error) is outcome
