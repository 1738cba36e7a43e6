"""Kernels alive and their memory while a whole class is graded: `llmcourse grade` on N copies of
a chapter's notebook (two thirds complete, one third with every other exercise blank).

    .venv/bin/python bench/bench_class_memory.py --chapter 04-transformer --students 60 --jobs 2

A sampler counts the grading kernels (the sandbox's Python processes under this one) every
0.1 s and sums their resident memory; the peak of each is printed with the time the class took.
The kernels are shut down as each submission finishes, so both peaks follow --jobs, not the
size of the class.
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import nbformat

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.bench_grading import completed, course  # noqa: E402
from llmcourse.course import grading  # noqa: E402
from llmcourse.course.chapters import chapter_by_assignment  # noqa: E402
from llmcourse.course.runner import KernelPeaks, Limits  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--chapter", default="04-transformer")
    parser.add_argument("--students", type=int, default=60)
    parser.add_argument("--jobs", type=int, default=2)
    args = parser.parse_args()
    chapter = chapter_by_assignment(args.chapter)
    with tempfile.TemporaryDirectory(prefix="llmcourse-bench-") as scratch:
        base = Path(scratch)
        target = course(base, chapter)
        submissions = base / "submissions"
        for number in range(args.students):
            folder = submissions / f"student{number:03d}" / chapter.assignment
            folder.mkdir(parents=True)
            nbformat.write(completed(chapter, number), str(folder / f"{chapter.notebook}.ipynb"))
        start = time.perf_counter()
        with KernelPeaks() as sampler:
            report = grading.grade_class(target, chapter, submissions, Limits(), jobs=args.jobs, feedback=False,
                                         progress=lambda *_: None)
        seconds = time.perf_counter() - start
    print(f"{args.chapter}: {len(report.results)} submissions, --jobs {args.jobs}, {report.isolation}")
    print(f"  graded in {seconds:.0f} s ({seconds / len(report.results):.1f} s per submission)")
    print(f"  kernels alive at once, at most: {sampler.most}")
    print(f"  their resident memory together, at most: {sampler.most_bytes / 2**20:.0f} MiB")
    print(f"  nbgrader steps: {', '.join(f'{s.name} ' + ('ok' if s.ok else 'FAILED') for s in report.steps)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
