"""The codecs on the oldest pyarrow the packages allow (core/pyproject.toml's lower bound).

pyarrow 16 is the floor: 15 has no ``pa.record_batch(dict)``, no view types, no float16 cast and
no numpy 2 support. This test installs the floor into a fresh venv (``uv venv`` + ``uv pip``) and
runs the type tests there, without pandas.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
TESTS = ["tests/core/test_json_types.py", "tests/core/test_records.py"]


def _pyarrow_floor() -> str:
    deps = tomllib.loads((ROOT / "core" / "pyproject.toml").read_text())["project"]["dependencies"]
    spec = next(d for d in deps if re.match(r"pyarrow\b", d))
    found = re.search(r">=\s*([0-9][0-9.]*)", spec)
    assert found, f"core/pyproject.toml has no pyarrow lower bound: {spec!r}"
    floor = found.group(1)
    return floor if floor.count(".") == 2 else f"{floor.split('.')[0]}.0.0"


def _uv() -> list[str]:
    exe = shutil.which("uv")
    if exe:
        return [exe]
    probe = subprocess.run([sys.executable, "-m", "uv", "--version"], capture_output=True, timeout=30)
    if probe.returncode:
        pytest.skip("uv is not installed")
    return [sys.executable, "-m", "uv"]


@pytest.mark.slow
def test_codecs_pass_their_type_tests_on_the_oldest_allowed_pyarrow(tmp_path: Path) -> None:
    floor = _pyarrow_floor()
    venv = tmp_path / "venv"
    py = venv / "bin" / "python"
    uv = _uv()
    subprocess.run([*uv, "venv", "-q", "-p", sys.executable, str(venv)], check=True, timeout=120)
    subprocess.run(
        [*uv, "pip", "install", "-q", "--python", str(py), f"pyarrow=={floor}", "pytest", str(ROOT / "core")],
        check=True,
        timeout=600,
    )
    version = subprocess.run(
        [str(py), "-c", "import pyarrow; print(pyarrow.__version__)"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    assert version == floor
    (tmp_path / "pytest.ini").write_text("[pytest]\n")  # not the workspace's (its plugins are absent)
    args = ["-q", "-p", "no:cacheprovider", "-p", "no:shardline", "--rootdir", str(tmp_path)]
    run = subprocess.run(
        [str(py), "-m", "pytest", *args, "-c", str(tmp_path / "pytest.ini"), *[str(ROOT / t) for t in TESTS]],
        capture_output=True,
        text=True,
        timeout=600,
        cwd=tmp_path,
    )
    assert run.returncode == 0, run.stdout[-4000:] + run.stderr[-2000:]
    assert re.search(r"\d+ passed", run.stdout)
