"""The glossary (book/glossary.md) and the chapters' links to it, read from the markdown.

An entry of the glossary is an English term, its Chinese name on the next line (both are
terms Sphinx can link to), and an indented definition that ends with a link to the section
that introduces the term:

    attention
    注意力
      The operation in which ... Introduced in {numref}`Chapter {number}, {name} <att-chapter>`.

The chapters link a term with the {term} role where they introduce it. These tests need no
build: every glossary term is linked from a chapter, every linked term is in the glossary,
and a term's first link in the book is in the section its entry names.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import pytest

from llmcourse.course.chapters import CHAPTERS

pytestmark = pytest.mark.course_infra

ROOT = Path(__file__).resolve().parents[1]
GLOSSARY = ROOT / "book" / "glossary.md"

CJK = re.compile(r"[\u3400-\u9fff\uf900-\ufaff]")  # the Chinese (CJK unified) ideographs
CODE_CELL = re.compile(r"^```\{code-cell\}.*?^```[ \t]*$", re.MULTILINE | re.DOTALL)
TERM_ROLE = re.compile(r"\{term\}`([^`]+)`")
LABEL = re.compile(r"^\(([\w-]+)\)=[ \t]*$", re.MULTILINE)
HEADING = re.compile(r"^(#{1,6}) ", re.MULTILINE)
# The link that ends a definition: {numref}`... <label>` or {ref}`... <label>` / {ref}`label`.
SECTION_LINK = re.compile(r"\{(?:numref|ref)\}`(?:[^`<]*<)?([\w-]+)>?`")


@dataclass
class Entry:
    names: list[str]  # the term lines: English first, then Chinese
    definition: str
    line: int  # where the entry starts in glossary.md

    @property
    def english(self) -> str:
        return self.names[0]

    def __str__(self) -> str:
        return f"glossary.md line {self.line} ({self.english!r})"


def _target(role_text: str) -> str:
    """The term a {term} role links to: `text <term>` or `term`, compared as Sphinx does (any case)."""
    match = re.fullmatch(r"(?s).*<([^<>]+)>\s*", role_text)
    return " ".join((match.group(1) if match else role_text).split()).lower()


def _without_code_cells(text: str) -> str:
    """The text with every code cell blanked out (same length, so offsets stay valid)."""
    return CODE_CELL.sub(lambda m: re.sub(r"[^\n]", " ", m.group(0)), text)


def parse_glossary(text: str) -> list[Entry]:
    match = re.search(r"^```\{glossary\}[ \t]*\n(.*?)^```[ \t]*$", text, re.MULTILINE | re.DOTALL)
    assert match, "book/glossary.md has no ```{glossary} block"
    first_line = text[: match.start(1)].count("\n") + 1
    entries: list[Entry] = []
    current: Entry | None = None
    for offset, line in enumerate(match.group(1).split("\n")):
        if not line.strip() or line.startswith(":"):  # blank, or an option such as :sorted:
            current = None if not line.strip() else current
            continue
        if line[0].isspace():
            assert current is not None, f"glossary.md line {first_line + offset}: a definition without a term"
            current.definition = f"{current.definition} {line.strip()}".strip()
        elif current is None or current.definition:
            current = Entry(names=[line.strip()], definition="", line=first_line + offset)
            entries.append(current)
        else:
            current.names.append(line.strip())
    return entries


@dataclass
class Chapter:
    path: Path
    text: str  # with code cells blanked out

    def links(self) -> list[tuple[int, str]]:
        """(offset, linked term) for every {term} role outside code cells, in order."""
        return [(m.start(), _target(m.group(1))) for m in TERM_ROLE.finditer(self.text)]

    def labels(self) -> dict[str, tuple[int, int]]:
        """label -> (start, end) offsets of the section it names (until the next heading of its level or above)."""
        headings = [(m.start(), len(m.group(1))) for m in HEADING.finditer(self.text)]
        sections = {}
        for m in LABEL.finditer(self.text):
            following = [h for h in headings if h[0] > m.end()]
            assert following and self.text[m.end():following[0][0]].strip() == "", (
                f"{self.path.name}: the label ({m.group(1)})= should stand right before a heading")
            start, level = following[0]
            end = next((h[0] for h in following[1:] if h[1] <= level), len(self.text))
            sections[m.group(1)] = (start, end)
        return sections


@pytest.fixture(scope="module")
def entries() -> list[Entry]:
    assert GLOSSARY.is_file(), "the book needs its glossary, book/glossary.md"
    return parse_glossary(GLOSSARY.read_text(encoding="utf-8"))


@pytest.fixture(scope="module")
def chapters() -> list[Chapter]:
    pages = [ROOT / "book" / f"{chapter.assignment}.md" for chapter in CHAPTERS]
    missing = [page.name for page in pages if not page.is_file()]
    assert not missing, f"chapters without a page in book/: {missing}"
    return [Chapter(page, _without_code_cells(page.read_text(encoding="utf-8"))) for page in pages]


def test_the_glossary_is_in_the_table_of_contents():
    toc = (ROOT / "_toc.yml").read_text(encoding="utf-8")
    assert re.search(r"^\s*-?\s*file:\s*book/glossary\s*$", toc, re.MULTILINE), "_toc.yml should list book/glossary"


def test_every_entry_has_english_chinese_and_a_definition(entries):
    assert len(entries) >= 50, f"expected every term of the chapters (50 or more), got {len(entries)} entries"
    problems = []
    for entry in entries:
        english, others = entry.english, entry.names[1:]
        if CJK.search(english) or not re.search(r"[A-Za-z]", english):
            problems.append(f"{entry}: the first term line should be the English term, got {english!r}")
        if len(others) != 1 or not CJK.search(others[0]):
            problems.append(f"{entry}: expected one Chinese term line after the English one, got {others}")
        prose = SECTION_LINK.sub("", entry.definition).replace("Introduced in", "").strip(" .")
        if len(prose.split()) < 3:
            problems.append(f"{entry}: expected a one-line definition, got {entry.definition!r}")
        if not SECTION_LINK.search(entry.definition):
            problems.append(f"{entry}: the definition should end with a link to the section that introduces "
                            f"the term ({{numref}}`... <label>`), got {entry.definition!r}")
    assert not problems, "\n".join(problems)


def test_terms_are_unique(entries):
    seen: dict[str, Entry] = {}
    duplicates = []
    for entry in entries:
        for name in entry.names:
            key = name.lower()
            if key in seen:
                duplicates.append(f"{name!r} in {entry} and in {seen[key]}")
            seen[key] = entry
    assert not duplicates, "a term may be defined once:\n" + "\n".join(duplicates)


def test_every_glossary_term_is_linked_from_a_chapter(entries, chapters):
    linked = {term for chapter in chapters for _, term in chapter.links()}
    unused = [str(entry) for entry in entries if entry.english.lower() not in linked]
    assert not unused, ("these terms are in the glossary but no chapter links them with {term} "
                        "where it introduces them:\n" + "\n".join(unused))


def test_every_linked_term_is_in_the_glossary(entries, chapters):
    defined = {name.lower() for entry in entries for name in entry.names}
    undefined = [f"{chapter.path.name}, line {chapter.text[:offset].count(chr(10)) + 1}: {{term}}`{term}`"
                 for chapter in chapters for offset, term in chapter.links() if term not in defined]
    assert not undefined, "linked with {term} but not defined in book/glossary.md:\n" + "\n".join(undefined)


def test_each_term_is_first_linked_where_its_entry_says_it_is_introduced(entries, chapters):
    sections = {label: (chapter, span) for chapter in chapters for label, span in chapter.labels().items()}
    first_link: dict[str, tuple[Chapter, int]] = {}
    for chapter in chapters:  # in the order of the book
        for offset, term in chapter.links():
            first_link.setdefault(term, (chapter, offset))
    problems = []
    for entry in entries:
        label = SECTION_LINK.findall(entry.definition)[-1] if SECTION_LINK.search(entry.definition) else None
        if label not in sections:
            problems.append(f"{entry}: links the section label {label!r}, which no chapter defines "
                            f"(a chapter marks it with ({label})= before the heading)")
            continue
        if entry.english.lower() not in first_link:
            continue  # reported by test_every_glossary_term_is_linked_from_a_chapter
        expected_chapter, (start, end) = sections[label]
        chapter, offset = first_link[entry.english.lower()]
        if chapter is not expected_chapter or not start <= offset < end:
            line = chapter.text[:offset].count("\n") + 1
            problems.append(f"{entry}: introduced in section {label!r} of {expected_chapter.path.name}, "
                            f"but first linked in {chapter.path.name}, line {line}")
    assert not problems, "\n".join(problems)
