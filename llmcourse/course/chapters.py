"""The chapters of the course: which notebook each one is and which modules it exports.

This table is the one place that names them; the exporter, the command line and the tests
all read it.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Chapter:
    """One nbgrader assignment: `solutions/<assignment>/<notebook>.ipynb`."""

    number: int
    assignment: str  # nbgrader assignment id, also the folder name
    notebook: str  # notebook file name without .ipynb
    title: str
    modules: tuple[str, ...]  # package modules its `#| export` cells may write
    test_files: tuple[str, ...]  # tests/ files that check those modules
    given_modules: tuple[str, ...] = ()  # of `modules`, those written only by given (ungraded) cells

    @property
    def graded_modules(self) -> tuple[str, ...]:
        """The modules learners write: grading keeps the reference versions of these out of reach."""
        return tuple(m for m in self.modules if m not in self.given_modules)

    def solution_path(self, root: Path) -> Path:
        return Path(root) / "solutions" / self.assignment / f"{self.notebook}.ipynb"

    def exercise_path(self, root: Path) -> Path:
        return Path(root) / "exercises" / self.assignment / f"{self.notebook}.ipynb"


CHAPTERS: tuple[Chapter, ...] = (
    Chapter(1, "01-tokenizers", "tokenizers", "Tokenizers", ("tokenizer",), ("test_tokenizer.py",)),
    Chapter(2, "02-embeddings", "embeddings", "Embeddings", ("embeddings",), ("test_embeddings.py",)),
    Chapter(3, "03-attention", "attention", "Attention", ("config", "attention"), ("test_attention.py",),
            given_modules=("config",)),
    Chapter(4, "04-transformer", "transformer", "The Transformer block and RoPE", ("transformer",),
            ("test_transformer.py",)),
)


def chapter_by_assignment(assignment: str) -> Chapter:
    for chapter in CHAPTERS:
        if chapter.assignment == assignment:
            return chapter
    known = ", ".join(c.assignment for c in CHAPTERS)
    raise KeyError(f"no chapter {assignment!r}; the chapters are: {known}")


def module_owner(module: str) -> Chapter | None:
    """The chapter allowed to export `module`, or None if no chapter declares it."""
    for chapter in CHAPTERS:
        if module in chapter.modules:
            return chapter
    return None
