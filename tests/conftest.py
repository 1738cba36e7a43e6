"""Pick the implementation under test, and shared fixtures.

The tests verify *a* package: the reference `llmcourse` by default, or a learner's package
when LLMCOURSE_PACKAGE names the folder that holds its `llmcourse/` (as `./course test
--package DIR` does, in its own process). The chosen folder is put first on sys.path before
anything imports `llmcourse`, and the session refuses to run if the import resolves anywhere
else.
"""
from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE_ENV = "LLMCOURSE_PACKAGE"


def _select_package() -> Path:
    chosen = os.environ.get(PACKAGE_ENV)
    if not chosen:
        return ROOT
    parent = Path(chosen).resolve()
    if not (parent / "llmcourse" / "__init__.py").is_file():
        raise pytest.UsageError(f"{PACKAGE_ENV}={chosen}: no llmcourse/__init__.py there; run `./course export` first")
    sys.path.insert(0, str(parent))
    return parent


PACKAGE_PARENT = _select_package()

# Without a GPU, Triton's kernels (chapter 6) run in its CPU interpreter. Triton reads this when it
# is first imported, so it is set before any test imports it; a machine with CUDA runs them compiled.
if not os.environ.get("TRITON_INTERPRET"):
    import torch

    if not torch.cuda.is_available():
        os.environ["TRITON_INTERPRET"] = "1"
import llmcourse  # noqa: E402  (after sys.path is set)

if Path(llmcourse.__file__).resolve().parent != PACKAGE_PARENT / "llmcourse":
    raise pytest.UsageError(f"llmcourse was imported from {llmcourse.__file__}, not from {PACKAGE_PARENT}")


def pytest_report_header(config):
    return f"llmcourse under test: {Path(llmcourse.__file__).parent}"


def pytest_collection_modifyitems(config, items):
    import torch

    if not torch.cuda.is_available():
        skip = pytest.mark.skip(reason="needs CUDA")
        for item in items:
            if "gpu" in item.keywords:
                item.add_marker(skip)
    if os.environ.get(PACKAGE_ENV):
        # A learner's package: only the package tests apply, not the course's own checks, and the
        # largest sizes (minutes for a slower algorithm the notebook accepts) run on the reference only.
        skip = pytest.mark.skip(reason="course infrastructure check, not a package test")
        big = pytest.mark.skip(reason="a size checked on the reference package; yours is held to the smaller ones")
        for item in items:
            if "course_infra" in item.keywords:
                item.add_marker(skip)
            elif "reference_only" in item.keywords:
                item.add_marker(big)


@pytest.fixture(scope="session")
def root() -> Path:
    return ROOT


@pytest.fixture(params=["cpu", pytest.param("cuda", marks=pytest.mark.gpu)])
def device(request):
    """Run a test on the CPU, and again on CUDA when present (the `gpu` marker)."""
    return request.param
