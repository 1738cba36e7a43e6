"""The command line as a learner meets it: `./course` and `python -m llmcourse`, their output and errors."""
from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from types import SimpleNamespace

import pytest

pytestmark = [pytest.mark.course_infra]


def llmcourse(*args, cwd):
    return subprocess.run([sys.executable, "-m", "llmcourse", *args], cwd=cwd, capture_output=True, text=True)


def test_train_tokenizer_on_a_user_file(root, tmp_path):
    from tokenizers import Tokenizer

    from llmcourse.tokenizer import BPETokenizer

    text = tmp_path / "mine.txt"
    text.write_text("low lower lowest newer wider 新的 更新的\n" * 50, encoding="utf-8")
    result = llmcourse("train-tokenizer", "--text", str(text), "--vocab-size", "300", "--special", "<|endoftext|>",
                       "--out", str(tmp_path / "tok.json"), "--hf-json", str(tmp_path / "hf.json"), cwd=root)
    assert result.returncode == 0, result.stderr
    ours = BPETokenizer.load(tmp_path / "tok.json")
    sample = "lowest 更新的<|endoftext|>"
    assert Tokenizer.from_file(str(tmp_path / "hf.json")).encode(sample).ids == ours.encode(sample)


def test_missing_text_file_is_a_clear_error(root, tmp_path):
    result = llmcourse("train-tokenizer", "--text", str(tmp_path / "nope.txt"), "--out", str(tmp_path / "t.json"),
                       cwd=root)
    assert result.returncode == 2 and "nope.txt" in result.stderr and "Traceback" not in result.stderr
    assert not (tmp_path / "t.json").exists()


def test_corpus_command_writes_the_generated_corpus(root, tmp_path):
    from llmcourse.course.corpus import generate_corpus

    result = llmcourse("corpus", "--chars", "5000", "--seed", "3", "--out", str(tmp_path / "c.txt"), cwd=root)
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "c.txt").read_text(encoding="utf-8") == generate_corpus(5000, seed=3)


def test_unknown_arguments_are_refused(root):
    assert llmcourse("export", "--bogus", cwd=root).returncode == 2


def test_grade_and_check_refuse_bad_arguments_clearly(root, tmp_path):
    missing = llmcourse("grade", "01-tokenizers", str(tmp_path / "nowhere"), cwd=root)
    assert missing.returncode == 2 and "is not a folder" in missing.stderr, missing.stderr
    unknown = llmcourse("grade", "99-nothing", str(tmp_path), cwd=root)
    assert unknown.returncode == 2 and "01-tokenizers" in unknown.stderr, unknown.stderr
    stray = tmp_path / "notes.ipynb"
    stray.write_text("{}", encoding="utf-8")
    check = llmcourse("check", str(stray), cwd=root)
    assert check.returncode == 2 and "not a chapter notebook" in check.stdout, check.stdout
    absent = llmcourse("check", str(tmp_path / "01-tokenizers" / "tokenizers.ipynb"), cwd=root)
    assert absent.returncode == 2 and "no such notebook" in absent.stdout


def test_test_command_runs_only_the_files_it_is_given(root, monkeypatch):
    """`./course test tests/test_x.py` runs that file, not the whole suite plus that file."""
    from llmcourse.course import cli

    commands = []

    def run(command, **kwargs):
        commands.append(command)
        return SimpleNamespace(returncode=0)

    monkeypatch.setattr(cli.subprocess, "run", run)
    cli.run_package_tests(None, [], ["tests/test_cli.py", "-q"])
    cli.run_package_tests(None, [], ["-q"])
    cli.run_package_tests(None, ["test_attention.py"], [])
    assert commands[0][3:] == ["tests/test_cli.py", "-q"]
    assert commands[1][3:] == [str(root / "tests"), "-q"]
    assert commands[2][3:] == [str(root / "tests" / "test_attention.py")]


# --- running the `course` script --------------------------------------------------------------------


def course(*args, cwd, **env):
    """The `course` script in this test's environment (installing nothing), run in `cwd`."""
    script = Path(__file__).resolve().parents[1] / "course"
    environment = dict(os.environ, LLMCOURSE_NO_SETUP="1", LLMCOURSE_VENV=sys.prefix, **env)
    # a check run here never touches the learner's own progress (_build/check/)
    environment.setdefault("LLMCOURSE_CHECK_RESULTS", str(Path(tempfile.gettempdir()) / "llmcourse-test-checks"))
    environment.pop("LLMCOURSE_CWD", None)
    return subprocess.run(["bash", str(script), *args], cwd=cwd, env=environment, capture_output=True, text=True)


def blank_chapter_copy(root, folder, chapter=None):
    """A learner's copy of a chapter notebook in `folder/<assignment>/`, as the exercises/ one."""
    from llmcourse.course.chapters import CHAPTERS

    chapter = chapter or CHAPTERS[0]
    place = folder / chapter.assignment
    place.mkdir(parents=True)
    shutil.copy2(chapter.exercise_path(root), place / f"{chapter.notebook}.ipynb")
    return place / f"{chapter.notebook}.ipynb"


def with_solutions(root, notebook_path, exercises, extra=None):
    """Paste the reference solutions of `exercises` (numbers) into a learner's notebook;
    `extra` {number: code} is appended to those solution cells."""
    import nbformat

    from llmcourse.course.chapters import CHAPTERS
    from llmcourse.course.places import exercise_number, section_of_each_cell

    chapter = next(c for c in CHAPTERS if c.assignment == notebook_path.parent.name)
    solution = nbformat.read(str(chapter.solution_path(root)), as_version=4)
    answers = {c.metadata["nbgrader"]["grade_id"]: c.source for c in solution.cells
               if c.metadata.get("nbgrader", {}).get("solution")}
    notebook = nbformat.read(str(notebook_path), as_version=4)
    for cell, section in zip(notebook.cells, section_of_each_cell(notebook)):
        grade_id = cell.metadata.get("nbgrader", {}).get("grade_id")
        number = exercise_number(section or "")
        if grade_id in answers and number in exercises:
            cell.source = answers[grade_id] + (extra or {}).get(number, "")
    nbformat.write(notebook, str(notebook_path))


# --- 1. check: exercises by title, package tests by exercise, a summary --------------------------


def test_exercise_titles_come_from_the_notebook_headings(root):
    import nbformat

    from llmcourse.course.chapters import CHAPTERS
    from llmcourse.course.places import exercise_number, exercise_titles, headings

    assert headings({"cell_type": "markdown", "source": "## 2. Byte-pair encoding\n### Exercise 2 — count pairs "
                                                          "and merge (2 points: 1 for each function)"}) == [
        "2. Byte-pair encoding", "Exercise 2 — count pairs and merge"]
    assert headings({"cell_type": "markdown", "source": "```python\n# a comment\n```"}) == []
    for chapter in CHAPTERS:
        notebook = nbformat.read(str(chapter.solution_path(root)), as_version=4)
        titles = exercise_titles(notebook)
        assert titles, chapter.assignment
        for grade_id, title in titles.items():
            assert exercise_number(title) is not None, f"{chapter.assignment}: {grade_id} sits under {title!r}"
            assert "point" not in title, f"{chapter.assignment}: {title!r} still carries its points"


def test_check_table_shows_one_row_per_exercise_by_title():
    from llmcourse.course.check_report import group_exercises, print_exercises
    from llmcourse.course.grading import ExerciseResult

    results = [ExerciseResult("ex1-tests", 1, 1), ExerciseResult("ex1-decode-tests", 0, 1, "AssertionError: decode"),
               ExerciseResult("ex2-tests", 2, 2)]
    titles = {"ex1-tests": "Exercise 1 — a byte tokenizer", "ex1-decode-tests": "Exercise 1 — a byte tokenizer",
              "ex2-tests": "Exercise 2 — count pairs and merge"}
    exercises = group_exercises(results, titles)
    assert [(e.number, e.score, e.max_score, e.passed) for e in exercises] == [(1, 1, 2, False), (2, 2, 2, True)]
    lines = []
    print_exercises(exercises, out=lines.append)
    text = "\n".join(lines)
    assert "FAIL    Exercise 1 — a byte tokenizer" in text and "pass    Exercise 2 — count pairs and merge" in text
    assert "| AssertionError: decode" in text and "ex1-tests" not in text
    assert lines[-1].split() == ["3", "/", "4", "total"]


def test_every_package_test_belongs_to_an_exercise_of_its_chapter(root):
    """chapters.py names the exercise of every test function in a chapter's test files, once."""
    import ast

    import nbformat

    from llmcourse.course.chapters import CHAPTERS
    from llmcourse.course.places import exercise_number, exercise_titles

    for chapter in CHAPTERS:
        defined = set()
        for name in chapter.test_files:
            tree = ast.parse((root / "tests" / name).read_text(encoding="utf-8"))
            defined |= {n.name for n in tree.body if isinstance(n, ast.FunctionDef) and n.name.startswith("test_")}
        listed = [test for group in chapter.package_tests for test in group.tests]
        assert sorted(set(listed)) == sorted(listed), f"{chapter.assignment}: a test is listed twice"
        assert not defined - set(listed), (f"{chapter.assignment}: add these tests to its package_tests in "
                                           f"chapters.py: {sorted(defined - set(listed))}")
        assert not set(listed) - defined, f"{chapter.assignment}: no such tests: {sorted(set(listed) - defined)}"
        numbers = {exercise_number(t) for t in exercise_titles(
            nbformat.read(str(chapter.solution_path(root)), as_version=4)).values()}
        for group in chapter.package_tests:
            for number in {group.exercise, *group.uses} - {None}:
                assert number in numbers, f"{chapter.assignment}: {group.tests[0]} names exercise {number}"


def test_a_failed_package_test_says_what_was_expected_and_what_came_back():
    from llmcourse.course.package_tests import FAILURE_LINES, failure_lines

    report = "\n".join([
        "tests/test_embeddings.py:82: in test_cosine_matrix_matches_torch",
        '    expect_tensor(got, want, "cosine_similarity_matrix", atol=1e-12, rtol=1e-12)',
        "E           AssertionError: an earlier exception, chained",
        "",
        "The above exception was the direct cause of the following exception:",
        '>           raise AssertionError(f"{name} differs from the expected values")',
        "E           AssertionError: cosine_similarity_matrix differs from the expected values: "
        "at index (0, 0) got -1.01, expected -1",
        "E           Failing test case: test_cosine_matrix_matches_torch(",
        "E               # The test always failed when commented parts were varied together.",
        "E               n=1,  # or any other generated value",
        "E               seed=0,  # or any other generated value",
        "E           )",
        "E           Use -v to get more diff",
        "",
        "checks.py:44: AssertionError"])
    assert failure_lines(report).splitlines() == [
        "AssertionError: cosine_similarity_matrix differs from the expected values: at index (0, 0) got -1.01, "
        "expected -1",
        "Failing test case: test_cosine_matrix_matches_torch(n=1, seed=0)"]
    long = "\n".join(f"E   line {i}" for i in range(20))
    lines = failure_lines(long).splitlines()
    assert len(lines) == FAILURE_LINES and lines[-1] == f"… ({20 - FAILURE_LINES + 1} more lines)"
    setup_error = 'failed on setup with "NotImplementedError"'
    assert failure_lines("", setup_error) == setup_error


def test_package_failures_are_reported_by_exercise():
    from llmcourse.course.chapters import chapter_by_assignment
    from llmcourse.course.check_report import Exercise, live_line, print_package_failures
    from llmcourse.course.package_tests import TestResult

    chapter = chapter_by_assignment("01-tokenizers")
    assert live_line(chapter, "test_bpe_round_trip_samples", "FAIL", False) == (
        "  FAIL  test_bpe_round_trip_samples  (exercise 4; uses 3)")
    assert live_line(chapter, "test_char_tokenizer_round_trip_and_unknown", "pass", False).endswith("(given code)")
    exercises = [Exercise("Exercise 4 — encode a chunk", 0, 3), Exercise("Exercise 5 — Viterbi segmentation", 0, 3)]
    failures = [TestResult("test_viterbi_unknown_characters", "FAIL", "AssertionError: viterbi_segment('x') should "
                                                                      "be ['<unk>'], got ['x']"),
                TestResult("test_bpe_round_trip_samples", "FAIL", "NotImplementedError"),
                TestResult("test_bpe_compresses_and_counts", "FAIL", "NotImplementedError\nFailing test case: …")]
    lines = []
    print_package_failures(chapter, exercises, failures, out=lines.append)
    text = "\n".join(lines)
    assert text.index("Exercise 4 — encode a chunk (these tests also run exercise 3)") < text.index(
        "Exercise 5 — Viterbi segmentation")
    assert "2 tests: test_bpe_round_trip_samples, test_bpe_compresses_and_counts" in text
    assert text.count("| NotImplementedError") == 1 and "Failing test case" not in text
    assert "| AssertionError: viterbi_segment('x') should be ['<unk>'], got ['x']" in text


def test_summary_line():
    from llmcourse.course.check_report import Exercise, summary_line
    from llmcourse.course.package_tests import PackageReport, TestResult

    exercises = [Exercise("Exercise 1 — a", 2, 2), Exercise("Exercise 2 — b", 1, 2)]
    report = PackageReport([TestResult("test_a", "pass"), TestResult("test_b", "FAIL")], seconds=3.2)
    assert summary_line(exercises) == "3 / 4 points, 1 of 2 exercises passed"
    assert summary_line(exercises, report) == "3 / 4 points, 1 of 2 exercises passed; 1 of 2 package tests passed (3 s)"


@pytest.mark.slow
def test_check_of_a_half_done_chapter_from_its_folder(root, tmp_path):
    """What a learner sees: exercises by title, package tests by exercise, one summary line."""
    notebook = blank_chapter_copy(root, tmp_path)
    with_solutions(root, notebook, {1, 2, 3})
    done = course("check", notebook.name, cwd=notebook.parent, LLMCOURSE_CHECK_RESULTS=str(tmp_path / "results"))
    out = done.stdout
    assert done.returncode == 1 and "no such notebook" not in out, out + done.stderr
    table = out.split("package tests")[0]
    assert table.startswith(f"\n{notebook.name}  (chapter 1: Tokenizers; hidden tests included; ran "), table
    assert "isolated" in table.splitlines()[1], "the header says how the kernel was isolated"
    assert "pass    Exercise 1 — a byte tokenizer" in table and "FAIL    Exercise 4 — encode a chunk" in table
    assert "-tests" not in out, "grade ids are not shown"
    assert "  pass  test_byte_tokenizer_known_answers  (exercise 1)" in out
    assert "  FAIL  test_viterbi_unknown_characters  (exercise 5)" in out
    failures = out.split("package tests that failed, by exercise:")[1]
    assert "Exercise 5 — Viterbi segmentation" in failures and "| NotImplementedError" in failures
    assert "Exercise 1 —" not in failures
    summary = out.strip().splitlines()[-1].strip()
    assert re.fullmatch(r"summary: 8 / 17 points, 3 of 6 exercises passed; \d+ of \d+ package tests passed "
                        r"\(\d+ s\)", summary), summary
    progress = course("progress", cwd=notebook.parent, LLMCOURSE_CHECK_RESULTS=str(tmp_path / "results"))
    row = next(line for line in progress.stdout.splitlines() if line.strip().startswith("1 Tokenizers"))
    assert "8 / 17" in row and row.endswith("2/2  2/2  4/4  0/3  0/3  0/3"), progress.stdout


# --- 2. paths are read from the learner's folder ----------------------------------------------------


def test_paths_are_read_from_the_folder_the_command_runs_in(root, tmp_path):
    notebook = blank_chapter_copy(root, tmp_path)
    done = course("export", notebook.name, "--out", "mine", cwd=notebook.parent)
    assert done.returncode == 0, done.stdout + done.stderr
    assert (notebook.parent / "mine" / "llmcourse" / "tokenizer.py").is_file()
    assert "test --package mine" in done.stdout, done.stdout
    missing = course("export", "nowhere.ipynb", "--out", "mine", cwd=notebook.parent)
    assert missing.returncode == 2 and str(notebook.parent / "nowhere.ipynb") in missing.stderr, missing.stderr


def test_check_finds_the_notebook_of_the_folder_it_runs_in(root, tmp_path):
    from llmcourse.course import cli

    notebook = blank_chapter_copy(root, tmp_path)
    args = SimpleNamespace(cwd=notebook.parent, notebooks=[], all=False)
    assert cli.notebooks_to_check(args, root) == [notebook]
    args = SimpleNamespace(cwd=notebook.parent, notebooks=["tokenizers.ipynb", "../x/y.ipynb"], all=False)
    assert cli.notebooks_to_check(args, root) == [notebook, tmp_path / "x" / "y.ipynb"]
    args = SimpleNamespace(cwd=tmp_path, notebooks=[], all=False)
    assert len(cli.notebooks_to_check(args, root)) == len(cli.CHAPTERS)
    args = SimpleNamespace(cwd=root, extra=None)
    assert cli.pytest_paths(args, ["tests/test_cli.py::test_summary_line", "-k", "x"]) == [
        str(root / "tests" / "test_cli.py") + "::test_summary_line", "-k", "x"]


# --- 3. one cell numbering: check and export name the same cell alike ------------------------------


def test_a_cell_keeps_its_number_through_the_rebuild(root):
    """check numbers the cells of the learner's notebook, not of the one it rebuilds and runs."""
    import nbformat

    from llmcourse.course.chapters import CHAPTERS
    from llmcourse.course.grading import learner_positions, sources, stamp_positions
    from llmcourse.course.submission import rebuild

    chapter = CHAPTERS[0]
    source_nb, release_nb = sources(root, chapter)
    learner = nbformat.read(str(chapter.exercise_path(root)), as_version=4)
    learner.cells.insert(1, nbformat.v4.new_markdown_cell("my notes"))
    learner.cells.insert(3, nbformat.v4.new_code_cell("scratch = 1"))
    deleted = next(i for i, c in enumerate(learner.cells) if c.metadata.get("nbgrader", {}).get("grade"))
    del learner.cells[deleted]
    numbers = {id(c): i for i, c in enumerate(learner.cells, start=1)}
    sources_by_number = {i: c.source for i, c in enumerate(learner.cells, start=1)}
    stamp_positions(learner)
    rebuilt, _ = rebuild(source_nb, release_nb, learner, own_modules=chapter.graded_modules)
    positions = learner_positions(source_nb, learner, rebuilt)
    assert len(positions) == len(rebuilt.cells) and numbers
    assert positions.count(None) == 1, "only the deleted grade cell is not in the learner's notebook"
    for cell, position in zip(rebuilt.cells, positions):
        assert "llmcourse_position" not in cell.metadata
        if position is not None and not cell.metadata.get("nbgrader", {}).get("locked"):
            assert cell.source == sources_by_number[position], f"cell {position}"


@pytest.mark.slow
def test_check_and_export_number_a_cell_alike(root, tmp_path):
    """The same cell, as Jupyter counts it (markdown included), in check's and export's messages."""
    import nbformat

    from llmcourse.course import cli
    from llmcourse.course.places import section_of_each_cell

    notebook = blank_chapter_copy(root, tmp_path)
    with_solutions(root, notebook, {1}, extra={1: "\nraise ValueError('a stray line')\n"})
    cells = nbformat.read(str(notebook), as_version=4).cells
    number = next(i for i, (c, s) in enumerate(zip(cells, section_of_each_cell(nbformat.read(str(notebook),
                                                                                         as_version=4))), start=1)
                  if "a stray line" in c.source)
    where = f"cell {number} (Exercise 1 — a byte tokenizer)"
    export = course("export", notebook.name, "--out", "mine", cwd=notebook.parent)
    assert export.returncode == 2 and f", {where}, line" in export.stderr, export.stderr
    check = course("check", notebook.name, "--no-package", cwd=notebook.parent,
                   LLMCOURSE_CHECK_RESULTS=str(tmp_path / "results"))
    line = export.stderr.split(f", {where}, line ")[1].split(":")[0]
    # the grader does not run an export cell with code that would run on import: it says where that code is
    assert f"{where} raised ExportRuleError: an '#| export' cell was not run: line {line}:" in check.stdout, \
        check.stdout
    assert cli.CWD_ENV not in check.stdout


# --- 4. help: every command, from the one parser -----------------------------------------------------


def test_help_lists_every_command_of_the_parser(root):
    from llmcourse.course import cli

    commands = [action for action in cli.build_parser()._subparsers._group_actions][0].choices
    shown = course("help", cwd=root)
    assert shown.returncode == 0 and shown.stdout.startswith("usage: "), shown.stderr
    listed = shown.stdout.split("<command>\n", 2)[-1]
    for name in commands:
        assert f"\n    {name} " in "\n" + listed or f"\n    {name}\n" in "\n" + listed, f"{name} is not listed"
    direct = llmcourse("--help", cwd=root)
    assert direct.stdout == shown.stdout.replace(f"usage: {root / 'course'}", "usage: ./course"), direct.stdout
    assert "llmcourse " not in shown.stdout.replace("python -m llmcourse", "")
    one = course("help", "check", cwd=root)
    assert one.returncode == 0 and "--no-package" in one.stdout and "usage: " in one.stdout
    assert course(cwd=root).stdout == shown.stdout, "no command is `help`"
    relative = course("help", cwd=root / "exercises")
    assert relative.stdout.startswith(f"usage: {root / 'course'} "), relative.stdout[:80]


# --- 5. lab and progress ----------------------------------------------------------------------------


def test_lab_runs_jupyterlab_of_the_course_environment_in_exercises(root):
    shown = course("lab", "--dry-run", "--no-browser", cwd=root / "exercises" / "01-tokenizers")
    assert shown.returncode == 0, shown.stderr
    lines = shown.stdout.splitlines()
    assert lines[0] == f"in {root / 'exercises'}:"
    assert lines[-1].split() == [sys.executable, "-m", "jupyterlab", "--no-browser"]
    assert f"JUPYTER_PATH={sys.prefix}/share/jupyter" in shown.stdout
    assert any(line.strip().startswith(f"PATH={sys.prefix}/bin") for line in lines)


def test_progress_shows_the_last_check_of_each_chapter(root, tmp_path):
    from llmcourse.course import check_report
    from llmcourse.course.chapters import CHAPTERS
    from llmcourse.course.package_tests import PackageReport, TestResult

    course_root = tmp_path / "course"
    notebook = blank_chapter_copy(root, course_root / "exercises")
    exercises = [check_report.Exercise("Exercise 1 — a", 2, 2), check_report.Exercise("Exercise 2 — b", 0, 3)]
    package = PackageReport([TestResult("test_a", "pass"), TestResult("test_b", "FAIL")])
    check_report.save_check(course_root, CHAPTERS[0], notebook, exercises, package)
    lines = []
    check_report.print_progress(course_root, lambda p: str(p), "./course", out=lines.append)
    text = "\n".join(lines)
    row = next(line for line in lines if line.strip().startswith("1 Tokenizers"))
    assert row.split()[2:7] == ["2", "/", "5", "1", "of"] and row.endswith("2/2  0/3"), row
    assert sum(line.strip().startswith(f"{c.number} ") and "not yet" in line for c in CHAPTERS
               for line in lines) == len(CHAPTERS) - 1
    assert "changed since" not in text
    notebook.write_text(notebook.read_text(encoding="utf-8") + " ", encoding="utf-8")
    lines.clear()
    check_report.print_progress(course_root, lambda p: str(p), "./course", out=lines.append)
    assert any("the notebook changed since; ./course check" in line for line in lines), lines


def test_progress_command_runs_nothing(root):
    shown = course("progress", cwd=root)
    assert shown.returncode == 0, shown.stderr
    assert all(f"{c.number} {c.title}" in shown.stdout for c in __import__(
        "llmcourse.course.chapters", fromlist=["CHAPTERS"]).CHAPTERS)


# --- 6. a first run prints no warnings ---------------------------------------------------------------


def test_book_build_drops_only_the_known_kernel_notice():
    import io

    from llmcourse.course.cli import without_known_noise

    notice = (b"[IPKernelApp] WARNING | Kernel is running over TCP without encryption. All communication "
              b"(including code and outputs) is sent in plain text\n")
    sink = io.StringIO()
    without_known_noise(io.BytesIO(notice + b"WARNING: a real one\n" + notice + b"done\n"), sink)
    assert sink.getvalue() == "WARNING: a real one\ndone\n"


def test_setup_installs_numpy_before_torch_and_keeps_quiet(root):
    """Read from the script: a real setup takes minutes (run `LLMCOURSE_VENV=/tmp/v ./course setup`)."""
    script = (root / "course").read_text(encoding="utf-8")
    setup = script[script.index("setup() {"):script.index("\n}\n", script.index("setup() {"))]
    assert setup.index('install "numpy') < setup.index('install "${torch[@]}"') < setup.index('-c "import torch"')
    assert 'PYTHONWARNINGS="ignore:Editable installation"' in setup


# --- 7. the instructors' guide is a page of the book ---------------------------------------------------


def test_instructors_guide_is_in_the_book_and_linked_from_the_readme(root):
    toc = (root / "_toc.yml").read_text(encoding="utf-8")
    assert "file: book/instructors" in toc
    guide = (root / "book" / "instructors.md").read_text(encoding="utf-8")
    for fact in ("./course grade", "nbgrader autograde", "## Isolation", "## What a submission can and cannot do",
                 "assignsubmission_file_", "nbgrader zip_collect", "gradebook.db"):
        assert fact in guide, fact
    assert "book/instructors.md" in (root / "README.md").read_text(encoding="utf-8")


def test_only_a_course_error_is_reported_without_a_traceback(monkeypatch, capsys):
    """A user's mistake prints `error: ...` and exits 2; a bug in the course shows its traceback."""
    from llmcourse.course import cli
    from llmcourse.course.errors import CourseError

    def mistake(args):
        raise CourseError("no such folder: submissions/")

    def bug(args):
        raise ValueError("a bug in the course")

    monkeypatch.setattr(cli, "cmd_progress", mistake)
    assert cli.main(["progress"]) == 2
    assert "error: no such folder: submissions/" in capsys.readouterr().err
    monkeypatch.setattr(cli, "cmd_progress", bug)
    with pytest.raises(ValueError, match="a bug in the course"):
        cli.main(["progress"])
