"""The options of :class:`~shardline.StreamSink` and :class:`~shardline.AsyncStreamSink`, declared once.

:class:`SinkOptions` holds every option with its default; both facades take it (``options=``) or
the same names as keywords (``StreamSink(url, partition_key="k", ordering="strict")``), typed by
:class:`SinkKwargs`. ``tests/core/test_sink_options.py`` checks that the two list the same names
and types, so they cannot drift. The values are validated once, by
:func:`shardline.config.check_sink_options` (the config's models and messages).
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TypedDict


@dataclass(frozen=True, kw_only=True)
class SinkOptions:
    """Every option of a stream sink (see :class:`shardline.AsyncStreamSink` for their meaning)."""

    partition_key: str | None = None
    data: str = "json"
    data_column: str | None = None
    data_template: str | None = None
    columns: Sequence[str] | None = None
    client_info: str | None = None
    shard_id: str | None = None
    partitioner: str = "hash"
    create: Mapping[str, int] | None = None
    dead_letter: str | os.PathLike[str] | None = None
    max_in_flight_bytes: int = 64 * 2**20
    max_in_flight_requests: int = 16
    linger_ms: float = 5.0
    retry_deadline_s: float | None = None
    ordering: str = "strict"
    shard_refresh_s: float = 30.0
    start_timeout_s: float = 5.0
    max_records_per_request: int | None = None
    max_request_bytes: int | None = None
    backoff_base_s: float = 0.05
    backoff_max_s: float = 5.0
    transport_options: Mapping[str, Any] | None = None
    origin_columns: Sequence[str] | None = None

    def with_changes(self, changes: Mapping[str, Any]) -> SinkOptions:
        """A copy with ``changes`` applied; :class:`TypeError` naming an unknown option."""
        unknown = sorted(set(changes) - {f.name for f in dataclasses.fields(self)})
        if unknown:
            raise TypeError(f"unknown sink option(s): {', '.join(unknown)}")
        return dataclasses.replace(self, **changes) if changes else self


class SinkKwargs(TypedDict, total=False):
    """The keyword form of :class:`SinkOptions` (``**options: Unpack[SinkKwargs]``)."""

    partition_key: str | None
    data: str
    data_column: str | None
    data_template: str | None
    columns: Sequence[str] | None
    client_info: str | None
    shard_id: str | None
    partitioner: str
    create: Mapping[str, int] | None
    dead_letter: str | os.PathLike[str] | None
    max_in_flight_bytes: int
    max_in_flight_requests: int
    linger_ms: float
    retry_deadline_s: float | None
    ordering: str
    shard_refresh_s: float
    start_timeout_s: float
    max_records_per_request: int | None
    max_request_bytes: int | None
    backoff_base_s: float
    backoff_max_s: float
    transport_options: Mapping[str, Any] | None
    origin_columns: Sequence[str] | None


def sink_options(options: SinkOptions | None, kwargs: Mapping[str, Any]) -> SinkOptions:
    """``options`` (default: all defaults) with the keyword options on top."""
    return (options or SinkOptions()).with_changes(kwargs)
