"""Grading a class: `llmcourse grade` (parallel sandboxed runs, one gradebook writer) vs plain
serial `nbgrader autograde`, on the same submissions of chapter 1, in the same run.

    .venv/bin/python bench/bench_grading.py --students 20 --jobs 2

Both start from a fresh scratch course with the assignment generated; neither writes feedback.
`llmcourse grade` runs every kernel in its bubblewrap sandbox (as `./course grade` does), or
without one with --unisolated.
"""
from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import nbformat

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from llmcourse.course import grading, isolation  # noqa: E402
from llmcourse.course.chapters import chapter_by_assignment  # noqa: E402
from llmcourse.course.nbgrader_tools import nbgrader  # noqa: E402
from llmcourse.course.runner import Limits  # noqa: E402


def course(base: Path, chapter) -> Path:
    target = base / "course"
    target.mkdir(parents=True)
    shutil.copy2(ROOT / "nbgrader_config.py", target)
    for kind in ("solutions", "exercises"):
        shutil.copytree(ROOT / kind / chapter.assignment, target / kind / chapter.assignment)
    return target


def completed(chapter, variant: int) -> nbformat.NotebookNode:
    solution = nbformat.read(str(chapter.solution_path(ROOT)), as_version=4)
    answers = {c.metadata["nbgrader"]["grade_id"]: c.source for c in solution.cells
               if c.metadata.get("nbgrader", {}).get("solution")}
    notebook = nbformat.read(str(chapter.exercise_path(ROOT)), as_version=4)
    for index, cell in enumerate(notebook.cells):
        grade_id = cell.metadata.get("nbgrader", {}).get("grade_id")
        if grade_id in answers and (variant % 3 or index % 2):  # a third of the class skips some exercises
            cell.source = answers[grade_id]
    return notebook


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--students", type=int, default=30)
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--unisolated", action="store_true", help="grade without the bubblewrap sandbox")
    args = parser.parse_args()
    chapter = chapter_by_assignment("01-tokenizers")
    with tempfile.TemporaryDirectory() as scratch:
        scratch = Path(scratch)
        folder = scratch / "submissions"
        for i in range(args.students):
            place = folder / f"student{i:02d}" / chapter.assignment
            place.mkdir(parents=True)
            nbformat.write(completed(chapter, i), str(place / f"{chapter.notebook}.ipynb"))

        plain = course(scratch / "plain", chapter)
        assert nbgrader(["generate_assignment", chapter.assignment, "--force"], cwd=plain).returncode == 0
        shutil.copytree(folder, plain / "submitted")
        start = time.perf_counter()
        result = nbgrader(["autograde", chapter.assignment, "--create", "--force"], cwd=plain)
        serial = time.perf_counter() - start
        assert result.returncode == 0, result.stderr[-2000:]
        plain_scores = grading.gradebook_scores(plain, chapter, [f"student{i:02d}" for i in range(args.students)])

        ours = course(scratch / "ours", chapter)
        assert nbgrader(["generate_assignment", chapter.assignment, "--force",
                         f"--CourseDirectory.release_directory={ours / 'grading' / 'release'}"],
                        cwd=ours).returncode == 0
        start = time.perf_counter()
        limits = Limits(isolation=isolation.OFF if args.unisolated else isolation.REQUIRED)
        report = grading.grade_class(ours, chapter, folder, limits, jobs=args.jobs, feedback=False,
                                     progress=lambda *_: None)
        parallel = time.perf_counter() - start
        same = all(report.recorded[s] == plain_scores[s] for s in plain_scores)

    print(f"{args.students} submissions of {chapter.assignment} on {os.cpu_count()} cores")
    print("| grader | seconds | per submission |")
    print("|---|---|---|")
    print(f"| nbgrader autograde (serial) | {serial:.1f} | {serial / args.students:.2f} |")
    print(f"| llmcourse grade --jobs {args.jobs} | {parallel:.1f} | {parallel / args.students:.2f} |")
    print(f"kernels: {report.isolation}")
    print(f"speed-up: {serial / parallel:.2f}x; same scores in both gradebooks: {same}")


if __name__ == "__main__":
    main()
