"""The plugin manager: loads entry points of the group ``shardline`` and builds the registries.

This module holds the only global state of shardline: one lazily created
:class:`pluggy.PluginManager`. Loading never stops at a broken plugin:

- an entry point that fails to import, or whose hook implementations do not match the hook specs,
  is listed as broken (:attr:`PluginInfo.error`) and not registered;
- built-ins load first: the core's own registrations and those of the project's own distributions
  (:data:`BUILTIN_DISTRIBUTIONS`), then the other entry points in a stable order (by distribution
  name, then entry-point name). Two entry points with the same name: the first wins, the second is
  listed as broken; so a third-party entry point can never take the name of a built-in one;
- a registration that breaks the contract (bad name, wrong kind of object, a source class that is
  not a :class:`shardline.Source` or leaves abstract methods unimplemented, an exception inside
  the hook) is not registered and marks its plugin broken (:attr:`PluginInfo.broken`);
- a registration of a name already taken is refused (:attr:`PluginInfo.problems`): the first
  registration wins, in load order whatever ``tryfirst``/``trylast`` a hook implementation
  declares, so a built-in (the ``parquet`` source, the ``http`` transport that sees the access
  key) is never replaced; the message names both plugins. The plugin's other registrations still
  count.

:func:`registry_errors` gathers every such message and ``shardline plugins`` exits non-zero when
there is any.

Every message names the plugin (its entry-point name) and, where known, its distribution, so the
user knows what to fix, upgrade or uninstall. ``shardline plugins`` lists all of it.
"""

from __future__ import annotations

import contextlib
import importlib
import re
import threading
from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from importlib import metadata
from typing import Any

import pluggy

from shardline import hookspecs
from shardline.errors import PluginError

ENTRY_POINT_GROUP = "shardline"
_BUILTIN_MODULES = ("shardline.builtins",)
BUILTIN_DISTRIBUTIONS = frozenset(
    {"shardline", "shardline-v3io", "shardline-kinesis", "shardline-kafka", "shardline-parquet"}
)
"""The project's own distributions: their registrations are built-ins, loaded first and never replaced."""
KINDS = ("sources", "transports", "codecs", "partitioners")
"""The registries a plugin can add to, each through ``shardline_register_<kind>``."""

_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.+-]*$")
_SCHEME_RE = re.compile(r"^[a-z][a-z0-9+.-]*$")


@dataclass(frozen=True)
class PluginInfo:
    """One loaded (or broken) plugin, as ``shardline plugins`` lists it.

    ``error`` is set when the plugin could not be loaded at all; ``broken`` lists registrations
    that break the contract (an abstract source class, a wrong base class, a hook that raised);
    ``problems`` lists registrations refused for other reasons (a name already taken) and load
    warnings (a misspelt hook). Whatever else the plugin registered is in use.
    """

    name: str
    module: str
    distribution: str | None
    error: str | None = None
    problems: tuple[str, ...] = ()
    broken: tuple[str, ...] = ()

    @property
    def ok(self) -> bool:
        """True when the plugin loaded and every registration it made was accepted."""
        return self.error is None and not self.problems and not self.broken

    @property
    def builtin(self) -> bool:
        """True for the core's registrations and those of the project's own distributions."""
        return _is_builtin(self.module, self.distribution)


@dataclass
class _State:
    manager: pluggy.PluginManager
    infos: list[PluginInfo] = field(default_factory=list)
    registries: dict[str, dict[str, tuple[Any, str]]] = field(default_factory=dict)
    load_problems: dict[str, list[str]] = field(default_factory=dict)  # plugin -> problems found at load
    problems: dict[str, list[str]] = field(default_factory=dict)  # plugin -> refused registrations
    broken: dict[str, list[str]] = field(default_factory=dict)  # plugin -> contract violations
    refused: dict[str, dict[str, str]] = field(default_factory=dict)  # kind -> name -> why not registered
    observers: dict[str, list[Any]] = field(default_factory=dict)

    def invalidate(self) -> None:
        """Drop the registries (and what was refused building them) so they are rebuilt on next use."""
        self.registries.clear()
        self.problems.clear()
        self.broken.clear()
        self.refused.clear()
        self.observers.clear()

    def rank(self, plugin_name: str) -> int:
        """Load order of a plugin (built-ins first): the order its registrations are taken in."""
        for i, info in enumerate(self.infos):
            if info.name == plugin_name and info.error is None:
                return i
        return len(self.infos)


_state: _State | None = None
_lock = threading.RLock()


def _describe(name: str, dist: str | None) -> str:
    return f"plugin {name!r}" + (f" (distribution {dist!r})" if dist else "")


def _normalise(dist: str | None) -> str:
    return re.sub(r"[-_.]+", "-", dist or "").lower()


def _is_builtin(module: str, dist: str | None) -> bool:
    return module in _BUILTIN_MODULES or _normalise(dist) in BUILTIN_DISTRIBUTIONS


def _unknown_hooks(manager: pluggy.PluginManager, plugin_name: str) -> list[str]:
    """Names of ``shardline_*`` hook implementations of a plugin that match no hook spec (typos)."""
    unknown = []
    plugin = manager.get_plugin(plugin_name)
    for caller in manager.get_hookcallers(plugin) or []:
        if not caller.has_spec() and caller.name.startswith(f"{hookspecs.PROJECT}_"):
            unknown.append(caller.name)
    return sorted(unknown)


def _register_one(state: _State, plugin: Any, name: str, module: str, dist: str | None) -> None:
    manager = state.manager
    who = _describe(name, dist)
    if manager.has_plugin(name):
        other = next((i for i in state.infos if i.name == name), None)
        by = f" by {other.module}" if other else ""
        state.infos.append(
            PluginInfo(name, module, dist, f"duplicate plugin name {name!r} (already loaded{by}); not loaded")
        )
        return
    try:
        manager.register(plugin, name=name)
    except pluggy.PluginValidationError as exc:
        detail = " ".join(str(exc).split())
        state.infos.append(PluginInfo(name, module, dist, f"invalid hook implementation: {detail}"))
        return
    except ValueError as exc:
        state.infos.append(PluginInfo(name, module, dist, f"could not register {who}: {exc}"))
        return
    problems = [
        f"{who} implements unknown hook {hook!r} (misspelt? see shardline.hookspecs)"
        for hook in _unknown_hooks(manager, name)
    ]
    if not manager.get_hookcallers(plugin):
        problems.append(
            f"{who} implements no shardline hook: does its entry point ({module}) name the module "
            "holding the @shardline.hookimpl functions?"
        )
    state.infos.append(PluginInfo(name, module, dist))
    if problems:
        state.load_problems[name] = problems


def _entry_points() -> Iterable[metadata.EntryPoint]:
    """Entry points of the group, in a stable order: built-in distributions first, then by
    distribution name, then entry-point name."""
    eps = metadata.entry_points(group=ENTRY_POINT_GROUP)

    def key(ep: metadata.EntryPoint) -> tuple[bool, str, str]:
        dist = ep.dist.name if ep.dist is not None else None
        return (not _is_builtin(ep.value, dist), _normalise(dist), ep.name)

    return sorted(eps, key=key)


def _load() -> _State:
    manager = pluggy.PluginManager(hookspecs.PROJECT)
    manager.add_hookspecs(hookspecs)
    state = _State(manager)
    for module_name in _BUILTIN_MODULES:
        module = importlib.import_module(module_name)
        _register_one(state, module, module_name, module_name, "shardline")
    seen: set[tuple[str | None, str, str]] = set()
    for ep in _entry_points():
        dist = ep.dist.name if ep.dist is not None else None
        if (dist, ep.name, ep.value) in seen:  # the same distribution found twice on sys.path
            continue
        seen.add((dist, ep.name, ep.value))
        if manager.has_plugin(ep.name):
            _register_one(state, object(), ep.name, ep.value, dist)  # records the duplicate
            continue
        try:
            plugin = ep.load()
        except Exception as exc:  # a broken third-party plugin must not take the others down
            error = f"failed to import {ep.value!r}: {type(exc).__name__}: {exc}"
            state.infos.append(PluginInfo(ep.name, ep.value, dist, error))
            continue
        _register_one(state, plugin, ep.name, ep.value, dist)
    return state


def _get_state() -> _State:
    global _state
    with _lock:
        if _state is None:
            _state = _load()
        return _state


def get_plugin_manager() -> pluggy.PluginManager:
    """Return the process-wide plugin manager, loading built-ins and entry points on first use."""
    return _get_state().manager


def reset_plugins() -> None:
    """Forget loaded plugins so the next call reloads entry points (for tests and plugin authors)."""
    global _state
    with _lock:
        _state = None


def register_plugin(plugin: Any, name: str | None = None) -> str:
    """Register a plugin object or module in this process, as if an entry point had named it.

    For applications that embed shardline and for tests of a plugin before it is packaged. Returns
    the name it was registered under. Raises :class:`PluginError` when it cannot be registered
    (duplicate name, hook implementation that does not match its spec).
    """
    with _lock:
        state = _get_state()
        plugin_name = name or getattr(plugin, "__name__", None) or repr(plugin)
        module = getattr(plugin, "__name__", type(plugin).__name__)
        _register_one(state, plugin, plugin_name, module, None)
        info = state.infos[-1]
        if info.error:
            state.infos.pop()
            raise PluginError(f"{_describe(plugin_name, None)}: {info.error}")
        state.invalidate()  # rebuilt on next use, with the new plugin's registrations
        return plugin_name


def unregister_plugin(name: str) -> None:
    """Remove a plugin registered with :func:`register_plugin` (for tests)."""
    with _lock:
        state = _get_state()
        plugin = state.manager.get_plugin(name)
        if plugin is not None:
            state.manager.unregister(plugin, name=name)
        state.infos = [i for i in state.infos if i.name != name]
        state.load_problems.pop(name, None)
        state.invalidate()


def _dist_of(state: _State, plugin_name: str) -> str | None:
    return next((i.distribution for i in state.infos if i.name == plugin_name), None)


def _check_value(kind: str, name: str, value: Any) -> str | None:
    """Why ``value`` cannot be registered as a ``kind`` called ``name``, or None when it can."""
    singular = kind[:-1]
    if not isinstance(name, str) or not name:
        return f"registered a {singular} with an invalid name {name!r} (expected a non-empty string)"
    if kind == "transports":
        if not _SCHEME_RE.match(name):
            return f"registered transport {name!r}: a transport name is a URL scheme like 'http' or 'kinesis'"
    elif not _NAME_RE.match(name):
        return f"registered {singular} {name!r}: names use letters, digits, '-', '_', '.', '+'"
    if kind == "sources":
        from pydantic import BaseModel

        from shardline.source import Source, SourceOptions

        if not (isinstance(value, type) and issubclass(value, Source)):
            return f"registered source {name!r} as {value!r}: expected a subclass of shardline.Source"
        where = f"{value.__module__}.{value.__qualname__}"
        missing = sorted(getattr(value, "__abstractmethods__", ()))
        contract = ("batches", "ack", "checkpoint")
        missing += [m for m in contract if m not in missing and not callable(getattr(value, m, None))]
        if missing:
            return (
                f"registered source {name!r} as {where}, which does not implement "
                f"{', '.join(missing)} (abstract in shardline.Source)"
            )
        options = getattr(value, "Options", None)
        if not (isinstance(options, type) and issubclass(options, SourceOptions)):
            return (
                f"registered source {name!r} whose Options is {options!r}: "
                "expected a subclass of shardline.SourceOptions"
            )
        model = getattr(value, "Checkpoint", None)
        if model is not None and not (isinstance(model, type) and issubclass(model, BaseModel)):
            return (
                f"registered source {name!r} whose Checkpoint is {model!r}: "
                "expected None or a subclass of shardline.SourceCheckpoint"
            )
    elif value is None:
        return f"registered {singular} {name!r} as None"
    elif kind in ("transports", "codecs") and not callable(value):
        return f"registered {singular} {name!r} as {value!r}: expected a callable"
    elif kind == "transports" and getattr(value, "Options", None) is not None:
        from pydantic import BaseModel

        model = value.Options
        if not (isinstance(model, type) and issubclass(model, BaseModel)):
            return (
                f"registered transport {name!r} whose Options is {model!r}: "
                "expected None or a subclass of shardline.transport.TransportOptions"
            )
    return None


def _registry(kind: str) -> dict[str, tuple[Any, str]]:
    if kind not in KINDS:
        raise ValueError(f"unknown registry {kind!r}; expected one of {', '.join(KINDS)}")
    with _lock:
        state = _get_state()
        if kind in state.registries:
            return state.registries[kind]
        registry: dict[str, tuple[Any, str]] = {}
        refused = state.refused.setdefault(kind, {})
        hook = getattr(state.manager.hook, f"shardline_register_{kind}")
        # load order (built-ins first), not pluggy's call order, which tryfirst/trylast can change
        impls = sorted(hook.get_hookimpls(), key=lambda impl: state.rank(impl.plugin_name))
        for impl in impls:
            owner = impl.plugin_name
            who = _describe(owner, _dist_of(state, owner))

            def register(name: str, value: Any, _who: str = who, _owner: str = owner) -> None:
                problem = _check_value(kind, name, value)
                if problem is not None:
                    message = f"{_who} {problem}; not registered"
                    state.broken.setdefault(_owner, []).append(message)
                    if isinstance(name, str) and name not in registry:
                        refused.setdefault(name, message)
                elif name in registry:
                    message = _clash(state, kind, name, _who, registry[name][1])
                    state.problems.setdefault(_owner, []).append(message)
                else:
                    registry[name] = (value, _owner)
                    refused.pop(name, None)

            try:
                impl.function(register)
            except Exception as exc:
                message = f"{who} failed in shardline_register_{kind}: {type(exc).__name__}: {exc}"
                state.broken.setdefault(owner, []).append(message)
        state.registries[kind] = registry
        return registry


def _clash(state: _State, kind: str, name: str, who: str, first: str) -> str:
    """The message for a second registration of ``name``, naming both plugins."""
    first_info = next((i for i in state.infos if i.name == first), None)
    first_who = _describe(first, first_info.distribution if first_info else None)
    if first_info is not None and first_info.builtin:
        return (
            f"{who} registered {kind[:-1]} {name!r}, which the built-in {first_who} provides; refused "
            f"(built-ins are never replaced: register it under another name)"
        )
    return (
        f"{who} registered {kind[:-1]} {name!r}, already registered by {first_who}; "
        f"kept the one from {first!r}"
    )


def _build_all() -> _State:
    for kind in KINDS:
        _registry(kind)
    return _get_state()


def registry_errors() -> list[str]:
    """Every problem found while loading plugins and building the registries, one message each.

    Each message names the plugin responsible. Plugins that failed to load are included.
    """
    state = _build_all()
    errors = []
    for info in state.infos:
        if info.error:
            errors.append(f"{_describe(info.name, info.distribution)}: {info.error}")
        errors.extend(state.load_problems.get(info.name, ()))
        errors.extend(state.broken.get(info.name, ()))
        errors.extend(state.problems.get(info.name, ()))
    return errors


def list_plugins() -> list[PluginInfo]:
    """Return every plugin found, loaded or broken, in load order, with its refused registrations."""
    state = _build_all()
    return [
        replace(
            i,
            problems=(*state.load_problems.get(i.name, ()), *state.problems.get(i.name, ())),
            broken=tuple(state.broken.get(i.name, ())) if i.error is None else (),
        )
        for i in state.infos
    ]


def registered(kind: str) -> dict[str, Any]:
    """Return the registry ``kind`` (one of :data:`KINDS`) as name -> object."""
    return {name: value for name, (value, _owner) in _registry(kind).items()}


def registered_with_owner(kind: str) -> dict[str, tuple[Any, str]]:
    """Like :func:`registered`, with the name of the plugin that registered each entry."""
    return dict(_registry(kind))


# Which distribution provides the names a user is most likely to ask for, so that a message about a
# missing one can say what to install.
_PROVIDED_BY: dict[tuple[str, str], str] = {
    ("transports", "http"): "shardline-v3io",
    ("transports", "https"): "shardline-v3io",
    ("transports", "v3io"): "shardline-v3io",  # protocol-neutral: a URL scheme's install hint
    ("transports", "local"): "shardline-v3io",
    ("sources", "parquet"): "shardline-parquet",
    ("sources", "kafka"): "shardline-kafka",
}


def install_hint(kind: str, name: str) -> str:
    """What to install to get the ``kind`` called ``name``: ``"pip install shardline-v3io"`` for a
    well-known one, else a generic sentence."""
    dist = _PROVIDED_BY.get((kind, name.lower()))
    if dist is None:
        return "install the plugin that provides it and check `shardline plugins`"
    return f"it comes with the {dist} package: pip install {dist}"


def lookup(kind: str, name: str) -> Any:
    """Return the registered ``kind`` called ``name``; raise a :class:`PluginError` listing the choices.

    When some plugin failed to load, the message names it: it may be the one that provides ``name``.
    """
    registry = _registry(kind)
    if name not in registry:
        known = ", ".join(sorted(registry)) or "none"
        why = _get_state().refused.get(kind, {}).get(name)
        if why is not None:
            raise PluginError(f"no {kind[:-1]} named {name!r} is registered: {why} (see `shardline plugins`)")
        message = f"no {kind[:-1]} named {name!r} is registered (known: {known}); {install_hint(kind, name)}"
        broken = [i for i in _get_state().infos if i.error]
        if broken:
            message += "; broken plugins: " + ", ".join(f"{i.name!r} ({i.error})" for i in broken)
        raise PluginError(message)
    return registry[name][0]


def register_commands(cli: Any) -> list[str]:
    """Let every plugin add its commands to ``cli``; a plugin whose hook raises is skipped.

    Returns the error messages (each naming the plugin) of the plugins that failed.
    """
    state = _get_state()
    errors = []
    builtin_commands: dict[str, Any] = {}  # name -> command, as the built-ins added them
    impls = state.manager.hook.shardline_register_commands.get_hookimpls()
    for impl in sorted(impls, key=lambda impl: state.rank(impl.plugin_name)):
        who = _describe(impl.plugin_name, _dist_of(state, impl.plugin_name))
        info = next((i for i in state.infos if i.name == impl.plugin_name), None)
        builtin = info is not None and info.builtin
        try:
            impl.function(cli)
        except Exception as exc:
            errors.append(f"{who} failed in shardline_register_commands: {type(exc).__name__}: {exc}")
        commands: dict[str, Any] = getattr(cli, "commands", {})
        for name, command in builtin_commands.items():  # a plugin may not replace a built-in command
            if commands.get(name) is not command:
                commands[name] = command
                errors.append(f"{who} replaced the built-in command {name!r}; refused (kept the built-in)")
        if builtin:
            builtin_commands.update(commands)
    return errors


def call_observers(hook_name: str, **kwargs: Any) -> None:
    """Call an observer hook (``shardline_on_*``) on every plugin that implements it.

    Each implementation gets the arguments it declares; one that raises is skipped and does not
    keep the others from being called: observers must never break delivery.
    """
    state = _get_state()
    impls = state.observers.get(hook_name)
    if impls is None:
        with _lock:
            impls = list(getattr(state.manager.hook, hook_name).get_hookimpls())
            state.observers[hook_name] = impls
    for impl in impls:
        with contextlib.suppress(Exception):  # observers must never break delivery
            impl.function(**{arg: kwargs[arg] for arg in impl.argnames if arg in kwargs})
