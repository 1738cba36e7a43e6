"""Sphinx extension for the llmcourse book, loaded by ``_config.yml``.

It adds two things that the stock Jupyter Book configuration does not do.

1. The chapters import ``llmcourse`` from this checkout, so the book always
   shows what this repository's code computes, whether or not the package is
   installed: the repository root is put first on the kernel's ``PYTHONPATH``
   (the kernel is a child process and inherits the environment).
2. ``execute_notebooks: force`` re-runs only the pages Sphinx re-reads, and an
   incremental build re-reads only pages whose own source changed. A change in
   the package would then leave stale outputs in the book. With ``force``, this
   extension marks every executed page as outdated on every build.
"""

from __future__ import annotations

import fnmatch
import os
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]


def _put_repo_on_kernel_path() -> None:
    parts = [str(REPO_ROOT)]
    if os.environ.get("PYTHONPATH"):
        parts.append(os.environ["PYTHONPATH"])
    os.environ["PYTHONPATH"] = os.pathsep.join(parts)


def _executed_pages_are_outdated(app, env, added, changed, removed):
    if app.config.nb_execution_mode != "force":
        return []
    skip = list(app.config.nb_execution_excludepatterns or [])
    outdated = []
    for docname in sorted(env.found_docs):
        source = Path(env.doc2path(docname, False)).as_posix()
        if source.endswith((".md", ".ipynb")) and not any(
            fnmatch.fnmatch(source, pattern) for pattern in skip
        ):
            outdated.append(docname)
    return outdated


def setup(app):
    _put_repo_on_kernel_path()
    app.connect("env-get-outdated", _executed_pages_are_outdated)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
