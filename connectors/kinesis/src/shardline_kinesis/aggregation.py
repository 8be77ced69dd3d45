"""KPL-compatible aggregation: many records of one key in one Kinesis record.

Format (https://github.com/awslabs/amazon-kinesis-producer/blob/master/aggregation-format.md)::

    magic F3 89 9A C2 | protobuf AggregatedRecord | MD5 of the protobuf (16 bytes)

    message AggregatedRecord {
      repeated string partition_key_table     = 1;
      repeated string explicit_hash_key_table = 2;
      repeated Record records                 = 3;
    }
    message Record {
      required uint64 partition_key_index     = 1;
      optional uint64 explicit_hash_key_index = 2;
      required bytes  data                    = 3;
    }

The KCL and the ``aws-kinesis-agg`` deaggregators read it; a record without the magic is passed
through as one user record, so a key with a single record in a batch is left as it is.

Here every aggregated record holds the records of **one** key (its partition-key table has one
entry, and the Kinesis record is sent with that key, so it lands where the key's records would):
the records of a key in a mapped batch are packed, in order, into as few aggregated records as fit
the 1 MiB record limit (Data plus key). An aggregated record is one record to the engine, so a key's
packed records succeed or fail together, and in ``strict`` ordering it is the key's one unconfirmed
record. The protobuf is written by hand (a few varints, no protoc step): the per-record pieces are
built column at a time with ``pyarrow.compute``; only the per-aggregate header and MD5 are a Python
step. Measured on 100,000 records of 100 bytes: about 1-2 µs per record with 10 or 1,000 keys, about
5 µs when every key has only two records (one aggregate per two records).
"""

from __future__ import annotations

import hashlib
from dataclasses import replace
from typing import TYPE_CHECKING

import numpy as np
import numpy.typing as npt
import pyarrow as pa
import pyarrow.compute as pc

from shardline_kinesis.wire import MAX_RECORD_BYTES, KinesisWire

if TYPE_CHECKING:
    from shardline import MappedColumns

MAGIC = b"\xf3\x89\x9a\xc2"
DIGEST_BYTES = 16
_LB = pa.large_binary()
_RECORD_HEAD = b"\x08\x00\x1a"  # partition_key_index = 0, then the data field's tag


def _lb(value: bytes) -> pa.Scalar:
    return pa.scalar(value, _LB)


def varint(value: int) -> bytes:
    """Protobuf base-128 varint of a non-negative int."""
    out = bytearray()
    while value >= 0x80:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def varints(values: npt.NDArray[np.int64]) -> pa.Array:
    """Varints of many values below 2**35 at once, as a ``large_binary`` array."""
    v = values.astype(np.uint64)
    width = 5
    shifts = (np.arange(width, dtype=np.uint64) * np.uint64(7))[None, :]
    groups = (v[:, None] >> shifts) & np.uint64(0x7F)
    nbytes = 1 + sum((v >= np.uint64(1 << (7 * j))).astype(np.int64) for j in range(1, width))
    more = np.arange(width)[None, :] < (nbytes[:, None] - 1)
    matrix = (groups | (more.astype(np.uint64) << np.uint64(7))).astype(np.uint8)
    data = matrix[np.arange(width)[None, :] < nbytes[:, None]]
    offsets = np.concatenate([np.zeros(1, np.int64), np.cumsum(nbytes)])
    return pa.Array.from_buffers(
        _LB, len(values), [None, pa.py_buffer(offsets), pa.py_buffer(data.tobytes())]
    )


def _offsets(arr: pa.Array) -> npt.NDArray[np.int64]:
    raw = np.frombuffer(arr.buffers()[1], dtype=np.int64)
    return raw[arr.offset : arr.offset + len(arr) + 1]


def record_pieces(data: pa.Array) -> pa.Array:
    """Each value as the ``records`` field of an AggregatedRecord (key index 0), ``large_binary``."""
    lengths = np.diff(_offsets(data))
    inner = varints(lengths)
    inner_len = np.diff(_offsets(inner))
    return pc.binary_join_element_wise(
        _lb(b"\x1a"),
        varints(len(_RECORD_HEAD) + inner_len + lengths),
        _lb(_RECORD_HEAD),
        inner,
        data,
        _lb(b""),
    )


def key_table(key: bytes) -> bytes:
    """The ``partition_key_table`` field holding one key."""
    return b"\x0a" + varint(len(key)) + key


def _framed(head: bytes, pieces: bytes | memoryview) -> bytes:
    digest = hashlib.md5(head)
    digest.update(pieces)
    return b"".join((MAGIC, head, pieces, digest.digest()))


def encode_aggregate(key: bytes, pieces: bytes | memoryview) -> bytes:
    """An aggregated record of one key from its records' pieces (see :func:`record_pieces`)."""
    return _framed(key_table(key), pieces)


def aggregate(
    data: pa.Array, keys: list[bytes], key_index: npt.NDArray[np.int64], eligible: npt.NDArray[np.bool_]
) -> tuple[pa.Array, npt.NDArray[np.bool_]]:
    """Pack the eligible rows of each key into aggregated records.

    ``data`` (``large_binary``) holds each row's Data, ``keys[key_index[i]]`` row ``i``'s key (UTF-8).
    Returns the new Data column (the first row of each aggregate holds it; rows of a key with one
    eligible row are unchanged; absorbed rows are left empty) and the mask of the rows absorbed
    into an earlier row's aggregate.
    Each aggregate plus its key stays within 1 MiB (the Kinesis record limit).
    """
    n = len(data)
    absorbed = np.zeros(n, dtype=np.bool_)
    rows = np.flatnonzero(eligible & (key_index >= 0))
    if len(rows) < 2:
        return data, absorbed
    order = rows[np.argsort(key_index[rows], kind="stable")]  # by key, each key in row order
    sorted_keys = key_index[order]
    starts = np.flatnonzero(np.concatenate([[True], sorted_keys[1:] != sorted_keys[:-1]]))
    counts = np.diff(np.append(starts, len(order)))
    multi = counts > 1
    if not multi.any():
        return data, absorbed
    pieces = record_pieces(data.take(pa.array(order)))
    pos = _offsets(pieces)
    buf = memoryview(pieces.buffers()[2]) if pieces.buffers()[2] is not None else memoryview(b"")
    starts, counts = starts[multi], counts[multi]
    group_keys = sorted_keys[starts]
    key_len = np.array([len(keys[int(k)]) for k in group_keys], np.int64)
    # what may go into an aggregate: the record limit less the key (counted once as the Kinesis
    # record's PartitionKey, once in the key table) and the framing (magic, table tag and length, MD5)
    caps = MAX_RECORD_BYTES - 2 * key_len - (len(MAGIC) + 1 + 2 + DIGEST_BYTES)
    fits = pos[starts + counts] - pos[starts] <= caps
    replaced_rows: list[int] = []
    blobs: list[bytes] = []
    # the common case, a key's records of the chunk in one aggregate: masks at once, a short loop
    members = np.repeat(fits, counts)
    in_group = np.arange(int(counts.sum())) - np.repeat(np.cumsum(counts) - counts, counts)
    group_rows = order[np.repeat(starts, counts) + in_group]
    absorbed[group_rows[members & (in_group > 0)]] = True
    heads: dict[int, bytes] = {}
    fit_starts = starts[fits]
    for a, b, k in zip(
        pos[fit_starts].tolist(),
        pos[fit_starts + counts[fits]].tolist(),
        sorted_keys[fit_starts].tolist(),
        strict=True,
    ):
        head = heads.get(k)
        if head is None:
            head = heads[k] = key_table(keys[k])
        blobs.append(_framed(head, buf[a:b]))
    replaced_rows.extend(order[fit_starts].tolist())
    for start, count, cap in zip(
        starts[~fits].tolist(), counts[~fits].tolist(), caps[~fits].tolist(), strict=True
    ):
        key = keys[int(sorted_keys[start])]
        first, end = start, start + count
        while first < end:
            # greedy: as many of the key's next pieces as fit under the cap (at least one)
            limit = int(pos[first]) + cap
            last = max(first + 1, int(np.searchsorted(pos[first + 1 : end + 1], limit, side="right")) + first)
            if last - first > 1:
                blobs.append(encode_aggregate(key, buf[int(pos[first]) : int(pos[last])]))
                replaced_rows.append(int(order[first]))
                absorbed[order[first + 1 : last]] = True
            first = last
    if not blobs:
        return data, absorbed
    # one take from [data..., blobs..., b""]: no Python step per row; absorbed rows keep no copy
    index = np.arange(n, dtype=np.int64)
    index[absorbed] = n + len(blobs)
    index[replaced_rows] = n + np.arange(len(blobs))
    extra = pa.array([*blobs, b""], _LB)
    return pa.concat_arrays([data, extra]).take(pa.array(index)), absorbed


class AggregatingWire(KinesisWire):
    """The Kinesis wire with KPL aggregation (``aggregate = true``): :meth:`pack` packs a mapped
    batch's records of each key into aggregated records before the engine places them."""

    def pack(self, cols: MappedColumns) -> MappedColumns:
        """The batch with each key's valid records packed (see :func:`aggregate`); rows absorbed
        into an aggregate are marked ``absorbed`` (neither placed nor dead-lettered: their
        aggregate carries them), invalid rows are left as they are."""
        if cols.key_index is None or cols.num_rows < 2:
            return cols
        keys = [k.encode() for k in cols.key_values]
        data, absorbed = aggregate(cols.data, keys, cols.key_index, ~cols.invalid)
        if not absorbed.any():
            return cols
        return replace(cols, data=data, absorbed=absorbed)
