"""The course's command line: `python -m llmcourse <command>` (or `./course <command>`).

Learners:    check, export, test, corpus
Instructors: generate (exercises/ and the reference package from solutions/), grade (a class)
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path

from . import package_tests
from .chapters import CHAPTERS, chapter_by_assignment
from .export import ExportError, chapter_of_notebook, export_package, export_reference
from .nbgrader_tools import repo_root

DEFAULT_PACKAGE_DIR = "my-package"
"""Where `export` writes a learner's package unless --out says otherwise (git-ignored)."""


def cmd_generate(args) -> int:
    from .nbgrader_tools import generate_exercises
    root = repo_root()
    chapters = [chapter_by_assignment(a) for a in args.chapters] if args.chapters else CHAPTERS
    for path in export_reference(root, chapters):
        print(f"exported  {path.relative_to(root)}")
    for path in generate_exercises(root, chapters=chapters):
        print(f"generated {path.relative_to(root)}")
    return 0


def cmd_export(args) -> int:
    root = repo_root()
    if args.reference:
        for path in export_reference(root):
            print(f"exported {path.relative_to(root)}")
        return 0
    notebooks = [Path(p) for p in args.notebooks] or [c.exercise_path(root) for c in CHAPTERS]
    package = export_package(notebooks, Path(args.out), fallback_root=root)
    print(f"your package: {package} (from {len(notebooks)} notebook(s) plus the course infrastructure)")
    print(f"test it:      ./course test --package {Path(args.out)}")
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


def cmd_test(args) -> int:
    test_files = []
    for assignment in args.chapter or []:
        test_files += chapter_by_assignment(assignment).test_files
    return run_package_tests(args.package, test_files, args.pytest_args)


def notebook_chapter(path: Path):
    """The chapter of a learner's notebook: its folder name, else its file name."""
    chapter = chapter_of_notebook(path)
    if chapter is None:
        chapter = next((c for c in CHAPTERS if path.name == f"{c.notebook}.ipynb"), None)
    return chapter


def cmd_check(args) -> int:
    from .grading import grade_notebook, limits_from_args
    root = repo_root()
    paths = [Path(p) for p in args.notebooks]
    if args.all or not paths:
        paths = [c.exercise_path(root) for c in CHAPTERS]
    limits = limits_from_args(args)
    failed = False
    for path in paths:
        chapter = notebook_chapter(path)
        if chapter is None:
            known = ", ".join(f"{c.assignment}/{c.notebook}.ipynb" for c in CHAPTERS)
            print(f"{path}: not a chapter notebook; the chapters are {known}")
            return 2
        if not path.is_file():
            print(f"{path}: no such notebook")
            return 2
        hidden = chapter.solution_path(root).is_file()
        result = grade_notebook(root, chapter, path, limits)
        label = "hidden tests included" if hidden else "visible tests only: solutions/ is not in this copy"
        print(f"\n{path}  (chapter {chapter.number}: {chapter.title}; {label})")
        print(f"  {'exercise':<14} {'points':>9}  result")
        for exercise in result.exercises:
            failed |= not exercise.passed
            print(f"  {exercise.grade_id:<14} {exercise.score:>4g} / {exercise.max_score:<3g} "
                  f"{'pass' if exercise.passed else 'FAIL'}")
            for line in exercise.message.splitlines():
                print(f"  {'':<14}   | {line[:150]}")
        print(f"  {'total':<14} {result.score:>4g} / {result.max_score:<3g}")
        for finding in result.findings:
            print(f"  note: {finding.message}")
        passed = sum(e.passed for e in result.exercises)
        summary = (f"{result.score:g} / {result.max_score:g} points, "
                   f"{passed} of {len(result.exercises)} exercises passed")
        if args.no_package:
            print(f"  summary: {summary}")
            continue
        modules = ", ".join(f"llmcourse.{m}" for m in chapter.modules)
        print(f"\n  package tests of your {modules} ({', '.join(chapter.test_files)}, in a separate process; "
              f"at most {package_tests.PACKAGE_TEST_TIMEOUT:g} s):", flush=True)
        report = package_tests.run_package_tests(root, chapter, path, progress=lambda line: print(line, flush=True))
        failures = [t for t in report.results if t.outcome == "FAIL"]
        if report.problem:
            failed = True
            print(f"  FAIL: {report.problem}")
        for test in failures:
            failed = True
            if test.message:
                print(f"  FAIL  {test.name}\n        | {test.message}")
        n_pass = sum(t.outcome == "pass" for t in report.results)
        print(f"  summary: {summary}; {n_pass} of {len(report.results)} package tests passed "
              f"({report.seconds:.0f} s)")
    return 1 if failed else 0


def cmd_grade(args) -> int:
    from .grading import grade_class, limits_from_args, print_report
    root = repo_root()
    chapter = chapter_by_assignment(args.assignment)
    print(f"grading {chapter.assignment} from {args.submissions} with {args.jobs} worker(s)")
    report = grade_class(root, chapter, Path(args.submissions), limits_from_args(args), jobs=args.jobs,
                         feedback=not args.no_feedback)
    print_report(report)
    return 0


def cmd_corpus(args) -> int:
    from .corpus import generate_corpus
    text = generate_corpus(args.chars, seed=args.seed)
    Path(args.out).write_text(text, encoding="utf-8")
    print(f"wrote {len(text):,} characters to {args.out}")
    return 0


def cmd_train_tokenizer(args) -> int:
    """Train the package's byte-level BPE on a user's file (or the generated corpus)."""
    import importlib

    from .corpus import generate_corpus, load_text
    if args.package:
        sys.path.insert(0, str(Path(args.package).resolve()))
    tokenizer = importlib.import_module("llmcourse.tokenizer")
    text = load_text(args.text) if args.text else generate_corpus(args.chars, seed=args.seed)
    trained = tokenizer.BPETokenizer.train(text, args.vocab_size, special_tokens=args.special)
    trained.save(args.out)
    print(f"trained on {len(text):,} characters: {trained.vocab_size} tokens, saved to {args.out}")
    if args.hf_json:
        trained.to_hf_json(args.hf_json)
        print(f"tokenizers-library JSON: {args.hf_json} (tokenizers.Tokenizer.from_file)")
    sample = text[:200]
    ids = trained.encode(sample)
    print(f"the first {len(sample)} characters -> {len(ids)} tokens")
    return 0


def add_limit_options(parser: argparse.ArgumentParser) -> None:
    """The limits a notebook runs under (grading.limits_from_args reads them)."""
    parser.add_argument("--timeout", type=float, help="seconds per cell (default 120)")
    parser.add_argument("--memory-gb", type=float, help="memory limit of each kernel in GiB (default 8)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="llmcourse", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("generate", help="instructors: solutions/ -> exercises/ and the reference llmcourse/ modules")
    p.add_argument("chapters", nargs="*", help="assignment ids (default: all), e.g. 01-tokenizers")
    p.set_defaults(run=cmd_generate)

    p = sub.add_parser("export", help="build your own package from your notebooks")
    p.add_argument("notebooks", nargs="*", help="your notebooks (default: every exercises/*/*.ipynb)")
    p.add_argument("--out", default=DEFAULT_PACKAGE_DIR,
                   help=f"folder for the package (default: {DEFAULT_PACKAGE_DIR})")
    p.add_argument("--reference", action="store_true", help="maintainers: export solutions/ into llmcourse/")
    p.set_defaults(run=cmd_export)

    p = sub.add_parser("test", help="run the package tests (reference package, or yours with --package)")
    p.add_argument("--package", help="folder that holds your exported llmcourse/ (from `export`)")
    p.add_argument("--chapter", action="append", help="only this chapter's tests, e.g. 01-tokenizers (repeatable)")
    p.set_defaults(run=cmd_test, pass_through=True)  # other arguments go to pytest

    p = sub.add_parser("check", help="learners: grade your notebook(s) in a fresh kernel, then test your package")
    p.add_argument("notebooks", nargs="*", help="e.g. exercises/01-tokenizers/tokenizers.ipynb (default: all chapters)")
    p.add_argument("--all", action="store_true", help="every chapter's notebook in exercises/")
    add_limit_options(p)
    p.add_argument("--no-package", action="store_true", help="skip exporting and testing your package")
    p.set_defaults(run=cmd_check)

    p = sub.add_parser("grade", help="instructors: grade a folder of submissions (or LMS zip files) for one chapter")
    p.add_argument("assignment", help="e.g. 01-tokenizers")
    p.add_argument("submissions", help="folder of <student>/<assignment>/<notebook>.ipynb, <student>/*.ipynb or zips")
    p.add_argument("--jobs", type=int, default=os.cpu_count() or 1, help="submissions run at once (default: cores)")
    add_limit_options(p)
    p.add_argument("--no-feedback", action="store_true", help="skip nbgrader generate_feedback")
    p.set_defaults(run=cmd_grade)

    p = sub.add_parser("train-tokenizer", help="train byte-level BPE on your text file (or the generated corpus)")
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

    p = sub.add_parser("corpus", help="write the course's generated English/Chinese corpus to a file")
    p.add_argument("--chars", type=int, default=1_000_000)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", required=True)
    p.set_defaults(run=cmd_corpus)
    return parser


def main(argv=None) -> int:
    parser = build_parser()
    args, rest = parser.parse_known_args(argv)
    if rest and not getattr(args, "pass_through", False):
        parser.error(f"unrecognized arguments: {' '.join(rest)}")
    args.pytest_args = rest
    try:
        return args.run(args)
    except (ExportError, FileNotFoundError, KeyError, ValueError, RuntimeError) as error:
        message = error.args[0] if isinstance(error, KeyError) else str(error)
        print(f"error: {message}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
