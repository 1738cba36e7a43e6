"""Where a cell is, in the words a learner sees: its number and the heading it sits under.

Every message of the course tools names a cell the same way: its 1-based position in the
notebook, markdown cells included, which is the number a learner finds by counting cells from
the top in Jupyter ("cell 6"), followed by the exercise or section it belongs to, as the
notebook's own headings title them:

    ## 2. Byte-pair encoding                        a section
    ### Exercise 2 — count pairs and merge (2 points)   an exercise

so a message reads "cell 9 (Exercise 2 — count pairs and merge)".
"""
from __future__ import annotations

import re

import nbformat

from .submission import is_grade_cell, nbgrader_meta

HEADING = re.compile(r"^#{1,6}\s+(?P<title>.+?)\s*#*\s*$")
POINTS_SUFFIX = re.compile(r"\s*\(\s*\d+(\.\d+)?\s+points?\b[^()]*\)?\s*$")
"""The "(2 points)" or "(2 points: 1 for …)" that ends an exercise heading: `check` shows the points."""
EXERCISE_NUMBER = re.compile(r"^Exercise\s+(?P<number>\d+)\b")


def cell_source(cell) -> str:
    source = cell.get("source", "")
    return "".join(source) if isinstance(source, list) else str(source)


def headings(cell) -> list[str]:
    """The titles of a markdown cell's headings, in order, without '#' and without "(N points)"."""
    if cell.get("cell_type") != "markdown":
        return []
    titles, fenced = [], False
    for line in cell_source(cell).splitlines():
        if line.lstrip().startswith(("```", "~~~")):
            fenced = not fenced  # a '#' comment in a code block is not a heading
        match = None if fenced else HEADING.match(line)
        if match:
            titles.append(POINTS_SUFFIX.sub("", match["title"]))
    return titles


def section_of_each_cell(notebook) -> list[str | None]:
    """For each cell, the title of the last heading at or above it (None above the first one)."""
    current, titles = None, []
    for cell in notebook.cells:
        found = headings(cell)
        if found:
            current = found[-1]
        titles.append(current)
    return titles


def exercise_number(title: str) -> int | None:
    """4 for "Exercise 4 — encode a chunk"; None for a title that numbers no exercise."""
    match = EXERCISE_NUMBER.match(title)
    return int(match["number"]) if match else None


def exercise_titles(notebook) -> dict[str, str]:
    """{grade id: title} for each grade cell, e.g. {"ex2-tests": "Exercise 2 — count pairs and merge"}.

    The title is the "Exercise N …" heading the grade cell sits under; the grade cells of one
    exercise (one per part it scores) share it. A grade cell under another heading gets that
    heading ("2. Byte-pair encoding"), one under none its grade id.
    """
    titles: dict[str, str] = {}
    sections = section_of_each_cell(notebook)
    for cell, section in zip(notebook.cells, sections):
        grade_id = nbgrader_meta(cell).get("grade_id")
        if is_grade_cell(cell) and grade_id:
            titles[grade_id] = section or grade_id
    return titles


def describe_cell(position: int | None, section: str | None) -> str:
    """'cell 9 (Exercise 2 — count pairs and merge)'; a cell missing from the learner's notebook
    (the grader put it back) has no position."""
    where = f"cell {position}" if position is not None else "a cell your notebook lacks (the grader put it back)"
    return f"{where} ({section})" if section else where


def describe_export_error(error) -> str:
    """An ExportError's message with the exercise or section of its cell added after the cell's
    number: "…/tokenizers.ipynb, cell 9 (Exercise 2 — count pairs and merge), line 4: …"."""
    text = str(error)
    cell = getattr(error, "cell", None)
    if cell is None:
        return text
    try:
        notebook = nbformat.read(str(error.notebook), as_version=4)
    except Exception:  # noqa: BLE001 (the message stays as it was: it names the notebook's problem)
        return text
    sections = section_of_each_cell(notebook)
    section = sections[cell - 1] if 0 < cell <= len(sections) else None
    if section is None:
        return text
    return text.replace(f", cell {cell}", f", {describe_cell(cell, section)}", 1)
