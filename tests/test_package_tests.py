"""The package phase of `check`: live results, and a time limit that names the test it stopped."""
from __future__ import annotations

import sys
import textwrap

import pytest

from llmcourse.course.package_tests import run_live

pytestmark = [pytest.mark.course_infra]


def pytest_file(tmp_path, body: str):
    path = tmp_path / "test_sample.py"
    path.write_text(textwrap.dedent(body))
    return [sys.executable, "-m", "pytest", str(path), "-v", "-p", "no:cacheprovider", "--color=no"]


def test_results_arrive_as_tests_finish(tmp_path):
    command = pytest_file(tmp_path, """
        def test_one():
            pass

        def test_two():
            assert 1 == 2
    """)
    seen = []
    running = run_live(command, tmp_path, {}, timeout=120,
                       on_result=lambda test, outcome: seen.append((test, outcome)))
    assert running is None
    assert [(t.split("::")[-1], o) for t, o in seen] == [("test_one", "pass"), ("test_two", "FAIL")]


def test_the_time_limit_names_the_running_test(tmp_path):
    command = pytest_file(tmp_path, """
        def test_quick():
            pass

        def test_endless():
            while True:
                pass
    """)
    seen = []
    running = run_live(command, tmp_path, {}, timeout=20, on_result=lambda test, outcome: seen.append(test))
    assert running is not None and running.endswith("::test_endless"), running
    assert [t.split("::")[-1] for t in seen] == ["test_quick"]
