"""The mistake catalogue: every realistic wrong solution fails its exercise's grade cell, and the
reference passes. The catalogues are tests/mistakes/<notebook>.py; see llmcourse/course/mistakes.py."""
from __future__ import annotations

import ast
import json
import runpy
import subprocess
import sys
from collections import Counter

import nbformat
import pytest

from llmcourse.course.chapters import CHAPTERS
from llmcourse.course.mistakes import code_cells, exercise_of, grade_cells_of, run_in_subprocess

pytestmark = [pytest.mark.course_infra]

MISTAKES_PER_EXERCISE = 5
"""The least a catalogue lists for each graded exercise."""

VISIBLE_KILL_RATE = {"chapter": 0.8, "exercise": 0.6}
"""The share of the catalogue the visible tests alone must catch, over a chapter and in each of its
exercises: a learner without solutions/ finds the common mistakes; hidden tests add configurations."""


def catalogue_path(root, chapter):
    return root / "tests" / "mistakes" / f"{chapter.notebook}.py"


def run_catalogue_of(root, chapter, visible_only: bool = False):
    """The chapter's catalogue and the outcome of each of its mistakes (and of the reference)."""
    path = catalogue_path(root, chapter)
    if not path.exists():
        pytest.fail(f"{path} is missing: every chapter lists its learners' likely mistakes")
    outcomes = run_in_subprocess(chapter.solution_path(root), path, cwd=root, visible_only=visible_only)
    return runpy.run_path(str(path))["MISTAKES"], outcomes


@pytest.mark.parametrize("chapter", CHAPTERS, ids=lambda c: c.assignment)
def test_every_exercise_has_a_catalogue_of_mistakes(root, chapter):
    path = catalogue_path(root, chapter)
    assert path.exists(), f"{path} is missing: every chapter lists its learners' likely mistakes"
    cells = code_cells(chapter.solution_path(root))
    exercises = [exercise_of(cells, c.id) for c in cells if c.is_solution]
    per_exercise = Counter(exercise_of(cells, m.cell) for m in runpy.run_path(str(path))["MISTAKES"])
    thin = {grade_id: per_exercise.get(grade_id, 0) for grade_id in exercises
            if per_exercise.get(grade_id, 0) < MISTAKES_PER_EXERCISE}
    assert not thin, f"exercises with fewer than {MISTAKES_PER_EXERCISE} catalogued mistakes: {thin}"


@pytest.mark.parametrize("chapter", CHAPTERS, ids=lambda c: c.assignment)
def test_grade_cells_catch_every_catalogued_mistake(root, chapter):
    mistakes, outcomes = run_catalogue_of(root, chapter)
    failing_reference = [f"{o.grade_id}: {o.error}" for o in outcomes if o.mistake < 0 and o.caught]
    assert not failing_reference, f"the reference solution fails its own grade cells: {failing_reference}"
    missed = [f"{o.grade_id}: {mistakes[o.mistake].what}" for o in outcomes if o.mistake >= 0 and not o.caught]
    assert not missed, "grade cells that let a catalogued mistake through:\n" + "\n".join(missed)
    early = [f"{mistakes[o.mistake].what}: {o.error}" for o in outcomes
             if o.mistake >= 0 and "before the tests ran" in o.error]
    assert not early, "mistakes that break a cell before their tests run (not realistic):\n" + "\n".join(early)
    assert len(outcomes) == len(mistakes) + len({m.cell for m in mistakes})


@pytest.mark.parametrize("chapter", CHAPTERS, ids=lambda c: c.assignment)
def test_visible_tests_catch_most_mistakes(root, chapter):
    mistakes, outcomes = run_catalogue_of(root, chapter, visible_only=True)
    assert not [o for o in outcomes if o.mistake < 0 and o.caught], "the reference fails its visible tests"
    caught, total = Counter(), Counter()
    for o in outcomes:
        if o.mistake >= 0:
            total[o.grade_id] += 1
            caught[o.grade_id] += o.caught
    rate = sum(caught.values()) / sum(total.values())
    weak = {g: f"{caught[g]}/{total[g]}" for g in total if caught[g] / total[g] < VISIBLE_KILL_RATE["exercise"]}
    missed = [mistakes[o.mistake].what for o in outcomes if o.mistake >= 0 and not o.caught]
    assert rate >= VISIBLE_KILL_RATE["chapter"] and not weak, (
        f"the visible tests catch {rate:.0%} of the catalogue (at least {VISIBLE_KILL_RATE['chapter']:.0%} wanted); "
        f"exercises below {VISIBLE_KILL_RATE['exercise']:.0%}: {weak}; missed: {missed}")


@pytest.mark.parametrize("chapter", CHAPTERS, ids=lambda c: c.assignment)
def test_grade_cells_reach_every_line_of_the_reference(root, chapter):
    """Every statement of the reference solutions runs while the grade cells run: a branch no test
    reaches is a branch a wrong solution can get wrong unseen."""
    script = ("import json, sys; from pathlib import Path; "
              "from llmcourse.course.mistakes import uncovered_solution_lines as u; "
              "print(json.dumps(u(Path(sys.argv[1]))))")
    result = subprocess.run([sys.executable, "-c", script, str(chapter.solution_path(root))], cwd=root,
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    uncovered = json.loads(result.stdout.strip().splitlines()[-1])
    assert not uncovered, "reference lines no grade cell executes (add a test that reaches them):\n" + "\n".join(
        f"  {cell}, line {line}: {code}" for cell, lines in uncovered.items() for line, code in lines)


@pytest.mark.parametrize("chapter", CHAPTERS, ids=lambda c: c.assignment)
def test_each_exercise_is_graded_on_its_own(root, chapter):
    """An exercise left blank fails every grade cell of its own and no other: a mistake costs the
    points of the exercise it is in, not those of every exercise that builds on it."""
    script = ("import json, sys; from pathlib import Path; "
              "from llmcourse.course.mistakes import blank_each_exercise as b; "
              "print(json.dumps(b(Path(sys.argv[1]), Path(sys.argv[2]))))")
    result = subprocess.run([sys.executable, "-c", script, str(chapter.solution_path(root)),
                             str(chapter.exercise_path(root))], cwd=root, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    failing = json.loads(result.stdout.strip().splitlines()[-1])
    cells = code_cells(chapter.solution_path(root))
    wrong = []
    for cell_id, failed in failing.items():
        own = [cells[i].id for i in grade_cells_of(cells, cell_id)]
        if failed != own:
            wrong.append(f"  {cell_id} left blank: failing {failed}, expected exactly {own}")
    assert not wrong, "exercises not graded on their own:\n" + "\n".join(wrong)


def test_grade_cells_have_no_bare_asserts(root):
    """Every assert in a grade cell says what was expected and what came back."""
    bare = []
    for chapter in CHAPTERS:
        for cell in code_cells(chapter.solution_path(root)):
            if cell.is_grade:
                asserts = [n for n in ast.walk(ast.parse(cell.source)) if isinstance(n, ast.Assert)]
                bare += [f"{chapter.assignment} {cell.id}: {ast.unparse(n)[:80]}" for n in asserts if n.msg is None]
    assert not bare, "asserts without a message:\n" + "\n".join(bare)


def test_the_runner_reports_a_mistake_its_tests_miss(root, tmp_path):
    """The catalogue's own check can fail: a 'mistake' that changes nothing is reported as missed."""
    chapter = next(c for c in CHAPTERS if c.assignment == "03-attention")
    catalogue = tmp_path / "noop.py"
    catalogue.write_text("from llmcourse.course.mistakes import Mistake\n"
                         "MISTAKES = [Mistake('ex5-kv', 'changes nothing', 'return 2 *', 'return 2 *')]\n")
    outcomes = run_in_subprocess(chapter.solution_path(root), catalogue, cwd=root)
    assert [o.caught for o in outcomes] == [False, False]
    nbformat.read(str(chapter.solution_path(root)), as_version=4)  # the notebook is untouched
