"""The path runs one way: the engine imports nothing else of chatcli but the core types, and `--help` does not import
torch."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

ENGINE = Path(__file__).resolve().parent.parent / "chatcli" / "engine"


def imported_modules(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
        elif isinstance(node, ast.ImportFrom) and node.level:
            names.add("." * node.level + (node.module or ""))
    return names


ALLOWED = ("chatcli.engine", "chatcli.types")  # chatcli.types is a leaf: the vocabulary the engine shares


def test_engine_imports_nothing_else_from_chatcli():
    offenders = []
    for file in ENGINE.rglob("*.py"):
        for name in imported_modules(file):
            if (name.startswith("chatcli") and not name.startswith(ALLOWED)) or name.startswith(".."):
                offenders.append(f"{file.relative_to(ENGINE.parent)}: {name}")
    assert not offenders, offenders


def test_engine_imports_cleanly_alone():
    code = "import sys, chatcli.engine.generate, chatcli.engine.loader; print(sorted(m for m in sys.modules if m.startswith('chatcli') and not m.startswith('chatcli.engine')))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "['chatcli', 'chatcli.types']"


def test_the_core_types_are_a_leaf():
    assert not [n for n in imported_modules(ENGINE.parent / "types.py") if n.startswith("chatcli") or n.startswith(".")]


def test_help_does_not_import_torch():
    code = (
        "import sys\nsys.argv=['chatcli','--help']\nfrom chatcli.cli import main\n"
        "try:\n    main()\nexcept SystemExit:\n    pass\nprint('TORCH' if 'torch' in sys.modules else 'NOTORCH')"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip().endswith("NOTORCH")
