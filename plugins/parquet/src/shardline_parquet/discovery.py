"""Which files a ``path`` names, and the partition values their directories hold.

One rule for directories and globs (the one Spark, Hive and pyarrow.dataset follow): below the
part of the path you wrote, a file or directory whose name starts with ``.`` or ``_`` is not data
and is skipped (``_SUCCESS``, ``_temporary/`` attempt files, ``_delta_log/``, ``_metadata``,
``.part-0.crc``), and so is a file whose name ends in ``._COPYING_`` (a copy in progress). A
directory named ``_key=value`` is a hive partition and is kept. Names you write yourself are
never skipped: ``path = "out/_temporary/0/*.parquet"`` reads those files.

Partitioning (``partitioning`` option):

- ``"hive"`` (default): every ``key=value`` directory between the root and the file gives the
  column ``key`` (values are URI-decoded, as pyarrow and Spark write them;
  ``__HIVE_DEFAULT_PARTITION__`` is null). Other directories are ignored.
- ``"none"``: directories give no columns.
- a list of names, e.g. ``["year", "month"]``: the first directories below the root are the
  values of those columns, in that order (``events/2024/01/part-0.parquet``).

The root is the directory you named, or for a glob the directory before its first wildcard; a
single file has no partition columns. A glob that matches a directory (Spark writes
``events.parquet/`` folders) reads the data files in it, by the same rule.
"""

from __future__ import annotations

import glob
import os
import stat
import urllib.parse
from collections.abc import Sequence
from dataclasses import dataclass, field

from shardline import ConfigError

HIVE_NULL = "__HIVE_DEFAULT_PARTITION__"
_GLOB_CHARS = frozenset("*?[")

Partitioning = str | list[str]
"""``"hive"``, ``"none"`` or a list of column names (directory partitioning)."""


@dataclass(frozen=True, slots=True)
class DataFile:
    """One file to read: its absolute ``path``, the ``relative`` path below its root (POSIX
    separators; the file name for a single file) and the raw partition values of its directories
    (``None`` for a hive null)."""

    path: str
    relative: str
    partition: dict[str, str | None] = field(default_factory=dict)


def is_hidden(name: str, *, directory: bool) -> bool:
    """True for a name that is not data: ``.x``, ``_x`` (not a ``_key=value`` directory), ``x._COPYING_``."""
    if name.startswith("."):
        return True
    if name.startswith("_"):
        return not (directory and "=" in name)
    return not directory and name.endswith("._COPYING_")


def discover(path: str | Sequence[str], partitioning: Partitioning = "hive") -> list[DataFile]:
    """The data files ``path`` names (a file, directory, glob or a list of them), sorted by path.

    Raises :class:`~shardline.ConfigError` for a path that does not exist, a glob that matches no
    file, a directory without data files, or a file deeper or shallower than a directory
    partitioning says.
    """
    found: dict[str, DataFile] = {}
    for entry in [path] if isinstance(path, str) else list(path):
        for data_file in _entry(entry, partitioning):
            found.setdefault(data_file.path, data_file)
    return [found[p] for p in sorted(found)]


def _entry(entry: str, partitioning: Partitioning) -> list[DataFile]:
    expanded = os.path.expanduser(entry)
    if _GLOB_CHARS & set(expanded):
        root = _glob_root(expanded)
        matches = []
        for match in glob.glob(expanded, recursive=True):
            if os.path.isdir(match):  # e.g. Spark's events.parquet/ folder: its data files
                if not _hidden_below(root, os.path.join(match, "x")):
                    matches.extend(_walk(os.path.abspath(match)))
            elif os.path.isfile(match) and not _hidden_below(root, match):
                matches.append(os.path.abspath(match))
        if not matches:
            raise ConfigError(
                f"source.path: {entry!r} matches no files (names starting with '.' or '_' are skipped)"
            )
        return [_data_file(m, root, partitioning) for m in matches]
    try:
        mode = os.stat(expanded).st_mode
    except FileNotFoundError:
        raise ConfigError(f"source.path: no such file or directory: {entry!r}") from None
    except OSError as exc:
        raise ConfigError(f"source.path: cannot open {entry!r}: {exc.strerror}") from None
    if stat.S_ISDIR(mode):
        root = os.path.abspath(expanded)
        files = _walk(root)
        if not files:
            raise ConfigError(
                f"source.path: directory {entry!r} holds no data files "
                "(names starting with '.' or '_' are skipped)"
            )
        return [_data_file(f, root, partitioning) for f in files]
    absolute = os.path.abspath(expanded)
    return [DataFile(absolute, os.path.basename(absolute))]


def _walk(root: str) -> list[str]:
    files: list[str] = []
    for directory, dirnames, filenames in os.walk(root, onerror=_walk_error):
        dirnames[:] = sorted(d for d in dirnames if not is_hidden(d, directory=True))
        files.extend(os.path.join(directory, f) for f in filenames if not is_hidden(f, directory=False))
    return files


def _walk_error(exc: OSError) -> None:
    raise ConfigError(f"source.path: cannot list {exc.filename!r}: {exc.strerror}") from None


def _glob_root(pattern: str) -> str:
    """The directory before the first component with a wildcard."""
    parts = pattern.replace(os.sep, "/").split("/")
    fixed: list[str] = []
    for part in parts[:-1]:
        if _GLOB_CHARS & set(part):
            break
        fixed.append(part)
    root = "/".join(fixed) if fixed else "."
    if pattern.startswith("/") and not root.startswith("/"):
        root = "/" + root
    return os.path.abspath(root or "/")


def _hidden_below(root: str, match: str) -> bool:
    relative = os.path.relpath(os.path.abspath(match), root).replace(os.sep, "/").split("/")
    dirs, name = relative[:-1], relative[-1]
    return any(is_hidden(d, directory=True) for d in dirs if d != "..") or is_hidden(name, directory=False)


def _data_file(path: str, root: str, partitioning: Partitioning) -> DataFile:
    relative = os.path.relpath(path, root).replace(os.sep, "/")
    dirs = relative.split("/")[:-1]
    if relative.startswith("../"):  # a glob like "a/../b/*" whose matches sit beside the root
        dirs = []
    return DataFile(path, relative, _partition_values(dirs, partitioning, path))


def _partition_values(dirs: list[str], partitioning: Partitioning, path: str) -> dict[str, str | None]:
    if partitioning == "none":
        return {}
    if partitioning == "hive":
        values: dict[str, str | None] = {}
        for part in dirs:
            key, sep, value = part.partition("=")
            if sep and key:
                decoded = urllib.parse.unquote(value)
                values[urllib.parse.unquote(key)] = None if decoded == HIVE_NULL else decoded
        return values
    names = list(partitioning)
    if len(dirs) < len(names):
        raise ConfigError(
            f"source.partitioning: {path} is {len(dirs)} directories below its root, but the partitioning "
            f"names {len(names)} ({', '.join(names)}); fix source.partitioning or source.path"
        )
    return {name: urllib.parse.unquote(value) for name, value in zip(names, dirs, strict=False)}
