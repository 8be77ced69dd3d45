"""Pytest fixtures for Kinesis (a pytest plugin, loaded automatically with shardline-kinesis).

``shardline_kinesalite``            kinesalite on 127.0.0.1, one process for the session; per test
                                    the dummy AWS environment is set (restored after). Yields a
                                    :class:`~shardline_kinesis.emulators.RunningEmulator`
                                    (``.endpoint_url``, ``.client()``, ``.stream_url(name)``,
                                    ``.unique_name()``). Fast; SplitShard and MergeShards; no
                                    UpdateShardCount.
``shardline_kinesis_local``         kinesis-local (kinesis-mock) the same way; UpdateShardCount
                                    works; slows down as a stream grows: keep its streams small.
``shardline_kinesis_env``           only the dummy AWS environment (credentials, region,
                                    ``AWS_EC2_METADATA_DISABLED=true``; profile and endpoint
                                    variables unset).
``shardline_kinesis_fault_proxy``   a factory: ``make(upstream_url, rate=0.3, shape="random",
                                    seed=1)`` -> :class:`~shardline_kinesis.faultproxy.FaultProxy`,
                                    closed after the test.
``shardline_kinesis_null_endpoint`` a :class:`~shardline_kinesis._aiothread.ThreadedServer` of
                                    :mod:`shardline_kinesis.nullendpoint` in this process (use
                                    ``python -m shardline_kinesis.nullendpoint`` to measure CPU).

The emulators come from npm, pinned by ``emulators/package.json`` + ``package-lock.json``: the
first use runs ``npm ci`` into a cache folder (see :func:`~shardline_kinesis.emulators.ensure_node_modules`).
A test using them is skipped, with the reason, only when node (or npm, before the first install)
is not on PATH; a failing ``npm ci`` or an emulator that does not start fails the test.

Helpers for streams (create and wait until ACTIVE, split every shard, read back parents before
children) are in :mod:`shardline_kinesis.streamtools`.

This module is loaded by every pytest run of a project that has shardline-kinesis installed, so it
imports nothing but pytest at start: botocore and aiohttp are imported inside the fixtures.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from shardline_kinesis._aiothread import ThreadedServer
    from shardline_kinesis.emulators import RunningEmulator
    from shardline_kinesis.faultproxy import FaultProxy


def _start(kind: str, tmp_path_factory: pytest.TempPathFactory) -> RunningEmulator:
    from shardline_kinesis.emulators import EmulatorUnavailable, start_kinesalite, start_kinesis_local

    start = start_kinesalite if kind == "kinesalite" else start_kinesis_local
    try:
        return start(tmp_path_factory.mktemp(kind))
    except EmulatorUnavailable as exc:
        pytest.skip(str(exc))


@pytest.fixture
def shardline_kinesis_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """Dummy AWS credentials and region for this test; variables that name a profile or endpoint unset."""
    from shardline_kinesis.emulators import AWS_ENV_TO_CLEAR, DUMMY_AWS_ENV

    for name in AWS_ENV_TO_CLEAR:
        monkeypatch.delenv(name, raising=False)
    for name, value in DUMMY_AWS_ENV.items():
        monkeypatch.setenv(name, value)


@pytest.fixture(scope="session")
def shardline_kinesalite_session(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningEmulator]:
    """One kinesalite for the session (use unique stream names); no environment change."""
    emulator = _start("kinesalite", tmp_path_factory)
    try:
        yield emulator
    finally:
        emulator.stop()


@pytest.fixture(scope="session")
def shardline_kinesis_local_session(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningEmulator]:
    """One kinesis-local for the session (use unique stream names); no environment change."""
    emulator = _start("kinesis-local", tmp_path_factory)
    try:
        yield emulator
    finally:
        emulator.stop()


@pytest.fixture
def shardline_kinesalite(
    shardline_kinesalite_session: RunningEmulator, shardline_kinesis_env: None
) -> RunningEmulator:
    """The session's kinesalite, with the dummy AWS environment set for this test."""
    return shardline_kinesalite_session


@pytest.fixture
def shardline_kinesis_local(
    shardline_kinesis_local_session: RunningEmulator, shardline_kinesis_env: None
) -> RunningEmulator:
    """The session's kinesis-local, with the dummy AWS environment set for this test."""
    return shardline_kinesis_local_session


@pytest.fixture
def shardline_kinesis_fault_proxy() -> Iterator[Callable[..., FaultProxy]]:
    """``make(upstream_url, **faults)`` -> a started :class:`FaultProxy`; all are stopped after the test."""
    from shardline_kinesis.faultproxy import FaultProxy

    proxies: list[FaultProxy] = []

    def make(upstream: str, **faults: Any) -> FaultProxy:
        proxy = FaultProxy(upstream, **faults)
        proxies.append(proxy)
        return proxy

    try:
        yield make
    finally:
        for proxy in proxies:
            proxy.stop()


@pytest.fixture
def shardline_kinesis_null_endpoint() -> Iterator[ThreadedServer]:
    """The null Kinesis endpoint (every PutRecords succeeds) in a thread; ``.url``, ``.handler.records``."""
    from shardline_kinesis.nullendpoint import start_null_endpoint_thread

    server = start_null_endpoint_thread()
    try:
        yield server
    finally:
        server.stop()
