"""Row filters of the Parquet source: the expression language of :mod:`shardline.expressions`.

The language moved to the core (the ``filter`` step of ``[[transform]]`` uses it too); these names
stay for code that imported them from here.
"""

from __future__ import annotations

from shardline import FilterSyntaxError, compile_filter, filter_columns

__all__ = ["FilterSyntaxError", "compile_filter", "filter_columns"]
