"""On-disk framing of shard segments.

A segment is two files named after the sequence number of its first record:

``<first-seq>.log``
    A sequence of *chunks*. One chunk is what one PutRecords request wrote to one shard, written
    with a single ``os.write``::

        chunk   = magic u32 | body_len u32 | crc32(body) u32 | record_count u32 | body
        body    = header * record_count | payload * record_count
        header  = seq u64 | arrival_ns i64 | payload_delta u32 | data_len u32 | key_len u16
                  | client_info_len u8                                     (27 bytes, little endian)
        payload = key | client_info | data

    ``payload_delta`` is the distance in bytes from the header to its payload. Payloads may be
    followed by up to two unused bytes (left from base64 padding when a request's Data were decoded
    as one blob); readers only follow the headers, so this needs no flag. Headers are
    contiguous and fixed-size so a whole chunk is built with numpy and two joins, without a Python
    step per record. The CRC guards the chunk as a whole: a torn chunk (the process died inside the
    write, or the machine lost unsynced pages) fails its CRC or its length and is cut off on
    recovery. A chunk is acknowledged only after its write returned, so a torn chunk was never
    acknowledged.

``<first-seq>.idx``
    One little-endian u64 per record: the file offset of the record's header in the ``.log``.
    Sequence numbers are dense, so the entry of sequence ``n`` is at byte ``(n - first) * 8``:
    Seek(SEQUENCE) and GetRecords find any record with one ``pread`` of the index.
"""

from __future__ import annotations

import struct

import numpy as np

CHUNK_MAGIC = 0x53484C32  # "SHL2"
CHUNK = struct.Struct("<IIII")
RECORD = struct.Struct("<QqIIHB")
INDEX_ENTRY = struct.Struct("<Q")
CHUNK_SIZE = CHUNK.size
RECORD_SIZE = RECORD.size

RECORD_DTYPE = np.dtype(
    {
        "names": ["seq", "arrival", "delta", "dlen", "klen", "clen"],
        "formats": ["<u8", "<i8", "<u4", "<u4", "<u2", "u1"],
        "offsets": [0, 8, 16, 20, 24, 26],
        "itemsize": RECORD_SIZE,
    }
)
assert RECORD_DTYPE.itemsize == RECORD_SIZE == 27

LOG_SUFFIX = ".log"
INDEX_SUFFIX = ".idx"


def segment_name(first_seq: int) -> str:
    """The base file name of the segment whose first record has sequence ``first_seq``."""
    return f"{first_seq:020d}"
