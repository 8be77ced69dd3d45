"""One shard: an append-only log split in segments, each with a dense offset index.

Only what is needed to append and to find things is kept in memory: the open descriptors of the
active segment, the list of segment start sequences, the next sequence number and the log size.
Reads use ``os.pread`` on the files (the page cache does the caching), so memory stays bounded
whatever the size of the shard.

A clean close writes ``clean.json`` (the active segment's sizes); the next open trusts it and skips
the recovery scan. After a crash the file is absent and the active segment is scanned: every
chunk's checksum is checked, a torn tail is cut off and the index is made to match the log.
"""

from __future__ import annotations

import bisect
import contextlib
import os
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import orjson
import xxhash

from shardline_v3io import errors as E
from shardline_v3io.store.errors import StoreError
from shardline_v3io.store.format import (
    CHUNK,
    CHUNK_MAGIC,
    CHUNK_SIZE,
    INDEX_SUFFIX,
    LOG_SUFFIX,
    OLD_MAGICS,
    RECORD,
    RECORD_DTYPE,
    RECORD_SIZE,
    segment_name,
)

ReadRecord = tuple[int, int, bytes, bytes, bytes]
"""A record read back: (sequence number, arrival ns, partition key, client info, data)."""

_OPEN_FLAGS = os.O_RDWR | os.O_CREAT | os.O_APPEND | getattr(os, "O_CLOEXEC", 0)
_CLEAN_FILE = "clean.json"


def _ascii_digits(text: str) -> bool:
    return text.isascii() and text.isdigit()


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        n = os.write(fd, view)
        view = view[n:]


def frame_headers(
    dlen: npt.NDArray[np.int64],
    klen: npt.NDArray[np.int64] | None = None,
    clen: npt.NDArray[np.int64] | None = None,
    group_starts: npt.NDArray[np.int64] | None = None,
    *,
    strides: npt.NDArray[np.int64] | None = None,
) -> tuple[npt.NDArray[Any], npt.NDArray[np.int64]]:
    """Record headers of one or more chunks at once, and each record's index offset in its chunk.

    The records of chunk ``g`` are ``group_starts[g]`` up to the next start (one chunk when None).
    A chunk's body is its headers, its meta area (key and client info of every record, in order)
    and its data area (every Data, in order). ``strides`` are the bytes each Data takes in the data
    area when that is more than its length (unused bytes after it; readers only follow headers).
    ``seq`` holds the rank in the chunk (add the chunk's first sequence) and the index offsets are
    relative to the chunk's file offset (add it); ``arrival`` is left to the caller.
    """
    total = len(dlen)
    one = group_starts is None or len(group_starts) == 1  # one chunk (the common case): no grouping
    starts = np.zeros(1, dtype=np.int64) if group_starts is None else group_starts
    if one:
        rank = np.arange(total, dtype=np.int64)
        to_area = (total - rank) * RECORD_SIZE  # from a header to the end of its chunk's table
    else:
        counts = np.diff(np.append(starts, total))
        group_of = np.repeat(np.arange(len(starts)), counts)
        rank = np.arange(total, dtype=np.int64) - starts[group_of]
        to_area = (counts[group_of] - rank) * RECORD_SIZE
    dsize = strides if strides is not None else dlen
    data_before = np.cumsum(dsize) - dsize
    delta = to_area + (data_before if one else data_before - data_before[starts][group_of])
    headers = np.zeros(total, dtype=RECORD_DTYPE)
    headers["seq"] = rank
    headers["dlen"] = dlen
    if klen is None and clen is None:
        headers["mdelta"] = to_area
    else:
        msize = (klen if klen is not None else 0) + (clen if clen is not None else 0)
        mend = np.cumsum(msize)
        meta_before = mend - msize
        if one:
            headers["mdelta"] = to_area + meta_before
            delta = delta + mend[-1]
        else:
            meta_area = np.diff(np.append(meta_before[starts], mend[-1]))
            headers["mdelta"] = to_area + (meta_before - meta_before[starts][group_of])
            delta = delta + meta_area[group_of]
        if klen is not None:
            headers["klen"] = klen
        if clen is not None:
            headers["clen"] = clen
    headers["delta"] = delta
    return headers, CHUNK_SIZE + rank * RECORD_SIZE


def join_meta(keys: Sequence[bytes] | None, client_infos: Sequence[bytes] | None) -> bytes:
    """The meta area of a chunk: ``key | client info`` of every record, in order."""
    if keys is None or client_infos is None:
        present = keys if keys is not None else client_infos
        return b"".join(present) if present is not None else b""
    n = len(keys)
    if len(client_infos) != n:
        raise ValueError("keys and client infos must have the same length")
    out: list[bytes] = [b""] * (2 * n)
    out[0::2] = keys  # interleave with slice assignment (in C, no per-record step)
    out[1::2] = client_infos
    return b"".join(out)


def check_layout(fd: int, path: Path) -> None:
    """Refuse a segment written in an earlier on-disk layout (rather than read it wrongly or cut it)."""
    head = os.pread(fd, 4, 0)
    if len(head) == 4:
        old = OLD_MAGICS.get(int.from_bytes(head, "little"))
        if old is not None:
            raise StoreError(
                E.INTERNAL_ERROR,
                f"{path} was written in the older on-disk layout {old}; this server reads "
                "SHL3 only. Read it with the version that wrote it, or delete the stream and "
                "write it again",
            )


class ShardLog:
    """The durable log of one shard (see :mod:`shardline_v3io.store.format` for the files)."""

    def __init__(
        self,
        directory: Path,
        *,
        fsync: bool = False,
        segment_bytes: int = 64 * 2**20,
        roll_seconds: float = 3600.0,
        clock: Callable[[], int] = time.time_ns,
    ) -> None:
        self.directory = directory
        self.fsync = fsync
        self.segment_bytes = segment_bytes
        self.roll_ns = int(roll_seconds * 1e9)
        self.clock = clock
        directory.mkdir(parents=True, exist_ok=True)
        firsts = []
        for name in os.listdir(directory):
            if name.endswith(LOG_SUFFIX) and _ascii_digits(name[: -len(LOG_SUFFIX)]):
                firsts.append(int(name[: -len(LOG_SUFFIX)]))
        self.segments: list[int] = sorted(firsts) or [1]
        self.log_fd = -1
        self.idx_fd = -1
        self.next_seq = self.segments[-1]
        self.log_size = 0
        self.active_created_ns = clock()
        self.last_arrival_ns = 0
        self.recovered_bytes = 0
        self._pending_index: list[bytes] = []
        self._pending_bytes = 0
        self._open_active()
        if not self._trust_clean_marker():
            self._recover()
        self._load_tail_times()

    # -- files -------------------------------------------------------------------------------

    def _paths(self, first: int) -> tuple[Path, Path]:
        base = segment_name(first)
        return self.directory / (base + LOG_SUFFIX), self.directory / (base + INDEX_SUFFIX)

    def _open_active(self) -> None:
        log_path, idx_path = self._paths(self.segments[-1])
        self.log_fd = os.open(log_path, _OPEN_FLAGS, 0o644)
        try:
            check_layout(self.log_fd, log_path)
        except StoreError:
            os.close(self.log_fd)
            self.log_fd = -1
            raise
        self.idx_fd = os.open(idx_path, _OPEN_FLAGS, 0o644)

    def _trust_clean_marker(self) -> bool:
        marker = self.directory / _CLEAN_FILE
        try:
            doc = orjson.loads(marker.read_bytes())
        except (FileNotFoundError, orjson.JSONDecodeError):
            return False
        finally:
            marker.unlink(missing_ok=True)
        log_size = os.fstat(self.log_fd).st_size
        idx_size = os.fstat(self.idx_fd).st_size
        if (
            doc.get("segment") != self.segments[-1]
            or doc.get("log") != log_size
            or doc.get("idx") != idx_size
        ):
            return False
        self.log_size = log_size
        self.next_seq = self.segments[-1] + idx_size // 8
        return True

    def _recover(self) -> None:
        """Validate the active segment: cut a torn tail chunk and make the index match the log.

        Every chunk's checksum is checked; the index is recomputed from the chunk headers (the record
        headers of a chunk are contiguous, so no record needs parsing) and rewritten where the file
        disagrees (entries lost with the process, or garbage after a machine crash).
        """
        first = self.segments[-1]
        size = os.fstat(self.log_fd).st_size
        pos = 0
        count = 0
        expected: list[npt.NDArray[Any]] = []
        while pos + CHUNK_SIZE <= size:
            magic, body_len, digest, n = CHUNK.unpack(os.pread(self.log_fd, CHUNK_SIZE, pos))
            if magic != CHUNK_MAGIC or pos + CHUNK_SIZE + body_len > size or n * RECORD_SIZE > body_len:
                break
            body = os.pread(self.log_fd, body_len, pos + CHUNK_SIZE)
            if xxhash.xxh3_64_intdigest(body) != digest:
                break
            expected.append(pos + CHUNK_SIZE + np.arange(n, dtype=np.uint64) * RECORD_SIZE)
            count += n
            pos += CHUNK_SIZE + body_len
        self.recovered_bytes = size - pos
        if pos < size:
            os.ftruncate(self.log_fd, pos)
        want = np.concatenate(expected).astype("<u8").tobytes() if expected else b""
        idx_size = os.fstat(self.idx_fd).st_size
        have = os.pread(self.idx_fd, idx_size, 0) if idx_size else b""
        if have != want:
            keep = len(have) if want.startswith(have) else 0
            os.ftruncate(self.idx_fd, keep)
            _write_all(self.idx_fd, want[keep:])
        self.log_size = pos
        self.next_seq = first + count

    def _load_tail_times(self) -> None:
        first = self.segments[-1]
        if self.next_seq > first:
            self.last_arrival_ns = self._read_header(self.log_fd, self.idx_fd, first, self.next_seq - 1)[1]
            self.active_created_ns = self._read_header(self.log_fd, self.idx_fd, first, first)[1]
        elif len(self.segments) > 1:
            self.last_arrival_ns = self.arrival_of(first - 1)

    def _read_header(
        self, log_fd: int, idx_fd: int, first: int, seq: int
    ) -> tuple[int, int, int, int, int, int, int]:
        offset = int.from_bytes(os.pread(idx_fd, 8, (seq - first) * 8), "little")
        result: tuple[int, int, int, int, int, int, int] = RECORD.unpack(
            os.pread(log_fd, RECORD_SIZE, offset)
        )
        return result

    def _open_segment(self, first: int) -> tuple[int, int, bool]:
        if first == self.segments[-1]:
            return self.log_fd, self.idx_fd, False
        log_path, idx_path = self._paths(first)
        log_fd = os.open(log_path, os.O_RDONLY | getattr(os, "O_CLOEXEC", 0))
        try:
            check_layout(log_fd, log_path)
            idx_fd = os.open(idx_path, os.O_RDONLY | getattr(os, "O_CLOEXEC", 0))
        except OSError:
            os.close(log_fd)
            raise
        return log_fd, idx_fd, True

    # -- positions ---------------------------------------------------------------------------

    @property
    def first_seq(self) -> int:
        """The sequence number of the oldest record still on disk (== next_seq when empty)."""
        return self.segments[0]

    def _segment_of(self, seq: int) -> int:
        i = bisect.bisect_right(self.segments, seq) - 1
        return self.segments[max(i, 0)]

    def _segment_end(self, first: int) -> int:
        i = bisect.bisect_right(self.segments, first)
        return self.segments[i] if i < len(self.segments) else self.next_seq

    def arrival_of(self, seq: int) -> int:
        """Arrival time (ns) of record ``seq`` (which must exist)."""
        self.flush_index()
        first = self._segment_of(seq)
        log_fd, idx_fd, close = self._open_segment(first)
        try:
            return self._read_header(log_fd, idx_fd, first, seq)[1]
        finally:
            if close:
                os.close(log_fd)
                os.close(idx_fd)

    def seek_time(self, ts_ns: int) -> int:
        """The first sequence whose arrival is >= ``ts_ns``, or ``next_seq`` when there is none."""
        if self.next_seq == self.first_seq or self.last_arrival_ns < ts_ns:
            return self.next_seq
        lo, hi = self.first_seq, self.next_seq - 1  # the answer is in [lo, hi]
        while lo < hi:
            mid = (lo + hi) // 2
            if self.arrival_of(mid) >= ts_ns:
                hi = mid
            else:
                lo = mid + 1
        return lo

    # -- append ------------------------------------------------------------------------------

    def _roll(self) -> None:
        self.flush_index()
        if self.fsync:
            os.fsync(self.log_fd)
            os.fsync(self.idx_fd)
        os.close(self.log_fd)
        os.close(self.idx_fd)
        self.segments.append(self.next_seq)
        self._open_active()
        self.log_size = 0
        self.active_created_ns = self.clock()

    def append(
        self,
        datas: Sequence[bytes],
        arrival_ns: int,
        keys: Sequence[bytes] | None = None,
        client_infos: Sequence[bytes] | None = None,
        data_lengths: npt.NDArray[np.int64] | None = None,
    ) -> int:
        """Append records as one chunk (one ``writev``); return the sequence number of the first one.

        ``keys`` / ``client_infos`` are parallel to ``datas`` (``b""`` = none) or None when no
        record has one; ``data_lengths`` may pass ``len`` of every data, already computed.
        """
        n = len(datas)
        if n == 0:
            return self.next_seq
        dlen = (
            data_lengths
            if data_lengths is not None
            else np.fromiter(map(len, datas), dtype=np.int64, count=n)
        )
        klen = np.fromiter(map(len, keys), dtype=np.int64, count=n) if keys is not None else None
        clen = (
            np.fromiter(map(len, client_infos), dtype=np.int64, count=n) if client_infos is not None else None
        )
        headers, rel_index = frame_headers(dlen, klen, clen)
        first_seq, start = self.reserve(arrival_ns)
        headers["seq"] += np.uint64(first_seq)
        headers["arrival"] = arrival_ns
        self.commit_chunk(
            headers.tobytes(),
            (join_meta(keys, client_infos), b"".join(datas)),
            n,
            rel_index + start,
            arrival_ns,
        )
        return first_seq

    def reserve(self, arrival_ns: int) -> tuple[int, int]:
        """Roll the segment if it is due; return (first sequence, file offset) of the next chunk."""
        if self.log_size and (
            self.log_size >= self.segment_bytes or arrival_ns - self.active_created_ns >= self.roll_ns
        ):
            self._roll()
        return self.next_seq, self.log_size

    def commit_chunk(
        self,
        table: bytes,
        areas: Sequence[bytes | memoryview],
        n: int,
        index: npt.NDArray[np.int64],
        arrival_ns: int,
    ) -> None:
        """Write one chunk framed by :func:`frame_headers` at the offset :meth:`reserve` returned.

        ``areas`` are the chunk's meta area and data area (see :mod:`~shardline_v3io.store.format`).

        Returns only after the chunk was handed to the kernel (one ``writev``), so its records
        survive the death of the process (and of the machine with ``fsync=True``). Index entries are
        buffered (up to 64 kB) and written before any read; after a crash, recovery rebuilds them.
        """
        start = self.log_size
        body_len = len(table)
        digest = xxhash.xxh3_64(table)
        for area in areas:
            body_len += len(area)
            digest.update(area)
        head = CHUNK.pack(CHUNK_MAGIC, body_len, digest.intdigest(), n)
        try:
            written = os.writev(self.log_fd, (head, table, *areas))
            if written < CHUNK_SIZE + body_len:
                _write_all(self.log_fd, b"".join((head, table, *areas))[written:])
            if self.fsync:
                os.fdatasync(self.log_fd)
        except OSError:
            # Undo a partial write so the log stays consistent; the records were not acknowledged.
            with contextlib.suppress(OSError):
                os.ftruncate(self.log_fd, start)
            raise
        self._pending_index.append(index.astype("<u8").tobytes())
        self._pending_bytes += 8 * n
        self.log_size = start + CHUNK_SIZE + body_len
        self.next_seq += n
        self.last_arrival_ns = arrival_ns
        if self.fsync or self._pending_bytes >= 65536:
            self.flush_index()

    def flush_index(self) -> None:
        """Write the buffered index entries (and fsync them with ``fsync=True``)."""
        if not self._pending_index:
            return
        data = b"".join(self._pending_index)
        self._pending_index = []
        self._pending_bytes = 0
        _write_all(self.idx_fd, data)
        if self.fsync:
            os.fdatasync(self.idx_fd)

    # -- read --------------------------------------------------------------------------------

    def read(self, seq: int, limit: int, max_bytes: int = 8 * 2**20) -> list[ReadRecord]:
        """Read up to ``limit`` records from ``seq`` (stopping at a segment end or near ``max_bytes``)."""
        if seq >= self.next_seq or limit <= 0 or seq < self.first_seq:
            return []
        self.flush_index()
        first = self._segment_of(seq)
        count = min(limit, self._segment_end(first) - seq)
        log_fd, idx_fd, close = self._open_segment(first)
        try:
            raw = os.pread(idx_fd, count * 8, (seq - first) * 8)
            offsets = np.frombuffer(raw, dtype="<u8").astype(np.int64)
            count = len(offsets)
            if count == 0:
                return []

            def end_of(i: int) -> int:
                off = int(offsets[i])
                _s, _a, delta, dlen, _m, _k, _c = RECORD.unpack(os.pread(log_fd, RECORD_SIZE, off))
                return int(off + delta + dlen)  # meta areas come before data areas

            base = int(offsets[0])
            end = end_of(count - 1)
            if end - base > max_bytes and count > 1:
                lo, hi = 1, count - 1  # largest k (>= 1) with end_of(k - 1) - base <= max_bytes
                while lo < hi:
                    mid = (lo + hi + 1) // 2
                    if end_of(mid - 1) - base <= max_bytes:
                        lo = mid
                    else:
                        hi = mid - 1
                count = lo
                end = end_of(count - 1)
            buf = os.pread(log_fd, end - base, base)
        finally:
            if close:
                os.close(log_fd)
                os.close(idx_fd)
        out: list[ReadRecord] = []
        unpack = RECORD.unpack_from
        for off in (offsets[:count] - base).tolist():
            rseq, arrival, delta, dlen, mdelta, klen, clen = unpack(buf, off)
            p = off + delta
            q = off + mdelta
            out.append((rseq, arrival, buf[q : q + klen], buf[q + klen : q + klen + clen], buf[p : p + dlen]))
        return out

    # -- retention ---------------------------------------------------------------------------

    def drop_expired_segments(self, cutoff_ns: int) -> int:
        """Delete sealed segments whose newest record arrived before ``cutoff_ns``; return how many."""
        dropped = 0
        while len(self.segments) > 1:
            first = self.segments[0]
            last_seq = self.segments[1] - 1
            if last_seq >= first and self.arrival_of(last_seq) >= cutoff_ns:
                break
            log_path, idx_path = self._paths(first)
            self.segments.pop(0)
            for p in (log_path, idx_path):
                p.unlink(missing_ok=True)
            dropped += 1
        return dropped

    def close(self) -> None:
        """Close the active segment's descriptors and leave a clean-close marker."""
        if self.log_fd < 0:
            return
        try:
            self.flush_index()
            if self.fsync:
                os.fsync(self.log_fd)
                os.fsync(self.idx_fd)
            doc = {
                "segment": self.segments[-1],
                "log": os.fstat(self.log_fd).st_size,
                "idx": os.fstat(self.idx_fd).st_size,
            }
            (self.directory / _CLEAN_FILE).write_bytes(orjson.dumps(doc))
        except OSError:
            pass
        for fd in (self.log_fd, self.idx_fd):
            with contextlib.suppress(OSError):
                os.close(fd)
        self.log_fd = self.idx_fd = -1

    def disk_bytes(self) -> int:
        """Bytes the shard's segments take on disk (logs and indexes)."""
        total = 0
        for first in self.segments:
            for p in self._paths(first):
                with contextlib.suppress(FileNotFoundError):
                    total += p.stat().st_size
        return total
