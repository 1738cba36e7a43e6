"""The code reads as written by hand: ruff is clean everywhere, and generated modules carry no
leftovers of the notebooks they come from (imports only a test needed, marker lines)."""
from __future__ import annotations

import ast
import shutil
import subprocess
import sys

import pytest

from llmcourse.course.chapters import CHAPTERS
from llmcourse.course.export import build_modules

pytestmark = [pytest.mark.course_infra]


def ruff_command() -> list[str]:
    found = shutil.which("ruff")
    if found:
        return [found]
    try:
        import ruff  # noqa: F401  (the dev extra installs it)
    except ImportError:
        pytest.skip("ruff is not installed: `pip install -e '.[dev]'` (./course test installs it)")
    return [sys.executable, "-m", "ruff"]


def test_ruff_is_clean(root):
    """The package, the course infrastructure, tests, benchmarks and the notebooks' code cells."""
    result = subprocess.run([*ruff_command(), "check", "--no-cache", "--output-format", "concise", "."],
                            cwd=root, capture_output=True, text=True)
    assert result.returncode == 0, \
        f"ruff found problems (fix them, or `ruff check --fix`):\n{result.stdout}{result.stderr}"


def test_generated_modules_have_pep8_blank_lines(root):
    """Two blank lines around top-level definitions, one between methods, no runs of blank lines
    where solution markers were (pycodestyle's E30x, a preview rule set of ruff)."""
    modules = [str(root / "llmcourse" / f"{m}.py") for c in CHAPTERS for m in c.modules]
    rules = "E301,E302,E303,E304,E305,E306"
    result = subprocess.run([*ruff_command(), "check", "--no-cache", "--preview", "--select", rules,
                             "--output-format", "concise", *modules], cwd=root, capture_output=True, text=True)
    assert result.returncode == 0, f"blank lines in the generated modules:\n{result.stdout}{result.stderr}"


def imported_names(tree: ast.Module) -> dict[str, int]:
    names = {}
    for node in tree.body:
        if isinstance(node, ast.ImportFrom) and node.module == "__future__":
            continue
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            for alias in node.names:
                names[(alias.asname or alias.name).split(".")[0]] = node.lineno
    return names


def used_names(tree: ast.Module) -> set[str]:
    used = {node.id for node in ast.walk(tree) if isinstance(node, ast.Name)}
    for node in ast.walk(tree):  # names in string annotations (from __future__ import annotations)
        if isinstance(node, ast.Constant) and isinstance(node.value, str):
            try:
                used |= {n.id for n in ast.walk(ast.parse(node.value, mode="eval")) if isinstance(n, ast.Name)}
            except SyntaxError:
                pass
    return used


@pytest.mark.parametrize("chapter", CHAPTERS, ids=lambda c: c.assignment)
def test_generated_modules_import_only_what_they_use(root, chapter):
    """An import a grade cell needed (say `math` for a test) must not leak into the package."""
    for module, text in build_modules([chapter.solution_path(root)], relative_to=root).items():
        tree = ast.parse(text)
        unused = sorted(set(imported_names(tree)) - used_names(tree))
        assert not unused, (f"llmcourse/{module}.py imports {unused} but never uses them: "
                            "move the import to the cell that needs it")
        assert "### BEGIN" not in text and "### END" not in text, f"llmcourse/{module}.py keeps nbgrader markers"
        assert "\n\n\n\n" not in text, f"llmcourse/{module}.py has runs of 3+ blank lines where solution markers were"
