"""Grading a class: every kind of submission a real class sends in, as a generated notebook.

One batch of chapter-1 submissions is graded once (two workers, short limits) in a scratch
course folder; each test then checks one student's score and the reason given. Faults keep
the points of the cells that ran; tampering zeroes the exercise it touches, and says why.
"""
from __future__ import annotations

import copy
import json
import shutil
import sqlite3
import tempfile
import zipfile
from pathlib import Path

import nbformat
import pytest

from llmcourse.course import grading
from llmcourse.course.chapters import chapter_by_assignment
from llmcourse.course.runner import Limits

pytestmark = [pytest.mark.course_infra, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[1]
CH1 = chapter_by_assignment("01-tokenizers")
CH3 = chapter_by_assignment("03-attention")
FULL = 17  # chapter 1's points
POINTS = {"ex1-tests": 2, "ex2-tests": 2, "ex3-tests": 4, "ex4-tests": 3, "ex5-tests": 3, "ex6-tests": 3}
LIMITS = Limits(cell_timeout=20, memory_bytes=4 * 2**30)


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
    report = grading.grade_class(course, CH1, folder, LIMITS, jobs=2, feedback=True, progress=lambda *_: None)
    results = {r.student: r for r in report.results}
    return course, report, results


def scores(result) -> dict[str, float]:
    return {e.grade_id: e.score for e in result.exercises}


def expect(results, student, total, zero=(), reason=None):
    result = results[student]
    got = scores(result)
    assert set(got) == set(POINTS), f"{student}: graded cells {sorted(got)}"
    for grade_id, points in POINTS.items():
        want = 0 if grade_id in zero else points
        assert got[grade_id] == want, (f"{student}: {grade_id} scored {got[grade_id]}, "
                                       f"expected {want}; {result.findings}")
    assert result.score == total
    if reason is not None:
        text = " ".join(f.message for f in result.findings) + " " + " ".join(e.message for e in result.exercises)
        assert reason in text, f"{student}: no reason mentioning {reason!r} in {text!r}"
    return result


def test_correct_and_blank(graded):
    _, _, results = graded
    expect(results, "correct", FULL)
    assert not results["correct"].needs_review
    expect(results, "blank", 0, zero=POINTS, reason="NotImplementedError")


def test_faults_keep_the_cells_that_ran(graded):
    _, _, results = graded
    expect(results, "infinite-loop", FULL - 2, zero={"ex1-tests"}, reason="longer than the limit")
    expect(results, "sleeps", FULL - 3, zero={"ex5-tests"}, reason="longer than the limit")
    expect(results, "ignores-interrupt", FULL - 3, zero={"ex6-tests"}, reason="could not be interrupted")
    expect(results, "os-exit", 2 + 2 + 4, zero={"ex4-tests", "ex5-tests", "ex6-tests"}, reason="exit status 1")
    expect(results, "segfault", FULL - 3, zero={"ex6-tests"}, reason="segmentation fault")
    expect(results, "memory-hog", FULL - 3, zero={"ex5-tests"}, reason="raised MemoryError")


def test_edited_deleted_reordered_and_stripped_cells_are_restored(graded):
    _, _, results = graded
    expect(results, "grade-cell-pass", FULL, reason="ex3-tests was edited")
    expect(results, "grade-cell-deleted", FULL, reason="ex2-tests was deleted")
    expect(results, "reordered", FULL, reason="released order")
    expect(results, "metadata-stripped", FULL, reason="lost its nbgrader metadata")
    expect(results, "ids-changed", FULL, reason="the names it defines")


def test_unreadable_missing_and_extra_notebooks(graded):
    _, _, results = graded
    expect(results, "not-json", 0, zero=POINTS, reason="not valid JSON")
    expect(results, "empty-file", 0, zero=POINTS, reason="empty file")
    expect(results, "no-notebook", 0, zero=POINTS, reason="no notebook tokenizers.ipynb was submitted")
    expect(results, "extra-notebook", FULL, reason="unexpected notebook 'scratch.ipynb' was ignored")
    other = expect(results, "other-kernel", FULL, reason="julia-1.10")
    assert not other.needs_review


def test_non_ascii_names_zips_and_huge_output(graded):
    course, _, results = graded
    expect(results, "José Müller", FULL, reason="tokenizers (копия).ipynb")
    expect(results, "李雷", FULL, reason="unsafe path")
    assert not (course.parent / "escape.txt").exists() and not (course / "escape.txt").exists()
    expect(results, "smithjane", FULL)
    expect(results, "doejohn", 0, zero=POINTS)
    expect(results, "Ada Lovelace", FULL)
    assert not results["smithjane"].needs_review and not results["Ada Lovelace"].needs_review
    huge = expect(results, "huge-output", FULL, reason="output truncated")
    assert len(json.dumps(huge.executed)) < 2_000_000, "the flood must not reach the graded notebook"


def test_cheating_zeroes_the_exercise_and_says_why(graded):
    _, _, results = graded
    expect(results, "always-equal", FULL - 2, zero={"ex1-tests"}, reason="must return a list")
    expect(results, "patch-numpy-testing", FULL - 3, zero={"ex6-tests"}, reason="numpy.testing.assert_allclose")
    expect(results, "patch-builtins", FULL - 2, zero={"ex1-tests"}, reason="builtins.isinstance")
    expect(results, "patch-torch-dynamically", FULL - 3, zero={"ex5-tests"}, reason="torch.allclose")
    expect(results, "patch-torch-testing", FULL - 3, zero={"ex4-tests"}, reason="torch.testing.assert_close")
    for student in ("patch-numpy-testing", "patch-builtins", "patch-torch-dynamically", "patch-torch-testing"):
        assert results[student].needs_review, f"{student} should be on the list for a human look"


def test_grading_files_and_other_students_are_out_of_reach(graded):
    course, report, results = graded
    expect(results, "write-gradebook", FULL - 2, zero={"ex2-tests"}, reason="names the grader's files")
    expect(results, "write-gradebook-hidden", FULL - 3, zero={"ex6-tests"}, reason="not allowed")
    expect(results, "write-other-student", FULL - 4, zero={"ex3-tests"}, reason="not allowed")
    expect(results, "read-solutions", FULL - 3, zero={"ex4-tests"}, reason="not allowed")
    expect(results, "network", FULL - 3, zero={"ex5-tests"}, reason="network access")
    expect(results, "spawn-process", FULL - 3, zero={"ex6-tests"}, reason="starting programs")
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
    again = grading.grade_class(course, CH1, folder, LIMITS, jobs=1, feedback=False, progress=lambda *_: None)
    assert again.recorded["blank"] == FULL
    after = grading.gradebook_scores(course, CH1, before)
    for student, score in before.items():
        if student != "blank":
            assert after[student] == score, f"{student}'s grade changed from {score} to {after[student]}"


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


@pytest.mark.parametrize("assignment", ["01-tokenizers", "02-embeddings", "03-attention", "04-transformer"])
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
    assert not full.findings, full.findings
    assert blank.score == 0 and all(e.message for e in blank.exercises)
