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

PACKAGE_TEST_TIMEOUT = 300.0
"""Seconds the package tests of one chapter may take in `check` before they are stopped. Every
chapter's tests take well under a minute on 2 cores for any implementation its notebook accepts."""

RESULT_LINE = re.compile(r"^(?P<test>\S+::\S+)\s+(?P<outcome>PASSED|FAILED|ERROR|SKIPPED|XFAIL|XPASS)\b")
OUTCOMES = {"PASSED": "pass", "XPASS": "pass", "FAILED": "FAIL", "ERROR": "FAIL", "SKIPPED": "skip", "XFAIL": "skip"}


@dataclass
class TestResult:
    name: str  # the test function, without its parameters
    outcome: str  # "pass" | "FAIL" | "skip"
    message: str = ""  # the first line of the failure


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
            if other is not chapter and not (package / f"{module}.py").exists():
                shutil.copy2(root / "llmcourse" / f"{module}.py", package / f"{module}.py")
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


def failure_messages(report: Path) -> dict[str, str]:
    """{test name: first line of its failure} from pytest's JUnit XML."""
    messages = {}
    if not report.exists():
        return messages
    for case in ET.parse(report).getroot().iter("testcase"):
        failure = case.find("failure")
        if failure is None:
            failure = case.find("error")
        if failure is not None:
            lines = (failure.get("message") or "").strip().splitlines()
            messages.setdefault(case.get("name", "").split("[")[0], lines[0][:160] if lines else "")
    return messages


def run_package_tests(root: Path, chapter, notebook: Path, timeout: float = PACKAGE_TEST_TIMEOUT,
                      progress=print) -> PackageReport:
    """Export `notebook`'s chapter and run its package tests; `progress(text)` hears each test as it ends."""
    start = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="llmcourse-check-") as scratch:
        out = Path(scratch) / "package"
        try:
            build_package(root, chapter, notebook, out)
        except ExportError as error:
            return PackageReport([], f"your export cells cannot be exported: {error}")
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
            if name not in outcomes:
                progress(f"  {outcome:<4}  {name}")
            elif worst == "FAIL" and outcomes[name] != "FAIL":
                progress(f"  FAIL  {name} (another case of it)")
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
