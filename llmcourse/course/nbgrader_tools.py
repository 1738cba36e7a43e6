"""Run nbgrader on the course without touching the repository's working state.

Every nbgrader run happens in a scratch course folder (its own copy of solutions/, its own
SQLite gradebook), so that a failing `generate_assignment --force` cannot delete
exercises/, and no gradebook is ever written inside the repository by these helpers.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

import nbformat

from .chapters import CHAPTERS, Chapter
from .errors import CourseError

GENERATED_NOTE = (
    "Generated from {source} by `./course generate` (nbgrader generate_assignment). "
    "Course maintainers: edit the solution notebook, not this file. Learners: this is your copy, fill it in."
)


def repo_root() -> Path:
    """The course repository this package was installed from (holds solutions/)."""
    here = Path(__file__).resolve().parents[2]
    if not (here / "nbgrader_config.py").exists():
        raise CourseError(f"{here} has no nbgrader_config.py: run this from a clone of the course repository")
    return here


def nbgrader(args: list[str], cwd: Path, timeout: float | None = None) -> subprocess.CompletedProcess:
    """Run the nbgrader command line of this interpreter's environment in `cwd`."""
    env = dict(os.environ)
    env["PATH"] = str(Path(sys.executable).parent) + os.pathsep + env.get("PATH", "")
    command = [sys.executable, "-m", "nbgrader", *args]
    return subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)


def scratch_course(root: Path, chapters=CHAPTERS) -> Path:
    """A temporary course folder with the config and the solutions of `chapters`."""
    course = Path(tempfile.mkdtemp(prefix="llmcourse-nbgrader-"))
    shutil.copy2(Path(root) / "nbgrader_config.py", course / "nbgrader_config.py")
    for chapter in chapters:
        shutil.copytree(chapter.solution_path(root).parent, course / "solutions" / chapter.assignment,
                        ignore=shutil.ignore_patterns(".ipynb_checkpoints", "__pycache__"))
    return course


def generate(root: Path, chapter: Chapter, course: Path) -> Path:
    """nbgrader generate_assignment in `course`; returns the generated exercise notebook."""
    result = nbgrader(["generate_assignment", chapter.assignment, "--force"], cwd=course)
    generated = course / "exercises" / chapter.assignment / f"{chapter.notebook}.ipynb"
    if result.returncode != 0 or not generated.exists():
        raise CourseError(f"nbgrader generate_assignment {chapter.assignment} failed:\n"
                           f"{result.stdout}\n{result.stderr}")
    notebook = nbformat.read(str(generated), as_version=4)
    source = chapter.solution_path(course).relative_to(course).as_posix()
    notebook.metadata["llmcourse"] = {"generated": GENERATED_NOTE.format(source=source)}
    nbformat.write(notebook, str(generated))
    return generated


def generate_exercises(root: Path, out: Path | None = None, chapters=CHAPTERS) -> list[Path]:
    """solutions/ -> exercises/ (or `out`/exercises), each chapter's folder replaced whole."""
    root = Path(root)
    out = Path(out) if out is not None else root
    course = scratch_course(root, chapters)
    written = []
    try:
        for chapter in chapters:
            generated = generate(root, chapter, course)
            target_dir = out / "exercises" / chapter.assignment
            if target_dir.exists():
                shutil.rmtree(target_dir)
            shutil.copytree(generated.parent, target_dir)
            written.append(target_dir / generated.name)
    finally:
        shutil.rmtree(course, ignore_errors=True)
    return written


@dataclass
class CellScore:
    grade_id: str
    score: float
    max_score: float


def autograde(root: Path, chapter: Chapter, submissions: dict[str, Path],
              timeout: float = 600) -> dict[str, list[CellScore]]:
    """Autograde notebooks {student: path} for one chapter; per-student scores of every graded cell.

    Runs generate_assignment and autograde in a scratch course (its own gradebook).
    """
    from nbgrader.api import Gradebook

    course = scratch_course(root, [chapter])
    try:
        generate(root, chapter, course)
        for student, path in submissions.items():
            target = course / "submitted" / student / chapter.assignment
            target.mkdir(parents=True)
            shutil.copy2(path, target / f"{chapter.notebook}.ipynb")
        result = nbgrader(["autograde", chapter.assignment, "--create"], cwd=course, timeout=timeout)
        scores = {}
        with Gradebook(f"sqlite:///{course / 'gradebook.db'}") as gradebook:
            for student in submissions:
                try:
                    submission = gradebook.find_submission_notebook(chapter.notebook, chapter.assignment, student)
                except Exception:
                    raise RuntimeError(f"nbgrader did not grade {student}:\n"
                                       f"{result.stdout[-3000:]}\n{result.stderr[-3000:]}") from None
                scores[student] = [CellScore(g.name, g.score, g.max_score) for g in
                                   sorted(submission.grades, key=lambda g: g.cell.name)]
        return scores
    finally:
        shutil.rmtree(course, ignore_errors=True)


def same_notebook(a: Path, b: Path) -> bool:
    """Equal notebooks as JSON (what the drift check compares)."""
    return json.loads(Path(a).read_text(encoding="utf-8")) == json.loads(Path(b).read_text(encoding="utf-8"))
