"""Durable checkpoints: a small JSON file per pipeline, replaced atomically.

A checkpoint holds the source's own state (:meth:`shardline.Source.checkpoint`, which covers only
acknowledged batches) and the fingerprint of the pipeline that wrote it. Writing goes to a temporary
file in the same directory, which is fsynced and then renamed over the old one (and the directory
is fsynced), so a crash at any moment leaves either the old or the new checkpoint, never a torn one.
Loading a checkpoint written by another pipeline (other source options or another stream) raises
:class:`shardline.CheckpointError` instead of silently skipping data.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
import time
from pathlib import Path
from typing import Any

from shardline.errors import CheckpointError
from shardline.redact import redact_url

FORMAT_VERSION = 1


class CheckpointStore:
    """Reads and atomically writes the checkpoint file of one pipeline.

    ``fingerprint`` identifies the pipeline (see :meth:`shardline.config.PipelineConfig.fingerprint`);
    :meth:`load` refuses a file with another one.
    """

    def __init__(self, path: str | os.PathLike[str], fingerprint: str) -> None:
        self.path = Path(path)
        self.fingerprint = fingerprint
        self.writes = 0

    def load(self) -> dict[str, Any] | None:
        """Return the saved source state, or None when there is no checkpoint yet."""
        try:
            raw = self.path.read_bytes()
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise CheckpointError(f"checkpoint {self.path}: cannot read: {exc.strerror or exc}") from None
        try:
            doc = json.loads(raw)
        except ValueError:
            raise CheckpointError(
                f"checkpoint {self.path} is not valid JSON; delete it to start over "
                "(the run will begin again from the start of the source)"
            ) from None
        if not isinstance(doc, dict) or not isinstance(doc.get("source"), dict):
            raise CheckpointError(
                f"checkpoint {self.path} is not a shardline checkpoint; delete it or move it away"
            )
        if doc.get("version") != FORMAT_VERSION:
            raise CheckpointError(
                f"checkpoint {self.path} has format version {doc.get('version')!r}, "
                f"this shardline reads version {FORMAT_VERSION}"
            )
        if doc.get("fingerprint") != self.fingerprint:
            raise CheckpointError(
                f"checkpoint {self.path} belongs to another pipeline (its source options or stream differ "
                "from this config); delete it to start over, or set [checkpoint] path to another file"
            )
        state: dict[str, Any] = doc["source"]
        return state

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
