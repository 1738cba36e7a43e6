"""The rendered book builds offline, warnings as errors, with executed chapters."""
from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from llmcourse.course.chapters import CHAPTERS

pytestmark = [pytest.mark.course_infra, pytest.mark.slow]


def test_book_builds_with_figures_and_exercises(root, tmp_path):
    jupyter_book = Path(sys.executable).parent / "jupyter-book"
    env = dict(os.environ, PATH=str(Path(sys.executable).parent) + os.pathsep + os.environ.get("PATH", ""))
    result = subprocess.run([str(jupyter_book), "build", str(root), "--path-output", str(tmp_path),
                             "--warningiserror", "--nitpick", "--keep-going"],
                            cwd=root, env=env, capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, (result.stdout + result.stderr)[-5000:]
    html = tmp_path / "_build" / "html"
    assert (html / "index.html").exists()
    for chapter in CHAPTERS:
        page = html / "book" / f"{chapter.assignment}.html"
        assert page.exists(), f"{page.name} is missing: every chapter has a prose page book/{chapter.assignment}.md"
        text = page.read_text(encoding="utf-8")
        figures = re.findall(r'<img[^>]+src="([^"]+\.png)"', text)
        assert len(figures) >= 2, f"chapter {chapter.number} should show at least two executed figures"
        assert all((page.parent / src).resolve().exists() for src in figures)
        assert f"exercises/{chapter.assignment}/{chapter.notebook}.html" in text, "the chapter points to its exercises"
        exercise = (html / "exercises" / chapter.assignment / f"{chapter.notebook}.html").read_text(encoding="utf-8")
        assert "YOUR CODE HERE" in exercise and "Exercise 1" in exercise
