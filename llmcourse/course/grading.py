"""Grade notebooks: one for a learner (`check`), or a whole class on top of nbgrader (`grade`).

One submission goes through four steps, each of which survives bad input:

1. read it (a missing, empty, non-JSON or huge file is a zero with its reason);
2. rebuild it on the instructor's notebook (submission.rebuild: restored grade cells, the
   released order, tampering cells not run);
3. execute it in the sandbox kernel in a scratch folder of its own (runner.execute: time,
   memory, output and process limits; a crash stops the notebook there, and only there),
   isolated from the system by bubblewrap (isolation.py) when it is available: a class is
   graded only isolated, unless the instructor turns isolation off explicitly;
4. score every grade cell as nbgrader does (an error or stderr output is zero), after turning
   each integrity finding into an error in the grade cell of the exercise it concerns.

For a class, step 3 runs in parallel (one kernel per core), and the grades are then recorded
by one `nbgrader autograde` process with execution switched off, which reads the executed
notebooks: nbgrader's gradebook, feedback and CSV export work as usual, and only one process
ever writes the SQLite gradebook.
"""
from __future__ import annotations

import concurrent.futures
import contextlib
import csv
import dataclasses
import hashlib
import os
import re
import shutil
import sys
import tempfile
import unicodedata
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import nbformat

from . import isolation
from .chapters import Chapter
from .errors import CourseError
from .nbgrader_tools import nbgrader
from .places import describe_cell, section_of_each_cell
from .runner import Limits, error_output, execute
from .submission import (
    AST_LOCK,
    Finding,
    UnreadableSubmission,
    cell_key,
    exercise_grade_ids,
    exercise_of,
    is_grade_cell,
    load_submission,
    match_cells,
    nbgrader_meta,
    rebuild,
)

GRADING_DIR = "grading"  # the batch grader's working folder (git-ignored)
MESSAGE_LINES = 3
MAX_ZIP_BYTES = 512 * 2**20
POSITION_KEY = "llmcourse_position"
"""Metadata each submitted cell carries through the rebuild: its number in the learner's notebook."""


@dataclass
class ExerciseResult:
    grade_id: str
    score: float
    max_score: float
    message: str = ""  # the first lines of what went wrong

    @property
    def passed(self) -> bool:
        return self.score >= self.max_score


@dataclass
class SubmissionResult:
    student: str
    chapter: Chapter
    exercises: list[ExerciseResult] = field(default_factory=list)
    findings: list[Finding] = field(default_factory=list)
    executed: object = None  # the executed notebook, when there was one to execute
    isolation: str = ""  # how its kernel ran (isolation.describe)

    @property
    def score(self) -> float:
        return sum(e.score for e in self.exercises)

    @property
    def max_score(self) -> float:
        return sum(e.max_score for e in self.exercises)

    @property
    def needs_review(self) -> list[str]:
        return [f.message for f in self.findings if f.review]


def sources(root: Path, chapter: Chapter) -> tuple[object, object]:
    """(instructor notebook, released notebook); the released one stands in when solutions/ is absent."""
    release = nbformat.read(str(chapter.exercise_path(root)), as_version=4)
    solution = chapter.solution_path(root)
    if solution.is_file():
        return nbformat.read(str(solution), as_version=4), release
    return release, release


def protected_paths(root: Path, chapter: Chapter) -> list[Path]:
    """What submitted code may not open: grading state, the solutions, this chapter's reference code."""
    root = Path(root)
    paths = [root / name for name in ("solutions", "submitted", "autograded", "feedback", "gradebook.db",
                                      GRADING_DIR, "nbgrader_config.py", "source", "release")]
    paths += [root / "llmcourse" / f"{module}.py" for module in chapter.graded_modules]
    return paths


def message_of(cell) -> str:
    for output in cell.get("outputs", []):
        if output.output_type == "error":
            text = f"{output.ename}: {output.evalue}".strip().rstrip(":")
            return "\n".join(re.sub(r"\x1b\[[0-9;]*m", "", text).splitlines()[:MESSAGE_LINES])
        if output.output_type == "stream" and output.name == "stderr":
            return "wrote to stderr (nbgrader gives zero): " + output.text.strip().splitlines()[0][:200]
    return ""


def score_notebook(notebook) -> list[ExerciseResult]:
    """Every grade cell's score, as nbgrader's autograder computes it."""
    from nbgrader.utils import determine_grade

    results = []
    for cell in notebook.cells:
        if is_grade_cell(cell):
            score, max_score = determine_grade(cell)
            score = 0.0 if score is None else float(score)
            results.append(ExerciseResult(nbgrader_meta(cell)["grade_id"], score, float(max_score),
                                          "" if score >= max_score else message_of(cell)))
    return results


def zero_results(source_nb, message: str) -> list[ExerciseResult]:
    return [ExerciseResult(nbgrader_meta(c)["grade_id"], 0.0, float(nbgrader_meta(c).get("points", 0)), message)
            for c in source_nb.cells if is_grade_cell(c)]


def stamp_positions(submitted) -> None:
    """Mark each submitted cell with its number as Jupyter shows it (1-based, markdown included)."""
    for position, cell in enumerate(submitted.cells, start=1):
        cell.setdefault("metadata", {})[POSITION_KEY] = position


def learner_positions(source_nb, submitted, rebuilt) -> list[int | None]:
    """For each cell of the rebuilt notebook, its number in the learner's notebook (stamp_positions),
    or None for a cell the rebuild put back; the stamps are removed.

    The learner's own cells keep their stamp through the rebuild; the cells it takes from the
    instructor's notebook are found by the key it matched them with.
    """
    matched, _, _ = match_cells(source_nb, submitted)
    by_key = {key: index + 1 for key, index in matched.items()}
    positions = []
    for cell in rebuilt.cells:
        stamp = cell.get("metadata", {}).pop(POSITION_KEY, None)
        positions.append(stamp if isinstance(stamp, int) else by_key.get(cell_key(cell)))
    return positions


def explain_failures(notebook, result: SubmissionResult, where) -> None:
    """Say which of the learner's own cells raised, next to the exercise that failed because of it.

    `where(index)` names the cell at `index` of the rebuilt notebook as the learner knows it.
    """
    raised: dict[str, list[str]] = {}
    for index, cell in enumerate(notebook.cells):
        meta = nbgrader_meta(cell)
        if cell.cell_type != "code" or meta.get("grade") or meta.get("locked"):
            continue
        for output in cell.get("outputs", []):
            if output.output_type == "error" and output.ename not in {"NotImplementedError", "NotRun"}:
                exercise = exercise_of(notebook, index)
                line = f"{where(index)} raised {output.ename}: {output.evalue}".splitlines()[0][:300]
                raised.setdefault(exercise, []).append(line)
                result.findings.append(Finding("error", line, review=False, exercise=exercise))
                break
    for first in list(raised):  # an error in a solution cell explains every grade cell of its exercise
        for grade_id in exercise_grade_ids(notebook, first):
            raised.setdefault(grade_id, raised[first])
    for exercise in result.exercises:
        if not exercise.passed and exercise.grade_id in raised:
            exercise.message = "; ".join(raised[exercise.grade_id]) + "\n" + exercise.message


def fail_exercise(notebook, grade_id: str, reason: str) -> None:
    """Make every grade cell of the exercise `grade_id` score zero, with the reason in its output."""
    grade_ids = set(exercise_grade_ids(notebook, grade_id))
    for cell in notebook.cells:
        if is_grade_cell(cell) and nbgrader_meta(cell).get("grade_id") in grade_ids:
            cell.outputs = [error_output("IntegrityError", reason)]


def grade_notebook(root: Path, chapter: Chapter, path: Path | None, limits: Limits, student: str = "me",
                   extra_findings=(), notebooks=None) -> SubmissionResult:
    """Read, rebuild, execute and score one submission; never raises for anything in the file.

    `notebooks`: (instructor notebook, released notebook) already read (a class reads them once)."""
    source_nb, release_nb = notebooks if notebooks is not None else sources(root, chapter)
    result = SubmissionResult(student, chapter, findings=list(extra_findings))
    isolated = isolation.use_isolation(limits.isolation)  # raises when required and not available
    result.isolation = isolation.describe(isolated, limits.isolation)
    if not isolated:
        result.findings.append(Finding("unisolated", f"this notebook ran {result.isolation}", review=False))
    try:
        submitted = load_submission(path, f"{chapter.notebook}.ipynb")
    except UnreadableSubmission as unreadable:
        result.findings.append(unreadable.finding)
        result.exercises = zero_results(source_nb, unreadable.finding.message)
        return result
    stamp_positions(submitted)
    with AST_LOCK:  # CPython's ast module is not safe to use from several threads at once
        notebook, findings = rebuild(source_nb, release_nb, submitted, own_modules=chapter.graded_modules,
                                     run_own_cells=limits.run_own_cells)
        positions = learner_positions(source_nb, submitted, notebook)
    sections = section_of_each_cell(notebook)

    def where(index: int) -> str:
        return describe_cell(positions[index], sections[index])

    result.findings += findings
    with tempfile.TemporaryDirectory(prefix="llmcourse-run-") as workdir:
        events = execute(notebook, Path(workdir), limits, protected_paths(root, chapter),
                         blocked_modules=list(chapter.graded_module_names), isolated=isolated)
    for event in events:
        exercise = exercise_of(notebook, event.index)
        if event.kind == "integrity" and "was not run because" in event.message:
            continue  # a cell the rebuild already replaced; its finding is recorded
        if event.kind == "integrity":
            result.findings.append(Finding("integrity", f"{where(event.index)}: {event.message}", exercise=exercise))
        elif event.kind == "truncated":
            result.findings.append(Finding("output", f"{where(event.index)}: {event.message}", review=False))
        elif event.kind in {"timeout", "died"}:
            result.findings.append(Finding(event.kind, f"{where(event.index)}: {event.message}", exercise=exercise))
    for finding in result.findings:
        if finding.kind == "integrity" and finding.exercise:
            fail_exercise(notebook, finding.exercise, finding.message)
    result.exercises = score_notebook(notebook)
    explain_failures(notebook, result, where)
    result.executed = notebook
    return result


# ---------------------------------------------------------------------------------------------
# A class: collect, run in parallel, record with nbgrader, report.


def safe_student_id(name: str) -> str:
    """A student id nbgrader and every file system accept: NFC, no separators or control characters."""
    name = unicodedata.normalize("NFC", name).strip()
    name = re.sub(r"[\\/:*?\"<>|\x00-\x1f]+", "_", name).strip(". ")
    return name or "unnamed"


def extract_zip(archive: Path, into: Path) -> list[Finding]:
    """Unpack an LMS download safely: no absolute paths, no `..`, bounded size."""
    findings = []
    try:
        with zipfile.ZipFile(archive) as bundle:
            total = 0
            for info in bundle.infolist():
                name = info.filename
                parts = Path(name).parts
                if name.startswith(("/", "\\")) or ".." in parts or info.is_dir():
                    if not info.is_dir():
                        findings.append(Finding("invalid", f"{archive.name}: skipped unsafe path {name!r}"))
                    continue
                total += info.file_size
                if total > MAX_ZIP_BYTES:
                    findings.append(Finding("invalid", f"{archive.name}: more than {MAX_ZIP_BYTES >> 20} MB unpacked; "
                                                       "the rest was skipped"))
                    break
                target = into.joinpath(*parts)
                target.parent.mkdir(parents=True, exist_ok=True)
                with bundle.open(info) as source, open(target, "wb") as sink:
                    shutil.copyfileobj(source, sink)
    except zipfile.BadZipFile as error:
        findings.append(Finding("invalid", f"{archive.name} is not a readable zip file: {error}"))
    return findings


@dataclass
class Collected:
    student: str
    path: Path | None
    findings: list[Finding]


LMS_FILE = re.compile(r"^(?P<student>[^_]+)_(?:LATE_|late_)?(?:\d+_)*(?P<name>.+\.ipynb)$")
"""A flat file from a learning-management system: `<student>_<ids>_<original name>` (Canvas)."""
LMS_FOLDER_SUFFIX = re.compile(r"_\d+_assignsubmission_\w*$")
"""What Moodle appends to each student's folder name."""


def folder_student(name: str) -> str:
    return safe_student_id(LMS_FOLDER_SUFFIX.sub("", name))


def collect(submissions: Path, chapter: Chapter, scratch: Path) -> list[Collected]:
    """One entry per student found in `submissions`.

    Layouts: `<student>/<assignment>/<notebook>.ipynb`, `<student>/<notebook>.ipynb`, flat files
    `<student>_<ids>_<notebook>.ipynb` (Canvas), and zip files of any of these: `<student>.zip`,
    or one archive of the class (Moodle's `<Name>_<id>_assignsubmission_file_/` folders too).
    """
    submissions = Path(submissions)
    if not submissions.is_dir():
        raise CourseError(f"{submissions} is not a folder of submissions")
    expected = f"{chapter.notebook}.ipynb"
    folders: dict[str, list[Path]] = {}
    problems: dict[str, list[Finding]] = {}

    def add_flat(file: Path) -> None:
        match = LMS_FILE.match(file.name)
        student = safe_student_id(match["student"]) if match else safe_student_id(file.stem)
        place = scratch / "flat" / student
        place.mkdir(parents=True, exist_ok=True)
        shutil.copy2(file, place / (match["name"] if match else file.name))
        folders.setdefault(student, []).append(place)

    archived: dict[str, list[tuple[Path, str]]] = {}  # student -> (folder, class archive) in class archives

    def add_class(top: list[Path], found: list[Finding], archive: str) -> None:
        for item in top:
            if item.is_dir():
                archived.setdefault(folder_student(item.name), []).append((item, archive))
                problems.setdefault(folder_student(item.name), []).extend(found)
            elif item.suffix.lower() == ".ipynb":
                match = LMS_FILE.match(item.name)
                student = safe_student_id(match["student"]) if match else safe_student_id(item.stem)
                place = scratch / "flat-archived" / archive / student
                place.mkdir(parents=True, exist_ok=True)
                shutil.copy2(item, place / (match["name"] if match else item.name))
                archived.setdefault(student, []).append((place, archive))

    for entry in sorted(submissions.iterdir()):
        if entry.is_dir():
            folders.setdefault(folder_student(entry.name), []).append(entry)
        elif entry.suffix.lower() == ".ipynb":
            add_flat(entry)
        elif entry.suffix.lower() == ".zip":
            unpacked = scratch / "unzipped" / entry.stem
            found = extract_zip(entry, unpacked)
            top = sorted(unpacked.iterdir()) if unpacked.exists() else []
            entries = [p for p in top if p.is_dir() or p.suffix.lower() == ".ipynb"]
            from_lms = any(LMS_FOLDER_SUFFIX.search(p.name) if p.is_dir() else LMS_FILE.match(p.name) for p in entries)
            own = not from_lms and (len(entries) <= 1 or any(p.name in {chapter.assignment, expected} for p in top))
            if not own:  # an archive of the whole class: a folder or LMS file per student
                add_class(top, found, entry.name)
            else:  # one student's archive: whatever it holds is that student's
                student = safe_student_id(entry.stem)
                folders.setdefault(student, []).append(unpacked)
                problems.setdefault(student, []).extend(found)
                named = [p.name for p in entries if p.is_dir() and p.name not in {chapter.assignment, expected}
                         and folder_student(p.name) != student]
                if named:
                    problems[student].append(Finding("archive", f"{entry.name} holds a folder named {named[0]!r}; "
                                                                f"a student's zip holds only their own work, so it "
                                                                f"was graded as {student}'s"))
    for student, places in archived.items():  # never in place of a student's own submission
        archives = sorted({archive for _, archive in places})
        if student in folders:
            problems.setdefault(student, []).append(Finding(
                "archive", f"the class archive {', '.join(archives)} also holds work for {student}; it was ignored "
                           "in favour of the submission in its own folder or file"))
            continue
        folders[student] = [place for place, _ in places]
        if len(archives) > 1:
            problems.setdefault(student, []).append(Finding(
                "archive", f"several class archives hold work for {student} ({', '.join(archives)})"))
    collected = []
    for student, places in sorted(folders.items()):
        findings = list(problems.get(student, []))
        notebooks = sorted({p for place in places for p in place.rglob("*.ipynb")
                            if ".ipynb_checkpoints" not in p.parts}, key=lambda p: (len(p.parts), str(p)))
        chosen = next((p for p in notebooks if p.name == expected and p.parent.name == chapter.assignment), None)
        chosen = chosen or next((p for p in notebooks if p.name == expected), None)
        if chosen is None and len(notebooks) == 1:
            chosen = notebooks[0]
            findings.append(Finding("renamed", f"the notebook was named {chosen.name!r}; it was graded as {expected}"))
        for other in notebooks:
            if other != chosen:
                findings.append(Finding("extra", f"an unexpected notebook {other.name!r} was ignored"))
        collected.append(Collected(student, chosen, findings))
    return collected


def file_digest(path: Path) -> str | None:
    return hashlib.sha256(path.read_bytes()).hexdigest() if path.exists() else None


@contextlib.contextmanager
def exclusive(lock_path: Path):
    """One `grade` at a time per course folder: the gradebook has one writer."""
    import fcntl

    lock_path.parent.mkdir(parents=True, exist_ok=True)
    with open(lock_path, "w") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise CourseError(f"another `grade` is running in this course folder ({lock_path}); "
                               "wait for it to finish") from None
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def open_gradebook(root: Path):
    """nbgrader's Gradebook on the course's SQLite file (it runs `alembic` from this environment)."""
    from nbgrader.api import Gradebook

    bin_dir = str(Path(sys.executable).parent)
    if bin_dir not in os.environ.get("PATH", "").split(os.pathsep):
        os.environ["PATH"] = bin_dir + os.pathsep + os.environ.get("PATH", "")
    return Gradebook(f"sqlite:///{Path(root) / 'gradebook.db'}")


def ensure_assignment(root: Path, chapter: Chapter) -> None:
    """Put the assignment into the course's gradebook (nbgrader generate_assignment, exercises/ untouched)."""
    from nbgrader.api import MissingEntry

    with open_gradebook(root) as gradebook:
        try:
            assignment = gradebook.find_assignment(chapter.assignment)
            if assignment.notebooks:
                return
        except MissingEntry:
            pass
    release = Path(root) / GRADING_DIR / "release"
    result = nbgrader(["generate_assignment", chapter.assignment, "--force",
                       f"--CourseDirectory.release_directory={release}"], cwd=Path(root))
    if result.returncode != 0:
        raise CourseError(f"nbgrader generate_assignment {chapter.assignment} failed:\n"
                           f"{result.stdout}\n{result.stderr}")


def gradebook_scores(root: Path, chapter: Chapter, students) -> dict[str, float | None]:
    from nbgrader.api import MissingEntry

    scores = {}
    with open_gradebook(root) as gradebook:
        for student in students:
            try:
                scores[student] = gradebook.find_submission(chapter.assignment, student).score
            except MissingEntry:
                scores[student] = None
    return scores


@dataclass
class Step:
    """One nbgrader command the grader ran, with its log."""

    name: str
    ok: bool
    log: Path
    detail: str = ""


@dataclass
class ClassReport:
    chapter: Chapter
    results: list[SubmissionResult]
    recorded: dict[str, float | None]
    summary_path: Path
    log: str = ""
    isolation: str = ""  # how the kernels ran (isolation.describe)
    steps: list[Step] = field(default_factory=list)

    @property
    def failed_steps(self) -> list[Step]:
        return [step for step in self.steps if not step.ok]

    def review(self) -> list[tuple[str, str]]:
        items = [(r.student, message) for r in self.results for message in r.needs_review]
        for r in self.results:
            recorded = self.recorded.get(r.student)
            if recorded is not None and abs(recorded - r.score) > 1e-9:
                items.append((r.student, f"the gradebook recorded {recorded:g}, the grader computed {r.score:g}"))
        return items


NBGRADER_ERROR = re.compile(r"^\[\w+App \| (ERROR|CRITICAL)\]", re.M)


def nbgrader_step(root: Path, work: Path, name: str, args: list[str]) -> Step:
    """Run one nbgrader command; its exit status and any ERROR line it logged decide `ok`, and
    everything it printed goes to grading/<assignment>/nbgrader-<name>.log."""
    log = work / f"nbgrader-{name}.log"
    try:
        result = nbgrader(args, cwd=root)
        status, output = result.returncode, result.stdout + result.stderr
    except Exception as error:  # noqa: BLE001 (nbgrader missing, a broken environment: reported, not raised)
        status, output = None, f"{type(error).__name__}: {error}\n"
    errors = [line for line in output.splitlines() if NBGRADER_ERROR.match(line)]
    log.write_text(f"$ nbgrader {' '.join(args)}\nexit status: {status}\n\n{output}", encoding="utf-8")
    ok = status == 0 and not errors
    detail = "" if ok else (errors[0] if errors else f"exit status {status}")
    return Step(name, ok, log, detail)


def class_limits(limits: Limits, jobs: int) -> Limits:
    """A class is graded isolated (or unisolated only when asked), the cores shared between kernels."""
    if limits.isolation == isolation.AUTO:
        limits = dataclasses.replace(limits, isolation=isolation.REQUIRED)
    if limits.threads is None:
        limits = dataclasses.replace(limits, threads=max(1, (os.cpu_count() or 1) // max(1, jobs)))
    return limits


def stage_raw(root: Path, chapter: Chapter, collected: list[Collected]) -> None:
    """Keep each raw submission where nbgrader expects it (submitted/<student>/<assignment>/)."""
    for item in collected:
        if item.path is None:
            continue
        try:
            raw = Path(root) / "submitted" / item.student / chapter.assignment
            raw.mkdir(parents=True, exist_ok=True)
            target = raw / f"{chapter.notebook}.ipynb"
            if target.is_symlink():
                target.unlink()
            shutil.copyfile(item.path, target)
        except OSError as error:
            item.findings.append(Finding("error", f"the raw submission could not be kept in submitted/: {error}"))


def run_submissions(root: Path, chapter: Chapter, collected: list[Collected], limits: Limits, jobs: int,
                    notebooks, progress=print) -> list[SubmissionResult]:
    """Grade every collected submission, `jobs` at a time; one that breaks the grader scores zero
    with the reason, and the others go on."""
    def run(item: Collected) -> SubmissionResult:
        try:
            return grade_notebook(root, chapter, item.path, limits, item.student, item.findings, notebooks=notebooks)
        except Exception as error:  # noqa: BLE001 (one submission must never stop the class)
            result = SubmissionResult(item.student, chapter, findings=item.findings)
            result.findings.append(Finding("error", f"the grader failed on this submission: "
                                                    f"{type(error).__name__}: {error}"))
            result.exercises = zero_results(notebooks[0], "not graded: the grader failed")
            return result

    results = []
    with concurrent.futures.ThreadPoolExecutor(max_workers=max(1, jobs)) as pool:
        for result in pool.map(run, collected):
            progress(f"  {result.student:<24} {result.score:>5g} / {result.max_score:<4g}"
                     + ("  (needs a look)" if result.needs_review else ""))
            results.append(result)
    return results


def write_executed(results: list[SubmissionResult], chapter: Chapter, executed_dir: Path, source_nb) -> None:
    """Write each executed notebook, after every kernel has exited, into a folder made now: no
    link a submission could have planted is followed, and one notebook that cannot be written
    costs only its own student."""
    if executed_dir.is_symlink() or executed_dir.is_file():
        executed_dir.unlink()
    elif executed_dir.exists():
        shutil.rmtree(executed_dir)
    executed_dir.mkdir(parents=True)
    for result in results:
        if result.executed is None:
            continue
        try:
            folder = executed_dir / result.student / chapter.assignment
            folder.mkdir(parents=True)
            text = nbformat.writes(result.executed)
            flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0)
            handle = os.open(folder / f"{chapter.notebook}.ipynb", flags, 0o644)
            with os.fdopen(handle, "w", encoding="utf-8") as sink:
                sink.write(text)
        except (OSError, ValueError) as error:
            result.executed = None
            result.exercises = zero_results(source_nb, "not recorded: the executed notebook could not be "
                                                       f"written ({error})")
            result.findings.append(Finding("error", f"the executed notebook could not be written: {error}"))


def record(root: Path, chapter: Chapter, work: Path, executed_dir: Path, results: list[SubmissionResult],
           feedback: bool) -> list[Step]:
    """The grades into nbgrader's gradebook (its only writer), feedback, and the CSV export."""
    with open_gradebook(root) as gradebook:
        for result in results:
            gradebook.update_or_create_student(result.student)
    steps = []
    if any(executed_dir.glob(f"*/{chapter.assignment}/*.ipynb")):
        steps.append(nbgrader_step(root, work, "autograde", [
            "autograde", chapter.assignment, "--create", "--force",
            f"--CourseDirectory.submitted_directory={executed_dir}",
            "--ClearOutput.enabled=False", "--Execute.enabled=False"]))
        if feedback:
            steps.append(nbgrader_step(root, work, "generate_feedback",
                                       ["generate_feedback", chapter.assignment, "--force"]))
    steps.append(nbgrader_step(root, work, "export", ["export", f"--to={work / 'grades.csv'}"]))
    return steps


def grade_class(root: Path, chapter: Chapter, submissions: Path, limits: Limits, jobs: int = 2,
                feedback: bool = True, progress=print) -> ClassReport:
    """Grade every submission in `submissions` for `chapter`, in stages: collect, stage the raw
    files, run each isolated, write the executed notebooks, record with nbgrader, report."""
    root = Path(root)
    if not Path(submissions).is_dir():
        raise CourseError(f"{submissions} is not a folder; give the folder that holds one folder (or zip "
                          "file) per student")
    limits = class_limits(limits, jobs)
    isolated = isolation.use_isolation(limits.isolation)  # refuse before touching anything
    work = root / GRADING_DIR / chapter.assignment
    with exclusive(root / GRADING_DIR / ".lock"):
        if work.exists():
            shutil.rmtree(work)
        work.mkdir(parents=True)
        ensure_assignment(root, chapter)
        notebooks = sources(root, chapter)  # read once: nothing a submission does can take them away
        collected = collect(submissions, chapter, work)
        stage_raw(root, chapter, collected)
        gradebook = root / "gradebook.db"
        before = file_digest(gradebook)
        backup = work / "gradebook.before.db"
        shutil.copy2(gradebook, backup)
        results = run_submissions(root, chapter, collected, limits, jobs, notebooks, progress)
        if file_digest(gradebook) != before:  # nothing may write the gradebook while submissions run
            shutil.copy2(backup, gradebook)
            for result in results:
                result.findings.append(Finding("integrity", "the gradebook changed while submissions ran; "
                                                            "it was restored from the copy taken before"))
        write_executed(results, chapter, work / "executed", notebooks[0])
        steps = record(root, chapter, work, work / "executed", results, feedback)
        recorded = gradebook_scores(root, chapter, [r.student for r in results])
        log = "".join(step.log.read_text(encoding="utf-8") for step in steps if step.log.exists())
        report = ClassReport(chapter, results, recorded, work / "summary.csv", log,
                             isolation.describe(isolated, limits.isolation), steps)
        write_summary(report)
        return report


def write_summary(report: ClassReport) -> None:
    report.summary_path.parent.mkdir(parents=True, exist_ok=True)
    with open(report.summary_path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        grade_ids = [e.grade_id for e in report.results[0].exercises] if report.results else []
        writer.writerow(["student", "score", "max_score", *grade_ids, "needs_review"])
        for r in report.results:
            scores = {e.grade_id: e.score for e in r.exercises}
            writer.writerow([r.student, f"{r.score:g}", f"{r.max_score:g}",
                             *(f"{scores.get(g, 0):g}" for g in grade_ids), " | ".join(r.needs_review)])


def print_report(report: ClassReport, out=print) -> None:
    out(f"\n{report.chapter.assignment}: {len(report.results)} submission(s), {report.isolation}")
    out(f"  {'student':<24} {'score':>11}")
    for r in report.results:
        out(f"  {r.student:<24} {r.score:>5g} / {r.max_score:<4g}")
    review = report.review()
    if review:
        out("\nneeds a human look:")
        for student, message in review:
            out(f"  {student}: {message}")
    out(f"\nsummary: {report.summary_path}")
    out(f"grades of every chapter (nbgrader export): {report.summary_path.with_name('grades.csv')}")
    for step in report.steps:
        state = "ok" if step.ok else f"FAILED ({step.detail})"
        out(f"nbgrader {step.name}: {state}; log: {step.log}")


def limits_from_args(args) -> Limits:
    """Limits from the command line's --timeout and --memory-gb (cli.add_limit_options)."""
    limits = Limits()
    if getattr(args, "timeout", None):
        limits.cell_timeout = float(args.timeout)
    if getattr(args, "total_timeout", None):
        limits.total_timeout = float(args.total_timeout)
    if getattr(args, "memory_gb", None):
        limits.memory_bytes = int(float(args.memory_gb) * 2**30)
    if getattr(args, "unisolated", False) or os.environ.get(isolation.UNISOLATED_ENV) == "1":
        limits.isolation = isolation.OFF
    return limits

