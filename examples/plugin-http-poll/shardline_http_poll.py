"""shardline-http-poll: a source that polls a JSON endpoint and yields Arrow batches.

The whole plugin: a :class:`shardline.Source` subclass with its options model, and one hook
implementation registering it as ``http-poll``. ``pyproject.toml`` names this module in the
``shardline`` entry-point group, and ``shardline plugins`` lists it once installed.

Every poll is one ``GET url`` (plus ``?<cursor_param>=<cursor>`` once a cursor is known). The body
is a JSON list of objects, or an object holding that list under ``records_key``. Each non-empty
answer becomes one Arrow batch. With ``cursor_field``, the largest value of that field in a batch
is the batch's ack token and the checkpoint is the last acknowledged cursor, so a restarted run
asks only for what came after the records already delivered.
"""

from __future__ import annotations

import json
import threading
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from typing import Any

import pyarrow as pa
import shardline
from pydantic import Field


class HttpPollOptions(shardline.SourceOptions):
    """Options of ``[source] type = "http-poll"``."""

    url: str = Field(min_length=1, description="the JSON endpoint to poll")
    records_key: str | None = Field(None, description="key of the list in an object body")
    cursor_field: str | None = Field(None, description="an increasing field of each record (e.g. id)")
    cursor_param: str = Field("since", min_length=1, description="query parameter carrying the cursor")
    interval_s: float = Field(5.0, gt=0, description="seconds between polls")
    max_polls: int | None = Field(None, ge=1, description="stop after this many polls (default: never)")
    stop_when_empty: bool = Field(False, description="stop at the first poll that returns no record")
    timeout_s: float = Field(30.0, gt=0, description="HTTP timeout of one poll")
    headers: dict[str, str] = Field(default_factory=dict, description="extra request headers (e.g. auth)")


class HttpPollCheckpoint(shardline.SourceCheckpoint):
    """What :meth:`HttpPollSource.checkpoint` returns (a loaded checkpoint is checked against it)."""

    cursor: int | float | str | None = Field(description="the last acknowledged cursor (None: none yet)")


class HttpPollSource(shardline.Source):
    """Polls ``url`` and yields each answer's records as one Arrow batch."""

    Options = HttpPollOptions
    Checkpoint = HttpPollCheckpoint
    options: HttpPollOptions

    def __init__(self, options: HttpPollOptions, checkpoint: dict[str, Any] | None = None) -> None:
        super().__init__(options, checkpoint)
        self._acked_cursor: Any = (checkpoint or {}).get("cursor")
        self._wake = threading.Event()

    def batches(self) -> Iterator[tuple[pa.RecordBatch, Any]]:
        """Poll until stopped, ``max_polls`` is reached, or (``stop_when_empty``) nothing comes."""
        cursor = self._acked_cursor
        polls = 0
        while not self.stopping:
            records = self._poll(cursor)
            polls += 1
            if records:
                if self.options.cursor_field:
                    cursor = max(r[self.options.cursor_field] for r in records)
                yield pa.RecordBatch.from_pylist(records), cursor
            elif self.options.stop_when_empty:
                return
            if self.options.max_polls is not None and polls >= self.options.max_polls:
                return
            if not records:
                self._wake.wait(self.options.interval_s)

    def ack(self, token: Any) -> None:
        """Remember the cursor of the acknowledged batch."""
        self._acked_cursor = token

    def checkpoint(self) -> dict[str, Any]:
        """The last acknowledged cursor."""
        return {"cursor": self._acked_cursor}

    def stop(self) -> None:
        """Stop, also interrupting the wait between polls."""
        super().stop()
        self._wake.set()

    def _poll(self, cursor: Any) -> list[dict[str, Any]]:
        url = self.options.url
        if cursor is not None and self.options.cursor_field:
            query = urllib.parse.urlencode({self.options.cursor_param: cursor})
            url += ("&" if "?" in url else "?") + query
        request = urllib.request.Request(url, headers={"Accept": "application/json", **self.options.headers})
        try:
            with urllib.request.urlopen(request, timeout=self.options.timeout_s) as response:
                body = json.loads(response.read())
        except (OSError, ValueError) as exc:
            raise shardline.ShardlineError(f"http-poll: GET {url} failed: {exc}") from exc
        if self.options.records_key is not None:
            body = body.get(self.options.records_key) if isinstance(body, dict) else None
        if not isinstance(body, list):
            raise shardline.ShardlineError(
                f"http-poll: {url} did not answer a JSON list of records"
                + (f" under {self.options.records_key!r}" if self.options.records_key else "")
            )
        return [r for r in body if isinstance(r, dict)]


@shardline.hookimpl
def shardline_register_sources(register: Callable[[str, type[Any]], None]) -> None:
    """Register :class:`HttpPollSource` as ``http-poll``."""
    register("http-poll", HttpPollSource)
