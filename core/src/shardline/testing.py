"""Test kit for plugin authors: fixtures, a source conformance check and a fake transport.

Install it with ``pip install 'shardline[testing]'`` (it needs pytest). The ``shardline``
distribution registers this module as a pytest plugin (``pytest11``), so it is loaded by *every*
pytest run of a project that has shardline installed. It therefore imports nothing but pytest at
start: pyarrow, numpy, pydantic and the server are imported inside the fixtures and helpers that
need them (a plugin that imported them here would slow every test run, and their import-time
warnings would break projects run with ``filterwarnings = error``). Every fixture name starts with
``shardline_`` so that none can silently satisfy an unrelated test's argument.

Fixtures:

``shardline_fake_transport``         an in-memory 4-shard :class:`FakeTransport` (fault injection).
``shardline_sink``                   a :class:`shardline.StreamSink` writing into it.

Each connector ships the fixtures of its own stream (the embedded server's ``shardline_stream_server``
comes with the v3io connector's test kit, ``shardline_kafka_broker`` with the Kafka plugin's).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from shardline.faketransport import FakeTransport, StoredRecord

__all__ = ["FakeTransport", "StoredRecord", "check_source"]


def __getattr__(name: str) -> Any:
    """``FakeTransport`` and ``StoredRecord`` are re-exported, imported on first use (they need numpy)."""
    if name in ("FakeTransport", "StoredRecord"):
        from shardline import faketransport

        return getattr(faketransport, name)
    raise AttributeError(f"module 'shardline.testing' has no attribute {name!r}")


# --- source conformance check, for source plugin authors ------------------------------------------


def check_source(
    source_cls: type[Any],
    options: Any,
    *,
    resume_after: tuple[int, ...] | None = None,
    in_flight: int = 2,
    max_batches: int = 100_000,
) -> dict[str, Any]:
    """Check that a source over *fixed* data honours the :class:`shardline.Source` contract.

    ``options`` is a dict (validated with ``source_cls.Options``) or an options object. The check
    reads everything once (acking every batch), then for each ``n`` in ``resume_after`` (default:
    after the first batch, half-way and before the last) reads ``n`` batches acking them, reads
    ``in_flight`` more *without* acking (as if a crash hit them in flight), takes the checkpoint,
    round-trips it through JSON and resumes a new instance from it. It asserts that:

    - ``batches()`` yields ``(pyarrow.RecordBatch, token)`` pairs;
    - ``checkpoint()`` is JSON-serialisable at any time, and its own ``validate_checkpoint`` (its
      ``Checkpoint`` model) accepts it, so a pipeline can load what it saved;
    - a resumed source yields exactly the rows after the acknowledged ones: no gap, no duplicate;
    - a checkpoint taken before any ack resumes from the start;
    - ``stop()`` makes ``batches()`` end within one more batch.

    Returns facts about the data (``batches``, ``rows``). Raises AssertionError naming the broken rule.
    """
    import json

    import pyarrow as pa

    opts = source_cls.Options.model_validate(options) if isinstance(options, dict) else options

    def read(source: Any, acks: int | None, extra: int = 0) -> list[pa.RecordBatch]:
        out: list[pa.RecordBatch] = []
        for i, item in enumerate(source.batches()):
            assert isinstance(item, tuple) and len(item) == 2, f"yield (batch, token), not {item!r}"
            batch, token = item
            kind = type(batch).__name__
            assert isinstance(batch, pa.RecordBatch), f"batches() yielded a {kind}, not a RecordBatch"
            if acks is None or i < acks:
                out.append(batch)
                source.ack(token)
                json.dumps(source.checkpoint())
            elif i >= acks + extra:
                break
            assert i < max_batches, f"more than {max_batches} batches: is the source endless?"
        return out

    def table(batches: list[pa.RecordBatch], schema: pa.Schema) -> pa.Table:
        return pa.Table.from_batches(batches, schema=schema)

    def loadable(state: dict[str, Any]) -> dict[str, Any]:
        try:
            checked: dict[str, Any] = source_cls.validate_checkpoint(state)
        except Exception as exc:
            refused = f"checkpoint() returned {state!r}, which its own model refuses: {exc}"
            raise AssertionError(refused) from exc
        return checked

    first = source_cls(opts, checkpoint=None)
    everything = read(first, None)
    final = loadable(json.loads(json.dumps(first.checkpoint())))
    first.close()
    assert everything, "the source yielded no batch: give check_source some data"
    schema = everything[0].schema
    full = table(everything, schema)

    done = source_cls(opts, checkpoint=final)
    leftover = sum(b.num_rows for b in read(done, None))
    assert leftover == 0, f"a source resumed from its final checkpoint yielded {leftover} rows again"
    done.close()

    nothing_acked = source_cls(opts, checkpoint=None)
    read(nothing_acked, 0, extra=1)
    restart = loadable(json.loads(json.dumps(nothing_acked.checkpoint())))
    nothing_acked.close()
    again = source_cls(opts, checkpoint=restart)
    restarted = table(read(again, None), schema)
    assert restarted.equals(full), "a checkpoint taken before any ack must resume from the start"
    again.close()

    points = resume_after or tuple(sorted({1, len(everything) // 2, max(len(everything) - 1, 1)}))
    for n in points:
        if n > len(everything):
            continue
        source = source_cls(opts, checkpoint=None)
        head = read(source, n, extra=in_flight)
        state = loadable(json.loads(json.dumps(source.checkpoint())))
        source.close()
        resumed = source_cls(opts, checkpoint=state)
        tail = read(resumed, None)
        resumed.close()
        got = table(head + tail, schema)
        assert got.num_rows == full.num_rows, (
            f"resuming after {n} acked batches gave {got.num_rows} rows in all, expected {full.num_rows} "
            f"({'a gap' if got.num_rows < full.num_rows else 'duplicates'})"
        )
        assert got.equals(full), f"resuming after {n} acked batches gave other rows than one full read"

    stopping = source_cls(opts, checkpoint=None)
    for count, (_batch, token) in enumerate(stopping.batches(), start=1):
        stopping.ack(token)
        if count == 1:
            stopping.stop()
        assert count <= 2, "batches() went on for more than one batch after stop()"
    stopping.close()
    return {"batches": len(everything), "rows": full.num_rows}


# --- the sink over an in-memory stream, for engine and plugin tests ------------------------------


@pytest.fixture
def shardline_fake_transport() -> FakeTransport:
    """An in-memory 4-shard stream with protocol-limit checks (set ``fault_rate`` etc. to inject faults)."""
    from shardline.faketransport import FakeTransport  # imported here: it needs numpy

    return FakeTransport(shard_count=4)


@pytest.fixture
def shardline_sink(shardline_fake_transport: FakeTransport) -> Iterator[Any]:
    """A :class:`shardline.StreamSink` writing JSON rows into ``shardline_fake_transport``, closed after.

    Read what landed with ``shardline_fake_transport.records()``; ``.violations`` lists anything
    sent that a real stream would refuse.
    """
    from shardline.sink import StreamSink  # imported here: it needs pyarrow and numpy

    with StreamSink(shardline_fake_transport, backoff_base_s=0.001, backoff_max_s=0.01, linger_ms=1.0) as s:
        yield s
