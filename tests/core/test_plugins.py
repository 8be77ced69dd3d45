"""Plugin loading: entry points, built-ins, and broken plugins that must not take the others down."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest
import shardline
from shardline import plugins
from shardline.errors import PluginError


def _write_dist(site: Path, dist: str, entry_points: dict[str, str], modules: dict[str, str]) -> None:
    """A minimal installed distribution (a .dist-info with entry points) plus its modules, under ``site``."""
    info = site / f"{dist.replace('-', '_')}-0.1.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist}\nVersion: 0.1\n")
    lines = "\n".join(f"{name} = {target}" for name, target in entry_points.items())
    (info / "entry_points.txt").write_text(f"[shardline]\n{lines}\n")
    for module, source in modules.items():
        (site / f"{module}.py").write_text(textwrap.dedent(source))


GOOD = """
    import shardline
    from shardline.source import Source, SourceOptions

    class EchoOptions(SourceOptions):
        rows: int = 3

    class EchoSource(Source):
        Options = EchoOptions
        def batches(self):
            yield from ()
        def ack(self, token):
            pass
        def checkpoint(self):
            return {}

    @shardline.hookimpl
    def shardline_register_sources(register):
        register("echo", EchoSource)
"""

BROKEN_IMPORT = """
    import shardline_this_module_does_not_exist
"""

BAD_REGISTRATION = """
    import shardline

    @shardline.hookimpl
    def shardline_register_sources(register):
        register("not-a-class", object())
        register("fine-too", __import__("shardline_good_plugin").EchoSource)

    @shardline.hookimpl
    def shardline_register_transports(register):
        register("Bad Scheme!", lambda url: None)
"""

DUPLICATE_NAME = """
    import shardline

    @shardline.hookimpl
    def shardline_register_sources(register):
        register("echo", __import__("shardline_good_plugin").EchoSource)
"""

RAISES_AND_TYPO = """
    import shardline

    @shardline.hookimpl
    def shardline_register_codecs(register):
        raise RuntimeError("codec table missing")

    @shardline.hookimpl
    def shardline_register_source(register):   # misspelt: no such hook
        pass
"""


@pytest.fixture
def site(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A directory on sys.path holding fake installed plugin distributions; plugins reload around the test."""
    site = tmp_path / "site"
    site.mkdir()
    _write_dist(site, "shardline-good", {"good": "shardline_good_plugin"}, {"shardline_good_plugin": GOOD})
    _write_dist(
        site,
        "shardline-broken",
        {"broken": "shardline_broken_plugin"},
        {"shardline_broken_plugin": BROKEN_IMPORT},
    )
    _write_dist(
        site,
        "shardline-badreg",
        {"badreg": "shardline_badreg_plugin"},
        {"shardline_badreg_plugin": BAD_REGISTRATION},
    )
    _write_dist(
        site, "shardline-zdup", {"dup": "shardline_dup_plugin"}, {"shardline_dup_plugin": DUPLICATE_NAME}
    )
    _write_dist(
        site,
        "shardline-raises",
        {"raises": "shardline_raises_plugin"},
        {"shardline_raises_plugin": RAISES_AND_TYPO},
    )
    _write_dist(site, "shardline-zzz-again", {"good": "shardline_good_plugin"}, {})  # same entry-point name
    _write_dist(
        site, "shardline-empty", {"empty": "shardline_empty_plugin"}, {"shardline_empty_plugin": "X = 1\n"}
    )
    monkeypatch.syspath_prepend(str(site))
    plugins.reset_plugins()
    yield site
    plugins.reset_plugins()
    for name in list(sys.modules):
        if name.startswith("shardline_") and name.endswith("_plugin"):
            del sys.modules[name]


def _info(name: str) -> plugins.PluginInfo:
    matches = [i for i in plugins.list_plugins() if i.name == name]
    assert matches, f"plugin {name!r} not listed"
    return matches[0]


def test_builtins_and_installed_parquet_plugin_are_listed() -> None:
    plugins.reset_plugins()
    names = [i.name for i in plugins.list_plugins()]
    assert names[0] == "shardline.builtins"
    assert "parquet" in names
    assert plugins.registered_with_owner("sources")["parquet"][1] == "parquet"


def test_a_good_plugin_loads_next_to_broken_ones(site: Path) -> None:
    assert _info("good").ok
    assert plugins.lookup("sources", "echo").__name__ == "EchoSource"
    assert "parquet" in plugins.registered("sources")  # the real plugins still load


def test_import_error_names_the_plugin_and_module(site: Path) -> None:
    info = _info("broken")
    assert info.distribution == "shardline-broken"
    assert info.error is not None
    assert "shardline_broken_plugin" in info.error
    assert "ModuleNotFoundError" in info.error
    assert any("'broken'" in e and "shardline-broken" in e for e in plugins.registry_errors())


def test_bad_registration_marks_the_plugin_broken_and_the_rest_of_it_is_kept(site: Path) -> None:
    info = _info("badreg")
    assert info.error is None and not info.ok
    assert any("'not-a-class'" in p and "expected a subclass of shardline.Source" in p for p in info.broken)
    assert any("'Bad Scheme!'" in p for p in info.broken)
    assert all("plugin 'badreg'" in p for p in info.broken)
    assert "not-a-class" not in plugins.registered("sources")
    assert "fine-too" in plugins.registered("sources")


def test_duplicate_registration_keeps_the_first_and_names_both(site: Path) -> None:
    info = _info("dup")
    assert plugins.registered_with_owner("sources")["echo"][1] == "good"
    assert any("'echo'" in p and "already registered by plugin 'good'" in p for p in info.problems)


def test_duplicate_entry_point_name_is_reported(site: Path) -> None:
    dups = [i for i in plugins.list_plugins() if i.name == "good"]
    assert len(dups) == 2
    assert dups[0].ok
    assert dups[1].distribution == "shardline-zzz-again"
    assert dups[1].error is not None and "duplicate plugin name 'good'" in dups[1].error


def test_hook_that_raises_and_misspelt_hook_are_reported(site: Path) -> None:
    info = _info("raises")
    assert any("failed in shardline_register_codecs" in p and "codec table missing" in p for p in info.broken)
    assert any("unknown hook 'shardline_register_source'" in p for p in info.problems)


def test_an_entry_point_naming_a_module_without_hooks_is_reported(site: Path) -> None:
    problems = _info("empty").problems
    assert any("implements no shardline hook" in p and "shardline_empty_plugin" in p for p in problems)


def test_lookup_of_a_missing_name_lists_known_ones_and_broken_plugins(site: Path) -> None:
    with pytest.raises(PluginError) as exc:
        plugins.lookup("sources", "kafkaa")
    message = str(exc.value)
    assert "no source named 'kafkaa'" in message
    assert "echo" in message and "parquet" in message
    assert "'broken'" in message


def test_plugins_command_lists_every_plugin_even_with_broken_ones_and_exits_1(site: Path) -> None:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(site), os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.run(
        [str(Path(sys.executable).with_name("shardline")), "plugins"],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert proc.returncode == 1, proc.stderr
    out = proc.stdout
    assert "good (shardline-good)  source:echo" in out
    assert "parquet (shardline-parquet)  source:parquet" in out
    assert "broken (shardline-broken)  BROKEN: failed to import 'shardline_broken_plugin'" in out
    assert "badreg (shardline-badreg)  BROKEN: plugin 'badreg'" in out
    assert "    provides: source:fine-too" in out
    assert "plugin 'badreg'" in proc.stderr


class _Observer:
    def __init__(self) -> None:
        self.calls: list[tuple[str, int]] = []

    @shardline.hookimpl
    def shardline_on_batch_acked(self, stream: str, records: int) -> None:  # a subset of the arguments
        self.calls.append((stream, records))


class _FailingObserver:
    @shardline.hookimpl
    def shardline_on_batch_acked(self, records: int) -> None:
        raise RuntimeError("observer bug")


def test_observers_get_their_arguments_and_a_failing_one_does_not_stop_others() -> None:
    plugins.reset_plugins()
    observer = _Observer()
    plugins.register_plugin(_FailingObserver(), "failing-observer")
    plugins.register_plugin(observer, "observer")
    try:
        plugins.call_observers("shardline_on_batch_acked", stream="s", records=5, nbytes=10)
        assert observer.calls == [("s", 5)]
    finally:
        plugins.reset_plugins()


def test_register_plugin_in_process_refuses_a_duplicate_name() -> None:
    plugins.reset_plugins()
    try:
        plugins.register_plugin(_Observer(), "observer")
        with pytest.raises(PluginError, match="duplicate plugin name 'observer'"):
            plugins.register_plugin(_Observer(), "observer")
    finally:
        plugins.reset_plugins()


# -- contract checks and name clashes with built-ins -------------------------------------------------

HALF_DONE = """
    import shardline

    class HalfSource(shardline.Source):
        def batches(self):
            yield from ()

    class LooksLikeASource:
        Options = shardline.SourceOptions
        def batches(self):
            yield from ()
        def ack(self, token):
            pass
        def checkpoint(self):
            return {}

    class NoBatches(shardline.Source):
        batches = None
        def ack(self, token):
            pass
        def checkpoint(self):
            return {}

    def transport(url, **options):
        raise RuntimeError("never called")

    transport.Options = {"timeout": float}   # not a model

    @shardline.hookimpl
    def shardline_register_sources(register):
        register("half", HalfSource)
        register("duck", LooksLikeASource)
        register("nobatches", NoBatches)

    @shardline.hookimpl
    def shardline_register_transports(register):
        register("halfproto", transport)
"""

IMPOSTOR = """
    import click
    import shardline

    class FakeParquet(shardline.Source):
        def batches(self):
            yield from ()
        def ack(self, token):
            pass
        def checkpoint(self):
            return {}

    SEEN_KEYS = []

    def steal(url, access_key=None, **options):
        SEEN_KEYS.append(access_key)
        raise RuntimeError("an impostor transport")

    @shardline.hookimpl(trylast=True)   # pluggy would list it first: it must not win for that
    def shardline_register_sources(register):
        register("parquet", FakeParquet)
        register("other", FakeParquet)

    @shardline.hookimpl(tryfirst=True)
    def shardline_register_transports(register):
        register("http", steal)

    @shardline.hookimpl
    def shardline_register_commands(cli):
        @cli.command(name="run")
        def run():
            print("not the real run")
"""


@pytest.fixture
def hostile_site(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """Plugins that break the source contract or take built-in names (their distributions sort first)."""
    site = tmp_path / "site"
    site.mkdir()
    _write_dist(site, "aaa-half", {"half": "shardline_half_plugin"}, {"shardline_half_plugin": HALF_DONE})
    _write_dist(
        site,
        "aaa-impostor",
        {"impostor": "shardline_impostor_plugin"},
        {"shardline_impostor_plugin": IMPOSTOR},
    )
    _write_dist(
        site, "aaa-shadow", {"parquet": "shardline_impostor_plugin"}, {}
    )  # takes the entry-point name
    monkeypatch.syspath_prepend(str(site))
    plugins.reset_plugins()
    yield site
    plugins.reset_plugins()
    for name in list(sys.modules):
        if name.startswith("shardline_") and name.endswith("_plugin"):
            del sys.modules[name]


def _shardline(site: Path, *args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(site), os.environ.get("PYTHONPATH", "")])}
    exe = str(Path(sys.executable).with_name("shardline"))
    return subprocess.run([exe, *args], capture_output=True, text=True, env=env, timeout=120, cwd=cwd)


def test_a_source_with_abstract_methods_left_is_not_registered_and_its_plugin_is_broken(
    hostile_site: Path,
) -> None:
    info = _info("half")
    assert not info.ok
    assert any(
        "registered source 'half' as shardline_half_plugin.HalfSource, "
        "which does not implement ack, checkpoint" in b
        for b in info.broken
    )
    assert "half" not in plugins.registered("sources")


def test_a_source_whose_contract_method_is_not_callable_is_not_registered(hostile_site: Path) -> None:
    assert any("'nobatches'" in b and "does not implement batches" in b for b in _info("half").broken)
    assert "nobatches" not in plugins.registered("sources")


def test_a_transport_whose_options_are_not_a_model_is_not_registered(hostile_site: Path) -> None:
    assert any("transport 'halfproto' whose Options is" in b for b in _info("half").broken)
    assert "halfproto" not in plugins.registered("transports")


def test_a_source_class_not_derived_from_source_is_not_registered(hostile_site: Path) -> None:
    assert any("'duck'" in b and "expected a subclass of shardline.Source" in b for b in _info("half").broken)
    assert "duck" not in plugins.registered("sources")


def test_using_a_refused_source_says_why_instead_of_a_traceback_at_run(
    hostile_site: Path, tmp_path: Path
) -> None:
    with pytest.raises(PluginError, match=r"no source named 'half' is registered: .* does not implement ack"):
        plugins.lookup("sources", "half")
    config = tmp_path / "half.toml"
    config.write_text('[source]\ntype = "half"\n[sink]\nstream = "local://store/bigdata/s"\n')
    proc = _shardline(hostile_site, "validate", str(config))
    assert proc.returncode == 1
    assert "does not implement ack, checkpoint" in proc.stderr and "Traceback" not in proc.stderr


def test_a_third_party_plugin_never_replaces_a_built_in_source_or_transport(hostile_site: Path) -> None:
    from shardline_parquet import ParquetSource

    assert plugins.registered_with_owner("sources")["parquet"] == (ParquetSource, "parquet")
    assert plugins.registered_with_owner("transports")["http"][1] == "v3io"
    assert plugins.registered_with_owner("sources")["other"][1] == "impostor"  # its other names count
    refused = _info("impostor").problems
    assert any(
        "plugin 'impostor' (distribution 'aaa-impostor') registered source 'parquet', which the built-in "
        "plugin 'parquet' (distribution 'shardline-parquet') provides; refused" in p
        for p in refused
    )
    assert any("transport 'http'" in p and "built-in plugin 'v3io'" in p for p in refused)


def test_a_third_party_entry_point_cannot_take_a_built_in_plugins_name(hostile_site: Path) -> None:
    shadows = [i for i in plugins.list_plugins() if i.name == "parquet"]
    assert [i.distribution for i in shadows] == ["shardline-parquet", "aaa-shadow"]
    assert shadows[0].ok
    assert shadows[1].error is not None and "duplicate plugin name 'parquet'" in shadows[1].error


def test_a_third_party_plugin_cannot_replace_a_built_in_command(hostile_site: Path) -> None:
    import click
    from shardline.cli import run_command

    group = click.Group()
    errors = plugins.register_commands(group)
    assert group.commands["run"] is run_command
    assert any(
        "plugin 'impostor'" in e and "replaced the built-in command 'run'; refused" in e for e in errors
    )


def test_plugins_command_exits_1_and_lists_broken_and_refused_plugins(hostile_site: Path) -> None:
    proc = _shardline(hostile_site, "plugins")
    assert proc.returncode == 1
    assert (
        "half (aaa-half)  BROKEN: plugin 'half' (distribution 'aaa-half') registered source 'half'"
        in proc.stdout
    )
    assert "impostor (aaa-impostor)  source:other" in proc.stdout
    assert (
        "    refused: plugin 'impostor' (distribution 'aaa-impostor') registered source 'parquet'"
        in proc.stdout
    )
    assert "parquet (shardline-parquet)  source:parquet" in proc.stdout


def test_plugins_command_exits_0_when_everything_loads() -> None:
    proc = _shardline(Path(__file__).parent, "plugins")
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr == ""
