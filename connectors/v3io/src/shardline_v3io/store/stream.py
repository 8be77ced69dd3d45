"""One stream: its metadata (a small JSON written atomically) and its shards.

The metadata file ``.shardline-stream.json`` in the stream's directory holds the shard count, the
retention and a random id that locations carry, so that a location of a deleted and re-created
stream is refused instead of pointing at someone else's records.
"""

from __future__ import annotations

import base64
import binascii
import operator
import os
import struct
import threading
import time
import uuid
import zlib
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import orjson
import pybase64
import xxhash
from shardline import jump_hash_array

from shardline_v3io import errors as E
from shardline_v3io.faults import FaultConfig
from shardline_v3io.store.errors import StoreError
from shardline_v3io.store.names import is_shard_name
from shardline_v3io.store.shard import ReadRecord, ShardLog, frame_headers, join_meta
from shardline_v3io.urls import MAX_SHARDS
from shardline_v3io.wire import (
    MAX_CLIENT_INFO_BYTES,
    MAX_DATA_BYTES,
    MAX_PARTITION_KEY_BYTES,
    MAX_RECORDS_PER_REQUEST,
)

META_FILE = ".shardline-stream.json"
SHARDS_DIR = ".shardline-shards"

MAX_RECORDS = MAX_RECORDS_PER_REQUEST  # the wire module's limits: client and server cannot drift
MAX_DATA = MAX_DATA_BYTES
MAX_KEY = MAX_PARTITION_KEY_BYTES
MAX_CLIENT_INFO = MAX_CLIENT_INFO_BYTES
MAX_GET_LIMIT = 10000
GET_MAX_BYTES = 8 * 2**20

_LOCATION = struct.Struct("<IIQ")


@dataclass
class StreamMeta:
    """What a stream is: shard count, retention, creation time and its random id."""

    shard_count: int
    retention_hours: int
    created_ns: int
    uid: str

    def dumps(self) -> bytes:
        """Serialise to JSON bytes."""
        return orjson.dumps(asdict(self), option=orjson.OPT_INDENT_2)


def write_atomically(path: Path, data: bytes, *, fsync: bool = False) -> None:
    """Write ``data`` to ``path`` via a temporary file and a rename, so readers never see half a file."""
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}-{threading.get_ident()}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
        if fsync:
            os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)


def read_meta(directory: Path) -> StreamMeta | None:
    """The stream metadata in ``directory``, or None when it is not a stream."""
    try:
        doc = orjson.loads((directory / META_FILE).read_bytes())
    except (FileNotFoundError, NotADirectoryError):
        return None
    return StreamMeta(
        shard_count=int(doc["shard_count"]),
        retention_hours=int(doc["retention_hours"]),
        created_ns=int(doc["created_ns"]),
        uid=str(doc["uid"]),
    )


def new_meta(shard_count: int, retention_hours: int, now_ns: int) -> StreamMeta:
    """A fresh metadata record for a new stream."""
    return StreamMeta(shard_count, retention_hours, now_ns, uuid.uuid4().hex)


class OpenShards:
    """Bounds the shard logs open at once across a store (each holds two descriptors).

    The least recently used shard is closed when more than ``limit`` are open; it reopens on its
    next use (cheaply: a clean close leaves a marker that skips the recovery scan).
    """

    def __init__(self, limit: int = 512) -> None:
        self.limit = max(2, limit)
        self._lru: OrderedDict[tuple[int, int], tuple[Stream, int]] = OrderedDict()
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._lru)

    def touch(self, stream: Stream, shard_id: int) -> None:
        """Mark a shard as just used."""
        with self._lock:
            key = (id(stream), shard_id)
            if key in self._lru:
                self._lru.move_to_end(key)

    def opened(self, stream: Stream, shard_id: int) -> None:
        """Register a newly opened shard and close the least recently used ones beyond the limit."""
        with self._lock:
            self._lru[(id(stream), shard_id)] = (stream, shard_id)
            victims = []
            while len(self._lru) > self.limit:
                victims.append(self._lru.popitem(last=False)[1])
        for victim_stream, victim_shard in victims:
            if victim_stream is stream and victim_shard == shard_id:
                continue
            if not victim_stream.evict_shard(victim_shard):
                with self._lock:  # busy in another thread: keep it, try again later
                    self._lru[(id(victim_stream), victim_shard)] = (victim_stream, victim_shard)

    def forget(self, stream: Stream) -> None:
        """Drop every entry of a closed stream."""
        with self._lock:
            for key in [k for k in self._lru if k[0] == id(stream)]:
                del self._lru[key]


class Stream:
    """A stream opened from its directory. Thread-safe (one lock per stream)."""

    def __init__(
        self,
        directory: Path,
        meta: StreamMeta,
        *,
        fsync: bool = False,
        segment_bytes: int = 64 * 2**20,
        clock: Callable[[], int] = time.time_ns,
        open_shards: OpenShards | None = None,
    ) -> None:
        self.directory = directory
        self.meta = meta
        self.fsync = fsync
        self.segment_bytes = segment_bytes
        self.clock = clock
        self.lock = threading.RLock()
        self._shards: dict[int, ShardLog] = {}
        self.open_shards: OpenShards | None = open_shards
        self._rr = 0
        self._key_cache: dict[Any, int] = {}
        self._key_cache_count = -1
        self._uid32 = zlib.crc32(meta.uid.encode())
        # since this process opened the stream, for `shardline serve --metrics-port`
        self.records_written = 0
        self.data_bytes_written = 0
        self.records_failed: dict[str, int] = {}  # by ErrorMessage

    # -- metadata ------------------------------------------------------------------------------

    @property
    def shard_count(self) -> int:
        """The number of shards."""
        return self.meta.shard_count

    def update(self, shard_count: int) -> None:
        """Grow to ``shard_count`` shards (the count can only grow)."""
        with self.lock:
            if shard_count < self.meta.shard_count:
                raise StoreError(
                    E.INVALID_ARGUMENT,
                    f"ShardCount can only grow: the stream has {self.meta.shard_count} shards, "
                    f"got {shard_count}",
                )
            if shard_count > MAX_SHARDS:
                raise StoreError(E.INVALID_ARGUMENT, f"ShardCount must be <= {MAX_SHARDS}, got {shard_count}")
            if shard_count == self.meta.shard_count:
                return
            meta = StreamMeta(shard_count, self.meta.retention_hours, self.meta.created_ns, self.meta.uid)
            write_atomically(self.directory / META_FILE, meta.dumps(), fsync=self.fsync)
            self.meta = meta

    def shard(self, shard_id: int) -> ShardLog:
        """The log of shard ``shard_id`` (opened, and recovered, on first use)."""
        log = self._shards.get(shard_id)
        if log is not None:
            if self.open_shards is not None:
                self.open_shards.touch(self, shard_id)
            return log
        if log is None:
            if not 0 <= shard_id < self.meta.shard_count:
                raise StoreError(
                    E.SHARD_OUT_OF_RANGE,
                    f"shard {shard_id} does not exist; the stream has {self.meta.shard_count} shards",
                )
            roll = min(3600.0, self.meta.retention_hours * 3600.0 / 4)
            log = ShardLog(
                self.directory / SHARDS_DIR / str(shard_id),
                fsync=self.fsync,
                segment_bytes=self.segment_bytes,
                roll_seconds=roll,
                clock=self.clock,
            )
            self._shards[shard_id] = log
            if self.open_shards is not None:
                self.open_shards.opened(self, shard_id)
        return log

    def evict_shard(self, shard_id: int) -> bool:
        """Close shard ``shard_id``'s files (it reopens on next use); False when the stream is busy."""
        if not self.lock.acquire(blocking=False):
            return False
        try:
            log = self._shards.pop(shard_id, None)
            if log is not None:
                log.close()
            return True
        finally:
            self.lock.release()

    def retention_cutoff_ns(self) -> int:
        """Records that arrived before this time (ns) are past retention."""
        return self.clock() - self.meta.retention_hours * 3600 * 10**9

    def close(self) -> None:
        """Close every open shard."""
        with self.lock:
            for log in self._shards.values():
                log.close()
            self._shards.clear()
            if self.open_shards is not None:
                self.open_shards.forget(self)

    def apply_retention(self) -> int:
        """Delete whole segments past retention in every shard; return how many were deleted."""
        with self.lock:
            cutoff = self.retention_cutoff_ns()
            dropped = 0
            shards_dir = self.directory / SHARDS_DIR
            if not shards_dir.is_dir():
                return 0
            for name in os.listdir(shards_dir):
                if is_shard_name(name) and int(name) < self.meta.shard_count:
                    dropped += self.shard(int(name)).drop_expired_segments(cutoff)
            return dropped

    # -- put -------------------------------------------------------------------------------------

    def put_records(
        self, records: list[Any], fault: FaultConfig | None = None, *, encoded: bool = True
    ) -> tuple[list[dict[str, Any]], int]:
        """Write one PutRecords batch; return the per-record result objects and the failure count.

        ``records`` are PutRecords record objects: ``Data`` (required), ``PartitionKey``,
        ``ShardId``, ``ClientInfo``; with ``encoded=True`` (the Web API) Data and ClientInfo are
        base64 strings, with ``encoded=False`` (in-process) they are bytes.

        Placement: ShardId wins; else a non-empty PartitionKey goes to
        ``shard_for_key(key, shard_count)``; else round robin per stream, starting at shard 0.
        Per-record problems (size limits, shard out of range, injected faults) fail only that
        record; a malformed record (wrong type, bad base64) fails the whole request with
        InvalidArgumentException before anything is written.

        The work is column-at-a-time (``map`` over C callables, numpy for placement and framing):
        there is no Python statement per record on the common paths.
        """
        if not records:
            return [], 0
        seq_of, shard, code, failed, cols = self._put(records, fault, encoded)
        seqs = seq_of.tolist()
        shards = shard.tolist()
        if failed == 0:
            results = [{"SequenceNumber": q, "ShardId": h} for q, h in zip(seqs, shards, strict=True)]
        else:
            results = [
                {"SequenceNumber": q, "ShardId": h} if c == 0 else _failure(c, i, cols)
                for i, (q, h, c) in enumerate(zip(seqs, shards, code.tolist(), strict=True))
            ]
        return results, failed

    def put_records_response(self, records: list[Any], fault: FaultConfig | None = None) -> bytes:
        """Like :meth:`put_records` (Web API form), but return the PutRecords answer as JSON bytes.

        When every record succeeded the answer is built from one ``orjson`` dump of an ``(n, 2)``
        array and three byte replacements, with no Python object per record; the bytes are the
        same ``orjson.dumps`` gives for the result objects.
        """
        if not records:
            return orjson.dumps({"FailedRecordCount": 0, "Records": []})
        seq_of, shard, code, failed, cols = self._put(records, fault, True)
        if failed:
            results = [
                {"SequenceNumber": q, "ShardId": h} if c == 0 else _failure(c, i, cols)
                for i, (q, h, c) in enumerate(
                    zip(seq_of.tolist(), shard.tolist(), code.tolist(), strict=True)
                )
            ]
            return orjson.dumps({"FailedRecordCount": failed, "Records": results})
        pairs = orjson.dumps(np.stack((seq_of, shard), axis=1), option=orjson.OPT_SERIALIZE_NUMPY)
        # b"[[1,0],[2,1]]" -> b'{"SequenceNumber":1,"ShardId":0},{"SequenceNumber":2,"ShardId":1}'
        inner = pairs[2:-2].replace(b"],[", b"}{").replace(b",", b',"ShardId":')
        inner = inner.replace(b"}{", b'},{"SequenceNumber":')
        return b'{"FailedRecordCount":0,"Records":[{"SequenceNumber":' + inner + b"}]}"

    def put_records_failures(
        self, records: list[Any], fault: FaultConfig | None = None, *, encoded: bool = True
    ) -> list[tuple[int, int, str, str]]:
        """Like :meth:`put_records`, but return only the failed records: (index, ErrorCode,
        ErrorMessage, ErrorDetail)."""
        if not records:
            return []
        _seq, _shard, code, failed, cols = self._put(records, fault, encoded)
        if not failed:
            return []
        bad = np.flatnonzero(code)
        return [
            (i, _FAILURES[c]["ErrorCode"], _FAILURES[c]["ErrorMessage"], _detail(c, i, cols))
            for i, c in zip(bad.tolist(), code[bad].tolist(), strict=True)
        ]

    def _put(
        self, records: list[Any], fault: FaultConfig | None, encoded: bool
    ) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.int64], npt.NDArray[np.int8], int, _Columns]:
        """Place, check and write a batch: (sequence numbers, shards, failure codes, failure count,
        the request's columns, for :func:`_detail`)."""
        n = len(records)
        if n > MAX_RECORDS:
            raise StoreError(E.INVALID_ARGUMENT, f"at most {MAX_RECORDS} records per request, got {n}")
        cols = _Columns(records, encoded)
        with self.lock:
            count = self.meta.shard_count
            cols.shard_count = count
            code = cols.code
            rr_before = self._rr
            shard = np.full(n, -1, dtype=np.int64)
            if cols.sids is not None:
                has_sid = cols.has_sid
                sid_vals = cols.sid_vals
                out_of_range = has_sid & ((sid_vals < 0) | (sid_vals >= count)) & (code == 0)
                code[out_of_range] = _SHARD_RANGE
                shard = np.where(has_sid, sid_vals, shard)
            else:
                has_sid = np.zeros(n, dtype=bool)
            if cols.keys is not None and not has_sid.all():
                assert cols.klen is not None
                need = np.flatnonzero(~has_sid & (cols.klen > 0) & (code == 0))
                if len(need):
                    shard[need] = self._key_shards(_picker(need.tolist())(cols.keys), count, cols.keys_ascii)
            rr_mask = (shard < 0) & (code == 0) & ~has_sid
            m = int(rr_mask.sum())
            if m:
                shard[rr_mask] = (self._rr + np.arange(m)) % count
                self._rr = (self._rr + m) % count
            if fault is not None and fault.enabled:
                code[fault.failing(shard, code == 0)] = _BUSY
            ok = code == 0
            n_ok = int(np.count_nonzero(ok))
            steps = np.diff(shard)
            if n_ok == n and not (steps < 0).any():
                # every record is written and they already come in shard order (the sink's
                # requests): no reordering, no fancy indexing
                sorted_idx = None
                sorted_shards = shard
                bounds = np.flatnonzero(steps) + 1
            else:
                ok_idx = np.flatnonzero(ok)
                ok_shards = shard[ok_idx]
                order = np.argsort(ok_shards, kind="stable")
                sorted_idx = ok_idx[order]
                sorted_shards = ok_shards[order]
                bounds = np.flatnonzero(np.diff(sorted_shards)) + 1
            if cols.texts is not None:
                try:  # every record's Data is checked, also of those that will not be written
                    everyone = (
                        None if sorted_idx is None else np.concatenate((sorted_idx, np.flatnonzero(~ok)))
                    )
                    cols.decode_in_order(everyone)
                except StoreError:
                    self._rr = rr_before
                    raise
            if n_ok:
                seq_of = self._write_groups(sorted_idx, sorted_shards, bounds, cols, self.clock())
                self.records_written += n_ok
                self.data_bytes_written += int(cols.dlen.sum() if n_ok == n else cols.dlen[ok].sum())
            else:
                seq_of = np.zeros(n, dtype=np.int64)
            if n_ok < n:
                for c, k in zip(*np.unique(code[~ok], return_counts=True), strict=True):
                    name = _FAILURES[int(c)]["ErrorMessage"]
                    self.records_failed[name] = self.records_failed.get(name, 0) + int(k)
            return seq_of, shard, code, n - n_ok, cols

    def _write_groups(
        self,
        sorted_idx: npt.NDArray[np.int64] | None,
        sorted_shards: npt.NDArray[np.int64],
        bounds: npt.NDArray[np.int64],
        cols: _Columns,
        arrival: int,
    ) -> npt.NDArray[np.int64]:
        """Frame every shard's chunk in one numpy pass, then one ``writev`` per shard.

        ``sorted_idx`` lists the records to write in shard order (None: all of them, as they are).
        A chunk's data area is one slice of the decoded blob (or one join of the picked Data) and
        its meta area one join of the picked keys: no Python step per record. Returns every
        record's sequence number (0 for records not written).
        """
        starts = np.concatenate(([0], bounds)).astype(np.int64)
        total = len(sorted_shards) if sorted_idx is None else len(sorted_idx)
        ends = np.append(bounds, total).tolist()
        if sorted_idx is None:
            pick: Callable[[Sequence[Any]], Sequence[Any]] = _same
            take: Callable[[npt.NDArray[np.int64]], npt.NDArray[np.int64]] = _same
        else:
            pick = _picker(sorted_idx.tolist())
            take = operator.itemgetter(sorted_idx)
        klen = take(cols.klen) if cols.klen is not None else None
        clen = take(cols.clen) if cols.clen is not None else None
        strides = take(cols.strides) if cols.blob_starts is not None and cols.strides is not None else None
        headers, rel_index = frame_headers(take(cols.dlen), klen, clen, starts, strides=strides)
        if cols.blob_starts is not None:
            # Data decoded in this order: a shard's data area is one slice of the blob
            blob = memoryview(cols.blob)
            at = cols.blob_starts.tolist()

            def data_area(a: int, b: int) -> bytes | memoryview:
                return blob[at[a] : at[b]]

        else:
            assert cols.datas is not None
            datas = pick(cols.datas)

            def data_area(a: int, b: int) -> bytes | memoryview:
                return b"".join(datas[a:b])

        meta_area = _meta_areas(pick, cols)
        headers["arrival"] = arrival
        seqs = headers["seq"]
        for a, b in zip(starts.tolist(), ends, strict=True):
            log = self.shard(int(sorted_shards[a]))
            first, offset = log.reserve(arrival)
            seqs[a:b] += np.uint64(first)
            areas = (meta_area(a, b), data_area(a, b))
            log.commit_chunk(headers[a:b].tobytes(), areas, b - a, rel_index[a:b] + offset, arrival)
        if sorted_idx is None:
            return seqs.astype(np.int64)
        seq_of = np.zeros(len(cols.dlen), dtype=np.int64)
        seq_of[sorted_idx] = seqs
        return seq_of

    def _key_shards(self, keys: list[Any], count: int, ascii_keys: bool) -> npt.NDArray[np.int64]:
        """The shard of every (non-empty, valid) PartitionKey: ``shard_for_key(key, count)``.

        Each distinct new key is hashed once (xxh64 in C, jump hash vectorised over the batch) and
        remembered per stream (bounded cache, cleared when the shard count changes). ``keys`` are
        ``str`` when ``ascii_keys`` (their bytes are their characters), else already UTF-8 bytes.
        """
        shard_of = self._key_cache
        if self._key_cache_count != count or len(shard_of) > _KEY_CACHE_MAX:
            shard_of.clear()
            self._key_cache_count = count
        new = list(set(keys).difference(shard_of))  # set - dict keys, in C
        if new:
            encoded = list(map(_encode_key, new)) if ascii_keys else new
            hashes = np.fromiter(map(xxhash.xxh64_intdigest, encoded), dtype=np.uint64, count=len(new))
            shard_of.update(zip(new, jump_hash_array(hashes, count).tolist(), strict=True))
        return np.fromiter(map(shard_of.__getitem__, keys), dtype=np.int64, count=len(keys))

    # -- seek / get ------------------------------------------------------------------------------

    def encode_location(self, shard_id: int, seq: int) -> str:
        """An opaque location: stream id, shard and sequence, base64."""
        return base64.urlsafe_b64encode(_LOCATION.pack(self._uid32, shard_id, seq)).decode("ascii")

    def decode_location(self, shard_id: int, location: object) -> int:
        """The sequence number a location points at; IllegalLocationException when it is not valid here."""
        if not isinstance(location, str) or len(location) != 24:
            raise StoreError(E.ILLEGAL_LOCATION, "Location must be a string returned by Seek or GetRecords")
        try:
            uid32, shard, seq = _LOCATION.unpack(base64.urlsafe_b64decode(location))
        except (binascii.Error, ValueError, struct.error) as exc:
            raise StoreError(E.ILLEGAL_LOCATION, "Location is not a location this server issued") from exc
        if uid32 != self._uid32:
            raise StoreError(E.ILLEGAL_LOCATION, "Location belongs to another stream (or a deleted one)")
        if shard != shard_id:
            raise StoreError(E.ILLEGAL_LOCATION, f"Location belongs to shard {shard}, not shard {shard_id}")
        log = self.shard(shard_id)
        if seq > log.next_seq or seq < 1:
            raise StoreError(E.ILLEGAL_LOCATION, f"Location points past the end of shard {shard_id}")
        if seq < log.first_seq:
            raise StoreError(
                E.ILLEGAL_LOCATION, "Location points at records deleted by retention; seek again"
            )
        return int(seq)

    def seek(
        self,
        shard_id: int,
        seek_type: str,
        *,
        sequence_number: int | None = None,
        timestamp_ns: int | None = None,
    ) -> str:
        """Return a location in ``shard_id`` for EARLIEST, LATEST, SEQUENCE or TIME."""
        with self.lock:
            log = self.shard(shard_id)
            if seek_type == "EARLIEST":
                seq = max(log.first_seq, log.seek_time(self.retention_cutoff_ns()))
            elif seek_type == "LATEST":
                seq = log.next_seq
            elif seek_type == "SEQUENCE":
                assert sequence_number is not None
                if not log.first_seq <= sequence_number <= log.next_seq:
                    raise StoreError(
                        E.INVALID_ARGUMENT,
                        f"StartingSequenceNumber {sequence_number} is not in shard {shard_id} "
                        f"(it holds {log.first_seq}..{log.next_seq - 1})",
                    )
                seq = sequence_number
            elif seek_type == "TIME":
                assert timestamp_ns is not None
                seq = log.seek_time(max(timestamp_ns, self.retention_cutoff_ns()))
            else:
                raise StoreError(E.INVALID_ARGUMENT, f"unknown seek Type {seek_type!r}")
            return self.encode_location(shard_id, seq)

    def read(self, shard_id: int, location: object, limit: int) -> tuple[list[ReadRecord], int, int, int]:
        """Read from a location: (records, next sequence, records behind latest, ms behind latest).

        Records past retention are skipped.
        """
        with self.lock:
            seq = self.decode_location(shard_id, location)
            log = self.shard(shard_id)
            records = log.read(seq, limit, GET_MAX_BYTES)
            if records and records[0][1] < (cutoff := self.retention_cutoff_ns()):
                skip_to = log.seek_time(cutoff)
                records = log.read(skip_to, limit, GET_MAX_BYTES) if skip_to > seq else []
                seq = max(seq, skip_to)
            next_seq = records[-1][0] + 1 if records else seq
            behind = log.next_seq - next_seq
            msec = 0
            if behind > 0 and records:
                msec = max(0, (log.last_arrival_ns - records[-1][1]) // 1_000_000)
            return records, next_seq, behind, msec

    def get_records_doc(self, shard_id: int, location: object, limit: int) -> dict[str, Any]:
        """The GetRecords answer as a JSON-ready dict (``Records`` always present)."""
        records, next_seq, behind, msec = self.read(shard_id, location, limit)
        b64 = binascii.b2a_base64
        out = []
        for seq, arrival, key, ci, data in records:
            rec: dict[str, Any] = {
                "ArrivalTimeSec": arrival // 1_000_000_000,
                "ArrivalTimeNSec": arrival % 1_000_000_000,
                "SequenceNumber": seq,
                "Data": b64(data, newline=False).decode("ascii"),
            }
            if key:
                rec["PartitionKey"] = key.decode("utf-8", "replace")
            if ci:
                rec["ClientInfo"] = b64(ci, newline=False).decode("ascii")
            out.append(rec)
        return {
            "NextLocation": self.encode_location(shard_id, next_seq),
            "MSecBehindLatest": msec,
            "RecordsBehindLatest": behind,
            "Records": out,
        }


def _fail(kind: E.V3ioError) -> dict[str, Any]:
    return {"ErrorCode": kind.code, "ErrorMessage": kind.name}


_INVALID = 1
_SHARD_RANGE = 2
_BUSY = 3
_FAILURES: dict[int, dict[str, Any]] = {
    _INVALID: _fail(E.INVALID_ARGUMENT),
    _SHARD_RANGE: _fail(E.SHARD_OUT_OF_RANGE),
    _BUSY: _fail(E.RESOURCE_BUSY),
}


def _failure(code: int, index: int, cols: _Columns) -> dict[str, Any]:
    """The per-record result of a failed record: ErrorCode, ErrorMessage (the error's name, what
    clients match on) and ErrorDetail (what was wrong, for people; clients ignore extra keys)."""
    return {**_FAILURES[code], "ErrorDetail": _detail(code, index, cols)}


def _detail(code: int, index: int, cols: _Columns) -> str:
    """Why record ``index`` failed, naming the field and the limit:
    ``"PartitionKey is 300 bytes; the limit is 256"``."""
    if code == _SHARD_RANGE:
        sid = cols.sids[index] if cols.sids is not None else None
        count = cols.shard_count
        return f"ShardId {sid} does not exist; the stream has {count} shards (0..{count - 1})"
    if code == _BUSY:
        return "the shard cannot take the record now (an injected fault); retry it"
    if int(cols.dlen[index]) > MAX_DATA:
        return f"Data is {int(cols.dlen[index])} bytes; the limit is {MAX_DATA}"
    if cols.klen is not None and int(cols.klen[index]) > MAX_KEY:
        return f"PartitionKey is {int(cols.klen[index])} bytes (UTF-8); the limit is {MAX_KEY}"
    if cols.clen is not None and int(cols.clen[index]) > MAX_CLIENT_INFO:
        return f"ClientInfo is {int(cols.clen[index])} bytes; the limit is {MAX_CLIENT_INFO}"
    return "the record is invalid"


_NONE_TYPE = type(None)
_KEY_CACHE_MAX = 100_000
_get_data = operator.itemgetter("Data")
_encode_key = operator.methodcaller("encode", "utf-8", "surrogatepass")


def _picker(idx: list[int]) -> Callable[[Sequence[Any]], list[Any]]:
    """``pick(seq)`` -> ``[seq[i] for i in idx]``, done in C."""
    if len(idx) == 1:
        i = idx[0]
        return lambda seq: [seq[i]]
    getter = operator.itemgetter(*idx)
    return lambda seq: list(getter(seq))


def _same(values: Any) -> Any:
    return values


def _meta_areas(
    pick: Callable[[Sequence[Any]], Sequence[Any]], cols: _Columns
) -> Callable[[int, int], bytes]:
    """``area(a, b)``: the meta area (key | client info per record) of picked records ``a:b``."""
    if cols.keys is None and cols.cis is None:
        return lambda a, b: b""
    keys = pick(cols.keys) if cols.keys is not None else None
    cis = pick(cols.cis) if cols.cis is not None else None
    if cis is None and keys is not None and cols.keys_ascii:
        texts: Sequence[str] = keys
        return lambda a, b: "".join(texts[a:b]).encode("ascii")
    key_bytes = list(map(_encode_key, keys)) if keys is not None and cols.keys_ascii else keys
    return lambda a, b: join_meta(
        key_bytes[a:b] if key_bytes is not None else None, cis[a:b] if cis is not None else None
    )


def _first_bad(values: list[Any], allowed: tuple[type, ...]) -> int:
    for i, v in enumerate(values):
        if type(v) not in allowed:
            return i
    return -1


class _Columns:
    """The fields of a PutRecords request as columns, type-checked and base64-decoded."""

    def __init__(self, records: list[Any], encoded: bool) -> None:
        n = len(records)
        self.shard_count = 0  # the stream's shard count when the request was placed (set by _put)
        blob: type = str if encoded else bytes
        try:  # JSON gives dicts for objects; anything else fails the item lookup
            raw_datas = list(map(_get_data, records))
        except (KeyError, TypeError):
            i = _first_bad(records, (dict,))
            if i >= 0:
                raise StoreError(E.INVALID_ARGUMENT, f"Records[{i}] must be an object") from None
            i = next(i for i, r in enumerate(records) if "Data" not in r)
            raise StoreError(E.INVALID_ARGUMENT, f"Records[{i}].Data is required") from None
        if set(map(type, raw_datas)) != {blob}:
            i = _first_bad(raw_datas, (blob,))
            raise StoreError(E.INVALID_ARGUMENT, f"Records[{i}].Data must be a base64 string")
        self.code = np.zeros(n, dtype=np.int8)
        present = set().union(*records)
        self.datas: list[bytes] | None = None
        self.texts: list[str] | None = None
        self.strides: npt.NDArray[np.int64] | None = None
        self.blob = b""
        self.joined = ""
        self.blob_starts: npt.NDArray[np.int64] | None = None
        layout = _b64_layout(raw_datas) if encoded else None
        if layout is not None:
            # decoded later, in shard order, as one blob (see decode_in_order)
            in_len, pads, self.joined = layout
            self.texts = raw_datas
            self.strides = in_len // 4 * 3
            self.dlen = self.strides - pads
        elif encoded:
            self.datas, self.dlen = _decode_column(raw_datas, "Data")
        else:
            self.datas = raw_datas
            self.dlen = np.fromiter(map(len, raw_datas), dtype=np.int64, count=n)
        self.code[self.dlen > MAX_DATA] = _INVALID

        self.sids: list[Any] | None = None
        sids = _column(records, "ShardId", present)
        if sids is not None:
            sid_types = set(map(type, sids))
            if not sid_types <= {int, _NONE_TYPE}:
                i = _first_bad(sids, (int, _NONE_TYPE))
                raise StoreError(E.INVALID_ARGUMENT, f"Records[{i}].ShardId must be an integer")
            if sid_types != {_NONE_TYPE}:
                self.sids = sids
                if _NONE_TYPE in sid_types:
                    self.has_sid = np.fromiter((s is not None for s in sids), dtype=bool, count=n)
                    sids = [-1 if s is None else s for s in sids]
                else:
                    self.has_sid = np.ones(n, dtype=bool)
                try:
                    self.sid_vals = np.array(sids, dtype=np.int64)
                except OverflowError:
                    self.sid_vals = np.array([min(s, MAX_SHARDS + 1) for s in sids], dtype=np.int64)

        self.keys: list[Any] | None = None
        self.keys_ascii = True
        self.klen: npt.NDArray[np.int64] | None = None
        keys = _column(records, "PartitionKey", present)
        if keys is not None:
            key_types = set(map(type, keys))
            if not key_types <= {str, _NONE_TYPE}:
                i = _first_bad(keys, (str, _NONE_TYPE))
                raise StoreError(E.INVALID_ARGUMENT, f"Records[{i}].PartitionKey must be a string")
            if key_types != {_NONE_TYPE}:
                if _NONE_TYPE in key_types:
                    keys = [k or "" for k in keys]
                if "".join(keys).isascii():  # then a key's length is its byte length
                    self.keys = keys
                else:
                    self.keys = list(map(_encode_key, keys))
                    self.keys_ascii = False
                self.klen = np.fromiter(map(len, self.keys), dtype=np.int64, count=n)
                self.code[(self.klen > MAX_KEY) & (self.code == 0)] = _INVALID

        self.cis: list[bytes] | None = None
        self.clen: npt.NDArray[np.int64] | None = None
        cis = _column(records, "ClientInfo", present)
        if cis is not None:
            ci_types = set(map(type, cis))
            if not ci_types <= {blob, _NONE_TYPE}:
                i = _first_bad(cis, (blob, _NONE_TYPE))
                raise StoreError(E.INVALID_ARGUMENT, f"Records[{i}].ClientInfo must be a base64 string")
            if ci_types != {_NONE_TYPE}:
                if encoded:
                    self.cis = _decode_column([c if c is not None else "" for c in cis], "ClientInfo")[0]
                else:
                    self.cis = [c if c is not None else b"" for c in cis]
                self.clen = np.fromiter(map(len, self.cis), dtype=np.int64, count=n)
                self.code[(self.clen > MAX_CLIENT_INFO) & (self.code == 0)] = _INVALID

    def decode_in_order(self, order: npt.NDArray[np.int64] | None) -> None:
        """Decode deferred Data (every record, in ``order``) into one blob; bad base64 -> StoreError.

        ``order`` None means every record as it is. Record ``order[k]``'s bytes start at
        ``blob_starts[k]`` and take ``strides[order[k]]`` bytes of the blob, of which the first
        ``dlen`` are its Data (the rest: padding bits).
        """
        assert self.texts is not None and self.strides is not None
        # None: already in shard order (what the sink sends), so no second join
        joined = self.joined if order is None else "".join(_picker(order.tolist())(self.texts))
        decoded = _decode_joined_text(joined)
        if decoded is None:
            _decode_each(self.texts, "Data")  # raises, naming the record
            raise StoreError(E.INVALID_ARGUMENT, "Data is not valid base64")
        self.blob = decoded
        strides = self.strides if order is None else self.strides[order]
        self.blob_starts = np.concatenate(([0], np.cumsum(strides))).astype(np.int64)


def _column(records: list[dict[str, Any]], name: str, present: set[str]) -> list[Any] | None:
    """The values of field ``name`` (None where absent), or None when no record has it."""
    if name not in present:
        return None
    try:
        return list(map(operator.itemgetter(name), records))
    except KeyError:
        return list(map(operator.methodcaller("get", name), records))


def _decode_column(texts: list[str], field: str) -> tuple[list[bytes], npt.NDArray[np.int64]]:
    """Decode base64 strings, exactly as strictly as ``strict_mode=True`` but much faster.

    The common case is one C call for the whole column (:func:`_decode_joined`); anything it does
    not accept goes through the per-string path, which finds and names the bad record.
    """
    fast = _decode_joined(texts)
    if fast is not None:
        return fast
    return _decode_each(texts, field)


_PAD = 61  # ord("=")


def _b64_layout(texts: list[str]) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.int64], str] | None:
    """(length, padding count) of every string, and their concatenation, when the column can be
    decoded joined; else None.

    Accepted only when every string is ASCII, a multiple of 4 long, and holds ``=`` only as its
    last one or two characters (canonical padding). Then each string is a run of whole quads, the
    padding can be replaced by ``A`` (zero bits) so that a concatenation holds no ``=``, and one
    strict decode (pybase64, SIMD) checks the alphabet and yields every string's bytes at
    ``offset * 3 / 4``, the padding's bytes to cut off (see :func:`_decode_joined_text`).
    """
    n = len(texts)
    in_len = np.fromiter(map(len, texts), dtype=np.int64, count=n)
    if (in_len & 3).any():
        return None
    joined = "".join(texts)
    if not joined.isascii():
        return None
    if "=" not in joined:
        return in_len, np.zeros(n, dtype=np.int64), joined
    raw = np.frombuffer(joined.encode("ascii"), dtype=np.uint8)
    ends = np.cumsum(in_len)
    nonempty = in_len > 0
    last = np.zeros(n, dtype=bool)
    second = np.zeros(n, dtype=bool)
    tail = ends[nonempty]
    last[nonempty] = raw[tail - 1] == _PAD
    second[nonempty] = raw[tail - 2] == _PAD
    if (second & ~last).any():
        return None
    pads = last.astype(np.int64) + second
    if int(pads.sum()) != int(np.count_nonzero(raw == _PAD)):
        return None  # "=" somewhere else than the padding
    return in_len, pads, joined


def _decode_joined_text(joined: str) -> bytes | None:
    """Decode the concatenation of strings that passed :func:`_b64_layout`; None when not base64."""
    joined = joined.replace("=", "A")
    try:
        decoded = pybase64.b64decode(joined, validate=True)  # SIMD; refuses any non-alphabet byte
    except (binascii.Error, ValueError):
        return None
    return decoded if len(decoded) == len(joined) // 4 * 3 else None


def _decode_joined(texts: list[str]) -> tuple[list[bytes], npt.NDArray[np.int64]] | None:
    """Decode every string with one base64 call over their concatenation; None to fall back."""
    layout = _b64_layout(texts)
    if layout is None:
        return None
    in_len, pads, joined = layout
    decoded = _decode_joined_text(joined)
    if decoded is None:
        return None
    out_len = in_len // 4 * 3 - pads
    starts = (np.cumsum(in_len) - in_len) // 4 * 3
    out = list(map(decoded.__getitem__, map(slice, starts.tolist(), (starts + out_len).tolist())))
    return out, out_len


def _decode_each(texts: list[str], field: str) -> tuple[list[bytes], npt.NDArray[np.int64]]:
    """Decode base64 strings one by one (non-strict decode plus a canonical-length check).

    Non-strict decoding skips bad characters; any skipped character or misplaced padding makes the
    decoded length differ from the canonical one, which is checked for the whole column at once.
    """
    a2b = binascii.a2b_base64
    try:
        out = list(map(a2b, texts))
    except (binascii.Error, ValueError):
        for i, t in enumerate(texts):
            try:
                a2b(t)
            except (binascii.Error, ValueError) as exc:
                raise StoreError(
                    E.INVALID_ARGUMENT, f"Records[{i}].{field} is not valid base64 ({exc})"
                ) from None
        raise
    n = len(texts)
    in_len = np.fromiter(map(len, texts), dtype=np.int64, count=n)
    out_len = np.fromiter(map(len, out), dtype=np.int64, count=n)
    bad = np.flatnonzero((out_len + 2) // 3 * 4 != in_len)
    if len(bad):
        raise StoreError(E.INVALID_ARGUMENT, f"Records[{int(bad[0])}].{field} is not valid base64")
    return out, out_len
