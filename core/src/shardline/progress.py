"""The progress display of ``shardline run``: a rich bar on a terminal, nothing otherwise.

Shows rows acknowledged (of the total when the source knows it, e.g. from Parquet metadata),
bytes written, rows/s and the time left, and the consumer lag (total and worst partition) of a
source that reports one (Kafka's ``progress()["lag"]`` and ``["lag_by_partition"]``).
:func:`make_display` picks the bar only when stdout is a
terminal (or when asked explicitly), so logs and CI output stay clean.
"""

from __future__ import annotations

import sys
from collections.abc import Mapping
from typing import Any, Protocol

from rich.console import Console
from rich.progress import (
    BarColumn,
    Progress,
    ProgressColumn,
    Task,
    TextColumn,
    TimeRemainingColumn,
)
from rich.table import Column
from rich.text import Text


def human_bytes(n: float) -> str:
    """``1536`` -> ``"1.5 KiB"``."""
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TiB"


class Display(Protocol):
    """What the pipeline runner updates while it runs."""

    def update(
        self, rows: int, nbytes: int, facts: Mapping[str, Any] | None = None, filtered: int = 0
    ) -> None:
        """Rows acknowledged so far (this run plus earlier ones), bytes written by this run, the
        source's current :meth:`~shardline.Source.progress` facts (for its lag), and rows of them that
        ``[[transform]]`` steps dropped (acknowledged, not sent)."""

    def close(self) -> None:
        """Remove or finish the display."""


class NullDisplay:
    """No display (stdout is not a terminal, or ``--no-progress``)."""

    def update(
        self, rows: int, nbytes: int, facts: Mapping[str, Any] | None = None, filtered: int = 0
    ) -> None:
        """Do nothing."""

    def close(self) -> None:
        """Do nothing."""


class _RowsColumn(ProgressColumn):
    def render(self, task: Task) -> Text:
        total = f"/{int(task.total):,}" if task.total is not None else ""
        filtered = int(task.fields.get("filtered", 0))
        dropped = f" ({filtered:,} filtered)" if filtered else ""
        return Text(f"{int(task.completed):,}{total} rows{dropped}", style="progress.download")


class _BytesColumn(ProgressColumn):
    def render(self, task: Task) -> Text:
        return Text(human_bytes(task.fields.get("nbytes", 0)), style="progress.filesize")


class _RateColumn(ProgressColumn):
    def render(self, task: Task) -> Text:
        speed = task.finished_speed or task.speed
        return Text(f"{speed:,.0f} rows/s" if speed else "- rows/s", style="progress.data.speed")


class _LagColumn(ProgressColumn):
    def render(self, task: Task) -> Text:
        lag = task.fields.get("lag")
        return Text(lag or "", style="progress.remaining")


def lag_text(facts: Mapping[str, Any] | None) -> str:
    """``"lag 1,200 (worst orders:3 900)"`` from a source's progress facts; ``""`` without a lag."""
    if not facts or not isinstance(facts.get("lag"), int):
        return ""
    text = f"lag {facts['lag']:,}"
    by_partition = facts.get("lag_by_partition")
    if isinstance(by_partition, Mapping) and by_partition:
        worst = max(by_partition, key=lambda p: by_partition[p])
        if by_partition[worst]:
            text += f" (worst {worst} {by_partition[worst]:,})"
    return text


def summary_extras(latency: Mapping[str, float], retries_by_error: Mapping[str, int]) -> str:
    """``"; latency p50 4 ms, p99 31 ms; retries: TransportError 120"`` for the summary line."""
    out = ""
    if latency:
        out += "; latency " + ", ".join(f"{q} {seconds * 1000:,.0f} ms" for q, seconds in latency.items())
    if retries_by_error:
        ranked = sorted(retries_by_error.items(), key=lambda kv: -kv[1])
        out += "; retries: " + ", ".join(f"{name} {n:,}" for name, n in ranked)
    return out


class RichDisplay:
    """A rich progress bar: rows (of total), bytes, rows/s and ETA, and the source's lag when it has one."""

    def __init__(
        self,
        description: str,
        total_rows: int | None,
        done_rows: int = 0,
        console: Console | None = None,
    ) -> None:
        self._progress = Progress(
            TextColumn("[bold]{task.description}"),
            BarColumn(bar_width=20),
            _RowsColumn(table_column=Column(no_wrap=True)),
            _BytesColumn(table_column=Column(no_wrap=True)),
            _RateColumn(table_column=Column(no_wrap=True)),
            TextColumn("ETA"),
            TimeRemainingColumn(),
            _LagColumn(table_column=Column(no_wrap=True)),
            console=console,
            transient=False,
            refresh_per_second=4,
        )
        self._task = self._progress.add_task(
            description, total=total_rows, completed=done_rows, nbytes=0, lag=""
        )
        self._progress.start()

    def update(
        self, rows: int, nbytes: int, facts: Mapping[str, Any] | None = None, filtered: int = 0
    ) -> None:
        """Move the bar; show the lag in ``facts`` (a source's progress) when there is one."""
        self._progress.update(
            self._task, completed=rows, nbytes=nbytes, lag=lag_text(facts), filtered=filtered
        )

    def close(self) -> None:
        """Draw the last state and release the terminal."""
        self._progress.refresh()
        self._progress.stop()


# Rich lays text out for 80 columns when stdout is not a terminal (a pipe, a CI log): long lines
# would be wrapped mid-word; logs get this width instead, terminals their own.
NOT_A_TTY_WIDTH = 200


def make_console() -> Console:
    """A Rich console on stdout: the terminal's width on a terminal, :data:`NOT_A_TTY_WIDTH` otherwise."""
    return Console(width=None if sys.stdout.isatty() else NOT_A_TTY_WIDTH)


def make_display(
    enabled: bool | None, description: str, facts: dict[str, Any], console: Console | None = None
) -> Display:
    """A :class:`RichDisplay` when ``enabled`` (None: when stdout is a terminal), else a :class:`NullDisplay`.

    ``facts`` are the source's :meth:`~shardline.Source.progress` (``total_rows``, ``done_rows``).
    """
    if enabled is None:
        enabled = sys.stdout.isatty()
    if not enabled:
        return NullDisplay()
    total = facts.get("total_rows")
    return RichDisplay(
        description,
        int(total) if total is not None else None,
        int(facts.get("done_rows", 0)),
        console=console or make_console(),
    )
