"""StreamStore: the durable store behind ``shardline serve`` and ``local://`` URLs.

Layout under the data directory::

    shardline-store.json                 marker (format version)
    <container>/<dir>/.../<object>       simple objects are plain files, directories are directories
    <container>/<stream path>/           a stream is a directory holding
        .shardline-stream.json           its metadata (shard count, retention, id), written atomically
        .shardline-shards/<id>/          per shard: <first-seq>.log + <first-seq>.idx segments
        <other objects>                  e.g. consumer-group state objects clients put there

Names starting with ``.shardline`` are reserved. Listing a stream directory shows its shards as
objects ``<stream path>/<id>`` (as v3io does), so clients that delete a stream by listing it and
deleting every key work unchanged.
"""

from __future__ import annotations

import fcntl
import os
import shutil
import stat
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import orjson
from shardline import ConfigError

from shardline_v3io import errors as E
from shardline_v3io.store.errors import StoreError
from shardline_v3io.store.names import RESERVED_PREFIX, is_shard_name, segment_problem, validate_segments
from shardline_v3io.store.stream import (
    MAX_SHARDS,
    META_FILE,
    SHARDS_DIR,
    OpenShards,
    Stream,
    StreamMeta,
    new_meta,
    read_meta,
    write_atomically,
)
from shardline_v3io.urls import STORE_MARKER

__all__ = ["RESERVED_PREFIX", "ListEntry", "Listing", "StreamStore", "validate_segments"]

LOCK_FILE = ".shardline-lock"
STORE_FORMAT = 2  # 2: shard segments in layout SHL3 (1: SHL2, keys interleaved with Data)


def _lock_directory(root: Path) -> int:
    """Take an exclusive lock on the store directory (released when the process dies)."""
    fd = os.open(root / LOCK_FILE, os.O_RDWR | os.O_CREAT | getattr(os, "O_CLOEXEC", 0), 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as exc:
        os.close(fd)
        raise ConfigError(
            f"the stream store {root} is in use by another process (a running `shardline serve`?); "
            f"use that server's http:// URL, or stop it first"
        ) from exc
    os.ftruncate(fd, 0)
    os.write(fd, str(os.getpid()).encode())
    return fd


def _check_format(root: Path) -> None:
    """Stamp a new store with :data:`STORE_FORMAT`; refuse one whose streams this version cannot read.

    A format-1 store without streams (objects only) is simply re-stamped; one with streams is
    refused with what to do, and nothing in it is touched.
    """
    marker = root / STORE_MARKER
    stamp = orjson.dumps({"format": STORE_FORMAT, "kind": "shardline stream store"})
    if not marker.exists():
        write_atomically(marker, stamp)
        return
    try:
        found = orjson.loads(marker.read_bytes()).get("format")
    except (orjson.JSONDecodeError, AttributeError, OSError) as exc:
        raise ConfigError(f"{marker} is not a shardline store marker ({exc})") from exc
    if found == STORE_FORMAT:
        return
    if found == 1 and next(root.rglob(SHARDS_DIR), None) is None:
        write_atomically(marker, stamp)
        return
    raise ConfigError(
        f"the stream store {root} is in store format {found!r}, this version of shardline reads "
        f"format {STORE_FORMAT} (its shard segments changed layout); serve it with the version that "
        "wrote it, or use a new --data-dir (nothing in the old one was changed)"
    )


@dataclass(frozen=True)
class ListEntry:
    """One listed object (``is_dir`` False) or directory (key ends with ``/``)."""

    key: str
    size: int
    mtime: float
    is_dir: bool


@dataclass(frozen=True)
class Listing:
    """A page of a container listing."""

    entries: list[ListEntry]
    truncated: bool
    next_marker: str


class StreamStore:
    """A directory of containers holding objects, directories and streams."""

    def __init__(
        self,
        data_dir: str | os.PathLike[str],
        *,
        fsync: bool = False,
        segment_bytes: int = 64 * 2**20,
        clock: Callable[[], int] = time.time_ns,
        max_open_shards: int = 512,
    ) -> None:
        self.root = Path(data_dir).resolve()
        self.fsync = fsync
        self.segment_bytes = segment_bytes
        self.clock = clock
        self._lock = threading.RLock()
        self._streams: dict[tuple[str, ...], Stream] = {}
        self.open_shards = OpenShards(max_open_shards)
        self.root.mkdir(parents=True, exist_ok=True)
        self._lock_fd = _lock_directory(self.root)
        try:
            _check_format(self.root)
        except ConfigError:
            os.close(self._lock_fd)
            raise

    # -- paths -----------------------------------------------------------------------------------

    def _fs_path(self, segments: list[str]) -> Path:
        """The file-system path of checked ``segments``, confined to the data directory.

        No part of a path may be a symbolic link (a link in the data directory could point anywhere:
        GET would read, PUT write and DELETE remove outside it): raise 400 InvalidArgumentException.
        """
        p = self.root
        for i, seg in enumerate(segments):
            p = p / seg
            try:
                st = os.lstat(p)
            except OSError:  # missing (or not a directory on the way): nothing further exists
                return self.root.joinpath(*segments)
            if stat.S_ISLNK(st.st_mode):
                raise StoreError(
                    E.INVALID_ARGUMENT,
                    f"{'/'.join(segments[: i + 1])} is a symbolic link; shardline serve does not follow "
                    "links in its data directory",
                )
        return p

    def _streams_under(self, directory: Path) -> list[str]:
        """Paths (relative to the data directory) of the streams strictly below ``directory``."""
        found: list[str] = []
        if not directory.is_dir():
            return found
        for dirpath, dirnames, filenames in os.walk(directory):  # never follows links
            if META_FILE in filenames and Path(dirpath) != directory:
                found.append(Path(dirpath).relative_to(self.root).as_posix())
            dirnames[:] = [d for d in dirnames if not d.startswith(RESERVED_PREFIX)]
        return sorted(found)

    def _refuse_if_holds_streams(self, directory: Path, what: str) -> None:
        inner = self._streams_under(directory)
        if inner:
            raise StoreError(
                E.DIRECTORY_NOT_EMPTY,
                f"{what} holds the stream {inner[0]}"
                + (f" and {len(inner) - 1} more" if len(inner) > 1 else "")
                + "; delete those streams first",
            )

    def _stream_dir_of(self, segments: list[str]) -> tuple[list[str], Path] | None:
        """The innermost ancestor of ``segments`` (excluding itself) that is a stream, if any."""
        for i in range(len(segments) - 1, 1, -1):
            p = self._fs_path(segments[:i])
            if (p / META_FILE).is_file():
                return segments[:i], p
        return None

    # -- streams ---------------------------------------------------------------------------------

    def create_stream(self, container: str, path: str, shard_count: int, retention_hours: int) -> bool:
        """Create a stream; return False (changing nothing) when it already exists."""
        segments = validate_segments(container, path)
        if len(segments) < 2:
            raise StoreError(E.INVALID_ARGUMENT, "a stream path inside the container is required")
        if not 1 <= shard_count <= MAX_SHARDS:
            raise StoreError(
                E.INVALID_ARGUMENT, f"ShardCount must be within 1..{MAX_SHARDS}, got {shard_count}"
            )
        if not 1 <= retention_hours <= 24 * 365 * 10:
            raise StoreError(E.INVALID_ARGUMENT, f"RetentionPeriodHours must be >= 1, got {retention_hours}")
        with self._lock:
            d = self._fs_path(segments)
            if (d / META_FILE).is_file():
                return False
            if d.exists() and not d.is_dir():
                raise StoreError(E.RESOURCE_EXISTS, f"{'/'.join(segments)} exists and is not a directory")
            if self._stream_dir_of(segments) is not None:
                raise StoreError(E.INVALID_ARGUMENT, "a stream cannot be created inside another stream")
            inner = self._streams_under(d)
            if inner:
                raise StoreError(
                    E.INVALID_ARGUMENT,
                    f"a stream cannot be created around another stream ({inner[0]} is inside "
                    f"{'/'.join(segments)}); choose another path",
                )
            self._ensure_dirs(segments[:-1])
            d.mkdir(exist_ok=True)
            write_atomically(
                d / META_FILE, new_meta(shard_count, retention_hours, self.clock()).dumps(), fsync=self.fsync
            )
            return True

    def _ensure_dirs(self, segments: list[str]) -> None:
        self._fs_path(segments)  # refuses symbolic links on the way
        p = self.root
        for seg in segments:
            p = p / seg
            if p.exists() and not p.is_dir():
                raise StoreError(
                    E.RESOURCE_EXISTS, f"{p.relative_to(self.root)} exists and is not a directory"
                )
        self._fs_path(segments).mkdir(parents=True, exist_ok=True)

    def open_stream(self, container: str, path: str) -> Stream:
        """The stream at ``container``/``path``; 404 ResourceNotFoundException when missing."""
        segments = validate_segments(container, path)
        key = tuple(segments)
        stream = self._streams.get(key)
        if stream is not None:
            return stream
        with self._lock:
            stream = self._streams.get(key)
            if stream is not None:
                return stream
            d = self._fs_path(segments)
            meta = read_meta(d) if len(segments) > 1 else None
            if meta is None:
                if d.exists():
                    raise StoreError(E.RESOURCE_IS_NOT_STREAM, f"{'/'.join(segments)} is not a stream")
                raise StoreError(E.RESOURCE_NOT_FOUND, f"stream {'/'.join(segments)} does not exist")
            stream = Stream(
                d,
                meta,
                fsync=self.fsync,
                segment_bytes=self.segment_bytes,
                clock=self.clock,
                open_shards=self.open_shards,
            )
            self._streams[key] = stream
            return stream

    def open_streams(self) -> list[tuple[str, Stream]]:
        """The streams opened since the store was (all of them, after ``serve`` starts), as
        ``("container/path", stream)``."""
        with self._lock:
            return [("/".join(key), stream) for key, stream in self._streams.items()]

    def describe_stream(self, container: str, path: str) -> StreamMeta:
        """The stream's metadata."""
        return self.open_stream(container, path).meta

    def update_stream(self, container: str, path: str, shard_count: int) -> None:
        """Grow the stream to ``shard_count`` shards."""
        self.open_stream(container, path).update(shard_count)

    def delete_stream(self, container: str, path: str) -> bool:
        """Delete a stream with all its shards and objects; False when it did not exist."""
        segments = validate_segments(container, path)
        with self._lock:
            d = self._fs_path(segments)
            if not (d / META_FILE).is_file():
                return False
            self._refuse_if_holds_streams(d, f"stream {'/'.join(segments)}")
            self._forget(segments)
            shutil.rmtree(d)
            return True

    def _forget(self, segments: list[str]) -> None:
        n = len(segments)
        for key in [k for k in self._streams if list(k[:n]) == segments]:
            self._streams.pop(key).close()

    def apply_retention(self) -> int:
        """Delete expired segments of every open stream; return how many were deleted."""
        with self._lock:
            streams = list(self._streams.values())
        return sum(s.apply_retention() for s in streams)

    def iter_stream_dirs(self) -> Iterator[tuple[str, str]]:
        """(container, path) of every stream on disk."""
        for dirpath, dirnames, filenames in os.walk(self.root):
            if META_FILE in filenames:
                rel = Path(dirpath).relative_to(self.root).parts
                dirnames.clear()
                if len(rel) >= 2:
                    yield rel[0], "/".join(rel[1:])
            dirnames[:] = [d for d in dirnames if not d.startswith(RESERVED_PREFIX)]

    def close(self) -> None:
        """Close every open stream and release the directory lock."""
        with self._lock:
            for s in self._streams.values():
                s.close()
            self._streams.clear()
            if self._lock_fd >= 0:
                os.close(self._lock_fd)
                self._lock_fd = -1

    # -- objects -------------------------------------------------------------------------------

    def object_path(self, container: str, path: str, *, for_write: bool = False) -> Path:
        """The file of an object (checked); for writes, refuses names that are a stream's shards."""
        segments = validate_segments(container, path)
        if len(segments) < 2:
            raise StoreError(E.INVALID_ARGUMENT, "an object path inside the container is required")
        if for_write:
            parent = self._fs_path(segments[:-1])
            if (parent / META_FILE).is_file() and is_shard_name(segments[-1]):
                raise StoreError(E.INVALID_ARGUMENT, f"{'/'.join(segments)} is a shard of a stream")
        return self._fs_path(segments)

    def prepare_object_write(self, container: str, path: str) -> Path:
        """Check and create the parent directories of an object to be written; return its file path."""
        p = self.object_path(container, path, for_write=True)
        segments = validate_segments(container, path)
        self._ensure_dirs(segments[:-1])
        if p.is_dir():
            raise StoreError(E.RESOURCE_EXISTS, f"{'/'.join(segments)} is a directory")
        return p

    def make_directory(self, container: str, path: str) -> None:
        """Create a directory (and its parents)."""
        segments = validate_segments(container, path)
        self._ensure_dirs(segments)

    def delete(self, container: str, path: str) -> bool:
        """Delete an object, an empty directory, or a stream directory; False when nothing was there.

        Deleting a shard key (``<stream>/<id>``) is accepted and does nothing: the shard goes with
        the stream directory, which is how the v3io client deletes a stream.
        """
        segments = validate_segments(container, path)
        if len(segments) < 2:
            raise StoreError(E.INVALID_ARGUMENT, "cannot delete a container")
        with self._lock:
            p = self._fs_path(segments)
            parent = p.parent
            if not p.exists() and (parent / META_FILE).is_file() and is_shard_name(segments[-1]):
                meta = read_meta(parent)
                return meta is not None and int(segments[-1]) < meta.shard_count
            if p.is_dir():
                if (p / META_FILE).is_file():
                    self._refuse_if_holds_streams(p, f"stream {'/'.join(segments)}")
                    self._forget(segments)
                    shutil.rmtree(p)
                    return True
                if any(True for _ in os.scandir(p)):
                    raise StoreError(E.DIRECTORY_NOT_EMPTY, f"directory {'/'.join(segments)} is not empty")
                p.rmdir()
                return True
            try:
                p.unlink()
            except FileNotFoundError:
                return False
            return True

    def list(
        self, container: str, prefix: str, *, dirs_only: bool = False, max_keys: int = 1000, marker: str = ""
    ) -> Listing:
        """List what is directly under ``prefix`` (a directory, a file, or a name prefix in a directory).

        Raise 404 "No such file or directory" when nothing matches.
        """
        segments = (
            validate_segments(container, prefix) if prefix.strip("/") else validate_segments(container, "")
        )
        base = self._fs_path(segments)
        rel = "/".join(segments[1:])
        entries: list[ListEntry] = []
        if len(segments) == 1 or base.is_dir():
            directory, name_prefix, key_base = base, "", (rel + "/" if rel else "")
        elif base.is_file():
            st = base.stat()  # base is no link: _fs_path refuses them
            entries.append(ListEntry(rel, st.st_size, st.st_mtime, False))
            directory = None
            name_prefix = key_base = ""
        else:
            parent = base.parent
            directory, name_prefix = parent, segments[-1]
            key_base = "/".join(segments[1:-1])
            key_base = key_base + "/" if key_base else ""
            if not parent.is_dir():
                raise StoreError(E.NO_SUCH_FILE, f"No such file or directory: {container}/{rel}")
        if directory is not None and directory.is_dir():
            meta = read_meta(directory) if directory != self.root / container else None
            for entry in os.scandir(directory):
                name = entry.name
                if not name.startswith(name_prefix) or segment_problem(name) is not None:
                    continue  # reserved, or a name no client could have given (not valid in XML)
                if meta is not None and is_shard_name(name) and int(name) < meta.shard_count:
                    continue
                try:
                    if entry.is_symlink():
                        continue  # never show (or size) what a link points at
                    st = entry.stat(follow_symlinks=False)
                except OSError:
                    continue
                if stat.S_ISDIR(st.st_mode):
                    entries.append(ListEntry(key_base + name + "/", 0, st.st_mtime, True))
                else:
                    entries.append(ListEntry(key_base + name, st.st_size, st.st_mtime, False))
            if meta is not None and not name_prefix:
                shards_dir = directory / SHARDS_DIR
                for sid in range(meta.shard_count):
                    size = 0
                    sdir = shards_dir / str(sid)
                    if sdir.is_dir():
                        size = sum(
                            e.stat(follow_symlinks=False).st_size
                            for e in os.scandir(sdir)
                            if e.is_file(follow_symlinks=False)
                        )
                    entries.append(ListEntry(key_base + str(sid), size, meta.created_ns / 1e9, False))
            if not entries and name_prefix:
                raise StoreError(E.NO_SUCH_FILE, f"No such file or directory: {container}/{rel}")
        elif directory is not None and len(segments) > 1:
            raise StoreError(E.NO_SUCH_FILE, f"No such file or directory: {container}/{rel}")
        if dirs_only:
            entries = [e for e in entries if e.is_dir]
        entries.sort(key=lambda e: e.key)
        if marker:
            entries = [e for e in entries if e.key > marker]
        max_keys = max(1, min(max_keys, 10000))
        truncated = len(entries) > max_keys
        entries = entries[:max_keys]
        return Listing(entries, truncated, entries[-1].key if truncated else "")
