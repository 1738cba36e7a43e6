"""The course's command line: `./course <command>`, the same as `python -m llmcourse <command>`.

Learners:    lab, check, progress, export, test, corpus, train-tokenizer
Instructors: generate (exercises/ and the reference package from solutions/), grade (a class)
Everyone:    book, setup, help

Paths on the command line are read from the folder you run the command in, even though the
`course` script runs every command from the course's root folder.
"""
from __future__ import annotations

import argparse
import contextlib
import hashlib
import os
import re
import subprocess
import sys
import threading
from pathlib import Path

from . import package_tests
from .chapters import CHAPTERS, chapter_by_assignment
from .errors import CourseError
from .export import ExportError, chapter_of_notebook, export_package, export_reference
from .nbgrader_tools import repo_root

DEFAULT_PACKAGE_DIR = "my-package"
"""Where `export` writes a learner's package unless --out says otherwise (git-ignored)."""
CWD_ENV = "LLMCOURSE_CWD"
"""Set by the `course` script to the folder it was run in: it runs every command from the
course root, and paths the learner typed are read from where they typed them."""
PROG_ENV = "LLMCOURSE_PROG"
"""Set by the `course` script to the name it was run by (./course, ../../course): what
messages tell the learner to type."""
KNOWN_NOISE = (
    re.compile(r"\[IPKernelApp\] WARNING \| Kernel is running over TCP without encryption"),
)
"""stderr lines that `book` drops. ipykernel logs this one for every kernel a build starts; the
kernels listen on localhost only, and a line per chapter would hide the build's real warnings."""
BOOK_SOURCES = ("llmcourse", "book/_ext")
"""The code a book page may show the results of: when it changed, `book` runs every page again."""
BOOK_STAMP = Path("_build") / ".book-package.sha256"


def program() -> str:
    return os.environ.get(PROG_ENV) or "./course"


def user_path(args, text: str | os.PathLike) -> Path:
    """A path as the learner typed it, read from the folder they ran the command in."""
    return Path(os.path.normpath(Path(args.cwd) / Path(text).expanduser()))  # an absolute path stays as it is


def shown(args, path: Path) -> str:
    """`path` as the learner would type it in the folder they ran the command in."""
    path = Path(path).resolve()
    relative = os.path.relpath(path, args.cwd.resolve())
    return relative if relative.count("..") <= 2 else str(path)


# --- learners -------------------------------------------------------------------------------------


def cmd_export(args) -> int:
    root = repo_root()
    if args.reference:
        for path in export_reference(root):
            print(f"exported {path.relative_to(root)}")
        return 0
    notebooks = [user_path(args, p) for p in args.notebooks] or [c.exercise_path(root) for c in CHAPTERS]
    out = user_path(args, args.out) if args.out else root / DEFAULT_PACKAGE_DIR
    package = export_package(notebooks, out, fallback_root=root)
    print(f"your package: {shown(args, package)} (from {len(notebooks)} notebook(s) plus the course infrastructure)")
    print(f"test it:      {program()} test --package {shown(args, out)}")
    return 0


def run_package_tests(package_parent: Path | None, test_files: list[str], extra: list[str]) -> int:
    """pytest on tests/ in a child process; `package_parent` holds the llmcourse/ under test."""
    root = repo_root()
    env = dict(os.environ)
    if package_parent is not None:
        env["LLMCOURSE_PACKAGE"] = str(Path(package_parent).resolve())
    files = [str(root / "tests" / f) for f in test_files]
    names_tests = any(not arg.startswith("-") and (root / arg.split("::")[0]).exists() for arg in extra)
    if not files and not names_tests:  # `./course test tests/test_x.py` runs that file alone
        files = [str(root / "tests")]
    command = [sys.executable, "-m", "pytest", *files, *extra]
    return subprocess.run(command, cwd=root, env=env).returncode


def pytest_paths(args, extra: list[str]) -> list[str]:
    """pytest's arguments with the test files the learner named made absolute (pytest runs in the root)."""
    resolved = []
    for arg in extra:
        file, sep, rest = arg.partition("::")
        if not arg.startswith("-") and file and user_path(args, file).exists():
            arg = str(user_path(args, file).resolve()) + sep + rest
        resolved.append(arg)
    return resolved


def cmd_test(args) -> int:
    test_files = []
    for assignment in args.chapter or []:
        test_files += chapter_by_assignment(assignment).test_files
    package = user_path(args, args.package) if args.package else None
    return run_package_tests(package, test_files, pytest_paths(args, args.extra))


def notebook_chapter(path: Path):
    """The chapter of a learner's notebook: its folder name, else its file name."""
    chapter = chapter_of_notebook(path)
    if chapter is None:
        chapter = next((c for c in CHAPTERS if path.name == f"{c.notebook}.ipynb"), None)
    return chapter


def notebooks_to_check(args, root: Path) -> list[Path]:
    """The notebooks named; with none, the chapter of the folder the learner is in, else every chapter."""
    if args.notebooks and not args.all:
        return [user_path(args, p) for p in args.notebooks]
    here = notebook_chapter(args.cwd / "any.ipynb")
    if here is not None and not args.all and (args.cwd / f"{here.notebook}.ipynb").is_file():
        return [args.cwd / f"{here.notebook}.ipynb"]
    return [c.exercise_path(root) for c in CHAPTERS]


def cmd_check(args) -> int:
    from . import check_report
    from .grading import grade_notebook, limits_from_args, sources
    from .places import exercise_titles
    root = repo_root()
    paths = notebooks_to_check(args, root)
    limits = limits_from_args(args)
    failed = False
    for path in paths:
        chapter = notebook_chapter(path)
        if chapter is None:
            known = ", ".join(f"{c.assignment}/{c.notebook}.ipynb" for c in CHAPTERS)
            print(f"{shown(args, path)}: not a chapter notebook; the chapters are {known}")
            return 2
        if not path.is_file():
            print(f"{shown(args, path)}: no such notebook")
            return 2
        hidden = chapter.solution_path(root).is_file()
        result = grade_notebook(root, chapter, path, limits)
        titles = exercise_titles(result.executed if result.executed is not None else sources(root, chapter)[0])
        exercises = check_report.group_exercises(result.exercises, titles)
        failed |= not all(e.passed for e in exercises)
        label = "hidden tests included" if hidden else "visible tests only: solutions/ is not in this copy"
        print(f"\n{shown(args, path)}  (chapter {chapter.number}: {chapter.title}; {label}; "
              f"ran {result.isolation or 'unisolated'})")
        check_report.print_exercises(exercises)
        for finding in result.findings:
            print(f"  note: {finding.message}")
        report = None
        if not args.no_package:
            report = check_package(root, chapter, path, exercises)
            failed |= bool(report.problem) or any(t.outcome == "FAIL" for t in report.results)
        check_report.save_check(root, chapter, path, exercises, report)
        print(f"\n  summary: {check_report.summary_line(exercises, report)}")
    return 1 if failed else 0


def check_package(root: Path, chapter, path: Path, exercises):
    """The package phase of `check`: export the chapter, run its tests live, then the failures by exercise."""
    from . import check_report
    modules = ", ".join(chapter.module_names)
    print(f"\n  package tests of your {modules} ({', '.join(chapter.test_files)}, in a separate process; "
          f"at most {package_tests.PACKAGE_TEST_TIMEOUT:g} s):", flush=True)
    report = package_tests.run_package_tests(
        root, chapter, path,
        progress=lambda name, outcome, again: print(check_report.live_line(chapter, name, outcome, again), flush=True))
    if report.problem:
        print(f"  FAIL: {report.problem}")
    failures = [t for t in report.results if t.outcome == "FAIL"]
    check_report.print_package_failures(chapter, exercises, failures)
    return report


def cmd_progress(args) -> int:
    from .check_report import print_progress
    print_progress(repo_root(), lambda path: shown(args, path), program())
    return 0


def lab_command(args, root: Path) -> tuple[list[str], Path, dict[str, str]]:
    """JupyterLab of this environment in exercises/: (command, folder, environment variables set)."""
    bin_dir = str(Path(sys.executable).parent)
    kernels = str(Path(sys.prefix) / "share" / "jupyter")  # this environment's "Python 3" kernel first
    path = os.environ.get("PATH", "")
    changed = {
        "PATH": path if path.split(os.pathsep)[0] == bin_dir else os.pathsep.join([bin_dir, path]),
        "JUPYTER_PATH": os.pathsep.join(p for p in [kernels, os.environ.get("JUPYTER_PATH", "")] if p),
    }
    return [sys.executable, "-m", "jupyterlab", *args.extra], root / "exercises", changed


def cmd_lab(args) -> int:
    command, folder, changed = lab_command(args, repo_root())
    if args.dry_run:
        print(f"in {folder}:")
        for name, value in changed.items():
            print(f"  {name}={value}")
        print("  " + " ".join(command))
        return 0
    print(f"JupyterLab in {shown(args, folder)} with the course's Python ({sys.prefix}); Ctrl-C stops it")
    return subprocess.run(command, cwd=folder, env=dict(os.environ, **changed)).returncode


@contextlib.contextmanager
def users_input(what: str):
    """A call on what the user gave (a file, a size): its ValueError or OSError is theirs to fix,
    reported as a CourseError without a traceback."""
    try:
        yield
    except (OSError, ValueError) as error:
        raise CourseError(f"{what}: {error}") from error


def cmd_corpus(args) -> int:
    from .corpus import generate_corpus
    with users_input("corpus"):
        text = generate_corpus(args.chars, seed=args.seed)
        user_path(args, args.out).write_text(text, encoding="utf-8")
    print(f"wrote {len(text):,} characters to {args.out}")
    return 0


def cmd_train_tokenizer(args) -> int:
    """Train the package's byte-level BPE on a user's file (or the generated corpus)."""
    import importlib

    from .corpus import generate_corpus, load_text
    if args.package:
        sys.path.insert(0, str(user_path(args, args.package).resolve()))
    tokenizer = importlib.import_module("llmcourse.tokenizer")
    with users_input("train-tokenizer"):
        text = load_text(user_path(args, args.text)) if args.text else generate_corpus(args.chars, seed=args.seed)
        trained = tokenizer.BPETokenizer.train(text, args.vocab_size, special_tokens=args.special)
        trained.save(user_path(args, args.out))
    print(f"trained on {len(text):,} characters: {trained.vocab_size} tokens, saved to {args.out}")
    if args.hf_json:
        trained.to_hf_json(user_path(args, args.hf_json))
        print(f"tokenizers-library JSON: {args.hf_json} (tokenizers.Tokenizer.from_file)")
    sample = text[:200]
    ids = trained.encode(sample)
    print(f"the first {len(sample)} characters -> {len(ids)} tokens")
    return 0


# --- instructors ----------------------------------------------------------------------------------


def cmd_generate(args) -> int:
    from .nbgrader_tools import generate_exercises
    root = repo_root()
    chapters = [chapter_by_assignment(a) for a in args.chapters] if args.chapters else CHAPTERS
    for path in export_reference(root, chapters):
        print(f"exported  {path.relative_to(root)}")
    for path in generate_exercises(root, chapters=chapters):
        print(f"generated {path.relative_to(root)}")
    return 0


def cmd_grade(args) -> int:
    from .grading import grade_class, limits_from_args, print_report
    root = repo_root()
    chapter = chapter_by_assignment(args.assignment)
    submissions = user_path(args, args.submissions)
    print(f"grading {chapter.assignment} from {args.submissions} with {args.jobs} worker(s)")
    report = grade_class(root, chapter, submissions, limits_from_args(args), jobs=args.jobs,
                         feedback=not args.no_feedback)
    print_report(report)
    if report.failed_steps:
        print(f"\n{len(report.failed_steps)} nbgrader step(s) failed: the gradebook, feedback or grades.csv may be "
              "incomplete; see the logs above")
        return 1
    return 0


# --- everyone -------------------------------------------------------------------------------------


def book_sources_digest(root: Path) -> str:
    """A digest of every file in BOOK_SOURCES (names and contents)."""
    digest = hashlib.sha256()
    for folder in BOOK_SOURCES:
        for path in sorted((root / folder).rglob("*.py")):
            digest.update(path.relative_to(root).as_posix().encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()[:16]


def without_known_noise(stream, sink) -> None:
    """Copy `stream` to `sink` line by line, leaving out KNOWN_NOISE."""
    for line in iter(stream.readline, b""):
        text = line.decode("utf-8", errors="replace")
        if not any(pattern.search(text) for pattern in KNOWN_NOISE):
            sink.write(text)
            sink.flush()


def cmd_book(args) -> int:
    """Build the book into _build/html. A page runs again only when its code cells changed (the
    execution cache keys on them); when the package or the book's extension changed, any page may
    show something else, so the cache is emptied and every page read again."""
    import shutil
    root = repo_root()
    stamp = root / BOOK_STAMP
    sources = book_sources_digest(root)
    fresh = []
    if not stamp.is_file() or stamp.read_text().strip() != sources:
        shutil.rmtree(root / "_build" / ".jupyter_cache", ignore_errors=True)
        fresh = ["--all"]
    command = [str(Path(sys.executable).parent / "jupyter-book"), "build", str(root), "--warningiserror", "--nitpick",
               "--keep-going", *fresh, *args.extra]
    process = subprocess.Popen(command, cwd=root, stderr=subprocess.PIPE)
    copier = threading.Thread(target=without_known_noise, args=(process.stderr, sys.stderr))
    copier.start()
    code = process.wait()
    copier.join()
    if code == 0:
        stamp.parent.mkdir(parents=True, exist_ok=True)
        stamp.write_text(sources + "\n")
        print(f"the book: {shown(args, root / '_build' / 'html' / 'index.html')}")
    return code


def cmd_setup(args) -> int:
    """The `course` script installs the environment before any command; this says it is there."""
    import torch
    print(f"ready: {sys.prefix} (Python {sys.version.split()[0]}, torch {torch.__version__})")
    return 0


def cmd_help(args) -> int:
    parser = build_parser()
    if not args.topic:
        parser.print_help()
        return 0
    try:
        parser.parse_args([args.topic, "--help"])
    except SystemExit as done:
        return int(done.code or 0)
    return 0


# --- the parser ------------------------------------------------------------------------------------


def add_limit_options(parser: argparse.ArgumentParser) -> None:
    """The limits a notebook runs under (grading.limits_from_args reads them)."""
    parser.add_argument("--timeout", type=float, help="seconds per cell (default 120)")
    parser.add_argument("--total-timeout", type=float,
                        help="seconds for a whole notebook; the cells after it score zero (default 1800)")
    parser.add_argument("--memory-gb", type=float, help="memory limit of each kernel in GiB (default 8)")
    parser.add_argument("--unisolated", action="store_true",
                        help="run kernels without the bubblewrap sandbox (grade refuses to otherwise when bwrap is "
                             "missing; the report says so); the same as LLMCOURSE_UNISOLATED=1")


def add_learner_commands(sub) -> None:
    p = sub.add_parser("lab", help="open the exercises in JupyterLab",
                       epilog="Other arguments go to jupyter lab, e.g. --no-browser or --port 8890.")
    p.add_argument("--dry-run", action="store_true", help="print the command and its folder instead of running it")
    p.set_defaults(run=cmd_lab, pass_through=True)  # other arguments go to jupyter lab

    p = sub.add_parser("check", help="grade your notebook in a fresh kernel, then test its package",
                       epilog="With no notebook: the chapter of the folder you are in, else every chapter.")
    p.add_argument("notebooks", nargs="*",
                   help="e.g. exercises/01-tokenizers/tokenizers.ipynb")
    p.add_argument("--all", action="store_true", help="every chapter's notebook in exercises/")
    add_limit_options(p)
    p.add_argument("--no-package", action="store_true", help="skip exporting and testing your package")
    p.set_defaults(run=cmd_check)

    p = sub.add_parser("progress", help="your points per chapter and exercise, from your last checks")
    p.set_defaults(run=cmd_progress)

    p = sub.add_parser("export", help="build your own package from your notebooks")
    p.add_argument("notebooks", nargs="*", help="your notebooks (default: every exercises/*/*.ipynb)")
    p.add_argument("--out", help=f"folder for the package (default: {DEFAULT_PACKAGE_DIR} in the course folder)")
    p.add_argument("--reference", action="store_true", help="maintainers: export solutions/ into llmcourse/")
    p.set_defaults(run=cmd_export)

    p = sub.add_parser("test", help="run the test suite (on your package: --package)",
                       epilog="Other arguments go to pytest, e.g. -k round_trip or tests/test_tokenizer.py.")
    p.add_argument("--package", help="folder that holds your exported llmcourse/ (from `export`)")
    p.add_argument("--chapter", action="append", help="only this chapter's tests, e.g. 01-tokenizers (repeatable)")
    p.set_defaults(run=cmd_test, pass_through=True)

    p = sub.add_parser("corpus", help="write the course's English/Chinese corpus to a file")
    p.add_argument("--chars", type=int, default=1_000_000)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", required=True)
    p.set_defaults(run=cmd_corpus)

    p = sub.add_parser("train-tokenizer", help="train byte-level BPE on your text (or the course's corpus)")
    p.add_argument("--text", help="a UTF-8 text file (default: the generated corpus)")
    p.add_argument("--chars", type=int, default=1_000_000, help="size of the generated corpus when no --text")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--vocab-size", type=int, default=8000)
    p.add_argument("--special", action="append", default=[], help="a special token, e.g. '<|endoftext|>' (repeatable)")
    p.add_argument("--out", required=True, help="where to save the tokenizer (JSON)")
    p.add_argument("--hf-json", help="also write the tokenizers-library format here")
    p.add_argument("--package",
                   help="use your exported package (the folder holding llmcourse/) instead of the reference")
    p.set_defaults(run=cmd_train_tokenizer)


def add_instructor_commands(sub) -> None:
    p = sub.add_parser("generate", help="instructors: solutions/ -> exercises/ and llmcourse/")
    p.add_argument("chapters", nargs="*", help="assignment ids (default: all), e.g. 01-tokenizers")
    p.set_defaults(run=cmd_generate)

    p = sub.add_parser("grade", help="instructors: grade a class (folders or LMS zip files)")
    p.add_argument("assignment", help="e.g. 01-tokenizers")
    p.add_argument("submissions", help="folder of <student>/<assignment>/<notebook>.ipynb, <student>/*.ipynb or zips")
    p.add_argument("--jobs", type=int, default=os.cpu_count() or 1, help="submissions run at once (default: cores)")
    add_limit_options(p)
    p.add_argument("--no-feedback", action="store_true", help="skip nbgrader generate_feedback")
    p.set_defaults(run=cmd_grade)


def add_common_commands(sub) -> None:
    p = sub.add_parser("book", help="build the book into _build/html",
                       epilog="Other arguments go to jupyter-book build.")
    p.set_defaults(run=cmd_book, pass_through=True)

    p = sub.add_parser("setup", help="install everything into .venv/ (the first command does it)")
    p.set_defaults(run=cmd_setup)

    p = sub.add_parser("help", help="this list, or one command's options: help check")
    p.add_argument("topic", nargs="?", help="a command")
    p.set_defaults(run=cmd_help)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=program(), description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True, metavar="<command>")
    add_learner_commands(sub)
    add_instructor_commands(sub)
    add_common_commands(sub)
    return parser


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    cwd = Path(os.environ.pop(CWD_ENV, "") or os.getcwd())  # popped: programs started from here run elsewhere
    parser = build_parser()
    args, rest = parser.parse_known_args(argv or ["help"])
    if rest and not getattr(args, "pass_through", False):
        parser.error(f"unrecognized arguments: {' '.join(rest)}")
    args.extra = rest
    args.cwd = cwd
    try:
        return args.run(args)
    except CourseError as error:  # a mistake in how the command was used; anything else is a bug: traceback
        message = str(error)
        if isinstance(error, ExportError):
            from .places import describe_export_error
            message = describe_export_error(error)
        print(f"error: {message}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
