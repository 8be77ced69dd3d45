"""The v3io PutRecords wire: record fragments form the bodies the server parses, and every error
name and status the server answers with has the outcome the engine acts on."""

from __future__ import annotations

import base64

import numpy as np
import orjson
import pyarrow as pa
import pytest
from shardline.errors import AccessDeniedError, StreamNotFoundError, TransportError
from shardline.records import RecordMapping, map_columns, place
from shardline.transport import PutFailure
from shardline.wire import Outcome, RequestOutcome, Wire
from shardline_v3io import errors as E
from shardline_v3io.local import LocalTransport
from shardline_v3io.transport import V3ioTransport
from shardline_v3io.wire import LIMITS, MAX_REQUEST_BODY_BYTES, V3IO_WIRE


def test_the_v3io_transports_expose_the_v3io_wire() -> None:
    assert isinstance(V3IO_WIRE, Wire)
    assert V3ioTransport.wire is V3IO_WIRE and LocalTransport.wire is V3IO_WIRE
    assert LIMITS.max_request_bytes == MAX_REQUEST_BODY_BYTES
    assert LIMITS.client_info and LIMITS.addressing == "shard-id"


def test_fragments_form_a_valid_body_sorted_by_shard() -> None:
    batch = pa.record_batch(
        {"k": ["a", "b", "c", "a", None], "v": [1, 2, 3, 4, 5], "ci": [b"x", None, b"", b"y", b"z"]}
    )
    mapping = RecordMapping(partition_key="k", client_info="ci", columns=("k", "v"))
    enc = place(map_columns(batch, mapping, LIMITS), 4, "hash", wire=V3IO_WIRE)
    assert list(enc.shards) == sorted(enc.shards)
    body = V3IO_WIRE.body([enc.fragments])
    assert len(body) == int(enc.offsets[-1]) + V3IO_WIRE.body_overhead
    records = orjson.loads(body)["Records"]
    assert len(records) == 5
    for i, rec in enumerate(records):
        row = int(enc.rows[i])
        assert (
            orjson.loads(base64.b64decode(rec["Data"]))
            == batch.select(["k", "v"]).slice(row, 1).to_pylist()[0]
        )
        assert rec["ShardId"] == int(enc.shards[i])
        assert rec.get("PartitionKey") == batch.column("k")[row].as_py()
        ci = batch.column("ci")[row].as_py()
        assert ("ClientInfo" in rec) == (ci is not None)
    assert np.all(enc.offsets[1:] > enc.offsets[:-1])


def test_server_partitioner_sends_no_shard_id() -> None:
    batch = pa.record_batch({"k": ["a", "b"]})
    cols = map_columns(batch, RecordMapping(partition_key="k", partitioner="server"), LIMITS)
    enc = place(cols, 4, "server", wire=V3IO_WIRE)
    assert all("ShardId" not in r for r in orjson.loads(V3IO_WIRE.body([enc.fragments]))["Records"])


def test_an_empty_body_is_an_empty_record_list() -> None:
    assert orjson.loads(V3IO_WIRE.body([])) == {"Records": []}


@pytest.mark.parametrize(
    ("name", "outcome"),
    [
        (E.SHARD_OUT_OF_RANGE.name, Outcome.REFRESH),
        (E.INVALID_ARGUMENT.name, Outcome.PERMANENT),
        (E.RESOURCE_IS_NOT_STREAM.name, Outcome.PERMANENT),
        (E.PERMISSION_DENIED.name, Outcome.PERMANENT),
        ("RecordTooLarge", Outcome.PERMANENT),
        ("ThrottlingException", Outcome.THROTTLED),
        ("ProvisionedThroughputExceededException", Outcome.THROTTLED),
        (E.RESOURCE_BUSY.name, Outcome.RETRY),
        (E.INTERNAL_ERROR.name, Outcome.RETRY),
        ("", Outcome.RETRY),
    ],
)
def test_every_record_error_name_has_its_outcome(name: str, outcome: Outcome) -> None:
    assert V3IO_WIRE.classify(PutFailure(0, -1, name)) is outcome


def test_the_errors_the_server_retries_are_retried_by_the_client() -> None:
    for name in E.RETRYABLE_RECORD_ERRORS:
        assert V3IO_WIRE.classify(PutFailure(0, -1, name)) in (Outcome.RETRY, Outcome.THROTTLED)


@pytest.mark.parametrize(
    ("error", "outcome"),
    [
        (TransportError("429", status=429, retryable=True), RequestOutcome.THROTTLED),
        (TransportError("503", status=503, retryable=True), RequestOutcome.THROTTLED),
        (TransportError("500", status=500, retryable=True), RequestOutcome.UNREACHABLE),
        (TransportError("connection refused", retryable=True), RequestOutcome.UNREACHABLE),
        (TransportError("400 bad body", status=400, retryable=False), RequestOutcome.FATAL),
        (StreamNotFoundError("gone"), RequestOutcome.FATAL),
        (AccessDeniedError("no"), RequestOutcome.FATAL),
    ],
)
def test_whole_request_failures_have_their_outcome(error: TransportError, outcome: RequestOutcome) -> None:
    assert V3IO_WIRE.classify_request(error) is outcome
