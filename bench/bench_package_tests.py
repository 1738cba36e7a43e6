"""How long `./course check`'s package phase takes: each chapter's package tests against a package
exported from a notebook, the way `check` runs them (one pytest process, `-m "not slow"`).

    .venv/bin/python bench/bench_package_tests.py

Besides the reference solutions it times the slowest solution each notebook accepts: chapter 1's
`learn_merges` written as a recount after every merge (the notebook says this is fine; it is
what `learn_merges_simple` does). The target is about 30 s per chapter on 2 cores for any
accepted solution; the largest parity sizes run on the reference package only (the
`reference_only` marker).
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import nbformat

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from llmcourse.course.chapters import CHAPTERS, chapter_by_assignment  # noqa: E402
from llmcourse.course.package_tests import build_package  # noqa: E402

TARGET_S = 30.0

SLOW_BUT_ACCEPTED = {
    # chapter: (solution cell, what it becomes, in words)
    "01-tokenizers": ("ex3-learn-merges", "    return learn_merges_simple(word_counts, vocab, vocab_size)\n",
                      "learn_merges recounting every pair after every merge"),
}


def with_solution(chapter, cell_id: str, body: str) -> nbformat.NotebookNode:
    """The reference notebook with the solution region of one cell replaced by `body`."""
    notebook = nbformat.read(str(chapter.solution_path(ROOT)), as_version=4)
    cell = next(c for c in notebook.cells if c.get("id") == cell_id)
    start = cell.source.index("### BEGIN SOLUTION")
    start = cell.source.index("\n", start) + 1
    end = cell.source.rindex("    ### END SOLUTION")
    cell.source = cell.source[:start] + body + cell.source[end:]
    return notebook


def time_tests(chapter, notebook_path: Path, scratch: Path) -> tuple[float, str]:
    package = scratch / "package"
    build_package(ROOT, chapter, notebook_path, package)
    command = [sys.executable, "-m", "pytest", *[str(ROOT / "tests" / f) for f in chapter.test_files], "-q",
               "-p", "no:cacheprovider", "-m", "not slow"]
    start = time.perf_counter()
    run = subprocess.run(command, cwd=ROOT, env=dict(os.environ, LLMCOURSE_PACKAGE=str(package)),
                         capture_output=True, text=True)
    seconds = time.perf_counter() - start
    last = run.stdout.strip().splitlines()[-1] if run.stdout.strip() else run.stderr.strip()[-200:]
    return seconds, last


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--chapter", action="append", help="an assignment id (default: every chapter)")
    args = parser.parse_args()
    chapters = [chapter_by_assignment(a) for a in args.chapter] if args.chapter else list(CHAPTERS)
    print(f"{'chapter':<16} {'solution':<52} {'seconds':>8}  pytest")
    slowest = 0.0
    for chapter in chapters:
        variants = [("reference", None)]
        if chapter.assignment in SLOW_BUT_ACCEPTED:
            cell_id, body, words = SLOW_BUT_ACCEPTED[chapter.assignment]
            variants.append((words, with_solution(chapter, cell_id, body)))
        for words, notebook in variants:
            with tempfile.TemporaryDirectory(prefix="llmcourse-bench-") as scratch:
                path = chapter.solution_path(ROOT)
                if notebook is not None:
                    path = Path(scratch) / f"{chapter.notebook}.ipynb"
                    nbformat.write(notebook, str(path))
                seconds, last = time_tests(chapter, path, Path(scratch))
            slowest = max(slowest, seconds)
            print(f"{chapter.assignment:<16} {words:<52} {seconds:>8.1f}  {last}", flush=True)
    print(f"\nslowest: {slowest:.1f} s (target: about {TARGET_S:g} s on 2 cores)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
