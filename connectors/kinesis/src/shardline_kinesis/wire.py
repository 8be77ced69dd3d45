"""The Kinesis PutRecords wire: limits, record fragments, request bodies, failure outcomes.

Facts (https://docs.aws.amazon.com/kinesis/latest/APIReference/API_PutRecords.html):

- at most 500 records per request, and at most 5 MiB for the whole request "including partition
  keys": Kinesis counts each record's Data (before base64) plus its PartitionKey's UTF-8 bytes;
- each record at most 1 MiB, Data plus PartitionKey;
- PartitionKey is required, 1 to 256 Unicode characters; ``ExplicitHashKey`` (optional, a decimal
  128-bit integer) overrides the MD5 of the key for routing; there is no ShardId and no ClientInfo;
- the answer lists every record in request order: ``SequenceNumber`` and ``ShardId`` for a written
  record, ``ErrorCode`` and ``ErrorMessage`` for a failed one, where ``ErrorCode`` is
  ``ProvisionedThroughputExceededException`` or ``InternalFailure``
  (https://docs.aws.amazon.com/kinesis/latest/APIReference/API_PutRecordsResultEntry.html).

Packing rule: the engine packs *encoded* fragments (``{"Data":"<base64>",...},``) up to
``max_request_bytes`` = 5 MiB. Base64 makes Data 4/3 larger and the key appears once in its JSON
form, so the payload Kinesis counts is then always below 5 MiB: the rule is safe without a second
count, and it gives away at most a quarter of a request's payload allowance (a shard takes 1 MiB/s
of writes anyway, so requests are rarely byte-bound).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from shardline import (
    Outcome,
    Placement,
    PutFailure,
    RequestOutcome,
    TransportError,
    WireLimits,
    b64encode_array,
    join_fragments,
    key_fields,
)

_LB = pa.large_binary()

MAX_RECORDS_PER_REQUEST = 500
MAX_REQUEST_BYTES = 5 * 2**20
MAX_RECORD_BYTES = 2**20
MAX_KEY_CHARS = 256

KINESIS_LIMITS = WireLimits(
    max_records_per_request=MAX_RECORDS_PER_REQUEST,
    max_request_bytes=MAX_REQUEST_BYTES,
    max_record_bytes=MAX_RECORD_BYTES,
    record_counts_key=True,
    max_key_length=MAX_KEY_CHARS,
    key_length_unit="chars",
    min_key_length=1,
    key_required=True,
    addressing="hash-range",
    client_info=False,
)

THROTTLED_ERRORS = frozenset({"ProvisionedThroughputExceededException", "KMSThrottlingException"})
"""Per-record errors that mean "this shard is over its rate": they drive the shard's AIMD."""

_FATAL_REQUEST_ERRORS = frozenset(
    {
        "ResourceNotFoundException",
        "AccessDeniedException",
        "UnrecognizedClientException",
        "InvalidSignatureException",
        "ExpiredTokenException",
        "KMSAccessDeniedException",
        "KMSDisabledException",
        "KMSInvalidStateException",
        "KMSNotFoundException",
        "KMSOptInRequired",
        "ValidationException",
        "InvalidArgumentException",
        "SerializationException",
    }
)


def _lb(value: bytes) -> pa.Scalar:
    return pa.scalar(value, _LB)


class KinesisWire:
    """:class:`shardline.wire.Wire` of Kinesis PutRecords for one stream (see the module docstring).

    ``fragments`` builds ``{"Data":"<b64>","PartitionKey":<json>[,"ExplicitHashKey":"<dec>"]},``
    per record column at a time; ``body`` wraps runs of them in
    ``{"StreamName":"<name>","Records":[...]}``.
    """

    limits = KINESIS_LIMITS

    def __init__(self, stream_name: str) -> None:
        import orjson

        self.stream_name = stream_name
        self._prefix = b'{"StreamName":' + orjson.dumps(stream_name) + b',"Records":['
        self._suffix = b"]}"
        self.body_overhead = len(self._prefix) + len(self._suffix) - 1

    def fragments(self, placement: Placement) -> pa.Array:
        """One ``large_binary`` fragment per placed record, each ending with ``,``."""
        n = len(placement.shards)
        if n == 0:
            return pa.array([], _LB)
        pieces: list[pa.Array | pa.Scalar] = [_lb(b'{"Data":"'), b64encode_array(placement.data)]
        key_json, key_index = placement.key_json, placement.key_index
        if key_json is not None and key_index is not None and not (key_index < 0).any():
            # every record has a key (the Kinesis case): one take of the keys' literals, no join
            # of the field name per key first
            pieces += [_lb(b'","PartitionKey":'), key_json.cast(_LB).take(pa.array(key_index))]
        else:
            pieces.append(_lb(b'"'))
            if key_json is not None and key_index is not None:
                pieces.append(key_fields(b',"PartitionKey":', key_json, key_index))
        if placement.addressed:
            lanes, inverse = np.unique(placement.shards, return_inverse=True)
            addresses = [placement.shard_map.address(int(s)) for s in lanes]
            # a hash-range map names a shard by its starting hash key (text); a numbered map's lanes
            # (ints) are no Kinesis address: the key's MD5 routes those records
            if all(isinstance(a, str) for a in addresses):
                hash_keys = pa.array(
                    [b',"ExplicitHashKey":"' + str(a).encode() + b'"' for a in addresses], _LB
                )
                pieces.append(hash_keys.take(pa.array(inverse.astype(np.int64))))
        pieces.append(_lb(b"},"))
        return pc.binary_join_element_wise(*pieces, _lb(b""))

    def body(self, parts: Sequence[memoryview | bytes]) -> bytes:
        """``{"StreamName":..,"Records":[<parts>]}`` with the last fragment's ``,`` dropped."""
        return join_fragments(self._prefix, parts, self._suffix)

    def classify(self, failure: PutFailure) -> Outcome:
        """ProvisionedThroughputExceeded and KMSThrottling -> THROTTLED (the shard's AIMD);
        everything else (InternalFailure, and any undocumented per-record error) -> RETRY.

        Kinesis documents only those two per-record codes; the KMS key errors (disabled, not
        found, access denied, invalid state) come for the whole request, where
        :meth:`classify_request` makes them FATAL with a message naming the key problem. Were one
        to come per record it is still the stream's key, not the record, that is wrong: the record
        is kept and retried rather than dead-lettered (a re-enabled key lets it through).
        """
        if failure.error_message in THROTTLED_ERRORS:
            return Outcome.THROTTLED
        return Outcome.RETRY

    def classify_request(self, error: TransportError) -> RequestOutcome:
        """Throttling names, 429 and 503 -> THROTTLED; missing stream, refused credentials, KMS key
        problems and invalid requests (non-retryable 4xx) -> FATAL; connection errors, timeouts,
        other 5xx and ResourceInUse (a reshard under way) -> UNREACHABLE (retried with backoff)."""
        name = getattr(error, "name", None)
        from shardline_kinesis.client import KinesisThrottledError

        if isinstance(error, KinesisThrottledError) or error.status in (429, 503):
            return RequestOutcome.THROTTLED
        if name in _FATAL_REQUEST_ERRORS or not error.retryable:
            return RequestOutcome.FATAL
        return RequestOutcome.UNREACHABLE
