"""Plugins use only shardline's public names (``shardline.__all__``), as a third party must.

Every ``from shardline... import name`` in the distributions under ``connectors/`` and ``plugins/``
(their own modules aside) must name something ``shardline`` exports, and be that very object, so a
refactoring of core's modules cannot break a plugin that follows the public API.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
import shardline

ROOT = Path(__file__).resolve().parents[2]
SOURCES = sorted(p for d in ("connectors", "plugins") for p in (ROOT / d).glob("*/src/**/*.py"))


def _imports(path: Path) -> list[tuple[str, str, int]]:
    """(module, name, line) of every use of a shardline core name in a file."""
    out = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            if node.module == "shardline" or node.module.startswith("shardline."):
                out.extend((node.module, alias.name, node.lineno) for alias in node.names)
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.startswith("shardline."):
                    out.append((alias.name, "", node.lineno))
        elif (
            isinstance(node, ast.Attribute)
            and isinstance(node.value, ast.Name)
            and node.value.id == "shardline"
        ):
            out.append(("shardline", node.attr, node.lineno))  # ``import shardline``; shardline.name
    return out


def test_the_plugin_sources_are_found() -> None:
    assert len(SOURCES) > 20
    assert any("shardline_kinesis" in str(p) for p in SOURCES)


@pytest.mark.parametrize("path", SOURCES, ids=lambda p: str(p.relative_to(ROOT)))
def test_a_plugin_imports_only_exported_names(path: Path) -> None:
    exported = set(shardline.__all__)
    wrong = []
    for module, name, line in _imports(path):
        if module != "shardline":
            wrong.append(f"line {line}: {name or module} comes from {module}, not from shardline")
        elif name not in exported:
            wrong.append(f"line {line}: {name} is not in shardline.__all__")
    assert not wrong, "\n".join(wrong)


def test_every_exported_name_resolves() -> None:
    for name in shardline.__all__:
        assert getattr(shardline, name) is not None, name
