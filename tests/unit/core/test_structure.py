"""Package-wide rules: import layering, no global RNG, cheap side-effect-free import."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import neurodecode

PKG = Path(neurodecode.__file__).parent
ARCHITECTURE = Path(__file__).resolve().parents[3] / "docs" / "architecture.md"


def _documented_layers() -> list[str]:
    """The layer list of docs/architecture.md (the block after the ``layers:`` marker)."""
    text = ARCHITECTURE.read_text()
    block = text.split("<!-- layers:", 1)[1].split("```", 2)[1]
    return [name.strip() for name in block.split("→")]


# Lower rank = lower layer. A module may import only same-or-lower ranks, anywhere in its code.
ORDER = _documented_layers()


def _targets(node: ast.ImportFrom | ast.Import, module_path: Path, root: Path) -> list[tuple[list[str], list[str]]]:
    """``(module parts below neurodecode, imported names)`` of one import statement."""
    if isinstance(node, ast.Import):
        return [(a.name.split(".")[1:], []) for a in node.names
                if a.name == "neurodecode" or a.name.startswith("neurodecode.")]
    names = [a.name for a in node.names]
    if node.level == 0:
        if node.module == "neurodecode" or (node.module or "").startswith("neurodecode."):
            return [(node.module.split(".")[1:], names)]
        return []
    rel = list(module_path.relative_to(root).parent.parts)
    if node.level - 1 > len(rel):
        raise AssertionError(f"{module_path}:{node.lineno} imports above the package")
    base = rel[: len(rel) - (node.level - 1)]
    return [(base + (node.module.split(".") if node.module else []), names)]


def _imports(path: Path, root: Path):
    """Every neurodecode import in ``path`` (module level, in classes and in functions)."""
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            for parts, names in _targets(node, path, root):
                yield node.lineno, parts, names


def _violations(root: Path = PKG) -> tuple[list[str], list[str]]:
    upward, private = [], []
    for path in sorted(root.rglob("*.py")):
        rel = path.relative_to(root)
        layer = rel.parts[0].removesuffix(".py")
        if layer == "__init__":
            continue
        for lineno, parts, names in _imports(path, root):
            # "from neurodecode import x" / "from .. import x": each name is a layer (or __version__)
            tops = [parts[0]] if parts else [n for n in names if n in ORDER]
            for top in tops:
                if ORDER.index(top) > ORDER.index(layer):
                    upward.append(f"{rel}:{lineno} ({layer}) imports {top}")
            if parts and parts[0] != layer:
                hidden = [p for p in parts[1:] if p.startswith("_")] + \
                         [n for n in names if n.startswith("_") and not n.startswith("__")]
                if hidden:
                    private.append(f"{rel}:{lineno} ({layer}) imports private "
                                   f"{'.'.join(parts)}: {hidden}")
    return upward, private


def test_the_documented_picture_names_every_layer_once():
    assert len(ORDER) == len(set(ORDER)), ORDER
    assert ORDER[0] == "_compat" and ORDER[-1] == "cli"


def test_import_layering_reads_every_import():
    upward, _ = _violations()
    assert not upward, "imports must point down the layers of docs/architecture.md:\n" + "\n".join(upward)


def test_no_private_names_across_packages():
    _, private = _violations()
    assert not private, "promote what packages share to a public name:\n" + "\n".join(private)


def test_the_layering_check_sees_function_level_and_relative_imports(tmp_path):
    """The check itself: an upward import inside a function, and a private cross-package name, are caught."""
    fake = tmp_path / "neurodecode"
    (fake / "preprocessing").mkdir(parents=True)
    (fake / "__init__.py").write_text("")
    (fake / "preprocessing" / "__init__.py").write_text("")
    (fake / "preprocessing" / "x.py").write_text(
        "def f():\n    from ..datasets._trials import BrainTrials\n    from ..utils import _hidden\n"
        "    import neurodecode.workflow.fit\n")
    upward, private = _violations(fake)
    assert [u.split(" imports ")[1] for u in upward] == ["datasets", "workflow"]
    assert len(private) == 2


def test_every_subpackage_is_layered():
    tops = {p.name for p in PKG.iterdir() if p.is_dir() and (p / "__init__.py").exists()}
    tops |= {p.stem for p in PKG.glob("*.py") if p.stem != "__init__"}
    missing = tops - set(ORDER) - {"__pycache__"}
    assert not missing, f"add {sorted(missing)} to the layer list of docs/architecture.md"


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


MAX_FUNCTION_LINES = 80


def _code_lines(fn: ast.FunctionDef | ast.AsyncFunctionDef) -> int:
    """Lines of a function's body, its docstring excluded."""
    body = fn.body
    first = body[0]
    if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant) and isinstance(first.value.value, str):
        if len(body) == 1:
            return 0
        first = body[1]
    return fn.end_lineno - first.lineno + 1


def test_no_function_is_longer_than_80_code_lines():
    """Long functions are split into pieces with one job each (and tests of their own)."""
    long = []
    for path in sorted(PKG.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                n = _code_lines(node)
                if n > MAX_FUNCTION_LINES:
                    long.append(f"{path.relative_to(PKG)}:{node.lineno} {node.name}: {n} lines")
    assert not long, f"split these (> {MAX_FUNCTION_LINES} code lines):\n" + "\n".join(long)
