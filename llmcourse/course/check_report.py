"""What `check` tells a learner about a notebook, and what it keeps for `progress`.

The exercise table has one row per exercise, titled as the notebook's heading titles it
("Exercise 2 — count pairs and merge"): the grade cells under one heading (one per part the
exercise scores) are added up. The package tests are reported as they end, each with the
exercise it checks (chapters.ExerciseTests), and their failures are then gathered by exercise,
with the lines that say what was expected and what came back. One summary line ends it.

Each check's result is also written to CHECK_RESULTS_DIR (git-ignored, as all of `_build/`):
`progress` reads these files instead of running every notebook again, which takes about half a
minute per chapter.
"""
from __future__ import annotations

import datetime
import hashlib
import json
import os
import textwrap
from dataclasses import asdict, dataclass, field
from pathlib import Path

from .chapters import CHAPTERS, Chapter, ExerciseTests
from .places import exercise_number

CHECK_RESULTS_DIR = Path("_build") / "check"
"""Where `check` keeps the result of the last check of each chapter, relative to the course root."""
RESULTS_ENV = "LLMCOURSE_CHECK_RESULTS"
"""A folder to keep them in instead (the tests' checks leave the learner's progress alone)."""
GIVEN = "given code"
MESSAGE_WIDTH = 100
"""Columns of a message line before it is folded onto the next (a long value stays readable)."""


@dataclass
class Exercise:
    """One exercise of a notebook, as the check table shows it: its grade cells added up."""

    title: str
    score: float = 0.0
    max_score: float = 0.0
    messages: list[str] = field(default_factory=list)  # of its failed parts

    @property
    def number(self) -> int | None:
        return exercise_number(self.title)

    @property
    def passed(self) -> bool:
        return self.score >= self.max_score


def group_exercises(results, titles: dict[str, str]) -> list[Exercise]:
    """The grading's per-grade-cell results gathered under their exercise titles, in order."""
    exercises: list[Exercise] = []
    for result in results:
        title = titles.get(result.grade_id, result.grade_id)
        if not exercises or exercises[-1].title != title:
            exercises.append(Exercise(title))
        exercise = exercises[-1]
        exercise.score += result.score
        exercise.max_score += result.max_score
        if not result.passed and result.message and result.message not in exercise.messages:
            exercise.messages.append(result.message)
    return exercises


def points(score: float, max_score: float) -> str:
    return f"{score:>3g} / {max_score:<3g}"


def print_wrapped(line: str, prefix: str, out=print) -> None:
    """`line` after `prefix`, folded at MESSAGE_WIDTH; the folds indented under it."""
    folds = textwrap.wrap(line, width=MESSAGE_WIDTH, break_on_hyphens=False, drop_whitespace=False) or [""]
    out(prefix + folds[0].rstrip())
    for fold in folds[1:]:
        out(prefix + "  " + fold.strip())


def print_exercises(exercises: list[Exercise], out=print) -> None:
    """The table: points, pass or FAIL, title; under a failed exercise, what went wrong."""
    out(f"  {'points':^9}  {'result':<8}exercise")
    for exercise in exercises:
        out(f"  {points(exercise.score, exercise.max_score)}  {'pass' if exercise.passed else 'FAIL':<8}"
            f"{exercise.title}")
        for message in exercise.messages:
            for line in message.splitlines():
                print_wrapped(line, f"  {'':<19}| ", out)
    total = points(sum(e.score for e in exercises), sum(e.max_score for e in exercises))
    out(f"  {total}  {'':<8}total")


# --- package tests, by exercise ------------------------------------------------------------------


def numbers_text(numbers) -> str:
    numbers = sorted(numbers)
    return f"exercise {numbers[0]}" if len(numbers) == 1 else "exercises " + ", ".join(map(str, numbers))


def test_label(group: ExerciseTests | None) -> str:
    """'exercise 4; uses 3', 'given code; uses exercises 1, 2, 3', or '' for a test in no group."""
    if group is None:
        return ""
    label = GIVEN if group.exercise is None else f"exercise {group.exercise}"
    if group.uses:
        label += "; uses " + (numbers_text(group.uses) if group.exercise is None
                              else ", ".join(map(str, sorted(group.uses))))
    return label


def live_line(chapter: Chapter, name: str, outcome: str, again: bool) -> str:
    """One package test as it ends: '  FAIL  test_bpe_round_trip_samples  (exercise 4; uses 3)'."""
    label = test_label(chapter.tests_of(name))
    suffix = ", another case of it" if again else ""
    return f"  {outcome:<4}  {name}" + (f"  ({label}{suffix})" if label or suffix else "")


def print_package_failures(chapter: Chapter, exercises: list[Exercise], failures, out=print) -> None:
    """The failed package tests, gathered by the exercise they check, each with what it expected
    and what came back. Tests that failed with the same exception share one line: a blank
    exercise fails every test of it with NotImplementedError."""
    if not failures:
        return
    titles = {e.number: e.title for e in exercises if e.number is not None}
    by_exercise: dict[int | None, list] = {}
    for test in failures:
        group = chapter.tests_of(test.name)
        by_exercise.setdefault(group.exercise if group else None, []).append(test)
    out("\n  package tests that failed, by exercise:")
    for number in sorted(by_exercise, key=lambda n: (n is None, n or 0)):
        tests = by_exercise[number]
        heading = titles.get(number, f"Exercise {number}") if number is not None else "Given code and other tests"
        uses = {n for t in tests if chapter.tests_of(t.name) for n in chapter.tests_of(t.name).uses}
        out(f"  {heading}" + (f" (these tests also run {numbers_text(uses)})" if uses else ""))
        by_first_line: dict[str, list] = {}
        for test in tests:
            by_first_line.setdefault((test.message or "(no message)").splitlines()[0], []).append(test)
        for first_line, same in by_first_line.items():
            if len(same) == 1:
                out(f"    {same[0].name}")
                lines = (same[0].message or first_line).splitlines()
            else:
                names = textwrap.wrap(", ".join(t.name for t in same), width=MESSAGE_WIDTH)
                out(f"    {len(same)} tests: {names[0]}")
                for line in names[1:]:
                    out(f"      {line}")
                lines = [first_line]
            for line in lines:
                print_wrapped(line, "      | ", out)


# --- the summary line and the results `progress` reads ----------------------------------------


def summary_line(exercises: list[Exercise], package=None) -> str:
    score, max_score = sum(e.score for e in exercises), sum(e.max_score for e in exercises)
    passed = sum(e.passed for e in exercises)
    line = f"{score:g} / {max_score:g} points, {passed} of {len(exercises)} exercises passed"
    if package is not None:
        n_pass = sum(t.outcome == "pass" for t in package.results)
        line += f"; {n_pass} of {len(package.results)} package tests passed ({package.seconds:.0f} s)"
    return line


def notebook_digest(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def results_path(root: Path, chapter: Chapter) -> Path:
    folder = os.environ.get(RESULTS_ENV) or Path(root) / CHECK_RESULTS_DIR
    return Path(folder) / f"{chapter.assignment}.json"


def save_check(root: Path, chapter: Chapter, notebook: Path, exercises: list[Exercise], package=None) -> Path:
    """Keep this check's result for `progress`: the chapter's last check replaces the one before."""
    record = {
        "notebook": str(Path(notebook).resolve()),
        "sha256": notebook_digest(notebook),
        "checked": datetime.datetime.now().isoformat(timespec="seconds"),
        "exercises": [asdict(e) | {"messages": []} for e in exercises],
        "package": None if package is None else {
            "passed": sum(t.outcome == "pass" for t in package.results),
            "total": len(package.results),
            "problem": package.problem,
        },
    }
    path = results_path(root, chapter)
    path.parent.mkdir(parents=True, exist_ok=True)
    scratch = path.with_suffix(".tmp")
    scratch.write_text(json.dumps(record, indent=1, ensure_ascii=False), encoding="utf-8")
    scratch.replace(path)  # whole or not at all, should two checks end at once
    return path


def load_check(root: Path, chapter: Chapter) -> dict | None:
    try:
        return json.loads(results_path(root, chapter).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def check_state(record: dict) -> str:
    """'' when the notebook is as it was checked; otherwise what happened to it since."""
    notebook = Path(record["notebook"])
    if not notebook.is_file():
        return "that notebook is gone"
    return "" if notebook_digest(notebook) == record["sha256"] else "the notebook changed since"


def print_progress(root: Path, shown, command: str, out=print) -> None:
    """The learner's table of chapters from the last check of each (see the module docstring).

    `shown(path)` writes a notebook's path as the learner would type it; `command` is how the
    learner runs the course's commands (./course).
    """
    out(f"your progress, from the last `{command} check` of each chapter (it is not run again here)\n")
    out(f"  {'chapter':<34} {'points':>9}  {'package tests':<14} {'checked':<17} points per exercise")
    notes = []
    for chapter in CHAPTERS:
        name = f"{chapter.number} {chapter.title}"
        record = load_check(root, chapter)
        if record is None:
            out(f"  {name:<34} {'-':>9}  {'-':<14} not yet")
            notes.append(f"chapter {chapter.number}: not checked yet; "
                         f"{command} check {shown(chapter.exercise_path(root))}")
            continue
        exercises = [Exercise(e["title"], e["score"], e["max_score"]) for e in record["exercises"]]
        score, max_score = sum(e.score for e in exercises), sum(e.max_score for e in exercises)
        package = record.get("package")
        tests = "not run" if package is None else f"{package['passed']} of {package['total']}"
        each = "  ".join(f"{e.score:g}/{e.max_score:g}" for e in exercises)
        checked = record["checked"].replace("T", " ")[:16]
        out(f"  {name:<34} {f'{score:g} / {max_score:g}':>9}  {tests:<14} {checked:<17} {each}")
        state = check_state(record)
        if state:
            notes.append(f"chapter {chapter.number}: {state}; {command} check {shown(Path(record['notebook']))}")
        elif Path(record["notebook"]) != chapter.exercise_path(root).resolve():
            notes.append(f"chapter {chapter.number}: the notebook checked was {shown(Path(record['notebook']))}")
    if notes:
        out("")
        for note in notes:
            out(f"  {note}")
