"""Read a submitted notebook and rebuild it on the released one, whatever state it arrives in.

A submission is matched cell by cell to the instructor's source notebook (solutions/, with
the hidden tests): by nbgrader grade id, else by cell id, else (for a solution cell whose
metadata was stripped) by the names it defines. The notebook that is executed then has

* every locked and grade cell exactly as the instructor wrote it (edited, deleted or emptied
  ones are restored), in the released order; the course's other code cells as the instructor
  wrote them too (a learner's edit to one is not run);
* the learner's solution cells and own extra cells (each after the cell it followed);
* of the learner's extra code cells, only `#| export` cells run: the grade depends on the
  exercise cells, the export cells and the course's cells, never on scratch code the learner
  left in the notebook (which could otherwise prepare the shell the tests run in). An exercise
  or export cell that breaks the export rules (code that would run on import) does not run;
* no learner cell that a static check finds tampering with the grading (assigning to library
  functions, touching `__builtins__`, importing this chapter's reference solution, naming the
  grader's files): such a cell is replaced by one that raises, and the exercise it belongs to
  scores zero.

Every change is recorded as a Finding with a reason; `review` findings go on the list of
submissions an instructor should look at.
"""
from __future__ import annotations

import ast
import copy
import json
import re
import threading
from dataclasses import dataclass
from pathlib import Path

import nbformat

MAX_NOTEBOOK_BYTES = 64 * 2**20
"""Larger submissions are refused (a real exercise notebook is well under 1 MB)."""
GRADING_PATHS = re.compile(r"gradebook|nbgrader_config|(^|[/\\])(solutions|submitted|autograded|feedback)[/\\]"
                           r"|[/\\](solutions|submitted|autograded|feedback)$")

SHELL_NAMES = frozenset({"get_ipython", "__IPYTHON__"})
SHELL_ATTRIBUTES = frozenset({"input_transformers_post", "input_transformers_cleanup", "ast_transformers",
                              "showtraceback", "showsyntaxerror", "custom_exceptions", "set_custom_exc", "run_cell",
                              "run_cell_async", "displayhook", "excepthook", "display_pub"})
"""What reaches into the IPython shell that runs the tests (to hide their errors, or skip them)."""
FRAME_ATTRIBUTES = frozenset({"_getframe", "currentframe", "getouterframes", "getinnerframes", "f_back", "f_globals",
                              "f_locals", "f_builtins", "tb_frame", "gi_frame", "cr_frame", "get_referrers",
                              "get_referents", "get_objects"})
"""What reads the caller's frame or the heap (the expected values of a test, the grader's state)."""

AST_LOCK = threading.Lock()
"""CPython's ast and symtable modules are not safe to use from several threads at once (a class is
graded in threads): every parse, unparse or symbol table of a submission's code holds this."""

NOT_RUN_KEY = "llmcourse_not_run"
"""Cell metadata: why the grader does not run this (learner's) cell; the runner skips it."""

ORACLE_MODULES = ("oracles", "tokenizer_oracles")
"""Modules of llmcourse.course that hold the course's own answers (the stand-ins and oracles the
grade cells use): learner code may not name them."""


@dataclass
class Finding:
    kind: str  # e.g. "invalid", "missing", "restored", "reordered", "integrity", "timeout", "died"
    message: str
    review: bool = True  # an instructor should look at this submission
    exercise: str | None = None  # the grade cell that scores zero because of it

    def as_dict(self) -> dict:
        return {"kind": self.kind, "message": self.message, "review": self.review, "exercise": self.exercise}


class UnreadableSubmission(Exception):
    """The file is not a notebook that can be graded; `finding` says why."""

    def __init__(self, finding: Finding):
        super().__init__(finding.message)
        self.finding = finding


def nbgrader_meta(cell) -> dict:
    meta = cell.get("metadata", {}).get("nbgrader", {})
    return meta if isinstance(meta, dict) else {}


def is_grade_cell(cell) -> bool:
    """A code cell nbgrader scores (an autograded test cell)."""
    return cell.cell_type == "code" and bool(nbgrader_meta(cell).get("grade"))


def load_submission(path: Path | None, expected_name: str):
    """The notebook at `path`, or UnreadableSubmission with a reason an instructor can act on."""
    if path is None or not Path(path).is_file():
        raise UnreadableSubmission(Finding("missing", f"no notebook {expected_name} was submitted"))
    size = Path(path).stat().st_size
    if size == 0:
        raise UnreadableSubmission(Finding("invalid", f"{Path(path).name} is an empty file"))
    if size > MAX_NOTEBOOK_BYTES:
        raise UnreadableSubmission(Finding("invalid", f"{Path(path).name} is {size / 2**20:.0f} MB, over the "
                                                      f"limit of {MAX_NOTEBOOK_BYTES / 2**20:.0f} MB"))
    raw = Path(path).read_bytes()
    try:
        data = json.loads(raw.decode("utf-8"))
    except UnicodeDecodeError as error:
        raise UnreadableSubmission(Finding("invalid", f"{Path(path).name} is not UTF-8 text: {error}")) from None
    except json.JSONDecodeError as error:
        raise UnreadableSubmission(Finding("invalid", f"{Path(path).name} is not valid JSON (line {error.lineno}, "
                                                      f"column {error.colno}: {error.msg})")) from None
    old_format = isinstance(data, dict) and data.get("nbformat") == 3 and isinstance(data.get("worksheets"), list)
    if not isinstance(data, dict) or not (isinstance(data.get("cells"), list) or old_format):
        raise UnreadableSubmission(Finding("invalid",
                                           f"{Path(path).name} is JSON but not a notebook (no list of cells)"))
    data = without_lone_surrogates(data)[0]
    try:
        notebook = nbformat.reads(json.dumps(data), as_version=4)  # a version 3 notebook is upgraded
    except Exception as error:  # nbformat raises several kinds for malformed notebooks
        raise UnreadableSubmission(Finding("invalid",
                                           f"{Path(path).name} is not a readable notebook: {error}")) from None
    cells = []
    for cell in notebook.cells:
        if isinstance(cell, dict) and cell.get("cell_type") in {"code", "markdown", "raw"}:
            source = cell.get("source", "")
            cell["source"] = "".join(source) if isinstance(source, list) else str(source)
            cell.setdefault("metadata", {})
            cells.append(cell)
    notebook.cells = cells
    return notebook


LONE_SURROGATE = re.compile("[\ud800-\udfff]")


def without_lone_surrogates(data):
    """(data with every unpaired UTF-16 surrogate in its strings replaced by U+FFFD, how many).

    JSON may spell one ("\\ud800"), and Python reads it into a string no file can be written
    with: the notebook would fail when the grader saves it."""
    count = 0

    def clean(value):
        nonlocal count
        if isinstance(value, str):
            value, n = LONE_SURROGATE.subn("\ufffd", value)
            count += n
            return value
        if isinstance(value, list):
            return [clean(v) for v in value]
        if isinstance(value, dict):
            return {clean(k): clean(v) for k, v in value.items()}
        return value

    return clean(data), count


def defined_names(source: str) -> frozenset[str]:
    try:
        tree = ast.parse(source)
    except SyntaxError:
        return frozenset()
    return frozenset(n.name for n in tree.body if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)))


def cell_key(cell) -> str | None:
    return nbgrader_meta(cell).get("grade_id") or cell.get("id")


def match_cells(source_nb, submitted_nb):
    """{source key: index of the submitted cell}, the unmatched submitted indices, and how each matched."""
    keys = [cell_key(c) for c in source_nb.cells]
    by_key = {k: i for i, k in enumerate(keys) if k}
    solution_names = {keys[i]: defined_names(c.source) for i, c in enumerate(source_nb.cells)
                      if nbgrader_meta(c).get("solution") and defined_names(c.source)}
    matched: dict[str, int] = {}
    how: dict[str, str] = {}
    extra: list[int] = []
    for index, cell in enumerate(submitted_nb.cells):
        grade_id = nbgrader_meta(cell).get("grade_id")
        key = None
        if grade_id in by_key:
            key, way = grade_id, "grade id"
        elif cell.get("id") in by_key:
            key, way = cell.get("id"), "cell id"
        elif cell.cell_type == "code":
            names = defined_names(cell.source)
            candidates = [k for k, n in solution_names.items() if n and n == names and k not in matched]
            if len(candidates) == 1:
                key, way = candidates[0], "the names it defines"
        if key is None or key in matched:
            extra.append(index)
        else:
            matched[key], how[key] = index, way
    return matched, extra, how


def rebuild(source_nb, release_nb, submitted_nb, own_modules=(),
            run_own_cells: bool = False) -> tuple[nbformat.NotebookNode, list[Finding]]:
    """The notebook to execute: the source's locked and grade cells, the learner's own cells
    (those without '#| export' only with `run_own_cells`)."""
    from .export import is_export_cell  # export imports the chapters; this module stays below both

    findings: list[Finding] = []
    matched, extra, how = match_cells(source_nb, submitted_nb)
    release = {cell_key(c): c for c in release_nb.cells}
    order = [cell_key(c) for c in source_nb.cells]
    positions = [order.index(k) for k, _ in sorted(matched.items(), key=lambda item: item[1])]
    if positions != sorted(positions):
        findings.append(Finding("reordered", "cells were moved; they were put back in the released order"))
    # anchor each extra cell to the source cell it followed
    followers: dict[str | None, list[int]] = {}
    previous = None
    index_to_key = {i: k for k, i in matched.items()}
    for index in range(len(submitted_nb.cells)):
        if index in index_to_key:
            previous = index_to_key[index]
        else:
            followers.setdefault(previous, []).append(index)

    cells = []
    learner_cells: list[int] = []  # positions in `cells` of code the learner wrote
    export_solutions: set[int] = set()  # positions of solution cells that are export cells in the source
    for extra_index in followers.get(None, []):
        learner_cells.append(len(cells))
        cells.append(plain_copy(submitted_nb.cells[extra_index]))
    for source_cell in source_nb.cells:
        key = cell_key(source_cell)
        meta = nbgrader_meta(source_cell)
        submitted = submitted_nb.cells[matched[key]] if key in matched else None
        if submitted is not None and how[key] != "grade id" and meta:
            findings.append(Finding("restored", f"cell {key} had lost its nbgrader metadata (matched by {how[key]}); "
                                                "it was restored", review=False))
        if meta.get("grade") or meta.get("locked"):
            if submitted is None and meta.get("grade"):
                findings.append(Finding("restored", f"grade cell {key} was deleted; it was put back", review=True))
            elif submitted is not None and key in release and submitted.source.strip() != release[key].source.strip():
                findings.append(Finding("restored", f"locked cell {key} was edited; the original was restored",
                                        review=bool(meta.get("grade"))))
            cells.append(copy.deepcopy(source_cell))
        elif meta.get("solution"):
            if source_cell.cell_type == "code" and is_export_cell(source_cell.source):
                export_solutions.add(len(cells))
            cell = copy.deepcopy(source_cell)
            if submitted is None:
                findings.append(Finding("restored", f"solution cell {key} is missing; its blank version was used",
                                        review=False))
                cell.source = release[key].source if key in release else ""
            else:
                cell.source = submitted.source
                learner_cells.append(len(cells))
            cells.append(cell)
        else:
            cell = copy.deepcopy(source_cell)
            if submitted is not None and submitted.cell_type == source_cell.cell_type:
                if cell.cell_type != "code":
                    cell.source = submitted.source
                elif submitted.source.strip() != source_cell.source.strip():
                    findings.append(Finding("restored", f"course cell {key} was edited; the grader ran the "
                                                        "course's version", review=False))
            cells.append(cell)
        for extra_index in followers.get(key, []):
            learner_cells.append(len(cells))
            cells.append(plain_copy(submitted_nb.cells[extra_index]))
    kernel = submitted_nb.get("metadata", {}).get("kernelspec", {}).get("name")
    if kernel and kernel != source_nb.metadata.get("kernelspec", {}).get("name"):
        findings.append(Finding("kernel", f"the notebook asked for kernel {kernel!r}; it was graded with Python 3",
                                review=False))
    rebuilt = copy.deepcopy(source_nb)
    for cell in cells:
        if cell.cell_type == "code":
            cell.outputs, cell.execution_count = [], None
    rebuilt.cells = cells
    findings += plan_graded_run(rebuilt, learner_cells, run_own_cells, export_solutions)
    findings += neutralise_tampering(rebuilt, learner_cells, own_modules)
    return rebuilt, findings


def runs(cell) -> bool:
    """Whether the grader runs this cell (see NOT_RUN_KEY)."""
    return cell.cell_type == "code" and NOT_RUN_KEY not in cell.get("metadata", {})


def plan_graded_run(notebook, learner_cells: list[int], run_own_cells: bool = False,
                    export_solutions=frozenset()) -> list[Finding]:
    """Mark the learner's cells that do not run: scratch cells (extra cells without `#| export`)
    and export cells that break the export rules (an exercise cell that is an export cell in
    the course is held to them whatever its first line now says)."""
    from .export import ExportError, is_export_cell, parse_export_cell

    if run_own_cells:  # every learner cell runs as written
        return []
    findings = []
    scratch = 0
    for index in learner_cells:
        cell = notebook.cells[index]
        if cell.cell_type != "code":
            continue
        solution = bool(nbgrader_meta(cell).get("solution"))
        if not solution and not is_export_cell(cell.source):
            if cell.source.strip():
                cell.metadata[NOT_RUN_KEY] = "a cell of your own without '#| export': the grader does not run it"
                scratch += 1
            continue
        source = cell.source
        if index in export_solutions and not is_export_cell(source):
            source = "#| export exercise\n" + source
        try:
            parse_export_cell(Path("notebook"), index + 1, source)
        except ExportError as error:
            if "syntax error" in error.reason:
                continue  # it runs, and its SyntaxError says what is wrong
            exercise = exercise_of(notebook, index)
            message = f"an '#| export' cell was not run: line {error.line}: {error.reason}"
            findings.append(Finding("rule", message, review=False, exercise=exercise))
            cell.source = ("# The grader did not run this cell.\nclass ExportRuleError(Exception):\n    pass\n\n\n"
                           f"raise ExportRuleError({message!r})\n")
    if scratch:
        findings.append(Finding("not-run", f"{scratch} cell(s) of your own without '#| export' were not run: a "
                                           "grade depends only on the exercise cells, '#| export' cells and the "
                                           "course's cells", review=False))
    return findings


def plain_copy(cell):
    """A learner's own cell, without any nbgrader metadata it may carry (it grades nothing)."""
    cell = copy.deepcopy(cell)
    cell.get("metadata", {}).pop("nbgrader", None)
    if cell.cell_type == "code":
        cell.setdefault("outputs", [])
        cell.setdefault("execution_count", None)
    return cell


def exercise_of(notebook, index: int) -> str | None:
    """The grade cell a cell belongs to: the first one at or after it."""
    for cell in notebook.cells[index:]:
        if is_grade_cell(cell):
            return nbgrader_meta(cell).get("grade_id")
    return None


def exercise_grade_ids(notebook, grade_id: str) -> list[str]:
    """Every grade cell of the exercise `grade_id` is a grade cell of: the grade cells between one
    solution cell and the next (an exercise may give points per function)."""
    block: list[str] = []
    for cell in notebook.cells:
        meta = nbgrader_meta(cell)
        if meta.get("solution"):
            if grade_id in block:
                break
            block = []
        if is_grade_cell(cell):
            block.append(meta.get("grade_id"))
    return block if grade_id in block else []


def module_aliases(notebook) -> set[str]:
    """Names bound to modules (or their members) by import statements anywhere in the notebook."""
    names = {"builtins", "__builtins__", "sys"}
    for cell in notebook.cells:
        if cell.cell_type != "code":
            continue
        try:
            tree = ast.parse(cell.source)
        except SyntaxError:
            continue
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                names.update((a.asname or a.name).split(".")[0] for a in node.names)
            elif isinstance(node, ast.ImportFrom):
                names.update(a.asname or a.name for a in node.names)
    return names


def root_name(node) -> str | None:
    while isinstance(node, (ast.Attribute, ast.Subscript)):
        node = node.value
    return node.id if isinstance(node, ast.Name) else None


def dotted(node) -> str:
    try:
        return ast.unparse(node)
    except Exception:  # noqa: BLE001 (unparse of odd nodes)
        return "?"


def tampering(source: str, aliases: set[str], own_modules=()) -> str | None:
    """Why this learner code tampers with grading, or None."""
    try:
        tree = ast.parse(source)
    except SyntaxError:
        return None  # it will fail to run, and score what it scores
    own = {f"llmcourse.{m.replace('/', '.')}" for m in own_modules}
    docstrings = {id(n.value) for n in ast.walk(tree) if isinstance(n, ast.Expr) and isinstance(n.value, ast.Constant)}
    for node in ast.walk(tree):
        targets = []
        if isinstance(node, (ast.Assign, ast.Delete)):
            targets = node.targets
        elif isinstance(node, (ast.AugAssign, ast.AnnAssign)):
            targets = [node.target]
        for target in targets:
            for part in ast.walk(target):
                if isinstance(part, (ast.Attribute, ast.Subscript)) and root_name(part) in aliases:
                    return f"it assigns to {dotted(part)}, which belongs to a library the tests rely on"
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in {"setattr", "delattr"}:
            if node.args and root_name(node.args[0]) in aliases:
                return f"it calls {node.func.id}() on {dotted(node.args[0])}, a library the tests rely on"
        if isinstance(node, ast.Name) and node.id == "__builtins__":
            return "it uses __builtins__"
        if isinstance(node, ast.Attribute) and node.attr in {"meta_path", "path_hooks", "settrace", "setprofile",
                                                              "addaudithook"} and root_name(node) == "sys":
            return f"it uses sys.{node.attr}, which changes how the grader runs"
        if isinstance(node, ast.ImportFrom):
            module = node.module or ""
            if module in own or any(f"{module}.{a.name}" in own for a in node.names):
                return f"it imports the reference solution of this chapter ({module})"
        if isinstance(node, ast.Import) and any(a.name in own or a.name.startswith(tuple(m + "." for m in own))
                                                for a in node.names):
            return "it imports the reference solution of this chapter"
        if isinstance(node, ast.Name) and node.id in SHELL_NAMES or (
                isinstance(node, ast.Attribute) and node.attr in SHELL_ATTRIBUTES):
            return "it reaches into the IPython shell that runs the tests"
        if isinstance(node, ast.Attribute) and node.attr in FRAME_ATTRIBUTES:
            return f"it reads the interpreter's frames or heap ({node.attr}), where the tests keep their answers"
        if isinstance(node, ast.Attribute) and node.attr == "modules" and root_name(node) == "sys":
            return "it uses sys.modules, where the tests find their oracles"
        oracle = oracle_named(node)
        if oracle:
            return f"it uses the course's own answers ({oracle}), which grade the exercises"
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in docstrings:
            if any(node.value == m or node.value.startswith(m + ".") for m in own):
                return f"it names the reference solution of this chapter ({node.value!r})"
            if GRADING_PATHS.search(node.value):
                return f"it names the grader's files ({node.value[:60]!r})"
    return None


def oracle_named(node) -> str | None:
    """The oracle module an import, attribute or string of learner code names, or None."""
    names = []
    if isinstance(node, ast.Import):
        names = [a.name for a in node.names]
    elif isinstance(node, ast.ImportFrom):
        names = [node.module or ""] + [f"{node.module}.{a.name}" for a in node.names]
    elif isinstance(node, ast.Attribute):
        names = [node.attr]
    elif isinstance(node, ast.Constant) and isinstance(node.value, str):
        names = [node.value]
    for name in names:
        parts = name.split(".")
        if any(part in ORACLE_MODULES for part in parts) and (len(parts) == 1 or "course" in parts):
            return name
    return None


def neutralise_tampering(notebook, learner_cells: list[int], own_modules=()) -> list[Finding]:
    aliases = module_aliases(notebook)
    findings = []
    for index in learner_cells:
        cell = notebook.cells[index]
        if cell.cell_type != "code":
            continue
        reason = tampering(cell.source, aliases, own_modules)
        if reason is None:
            continue
        exercise = exercise_of(notebook, index)
        message = f"a cell was not run because {reason}"
        findings.append(Finding("integrity", message, review=True, exercise=exercise))
        cell.source = (f"# The grader did not run this cell: {reason}.\n"
                       f"raise PermissionError({('grading: ' + message)!r})\n")
    return findings
