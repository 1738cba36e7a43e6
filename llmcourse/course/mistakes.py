"""The mistake catalogue: realistic wrong solutions, and proof that the grade cells catch them.

Each chapter has a catalogue, `tests/mistakes/<notebook>.py`, listing the mistakes learners
actually make, exercise by exercise: a sentence saying what the mistake is and why it is made,
and the edit that turns the reference solution into it. `run_catalogue` executes, in one Python
process, the reference notebook once per mistake with that one edit, up to and including the
grade cell of the edited exercise, and reports whether the grade cell failed. Only that
exercise's grade cell runs: the other grade cells are skipped, so a mistake is charged to its
own exercise.

The notebook's cells run as plain Python (no kernel): imports are cached after the first run,
so a mistake costs little more than its exercise's tests.
"""
from __future__ import annotations

import contextlib
import io
import json
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
    grade_id: str
    caught: bool  # the grade cell raised
    error: str  # the first line of what it raised
    seconds: float


def load_catalogue(path: Path) -> list[Mistake]:
    """MISTAKES from a catalogue file, checked: every entry is a Mistake."""
    mistakes = runpy.run_path(str(path))["MISTAKES"]
    for index, mistake in enumerate(mistakes):
        if not isinstance(mistake, Mistake):
            raise TypeError(f"{path}: entry {index} is a {type(mistake).__name__}, not a Mistake")
    return list(mistakes)


def code_cells(notebook_path: Path) -> list[tuple[str, str, bool]]:
    """(cell id, source, is a grade cell) for every code cell, in order."""
    notebook = nbformat.read(str(notebook_path), as_version=4)
    cells = []
    for cell in notebook.cells:
        if cell.cell_type == "code":
            meta = cell.metadata.get("nbgrader", {})
            cells.append((cell.get("id", ""), cell.source, bool(meta.get("grade"))))
    return cells


def grade_cell_after(cells, cell_id: str) -> int:
    """The index of the first grade cell after the cell `cell_id`: the tests of its exercise."""
    ids = [c[0] for c in cells]
    if cell_id not in ids:
        raise KeyError(f"no code cell with id {cell_id!r}; the cells are {ids}")
    start = ids.index(cell_id)
    for index in range(start + 1, len(cells)):
        if cells[index][2]:
            return index
    raise KeyError(f"no grade cell follows cell {cell_id!r}")


class TimeLimit(Exception):
    pass


def alarm(signum, frame):
    raise TimeLimit(f"took more than {MISTAKE_TIMEOUT} s")


def run_one(cells, target: int, replaced: dict[str, str], timeout: int) -> tuple[bool, str]:
    """Run the non-grade cells up to `target` and the grade cell `target`; (it raised, message)."""
    namespace = {"__name__": "__main__"}
    signal.signal(signal.SIGALRM, alarm)
    signal.alarm(timeout)
    printed = io.StringIO()  # what the cells print is not part of the verdict
    with contextlib.redirect_stdout(printed), contextlib.redirect_stderr(printed):
        return run_cells(cells, target, replaced, namespace)


def run_cells(cells, target: int, replaced: dict[str, str], namespace: dict) -> tuple[bool, str]:
    try:
        for index, (cell_id, source, is_grade) in enumerate(cells[:target + 1]):
            if is_grade and index != target:
                continue
            code = compile(replaced.get(cell_id, source), f"<cell {cell_id}>", "exec")
            try:
                exec(code, namespace)
            except BaseException as error:  # a mistake may raise anything, SystemExit included
                if index == target:
                    return True, f"{type(error).__name__}: {str(error).splitlines()[0] if str(error) else ''}"
                return True, f"cell {cell_id} raised {type(error).__name__} before the tests ran: {error}"
        return False, ""
    except TimeLimit as error:
        return True, f"TimeLimit: {error}"
    finally:
        signal.alarm(0)


def run_catalogue(notebook_path: Path, catalogue_path: Path, timeout: int = MISTAKE_TIMEOUT) -> list[Outcome]:
    """Every mistake of the catalogue (and the reference, as mistake -1) against its grade cell."""
    cells = code_cells(notebook_path)
    mistakes = load_catalogue(catalogue_path)
    outcomes = []
    reference_targets = sorted({grade_cell_after(cells, m.cell) for m in mistakes})
    for target in reference_targets:
        start = time.perf_counter()
        caught, error = run_one(cells, target, {}, timeout)
        outcomes.append(Outcome(-1, cells[target][0], caught, error, time.perf_counter() - start))
    for index, mistake in enumerate(mistakes):
        target = grade_cell_after(cells, mistake.cell)
        source = dict((c[0], c[1]) for c in cells)[mistake.cell]
        if mistake.old not in source:
            raise ValueError(f"mistake {index} ({mistake.what}): {mistake.old!r} is not in cell {mistake.cell}")
        start = time.perf_counter()
        caught, error = run_one(cells, target, {mistake.cell: source.replace(mistake.old, mistake.new)}, timeout)
        outcomes.append(Outcome(index, cells[target][0], caught, error, time.perf_counter() - start))
    return outcomes


def run_in_subprocess(notebook_path: Path, catalogue_path: Path, cwd: Path) -> list[Outcome]:
    """run_catalogue in a fresh interpreter (the notebook's cells change global state)."""
    command = [sys.executable, "-m", "llmcourse.course.mistakes", str(notebook_path), str(catalogue_path)]
    result = subprocess.run(command, cwd=cwd, capture_output=True, text=True)
    if result.returncode != 0:
        raise RuntimeError(f"the catalogue run failed:\n{result.stdout}\n{result.stderr}")
    return [Outcome(**row) for row in json.loads(result.stdout.strip().splitlines()[-1])]


def main(argv: list[str]) -> int:
    from llmcourse.course import mistakes  # not __main__'s copy: catalogues import Mistake from here

    notebook, catalogue = Path(argv[0]), Path(argv[1])
    outcomes = mistakes.run_catalogue(notebook, catalogue)
    print(json.dumps([asdict(o) for o in outcomes]))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
