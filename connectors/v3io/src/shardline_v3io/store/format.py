"""On-disk framing of shard segments.

A segment is two files named after the sequence number of its first record:

``<first-seq>.log``
    A sequence of *chunks*. One chunk is what one PutRecords request wrote to one shard, written
    with a single ``os.writev``::

        chunk   = magic u32 | body_len u32 | xxh3_64(body) u64 | record_count u32 | body
        body    = header * record_count | meta area | data area
        header  = seq u64 | arrival_ns i64 | data_delta u32 | data_len u32 | meta_delta u32
                  | key_len u16 | client_info_len u8 | zero u8              (32 bytes, little endian)
        meta area = (key | client_info) * record_count
        data area = data * record_count     (each may be followed by up to two unused bytes)

    ``data_delta`` / ``meta_delta`` are the distances in bytes from a header to its record's Data
    and to its key (the client info follows the key). Keeping Data apart from keys lets a request's
    Data be written as one slice of the blob its base64 column decoded into, and its keys as one
    ``str.join``: a chunk is built with numpy and a few joins, without a Python step per record.
    The small meta area comes first, so the records from any header up to the end of a later
    record's Data are one contiguous byte range (what GetRecords reads with one ``pread``).
    The unused bytes after a Data are left from base64 padding; readers only follow the headers.
    The checksum (XXH3-64, an order of magnitude faster than zlib's CRC-32) guards the chunk as a
    whole: a torn chunk (the process died inside the write, or the machine lost unsynced pages)
    fails its checksum or its length and is cut off on recovery. A chunk
    is acknowledged only after its write returned, so a torn chunk was never acknowledged.

``<first-seq>.idx``
    One little-endian u64 per record: the file offset of the record's header in the ``.log``.
    Sequence numbers are dense, so the entry of sequence ``n`` is at byte ``(n - first) * 8``:
    Seek(SEQUENCE) and GetRecords find any record with one ``pread`` of the index.
"""

from __future__ import annotations

import struct

import numpy as np

CHUNK_MAGIC = 0x53484C33  # "SHL3"
OLD_MAGICS = {0x53484C32: "SHL2"}  # earlier layouts: refused when found, never cut off as torn
CHUNK = struct.Struct("<IIQI")
RECORD = struct.Struct("<QqIIIHBx")  # 32 bytes: every field aligned for numpy
INDEX_ENTRY = struct.Struct("<Q")
CHUNK_SIZE = CHUNK.size
RECORD_SIZE = RECORD.size

RECORD_DTYPE = np.dtype(
    {
        "names": ["seq", "arrival", "delta", "dlen", "mdelta", "klen", "clen"],
        "formats": ["<u8", "<i8", "<u4", "<u4", "<u4", "<u2", "u1"],
        "offsets": [0, 8, 16, 20, 24, 28, 30],
        "itemsize": RECORD_SIZE,  # the padding byte stays zero
    }
)
assert RECORD_DTYPE.itemsize == RECORD_SIZE == 32

LOG_SUFFIX = ".log"
INDEX_SUFFIX = ".idx"


def segment_name(first_seq: int) -> str:
    """The base file name of the segment whose first record has sequence ``first_seq``."""
    return f"{first_seq:020d}"
