"""The mistake catalogue: realistic wrong solutions, and proof that the grade cells catch them.

Each chapter has a catalogue, `tests/mistakes/<notebook>.py`, listing the mistakes learners
actually make, exercise by exercise: a sentence saying what the mistake is and why it is made,
and the edit that turns the reference solution into it. `run_catalogue` executes, in one Python
process, the reference notebook once per mistake with that one edit, up to and including the
grade cells of the edited exercise (those between its solution cell and the next one), and
reports whether one of them failed. Only that exercise's grade cells run: the other grade cells
are skipped, so a mistake is charged to its own exercise.

With `visible_only`, the hidden tests are cut out of the grade cells first: what a learner
without `solutions/` can see for themselves.

The notebook's cells run as plain Python (no kernel): imports are cached after the first run,
so a mistake costs little more than its exercise's tests.
"""
from __future__ import annotations

import ast
import contextlib
import io
import json
import os
import re
import runpy
import signal
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import nbformat

MISTAKE_TIMEOUT = 60
"""Seconds one mistake's run may take before it counts as caught by a time limit (an infinite loop)."""

HIDDEN_TESTS = re.compile(r"^[ \t]*### BEGIN HIDDEN TESTS.*?^[ \t]*### END HIDDEN TESTS[ \t]*$\n?", re.M | re.S)


@dataclass(frozen=True)
class Mistake:
    """A realistic wrong solution: `old` in the reference cell `cell` replaced by `new`."""

    cell: str  # the id of the solution cell, e.g. "ex1-attention"
    what: str  # the mistake and why learners make it, in a sentence
    old: str  # text of the reference solution (must occur in the cell)
    new: str  # the mistaken text


@dataclass
class Outcome:
    mistake: int  # index in the catalogue; -1 is the reference solution
    grade_id: str  # the exercise's first grade cell
    caught: bool  # a grade cell of the exercise raised
    error: str  # the first line of what it raised
    seconds: float


@dataclass(frozen=True)
class Cell:
    id: str
    source: str
    is_grade: bool
    is_solution: bool


def load_catalogue(path: Path) -> list[Mistake]:
    """MISTAKES from a catalogue file, checked: every entry is a Mistake."""
    mistakes = runpy.run_path(str(path))["MISTAKES"]
    for index, mistake in enumerate(mistakes):
        if not isinstance(mistake, Mistake):
            raise TypeError(f"{path}: entry {index} is a {type(mistake).__name__}, not a Mistake")
    return list(mistakes)


def code_cells(notebook_path: Path) -> list[Cell]:
    """Every code cell of the notebook, in order."""
    notebook = nbformat.read(str(notebook_path), as_version=4)
    cells = []
    for cell in notebook.cells:
        if cell.cell_type == "code":
            meta = cell.metadata.get("nbgrader", {})
            cells.append(Cell(cell.get("id", ""), cell.source, bool(meta.get("grade")), bool(meta.get("solution"))))
    return cells


def grade_cells_of(cells: list[Cell], cell_id: str) -> list[int]:
    """The indices of the grade cells that test the solution cell `cell_id`: those after it and
    before the next solution cell."""
    ids = [c.id for c in cells]
    if cell_id not in ids:
        raise KeyError(f"no code cell with id {cell_id!r}; the cells are {ids}")
    found = []
    for index in range(ids.index(cell_id) + 1, len(cells)):
        if cells[index].is_solution:
            break
        if cells[index].is_grade:
            found.append(index)
    if not found:
        raise KeyError(f"no grade cell follows cell {cell_id!r}")
    return found


def exercise_of(cells: list[Cell], cell_id: str) -> str:
    """The grade id that names the exercise of a solution cell: its first grade cell's."""
    return cells[grade_cells_of(cells, cell_id)[0]].id


class TimeLimit(Exception):
    pass


def alarm(signum, frame):
    raise TimeLimit(f"took more than {MISTAKE_TIMEOUT} s")


def run_one(cells: list[Cell], targets: list[int], replaced: dict[str, str], timeout: int) -> tuple[bool, str]:
    """Run the non-grade cells up to the last target, and the target grade cells; (one raised, message)."""
    namespace = {"__name__": "__main__"}
    signal.signal(signal.SIGALRM, alarm)
    signal.alarm(timeout)
    printed = io.StringIO()  # what the cells print is not part of the verdict
    with contextlib.redirect_stdout(printed), contextlib.redirect_stderr(printed):
        return run_cells(cells, targets, replaced, namespace)


def run_cells(cells: list[Cell], targets: list[int], replaced: dict[str, str], namespace: dict) -> tuple[bool, str]:
    try:
        caught = []
        for index, cell in enumerate(cells[:max(targets) + 1]):
            if cell.is_grade and index not in targets:
                continue
            code = compile(replaced.get(cell.id, cell.source), f"<cell {cell.id}>", "exec")
            try:
                exec(code, namespace)
            except BaseException as error:  # a mistake may raise anything, SystemExit included
                message = str(error).splitlines()[0] if str(error) else ""
                if index not in targets:
                    return True, f"cell {cell.id} raised {type(error).__name__} before the tests ran: {message}"
                caught.append(f"{cell.id}: {type(error).__name__}: {message}")
        return bool(caught), "; ".join(caught)
    except TimeLimit as error:
        return True, f"TimeLimit: {error}"
    finally:
        signal.alarm(0)


def visible(cell: Cell) -> Cell:
    """The grade cell as a learner without solutions/ sees it: no hidden tests."""
    if not cell.is_grade:
        return cell
    return Cell(cell.id, HIDDEN_TESTS.sub("", cell.source), cell.is_grade, cell.is_solution)


def run_catalogue(notebook_path: Path, catalogue_path: Path, timeout: int = MISTAKE_TIMEOUT,
                  visible_only: bool = False) -> list[Outcome]:
    """Every mistake of the catalogue (and the reference, as mistake -1) against its exercise's grade cells."""
    cells = code_cells(notebook_path)
    if visible_only:
        cells = [visible(c) for c in cells]
    sources = {c.id: c.source for c in cells}
    mistakes = load_catalogue(catalogue_path)
    outcomes = []
    for cell_id in dict.fromkeys(m.cell for m in mistakes):  # the reference, once per exercise
        targets = grade_cells_of(cells, cell_id)
        start = time.perf_counter()
        caught, error = run_one(cells, targets, {}, timeout)
        outcomes.append(Outcome(-1, cells[targets[0]].id, caught, error, time.perf_counter() - start))
    for index, mistake in enumerate(mistakes):
        targets = grade_cells_of(cells, mistake.cell)
        source = sources[mistake.cell]
        if mistake.old not in source:
            raise ValueError(f"mistake {index} ({mistake.what}): {mistake.old!r} is not in cell {mistake.cell}")
        start = time.perf_counter()
        caught, error = run_one(cells, targets, {mistake.cell: source.replace(mistake.old, mistake.new)}, timeout)
        outcomes.append(Outcome(index, cells[targets[0]].id, caught, error, time.perf_counter() - start))
    return outcomes


def run_in_subprocess(notebook_path: Path, catalogue_path: Path, cwd: Path,
                      visible_only: bool = False) -> list[Outcome]:
    """run_catalogue in a fresh interpreter (the notebook's cells change global state)."""
    command = [sys.executable, "-m", "llmcourse.course.mistakes", str(notebook_path), str(catalogue_path)]
    if visible_only:
        command.append("--visible-only")
    result = subprocess.run(command, cwd=cwd, capture_output=True, text=True)
    if result.returncode != 0:
        raise RuntimeError(f"the catalogue run failed:\n{result.stdout}\n{result.stderr}")
    return [Outcome(**row) for row in json.loads(result.stdout.strip().splitlines()[-1])]


def grade_cells_failing(cells: list[Cell], replaced: dict[str, str], timeout: int) -> list[str]:
    """Run every cell, as nbgrader does (an error in a cell does not stop the rest); the ids of the
    grade cells that raised. A run past `timeout` seconds fails every grade cell not yet run."""
    namespace = {"__name__": "__main__"}
    failed = []
    signal.signal(signal.SIGALRM, alarm)
    signal.alarm(timeout)
    printed = io.StringIO()
    done = 0  # cells run to the end, with or without an error
    try:
        with contextlib.redirect_stdout(printed), contextlib.redirect_stderr(printed):
            for cell in cells:
                try:
                    exec(compile(replaced.get(cell.id, cell.source), f"<cell {cell.id}>", "exec"), namespace)
                except TimeLimit:
                    raise
                except BaseException:  # a blank exercise raises NotImplementedError, and more
                    if cell.is_grade:
                        failed.append(cell.id)
                done += 1
    except TimeLimit:
        failed += [c.id for c in cells[done:] if c.is_grade]
    finally:
        signal.alarm(0)
    return failed


def blank_each_exercise(notebook_path: Path, release_path: Path, timeout: int = 4 * MISTAKE_TIMEOUT) -> dict:
    """Each exercise in turn left as the learner receives it (the release notebook's version of its
    solution cell), the others solved: {solution cell id: the grade cells that fail}.

    An exercise graded on its own fails all of its own grade cells and no other: the grade cells of
    later exercises put the course's stand-ins in place of what it defines (checks.on_its_own)."""
    cells = code_cells(notebook_path)
    blanks = {c.id: c.source for c in code_cells(release_path) if c.is_solution}
    missing = [c.id for c in cells if c.is_solution and c.id not in blanks]
    if missing:
        raise KeyError(f"{release_path} has no cells with the ids {missing}: regenerate it from {notebook_path}")
    return {c.id: grade_cells_failing(cells, {c.id: blanks[c.id]}, timeout) for c in cells if c.is_solution}


def main(argv: list[str]) -> int:
    from llmcourse.course import mistakes  # not __main__'s copy: catalogues import Mistake from here

    if argv[0] == "--blank-each":
        print(json.dumps(mistakes.blank_each_exercise(Path(argv[1]), Path(argv[2]))))
        return 0
    notebook, catalogue = Path(argv[0]), Path(argv[1])
    outcomes = mistakes.run_catalogue(notebook, catalogue, visible_only="--visible-only" in argv[2:])
    print(json.dumps([asdict(o) for o in outcomes]))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))


def package_kills(root: Path, chapter, catalogue_path: Path, timeout: float = 300.0) -> list[tuple[int, bool, str]]:
    """For each mistake: does the chapter's package test suite fail on a package with that mistake?

    Each mistake's notebook is exported into a package of its own and the chapter's tests run
    against it (stopping at the first failure). Slow: one pytest process per mistake.
    """
    import tempfile

    from .package_tests import build_package

    notebook = nbformat.read(str(chapter.solution_path(root)), as_version=4)
    results = []
    for index, mistake in enumerate(load_catalogue(catalogue_path)):
        mutated = nbformat.from_dict(json.loads(json.dumps(notebook)))
        cell = next(c for c in mutated.cells if c.get("id") == mistake.cell)
        cell.source = cell.source.replace(mistake.old, mistake.new)
        with tempfile.TemporaryDirectory(prefix="llmcourse-mistake-") as scratch:
            path = Path(scratch) / chapter.assignment / f"{chapter.notebook}.ipynb"
            path.parent.mkdir()
            nbformat.write(mutated, str(path))
            out = Path(scratch) / "package"
            try:
                build_package(root, chapter, path, out)
            except Exception as error:  # a mistake that breaks the export is caught by it
                results.append((index, True, f"export: {error}"))
                continue
            env = dict(os.environ, LLMCOURSE_PACKAGE=str(out))
            command = [sys.executable, "-m", "pytest", *[str(root / "tests" / f) for f in chapter.test_files],
                       "-x", "-q", "-p", "no:cacheprovider", "-m", "not slow"]
            try:
                run = subprocess.run(command, cwd=root, env=env, capture_output=True, text=True, timeout=timeout)
                failed = run.returncode != 0
                last = run.stdout.strip().splitlines()[-1] if run.stdout.strip() else ""
            except subprocess.TimeoutExpired:
                failed, last = True, f"timed out after {timeout:g} s"
            results.append((index, failed, last))
    return results


SOLUTION_REGION = re.compile(r"^[ \t]*### BEGIN SOLUTION.*?^[ \t]*### END SOLUTION", re.M | re.S)


def solution_statements(source: str) -> dict[int, str]:
    """{line: code} of every statement inside the cell's solution regions."""
    regions = [(source.count("\n", 0, m.start()) + 1, source.count("\n", 0, m.end()) + 1)
               for m in SOLUTION_REGION.finditer(source)]
    lines = source.split("\n")
    found = {}
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.stmt) and any(first < node.lineno < last for first, last in regions):
            found[node.lineno] = lines[node.lineno - 1].strip()
    return found


def uncovered_solution_lines(notebook_path: Path) -> dict[str, list[tuple[int, str]]]:
    """The statements of the reference solutions that no grade cell executes: branches the tests
    never reach, where a wrong solution would pass unseen. {solution cell id: [(line, code)]}."""
    cells = code_cells(notebook_path)
    executed: set[tuple[str, int]] = set()

    def tracer(frame, event, arg):
        name = frame.f_code.co_filename
        if not name.startswith("<cell "):
            return None

        def local(frame, event, arg):
            if event == "line":
                executed.add((name[6:-1], frame.f_lineno))
            return local
        return local(frame, event, arg)

    namespace = {"__name__": "__main__"}
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed), contextlib.redirect_stderr(printed):
        for cell in cells:
            code = compile(cell.source, f"<cell {cell.id}>", "exec")
            if cell.is_grade:
                sys.settrace(tracer)
            try:
                exec(code, namespace)
            finally:
                sys.settrace(None)
    uncovered = {}
    for cell in cells:
        if cell.is_solution:
            missing = [(line, code) for line, code in sorted(solution_statements(cell.source).items())
                       if (cell.id, line) not in executed]
            if missing:
                uncovered[cell.id] = missing
    return uncovered
