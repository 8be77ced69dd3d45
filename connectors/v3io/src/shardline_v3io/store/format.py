"""On-disk framing of shard segments.

A segment is two files named after the sequence number of its first record:

``<first-seq>.log``
    A sequence of *chunks*. One chunk is what one PutRecords request wrote to one shard, written
    with a single ``os.write``::

        chunk  = magic u32 | body_len u32 | crc32(body) u32 | record_count u32 | body
        body   = record*
        record = seq u64 | arrival_ns i64 | data_len u32 | key_len u16 | client_info_len u8
                 | key | client_info | data                       (little endian)

    The CRC guards the chunk as a whole: a torn chunk (the process died inside the write, or the
    machine lost unsynced pages) fails its CRC or its length and is cut off on recovery. A chunk is
    acknowledged only after its write returned, so a torn chunk was never acknowledged.

``<first-seq>.idx``
    One little-endian u64 per record: the file offset of the record's header in the ``.log``.
    Sequence numbers are dense, so the entry of sequence ``n`` is at byte ``(n - first) * 8``:
    Seek(SEQUENCE) and GetRecords find any record with one ``pread`` of the index.
"""

from __future__ import annotations

import struct

CHUNK_MAGIC = 0x53484C31  # "SHL1"
CHUNK = struct.Struct("<IIII")
RECORD = struct.Struct("<QqIHB")
INDEX_ENTRY = struct.Struct("<Q")
CHUNK_SIZE = CHUNK.size
RECORD_SIZE = RECORD.size

LOG_SUFFIX = ".log"
INDEX_SUFFIX = ".idx"


def segment_name(first_seq: int) -> str:
    """The base file name of the segment whose first record has sequence ``first_seq``."""
    return f"{first_seq:020d}"
