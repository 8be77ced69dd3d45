"""Partition key -> shard.

The primitives here are shared by the sink (client-side placement) and the embedded server
(server-side placement of records that carry only a PartitionKey), so both agree on where a key
lives: ``jump_hash(xxh64(key), shards)``. Jump consistent hash moves a key only to a *new* shard
when the count grows, and spreads keys evenly. Streams that route keys by MD5 over hash-key ranges
(Kinesis) use the hash-range model of :class:`ShardMap` instead.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt
import xxhash

from shardline.errors import PluginError
from shardline.md5many import md5_many

if TYPE_CHECKING:
    from shardline.transport import HashRange, StreamInfo

_JUMP_MULTIPLIER = 2862933555777941757
_MASK64 = 0xFFFFFFFFFFFFFFFF


def key_bytes(key: str | bytes) -> bytes:
    """The bytes a partition key is hashed as (UTF-8 for text)."""
    return key.encode("utf-8") if isinstance(key, str) else bytes(key)


def key_hash(key: str | bytes) -> int:
    """Stable 64-bit hash of a partition key (xxh64, seed 0)."""
    return xxhash.xxh64_intdigest(key_bytes(key))


def jump_hash(hash64: int, shards: int) -> int:
    """Jump consistent hash (Lamping & Veach) of a 64-bit value into ``shards`` buckets."""
    if shards < 1:
        raise ValueError(f"shards must be >= 1, got {shards}")
    b, j = -1, 0
    key = hash64 & _MASK64
    while j < shards:
        b = j
        key = (key * _JUMP_MULTIPLIER + 1) & _MASK64
        j = int((b + 1) * (float(1 << 31) / float((key >> 33) + 1)))
    return b


def jump_hash_array(hashes: npt.NDArray[np.uint64], shards: int) -> npt.NDArray[np.int64]:
    """Vectorised :func:`jump_hash` over an array of 64-bit hashes."""
    if shards < 1:
        raise ValueError(f"shards must be >= 1, got {shards}")
    key = np.asarray(hashes, dtype=np.uint64).copy()
    b = np.full(key.shape, -1, dtype=np.int64)
    j = np.zeros(key.shape, dtype=np.int64)
    active = j < shards
    mult = np.uint64(_JUMP_MULTIPLIER)
    one = np.uint64(1)
    with np.errstate(over="ignore"):
        while active.any():
            b = np.where(active, j, b)
            key = np.where(active, key * mult + one, key)
            nxt = (b + 1).astype(np.float64) * (
                float(1 << 31) / ((key >> np.uint64(33)).astype(np.float64) + 1.0)
            )
            j = np.where(active, nxt.astype(np.int64), j)
            active = j < shards
    return b


def shard_for_key(key: str | bytes, shards: int) -> int:
    """The shard a partition key belongs to among ``shards``: ``jump_hash(xxh64(key), shards)``."""
    return jump_hash(key_hash(key), shards)


def modulo_shard(key: str | bytes, shards: int) -> int:
    """``xxh32(key) % shards``: the placement storey's stream target and older v3io clients use."""
    return xxhash.xxh32_intdigest(key_bytes(key)) % shards


BUILTIN_PARTITIONERS: dict[str, object] = {}


# ---------------------------------------------------------------------------------------------
# strategies (registered through ``shardline_register_partitioners``)

PerKey = Callable[[Sequence[str], npt.NDArray[np.uint64], int], npt.NDArray[np.int64]]
"""``per_key(keys, xxh64_hashes, shard_count) -> shard per distinct key`` (called once per batch)."""


@dataclass(frozen=True)
class Partitioner:
    """A partition strategy: how the sink places records on shards.

    ``per_key`` maps each *distinct* key of a batch to a shard (the sink takes the result for every
    row), or is None for the strategies that do not look at keys (``column``, ``round-robin``).
    ``sends_shard_id`` is False when the server places records (the ``server`` strategy): the sink
    still uses ``per_key`` to keep one ordering lane per key. ``by_key_hash`` is True for the
    strategies that follow the stream's own routing of keys: on a hash-range stream
    (:class:`ShardMap` hash-range model) their lane is the shard the stream routes the key to, and
    records carry no explicit shard. A plugin may register a :class:`Partitioner` or a plain
    ``per_key`` function (on a hash-range stream its lanes are open shards by starting hash key,
    addressed explicitly).
    """

    name: str
    per_key: PerKey | None
    needs_key: bool = True
    sends_shard_id: bool = True
    by_key_hash: bool = False


def _hash_per_key(keys: Sequence[str], hashes: npt.NDArray[np.uint64], shards: int) -> npt.NDArray[np.int64]:
    return jump_hash_array(hashes, shards)


def _modulo_per_key(
    keys: Sequence[str], hashes: npt.NDArray[np.uint64], shards: int
) -> npt.NDArray[np.int64]:
    return np.fromiter((modulo_shard(k, shards) for k in keys), dtype=np.int64, count=len(keys))


BUILTIN_PARTITIONERS.update(
    {
        "hash": Partitioner("hash", _hash_per_key, by_key_hash=True),
        "modulo": Partitioner("modulo", _modulo_per_key),
        "server": Partitioner("server", _hash_per_key, sends_shard_id=False, by_key_hash=True),
        "column": Partitioner("column", None, needs_key=False),
        "round-robin": Partitioner("round-robin", None, needs_key=False),
    }
)


def resolve_partitioner(name: str) -> Partitioner:
    """The partitioner called ``name``: a built-in, or one a plugin registered."""
    found = BUILTIN_PARTITIONERS.get(name)
    if found is None:
        from shardline import plugins

        found = plugins.lookup("partitioners", name)
    if isinstance(found, Partitioner):
        return found
    if callable(found):
        return Partitioner(name, found)
    raise PluginError(f"partitioner {name!r} is neither a shardline Partitioner nor a function")


class ShardMap:
    """The shards a sink places records on (its lanes), and where keys live among them.

    Two addressing models, picked by :meth:`for_stream` from what DescribeStream said:

    **count** (``StreamInfo.shards`` is None; v3io): shards ``0..shard_count-1``; a key's lane is
    ``jump_hash(xxh64(key), shard_count)``; :meth:`address` of a lane is its shard number. Counts
    only grow; with jump hash a key moves only to a *new* shard, at most once per growth.

    **hash-range** (``StreamInfo.shards`` given; Kinesis): lane ``i`` is the ``i``-th open shard by
    ``start``; a key's lane is the open shard whose hash-key range holds ``int.from_bytes(md5(utf8
    key), "big")`` (how the stream routes it), so lanes follow the shard a record lands on;
    :meth:`address` of a lane is its starting hash key as a decimal string (an ExplicitHashKey that
    routes to that shard). Splits and merges replace the open shards.

    The sink refreshes the map on a timer, at once when a record's outcome is REFRESH, and when a
    put lands on a shard the map does not know (:meth:`knows`). :meth:`adopt` takes a newer
    description (the engine drains before it calls it); ``generation`` counts the changes.
    """

    def __init__(self, shard_count: int = 1, *, ranges: Sequence[HashRange] | None = None) -> None:
        self.generation = 0
        self.ranges: tuple[HashRange, ...] | None = None
        self.shard_count = 0
        self._set(shard_count, ranges)

    @classmethod
    def for_stream(cls, info: StreamInfo) -> ShardMap:
        """The map of a described stream: hash-range when it lists its shards, else count."""
        return cls(info.shard_count, ranges=info.shards)

    @property
    def hash_range(self) -> bool:
        """True for the hash-range model."""
        return self.ranges is not None

    def _set(self, shard_count: int, ranges: Sequence[HashRange] | None) -> None:
        if ranges is None:
            if shard_count < 1:
                raise ValueError(f"a stream has at least one shard, got {shard_count}")
            self.shard_count = shard_count
            self._ids: dict[str, int] = {}
            return
        ordered = tuple(sorted(ranges, key=lambda r: r.start))
        if not ordered:
            raise ValueError("a hash-range stream has at least one open shard")
        self.ranges = ordered
        self.shard_count = len(ordered)
        self._ids = {r.shard_id: i for i, r in enumerate(ordered)}
        starts = np.array([[r.start >> 64, r.start & _MASK64] for r in ordered], dtype=np.uint64)
        self._start_hi, self._start_lo = starts[:, 0].copy(), starts[:, 1].copy()

    def grow(self, new_count: int) -> bool:
        """Count model: adopt a larger count; False (and the map kept) when it is not larger."""
        if self.ranges is not None:
            raise ValueError("grow() is for numbered shards; a hash-range map adopts descriptions")
        if new_count <= self.shard_count:
            return False
        self.shard_count = new_count
        self.generation += 1
        return True

    def differs(self, info: StreamInfo) -> bool:
        """True when ``info`` describes other shards than the map's (a count only counts when larger)."""
        if info.shards is None and self.ranges is None:
            return info.shard_count > self.shard_count
        if info.shards is None or self.ranges is None:
            return True
        return tuple(sorted(info.shards, key=lambda r: r.start)) != self.ranges

    def adopt(self, info: StreamInfo) -> bool:
        """Take ``info``'s shards when they differ (:meth:`differs`); True when the map changed."""
        if not self.differs(info):
            return False
        self.ranges = None
        self._set(info.shard_count, info.shards)
        self.generation += 1
        return True

    def address(self, lane: int) -> int | str:
        """What a record addressed to ``lane`` names: the shard number (count), or the shard's
        starting hash key as a decimal string (hash-range)."""
        if self.ranges is None:
            return lane
        return str(self.ranges[lane].start)

    def shard_id(self, lane: int) -> int | str:
        """The stream's name of ``lane``'s shard: its number, or its id (``"shardId-000000000003"``)."""
        return lane if self.ranges is None else self.ranges[lane].shard_id

    def knows(self, shard_ids: Iterable[str]) -> bool:
        """False when a put landed on a shard the map does not have (the stream was resharded)."""
        if self.ranges is None:
            return all(s.isdigit() and int(s) < self.shard_count for s in shard_ids)
        return all(s in self._ids for s in shard_ids)

    def shards_of(self, hashes: npt.NDArray[np.uint64]) -> npt.NDArray[np.int64]:
        """Count model: lanes of 64-bit key hashes (xxh64) under the current count."""
        return jump_hash_array(hashes, self.shard_count)

    def lanes_of_keys(self, keys: Sequence[str]) -> npt.NDArray[np.int64]:
        """Hash-range model: the lane of each (distinct) key, as the stream routes it by MD5."""
        return self.lanes_of_hash_keys(md5_hash_keys(keys))

    def lanes_of_hash_keys(self, hash_keys: npt.NDArray[np.uint64]) -> npt.NDArray[np.int64]:
        """Hash-range model: lanes of 128-bit hash keys given as ``(n, 2)`` big-endian halves."""
        assert self.ranges is not None
        hi, lo = hash_keys[:, 0], hash_keys[:, 1]
        # the last open shard whose start <= key: count the starts <= key, compared (hi, lo)
        pos = np.searchsorted(self._start_hi, hi, side="left")
        end = np.searchsorted(self._start_hi, hi, side="right")
        tie = np.flatnonzero(pos < end)  # starts sharing the key's high half (rare): walk them
        while len(tie):
            step = tie[self._start_lo[pos[tie]] <= lo[tie]]
            pos[step] += 1
            tie = step[pos[step] < end[step]]
        return np.maximum(pos - 1, 0).astype(np.int64)

    @staticmethod
    def moved_keys(hashes: npt.NDArray[np.uint64], old_count: int, new_count: int) -> npt.NDArray[np.bool_]:
        """Count model: which keys change shard between two counts."""
        moved = jump_hash_array(hashes, old_count) != jump_hash_array(hashes, new_count)
        return np.asarray(moved, dtype=np.bool_)


def md5_hash_keys(keys: Sequence[str]) -> npt.NDArray[np.uint64]:
    """The 128-bit MD5 of each key's UTF-8 bytes as ``(n, 2)`` uint64 (high, low) halves: the hash
    key Kinesis routes a PartitionKey by (call it on distinct keys; see :mod:`shardline.md5many`
    for the vectorised form over an Arrow column)."""
    encoded = [k.encode("utf-8") for k in keys]
    lengths = np.fromiter((len(k) for k in encoded), np.int64, len(encoded))
    offsets = np.concatenate([np.zeros(1, np.int64), np.cumsum(lengths)])
    return md5_many(offsets, np.frombuffer(b"".join(encoded), np.uint8))


def hash_key_of(key: str) -> int:
    """``int.from_bytes(md5(utf8 key), "big")``: a PartitionKey's 128-bit hash key."""
    return int.from_bytes(hashlib.md5(key.encode("utf-8"), usedforsecurity=False).digest(), "big")


# ---------------------------------------------------------------------------------------------
# xxh64 over many keys at once

_P1 = np.uint64(11400714785074694791)
_P2 = np.uint64(14029467366897019727)
_P3 = np.uint64(1609587929392839161)
_P4 = np.uint64(9650029242287828579)
_P5 = np.uint64(2870177450012600261)
_VECTOR_MAX_KEY = 512  # longer keys (never valid partition keys) are hashed one by one


def _rotl(x: npt.NDArray[np.uint64], r: int) -> npt.NDArray[np.uint64]:
    return (x << np.uint64(r)) | (x >> np.uint64(64 - r))


def _round(acc: npt.NDArray[np.uint64], lane: npt.NDArray[np.uint64]) -> npt.NDArray[np.uint64]:
    return _rotl(acc + lane * _P2, 31) * _P1


def _read(buf: npt.NDArray[np.uint8], pos: npt.NDArray[np.int64], width: int) -> npt.NDArray[np.uint64]:
    """Little-endian words of ``width`` (4 or 8) bytes at byte positions ``pos`` (unaligned reads)."""
    dtype = np.dtype("<u8") if width == 8 else np.dtype("<u4")
    words: npt.NDArray[Any] = np.ndarray((len(buf) - 8,), dtype=dtype, buffer=buf, offset=0, strides=(1,))
    return words[pos].astype(np.uint64)


def xxh64_many(offsets: npt.NDArray[np.int64], data: npt.NDArray[np.uint8]) -> npt.NDArray[np.uint64]:
    """xxh64 (seed 0) of each value of a binary array given as offsets and bytes, vectorised.

    Equal to ``xxhash.xxh64_intdigest`` of every value (the tests check it against the library);
    used to hash the distinct partition keys of a batch without a Python call per key.
    """
    offsets = np.asarray(offsets, dtype=np.int64)
    n = len(offsets) - 1
    out = np.zeros(n, dtype=np.uint64)
    if n <= 0:
        return out
    lens = np.diff(offsets)
    buf = np.concatenate([np.asarray(data, dtype=np.uint8), np.zeros(8, np.uint8)])
    long_rows = np.flatnonzero(lens > _VECTOR_MAX_KEY)
    with np.errstate(over="ignore"):
        start = offsets[:-1].copy()
        end = offsets[1:]
        h = np.full(n, _P5, dtype=np.uint64)
        big = np.flatnonzero(lens >= 32)
        if len(big):
            p = start[big].copy()
            limit = end[big] - 32
            v1 = np.full(len(big), _P1 + _P2, dtype=np.uint64)
            v2 = np.full(len(big), _P2, dtype=np.uint64)
            v3 = np.zeros(len(big), dtype=np.uint64)
            v4 = np.zeros(len(big), dtype=np.uint64) - _P1
            act = np.flatnonzero(p <= limit)
            while len(act):
                q = p[act]
                v1[act] = _round(v1[act], _read(buf, q, 8))
                v2[act] = _round(v2[act], _read(buf, q + 8, 8))
                v3[act] = _round(v3[act], _read(buf, q + 16, 8))
                v4[act] = _round(v4[act], _read(buf, q + 24, 8))
                p[act] = q + 32
                act = act[p[act] <= limit[act]]
            acc = _rotl(v1, 1) + _rotl(v2, 7) + _rotl(v3, 12) + _rotl(v4, 18)
            for v in (v1, v2, v3, v4):
                acc = (acc ^ _round(np.zeros_like(v), v)) * _P1 + _P4
            h[big] = acc
            start[big] = p
        h += lens.astype(np.uint64)
        p = start
        act = np.flatnonzero(p + 8 <= end)
        while len(act):
            k1 = _round(np.zeros(len(act), np.uint64), _read(buf, p[act], 8))
            h[act] = _rotl(h[act] ^ k1, 27) * _P1 + _P4
            p[act] += 8
            act = act[p[act] + 8 <= end[act]]
        act = np.flatnonzero(p + 4 <= end)
        if len(act):
            h[act] = _rotl(h[act] ^ (_read(buf, p[act], 4) * _P1), 23) * _P2 + _P3
            p[act] += 4
        act = np.flatnonzero(p < end)
        while len(act):
            h[act] = _rotl(h[act] ^ (buf[p[act]].astype(np.uint64) * _P5), 11) * _P1
            p[act] += 1
            act = act[p[act] < end[act]]
        h ^= h >> np.uint64(33)
        h *= _P2
        h ^= h >> np.uint64(29)
        h *= _P3
        h ^= h >> np.uint64(32)
    for i in long_rows:  # cheap exactness for absurdly long values
        h[i] = xxhash.xxh64_intdigest(buf[offsets[i] : offsets[i + 1]].tobytes())
    return h
