"""Partition key -> shard.

The primitives here are shared by the sink (client-side placement) and the embedded server
(server-side placement of records that carry only a PartitionKey), so both agree on where a key
lives: ``jump_hash(xxh64(key), shards)``. Jump consistent hash moves a key only to a *new* shard
when the count grows, and spreads keys evenly.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt
import xxhash

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
            nxt = ((b + 1).astype(np.float64) * (float(1 << 31) / ((key >> np.uint64(33)).astype(np.float64) + 1.0)))
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
