"""One stream: its metadata (a small JSON written atomically) and its shards.

The metadata file ``.shardline-stream.json`` in the stream's directory holds the shard count, the
retention and a random id that locations carry, so that a location of a deleted and re-created
stream is refused instead of pointing at someone else's records.
"""

from __future__ import annotations

import base64
import binascii
import os
import struct
import threading
import time
import uuid
import zlib
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import orjson
from shardline.partitioning import shard_for_key

from shardline_v3io import errors as E
from shardline_v3io.faults import FaultConfig
from shardline_v3io.store.errors import StoreError
from shardline_v3io.store.shard import ReadRecord, ShardLog

META_FILE = ".shardline-stream.json"
SHARDS_DIR = ".shardline-shards"

MAX_RECORDS = 1000
MAX_DATA = 2**20
MAX_KEY = 256
MAX_CLIENT_INFO = 16
MAX_SHARDS = 4096
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
    ) -> None:
        self.directory = directory
        self.meta = meta
        self.fsync = fsync
        self.segment_bytes = segment_bytes
        self.clock = clock
        self.lock = threading.RLock()
        self._shards: dict[int, ShardLog] = {}
        self._rr = 0
        self._uid32 = zlib.crc32(meta.uid.encode())

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
        return log

    def retention_cutoff_ns(self) -> int:
        """Records that arrived before this time (ns) are past retention."""
        return self.clock() - self.meta.retention_hours * 3600 * 10**9

    def close(self) -> None:
        """Close every open shard."""
        with self.lock:
            for log in self._shards.values():
                log.close()
            self._shards.clear()

    def apply_retention(self) -> int:
        """Delete whole segments past retention in every shard; return how many were deleted."""
        with self.lock:
            cutoff = self.retention_cutoff_ns()
            dropped = 0
            shards_dir = self.directory / SHARDS_DIR
            if not shards_dir.is_dir():
                return 0
            for name in os.listdir(shards_dir):
                if name.isdigit() and int(name) < self.meta.shard_count:
                    dropped += self.shard(int(name)).drop_expired_segments(cutoff)
            return dropped

    # -- put -------------------------------------------------------------------------------------

    def put_batch(
        self,
        datas: Sequence[bytes],
        keys: Sequence[str | None],
        shard_ids: Sequence[int | None],
        client_infos: Sequence[bytes | None],
        fault: FaultConfig | None = None,
    ) -> tuple[list[dict[str, Any]], int]:
        """Write a PutRecords batch; return the per-record result objects and the failure count.

        Placement: ShardId wins; else a non-empty PartitionKey goes to
        ``shard_for_key(key, shard_count)``; else round robin per stream, starting at shard 0.
        Per-record problems (size limits, shard out of range, injected faults) fail only that record.
        """
        n = len(datas)
        with self.lock:
            count = self.meta.shard_count
            results: list[Any] = [None] * n
            shard_of = [0] * n
            key_bytes: list[bytes] = [b""] * n
            ok: list[int] = []
            key_cache: dict[str, tuple[bytes, int]] = {}
            rr = self._rr
            failed = 0
            for i in range(n):
                data = datas[i]
                key = keys[i]
                ci = client_infos[i]
                sid = shard_ids[i]
                if len(data) > MAX_DATA or (ci is not None and len(ci) > MAX_CLIENT_INFO):
                    results[i] = _fail(E.INVALID_ARGUMENT)
                    failed += 1
                    continue
                if key:
                    cached = key_cache.get(key)
                    if cached is None:
                        kb = key.encode("utf-8")
                        cached = (kb, shard_for_key(kb, count) if len(kb) <= MAX_KEY else -1)
                        key_cache[key] = cached
                    kb, kshard = cached
                    if kshard < 0:
                        results[i] = _fail(E.INVALID_ARGUMENT)
                        failed += 1
                        continue
                    key_bytes[i] = kb
                else:
                    kshard = -1
                if sid is not None:
                    if not 0 <= sid < count:
                        results[i] = _fail(E.SHARD_OUT_OF_RANGE)
                        failed += 1
                        continue
                    shard = sid
                elif kshard >= 0:
                    shard = kshard
                else:
                    shard = rr % count
                    rr += 1
                shard_of[i] = shard
                ok.append(i)
            self._rr = rr % count if count else 0
            if fault is not None and fault.enabled:
                bad = fault.failing(shard_of, ok)
                if bad:
                    for i in bad:
                        results[i] = _fail(E.RESOURCE_BUSY)
                    failed += len(bad)
                    ok = [i for i in ok if i not in bad]
            groups: dict[int, list[int]] = {}
            for i in ok:
                g = groups.get(shard_of[i])
                if g is None:
                    groups[shard_of[i]] = [i]
                else:
                    g.append(i)
            arrival = self.clock()
            empty = b""
            for shard, idxs in groups.items():
                log = self.shard(shard)
                first = log.append(
                    [key_bytes[i] for i in idxs],
                    [client_infos[i] or empty for i in idxs],
                    [datas[i] for i in idxs],
                    arrival,
                )
                for seq, i in enumerate(idxs, first):
                    results[i] = {"SequenceNumber": seq, "ShardId": shard}
            return results, failed

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
