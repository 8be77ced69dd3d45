"""The distributions as users get them: declared dependencies, the pytest plugins, fresh installs.

The fast tests read the sources and pyproject files of this workspace. The slow one builds the four
wheels, installs them into a fresh venv outside the workspace (third-party dependencies from the
package registry, through uv's cache) and runs what a user runs first.
"""

from __future__ import annotations

import ast
import importlib.metadata
import os
import re
import shutil
import socket
import subprocess
import sys
import time
import tomllib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]
MEMBERS = {
    "shardline": ROOT / "core",
    "shardline-v3io": ROOT / "connectors" / "v3io",
    "shardline-parquet": ROOT / "plugins" / "parquet",
    "shardline-kafka": ROOT / "plugins" / "kafka",
    "shardline-kinesis": ROOT / "connectors" / "kinesis",
    "shardline-dask": ROOT / "plugins" / "dask",
}
# the import name of each workspace distribution
OWN_MODULES = {"shardline": "shardline", "shardline_v3io": "shardline-v3io",
               "shardline_parquet": "shardline-parquet", "shardline_kafka": "shardline-kafka",
               "shardline_kinesis": "shardline-kinesis", "shardline_dask": "shardline-dask"}  # fmt: skip


def _norm(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _requirement_name(requirement: str) -> str:
    match = re.match(r"\s*([A-Za-z0-9][A-Za-z0-9._-]*)", requirement)
    assert match, requirement
    return _norm(match.group(1))


def _declared(member: Path) -> tuple[set[str], set[str]]:
    """(dependencies, dependencies of any extra) of a member's pyproject.toml, normalised names."""
    project = tomllib.loads((member / "pyproject.toml").read_text())["project"]
    deps = {_requirement_name(r) for r in project.get("dependencies", [])}
    extras = {
        _requirement_name(r) for reqs in project.get("optional-dependencies", {}).values() for r in reqs
    }
    return deps, extras


def _is_optional(node: ast.AST, parents: dict[ast.AST, ast.AST]) -> bool:
    """Whether an import sits in a ``try`` that catches ImportError, or under ``if TYPE_CHECKING``."""
    child, parent = node, parents.get(node)
    while parent is not None:
        if isinstance(parent, ast.Try) and child in parent.body:
            for handler in parent.handlers:
                names = ast.unparse(handler.type) if handler.type else "BaseException"
                if "ImportError" in names or "ModuleNotFoundError" in names:
                    return True
        if isinstance(parent, ast.If) and "TYPE_CHECKING" in ast.unparse(parent.test):
            return True
        child, parent = parent, parents.get(parent)
    return False


def _imports(member: Path) -> tuple[set[str], set[str]]:
    """Top-level module names imported anywhere in a member's sources: (required, optional)."""
    required: set[str] = set()
    optional: set[str] = set()
    for path in (member / "src").rglob("*.py"):
        tree = ast.parse(path.read_text(), str(path))
        parents = {child: node for node in ast.walk(tree) for child in ast.iter_child_nodes(node)}
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            else:
                continue
            for name in names:
                top = name.split(".")[0]
                if top in sys.stdlib_module_names or top == "__future__":
                    continue
                (optional if _is_optional(node, parents) else required).add(top)
    return required, optional


def _distribution_of(module: str) -> str:
    if module in OWN_MODULES:
        return OWN_MODULES[module]
    dists = importlib.metadata.packages_distributions().get(module)
    assert dists, f"{module} is imported but no installed distribution provides it"
    return _norm(dists[0])


@pytest.mark.parametrize("dist", sorted(MEMBERS))
def test_every_module_a_distribution_imports_is_a_declared_dependency(dist: str) -> None:
    member = MEMBERS[dist]
    deps, extras = _declared(member)
    required, optional = _imports(member)
    undeclared = sorted(
        f"{module} (from {_distribution_of(module)})"
        for module in required
        if _distribution_of(module) not in deps | extras | {dist}
    )
    assert undeclared == [], f"{dist} imports undeclared distributions: {undeclared}"
    # optional imports (inside `try: ... except ImportError`) need not be declared; list them here
    # so that a new one is a decision: uvloop is a dependency, the demo's Parquet plugin is not
    # (shardline-parquet depends on shardline-v3io, not the other way round); OpenTelemetry is the
    # `shardline[otel]` extra, imported only by its exporter; duckdb is the `shardline[sql]` extra of
    # the SQL transform step.
    expected_optional = {
        "shardline": {"uvloop", "opentelemetry", "duckdb"},
        "shardline-v3io": {"uvloop", "shardline_parquet"},
        "shardline-parquet": set(),
        "shardline-kafka": set(),
        "shardline-kinesis": set(),
        "shardline-dask": set(),
    }[dist]
    assert optional - required <= expected_optional | {"shardline"}


@pytest.mark.parametrize("dist", sorted(MEMBERS))
def test_every_declared_dependency_is_imported(dist: str) -> None:
    member = MEMBERS[dist]
    deps, _extras = _declared(member)
    required, optional = _imports(member)
    used = {_distribution_of(m) for m in required | optional}
    # shardline-v3io is declared by the sources for its transports, which they never import
    # (they are found through the plugin registry): see the README, "Which package does what".
    unused = deps - used - {"shardline-v3io"}
    assert unused == set(), f"{dist} declares dependencies it never imports: {sorted(unused)}"


def test_the_sources_depend_on_the_package_that_carries_the_http_and_local_transports() -> None:
    for dist in ("shardline-kafka", "shardline-parquet"):
        deps, _ = _declared(MEMBERS[dist])
        assert "shardline-v3io" in deps, dist


def test_the_demo_runs_the_text_of_examples_backfill_toml() -> None:
    from shardline_v3io.demo import DEMO_PIPELINE

    assert (ROOT / "examples" / "backfill.toml").read_text() == DEMO_PIPELINE


def test_the_example_reads_the_folder_the_demo_writes() -> None:
    text = (ROOT / "examples" / "backfill.toml").read_text()
    assert 'path = "${EVENTS_PATH:-.shardline/demo/sample}"' in text


def test_loading_the_pytest_plugins_imports_no_heavy_module_and_warns_nothing() -> None:
    code = (
        "import sys, warnings\n"
        "warnings.simplefilter('error')\n"
        "import shardline, shardline.testing, shardline_kafka.testing, shardline_kafka, shardline_v3io\n"
        "print(sorted(m for m in ('pyarrow', 'numpy', 'pydantic', 'kafka', 'aiohttp') if m in sys.modules))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"
    assert out.stderr == ""


def test_the_installed_plugins_offer_only_prefixed_fixtures() -> None:
    import shardline.testing
    import shardline_kafka.testing

    names = {
        name
        for module in (shardline.testing, shardline_kafka.testing)
        for name, value in vars(module).items()
        if hasattr(value, "_fixture_function_marker") or hasattr(value, "_pytestfixturefunction")
    }
    assert names, "no fixture found in the plugins"
    assert all(name.startswith("shardline_") for name in names), sorted(names)


def test_a_missing_transport_names_the_package_to_install() -> None:
    from shardline.plugins import install_hint

    assert (
        install_hint("transports", "http")
        == "it comes with the shardline-v3io package: pip install shardline-v3io"
    )
    assert "shardline-parquet" in install_hint("sources", "parquet")


# --- fresh installs ------------------------------------------------------------------------------


def _uv() -> str:
    uv = os.environ.get("UV") or shutil.which("uv")
    assert uv, "these tests need uv (python3 -m pip install uv)"
    return uv


def _run(
    args: list[str | Path], cwd: Path, timeout: float = 120, **env: str
) -> subprocess.CompletedProcess[str]:
    environ = {k: v for k, v in os.environ.items() if not k.startswith(("VIRTUAL_ENV", "UV_PROJECT"))}
    environ.update(env)
    return subprocess.run(
        [str(a) for a in args], cwd=cwd, capture_output=True, text=True, timeout=timeout, env=environ
    )


def _ok(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode == 0, (
        f"{result.args} exited {result.returncode}:\n{result.stdout}\n{result.stderr}"
    )
    return result.stdout


@pytest.fixture(scope="module")
def wheels(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The workspace's wheels (one per member), built from this checkout."""
    out = tmp_path_factory.mktemp("wheels")
    _ok(_run([_uv(), "build", "--all-packages", "--wheel", "-q", "-o", out], cwd=ROOT, timeout=300))
    assert len(list(out.glob("*.whl"))) == len(MEMBERS)
    return out


def _fresh_venv(place: Path) -> Path:
    """A fresh venv in ``place`` (outside the workspace), with pip; its bin/ folder is returned."""
    _ok(_run([_uv(), "venv", "-q", "--seed", "--python", sys.executable, place / "venv"], cwd=place))
    return place / "venv" / "bin"


@pytest.fixture(scope="module")
def venv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One fresh venv for the tests below, which add distributions to it."""
    return _fresh_venv(tmp_path_factory.mktemp("fresh"))


def _install(venv: Path, wheels: Path, *requirements: str) -> None:
    args: list[str | Path] = [
        _uv(),
        "pip",
        "install",
        "-q",
        "--python",
        venv / "python",
        "--find-links",
        wheels,
    ]
    _ok(_run([*args, *requirements], cwd=venv, timeout=300))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def served(wheels: Path, venv: Path, tmp_path: Path) -> Iterator[str]:
    """``shardline serve`` of the fresh venv on a free port; yields its base URL."""
    _install(venv, wheels, "shardline-v3io")
    port = _free_port()
    server = subprocess.Popen(
        [venv / "shardline", "serve", "--data-dir", tmp_path / "server", "--port", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        deadline = time.monotonic() + 30
        while True:
            assert server.poll() is None, (
                f"shardline serve exited: {server.stderr.read() if server.stderr else ''}"
            )
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
                break
            except OSError:
                assert time.monotonic() < deadline, "shardline serve did not listen within 30 s"
                time.sleep(0.05)
        yield f"http://127.0.0.1:{port}"
    finally:
        server.terminate()
        server.wait(timeout=30)


@pytest.mark.slow
def test_fresh_install_shardline_alone_says_which_package_carries_the_http_transport(
    wheels: Path, tmp_path: Path
) -> None:
    venv = _fresh_venv(tmp_path)  # its own: the others install shardline-v3io
    _install(venv, wheels, "shardline")
    _ok(_run([venv / "shardline", "--help"], cwd=tmp_path))
    (tmp_path / "p.toml").write_text(
        '[source]\ntype = "parquet"\npath = "x"\n[sink]\nstream = "http://127.0.0.1:8081/bigdata/s"\n'
    )
    result = _run([venv / "shardline", "validate", "p.toml"], cwd=tmp_path)
    assert result.returncode == 1
    assert "pip install shardline-v3io" in result.stderr
    assert "pip install shardline-parquet" in result.stderr


@pytest.mark.slow
def test_fresh_install_of_shardline_and_shardline_kafka_can_write_to_an_http_stream(
    wheels: Path, venv: Path, tmp_path: Path
) -> None:
    _install(venv, wheels, "shardline", "shardline-kafka")
    plugins = _ok(_run([venv / "shardline", "plugins"], cwd=tmp_path))
    assert "transport:http" in plugins and "source:kafka" in plugins
    shutil.copy(ROOT / "examples" / "kafka-bridge.toml", tmp_path)
    assert ": ok:" in _ok(_run([venv / "shardline", "validate", "kafka-bridge.toml"], cwd=tmp_path))


@pytest.mark.slow
def test_fresh_install_demo_runs_outside_a_checkout_and_the_example_backfills_what_it_wrote(
    wheels: Path, venv: Path, tmp_path: Path, served: str
) -> None:
    _install(venv, wheels, "shardline", "shardline-kafka", "shardline-parquet")
    demo = _ok(
        _run([venv / "shardline", "demo", "--rows", "3000", "--shards", "2"], cwd=tmp_path, timeout=120)
    )
    assert "read back 3,000 of 3,000 records: 0 duplicates" in demo
    assert f"{venv / 'shardline'} serve --data-dir" in demo or "  shardline serve --data-dir" in demo
    (tmp_path / "examples").mkdir()
    shutil.copy(ROOT / "examples" / "backfill.toml", tmp_path / "examples")
    run = _run(
        [
            venv / "shardline",
            "run",
            "examples/backfill.toml",
            "--set",
            f"sink.stream={served}/bigdata/events",
        ],
        cwd=tmp_path,
        timeout=120,
    )
    assert run.returncode == 0, run.stderr
    assert "3,000 records" in run.stdout or "3000 records" in run.stdout, run.stdout


@pytest.mark.slow
def test_a_project_with_shardline_installed_runs_its_tests_with_filterwarnings_error(
    wheels: Path, venv: Path, tmp_path: Path
) -> None:
    _install(venv, wheels, "shardline[testing]", "shardline-kafka", "shardline-parquet")
    project = tmp_path / "project"
    project.mkdir()
    (project / "pyproject.toml").write_text('[tool.pytest.ini_options]\nfilterwarnings = ["error"]\n')
    (project / "test_unrelated.py").write_text(
        "import pytest\n\n"
        "def test_plain():\n    assert 1 + 1 == 2\n\n"
        "def test_sink_is_not_a_shardline_fixture(request):\n"
        "    with pytest.raises(pytest.FixtureLookupError):\n"
        "        request.getfixturevalue('sink')\n\n"
        "def test_the_prefixed_sink_writes(shardline_sink, shardline_fake_transport):\n"
        "    import pyarrow as pa\n"
        "    shardline_sink.write(pa.record_batch({'k': ['a', 'b']}))\n"
        "    shardline_sink.flush()\n"
        "    assert len(shardline_fake_transport.records()) == 2\n"
    )
    result = _run([venv / "python", "-m", "pytest", "-q", "-p", "no:cacheprovider"], cwd=project, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "3 passed" in result.stdout
    assert "warning" not in result.stdout.lower()


@pytest.mark.slow
def test_pip_installs_the_example_plugin_into_a_venv_that_has_shardline(
    wheels: Path, venv: Path, tmp_path: Path
) -> None:
    _install(venv, wheels, "shardline", "shardline-v3io")
    _ok(
        _run(
            [venv / "pip", "install", "-q", ROOT / "examples" / "plugin-http-poll"], cwd=tmp_path, timeout=300
        )
    )
    assert "source:http-poll" in _ok(_run([venv / "shardline", "plugins"], cwd=tmp_path))


@pytest.mark.slow
@pytest.mark.kafka
def test_fresh_install_of_shardline_and_shardline_kafka_bridges_a_topic_into_the_server(
    wheels: Path, venv: Path, tmp_path: Path, served: str, kafka_broker: Any
) -> None:
    from kafka import KafkaAdminClient, KafkaProducer
    from kafka.admin import NewTopic
    from shardline_v3io.testing import read_stream

    _install(venv, wheels, "shardline", "shardline-kafka")
    topic = f"fresh-{os.getpid()}"
    admin = KafkaAdminClient(bootstrap_servers=kafka_broker.bootstrap)
    try:
        admin.create_topics([NewTopic(topic, 2, 1)])
    finally:
        admin.close()
    producer = KafkaProducer(bootstrap_servers=kafka_broker.bootstrap)
    messages = [(b"k%d" % (i % 5), b"v%d" % i) for i in range(50)]
    for key, value in messages:
        producer.send(topic, key=key, value=value)
    producer.flush()
    producer.close()
    shutil.copy(ROOT / "examples" / "kafka-bridge.toml", tmp_path)
    overrides = [
        "source.stop_at_end=true",
        "source.consumer.session_timeout_ms=6000",
        "source.consumer.heartbeat_interval_ms=2000",
    ]
    run = _run(
        [venv / "shardline", "run", "kafka-bridge.toml", *[x for o in overrides for x in ("--set", o)]],
        cwd=tmp_path,
        timeout=180,
        KAFKA_BOOTSTRAP=kafka_broker.bootstrap,
        KAFKA_TOPIC=topic,
        KAFKA_GROUP=f"fresh-group-{os.getpid()}",
        ORDERS_STREAM=f"{served}/bigdata/orders",
    )
    assert run.returncode == 0, run.stdout + run.stderr
    got = sorted(
        (r.partition_key, r.data) for rs in read_stream(f"{served}/bigdata/orders").values() for r in rs
    )
    assert got == sorted((k.decode(), v) for k, v in messages)
