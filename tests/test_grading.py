"""Grading a class: every kind of submission a real class sends in, as a generated notebook.

One batch of chapter-1 submissions is graded once (two workers, short limits) in a scratch
course folder; each test then checks one student's score and the reason given. Faults keep
the points of the cells that ran; tampering zeroes the exercise it touches, and says why.

A second class, the red team, attacks the operating-system boundary (bubblewrap) directly,
with code the Python audit hook does not see: signals and limits through the C library,
paths through directory descriptors and /proc, the gradebook through sqlite3, writes into the
course, the environment and HOME. Each attack prints whether it worked; the tests check the
scores, that no attack worked, and that the grader's files, the course, the environment and
HOME are byte-identical afterwards. That class needs bubblewrap and is skipped without it.
"""
from __future__ import annotations

import copy
import dataclasses
import hashlib
import json
import os
import shutil
import sqlite3
import tempfile
import time
import zipfile
from pathlib import Path

import nbformat
import pytest

from llmcourse.course import grading, isolation, runner
from llmcourse.course.chapters import CHAPTERS, chapter_by_assignment
from llmcourse.course.runner import Limits
from llmcourse.course.submission import is_grade_cell, nbgrader_meta

pytestmark = [pytest.mark.course_infra, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[1]
CH1 = chapter_by_assignment("01-tokenizers")
CH3 = chapter_by_assignment("03-attention")
LIMITS = Limits(cell_timeout=20, memory_bytes=4 * 2**30)


def grade_cell_points(root: Path, chapter) -> dict[str, float]:
    """{grade_id: points} of the instructor's notebook."""
    notebook = nbformat.read(str(chapter.solution_path(root)), as_version=4)
    return {nbgrader_meta(c)["grade_id"]: float(nbgrader_meta(c)["points"]) for c in notebook.cells
            if is_grade_cell(c)}


POINTS = grade_cell_points(ROOT, CH1)
"""Chapter 1's grade cells; an exercise is the grade ids' prefix (`ex3` for ex3-tests, ex3-reuse-tests)."""
EXERCISES = {grade_id.split("-")[0] for grade_id in POINTS}
FULL = sum(POINTS.values())


def points(*exercises) -> float:
    return sum(p for grade_id, p in POINTS.items() if grade_id.split("-")[0] in exercises)


def class_limits() -> Limits:
    """Isolated where bubblewrap works (as `grade` requires), else explicitly unisolated."""
    mode = isolation.REQUIRED if isolation.unavailable() is None else isolation.OFF
    return dataclasses.replace(LIMITS, isolation=mode)


def scratch_course(root: Path, target: Path, chapters) -> Path:
    target.mkdir(parents=True)
    shutil.copy2(root / "nbgrader_config.py", target / "nbgrader_config.py")
    for chapter in chapters:
        for kind in ("solutions", "exercises"):
            shutil.copytree(root / kind / chapter.assignment, target / kind / chapter.assignment)
    return target


def completed(root: Path, chapter) -> nbformat.NotebookNode:
    """The learner's notebook with every solution cell filled in (grade cells as released)."""
    solution = nbformat.read(str(chapter.solution_path(root)), as_version=4)
    answers = {c.metadata["nbgrader"]["grade_id"]: c.source for c in solution.cells
               if c.metadata.get("nbgrader", {}).get("solution")}
    notebook = nbformat.read(str(chapter.exercise_path(root)), as_version=4)
    for cell in notebook.cells:
        grade_id = cell.metadata.get("nbgrader", {}).get("grade_id")
        if grade_id in answers:
            cell.source = answers[grade_id]
    return notebook


def cell(notebook, grade_id):
    return next(c for c in notebook.cells if c.metadata.get("nbgrader", {}).get("grade_id") == grade_id)


def prepend(notebook, grade_id, code):
    target = cell(notebook, grade_id)
    target.source = code + "\n" + target.source


def insert_after(notebook, grade_id, code):
    index = notebook.cells.index(cell(notebook, grade_id))
    notebook.cells.insert(index + 1, nbformat.v4.new_code_cell(code))


def build_submissions(root: Path, course: Path, folder: Path) -> dict[str, str]:
    """Write one folder (or file) per student; returns {student: what it tests}."""
    good = completed(root, CH1)
    blank = nbformat.read(str(CH1.exercise_path(root)), as_version=4)
    cases: dict[str, nbformat.NotebookNode | bytes | None] = {}

    cases["correct"] = good
    cases["blank"] = blank
    nb = copy.deepcopy(good)
    prepend(nb, "ex1-byte-tokenizer", "while True:\n    pass")
    cases["infinite-loop"] = nb
    nb = copy.deepcopy(good)
    prepend(nb, "ex5-viterbi", "import time\ntime.sleep(10_000)")
    cases["sleeps"] = nb
    nb = copy.deepcopy(good)
    prepend(nb, "ex6-em-step", "import signal\nsignal.signal(signal.SIGINT, signal.SIG_IGN)\nwhile True:\n    pass")
    cases["ignores-interrupt"] = nb
    nb = copy.deepcopy(good)
    prepend(nb, "ex4-bpe-encode", "import os\nos._exit(1)")
    cases["os-exit"] = nb
    nb = copy.deepcopy(good)
    prepend(nb, "ex6-em-step", "import ctypes\nctypes.string_at(0)")
    cases["segfault"] = nb
    nb = copy.deepcopy(good)
    prepend(nb, "ex5-viterbi", "hog = bytearray(8 * 2**30)")
    cases["memory-hog"] = nb
    nb = copy.deepcopy(good)
    cell(nb, "ex3-tests").source = "pass"
    cases["grade-cell-pass"] = nb
    nb = copy.deepcopy(good)
    nb.cells.remove(cell(nb, "ex2-tests"))
    cases["grade-cell-deleted"] = nb
    nb = copy.deepcopy(good)
    tests = cell(nb, "ex1-tests")
    nb.cells.remove(tests)
    nb.cells.insert(nb.cells.index(cell(nb, "ex1-byte-tokenizer")), tests)
    cases["reordered"] = nb
    nb = copy.deepcopy(good)
    for c in nb.cells:
        c.metadata.pop("nbgrader", None)
    cases["metadata-stripped"] = nb
    nb = copy.deepcopy(good)
    for c in nb.cells:
        c.metadata.pop("nbgrader", None)
        c.id = "x" + c.id[::-1]
    cases["ids-changed"] = nb
    cases["not-json"] = b'{"cells": [ this is not json'
    cases["empty-file"] = b""
    cases["no-notebook"] = None
    nb = copy.deepcopy(good)
    nb.metadata["kernelspec"] = {"name": "julia-1.10", "display_name": "Julia", "language": "julia"}
    cases["other-kernel"] = nb
    nb = copy.deepcopy(good)
    insert_after(nb, "ex1-byte-tokenizer", "print('spam ' * 1000000)")
    cases["huge-output"] = nb
    nb = copy.deepcopy(good)
    cell(nb, "ex1-byte-tokenizer").source += (
        "\n\nclass AlwaysEqual(list):\n    def __eq__(self, other):\n        return True\n\n"
        "ByteTokenizer.encode = lambda self, text: AlwaysEqual()\n")
    cases["always-equal"] = nb
    nb = copy.deepcopy(good)
    insert_after(nb, "ex6-em-step", "import numpy.testing\nnumpy.testing.assert_allclose = lambda *a, **k: None")
    cases["patch-numpy-testing"] = nb
    nb = copy.deepcopy(good)
    prepend(nb, "ex1-byte-tokenizer", "import builtins\nbuiltins.isinstance = lambda *args: True")
    cases["patch-builtins"] = nb
    nb = copy.deepcopy(good)
    insert_after(nb, "ex5-viterbi", "setattr(__import__('torch'), 'allclose', lambda *a, **k: True)")
    cases["patch-torch-dynamically"] = nb
    nb = copy.deepcopy(good)
    insert_after(nb, "ex2-pairs-merge", f"open({str(course / 'gradebook.db')!r}, 'ab').write(b'x')")
    cases["write-gradebook"] = nb
    hidden = f"import os\nwhere = os.path.join({str(course)!r}, %s)\n"
    nb = copy.deepcopy(good)
    insert_after(nb, "ex6-em-step", hidden % "'grade' + 'book.db'" + "open(where, 'ab').write(b'x')")
    cases["write-gradebook-hidden"] = nb
    nb = copy.deepcopy(good)
    insert_after(nb, "ex3-learn-merges", hidden % "'sub' + 'mitted', 'correct', '01-tokenizers', 'tokenizers.ipynb'"
                 + "open(where, 'w').write('{}')")
    cases["write-other-student"] = nb
    nb = copy.deepcopy(good)
    insert_after(nb, "ex4-bpe-encode", hidden % "'solu' + 'tions', '01-tokenizers', 'tokenizers.ipynb'"
                 + "leak = open(where).read()")
    cases["read-solutions"] = nb

    nb = copy.deepcopy(good)
    insert_after(nb, "ex4-bpe-encode", "import torch.testing\ntorch.testing.assert_close = lambda *a, **k: None")
    cases["patch-torch-testing"] = nb
    nb = copy.deepcopy(good)
    insert_after(nb, "ex5-viterbi", "import socket\nsocket.create_connection(('192.0.2.1', 80), timeout=2)")
    cases["network"] = nb
    nb = copy.deepcopy(good)
    insert_after(nb, "ex6-em-step", "import subprocess\nsubprocess.run(['true'])")
    cases["spawn-process"] = nb

    for student, content in cases.items():
        place = folder / student / CH1.assignment
        place.mkdir(parents=True)
        if isinstance(content, bytes):
            (place / "tokenizers.ipynb").write_bytes(content)
        elif content is not None:
            nbformat.write(content, str(place / "tokenizers.ipynb"))
    # an extra notebook next to the right one
    (folder / "extra-notebook" / "01-tokenizers").mkdir(parents=True)
    nbformat.write(good, str(folder / "extra-notebook" / "01-tokenizers" / "tokenizers.ipynb"))
    nbformat.write(blank, str(folder / "extra-notebook" / "01-tokenizers" / "scratch.ipynb"))
    # non-ASCII student and file names: a folder without the assignment level, a renamed file
    (folder / "José Müller").mkdir()
    nbformat.write(good, str(folder / "José Müller" / "tokenizers (копия).ipynb"))
    # a learning-management system's zip of one student
    with zipfile.ZipFile(folder / "李雷.zip", "w") as bundle:
        bundle.writestr("01-tokenizers/tokenizers.ipynb", nbformat.writes(good))
        bundle.writestr("../../escape.txt", "a zip entry that tries to leave the folder")
    # a Canvas download (flat files named <student>_<ids>_<file>) and a Moodle one (folders)
    with zipfile.ZipFile(folder / "canvas-export.zip", "w") as bundle:
        bundle.writestr("smithjane_41_1093_tokenizers.ipynb", nbformat.writes(good))
        bundle.writestr("doejohn_LATE_42_1093_tokenizers.ipynb", nbformat.writes(blank))
    with zipfile.ZipFile(folder / "moodle-export.zip", "w") as bundle:
        bundle.writestr("Ada Lovelace_731_assignsubmission_file_/tokenizers.ipynb", nbformat.writes(good))
    return {name: name for name in [*cases, "extra-notebook", "José Müller", "李雷"]}


@pytest.fixture(scope="module")
def graded(root, tmp_path_factory):
    base = tmp_path_factory.mktemp("grading")
    course = scratch_course(root, base / "course", [CH1])
    folder = base / "submissions"
    folder.mkdir()
    build_submissions(root, course, folder)
    # every learner cell runs as written, so the faults and attacks above reach the sandbox itself
    limits = dataclasses.replace(class_limits(), run_own_cells=True)
    report = grading.grade_class(course, CH1, folder, limits, jobs=2, feedback=True, progress=lambda *_: None)
    results = {r.student: r for r in report.results}
    return course, report, results


def scores(result) -> dict[str, float]:
    return {e.grade_id: e.score for e in result.exercises}


def expect(results, student, total, zero=(), reason=None):
    """`student` scored `total`, with zero on the grade cells `zero` names: grade ids, or exercises (`ex1`)."""
    result = results[student]
    got = scores(result)
    assert set(got) == set(POINTS), f"{student}: graded cells {sorted(got)}"
    for grade_id, worth in POINTS.items():
        want = 0 if grade_id in zero or grade_id.split("-")[0] in zero else worth
        assert got[grade_id] == want, (f"{student}: {grade_id} scored {got[grade_id]}, "
                                       f"expected {want}; {result.findings}")
    assert result.score == total
    if reason is not None:
        text = " ".join(f.message for f in result.findings) + " " + " ".join(e.message for e in result.exercises)
        assert reason in text, f"{student}: no reason mentioning {reason!r} in {text!r}"
    return result


def expect_zero(results, student, zero, reason=None):
    """`student` lost exactly the grade cells (or exercises) `zero`."""
    lost = sum(p for grade_id, p in POINTS.items() if grade_id in zero or grade_id.split("-")[0] in zero)
    return expect(results, student, FULL - lost, zero=zero, reason=reason)


def test_correct_and_blank(graded):
    _, _, results = graded
    expect(results, "correct", FULL)
    assert not results["correct"].needs_review
    expect(results, "blank", 0, zero=EXERCISES, reason="NotImplementedError")


def test_faults_keep_the_cells_that_ran(graded):
    _, _, results = graded
    expect(results, "infinite-loop", FULL - points("ex1"), zero={"ex1"}, reason="longer than the limit")
    expect(results, "sleeps", FULL - points("ex5"), zero={"ex5"}, reason="longer than the limit")
    expect(results, "ignores-interrupt", FULL - points("ex6"), zero={"ex6"}, reason="could not be interrupted")
    expect(results, "os-exit", points("ex1", "ex2", "ex3"), zero={"ex4", "ex5", "ex6"}, reason="exit status 1")
    expect(results, "segfault", FULL - points("ex6"), zero={"ex6"}, reason="segmentation fault")
    expect(results, "memory-hog", FULL - points("ex5"), zero={"ex5"}, reason="raised MemoryError")


def test_edited_deleted_reordered_and_stripped_cells_are_restored(graded):
    _, _, results = graded
    expect(results, "grade-cell-pass", FULL, reason="ex3-tests was edited")
    expect(results, "grade-cell-deleted", FULL, reason="ex2-tests was deleted")
    expect(results, "reordered", FULL, reason="released order")
    expect(results, "metadata-stripped", FULL, reason="lost its nbgrader metadata")
    expect(results, "ids-changed", FULL, reason="the names it defines")


def test_unreadable_missing_and_extra_notebooks(graded):
    _, _, results = graded
    expect(results, "not-json", 0, zero=EXERCISES, reason="not valid JSON")
    expect(results, "empty-file", 0, zero=EXERCISES, reason="empty file")
    expect(results, "no-notebook", 0, zero=EXERCISES, reason="no notebook tokenizers.ipynb was submitted")
    expect(results, "extra-notebook", FULL, reason="unexpected notebook 'scratch.ipynb' was ignored")
    other = expect(results, "other-kernel", FULL, reason="julia-1.10")
    assert not other.needs_review


def test_non_ascii_names_zips_and_huge_output(graded):
    course, _, results = graded
    expect(results, "José Müller", FULL, reason="tokenizers (копия).ipynb")
    expect(results, "李雷", FULL, reason="unsafe path")
    assert not (course.parent / "escape.txt").exists() and not (course / "escape.txt").exists()
    expect(results, "smithjane", FULL)
    expect(results, "doejohn", 0, zero=EXERCISES)
    expect(results, "Ada Lovelace", FULL)
    assert not results["smithjane"].needs_review and not results["Ada Lovelace"].needs_review
    huge = expect(results, "huge-output", FULL, reason="output truncated")
    assert len(json.dumps(huge.executed)) < 2_000_000, "the flood must not reach the graded notebook"


def test_cheating_zeroes_the_exercise_and_says_why(graded):
    """A cell that tampers zeroes its whole exercise; a wrong value (always-equal) fails only its own part."""
    _, _, results = graded
    expect_zero(results, "always-equal", {"ex1-tests"}, reason="must return a list")
    expect_zero(results, "patch-numpy-testing", {"ex6"}, reason="numpy.testing.assert_allclose")
    expect_zero(results, "patch-builtins", {"ex1"}, reason="builtins.isinstance")
    expect_zero(results, "patch-torch-dynamically", {"ex5"}, reason="torch.allclose")
    expect_zero(results, "patch-torch-testing", {"ex4"}, reason="torch.testing.assert_close")
    for student in ("patch-numpy-testing", "patch-builtins", "patch-torch-dynamically", "patch-torch-testing"):
        assert results[student].needs_review, f"{student} should be on the list for a human look"


def test_grading_files_and_other_students_are_out_of_reach(graded):
    course, report, results = graded
    expect_zero(results, "write-gradebook", {"ex2"}, reason="names the grader's files")
    expect_zero(results, "write-gradebook-hidden", {"ex6"}, reason="not allowed")
    expect_zero(results, "write-other-student", {"ex3"}, reason="not allowed")
    expect_zero(results, "read-solutions", {"ex4"}, reason="not allowed")
    expect_zero(results, "network", {"ex5"}, reason="network access")
    expect_zero(results, "spawn-process", {"ex6"}, reason="starting programs")
    raw = course / "submitted" / "correct" / "01-tokenizers" / "tokenizers.ipynb"
    assert nbformat.read(str(raw), as_version=4).cells, "another student's submission was changed"
    with sqlite3.connect(course / "gradebook.db") as db:  # the gradebook is intact and readable
        assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"


def test_gradebook_feedback_and_summary(graded):
    course, report, results = graded
    for student, result in results.items():
        assert report.recorded[student] in (None, result.score), (f"{student}: gradebook {report.recorded[student]} "
                                                                  f"vs {result.score}")
    assert report.recorded["correct"] == FULL and report.recorded["blank"] == 0
    assert (course / "feedback" / "correct" / "01-tokenizers" / "tokenizers.html").exists()
    grades = (report.summary_path.parent / "grades.csv").read_text(encoding="utf-8")
    assert "correct" in grades and "李雷" in grades and "01-tokenizers" in grades
    summary = report.summary_path.read_text(encoding="utf-8")
    assert "José Müller" in summary and "李雷" in summary
    flagged = {student for student, _ in report.review()}
    assert {"not-json", "empty-file", "no-notebook", "os-exit", "segfault", "write-gradebook"} <= flagged
    assert "correct" not in flagged and "blank" not in flagged


def test_regrading_one_student_leaves_the_others_alone(graded, tmp_path):
    course, report, _ = graded
    before = dict(report.recorded)
    folder = tmp_path / "late"
    (folder / "blank" / "01-tokenizers").mkdir(parents=True)
    nbformat.write(completed(ROOT, CH1), str(folder / "blank" / "01-tokenizers" / "tokenizers.ipynb"))
    again = grading.grade_class(course, CH1, folder, class_limits(), jobs=1, feedback=False,
                                progress=lambda *_: None)
    assert again.recorded["blank"] == FULL
    after = grading.gradebook_scores(course, CH1, before)
    for student, score in before.items():
        if student != "blank":
            assert after[student] == score, f"{student}'s grade changed from {score} to {after[student]}"


HOOKS_WHEN_CALLED = '''#| export tokenizer
class ByteTokenizer:
    """Plants hooks in the shell when the tests call it, to hide that it fails."""

    def encode(self, text):
        shell = globals()["get_" + "ipython"]()
        setattr(shell, "show" + "traceback", lambda *args, **kwargs: None)  # errors reported as nothing
        getattr(shell, "input_transformers" + "_post").append(lambda lines: ["pass\\n"])  # later cells skipped
        shell.events.register("post_run_cell", lambda result: None)
        raise ValueError("wrong, and hidden")

    def decode(self, ids):
        return ""
'''

MODULES_WHEN_CALLED = '''
def merge(ids, pair, new_id):
    """Swaps the tests' checks module for one whose checks pass everything, when called."""
    import types
    fake = types.ModuleType("llmcourse.course.checks")
    fake.__getattr__ = lambda name: (lambda *args, **kwargs: None)
    __import__("sys").__dict__["mod" + "ules"]["llmcourse.course.checks"] = fake
    return []
'''


@pytest.fixture(scope="module")
def verdicts(root, tmp_path_factory):
    """Chapter 1 notebooks graded as `grade` grades them (scratch cells not run, shell watched)."""
    base = tmp_path_factory.mktemp("verdicts")
    course = scratch_course(root, base / "course", [CH1])
    good, blank = completed(root, CH1), nbformat.read(str(CH1.exercise_path(root)), as_version=4)
    transformer = ("shell = globals()['get_' + 'ipython']()\n"
                   "getattr(shell, 'input_transformers' + '_post').append(lambda lines: ['pass\\n'])\n")
    notebooks = {}
    notebooks["scratch-transformer"] = copy.deepcopy(blank)  # every later cell would be `pass`, tests included
    insert_after(notebooks["scratch-transformer"], "ex1-byte-tokenizer", transformer)
    notebooks["scratch-redefines"] = copy.deepcopy(good)  # a scratch cell that breaks a solution is not run
    insert_after(notebooks["scratch-redefines"], "ex2-pairs-merge", "def merge(ids, pair, new_id):\n    return ids")
    notebooks["hooks-when-called"] = copy.deepcopy(good)
    cell(notebooks["hooks-when-called"], "ex1-byte-tokenizer").source = HOOKS_WHEN_CALLED
    notebooks["modules-when-called"] = copy.deepcopy(good)
    cell(notebooks["modules-when-called"], "ex2-pairs-merge").source += MODULES_WHEN_CALLED
    notebooks["top-level-in-export"] = copy.deepcopy(good)
    prepend(notebooks["top-level-in-export"], "ex3-learn-merges", "print('runs on import')")
    notebooks["export-helper-cell"] = copy.deepcopy(good)  # a helper of the learner's in an export cell of their own
    solution = cell(notebooks["export-helper-cell"], "ex2-pairs-merge")
    solution.source = solution.source.replace("    first, second = pair\n", "    first, second = unpack(pair)\n")
    insert_after(notebooks["export-helper-cell"], "ex1-byte-tokenizer",
                 "#| export tokenizer\ndef unpack(pair):\n    return pair[0], pair[1]")
    results = {}
    for name, notebook in notebooks.items():
        path = base / name / f"{CH1.notebook}.ipynb"
        path.parent.mkdir()
        nbformat.write(notebook, str(path))
        results[name] = grading.grade_notebook(course, CH1, path, class_limits(), student=name)
    return results


def test_scratch_cells_are_not_run(verdicts):
    expect(verdicts, "scratch-transformer", 0, zero=EXERCISES)
    expect(verdicts, "scratch-redefines", FULL, reason="not run")
    expect(verdicts, "export-helper-cell", FULL)


def test_shell_hooks_and_module_swaps_planted_by_called_code_zero_the_exercise(verdicts):
    expect_zero(verdicts, "hooks-when-called", {"ex1"}, reason="the shell's")
    # the swap is seen in every cell that called merge: exercise 2's tests and the given cells after it
    result = verdicts["modules-when-called"]
    got = scores(result)
    assert all(got[g] == 0 for g in POINTS if g.startswith("ex2")), got
    assert result.score <= FULL - points("ex2"), got
    assert "sys.modules" in " ".join(f.message for f in result.findings), result.findings


def test_top_level_code_in_an_export_cell_is_not_run(verdicts):
    expect_zero(verdicts, "top-level-in-export", {"ex3"}, reason="export")


def test_learner_check_on_attention_refuses_the_reference_and_library(root, tmp_path):
    """Chapter 3: the reference solution (by name or disguised) or PyTorch's attention score zero, with the reason."""
    course = scratch_course(root, tmp_path / "course", [CH3])
    good = completed(root, CH3)
    named = copy.deepcopy(good)
    prepend(named, "ex5-kv", "from llmcourse.attention import kv_cache_bytes as reference_answer")
    disguised = copy.deepcopy(good)
    cell(disguised, "ex5-kv").source += ("\n\nimport importlib\n"
                                         "def kv_cache_bytes(*args, **kwargs):\n"
                                         "    return importlib.import_module('llmcourse.' + 'attention')"
                                         ".kv_cache_bytes(*args, **kwargs)\n")
    library = copy.deepcopy(good)
    cell(library, "ex4-attention").source = cell(library, "ex4-attention").source.replace(
        "out = attend(q, k, v, mask=mask, is_causal=is_causal)",
        "out = torch.nn.functional.scaled_dot_product_attention(q, k, v, attn_mask=mask, is_causal=is_causal,\n"
        "                                                         enable_gqa=True)")
    results = {}
    for name, notebook in [("good", good), ("named", named), ("disguised", disguised), ("library", library)]:
        path = tmp_path / name / "03-attention" / "attention.ipynb"
        path.parent.mkdir(parents=True)
        nbformat.write(notebook, str(path))
        results[name] = grading.grade_notebook(course, CH3, path, LIMITS)
    assert results["good"].score == results["good"].max_score == 12
    for name in ("named", "disguised"):
        got = {e.grade_id: (e.score, e.max_score) for e in results[name].exercises}
        wrong = {g: v for g, v in got.items() if v[0] != (0 if g.startswith("ex5") else v[1])}
        assert not wrong, f"{name}: only exercise 5 (which used the reference) scores zero, got {got}"
        text = (" ".join(f.message for f in results[name].findings)
                + " ".join(e.message for e in results[name].exercises))
        assert "reference solution" in text, text
    got = {e.grade_id: (e.score, e.max_score) for e in results["library"].exercises}
    wrong = {g: v for g, v in got.items() if v[0] != (0 if g.startswith("ex4") else v[1])}
    assert not wrong, f"only exercise 4 (the layer that called PyTorch's attention) scores zero, got {got}"
    assert "must not use scaled_dot_product_attention" in " ".join(e.message for e in results["library"].exercises)


@pytest.mark.parametrize("assignment", [chapter.assignment for chapter in CHAPTERS])
def test_every_chapter_grades_full_and_blank_in_the_sandbox(root, assignment):
    """The sandbox (limits, policy, watch) lets every chapter's real tests run, and the blank scores zero."""
    chapter = chapter_by_assignment(assignment)
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / chapter.assignment / f"{chapter.notebook}.ipynb"
        path.parent.mkdir()
        nbformat.write(completed(root, chapter), str(path))
        full = grading.grade_notebook(root, chapter, path, Limits(cell_timeout=120))
        blank = grading.grade_notebook(root, chapter, chapter.exercise_path(root), Limits(cell_timeout=120))
    assert full.score == full.max_score > 0, [(e.grade_id, e.message) for e in full.exercises if not e.passed]
    assert not [f for f in full.findings if f.kind != "unisolated"], full.findings
    assert blank.score == 0 and all(e.message for e in blank.exercises)


# ---------------------------------------------------------------------------------------------
# Isolation without a kernel: the mode a grader runs in, and the sandbox's view of the files.


def test_grade_refuses_without_the_sandbox_unless_told(monkeypatch, tmp_path):
    monkeypatch.setattr(isolation, "unavailable", lambda: "bubblewrap (bwrap) is not installed: install it")
    course = scratch_course(ROOT, tmp_path / "course", [CH1])
    (tmp_path / "class").mkdir()
    with pytest.raises(isolation.IsolationError, match=f"{isolation.UNISOLATED_ENV}=1"):
        grading.grade_class(course, CH1, tmp_path / "class", LIMITS, jobs=1, progress=lambda *_: None)
    assert not (course / grading.GRADING_DIR).exists(), "nothing is touched before the refusal"
    # a learner's check runs unisolated and says so; an instructor's explicit choice is described as such
    missing = grading.grade_notebook(course, CH1, tmp_path / "missing.ipynb", LIMITS)
    assert missing.isolation.startswith("unisolated (bubblewrap (bwrap) is not installed")
    assert any(f.kind == "unisolated" and not f.review for f in missing.findings)
    monkeypatch.setenv(isolation.UNISOLATED_ENV, "1")
    limits = grading.limits_from_args(type("Args", (), {})())
    assert limits.isolation == isolation.OFF
    assert isolation.describe(False, limits.isolation).startswith("UNISOLATED (asked for)")


@pytest.fixture(scope="module")
def bwrap():
    reason = isolation.unavailable()
    if reason is not None:
        pytest.skip(f"needs bubblewrap for the grading sandbox: {reason}")


def test_the_sandbox_binds_only_what_the_kernel_needs(bwrap, tmp_path):
    course = scratch_course(ROOT, tmp_path / "course", [CH1])
    secrets = grading.protected_paths(course, CH1)
    folders = isolation.PrivateFolders.create()
    try:
        command = isolation.bwrap_command(folders, ["python"], {}, ["llmcourse.tokenizer"], secrets)
    finally:
        folders.remove()
    package = isolation.python_layout().package
    sources = {Path(command[i + 1]) for i, arg in enumerate(command) if arg in {"--bind", "--ro-bind"}}
    writable = {Path(command[i + 1]) for i, arg in enumerate(command) if arg == "--bind"}
    for flag in ("--unshare-user", "--disable-userns", "--unshare-pid", "--unshare-net", "--die-with-parent",
                 "--new-session", "--clearenv"):
        assert flag in command, f"{flag} missing from {command}"
    assert command[command.index("--cap-drop") + 1] == "ALL"
    assert writable == {folders.tmp, folders.home, folders.work, folders.run}, writable
    assert package / "course" in sources and package / "tokenizer.py" not in sources
    for secret in [course, *secrets]:
        assert not any(isolation.within(Path(secret), b) for b in sources), f"{secret} is in the sandbox's view"
    assert not any(b == package.parent or isolation.within(package.parent, b) for b in sources), \
        "the folder that holds the course is never bound, only its package"


def test_a_kernel_dies_with_its_grader(bwrap, tmp_path):
    """SIGKILL the grading process while its kernel runs a cell: the kernel (in its own namespace) goes too."""
    import subprocess
    import sys

    grader = tmp_path / "grader.py"
    grader.write_text(
        "import nbformat, sys, tempfile\nfrom pathlib import Path\n"
        "from llmcourse.course.runner import Limits, execute\n"
        "nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell('import time\\ntime.sleep(600)')])\n"
        "execute(nb, Path(tempfile.mkdtemp()), Limits(cell_timeout=600), isolated=True)\n", encoding="utf-8")
    # a short temporary folder, so that the kernel's sockets lie inside it and go with it afterwards
    private = Path(tempfile.mkdtemp(prefix="llmcourse-test-"))
    process = subprocess.Popen([sys.executable, str(grader)], env={**os.environ, "TMPDIR": str(private)})
    try:
        wait_for_kernel_then_kill_grader(process, private)
    finally:
        process.kill()
        process.wait()
        isolation.remove_tree(private)  # a killed grader cannot clean up after itself


def wait_for_kernel_then_kill_grader(process, private: Path) -> None:
    """Once the kernel (started with TMPDIR=`private`) runs, SIGKILL the grader; the kernel must go within 10 s."""
    import signal
    import time

    import psutil

    def kernels():
        found = []
        for p in psutil.process_iter(["cmdline", "name"]):
            line = " ".join(p.info["cmdline"] or [])
            if str(private) in line and "llmcourse.course.sandbox" in line:
                found.append(p.info)
        return found

    deadline = time.monotonic() + 120
    while not any((p["name"] or "").startswith("python") for p in kernels()) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert kernels(), "the kernel did not start"
    process.send_signal(signal.SIGKILL)
    process.wait()
    deadline = time.monotonic() + 10
    while kernels() and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not kernels(), f"still running after the grader died: {[p['cmdline'][:3] for p in kernels()]}"


# ---------------------------------------------------------------------------------------------
# The red team: attacks on the operating-system boundary, each in one cell of a chapter-1 notebook.

MARKER = "ATTACK-SUCCEEDED"
"""What an attack cell prints when one of its steps worked; no executed notebook may contain it."""

ATTACK_TOOLS = '''
import ctypes, glob, json, marshal, os, resource, signal, socket, sqlite3
_libc = ctypes.CDLL(None, use_errno=True)


def native(name, *args):
    """A C library call, which no audit hook sees; raises OSError as Python's own calls do."""
    result = getattr(_libc, name)(*args)
    if result == -1:
        number = ctypes.get_errno()
        raise OSError(number, os.strerror(number))
    return result


def regardless(step):
    """A step whose effect the grader checks itself (the call may well succeed, harmlessly)."""
    try:
        print("sent:", step())
    except OSError as error:
        print(f"attack failed: {error}")


def some(items):
    items = list(items)
    if not items:
        raise LookupError("none")
    return items


def attempt(what, step):
    try:
        value = step()
    except Exception as error:
        print(f"attack failed: {what}: {type(error).__name__}: {error}")
        return None
    print(f"ATTACK-SUCCEEDED: {what}")
    return value


def opened_at(folder, name, flags=os.O_RDONLY):
    """name, relative to a directory descriptor of folder: the audit hook sees only `name`."""
    return os.open(name, flags, 0o644, dir_fd=os.open(folder, os.O_RDONLY | os.O_DIRECTORY))


def read_at(folder, name):
    return os.read(opened_at(folder, name), 1 << 26)


def write_at(folder, name, data=b"planted by the red team\\n"):
    handle = opened_at(folder, name, os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
    return os.write(handle, data)


def cheat_with(code):
    """Before every later cell, put back the stolen definitions (the learner's blank ones replace them)."""
    shell = globals()["get_" + "ipython"]()
    shell.events.register("pre_run_cell", lambda *_: exec(code, shell.user_ns))
    exec(code, shell.user_ns)


def export_cells(notebook_bytes):
    cells = json.loads(notebook_bytes)["cells"]
    return "\\n\\n".join("".join(c["source"]) for c in cells if "".join(c["source"]).startswith("#| export"))
'''


def red_team_cases(root: Path, course: Path, submissions: Path, home: Path, port: int) -> dict:
    """{student: (notebook, expected total, exercises expected at zero, reason)} for the red-team class."""
    good, blank = completed(root, CH1), nbformat.read(str(CH1.exercise_path(root)), as_version=4)
    package = isolation.python_layout().package
    site = next(p for p in isolation.python_layout().path if p.name == "site-packages")
    pyc = Path(importlib_cache(package / "tokenizer.py"))
    values = {"COURSE": str(course), "SUBMISSIONS": str(submissions), "HOME": str(home), "PORT": port,
              "GRADER": os.getpid(), "PACKAGE": str(package), "SITE": str(site),
              "PYC": str(pyc.relative_to(package))}
    constants = "".join(f"{name} = {value!r}\n" for name, value in values.items())
    # Names the grader scans submissions for are split so that the cells run and meet the boundary itself.
    solutions = '("solu" + "tions/01-tokenizers/tokenizers.ipynb")'
    book = '("grade" + "book.db")'
    cases = {}

    def attack(student, base, after, code, total, zero=(), reason=None):
        notebook = copy.deepcopy(base)
        insert_after(notebook, after, ATTACK_TOOLS + constants + code)
        cases[student] = (notebook, total, set(zero), reason)

    attack("rt-kill-native", good, "ex1-byte-tokenizer", """
regardless(lambda: native("kill", os.getppid(), signal.SIGKILL))  # the grader, unless a PID namespace is between
regardless(lambda: native("kill", -1, signal.SIGSTOP))  # every process this one may signal
regardless(lambda: native("kill", -1, signal.SIGKILL))
attempt("SIGKILL to the grader's process id", lambda: native("kill", GRADER, signal.SIGKILL))
attempt("SIGSTOP to the grader's process id", lambda: native("kill", GRADER, signal.SIGSTOP))
""", FULL)
    attack("rt-prlimit-native", good, "ex2-pairs-merge", """
class Limit(ctypes.Structure):
    _fields_ = [("soft", ctypes.c_ulong), ("hard", ctypes.c_ulong)]
tiny = Limit(3, 3)
regardless(lambda: native("prlimit", os.getppid(), resource.RLIMIT_NOFILE, ctypes.byref(tiny), None))
for kind in (resource.RLIMIT_NOFILE, resource.RLIMIT_AS, resource.RLIMIT_CPU, resource.RLIMIT_NPROC):
    attempt(f"prlimit of the grader ({kind})", lambda: native("prlimit", GRADER, kind, ctypes.byref(tiny), None))
""", FULL)
    # the audit hook refuses the plain-Python calls, which zeroes the exercise they are in
    attack("rt-kill-python", good, "ex2-pairs-merge", "os.kill(os.getppid(), signal.SIGKILL)",
           FULL - points("ex2"), {"ex2"}, "signalling other processes")
    attack("rt-prlimit-python", good, "ex3-learn-merges",
           "resource.prlimit(os.getppid(), resource.RLIMIT_NOFILE, (3, 3))",
           FULL - points("ex3"), {"ex3"}, "changing resource limits")
    attack("rt-proc", good, "ex4-bpe-encode", """
from ipykernel.connect import get_connection_file
pids = [p for p in os.listdir("/proc") if p.isdigit()]
print("processes in /proc:", pids)
attempt("other processes than this one and its init", lambda: some(p for p in pids if p not in {"1", str(os.getpid())}))
for pid in pids:
    for way in ("root", "cwd"):
        attempt(f"/proc/{pid}/{way} reaches the course",
                lambda: read_at(f"/proc/{pid}/{way}" + COURSE, "nbgrader" + "_config.py"))
found = glob.glob("/tmp/**/*.json", recursive=True) + glob.glob("/dev/shm/*")
print("files in /tmp and /dev/shm:", found)
attempt("another kernel's connection file", lambda: some(f for f in found if f != get_connection_file()))
""", FULL)
    attack("rt-read-solutions", blank, "ex1-byte-tokenizer", f"""
stolen = attempt("solutions through a directory descriptor", lambda: read_at(COURSE, {solutions}))
stolen = stolen or attempt("solutions by path", lambda: open(COURSE + "/" + {solutions}, "rb").read())
if stolen:
    cheat_with(export_cells(stolen))
""", 0, EXERCISES)
    attack("rt-read-reference", blank, "ex1-byte-tokenizer", """
stolen = attempt("the reference module by path", lambda: open(PACKAGE + "/tokenizer.py").read())
stolen = stolen or attempt("the reference module through a directory descriptor",
                           lambda: read_at(PACKAGE, "tokenizer.py").decode())
compiled = attempt("the reference module's byte code", lambda: read_at(PACKAGE, PYC))
attempt("the reference module in the package's listing", lambda: [n for n in os.listdir(PACKAGE)
                                                                   if n.startswith("tokenizer")][0])
if stolen:
    cheat_with(stolen)
elif compiled:
    cheat_with(marshal.loads(compiled[16:]))
""", 0, EXERCISES)
    attack("rt-read-through-proc", blank, "ex1-byte-tokenizer", f"""
for pid in [p for p in os.listdir("/proc") if p.isdigit()]:
    for way in ("root", "cwd"):
        stolen = attempt(f"solutions through /proc/{{pid}}/{{way}}",
                         lambda: read_at(f"/proc/{{pid}}/{{way}}" + COURSE, {solutions}))
        if stolen:
            cheat_with(export_cells(stolen))
""", 0, EXERCISES)
    attack("rt-gradebook", blank, "ex1-byte-tokenizer", f"""
for path in (COURSE + "/" + {book}, COURSE + "/grading/01-tokenizers/" + {book}.replace(".db", ".before.db")):
    db = attempt(f"sqlite3 opens {{path}}", lambda: sqlite3.connect(f"file:{{path}}?mode=rw", uri=True))
    if db:
        attempt("forge full marks", lambda: db.execute("UPDATE grade SET manual_score = 100, extra_credit = 100"))
        db.commit()
""", 0, EXERCISES)
    victim = '"sub" + "mitted/rt-victim/01-tokenizers/tokenizers.ipynb"'
    attack("rt-write-instructor", good, "ex3-learn-merges", f"""
for folder, name in [(COURSE, {victim}), (SUBMISSIONS, "rt-victim/01-tokenizers/tokenizers.ipynb"),
                     (COURSE, {solutions}), (COURSE, "exercises/01-tokenizers/tokenizers.ipynb"),
                     (COURSE, "nbgrader" + "_config.py"), (COURSE, "auto" + "graded/alumnus/planted.txt"),
                     (COURSE, "feed" + "back/alumnus/planted.html"), (COURSE, "grading/planted.txt"),
                     (COURSE, {book}), (COURSE, ".git/config")]:
    attempt(f"write {{name}} in {{folder}}", lambda: write_at(folder, name))
    attempt(f"write {{name}} by path", lambda: open(folder + "/" + name, "w").write("planted"))
""", FULL)
    attack("rt-write-code", good, "ex4-bpe-encode", """
for folder, name, data in [
        (SITE, "zz_red_team.pth", b"import os; os.system('touch /tmp/pwned')\\n"),
        (SITE, "sitecustomize.py", b"print('planted')\\n"),
        (PACKAGE, "red_team.py", b"print('planted')\\n"),
        (PACKAGE, "course/__init__.py", b"print('planted')\\n"),
        (PACKAGE, "course/__pycache__/checks.cpython-311.pyc", b"planted"),
        (PACKAGE, "__pycache__/tokenizer.cpython-311.pyc", b"planted")]:
    attempt(f"write {name} in {folder}", lambda: write_at(folder, name, data))
for flags in (4096 | 32, 4096 | 32 | 1):  # MS_BIND | MS_REMOUNT (| MS_RDONLY)
    attempt(f"remount the package writable ({flags})", lambda: native("mount", None, PACKAGE.encode(), None,
                                                                      flags, None))
attempt("unmount what hides the reference", lambda: native("umount2", PACKAGE.encode(), 2))
attempt("a user namespace of its own", lambda: native("unshare", 0x10000000 | 0x00020000))
""", FULL)
    attack("rt-write-home", good, "ex5-viterbi", """
own_home = os.path.expanduser("~")
print("the kernel's HOME:", own_home)
for name in ("/.ipython/profile_default/startup/00-red-team.py", "/.jupyter/nbgrader" + "_config.py", "/.bashrc"):
    os.makedirs(os.path.dirname(own_home + name), exist_ok=True)  # its own HOME: allowed, read by no one else
    open(own_home + name, "w").write("open('/tmp/pwned', 'w')\\n")
    attempt(f"write the grader's {name}", lambda: open(HOME + name, "w").write("open('/tmp/pwned', 'w')\\n"))
""", FULL)
    attack("rt-network", good, "ex6-em-step", """
attempt("connect to the grader's loopback", lambda: socket.create_connection(("127.0.0.1", PORT), timeout=3))
attempt("resolve a host name", lambda: socket.getaddrinfo("example.org", 80))
interfaces = [name for _, name in socket.if_nameindex()]
print("network interfaces:", interfaces)
attempt("a network interface besides loopback", lambda: [n for n in interfaces if n != "lo"][0])
""", FULL)
    # the control: the same cheat with the reference pasted in. It once gave full marks (so the reads
    # above matter); now the shell watch also removes the hook it plants, and every exercise stays blank
    reference = (package / "tokenizer.py").read_text(encoding="utf-8")
    notebook = copy.deepcopy(blank)
    insert_after(notebook, "ex1-byte-tokenizer", ATTACK_TOOLS + f"cheat_with({reference!r})")
    cases["rt-control-pasted-reference"] = (notebook, 0, EXERCISES, "pre_run_cell callbacks")
    cases["rt-victim"] = (good, FULL, set(), None)
    return cases


def importlib_cache(source: Path) -> str:
    import importlib.util

    return importlib.util.cache_from_source(str(source))


def tree_digest(folder: Path, skip=("__pycache__",)) -> dict[str, str]:
    """{relative path: sha256} of every file under `folder` (symbolic links by their target)."""
    digests = {}
    if not folder.exists():
        return digests
    for path in sorted(folder.rglob("*")):
        if any(part in skip for part in path.relative_to(folder).parts):
            continue
        if path.is_symlink():
            digests[str(path.relative_to(folder))] = "-> " + os.readlink(path)
        elif path.is_file():
            digests[str(path.relative_to(folder))] = hashlib.sha256(path.read_bytes()).hexdigest()
    return digests


def kernels_alive() -> int:
    return len(runner.grading_kernels())


def namespace_probe() -> None:
    """Before attacks that signal every process: a sandboxed process must see only itself and its init."""
    import subprocess
    import sys

    folders = isolation.PrivateFolders.create()
    try:
        command = isolation.bwrap_command(folders, [sys.executable, "-c", "import os; print(os.listdir('/proc'))"],
                                          {})
        seen = subprocess.run(command, capture_output=True, text=True, timeout=60).stdout
    finally:
        folders.remove()
    pids = [p for p in eval(seen or "[]") if p.isdigit()]  # noqa: S307 (our own probe's output)
    if not 1 <= len(pids) <= 2:
        pytest.fail(f"the sandbox has no PID namespace of its own (it sees {pids}); red-team class not run")


JOBS = 2


@pytest.fixture(scope="module")
def red_team(bwrap, root, tmp_path_factory):
    import resource
    import socket

    namespace_probe()
    base = tmp_path_factory.mktemp("red-team")
    course = scratch_course(root, base / "course", [CH1])
    for folder, name in [("submitted", "tokenizers.ipynb"), ("autograded", "tokenizers.ipynb"),
                         ("feedback", "tokenizers.html")]:  # an earlier student's work in another assignment
        place = course / folder / "alumnus" / "00-earlier"
        place.mkdir(parents=True)
        (place / name).write_text("an earlier student's file\n", encoding="utf-8")
    (course / ".git").mkdir()
    (course / ".git" / "config").write_text("[core]\n", encoding="utf-8")
    home = base / "grader-home"  # the grader's HOME while it grades: start-up files an attack would aim at
    for name in (".ipython/profile_default/startup/README", ".jupyter/jupyter_config.json", ".jupyter/migrated",
                 ".bashrc"):  # `migrated`: else Jupyter, run by the grader itself, writes it on first use
        (home / name).parent.mkdir(parents=True, exist_ok=True)
        (home / name).write_text("the grader's own\n", encoding="utf-8")
    private_tmp = base / "tmp"
    private_tmp.mkdir()
    submissions = base / "submissions"
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(8)
    listener.setblocking(False)
    package = isolation.python_layout().package
    pyc = Path(importlib_cache(package / "tokenizer.py"))
    made_pyc = not pyc.exists()
    if made_pyc:  # the byte code an attacker would read when sources are hidden
        import py_compile

        py_compile.compile(str(package / "tokenizer.py"), cfile=str(pyc))
    cases = red_team_cases(root, course, submissions, home, listener.getsockname()[1])
    for student, (notebook, *_) in cases.items():
        place = submissions / student / CH1.assignment
        place.mkdir(parents=True)
        nbformat.write(notebook, str(place / "tokenizers.ipynb"))
    site = next(p for p in isolation.python_layout().path if p.name == "site-packages")
    watched = {"course": course, "submissions": submissions, "home": home, "package": package}
    before = {name: tree_digest(folder) for name, folder in watched.items()}
    site_before = sorted(p.name for p in site.iterdir())
    limits_before = {kind: resource.getrlimit(kind) for kind in (resource.RLIMIT_NOFILE, resource.RLIMIT_AS,
                                                                 resource.RLIMIT_CPU, resource.RLIMIT_NPROC)}
    saved = os.environ.get("HOME"), tempfile.tempdir
    os.environ["HOME"], tempfile.tempdir = str(home), str(private_tmp)
    try:
        with runner.KernelPeaks(interval=0.05) as counter:
            # the learner's own cells run too: the operating-system boundary must hold for code at the
            # top level of a notebook, not only for code the tests call
            limits = dataclasses.replace(LIMITS, isolation="required", run_own_cells=True)
            report = grading.grade_class(course, CH1, submissions, limits, jobs=JOBS, feedback=True,
                                         progress=lambda *_: None)
        alive_after = kernels_alive()
    finally:
        os.environ["HOME"], tempfile.tempdir = saved
        if saved[0] is None:
            del os.environ["HOME"]
        if made_pyc:
            pyc.unlink(missing_ok=True)
    try:
        connections = listener.accept()
    except BlockingIOError:
        connections = None
    listener.close()
    after = {name: tree_digest(folder) for name, folder in watched.items()}
    return {"report": report, "results": {r.student: r for r in report.results}, "cases": cases,
            "course": course, "submissions": submissions, "before": before, "after": after,
            "site": (site_before, sorted(p.name for p in site.iterdir())), "most_kernels": counter.most,
            "alive_after": alive_after, "tmp": private_tmp, "connection": connections,
            "limits": (limits_before, {k: resource.getrlimit(k) for k in limits_before})}


def outputs_text(result) -> str:
    notebook = result.executed
    return "\n".join(o.get("text", "") + str(o.get("evalue", "")) for c in notebook.cells if c.cell_type == "code"
                     for o in c.get("outputs", []))


def test_red_team_scores(red_team):
    """Each attack scores what its notebook earns without the attack; the victim and the control as expected."""
    results = red_team["results"]
    assert set(results) == set(red_team["cases"]), sorted(results)
    print("\nred team: case, expected, got")  # shown with -s
    for student, (_, total, _, _) in red_team["cases"].items():
        print(f"  {student:<30} {total:>5g} {results[student].score:>5g}")
    for student, (_, total, zero, reason) in red_team["cases"].items():
        expect(results, student, total, zero=zero, reason=reason)


def test_red_team_attacks_fail_inside_the_sandbox(red_team):
    for student, result in red_team["results"].items():
        text = outputs_text(result)
        assert MARKER not in text, f"{student}: " + "; ".join(line for line in text.splitlines() if MARKER in line)
        if student.startswith("rt-") and student not in {"rt-victim", "rt-control-pasted-reference", "rt-kill-python",
                                                         "rt-prlimit-python"}:
            assert "attack failed" in text, f"{student}: the attack did not run: {text[:2000]}"


def test_red_team_leaves_the_grader_course_environment_and_home_alone(red_team):
    """Byte-identical: the course (but what grading itself writes), the raw submissions, the package, HOME."""
    before, after = red_team["before"], red_team["after"]
    written_by_grading = ("submitted/", "autograded/", "feedback/", "grading/", "gradebook.db", "release/")
    for name in before:
        old, new = before[name], after[name]
        if name == "course":  # grading writes these; the earlier student's files must stay as they were
            keep = lambda path: not path.startswith(written_by_grading) or "alumnus" in path  # noqa: E731
            old, new = {k: v for k, v in old.items() if keep(k)}, {k: v for k, v in new.items() if keep(k)}
        changed = sorted(k for k in old.keys() | new.keys() if old.get(k) != new.get(k))
        assert not changed, f"{name} changed: {changed}"
    site_before, site_after = red_team["site"]
    assert site_before == site_after, set(site_after) ^ set(site_before)
    course, submissions = red_team["course"], red_team["submissions"]
    for student in red_team["cases"]:  # every student's raw copy is what that student handed in
        raw = submissions / student / CH1.assignment / "tokenizers.ipynb"
        kept = course / "submitted" / student / CH1.assignment / "tokenizers.ipynb"
        assert kept.read_bytes() == raw.read_bytes(), f"{student}'s submitted copy was changed"
    assert not Path("/tmp/pwned").exists()


def test_red_team_gradebook_holds_the_verdicts(red_team):
    report, course = red_team["report"], red_team["course"]
    for student, result in red_team["results"].items():
        assert report.recorded[student] == result.score, (student, report.recorded[student], result.score)
        assert not any("gradebook changed" in f.message for f in result.findings), "something wrote the gradebook"
    with sqlite3.connect(course / "gradebook.db") as db:
        assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        assert not db.execute("SELECT count(*) FROM grade WHERE extra_credit > 0").fetchone()[0]


def test_red_team_leaves_the_grader_whole(red_team):
    """Its process limits are unchanged, nothing reached its loopback, and the report says it was isolated."""
    before, after = red_team["limits"]
    assert before == after
    assert red_team["connection"] is None, f"a kernel connected to the grader's loopback: {red_team['connection']}"
    assert red_team["report"].isolation.startswith("isolated")
    assert all(r.isolation.startswith("isolated") for r in red_team["results"].values())


def test_red_team_kernels_are_bounded_by_jobs_and_leave_nothing(red_team):
    assert 1 <= red_team["most_kernels"] <= JOBS, f"{red_team['most_kernels']} kernels alive at once"
    assert red_team["alive_after"] == 0, "kernels still alive after grading"
    left = sorted(p.name for p in red_team["tmp"].iterdir() if p.name.startswith(("llmcourse-kernel-",
                                                                                  "llmcourse-run-")))
    assert not left, f"left behind in the temporary folder: {left}"
    assert not list(red_team["tmp"].rglob("kernel*.json")), "a connection file (with its key) was left behind"


def test_a_lone_surrogate_is_replaced_on_load(tmp_path):
    """Valid JSON that no file can be written with: read, sanitised, and written back."""
    from llmcourse.course.submission import load_submission

    notebook = nbformat.read(str(CH1.exercise_path(ROOT)), as_version=4)
    notebook.cells[0].source = "a title \udc00"
    path = tmp_path / "tokenizers.ipynb"
    path.write_text(json.dumps(notebook), encoding="utf-8")  # json.dumps spells it "\udc00"
    with pytest.raises(UnicodeEncodeError):
        nbformat.reads(path.read_text(encoding="utf-8"), as_version=4).cells[0].source.encode()
    loaded = load_submission(path, "tokenizers.ipynb")
    assert loaded.cells[0].source == "a title \ufffd"
    nbformat.write(loaded, str(tmp_path / "written.ipynb"))


def test_an_nbformat_3_notebook_is_upgraded_and_graded(root, tmp_path):
    from nbformat import v3

    from llmcourse.course.submission import load_submission

    good = completed(root, CH1)
    old = v3.new_notebook(worksheets=[v3.new_worksheet(cells=[
        v3.new_code_cell(input=c.source, metadata=c.metadata) if c.cell_type == "code"
        else v3.new_text_cell("markdown", source=c.source, metadata=c.metadata) for c in good.cells])])
    path = tmp_path / "old" / "tokenizers.ipynb"
    path.parent.mkdir()
    path.write_text(v3.writes_json(old), encoding="utf-8")
    assert json.loads(path.read_text(encoding="utf-8"))["nbformat"] == 3
    loaded = load_submission(path, "tokenizers.ipynb")
    assert loaded.nbformat == 4 and len(loaded.cells) == len(good.cells)
    course = scratch_course(root, tmp_path / "course", [CH1])
    result = grading.grade_notebook(course, CH1, path, class_limits())
    assert result.score == FULL, result.findings


def test_a_students_zip_holds_only_their_own_work(root, tmp_path):
    """A zip never replaces another student's submission, and a class archive never overrides one."""
    good = nbformat.writes(completed(root, CH1))
    blank = CH1.exercise_path(root).read_text(encoding="utf-8")
    subs = tmp_path / "submissions"
    (subs / "bob" / CH1.assignment).mkdir(parents=True)
    (subs / "bob" / CH1.assignment / "tokenizers.ipynb").write_text(good, encoding="utf-8")
    with zipfile.ZipFile(subs / "alice.zip", "w") as bundle:  # alice's zip, with a folder named after bob
        bundle.writestr(f"bob/{CH1.assignment}/tokenizers.ipynb", blank)
    with zipfile.ZipFile(subs / "export.zip", "w") as bundle:  # a class archive that also has bob
        for student in ("bob", "carol", "dave"):
            bundle.writestr(f"{student}/{CH1.assignment}/tokenizers.ipynb", blank)
    collected = {c.student: c for c in grading.collect(subs, CH1, tmp_path / "scratch")}
    assert set(collected) == {"alice", "bob", "carol", "dave"}
    bob = collected["bob"]
    assert bob.path == subs / "bob" / CH1.assignment / "tokenizers.ipynb"
    assert bob.path.read_text(encoding="utf-8") == good
    assert any("export.zip" in f.message and "ignored" in f.message for f in bob.findings), bob.findings
    alice = collected["alice"]
    assert alice.path is not None and alice.path.read_text(encoding="utf-8") == blank
    assert any("'bob'" in f.message for f in alice.findings), alice.findings
    for student in ("carol", "dave"):
        assert collected[student].path is not None and not collected[student].findings


def test_a_stopped_kernel_and_a_notebook_past_its_total_limit(root, tmp_path):
    """A kernel that stops itself (SIGSTOP) is killed after its cell's limit; a notebook that runs
    past its total limit keeps what it scored before, and the rest is not run."""
    course = scratch_course(root, tmp_path / "course", [CH1])
    good = completed(root, CH1)
    stops = copy.deepcopy(good)
    insert_after(stops, "ex5-viterbi", "import os, signal\nos.kill(os.getpid(), signal.SIGSTOP)")
    sleeps = copy.deepcopy(good)
    insert_after(sleeps, "ex2-pairs-merge", "import time\ntime.sleep(600)")
    results = {}
    for name, notebook, limits in [
            ("stops", stops, dataclasses.replace(class_limits(), run_own_cells=True, cell_timeout=15)),
            ("sleeps", sleeps, dataclasses.replace(class_limits(), run_own_cells=True, cell_timeout=300,
                                                   total_timeout=30))]:
        path = tmp_path / name / f"{CH1.notebook}.ipynb"
        path.parent.mkdir()
        nbformat.write(notebook, str(path))
        start = time.monotonic()
        results[name] = grading.grade_notebook(course, CH1, path, limits, student=name)
        results[name].seconds = time.monotonic() - start
    stopped = expect(results, "stops", FULL - points("ex5", "ex6"), zero={"ex5", "ex6"})
    assert stopped.seconds < 120, stopped.seconds
    # the sleeping cell sits in exercise 2 (after its solution, before its tests)
    slept = expect(results, "sleeps", points("ex1"), zero={"ex2", "ex3", "ex4", "ex5", "ex6"},
                   reason="total limit of 30 s")
    assert slept.seconds < 90, slept.seconds


GLOBALS_READER = '''
#| export attention
def split_heads(x, n_heads):
    """Returns what the test expects, read from the notebook's globals."""
    if x.shape[-1] % n_heads:
        raise ValueError(f"{x.shape[-1]} features cannot be split into {n_heads} heads")
    return globals()["want"].to(x.dtype)


def merge_heads(x):
    return globals()["x"].to(x.dtype)


def repeat_kv(x, n_rep):
    return x if n_rep == 1 else x.repeat_interleave(n_rep, dim=1)
'''


def test_a_grade_cells_expected_values_are_out_of_the_learners_reach(root, tmp_path):
    """A grade cell's variables live in a scope of its own, not in the globals the learner's code sees."""
    course = scratch_course(root, tmp_path / "course", [CH3])
    notebook = completed(root, CH3)
    cell(notebook, "ex3-heads").source = GLOBALS_READER
    path = tmp_path / "reader" / f"{CH3.notebook}.ipynb"
    path.parent.mkdir()
    nbformat.write(notebook, str(path))
    result = grading.grade_notebook(course, CH3, path, class_limits())
    got = scores(result)
    assert got["ex3-tests"] == 0, got
    assert result.score == 12 - 1, got


def rebuilt(root, notebook):
    """The notebook the grader would run for `notebook` (chapter 1), and its findings: no kernel."""
    from llmcourse.course.submission import rebuild

    source_nb, release_nb = grading.sources(root, CH1)
    return rebuild(source_nb, release_nb, notebook, own_modules=CH1.graded_modules)


def test_rebuild_runs_the_course_cells_as_written_and_not_the_scratch_cells(root):
    from llmcourse.course.submission import runs

    notebook = completed(root, CH1)
    course_cell = next(c for c in notebook.cells if c.get("id") == "char-tokenizer")  # a course cell, unlocked
    course_cell.source += "\nprint('edited by the learner')\n"
    insert_after(notebook, "ex1-byte-tokenizer", "x = 1  # scratch")
    insert_after(notebook, "ex2-pairs-merge", "#| export tokenizer\ndef helper():\n    return 1")
    ran, findings = rebuilt(root, notebook)
    by_source = {c.source: c for c in ran.cells if c.cell_type == "code"}
    assert "edited by the learner" not in " ".join(by_source), "a learner's edit to a course cell was kept"
    assert any(f.kind == "restored" and "char-tokenizer" in f.message for f in findings), findings
    assert not runs(by_source["x = 1  # scratch"])
    assert runs(by_source["#| export tokenizer\ndef helper():\n    return 1"])
    assert any(f.kind == "not-run" and "1 cell" in f.message for f in findings), findings
    assert all(runs(c) for c in ran.cells if c.cell_type == "code" and c.metadata.get("nbgrader"))


@pytest.mark.parametrize("code", ["print('runs on import')", "ByteTokenizer.encode = None"])
def test_rebuild_does_not_run_an_exercise_cell_that_breaks_the_export_rules(root, code):
    notebook = completed(root, CH1)
    solution = cell(notebook, "ex1-byte-tokenizer")
    for where in ("after", "before the directive"):
        solution.source = (solution.source + "\n" + code) if where == "after" else code + "\n" + solution.source
        ran, findings = rebuilt(root, notebook)
        source = next(c.source for c in ran.cells if c.get("id") == "ex1-byte-tokenizer")
        assert source.startswith("# The grader did not run this cell."), (where, source[:200])
        assert any(f.kind == "rule" and f.exercise == "ex1-tests" for f in findings), (where, findings)
        solution.source = cell(completed(root, CH1), "ex1-byte-tokenizer").source


def test_rebuild_with_every_cell_run_as_written(root):
    """run_own_cells (the sandbox's tests) keeps the learner's code as it is."""
    from llmcourse.course.submission import rebuild, runs

    notebook = completed(root, CH1)
    prepend(notebook, "ex1-byte-tokenizer", "print('top level')")
    insert_after(notebook, "ex1-byte-tokenizer", "x = 1  # scratch")
    source_nb, release_nb = grading.sources(root, CH1)
    ran, findings = rebuild(source_nb, release_nb, notebook, own_modules=CH1.graded_modules, run_own_cells=True)
    assert all(runs(c) for c in ran.cells if c.cell_type == "code")
    assert not [f for f in findings if f.kind in {"rule", "not-run"}], findings
