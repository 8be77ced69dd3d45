"""Run the Kinesis emulators of the test kit: kinesalite and kinesis-local (kinesis-mock), from npm.

    with start_kinesalite() as emulator:
        client = emulator.client()          # a botocore Kinesis client with dummy credentials
        create_stream(client, "s", shards=2)
        url = emulator.stream_url("s")      # kinesis://s?region=us-east-1&endpoint_url=http://127.0.0.1:N

Both packages are pinned in ``emulators/package.json`` + ``package-lock.json`` beside this
distribution; :func:`ensure_node_modules` runs ``npm ci`` once into a cache directory keyed by the
lock file's hash (under a file lock, so parallel pytest processes do not race). Neither emulator
needs a JVM: kinesis-local is the Scala.js build of kinesis-mock, one ``main.js``.

- kinesalite (https://github.com/mhart/kinesalite): fast; CreateStream, SplitShard, MergeShards; no
  UpdateShardCount. Its CLI binds every interface, so ``emulators/kinesalite.js`` starts it with
  ``listen(0, "127.0.0.1")`` and prints the port.
- kinesis-local (https://github.com/etspaceman/kinesis-mock): UpdateShardCount works; slows down as
  a stream grows (keep its streams small). Configured by environment variables (its README, "Service
  Configuration"): ``KINESIS_MOCK_PLAIN_PORT``, ``KINESIS_MOCK_TLS_PORT``, ``KINESIS_MOCK_CERT_PATH``
  (the package's ``server.json``), ``*_DURATION`` (set to 0ms here). It calls ``listen(port)`` with
  no host and has no setting for one, so ``emulators/loopback.js`` is preloaded to bind 127.0.0.1.
  It ignores SIGTERM: :meth:`RunningEmulator.stop` sends SIGKILL.

The emulators accept any credentials and do not check signatures; clients still need credentials
and a region to sign with: :data:`DUMMY_AWS_ENV`.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import itertools
import json
import os
import queue
import shutil
import signal
import socket
import subprocess
import threading
import time
import uuid
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote

from shardline import ShardlineError

REGION = "us-east-1"

DUMMY_AWS_ENV: Mapping[str, str] = {
    "AWS_ACCESS_KEY_ID": "shardline-test",
    "AWS_SECRET_ACCESS_KEY": "shardline-test",
    "AWS_DEFAULT_REGION": REGION,
    "AWS_REGION": REGION,
    "AWS_EC2_METADATA_DISABLED": "true",
}
"""Environment for clients of an emulator: dummy credentials, a region, no instance metadata."""

AWS_ENV_TO_CLEAR = (
    "AWS_PROFILE",
    "AWS_SESSION_TOKEN",
    "AWS_SECURITY_TOKEN",
    "AWS_ENDPOINT_URL",
    "AWS_ENDPOINT_URL_KINESIS",
    "AWS_ROLE_ARN",
    "AWS_WEB_IDENTITY_TOKEN_FILE",
    "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI",
    "AWS_CONTAINER_CREDENTIALS_FULL_URI",
)
"""Variables that would point a client at a real account or endpoint; unset around emulator tests."""

NPM_TIMEOUT_S = 300.0
START_TIMEOUT_S = 60.0


class EmulatorUnavailable(ShardlineError):
    """node (or npm, when the emulators are not installed yet) is not on PATH."""


class EmulatorError(ShardlineError):
    """An emulator failed to install, start or answer in time (the message has its log's tail)."""


def emulators_dir() -> Path:
    """The folder holding ``package.json``, ``package-lock.json`` and the start scripts.

    ``$SHARDLINE_KINESIS_EMULATORS`` if set, else ``connectors/kinesis/emulators`` of the checkout
    this module runs from. Raises :class:`EmulatorError` when none has a ``package.json``.
    """
    candidates = (
        [Path(os.environ["SHARDLINE_KINESIS_EMULATORS"])]
        if os.environ.get("SHARDLINE_KINESIS_EMULATORS")
        else []
    )
    here = Path(__file__).resolve().parent
    candidates += [here / "emulators", here.parents[1] / "emulators"]
    for candidate in candidates:
        if (candidate / "package.json").is_file():
            return candidate
    raise EmulatorError(
        "the Kinesis emulators' package.json was not found (looked in "
        + ", ".join(str(c) for c in candidates)
        + "); set SHARDLINE_KINESIS_EMULATORS to the folder holding it"
    )


def _cache_root() -> Path:
    if os.environ.get("SHARDLINE_KINESIS_CACHE"):
        return Path(os.environ["SHARDLINE_KINESIS_CACHE"])
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "shardline-kinesis"


def _installed(modules: Path) -> bool:
    return all((modules / name / "package.json").is_file() for name in ("kinesalite", "kinesis-local"))


def ensure_node_modules(source: Path | None = None) -> Path:
    """The ``node_modules`` folder holding both emulators, running ``npm ci`` first if needed.

    Uses ``SOURCE/node_modules`` when both packages are there (someone ran ``npm ci`` by hand);
    else ``CACHE/emulators-<lock hash>/node_modules`` (``$SHARDLINE_KINESIS_CACHE`` or
    ``~/.cache/shardline-kinesis``), installed once under ``fcntl.flock`` with
    ``npm ci --no-audit --no-fund --ignore-scripts`` (no install script is needed: kinesalite keeps
    its streams in memory, so its optional leveldown is never loaded).

    Raises :class:`EmulatorUnavailable` if npm is needed and absent, :class:`EmulatorError` if
    ``npm ci`` fails or takes longer than :data:`NPM_TIMEOUT_S` seconds.
    """
    source = source or emulators_dir()
    if _installed(source / "node_modules"):
        return source / "node_modules"
    lock = (source / "package-lock.json").read_bytes()
    root = _cache_root()
    target = root / f"emulators-{hashlib.sha256(lock).hexdigest()[:16]}"
    if _installed(target / "node_modules"):
        return target / "node_modules"
    npm = shutil.which("npm")
    if npm is None:
        raise EmulatorUnavailable(
            "npm is not on PATH: the Kinesis emulator tests need node >= 18 and npm "
            "(e.g. `apt-get install nodejs npm`)"
        )
    root.mkdir(parents=True, exist_ok=True)
    with open(root / "install.lock", "w") as lock_file:
        fcntl.flock(lock_file, fcntl.LOCK_EX)  # another process may be installing the same lock
        try:
            if _installed(target / "node_modules"):
                return target / "node_modules"
            work = root / f"install-{os.getpid()}-{uuid.uuid4().hex[:8]}"
            work.mkdir()
            try:
                for name in ("package.json", "package-lock.json"):
                    shutil.copyfile(source / name, work / name)
                try:
                    done = subprocess.run(
                        [npm, "ci", "--no-audit", "--no-fund", "--ignore-scripts"],
                        cwd=work,
                        capture_output=True,
                        text=True,
                        timeout=NPM_TIMEOUT_S,
                        check=False,
                    )
                except subprocess.TimeoutExpired as exc:
                    raise EmulatorError(
                        f"npm ci of the Kinesis emulators took over {NPM_TIMEOUT_S:.0f} s"
                    ) from exc
                if done.returncode != 0:
                    raise EmulatorError(
                        f"npm ci of the Kinesis emulators failed (exit {done.returncode}) in {work}:\n"
                        + (done.stderr or done.stdout)[-2000:]
                    )
                shutil.rmtree(target, ignore_errors=True)
                work.rename(target)
            finally:
                shutil.rmtree(work, ignore_errors=True)
        finally:
            fcntl.flock(lock_file, fcntl.LOCK_UN)
    return target / "node_modules"


def _node() -> str:
    node = shutil.which("node")
    if node is None:
        raise EmulatorUnavailable(
            "node is not on PATH: the Kinesis emulator tests need node >= 18 and npm "
            "(e.g. `apt-get install nodejs npm`)"
        )
    return node


def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now (the OS picks it)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def make_client(endpoint_url: str, region: str = REGION, **config: Any) -> Any:
    """A botocore Kinesis client for ``endpoint_url`` with the dummy credentials (no retries)."""
    import botocore.config  # imported here: botocore takes ~0.3 s to import
    import botocore.session

    options: dict[str, Any] = {"retries": {"max_attempts": 1, "mode": "standard"}}
    options.update(config)
    return botocore.session.get_session().create_client(
        "kinesis",
        region_name=region,
        endpoint_url=endpoint_url,
        aws_access_key_id=DUMMY_AWS_ENV["AWS_ACCESS_KEY_ID"],
        aws_secret_access_key=DUMMY_AWS_ENV["AWS_SECRET_ACCESS_KEY"],
        config=botocore.config.Config(**options),
    )


@dataclass
class RunningEmulator:
    """An emulator process on 127.0.0.1 (``kind`` is ``"kinesalite"`` or ``"kinesis-local"``)."""

    kind: str
    endpoint_url: str
    process: subprocess.Popen[bytes]
    log_path: Path
    region: str = REGION
    _names: Iterator[int] = field(default_factory=itertools.count, repr=False)

    @property
    def port(self) -> int:
        """The plain-HTTP port."""
        return int(self.endpoint_url.rsplit(":", 1)[1])

    @property
    def pid(self) -> int:
        """The node process id."""
        return self.process.pid

    def client(self, **config: Any) -> Any:
        """A botocore Kinesis client of this emulator (see :func:`make_client`)."""
        return make_client(self.endpoint_url, self.region, **config)

    def stream_url(self, stream: str, endpoint_url: str | None = None) -> str:
        """The shardline sink URL of ``stream``: ``kinesis://STREAM?region=…&endpoint_url=…``.

        ``endpoint_url`` replaces the emulator's own (e.g. a :class:`FaultProxy` in front of it).
        """
        endpoint = quote(endpoint_url or self.endpoint_url, safe="")
        return f"kinesis://{stream}?region={self.region}&endpoint_url={endpoint}"

    def unique_name(self, prefix: str = "s") -> str:
        """A stream name no other caller of this emulator got (names are 1-128 of [a-zA-Z0-9_.-])."""
        return f"{prefix}-{os.getpid()}-{next(self._names)}"

    def log_tail(self, size: int = 2000) -> str:
        """The last ``size`` characters of the emulator's output."""
        try:
            return self.log_path.read_text(errors="replace")[-size:]
        except OSError:
            return ""

    def stop(self, timeout: float = 10.0) -> None:
        """Stop the process: SIGTERM for kinesalite, SIGKILL for kinesis-local (it ignores SIGTERM)."""
        if self.process.poll() is None:
            sig = signal.SIGKILL if self.kind == "kinesis-local" else signal.SIGTERM
            self.process.send_signal(sig)
            try:
                self.process.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=timeout)
        if self.process.stdin is not None:
            with contextlib.suppress(OSError):
                self.process.stdin.close()

    def __enter__(self) -> RunningEmulator:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _spawn(
    argv: list[str], env: dict[str, str], log_path: Path, *, pipe_stdout: bool
) -> subprocess.Popen[bytes]:
    with open(log_path, "ab") as log:  # the child keeps its own descriptor
        return subprocess.Popen(
            argv,
            env=env,
            stdin=subprocess.PIPE,  # closed when this process exits: the emulator then exits too
            stdout=subprocess.PIPE if pipe_stdout else log,
            stderr=log,
            start_new_session=True,  # a Ctrl-C of the test run is not delivered to it twice
        )


def _child_env(extra: Mapping[str, str], modules: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in AWS_ENV_TO_CLEAR}
    env.update(DUMMY_AWS_ENV)
    env["NODE_PATH"] = str(modules)
    env["SHARDLINE_EXIT_ON_STDIN_EOF"] = "1"
    env.update(extra)
    return env


def _wait_answering(emulator: RunningEmulator, deadline: float) -> None:
    """Poll ListStreams until the emulator answers, the process exits, or the deadline passes."""
    import botocore.exceptions

    client = emulator.client(connect_timeout=1, read_timeout=2)
    last: Exception | None = None
    while time.monotonic() < deadline:
        if emulator.process.poll() is not None:
            raise EmulatorError(
                f"{emulator.kind} exited with {emulator.process.returncode} before answering:\n"
                + emulator.log_tail()
            )
        try:
            client.list_streams(Limit=1)
            return
        except (botocore.exceptions.BotoCoreError, botocore.exceptions.ClientError) as exc:
            last = exc
            time.sleep(0.05)  # poll interval of a readiness loop that has a deadline
    emulator.stop()
    raise EmulatorError(
        f"{emulator.kind} did not answer ListStreams in time ({last}):\n" + emulator.log_tail()
    )


def start_kinesalite(
    log_dir: Path | None = None, *, shard_limit: int = 200, timeout_s: float = START_TIMEOUT_S
) -> RunningEmulator:
    """Start kinesalite on a free port of 127.0.0.1; return once it answers ListStreams.

    ``shard_limit`` is kinesalite's open-shard limit per account. Raises
    :class:`EmulatorUnavailable` without node (or npm), :class:`EmulatorError` if it does not start
    within ``timeout_s`` seconds.
    """
    node = _node()
    source = emulators_dir()
    modules = ensure_node_modules(source)
    log_dir = log_dir or Path(_cache_root())
    log_dir.mkdir(parents=True, exist_ok=True)
    log_path = log_dir / f"kinesalite-{os.getpid()}-{uuid.uuid4().hex[:8]}.log"
    env = _child_env({"KINESALITE_SHARD_LIMIT": str(shard_limit), "KINESALITE_PORT": "0"}, modules)
    process = _spawn([node, str(source / "kinesalite.js")], env, log_path, pipe_stdout=True)
    deadline = time.monotonic() + timeout_s
    lines: queue.Queue[bytes] = queue.Queue()
    assert process.stdout is not None
    stdout = process.stdout
    threading.Thread(target=lambda: lines.put(stdout.readline()), daemon=True).start()
    port: int | None = None
    while port is None and time.monotonic() < deadline:
        try:
            line = lines.get(timeout=0.2)
        except queue.Empty:
            if process.poll() is not None:
                break
            continue
        if line:
            port = int(json.loads(line)["port"])
        break
    emulator = RunningEmulator("kinesalite", f"http://127.0.0.1:{port or 0}", process, log_path)
    if port is None:
        emulator.stop()
        raise EmulatorError("kinesalite did not report its port in time:\n" + emulator.log_tail())
    _wait_answering(emulator, deadline)
    return emulator


def start_kinesis_local(
    log_dir: Path | None = None, *, shard_limit: int = 200, timeout_s: float = START_TIMEOUT_S
) -> RunningEmulator:
    """Start kinesis-local (plain HTTP and TLS on free ports of 127.0.0.1); return once it answers.

    Every stream state change is immediate (``*_DURATION=0ms``). Raises like
    :func:`start_kinesalite`. Tries up to three port pairs (a port found free may be taken before
    the emulator binds it).
    """
    node = _node()
    source = emulators_dir()
    modules = ensure_node_modules(source)
    log_dir = log_dir or Path(_cache_root())
    log_dir.mkdir(parents=True, exist_ok=True)
    main = modules / "kinesis-local" / "main.js"
    durations = {
        f"{op}_DURATION": "0ms"
        for op in (
            "CREATE_STREAM", "DELETE_STREAM", "MERGE_SHARDS", "SPLIT_SHARD", "UPDATE_SHARD_COUNT",
            "UPDATE_STREAM_MODE", "REGISTER_STREAM_CONSUMER", "DEREGISTER_STREAM_CONSUMER",
            "START_STREAM_ENCRYPTION", "STOP_STREAM_ENCRYPTION",
        )
    }  # fmt: skip
    deadline = time.monotonic() + timeout_s
    failure: EmulatorError | None = None
    for _ in range(3):
        plain, tls = free_port(), free_port()
        log_path = log_dir / f"kinesis-local-{os.getpid()}-{uuid.uuid4().hex[:8]}.log"
        env = _child_env(
            {
                "KINESIS_MOCK_PLAIN_PORT": str(plain),
                "KINESIS_MOCK_TLS_PORT": str(tls),
                "KINESIS_MOCK_CERT_PATH": str(modules / "kinesis-local" / "server.json"),
                "SHARD_LIMIT": str(shard_limit),
                "LOG_LEVEL": "WARN",
                "SHOULD_PERSIST_DATA": "false",
                **durations,
            },
            modules,
        )
        process = _spawn(
            [node, "-r", str(source / "loopback.js"), str(main)], env, log_path, pipe_stdout=False
        )
        emulator = RunningEmulator("kinesis-local", f"http://127.0.0.1:{plain}", process, log_path)
        try:
            _wait_answering(emulator, deadline)
            return emulator
        except EmulatorError as exc:
            emulator.stop()
            failure = exc
            if "EADDRINUSE" not in emulator.log_tail() or time.monotonic() >= deadline:
                break
    assert failure is not None
    raise failure
