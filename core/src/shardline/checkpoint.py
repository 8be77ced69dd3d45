"""Durable checkpoints: a small JSON file per pipeline, replaced atomically.

A checkpoint holds the source's own state (:meth:`shardline.Source.checkpoint`, which covers only
acknowledged batches) and the fingerprint of the pipeline that wrote it. Writing goes to a temporary
file in the same directory, which is fsynced and then renamed over the old one (and the directory
is fsynced), so a crash at any moment leaves either the old or the new checkpoint, never a torn one.
Loading a checkpoint written by another pipeline (other source options or another stream) raises
:class:`shardline.CheckpointError` instead of silently skipping data, and so does a source state
that its source's checkpoint model refuses (:meth:`shardline.Source.validate_checkpoint`).

One run at a time: :class:`CheckpointLock` holds an OS lock (``flock``) on ``<checkpoint>.lock``
for the whole run, so a second run of the same pipeline refuses at once
(:class:`CheckpointLockedError`, naming the pid, host and start time of the run holding it) instead
of sending everything a second time. The kernel drops the lock when the holder exits, however it
exits (even ``kill -9``), so a lock never outlives its run and never needs deleting by hand.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import socket
import stat
import tempfile
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import ValidationError

from shardline.errors import CheckpointError
from shardline.redact import redact_url

if TYPE_CHECKING:
    from shardline.source import Source

try:
    import fcntl
except ImportError:  # pragma: no cover - not POSIX: runs are not locked
    fcntl = None  # type: ignore[assignment]

FORMAT_VERSION = 1
MAX_CHECKPOINT_BYTES = 16 * 2**20
"""A checkpoint is a small state; a bigger file is refused rather than read into memory."""


class CheckpointLockedError(CheckpointError):
    """Another run of the pipeline holds the checkpoint's lock."""


class CheckpointLock:
    """An exclusive OS lock on ``<checkpoint path>.lock``, held while one run uses the checkpoint.

    :meth:`acquire` takes it without waiting and writes who holds it (pid, host, start time, as
    JSON) into the lock file; it raises :class:`CheckpointLockedError` naming that holder when
    another process (or another open of it in this process) has it. :meth:`release` (or leaving the
    ``with`` block) gives it up; the kernel gives it up when the process dies, however it dies.
    The lock file is left in place: deleting it could let two runs lock two different files.
    """

    def __init__(self, checkpoint_path: str | os.PathLike[str]) -> None:
        self.checkpoint = Path(checkpoint_path)
        real = Path(os.path.realpath(checkpoint_path))  # one lock per file, whatever name reaches it
        self.path = real.with_name(real.name + ".lock")
        self._fd: int | None = None

    @property
    def held(self) -> bool:
        """True between a successful :meth:`acquire` and :meth:`release`."""
        return self._fd is not None

    def acquire(self, wait_s: float = 0.0) -> None:
        """Take the lock or raise :class:`CheckpointLockedError` (or CheckpointError: cannot open).

        ``wait_s``: how long to keep trying while another process holds it (polled every 0.1 s;
        e.g. a retried Dask task whose earlier attempt, on a lost worker, is still ending).
        """
        deadline = time.monotonic() + wait_s
        while True:
            try:
                self._acquire_now()
                return
            except CheckpointLockedError:
                if time.monotonic() >= deadline:
                    raise
            time.sleep(0.1)  # polling a lock another process holds: there is nothing to wait on

    def _acquire_now(self) -> None:
        if self._fd is not None or fcntl is None:
            return
        flags = os.O_RDWR | os.O_CREAT | getattr(os, "O_CLOEXEC", 0) | getattr(os, "O_NOFOLLOW", 0)
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.path, flags, 0o644)  # never through a symlink: we truncate the file
        except OSError as exc:
            why = "it is a symlink, which is never followed" if exc.errno == errno.ELOOP else exc.strerror
            raise CheckpointError(f"checkpoint lock {self.path}: cannot open: {why or exc}") from None
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            os.close(fd)
            raise CheckpointError(f"checkpoint lock {self.path} is not a regular file; move it away")
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            if exc.errno not in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                os.close(fd)
                reason = exc.strerror or str(exc)
                raise CheckpointError(f"checkpoint lock {self.path}: cannot lock: {reason}") from None
            holder = _describe_holder(fd)
            os.close(fd)
            raise CheckpointLockedError(
                f"checkpoint {self.checkpoint} is in use by another run of this pipeline ({holder}); "
                "wait for it to end or stop it (a run that died holds no lock)"
            ) from None
        since = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        holder_doc = {"pid": os.getpid(), "host": socket.gethostname(), "since": since}
        with contextlib.suppress(OSError):  # who holds it is information only; the flock is the lock
            os.ftruncate(fd, 0)
            os.pwrite(fd, json.dumps(holder_doc).encode(), 0)
        self._fd = fd

    def release(self) -> None:
        """Give the lock up (nothing when not held)."""
        fd, self._fd = self._fd, None
        if fd is None:
            return
        with contextlib.suppress(OSError):
            os.ftruncate(fd, 0)  # while still locked: nobody reads a stale holder afterwards
        os.close(fd)  # closing the descriptor releases the flock

    def __enter__(self) -> CheckpointLock:
        self.acquire()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


def _describe_holder(fd: int) -> str:
    """``pid 123 on host h since 2026-01-01T00:00:00Z`` from a lock file, or what is known of it."""
    try:
        doc = json.loads(os.pread(fd, 4096, 0) or b"{}")
    except (OSError, ValueError):
        doc = {}
    if not isinstance(doc, dict) or "pid" not in doc:
        return "a process that is just starting"

    def shown(key: str) -> str:  # the file is anyone's to write: keep the message one short line
        text = str(doc.get(key, "?"))
        return text[:80] if text.isprintable() else repr(text)[:80]

    return f"pid {shown('pid')} on host {shown('host')} since {shown('since')}"


class CheckpointStore:
    """Reads and atomically writes the checkpoint file of one pipeline.

    ``fingerprint`` identifies the pipeline (see :meth:`shardline.config.PipelineConfig.fingerprint`);
    :meth:`load` refuses a file with another one.
    """

    def __init__(self, path: str | os.PathLike[str], fingerprint: str) -> None:
        self.path = Path(path)
        self.fingerprint = fingerprint
        self.writes = 0

    def load(self, source_cls: type[Source] | None = None) -> dict[str, Any] | None:
        """Return the saved source state, or None when there is no checkpoint yet.

        With ``source_cls``, the state is checked by ``source_cls.validate_checkpoint`` (its
        ``Checkpoint`` model) and what that returns is returned. Raises :class:`CheckpointError`
        (one line naming the file, and the field when the state is refused).
        """
        try:
            with self.path.open("rb") as f:
                raw = f.read(MAX_CHECKPOINT_BYTES + 1)
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise CheckpointError(f"checkpoint {self.path}: cannot read: {exc.strerror or exc}") from None
        if len(raw) > MAX_CHECKPOINT_BYTES:
            raise CheckpointError(
                f"checkpoint {self.path} is larger than {MAX_CHECKPOINT_BYTES // 2**20} MiB, "
                "which no shardline checkpoint is; delete it or move it away"
            )
        try:
            doc = json.loads(raw)
        except (ValueError, RecursionError):
            raise CheckpointError(
                f"checkpoint {self.path} is not valid JSON; delete it to start over "
                "(the run will begin again from the start of the source)"
            ) from None
        if not isinstance(doc, dict) or not isinstance(doc.get("source"), dict):
            raise CheckpointError(
                f"checkpoint {self.path} is not a shardline checkpoint; delete it or move it away"
            )
        version = doc.get("version")
        if type(version) is not int or version != FORMAT_VERSION:
            raise CheckpointError(
                f"checkpoint {self.path} has format version {version!r}, "
                f"this shardline reads version {FORMAT_VERSION}"
            )
        if doc.get("fingerprint") != self.fingerprint:
            raise CheckpointError(
                f"checkpoint {self.path} belongs to another pipeline (its source options or stream differ "
                "from this config); delete it to start over, or set [checkpoint] path to another file"
            )
        state: dict[str, Any] = doc["source"]
        if source_cls is not None:
            state = self._validate(source_cls, state)
        return state

    def _validate(self, source_cls: type[Source], state: dict[str, Any]) -> dict[str, Any]:
        redo = (
            "; it was edited or damaged: restore it, or delete it to start over "
            "(the run then begins again at the start of the source)"
        )
        try:
            checked = source_cls.validate_checkpoint(state)
        except ValidationError as exc:
            raise CheckpointError(f"checkpoint {self.path}: {describe_state_errors(exc)}{redo}") from None
        except (ValueError, TypeError, CheckpointError) as exc:
            raise CheckpointError(f"checkpoint {self.path}: source: {exc}{redo}") from None
        if not isinstance(checked, dict):
            raise CheckpointError(
                f"checkpoint {self.path}: {source_cls.__name__}.validate_checkpoint returned "
                f"{type(checked).__name__}, not a dict (a bug in the source plugin)"
            )
        return checked

    def save(self, state: dict[str, Any], **facts: Any) -> None:
        """Atomically replace the checkpoint with ``state`` (plus informational ``facts``).

        String facts (e.g. ``stream``) are written through :func:`shardline.redact_url`: a checkpoint
        never holds a key given in a URL.
        """
        doc = {
            "version": FORMAT_VERSION,
            "fingerprint": self.fingerprint,
            "updated_at": time.time(),
            **{k: redact_url(v) if isinstance(v, str) else v for k, v in facts.items()},
            "source": state,
        }
        try:
            blob = json.dumps(doc, sort_keys=True).encode()
        except (TypeError, ValueError) as exc:
            raise CheckpointError(f"source state is not JSON-serialisable: {exc}") from None
        directory = self.path.parent
        directory.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{self.path.name}.", suffix=".tmp", dir=directory)
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(blob)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, self.path)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise
        _fsync_dir(directory)
        self.writes += 1

    def delete(self) -> None:
        """Remove the checkpoint (a finished run that should start over next time)."""
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()


class CoalescingCheckpointer:
    """Writes a checkpoint soon after every acknowledgement, one write at a time.

    :meth:`notify` (from the thread that acks, cheap) marks the state changed; a writer thread
    calls ``save()`` once per change, but never two at once: acks that arrive while a write is
    going (fsync included) merge into the next one. So a run killed at any moment re-sends at most
    what was in flight plus the acks of one write, and the cost is one write per write-time, not
    one per batch. ``min_interval_s`` spaces writes further (0: none). An error raised by
    ``save()`` stops the writer and is kept in :attr:`error` for the run to raise.
    """

    def __init__(self, save: Callable[[], None], min_interval_s: float = 0.0) -> None:
        self._save = save
        self._interval = min_interval_s
        self._changed = threading.Event()
        self._closing = False
        self._closed = threading.Event()
        self.error: BaseException | None = None
        self._thread = threading.Thread(target=self._loop, name="shardline-checkpoint", daemon=True)

    def start(self) -> None:
        """Start the writer thread."""
        self._thread.start()

    def notify(self) -> None:
        """The source acknowledged more: write a checkpoint soon."""
        self._changed.set()

    def close(self) -> None:
        """Stop the writer after its current write (the caller then writes the final checkpoint)."""
        self._closing = True
        self._closed.set()
        self._changed.set()
        if self._thread.is_alive():
            self._thread.join()

    def _loop(self) -> None:
        while not self._closing:
            self._changed.wait()
            if self._closing:
                return
            self._changed.clear()
            started = time.monotonic()
            try:
                self._save()
            except BaseException as exc:
                self.error = exc
                return
            rest = self._interval - (time.monotonic() - started)
            if rest > 0:
                self._closed.wait(rest)  # the configured spacing between writes; close() cuts it short


def describe_state_errors(exc: ValidationError) -> str:
    """One line for a checkpoint model's errors: ``source.row_group: expected ... >= 0, got -5; ...``."""
    return "; ".join(_describe_error(err) for err in exc.errors(include_url=False))


def _describe_error(err: Any) -> str:
    """``source.row_group: expected a number >= 0, got -5`` from one pydantic error."""
    loc = ".".join(str(p) for p in ("source", *err["loc"]))
    if err["type"] == "missing":
        return f"{loc}: missing"
    if err["type"] == "extra_forbidden":
        return f"{loc}: unknown key"
    message = str(err["msg"]).removeprefix("Value error, ")
    message = message[0].lower() + message[1:] if message else message
    message = message.replace("input should be", "expected")
    value = err.get("input")
    shown = json.dumps(value) if isinstance(value, str | int | float | bool) or value is None else "a table"
    if isinstance(value, list):
        shown = "a list"
    if len(shown) > 80:
        shown = shown[:60] + "... (" + f"{len(shown):,} characters)"
    return f"{loc}: {message}, got {shown}"


def _fsync_dir(directory: Path) -> None:
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
