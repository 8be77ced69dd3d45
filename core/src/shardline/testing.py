"""Test kit for plugin authors (a pytest plugin, loaded automatically): fixtures and a fake transport."""

from __future__ import annotations
