"""What a transport tells the engine about its wire protocol: limits, encoding, failure outcomes.

The engine is protocol-neutral. Everything that differs between PutRecords-compatible streams
(v3io's Streaming Web API, Amazon Kinesis) is supplied by the transport as a :class:`Wire`:

- its :class:`WireLimits` (records and bytes per request, per-record size and what counts in it,
  key length, which optional fields exist, how shards are addressed);
- a column-at-a-time encoder of record fragments (:meth:`Wire.fragments`) and the assembly of a
  request body from fragment slices (:meth:`Wire.body`), so a request stays "joined buffer slices";
- the classification of every failure into a named outcome (:meth:`Wire.classify` for one record,
  :meth:`Wire.classify_request` for a whole request).

A transport exposes its wire as the attribute ``wire``; core names no protocol field, limit or
error. This module holds only the contract.

A wire may also have ``pack(cols: MappedColumns) -> MappedColumns``, called on each chunk's mapped
columns before placement: it may replace rows' Data and mark rows ``absorbed`` into an earlier
row's record (Kinesis KPL aggregation packs a key's records into one). Absorbed rows are neither
placed nor dead-lettered; the record that carries them is one record to the engine (it succeeds or
fails, and counts in ``strict`` ordering, as one). Invalid rows must be left as they are.
"""

from __future__ import annotations

import enum
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal, Protocol, runtime_checkable

import numpy as np
import numpy.typing as npt
import pyarrow as pa
import pyarrow.compute as pc

if TYPE_CHECKING:
    from shardline.errors import TransportError
    from shardline.partitioning import ShardMap
    from shardline.transport import PutFailure


class Outcome(enum.IntEnum):
    """What became of one record of a response."""

    WRITTEN = 0
    """Stored."""
    RETRY = 1
    """Refused for now (a plain retryable error): send again at the head of its shard's queue."""
    THROTTLED = 2
    """Refused for the shard's rate: the shard's allowance is halved and it backs off."""
    REFRESH = 3
    """Addressed to a shard the stream does not have (any more): re-read the shard map, then retry."""
    PERMANENT = 4
    """This record can never be written (too large, invalid): dead-lettered with the reason."""


class RequestOutcome(enum.Enum):
    """What a request that failed as a whole means (status, connection, timeout)."""

    UNREACHABLE = "unreachable"
    """Nothing of it is known written; keep every record and retry with capped backoff, forever."""
    THROTTLED = "throttled"
    """The stream refused the request for its rate (429/503 or a throttling error): back off."""
    FATAL = "fatal"
    """Nothing will make it pass (stream missing, access denied, request refused as invalid): stop."""


Addressing = Literal["shard-id", "hash-range"]
"""How records find shards. ``"shard-id"``: the client may name a shard per record (v3io's
``ShardId``); without one the server places the key. ``"hash-range"``: the server routes each record
by the MD5 of its key (or an explicit 128-bit hash key) over the open shards' hash-key ranges
(Kinesis)."""


@dataclass(frozen=True, slots=True)
class WireLimits:
    """A protocol's limits, as the stream enforces them. Sizes in bytes unless named otherwise."""

    max_records_per_request: int
    max_request_bytes: int
    """Size of a request body (the encoded form, e.g. base64 growth included) or of its payload,
    whichever the stream counts; the engine packs encoded fragments up to it."""
    max_record_bytes: int
    """Size of one record as the stream counts it (raw Data, plus the key when ``record_counts_key``)."""
    record_counts_key: bool
    """True when a record's size counts its partition key's UTF-8 bytes as well as its Data."""
    max_key_length: int
    key_length_unit: Literal["bytes", "chars"]
    """Whether ``max_key_length`` counts UTF-8 bytes or Unicode characters."""
    min_key_length: int
    """Shortest partition key the stream accepts (0: an empty key is fine)."""
    key_required: bool
    """True when every record must carry a partition key."""
    addressing: Addressing
    client_info: bool
    """True when a record may carry ``ClientInfo`` (v3io); a mapping asking for it fails otherwise."""
    max_client_info_bytes: int = 0


@dataclass(frozen=True, slots=True)
class Placement:
    """The valid records of one batch placed on shards, sorted by shard, as columns to encode.

    Every per-record array is in the same (shard-sorted) order; ``shards[i]`` is the index of
    record ``i``'s shard in ``shard_map`` (its lane). ``key_json[key_index[i]]`` is the JSON string
    literal of record ``i``'s key (quotes included), ``key_index[i] == -1`` when it has none.
    ``addressed`` is True when the partitioner chose each record's shard explicitly (the encoder then
    names the shard: ``ShardId`` or ``ExplicitHashKey``, via ``shard_map.address``).
    """

    data: pa.Array
    key_json: pa.Array | None
    key_index: npt.NDArray[np.int64] | None
    shards: npt.NDArray[np.int64]
    shard_map: ShardMap
    addressed: bool
    client_info: pa.Array | None


@runtime_checkable
class Wire(Protocol):
    """A stream protocol's encoding and failure vocabulary (see the module docstring)."""

    limits: WireLimits
    body_overhead: int
    """Bytes of a body around its records, minus one (the last fragment's separator is dropped)."""

    def fragments(self, placement: Placement) -> pa.Array:
        """One encoded fragment per record (``large_binary``), each ending with the separator
        (``b","``), built column at a time (no Python step per record)."""
        ...

    def body(self, parts: Sequence[memoryview | bytes]) -> bytes:
        """A request body from runs of fragments, in order (the last separator dropped)."""
        ...

    def classify(self, failure: PutFailure) -> Outcome:
        """The outcome of one failed record (never ``WRITTEN``)."""
        ...

    def classify_request(self, error: TransportError) -> RequestOutcome:
        """The outcome of a request that failed as a whole."""
        ...


# helpers for wires that encode records as JSON fragments (every built-in one does)

_LB = pa.large_binary()


def key_fields(field: bytes, key_json: pa.Array, key_index: npt.NDArray[np.int64]) -> pa.Array:
    """Per record, ``field`` then its key's JSON literal (``b',"PartitionKey":'`` + ``b'"k"'``), or
    ``b""`` for a record without a key (``key_index == -1``); ``large_binary``, column at a time."""
    keys = pc.binary_join_element_wise(pa.scalar(field, _LB), key_json.cast(_LB), pa.scalar(b"", _LB))
    keys = pa.concat_arrays([keys, pa.array([b""], _LB)])
    return keys.take(pa.array(np.where(key_index < 0, len(keys) - 1, key_index), pa.int64()))


def b64_fields(field: bytes, values: pa.Array) -> pa.Array:
    """Per record, ``field`` then the value in base64 and a closing quote
    (``b',"ClientInfo":"'`` + ``b'aGk='`` + ``b'"'``), or ``b""`` for a null value; ``large_binary``,
    column at a time."""
    from shardline.arrowbin import b64encode_array

    present = pc.binary_join_element_wise(
        pa.scalar(field, _LB), b64encode_array(values), pa.scalar(b'"', _LB), pa.scalar(b"", _LB)
    )
    return pc.if_else(pc.is_valid(values), present, pa.scalar(b"", _LB))


def join_fragments(prefix: bytes, parts: Sequence[memoryview | bytes], suffix: bytes) -> bytes:
    """A request body: ``prefix``, the runs of ``{...},`` fragments in order with the last comma
    dropped, ``suffix`` (``prefix + suffix`` when there are none)."""
    if not parts:
        return prefix + suffix
    return b"".join([prefix, *parts[:-1], memoryview(parts[-1])[:-1], suffix])
