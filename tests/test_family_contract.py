"""The model contract (engine/models/base.py): each family is one module, and the generic engine code asks the
family, never which family it holds."""

from __future__ import annotations

import ast
import importlib
from pathlib import Path

import pytest

from chatcli.engine.models import ARCHITECTURES
from chatcli.engine.models.base import FamilyModel

ROOT = Path(__file__).resolve().parent.parent / "chatcli"
GENERIC = ["engine/loader.py", "engine/generate.py", "engine/compile.py", "engine/introspect", "backends/local.py"]


def family_words() -> set[str]:
    """Every name a family goes by: its model_type, its module, and the classes its module defines."""
    words = set(ARCHITECTURES) | set(ARCHITECTURES.values())
    for module in set(ARCHITECTURES.values()):
        mod = importlib.import_module(f"chatcli.engine.models.{module}")
        words |= {n for n, v in vars(mod).items() if isinstance(v, type) and v.__module__ == mod.__name__}
    return {w.lower() for w in words} - {"model", "attention", "mlp", "block", "backbone"}


def code_words(path: Path) -> set[str]:
    """Identifiers, attribute names, imported modules and string constants of PATH, docstrings and comments left out
    (prose may name the families it was measured on; code may not depend on them)."""
    tree = ast.parse(path.read_text())
    docstrings = {id(n.body[0].value) for n in ast.walk(tree)
                  if isinstance(n, (ast.Module, ast.FunctionDef, ast.ClassDef, ast.AsyncFunctionDef)) and n.body
                  and isinstance(n.body[0], ast.Expr) and isinstance(n.body[0].value, ast.Constant)}
    out: set[str] = set()
    for n in ast.walk(tree):
        if isinstance(n, ast.Name):
            out.add(n.id)
        elif isinstance(n, ast.Attribute):
            out.add(n.attr)
        elif isinstance(n, (ast.Import, ast.ImportFrom)):
            out |= {part for a in n.names for part in a.name.split(".")}
            out |= set((getattr(n, "module", None) or "").split("."))
        elif isinstance(n, ast.Constant) and isinstance(n.value, str) and id(n) not in docstrings:
            out |= set(n.value.replace(".", " ").replace("_", " ").split()) | {n.value}
    return {w.lower() for w in out}


def generic_files() -> list[Path]:
    out = []
    for g in GENERIC:
        p = ROOT / g
        out += sorted(p.glob("*.py")) if p.is_dir() else [p]
    return out


@pytest.mark.parametrize("path", generic_files(), ids=lambda p: str(p.relative_to(ROOT)))
def test_generic_code_names_no_family(path):
    named = code_words(path) & family_words()
    assert not named, f"{path.relative_to(ROOT)} names {sorted(named)}: ask the family (engine/models/base.py) instead"


@pytest.mark.parametrize("module", sorted(set(ARCHITECTURES.values())))
def test_each_family_is_one_module_with_a_contract_model(module):
    mod = importlib.import_module(f"chatcli.engine.models.{module}")
    assert issubclass(mod.Model, FamilyModel)
    for name in ("setup_cache", "forward", "unembed", "prepare", "tie_weights", "attention_probs", "exportable"):
        assert callable(getattr(mod.Model, name, None)), f"{module}.Model lacks {name}"
