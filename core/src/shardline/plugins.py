"""The plugin manager: loads entry points of the group ``shardline`` and builds the registries.

This module holds the only global state of shardline: one lazily created
:class:`pluggy.PluginManager`. A plugin that fails to import or registers something invalid is
recorded in :func:`plugin_errors` (and named in the error) without stopping the others from loading.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass, field
from importlib import metadata
from typing import Any

import pluggy

from shardline import hookspecs
from shardline.errors import PluginError

ENTRY_POINT_GROUP = "shardline"
_BUILTIN_MODULES = ("shardline.builtins",)


@dataclass(frozen=True)
class PluginInfo:
    """One loaded (or broken) plugin, as ``shardline plugins`` lists it."""

    name: str
    module: str
    distribution: str | None
    error: str | None = None


@dataclass
class _State:
    manager: pluggy.PluginManager
    infos: list[PluginInfo] = field(default_factory=list)
    registries: dict[str, dict[str, tuple[Any, str]]] = field(default_factory=dict)
    registry_errors: list[str] = field(default_factory=list)


_state: _State | None = None


def _load() -> _State:
    manager = pluggy.PluginManager(hookspecs.PROJECT)
    manager.add_hookspecs(hookspecs)
    state = _State(manager)
    for module_name in _BUILTIN_MODULES:
        module = importlib.import_module(module_name)
        manager.register(module, name=module_name)
        state.infos.append(PluginInfo(module_name, module_name, "shardline"))
    for ep in metadata.entry_points(group=ENTRY_POINT_GROUP):
        dist = ep.dist.name if ep.dist is not None else None
        if manager.has_plugin(ep.name):
            state.infos.append(PluginInfo(ep.name, ep.value, dist, f"duplicate plugin name {ep.name!r}"))
            continue
        try:
            plugin = ep.load()
            manager.register(plugin, name=ep.name)
        except Exception as exc:  # a broken third-party plugin must not take the others down
            state.infos.append(PluginInfo(ep.name, ep.value, dist, f"{type(exc).__name__}: {exc}"))
            continue
        state.infos.append(PluginInfo(ep.name, ep.value, dist))
    return state


def get_plugin_manager() -> pluggy.PluginManager:
    """Return the process-wide plugin manager, loading built-ins and entry points on first use."""
    global _state
    if _state is None:
        _state = _load()
    return _state.manager


def reset_plugins() -> None:
    """Forget loaded plugins so the next call reloads entry points (for tests and plugin authors)."""
    global _state
    _state = None


def list_plugins() -> list[PluginInfo]:
    """Return every plugin found, loaded or broken, in load order."""
    get_plugin_manager()
    assert _state is not None
    return list(_state.infos)


def _registry(kind: str) -> dict[str, tuple[Any, str]]:
    get_plugin_manager()
    assert _state is not None
    if kind in _state.registries:
        return _state.registries[kind]
    registry: dict[str, tuple[Any, str]] = {}
    hook = getattr(_state.manager.hook, f"shardline_register_{kind}")
    for impl in reversed(hook.get_hookimpls()):  # load order, built-ins first
        owner = impl.plugin_name

        def register(name: str, value: Any, _owner: str = owner) -> None:
            if not isinstance(name, str) or not name:
                raise PluginError(f"plugin {_owner!r} registered a {kind[:-1]} with an invalid name {name!r}")
            if name in registry:
                raise PluginError(
                    f"plugin {_owner!r} registered {kind[:-1]} {name!r}, "
                    f"already registered by plugin {registry[name][1]!r}"
                )
            registry[name] = (value, _owner)

        try:
            impl.function(register)
        except PluginError as exc:
            _state.registry_errors.append(str(exc))
        except Exception as exc:
            _state.registry_errors.append(f"plugin {owner!r} failed in shardline_register_{kind}: {exc}")
    _state.registries[kind] = registry
    return registry


def registry_errors() -> list[str]:
    """Errors raised while plugins registered things (duplicates, bad names, exceptions)."""
    for kind in ("sources", "transports", "codecs", "partitioners"):
        _registry(kind)
    assert _state is not None
    return list(_state.registry_errors)


def registered(kind: str) -> dict[str, Any]:
    """Return the registry ``kind`` (``sources``, ``transports``, ``codecs``, ``partitioners``) as name -> object."""
    return {name: value for name, (value, _owner) in _registry(kind).items()}


def registered_with_owner(kind: str) -> dict[str, tuple[Any, str]]:
    """Like :func:`registered`, with the name of the plugin that registered each entry."""
    return dict(_registry(kind))


def lookup(kind: str, name: str) -> Any:
    """Return the registered ``kind`` object called ``name`` or raise a :class:`PluginError` listing the choices."""
    registry = _registry(kind)
    if name not in registry:
        known = ", ".join(sorted(registry)) or "none"
        raise PluginError(
            f"no {kind[:-1]} named {name!r} is registered (known: {known}); "
            f"install the plugin that provides it and check `shardline plugins`"
        )
    return registry[name][0]


def call_observers(hook_name: str, **kwargs: Any) -> None:
    """Call an observer hook (``shardline_on_*``); an observer that raises is ignored, not fatal."""
    hook: Callable[..., Any] = getattr(get_plugin_manager().hook, hook_name)
    try:
        hook(**kwargs)
    except Exception:  # observers must never break delivery
        pass
