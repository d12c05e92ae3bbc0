"""Replace hand-written shared parameter paragraphs with docdict placeholders (``%(verbose)s``).

For every docstring of a function, method or class in ``neurodecode/`` whose Parameters section documents
a shared parameter with one of the standard texts below, the paragraph (the ``name : type`` line and its
description) becomes ``%(name)s``, the definition gets ``@fill_doc`` (directly above ``def`` / ``class``,
below any other decorator, so wrappers such as ``@verbose`` copy the filled docstring), and the module
imports ``fill_doc`` from ``neurodecode.utils`` (merged into an existing single-line or parenthesised
``from ..utils import ...``; otherwise a new line after the module's imports).

Paragraphs whose description says something else (e.g. "Default log level of :meth:`fit`") are left as
they are, and listed. Docstrings holding other ``%(...)s`` text are skipped (``fill_doc`` would reject
them).

Usage (from the repository root)::

    python tools/apply_docdict.py --check     # dry run: what would change; exit 1 if anything would
    python tools/apply_docdict.py --diff      # dry run, with a unified diff
    python tools/apply_docdict.py             # rewrite the files (then run the test suite)

Only the standard library is used; the package is read as text and parsed with ``ast``, never imported
(except ``neurodecode/utils/_docs.py``'s docdict keys, read with ``ast`` too).
"""

from __future__ import annotations

import argparse
import ast
import difflib
import os
import re
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PKG = ROOT / "neurodecode"

#: parameter name → (the exact ``name : type`` text, the descriptions that mean the docdict entry)
PARAGRAPHS: dict[str, tuple[str, tuple[str, ...]]] = {
    "verbose": ("verbose : bool | str | int | None", (
        "Log level for this call.",
        "Log level for this call (see :func:`neurodecode.utils.set_log_level`).",
        "Log level for this call (``None`` keeps the current level).",
        "Log level for this call (``None``: the current level).",
        "Log level while loading.",
    )),
}
# never rewritten: the docdict itself, the layer below utils (it must not import utils), the lazy root
SKIP_FILES = ("utils/_docs.py", "_compat.py", "__init__.py")
_PLACEHOLDER = re.compile(r"%\((\w+)\)s")
_HEAD = re.compile(r"^(?P<indent>\s*)(?P<name>\w+) : (?P<type>.+?)\s*$")


@dataclass
class FileChange:
    path: Path
    new_text: str
    replaced: list[tuple[str, int, str]] = field(default_factory=list)  # (key, line, object)
    decorated: list[str] = field(default_factory=list)
    import_added: str = ""


@dataclass
class Report:
    changes: list[FileChange] = field(default_factory=list)
    left: list[tuple[Path, int, str, str]] = field(default_factory=list)  # (path, line, object, text)
    skipped: list[tuple[Path, int, str, str]] = field(default_factory=list)  # (path, line, object, why)


def _docdict_keys() -> set[str]:
    tree = ast.parse((PKG / "utils" / "_docs.py").read_text(encoding="utf-8"))
    keys = set()
    for node in ast.walk(tree):
        if (isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Subscript)
                and isinstance(node.targets[0].value, ast.Name) and node.targets[0].value.id == "docdict"
                and isinstance(node.targets[0].slice, ast.Constant)):
            keys.add(node.targets[0].slice.value)
    return keys


def _defs(tree: ast.AST):
    """Every function / class definition with a docstring, with its qualified name."""
    stack = [(tree, "")]
    while stack:
        node, prefix = stack.pop()
        for child in ast.iter_child_nodes(node):
            if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                qual = f"{prefix}{child.name}"
                if ast.get_docstring(child, clean=False) is not None:
                    yield child, qual
                stack.append((child, qual + "."))
            elif not isinstance(child, ast.expr):
                stack.append((child, prefix))


def _paragraph_end(lines: list[str], start: int, stop: int, indent: int) -> int:
    """Index after the description lines of the parameter line ``start`` (more indented than it)."""
    i = start + 1
    while i < stop:
        line = lines[i]
        if line.strip() and len(line) - len(line.lstrip()) <= indent:
            break
        if not line.strip():  # a blank line ends the paragraph unless the description continues after it
            j = i + 1
            while j < stop and not lines[j].strip():
                j += 1
            if j >= stop or len(lines[j]) - len(lines[j].lstrip()) <= indent:
                break
        i += 1
    return i


def _utils_module(path: Path) -> tuple[str, int]:
    """The relative module through which ``path`` imports fill_doc, and the import level."""
    rel = path.relative_to(PKG)
    if rel.parts[0] == "utils":
        return "_docs", 1
    depth = len(rel.parts) - 1  # folders below neurodecode/
    return "utils", depth + 1


def _add_import(text: str, tree: ast.Module, path: Path) -> tuple[str, str]:
    module, level = _utils_module(path)
    lines = text.split("\n")
    body = tree.body
    for node in body:
        if (isinstance(node, ast.ImportFrom) and node.module == module and node.level == level):
            names = [a.name if a.asname is None else f"{a.name} as {a.asname}" for a in node.names]
            if "fill_doc" in names:
                return text, ""
            # keep the existing order; fill_doc goes before the first function-like name after it
            at = next((k for k, n in enumerate(names) if n[:1].islower() and n.lower() > "fill_doc"),
                      len(names))
            names.insert(at, "fill_doc")
            head = f"from {'.' * level}{module} import "
            one = head + ", ".join(names)
            if len(one) <= 110:
                new = [one]
            else:
                new = [head + "("] + [f"    {n}," for n in names] + [")"]
            lines[node.lineno - 1: node.end_lineno] = new
            return "\n".join(lines), new[0] if len(new) == 1 else "\n".join(new)
    # a new line after the last module-level import at the top of the module
    last = None
    for node in body:
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            last = node
        elif isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant) and last is None:
            continue  # the module docstring
        elif last is not None:
            break
    line = f"from {'.' * level}{module} import fill_doc"
    at = last.end_lineno if last is not None else (body[0].end_lineno if body else 0)
    lines[at:at] = [line]
    return "\n".join(lines), line


def process_file(path: Path, keys: set[str], report: Report) -> FileChange | None:
    text = path.read_text(encoding="utf-8")
    tree = ast.parse(text)
    lines = text.split("\n")
    edits: list[tuple[int, int, list[str]]] = []  # (start, stop, replacement lines), 0-based
    decorate: list[tuple[int, int]] = []  # (0-based def line, indent) needing @fill_doc
    change = FileChange(path, text)
    for node, qual in _defs(tree):
        doc_node = node.body[0]
        d0, d1 = doc_node.lineno - 1, doc_node.end_lineno  # docstring lines [d0, d1)
        docstring = ast.get_docstring(node, clean=False) or ""
        others = {m.group(1) for m in _PLACEHOLDER.finditer(docstring)} - keys
        found = []
        for i in range(d0, d1):
            m = _HEAD.match(lines[i])
            if not m or m.group("name") not in PARAGRAPHS:
                continue
            name = m.group("name")
            head, accepted = PARAGRAPHS[name]
            indent = len(m.group("indent"))
            if m.group(0).strip() != head:
                report.left.append((path, i + 1, qual, m.group(0).strip()))
                continue
            end = _paragraph_end(lines, i, d1 - 1 if d1 - 1 > i else d1, indent)
            description = " ".join(s.strip() for s in lines[i + 1:end]).strip()
            if description not in accepted:
                report.left.append((path, i + 1, qual, f"{head}: {description}"))
                continue
            if others:
                report.skipped.append((path, i + 1, qual, f"docstring holds other placeholders {sorted(others)}"))
                continue
            if name not in keys:
                report.skipped.append((path, i + 1, qual, f"no docdict entry {name!r}"))
                continue
            found.append((i, end, [f"{m.group('indent')}%({name})s"], name))
        if not found:
            continue
        for i, end, new, name in found:
            edits.append((i, end, new))
            change.replaced.append((name, i + 1, qual))
        decorators = [d for d in node.decorator_list
                      if (isinstance(d, ast.Name) and d.id == "fill_doc")
                      or (isinstance(d, ast.Attribute) and d.attr == "fill_doc")]
        if not decorators:
            decorate.append((node.lineno - 1, node.col_offset))
            change.decorated.append(qual)
    if not edits:
        return None
    # apply bottom-up so earlier line numbers stay valid
    ops = [(s, e, new) for s, e, new in edits] + [(ln, ln, [" " * col + "@fill_doc"]) for ln, col in decorate]
    for s, e, new in sorted(ops, key=lambda op: (op[0], op[1]), reverse=True):
        lines[s:e] = new
    new_text = "\n".join(lines)
    new_text, change.import_added = _add_import(new_text, ast.parse(new_text), path)
    compile(new_text, str(path), "exec")  # never write a file that does not parse
    change.new_text = new_text
    return change


def run(paths: list[Path]) -> Report:
    keys = _docdict_keys()
    report = Report()
    for path in paths:
        rel = path.relative_to(PKG).as_posix()
        if rel in SKIP_FILES:
            continue
        change = process_file(path, keys, report)
        if change is not None:
            report.changes.append(change)
    return report


def _write(path: Path, text: str) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        f.write(text)
    os.replace(tmp, path)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--check", action="store_true", help="dry run; exit 1 if any file would change")
    parser.add_argument("--diff", action="store_true", help="dry run printing a unified diff")
    parser.add_argument("paths", nargs="*", type=Path, help="files to process (default: all of neurodecode/)")
    args = parser.parse_args(argv)
    paths = [p.resolve() for p in args.paths] or sorted(PKG.rglob("*.py"))
    report = run(paths)
    n_par = sum(len(c.replaced) for c in report.changes)
    n_dec = sum(len(c.decorated) for c in report.changes)
    for c in report.changes:
        rel = c.path.relative_to(ROOT)
        print(f"{rel}: {len(c.replaced)} paragraph(s) -> placeholders, {len(c.decorated)} @fill_doc"
              + (f", import: {c.import_added.splitlines()[0]}" if c.import_added else ""))
        if args.diff:
            old = c.path.read_text(encoding="utf-8")
            sys.stdout.writelines(difflib.unified_diff(old.splitlines(True), c.new_text.splitlines(True),
                                                       str(rel), str(rel)))
    for path, line, qual, text in report.left:
        print(f"left as written: {path.relative_to(ROOT)}:{line} {qual}: {text}")
    for path, line, qual, why in report.skipped:
        print(f"skipped: {path.relative_to(ROOT)}:{line} {qual}: {why}")
    print(f"{n_par} paragraph(s) in {len(report.changes)} file(s) would become placeholders "
          f"({n_dec} @fill_doc added); {len(report.left)} left as written, {len(report.skipped)} skipped."
          if args.check or args.diff else
          f"{n_par} paragraph(s) in {len(report.changes)} file(s) replaced ({n_dec} @fill_doc added); "
          f"{len(report.left)} left as written, {len(report.skipped)} skipped.")
    if args.check or args.diff:
        return 1 if report.changes else 0
    for c in report.changes:
        _write(c.path, c.new_text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
