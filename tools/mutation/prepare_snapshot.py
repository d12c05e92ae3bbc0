"""Prepare the snapshot's target modules for mutmut (snapshot only, never the working tree).

Two rewrites, neither of which changes what the code does:

1. ``@verbose`` (and ``@fill_doc`` stacked on it) is moved from decorator syntax
   to an assignment after the function (``def f(...): ...`` then
   ``f = fill_doc(verbose(f))``). mutmut 3 never mutates a decorated function
   (other than ``@staticmethod``/``@classmethod``), and ``bootstrap_ci``,
   ``permutation_pvalue``, ``fdr_bh``, ``evaluate_retrieval``, ``ablate``,
   ``RidgeDecoder.fit`` ... are all ``@verbose``. Applying decorators by
   assignment right after the ``def``, innermost first, is what the ``@`` syntax means.

2. Message-only statements are tagged so mutmut leaves them alone. The
   statements whose only job is to say something:

* ``raise SomeError(...)``                  (the message of an exception),
* ``warnings.warn(...)`` / ``warn(...)``,
* ``logger.<level>(...)`` / ``log.<level>(...)`` and ``print(...)``,

and appends the comment ``# mutmut: message`` to each of their lines, which
``do_not_mutate_patterns`` in setup.cfg then skips. Comments do not change the
program; the condition that guards a ``raise`` is on another line and is still
mutated, so a mutant that stops raising is still made and must be killed.
A statement that shares its first or last line with other code is not tagged.
"""

from __future__ import annotations

import ast
import io
import sys
import tokenize
from pathlib import Path

TAG = "# mutmut: message"
LOG_METHODS = {"debug", "info", "warning", "warn", "error", "exception", "critical"}
LOG_OBJECTS = {"logger", "log", "_log", "_logger", "LOGGER"}


def _is_message_stmt(node: ast.stmt) -> bool:
    if isinstance(node, ast.Raise):
        return node.exc is not None
    if isinstance(node, ast.Expr) and isinstance(node.value, ast.Call):
        f = node.value.func
        if isinstance(f, ast.Name) and f.id in {"warn", "print"}:
            return True
        if isinstance(f, ast.Attribute):
            if isinstance(f.value, ast.Name) and f.value.id == "warnings" and f.attr == "warn":
                return True
            if isinstance(f.value, ast.Name) and f.value.id in LOG_OBJECTS and f.attr in LOG_METHODS:
                return True
    return False


UNWRAP = {"verbose", "fill_doc"}  # plain-name decorators that only wrap or document the function


def unwrap_verbose(path: Path) -> int:
    """``@fill_doc @verbose def f`` -> ``def f`` then ``f = fill_doc(verbose(f))`` (same indentation)."""
    src = path.read_text()
    lines = src.splitlines()
    edits = []
    for node in ast.walk(ast.parse(src)):
        if not isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) or not node.decorator_list:
            continue
        decs = node.decorator_list
        if not all(isinstance(d, ast.Name) and d.id in UNWRAP for d in decs):
            continue  # other decorators (property, dataclass, ...): left as they are
        if not any(d.id == "verbose" for d in decs):
            continue
        indent = lines[decs[0].lineno - 1][: decs[0].col_offset - 1]
        call = node.name
        for d in reversed(decs):
            call = f"{d.id}({call})"
        edits.append(([d.lineno for d in decs], node.end_lineno, f"{indent}{node.name} = {call}"))
    for dec_lines, end_line, assign in sorted(edits, key=lambda e: e[1], reverse=True):
        lines.insert(end_line, assign)
        for dec_line in sorted(dec_lines, reverse=True):
            assert lines[dec_line - 1].strip().startswith("@"), lines[dec_line - 1]
            del lines[dec_line - 1]
    path.write_text("\n".join(lines) + ("\n" if src.endswith("\n") else ""))
    ast.parse(path.read_text())
    return len(edits)


def tag(path: Path) -> int:
    src = path.read_text()
    lines = src.splitlines()
    tree = ast.parse(src)
    # lines whose end is real code (not inside a multi-line string): safe to append a comment
    line_end_ok: set[int] = set()
    has_comment: set[int] = set()
    for tok in tokenize.generate_tokens(io.StringIO(src).readline):
        if tok.type in (tokenize.NL, tokenize.NEWLINE):
            line_end_ok.add(tok.start[0])
        elif tok.type == tokenize.COMMENT:
            has_comment.add(tok.start[0])
    todo: set[int] = set()
    for node in ast.walk(tree):
        if not (isinstance(node, ast.stmt) and _is_message_stmt(node)):
            continue
        first, last = node.lineno, node.end_lineno
        if lines[first - 1][: node.col_offset].strip():
            continue  # e.g. `if x: raise ...` on one line: would hide the condition
        tail = lines[last - 1][node.end_col_offset:].strip()
        if tail and not tail.startswith("#"):
            continue
        todo.update(i for i in range(first, last + 1) if i in line_end_ok)
    for i in sorted(todo):
        lines[i - 1] = lines[i - 1] + ("  " if i not in has_comment else " ") + TAG
    path.write_text("\n".join(lines) + ("\n" if src.endswith("\n") else ""))
    ast.parse(path.read_text())  # still valid Python
    return len(todo)


if __name__ == "__main__":
    for p in sys.argv[1:]:
        n_verbose = unwrap_verbose(Path(p))
        print(f"{p}: {n_verbose} @verbose function(s) unwrapped, {tag(Path(p))} message line(s) tagged")
