"""Only the command line prints and exits: every other module reports through return values,
exceptions and logging, so the daemon, the API and the tests can use any part. (What may
import what is checked by `lint-imports`, contracts in pyproject.toml.)"""

from __future__ import annotations

import ast
from pathlib import Path

import updater

PACKAGE = Path(updater.__file__).parent
# The command line (a package) and `python -m updater`.
ON_TOP = (PACKAGE / "cli", PACKAGE / "__main__.py")


def _prints_or_exits(tree: ast.AST) -> list[str]:
    found = []
    for node in ast.walk(tree):
        if not isinstance(node, ast.Call):
            continue
        function = node.func
        if isinstance(function, ast.Name) and function.id in ("print", "exit", "quit"):
            found.append(f"{function.id}() at line {node.lineno}")
        if isinstance(function, ast.Attribute) and isinstance(function.value, ast.Name) and \
                (function.value.id, function.attr) in (("sys", "exit"), ("os", "_exit")):
            found.append(f"{function.value.id}.{function.attr}() at line {node.lineno}")
    return found


def test_nothing_below_the_command_line_prints_or_exits() -> None:
    offenders = {str(path.relative_to(PACKAGE)): calls for path in sorted(PACKAGE.rglob("*.py"))
                 if not any(path == top or top in path.parents for top in ON_TOP)
                 and (calls := _prints_or_exits(ast.parse(path.read_text(), str(path))))}
    assert offenders == {}


def test_the_command_line_is_where_printing_happens() -> None:
    """The walk above skips the command line itself (else the test could pass by finding no
    module at all)."""
    printing = [path for path in (PACKAGE / "cli").rglob("*.py")
                if _prints_or_exits(ast.parse(path.read_text()))]
    assert printing == [PACKAGE / "cli" / "__init__.py"]
    assert len(list(PACKAGE.rglob("*.py"))) > 30


def test_the_check_finds_what_it_looks_for() -> None:
    assert _prints_or_exits(ast.parse("import os, sys\nprint(1)\nsys.exit(2)\nos._exit(3)")) == [
        "print() at line 2", "sys.exit() at line 3", "os._exit() at line 4"]


def test_no_module_is_over_350_lines() -> None:
    """Each module reads on its own: one that grows past this is split by what it owns."""
    sizes = {str(path.relative_to(PACKAGE)): len(path.read_text().splitlines())
             for path in PACKAGE.rglob("*.py")}
    assert {name: size for name, size in sizes.items() if size > 350} == {}
    assert len(sizes) > 30
