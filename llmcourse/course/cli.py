"""The course's command line: `python -m llmcourse <command>` (or `./course <command>`).

Learners:    check, export, test, corpus
Instructors: generate (exercises/ and the reference package from solutions/)
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path

from .chapters import CHAPTERS, chapter_by_assignment
from .export import ExportError, chapter_of_notebook, export_package, export_reference
from .nbgrader_tools import repo_root

DEFAULT_PACKAGE_DIR = "my-package"
"""Where `export` writes a learner's package unless --out says otherwise (git-ignored)."""


def cmd_generate(args) -> int:
    from .nbgrader_tools import generate_exercises
    root = repo_root()
    chapters = [chapter_by_assignment(a) for a in args.chapters] if args.chapters else CHAPTERS
    for path in export_reference(root):
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
    files = [str(root / "tests" / f) for f in test_files] or [str(root / "tests")]
    command = [sys.executable, "-m", "pytest", *files, *extra]
    return subprocess.run(command, cwd=root, env=env).returncode


def cmd_test(args) -> int:
    test_files = []
    for assignment in args.chapter or []:
        test_files += chapter_by_assignment(assignment).test_files
    return run_package_tests(args.package, test_files, args.pytest_args)


def cmd_check(args) -> int:
    from .nbgrader_tools import autograde
    root = repo_root()
    failures = 0
    for name in args.notebooks:
        path = Path(name)
        chapter = chapter_of_notebook(path)
        if chapter is None:
            known = ", ".join(c.assignment for c in CHAPTERS)
            print(f"{path}: not in a chapter folder ({known}); keep the notebook in its chapter folder")
            return 2
        if not path.is_file():
            print(f"{path}: no such notebook")
            return 2
        scores = autograde(root, chapter, {"me": path})["me"]
        print(f"\n{path}  (chapter {chapter.number}: {chapter.title}; hidden tests included)")
        print(f"  {'exercise':<22} {'points':>9}  result")
        total = possible = 0.0
        for cell in scores:
            ok = cell.score >= cell.max_score
            failures += not ok
            total, possible = total + cell.score, possible + cell.max_score
            print(f"  {cell.grade_id:<22} {cell.score:>4g} / {cell.max_score:<3g} {'pass' if ok else 'FAIL'}")
        print(f"  {'total':<22} {total:>4g} / {possible:<3g}")
    return 1 if failures else 0


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


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="llmcourse", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("generate", help="instructors: solutions/ -> exercises/ and the reference llmcourse/ modules")
    p.add_argument("chapters", nargs="*", help="assignment ids (default: all), e.g. 01-tokenizers")
    p.set_defaults(run=cmd_generate)

    p = sub.add_parser("export", help="build your own package from your notebooks")
    p.add_argument("notebooks", nargs="*", help="your notebooks (default: every exercises/*/*.ipynb)")
    p.add_argument("--out", default=DEFAULT_PACKAGE_DIR, help=f"folder for the package (default: {DEFAULT_PACKAGE_DIR})")
    p.add_argument("--reference", action="store_true", help="maintainers: export solutions/ into llmcourse/")
    p.set_defaults(run=cmd_export)

    p = sub.add_parser("test", help="run the package tests (reference package, or yours with --package)")
    p.add_argument("--package", help="folder that holds your exported llmcourse/ (from `export`)")
    p.add_argument("--chapter", action="append", help="only this chapter's tests, e.g. 01-tokenizers (repeatable)")
    p.set_defaults(run=cmd_test, pass_through=True)  # other arguments go to pytest

    p = sub.add_parser("check", help="learners: grade your notebook in a fresh kernel and print the score")
    p.add_argument("notebooks", nargs="+", help="e.g. exercises/01-tokenizers/tokenizers.ipynb")
    p.set_defaults(run=cmd_check)

    p = sub.add_parser("train-tokenizer", help="train byte-level BPE on your text file (or the generated corpus)")
    p.add_argument("--text", help="a UTF-8 text file (default: the generated corpus)")
    p.add_argument("--chars", type=int, default=1_000_000, help="size of the generated corpus when no --text")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--vocab-size", type=int, default=8000)
    p.add_argument("--special", action="append", default=[], help="a special token, e.g. '<|endoftext|>' (repeatable)")
    p.add_argument("--out", required=True, help="where to save the tokenizer (JSON)")
    p.add_argument("--hf-json", help="also write the tokenizers-library format here")
    p.add_argument("--package", help="use your exported package (the folder holding llmcourse/) instead of the reference")
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
    except (ExportError, FileNotFoundError, KeyError, ValueError) as error:
        message = error.args[0] if isinstance(error, KeyError) else str(error)
        print(f"error: {message}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
