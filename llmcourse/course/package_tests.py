"""The package phase of `check`: a learner's chapter exported into a package of its own and the
chapter's package tests run against it, in a child process, with live progress and a time limit.

pytest runs verbosely: it writes a test's name when the test starts and its outcome when it
ends, so each finished test is reported at once, and when the time limit strikes the unfinished
line names the test that was running.
"""
from __future__ import annotations

import os
import queue
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path

from .chapters import CHAPTERS
from .export import ExportError, export_package
from .places import describe_export_error

PACKAGE_TEST_TIMEOUT = 300.0
"""Seconds the package tests of one chapter may take in `check` before they are stopped. Every
chapter's tests take well under a minute on 2 cores for any implementation its notebook accepts."""

FAILURE_LINES = 6
"""Lines of a failed package test's message that `check` shows: the lines pytest marks with 'E'
(the exception, and what was expected and what came back), enough for a value, a shape and the
inputs of a failing example; a longer message ends with how many lines were left out."""
FAILURE_LINE_CHARS = 160
"""Longer lines are cut: a whole tensor printed in a message says less than its first values."""
PYTEST_HINTS = re.compile(r"^(Use -v to get more diff|Full diff:|# The test always failed when commented parts)")
"""Lines of pytest's and Hypothesis's reports that say nothing about the learner's code."""
GENERATED_VALUE_NOTE = re.compile(r"\s*# or any other generated value$")

RESULT_LINE = re.compile(r"^(?P<test>\S+::\S+)\s+(?P<outcome>PASSED|FAILED|ERROR|SKIPPED|XFAIL|XPASS)\b")
OUTCOMES = {"PASSED": "pass", "XPASS": "pass", "FAILED": "FAIL", "ERROR": "FAIL", "SKIPPED": "skip", "XFAIL": "skip"}


@dataclass
class TestResult:
    name: str  # the test function, without its parameters
    outcome: str  # "pass" | "FAIL" | "skip"
    message: str = ""  # what failed: at most FAILURE_LINES lines (failure_lines)


@dataclass
class PackageReport:
    results: list[TestResult]
    problem: str = ""  # why the tests could not run, or were stopped
    seconds: float = 0.0


def build_package(root: Path, chapter, notebook: Path, out: Path) -> Path:
    """The learner's chapter exported into `out`, every other chapter's module from the reference."""
    package = export_package([notebook], out)
    for other in CHAPTERS:
        for module in other.modules:
            target = package / f"{module}.py"
            if other is not chapter and not target.exists():
                target.parent.mkdir(parents=True, exist_ok=True)
                for folder in target.relative_to(package).parents:  # a subpackage needs its __init__.py
                    init = package / folder / "__init__.py"
                    if not init.exists():
                        shutil.copy2(root / "llmcourse" / folder / "__init__.py", init)
                shutil.copy2(root / "llmcourse" / f"{module}.py", target)
    return package


def read_chunks(stream, chunks: queue.Queue) -> None:
    for chunk in iter(lambda: os.read(stream.fileno(), 4096), b""):
        chunks.put(chunk.decode("utf-8", errors="replace"))
    chunks.put(None)


def run_live(command: list[str], cwd: Path, env: dict, timeout: float, on_result) -> str | None:
    """Run pytest; call on_result(nodeid, outcome) as tests finish. Returns the test running when
    the time limit struck ("" if between tests), or None if pytest finished in time."""
    process = subprocess.Popen(command, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                               start_new_session=True)
    chunks: queue.Queue = queue.Queue()
    threading.Thread(target=read_chunks, args=(process.stdout, chunks), daemon=True).start()
    deadline = time.monotonic() + timeout
    pending = ""
    while True:
        try:
            chunk = chunks.get(timeout=max(0.0, deadline - time.monotonic()))
        except queue.Empty:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
            running = pending.strip().split(" ")[0]
            return running if "::" in running else ""
        if chunk is None:
            process.wait()
            return None
        pending += chunk
        *lines, pending = pending.split("\n")
        for line in lines:
            match = RESULT_LINE.match(line.strip())
            if match:
                on_result(match["test"], OUTCOMES[match["outcome"]])


def join_call_lines(lines: list[str]) -> list[str]:
    """Put a call that Hypothesis spreads over lines back on one: 'test_x(n=1, m=2)'."""
    joined: list[str] = []
    call: list[str] | None = None
    for line in lines:
        if call is not None:
            if line.startswith(")"):
                joined.append(call[0] + ", ".join(a.rstrip(",") for a in call[1:]) + line)
                call = None
            else:
                call.append(line)
        elif line.endswith("("):
            call = [line]
        else:
            joined.append(line)
    return joined + (call or [])


def failure_lines(text: str, message: str = "") -> str:
    """The few lines of a failure report that say what was expected and what came back.

    `text` is pytest's report of one failure: its last block of 'E' lines is the exception that
    ended the test, with pytest's comparison of the two values; `message` stands in without one.
    """
    blocks: list[list[str]] = []
    previous_was_e = False
    for line in text.splitlines():
        is_e = line == "E" or line.startswith("E ")
        if is_e and not previous_was_e:
            blocks.append([])
        if is_e:
            blocks[-1].append(line[1:].strip())
        previous_was_e = is_e
    lines = blocks[-1] if blocks else message.strip().splitlines()
    lines = [GENERATED_VALUE_NOTE.sub("", line) for line in lines if line and not PYTEST_HINTS.match(line)]
    lines = [line if len(line) <= FAILURE_LINE_CHARS else line[:FAILURE_LINE_CHARS - 1] + "…"
             for line in join_call_lines(lines)]
    if len(lines) > FAILURE_LINES:
        lines = lines[:FAILURE_LINES - 1] + [f"… ({len(lines) - FAILURE_LINES + 1} more lines)"]
    return "\n".join(lines)


def failure_messages(report: Path) -> dict[str, str]:
    """{test name: what failed (failure_lines)} from pytest's JUnit XML, the first failing case of each."""
    messages = {}
    if not report.exists():
        return messages
    for case in ET.parse(report).getroot().iter("testcase"):
        failure = case.find("failure")
        if failure is None:
            failure = case.find("error")
        if failure is not None:
            messages.setdefault(case.get("name", "").split("[")[0],
                                failure_lines(failure.text or "", failure.get("message") or ""))
    return messages


def run_package_tests(root: Path, chapter, notebook: Path, timeout: float = PACKAGE_TEST_TIMEOUT,
                      progress=None) -> PackageReport:
    """Export `notebook`'s chapter and run its package tests.

    `progress(name, outcome, again)` hears each test function as it ends: `again` is True when a
    further case of a parametrized test fails after an earlier one passed.
    """
    start = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="llmcourse-check-") as scratch:
        out = Path(scratch) / "package"
        try:
            build_package(root, chapter, notebook, out)
        except ExportError as error:
            return PackageReport([], f"your export cells cannot be exported: {describe_export_error(error)}")
        report = Path(scratch) / "report.xml"
        env = dict(os.environ, LLMCOURSE_PACKAGE=str(out), PYTHONUNBUFFERED="1")
        files = [str(root / "tests" / f) for f in chapter.test_files]
        command = [sys.executable, "-m", "pytest", *files, "-v", "-p", "no:cacheprovider", f"--junitxml={report}",
                   "-m", "not slow", "--color=no"]
        outcomes: dict[str, str] = {}

        def on_result(nodeid: str, outcome: str) -> None:
            name = nodeid.split("::")[-1].split("[")[0]
            worst = "FAIL" if "FAIL" in (outcome, outcomes.get(name)) else outcome
            if outcome == "skip" and name in outcomes:
                return
            if progress is not None and name not in outcomes:
                progress(name, outcome, False)
            elif progress is not None and worst == "FAIL" and outcomes[name] != "FAIL":
                progress(name, "FAIL", True)
            outcomes[name] = worst

        running = run_live(command, root, env, timeout, on_result)
        messages = failure_messages(report)
        results = [TestResult(name, outcome, messages.get(name, "")) for name, outcome in outcomes.items()
                   if outcome != "skip"]
        problem = ""
        if running is not None:
            where = f" while running {running.split('::')[-1]}" if running else ""
            problem = (f"the package tests were stopped after {timeout:g} s{where}: is there an endless loop, "
                       "or an algorithm much slower than the notebook asks for?")
        elif not outcomes and not report.exists():
            problem = "the package tests did not run"
        return PackageReport(results, problem, time.monotonic() - start)
