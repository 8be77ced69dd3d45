"""The v3io Streaming Web API's PutRecords wire: limits, record fragments, bodies, error outcomes.

One module for both ends: the sink's transports (``http(s)://``, ``v3io://``, ``local://``) expose
:data:`V3IO_WIRE` as their ``wire``, and the embedded server and its store enforce the same
constants, so client and server agree byte for byte. "1 MB" means 1,048,576 bytes (2**20).

Facts from the PutRecords page of the v3io Streaming Web API
(https://www.iguazio.com/docs/latest-release/data-layer/reference/web-apis/streaming-web-api/putrecords/)
and the public v3io-py client (https://github.com/v3io/v3io-py):

- body ``{"Records":[{"Data":"<base64>","PartitionKey":"k","ShardId":3,"ClientInfo":"<base64>"}]}``;
- at most 1,000 records and a 10 MB JSON body (base64 growth included) per request, 1 MB of Data
  per record, a 256-byte PartitionKey, a 128-bit ClientInfo;
- per-record errors are names (``ShardIDOutOfRangeException``, ``InvalidArgumentException``, ...).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Final

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from shardline import (
    AccessDeniedError,
    Outcome,
    Placement,
    PutFailure,
    RequestOutcome,
    StreamNotFoundError,
    TransportError,
    WireLimits,
    b64_fields,
    b64encode_array,
    join_fragments,
    key_fields,
)

from shardline_v3io import errors as E

MAX_RECORDS_PER_REQUEST: Final = 1000
"""Records in one PutRecords request; more fails the whole request."""

MAX_REQUEST_BODY_BYTES: Final = 10 * 2**20
"""Size of a PutRecords JSON body, base64 growth of Data and ClientInfo included."""

MAX_DATA_BYTES: Final = 2**20
"""Size of one record's Data, before base64."""

MAX_PARTITION_KEY_BYTES: Final = 256
"""UTF-8 size of one record's PartitionKey."""

MAX_CLIENT_INFO_BYTES: Final = 16
"""Size of one record's ClientInfo (128 bits), before base64."""

BODY_PREFIX: Final = b'{"Records":['
BODY_SUFFIX: Final = b"]}"
BODY_OVERHEAD: Final = len(BODY_PREFIX) + len(BODY_SUFFIX)
"""Bytes of a PutRecords body around its records."""

LIMITS: Final = WireLimits(
    max_records_per_request=MAX_RECORDS_PER_REQUEST,
    max_request_bytes=MAX_REQUEST_BODY_BYTES,
    max_record_bytes=MAX_DATA_BYTES,
    record_counts_key=False,
    max_key_length=MAX_PARTITION_KEY_BYTES,
    key_length_unit="bytes",
    min_key_length=0,
    key_required=False,
    addressing="shard-id",
    client_info=True,
    max_client_info_bytes=MAX_CLIENT_INFO_BYTES,
)

SHARD_RANGE_ERROR: Final = E.SHARD_OUT_OF_RANGE.name
"""The per-record error naming a shard the stream does not have (it may have grown)."""
PERMANENT_ERRORS: Final = (
    "InvalidArgument",
    "TooLarge",
    "ResourceIsnotStream",
    "Permission",
    "ValidationException",
)
"""Per-record error names (substrings, any case) after which a record can never be written."""
THROTTLE_ERRORS: Final = ("Throttl", "ProvisionedThroughputExceeded", "TooManyRequests", "SlowDown")
"""Per-record error names (substrings, any case) that mean the shard's rate was exceeded."""
THROTTLE_STATUSES: Final = (429, 503)

_LB = pa.large_binary()


def _lb(value: bytes) -> pa.Scalar:
    return pa.scalar(value, _LB)


class V3ioWire:
    """The v3io PutRecords wire (see the module docstring); stateless, one shared :data:`V3IO_WIRE`."""

    limits: WireLimits = LIMITS
    body_overhead: int = BODY_OVERHEAD - 1

    def __init__(self) -> None:
        self._shard_json: dict[int, pa.Array] = {}

    def _shard_fields(self, count: int) -> pa.Array:
        """``,"ShardId":0`` .. ``,"ShardId":count-1``, then ``b""`` (cached per shard count)."""
        found = self._shard_json.get(count)
        if found is None:
            found = pa.array([b',"ShardId":' + str(s).encode() for s in range(count)] + [b""], _LB)
            self._shard_json[count] = found
        return found

    def fragments(self, placement: Placement) -> pa.Array:
        """``{"Data":"<b64>","PartitionKey":"k","ShardId":3,"ClientInfo":"<b64>"},`` per record,
        built column at a time (``large_binary``)."""
        p = placement
        pieces: list[pa.Array | pa.Scalar] = [_lb(b'{"Data":"'), b64encode_array(p.data), _lb(b'"')]
        if p.key_index is not None:
            assert p.key_json is not None
            pieces.append(key_fields(b',"PartitionKey":', p.key_json, p.key_index))
        if p.addressed:
            count = max(p.shard_map.shard_count, 1)
            pieces.append(self._shard_fields(count).take(pa.array(np.minimum(p.shards, count))))
        if p.client_info is not None:
            pieces.append(b64_fields(b',"ClientInfo":"', p.client_info))
        pieces.append(_lb(b"},"))
        return pc.binary_join_element_wise(*pieces, _lb(b""))

    def body(self, parts: Sequence[memoryview | bytes]) -> bytes:
        """``{"Records":[...]}`` from fragment slices (each a run of ``{...},`` fragments)."""
        return join_fragments(BODY_PREFIX, parts, BODY_SUFFIX)

    def classify(self, failure: PutFailure) -> Outcome:
        """ShardIDOutOfRange: REFRESH; invalid, too large, not a stream, permission: PERMANENT;
        throttling names: THROTTLED; anything else (busy, internal errors): RETRY."""
        return classify_error(failure.error_message or f"error {failure.error_code}")

    def classify_request(self, error: TransportError) -> RequestOutcome:
        """429/503: THROTTLED; other retryable statuses and connection errors: UNREACHABLE; a
        missing stream, access denied or a request refused as invalid (4xx): FATAL."""
        if isinstance(error, StreamNotFoundError | AccessDeniedError):
            return RequestOutcome.FATAL
        if error.retryable:
            return (
                RequestOutcome.THROTTLED if error.status in THROTTLE_STATUSES else RequestOutcome.UNREACHABLE
            )
        return RequestOutcome.FATAL


def classify_error(message: str) -> Outcome:
    """The outcome a v3io per-record error name means (never ``WRITTEN``)."""
    lowered = message.lower()
    if SHARD_RANGE_ERROR.lower() in lowered:
        return Outcome.REFRESH
    if any(name.lower() in lowered for name in PERMANENT_ERRORS):
        return Outcome.PERMANENT
    if any(name.lower() in lowered for name in THROTTLE_ERRORS):
        return Outcome.THROTTLED
    return Outcome.RETRY


V3IO_WIRE: Final = V3ioWire()
"""The wire every v3io transport exposes."""
