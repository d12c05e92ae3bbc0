"""Package-wide rules: import layering, no global RNG, cheap side-effect-free import."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import neurodecode

PKG = Path(neurodecode.__file__).parent

# Lower rank = lower layer. A module may import (at module level) only same-or-lower ranks.
ORDER = ["_compat", "utils", "config", "io", "preprocessing", "datasets", "embeddings", "models",
         "training", "tasks", "analysis", "reports", "workflow", "cli"]


def _layer(module_path: Path) -> str:
    rel = module_path.relative_to(PKG).with_suffix("")
    top = rel.parts[0]
    return "__init__" if top == "__init__" else top


def _module_level_imports(tree: ast.AST):
    """Imports not nested in a function (those are allowed anywhere)."""
    for node in tree.body:  # type: ignore[attr-defined]
        yield from _walk_top(node)


def _walk_top(node):
    if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
        return
    if isinstance(node, (ast.Import, ast.ImportFrom)):
        yield node
    for child in ast.iter_child_nodes(node):
        if isinstance(child, ast.ClassDef):
            for sub in child.body:
                yield from _walk_top(sub)
        elif not isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef)):
            yield from _walk_top(child)


def _target_layer(node: ast.ImportFrom | ast.Import, module_path: Path) -> list[str]:
    out = []
    if isinstance(node, ast.ImportFrom):
        if node.level == 0:
            if node.module and node.module.startswith("neurodecode."):
                out.append(node.module.split(".")[1])
            return out
        rel = module_path.relative_to(PKG).parent.parts
        base = list(rel[: len(rel) - (node.level - 1)]) if node.level > 1 else list(rel)
        parts = base + (node.module.split(".") if node.module else [])
        if parts:
            out.append(parts[0])
        else:  # "from .. import x" at the package root
            out.extend(a.name for a in node.names)
    else:
        for a in node.names:
            if a.name.startswith("neurodecode."):
                out.append(a.name.split(".")[1])
    return out


def test_import_layering():
    errors = []
    for path in PKG.rglob("*.py"):
        layer = _layer(path)
        if layer not in ORDER:
            continue
        tree = ast.parse(path.read_text())
        for node in _module_level_imports(tree):
            for target in _target_layer(node, path):
                if target in ORDER and ORDER.index(target) > ORDER.index(layer):
                    errors.append(f"{path.relative_to(PKG)}:{node.lineno} ({layer}) imports {target}")
    assert not errors, "imports must point down the layers:\n" + "\n".join(errors)


def test_every_subpackage_is_layered():
    tops = {p.name for p in PKG.iterdir() if p.is_dir() and (p / "__init__.py").exists()}
    tops |= {p.stem for p in PKG.glob("*.py") if p.stem != "__init__"}
    missing = tops - set(ORDER) - {"__pycache__"}
    assert not missing, f"add {sorted(missing)} to ORDER in this test"


def test_no_global_rng():
    """Library code draws randomness only from a Generator it was given (MNE's rule)."""
    banned = ("np.random.seed", "np.random.rand(", "np.random.randn(", "np.random.randint(",
              "np.random.choice(", "np.random.permutation(", "np.random.shuffle(", "np.random.normal(",
              "np.random.uniform(", "torch.manual_seed(", "random.seed(", "random.random(")
    hits = []
    for path in PKG.rglob("*.py"):
        for i, line in enumerate(path.read_text().splitlines(), 1):
            code = line.split("#", 1)[0]
            if any(b in code for b in banned):
                hits.append(f"{path.relative_to(PKG)}:{i}: {line.strip()}")
    assert not hits, "global RNG use in library code:\n" + "\n".join(hits)


def test_no_print_or_assert_in_library():
    """Library code logs (no print) and never asserts on user input."""
    hits = []
    for path in PKG.rglob("*.py"):
        if path.name == "cli.py" or "benchmarks" in path.parts:
            continue
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.Call) and getattr(node.func, "id", None) == "print":
                hits.append(f"{path.relative_to(PKG)}:{node.lineno} print()")
            if isinstance(node, ast.Assert):
                hits.append(f"{path.relative_to(PKG)}:{node.lineno} assert")
    assert not hits, "\n".join(hits)


def test_import_is_cheap_and_side_effect_free(tmp_path):
    code = ("import sys, os; before=set(os.listdir('.')); import neurodecode; "
            "heavy=[m for m in ('torch','matplotlib','nilearn','h5py','open_clip') if m in sys.modules]; "
            "assert not heavy, heavy; assert set(os.listdir('.'))==before")
    subprocess.run([sys.executable, "-c", code], check=True, cwd=tmp_path)
