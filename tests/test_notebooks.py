"""The course's notebooks: full marks for the solutions, zero for the blank exercises, no drift."""
from __future__ import annotations

import os
import subprocess
import sys

import nbformat
import pytest

from llmcourse.course import nbgrader_tools
from llmcourse.course.chapters import CHAPTERS
from llmcourse.course.export import build_modules

pytestmark = [pytest.mark.course_infra]


@pytest.mark.parametrize("chapter", CHAPTERS, ids=lambda c: c.assignment)
def test_notebook_structure(root, chapter):
    notebook = nbformat.read(str(chapter.solution_path(root)), as_version=4)
    first = notebook.cells[0]
    assert first.cell_type == "markdown" and first.source.startswith("# "), "the notebook must open with a title"
    assert first.metadata.get("nbgrader", {}).get("locked"), "the title cell must be locked"
    graded = [c for c in notebook.cells if c.metadata.get("nbgrader", {}).get("grade")]
    assert graded, "a chapter notebook needs graded cells"
    for cell in graded:
        meta = cell.metadata["nbgrader"]
        assert meta["locked"] and meta["points"] > 0, f"{meta['grade_id']}: grade cells are locked and worth points"
        assert "### BEGIN HIDDEN TESTS" in cell.source, f"{meta['grade_id']}: every grade cell has hidden tests"
    assert all(not c.get("outputs") for c in notebook.cells if c.cell_type == "code"), (
        "commit solutions without outputs")


@pytest.mark.slow
@pytest.mark.parametrize("chapter", CHAPTERS[:1], ids=lambda c: c.assignment)
def test_solutions_full_marks_and_blank_exercises_zero(root, chapter):
    """Plain nbgrader agrees, on one chapter. Every chapter's contract (solution full marks, blank
    zero) is proved through the course's own grader in tests/test_grading.py."""
    scores = nbgrader_tools.autograde(root, chapter, {
        "solution": chapter.solution_path(root),
        "blank": chapter.exercise_path(root),
    })
    for cell in scores["solution"]:
        assert cell.score == cell.max_score, (f"the solution loses points on {cell.grade_id}: "
                                              f"{cell.score}/{cell.max_score}")
    for cell in scores["blank"]:
        assert cell.score == 0, (f"{cell.grade_id} gives {cell.score} points to the blank exercise: "
                                 "a test that cannot fail")
    assert len(scores["blank"]) == len(scores["solution"]) > 0


@pytest.mark.slow
def test_exercises_are_generated_from_solutions(root, tmp_path):
    nbgrader_tools.generate_exercises(root, out=tmp_path)
    for chapter in CHAPTERS:
        fresh, committed = chapter.exercise_path(tmp_path), chapter.exercise_path(root)
        assert committed.exists(), f"{committed} is missing: run ./course generate"
        assert nbgrader_tools.same_notebook(fresh, committed), (f"{committed} differs from solutions/: "
                                                                "run ./course generate")


def test_package_modules_are_exported_from_solutions(root):
    modules = build_modules([c.solution_path(root) for c in CHAPTERS], relative_to=root)
    assert set(modules) == {m for c in CHAPTERS for m in c.modules}
    for module, text in modules.items():
        committed = root / "llmcourse" / f"{module}.py"
        assert committed.exists() and committed.read_text(encoding="utf-8") == text, \
            f"llmcourse/{module}.py differs from solutions/: run ./course generate"


@pytest.mark.slow
def test_check_command_scores_a_notebook_and_tests_the_package(root, tmp_path):
    from llmcourse.course.places import exercise_titles

    chapter = CHAPTERS[0]
    # one row per exercise, however many grade cells score its parts
    n_exercises = len(set(exercise_titles(nbformat.read(str(chapter.solution_path(root)), as_version=4)).values()))
    before = chapter.exercise_path(root).read_bytes()
    env = dict(os.environ, LLMCOURSE_CHECK_RESULTS=str(tmp_path))  # the learner's progress stays theirs
    ok = subprocess.run([sys.executable, "-m", "llmcourse", "check", str(chapter.solution_path(root))],
                        cwd=root, capture_output=True, text=True, env=env)
    assert ok.returncode == 0, ok.stdout + ok.stderr
    table = ok.stdout.split("package tests")[0]
    assert "FAIL" not in ok.stdout and table.count(" pass") == n_exercises and "hidden tests included" in table
    assert "pass  test_bpe_round_trip_samples" in ok.stdout, "the package tests of the chapter ran"
    blank = subprocess.run([sys.executable, "-m", "llmcourse", "check", str(chapter.exercise_path(root))],
                           cwd=root, capture_output=True, text=True, env=env)
    assert blank.returncode == 1, blank.stdout + blank.stderr
    table = blank.stdout.split("package tests")[0]
    assert table.count("FAIL") == n_exercises and "raised NotImplementedError" in table, blank.stdout
    assert "FAIL  test_bpe_round_trip_samples" in blank.stdout
    assert chapter.exercise_path(root).read_bytes() == before, "check must never modify the notebook"


@pytest.mark.slow
def test_check_without_solutions_runs_the_visible_tests(root, tmp_path):
    """A copy of the course without solutions/ grades with the visible tests, and says so."""
    chapter = CHAPTERS[0]
    copy = tmp_path / "course"
    copy.mkdir()
    (copy / "nbgrader_config.py").write_text((root / "nbgrader_config.py").read_text())
    (copy / "exercises").mkdir()
    import shutil
    shutil.copytree(root / "exercises" / chapter.assignment, copy / "exercises" / chapter.assignment)
    from llmcourse.course.grading import grade_notebook
    from llmcourse.course.runner import Limits

    result = grade_notebook(copy, chapter, chapter.solution_path(root), Limits(cell_timeout=60))
    assert result.score == result.max_score > 0
    assert "BEGIN HIDDEN TESTS" not in "".join(c.source for c in result.executed.cells)


def replace_in_cell(notebook, cell_id: str, old: str, new: str) -> None:
    cell = next(c for c in notebook.cells if c.get("id") == cell_id)
    assert old in cell.source, f"{old!r} is not in cell {cell_id}"
    cell.source = cell.source.replace(old, new)


@pytest.mark.slow
def test_library_attention_scores_zero(root, tmp_path):
    """Using F.scaled_dot_product_attention, by name or disguised, zeroes the exercises it serves."""
    from llmcourse.course.chapters import chapter_by_assignment

    chapter = chapter_by_assignment("03-attention")
    submissions = {}
    named = nbformat.read(str(chapter.solution_path(root)), as_version=4)
    replace_in_cell(named, "ex4-attention", "out = attend(q, k, v, mask=mask, is_causal=is_causal)",
                    "out = torch.nn.functional.scaled_dot_product_attention(q, k, v, attn_mask=mask, "
                    "is_causal=is_causal,\n"
                    "                                                         enable_gqa=True)")
    disguised = nbformat.read(str(chapter.solution_path(root)), as_version=4)
    replace_in_cell(disguised, "ex1-attention", "return attention_weights(q, k, mask, scale) @ v",
                    "return getattr(torch.nn.functional, 'scaled_dot_' + 'product_attention')(q, k, v, attn_mask=mask)")
    for name, notebook in [("named", named), ("disguised", disguised)]:
        path = tmp_path / name / f"{chapter.notebook}.ipynb"
        path.parent.mkdir()
        nbformat.write(notebook, str(path))
        submissions[name] = path
    scores = nbgrader_tools.autograde(root, chapter, submissions)
    got = {student: {c.grade_id: (c.score, c.max_score) for c in cells} for student, cells in scores.items()}
    # named in Attention.forward: that exercise loses its points, the others keep theirs
    wrong = {g: v for g, v in got["named"].items() if v[0] != (0 if g.startswith("ex4") else v[1])}
    assert not wrong, got["named"]
    # reached at run time from scaled_dot_product_attention: exercise 1 loses its points; the
    # exercises that build on it are graded with the course's stand-in and keep theirs
    disguised = got["disguised"]
    assert all(v[0] == (0 if g.startswith("ex1") else v[1]) for g, v in disguised.items()), disguised
