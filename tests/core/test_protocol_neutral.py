"""Core names no stream protocol's fields, limits or errors: those belong to the transports' wires.

The rule: every *code* token of ``core/src/shardline/*.py`` (names, and string literals that are
not docstrings) is checked; comments and docstrings are not (they may mention v3io or Kinesis as
examples). ``v3io`` is allowed only as a distribution name (``shardline-v3io``, in install hints)
or a URL scheme in an example (``v3io:///CONTAINER/STREAM``): those name a product to install or
type, not a protocol detail. Anything else may opt out, one line at a time, with a
``# protocol-neutral: <why>`` comment, so the reason is on the line for a reviewer to judge.
"""

from __future__ import annotations

import ast
import io
import re
import tokenize
from pathlib import Path

CORE = Path(__file__).resolve().parents[2] / "core" / "src" / "shardline"

FORBIDDEN = [
    ("ShardId", re.compile(r"ShardId")),
    ("ClientInfo", re.compile(r"ClientInfo")),
    ("ShardIDOutOfRange", re.compile(r"ShardIDOutOfRange", re.IGNORECASE)),
    ("ResourceIsnotStream", re.compile(r"ResourceIsnotStream", re.IGNORECASE)),
    ("InvalidArgumentException", re.compile(r"InvalidArgumentException")),
    ('"Records"', re.compile(r"""["']Records["']""")),
    ("10 * 2**20", re.compile(r"10\s*\*\s*2\s*\*\*\s*20")),
    ("MAX_PARTITION_KEY_BYTES", re.compile(r"MAX_PARTITION_KEY_BYTES")),
    ("MAX_CLIENT_INFO_BYTES", re.compile(r"MAX_CLIENT_INFO_BYTES")),
    ("v3io", re.compile(r"(?<!shardline-)v3io(?!:/)", re.IGNORECASE)),  # a package or URL example is fine
    ("ExplicitHashKey", re.compile(r"ExplicitHashKey")),
    ("ProvisionedThroughputExceeded", re.compile(r"ProvisionedThroughputExceeded")),
]
OPT_OUT = "# protocol-neutral:"


def _docstring_lines(tree: ast.AST) -> set[int]:
    """Lines of the module, class and function docstrings (and of attribute docstrings: a bare
    string statement)."""
    lines: set[int] = set()
    for node in ast.walk(tree):
        body = getattr(node, "body", None)
        if not isinstance(body, list):
            continue
        for stmt in body:
            if (
                isinstance(stmt, ast.Expr)
                and isinstance(stmt.value, ast.Constant)
                and isinstance(stmt.value.value, str)
            ):
                lines.update(range(stmt.lineno, (stmt.end_lineno or stmt.lineno) + 1))
    return lines


def offending_lines(path: Path, root: Path = CORE.parents[2]) -> list[str]:
    """``file:line: name`` (relative to ``root``) for every forbidden name in a code token of ``path``."""
    text = path.read_text(encoding="utf-8")
    docstrings = _docstring_lines(ast.parse(text))
    source_lines = text.splitlines()
    found: list[str] = []
    for tok in tokenize.generate_tokens(io.StringIO(text).readline):
        if tok.type not in (tokenize.NAME, tokenize.STRING):
            continue
        line = tok.start[0]
        if tok.type == tokenize.STRING and line in docstrings:
            continue
        if OPT_OUT in source_lines[line - 1]:
            continue
        for name, pattern in FORBIDDEN:
            if pattern.search(tok.string):
                found.append(f"{path.relative_to(root)}:{line}: {name} ({tok.string[:60]!r})")
    # numeric expressions span tokens: check each code line without its comment and strings
    for number, raw in enumerate(source_lines, start=1):
        code = raw.split("#", 1)[0]
        if number not in docstrings and OPT_OUT not in raw and FORBIDDEN[6][1].search(code):
            found.append(f"{path.relative_to(root)}:{number}: 10 * 2**20")
    return sorted(set(found))


def test_core_names_no_protocol_field_limit_or_error() -> None:
    files = sorted(CORE.glob("*.py"))
    assert len(files) > 10, f"no core modules under {CORE}"
    found = [hit for path in files for hit in offending_lines(path)]
    assert found == [], "protocol names in core (move them to the transport's wire):\n" + "\n".join(found)


def test_the_check_finds_what_it_looks_for(tmp_path: Path) -> None:
    planted = tmp_path / "planted.py"
    planted.write_text(
        '"""Docstrings may say ShardId and v3io."""\n'
        "# comments may say ClientInfo\n"
        'FIELD = "ShardId"\n'
        "LIMIT = 10 * 2**20\n"
        'ok = ("v3io", "shardline-v3io", "v3io:///c/s")  # protocol-neutral: an install hint\n'
        "def f():\n"
        '    """ClientInfo in a docstring is fine."""\n'
        '    return {"Records": [], "why": f"no v3io here"}\n',
        encoding="utf-8",
    )
    hits = offending_lines(planted, tmp_path)
    assert [h.split(" (")[0] for h in hits] == [
        "planted.py:3: ShardId",
        "planted.py:4: 10 * 2**20",
        'planted.py:8: "Records"',
        "planted.py:8: v3io",
    ]
