"""Fixtures of the Kinesis tests: the emulators and fault proxy of ``shardline_kinesis.testing``.

Short aliases of the ``shardline_``-prefixed fixtures the installed test kit offers (see
``tests/conftest.py`` for why the kit only offers prefixed names), and boto3 clients.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest


@pytest.fixture
def kinesalite(shardline_kinesalite: Any) -> Any:
    """Alias of ``shardline_kinesalite`` (session process, dummy AWS environment for the test)."""
    return shardline_kinesalite


@pytest.fixture
def kinesis_local(shardline_kinesis_local: Any) -> Any:
    """Alias of ``shardline_kinesis_local``."""
    return shardline_kinesis_local


@pytest.fixture
def fault_proxy(shardline_kinesis_fault_proxy: Callable[..., Any]) -> Callable[..., Any]:
    """Alias of ``shardline_kinesis_fault_proxy`` (a factory of started proxies)."""
    return shardline_kinesis_fault_proxy


def boto3_client(endpoint_url: str) -> Any:
    """A boto3 Kinesis client of an emulator (credentials and region from the dummy environment)."""
    import boto3
    from botocore.config import Config

    return boto3.client("kinesis", endpoint_url=endpoint_url, config=Config(retries={"max_attempts": 1}))
