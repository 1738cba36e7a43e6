"""The same notebook gets the same score on every run, whatever the grader's hash seed."""
from __future__ import annotations

import os
import re
import subprocess
import sys

import nbformat
import pytest

from llmcourse.course.chapters import chapter_by_assignment

pytestmark = [pytest.mark.course_infra, pytest.mark.slow]


def half_solved(root, tmp_path):
    """Chapter 1 with the solutions of its first three exercises and blanks for the rest."""
    chapter = chapter_by_assignment("01-tokenizers")
    solution = nbformat.read(str(chapter.solution_path(root)), as_version=4)
    blank = nbformat.read(str(chapter.exercise_path(root)), as_version=4)
    answers = {c.get("id"): c.source for c in solution.cells}
    for cell in blank.cells:
        if cell.get("id") in ("ex1-byte-tokenizer", "ex2-pairs-merge", "ex3-learn-merges"):
            cell.source = answers[cell.get("id")]
    path = tmp_path / chapter.assignment / f"{chapter.notebook}.ipynb"
    path.parent.mkdir()
    nbformat.write(blank, str(path))
    return path


def test_scores_do_not_depend_on_the_hash_seed(root, tmp_path):
    notebook = half_solved(root, tmp_path)
    tables = []
    for seed in ("1", "2"):
        env = {**os.environ, "PYTHONHASHSEED": seed}
        result = subprocess.run([sys.executable, "-m", "llmcourse", "check", "--no-package", str(notebook)],
                                cwd=root, env=env, capture_output=True, text=True)
        assert result.returncode == 1, result.stdout + result.stderr  # half solved: some exercises fail
        tables.append(re.sub(r"\d+(\.\d+)? ?s\b", "", result.stdout))  # timings may differ
    assert tables[0] == tables[1], f"two checks of one notebook differ:\n{tables[0]}\n---\n{tables[1]}"
    assert " pass" in tables[0] and "FAIL" in tables[0]
