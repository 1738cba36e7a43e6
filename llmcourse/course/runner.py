"""Execute a notebook in the sandbox kernel, cell by cell, and survive whatever it does.

Per cell: a time limit (the kernel is interrupted; if it does not answer, it is killed), an
output budget (extra output is dropped, errors never are), and a record of what happened.
If the kernel dies (os._exit, a segfault, the memory limit), the cell that was running gets an
error saying so and every later code cell is marked as not run: the cells that ran keep their
results, the rest score zero.
"""
from __future__ import annotations

import asyncio
import json
import shutil
import subprocess
import sys
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path

import nbformat
from nbclient import NotebookClient
from nbclient.exceptions import CellTimeoutError, DeadKernelError

from .sandbox import INTEGRITY_MARKER, POLICY_ENV, REFUSED

KERNEL_NAME = "llmcourse-sandbox"
GIB = 2**30
PROBE_TIMEOUT = 10.0
"""Seconds an interrupted kernel has to answer before it is declared stuck and killed."""


@dataclass
class Limits:
    """What one submission may use. Memory and processes are per kernel."""

    cell_timeout: float = 120.0  # seconds per cell
    memory_bytes: int | None = 8 * GIB  # address space of the kernel
    output_bytes: int = 200_000  # output kept per cell; the rest is dropped
    file_bytes: int = 256 * 2**20  # largest file the kernel may write
    processes: int | None = None  # RLIMIT_NPROC; counts all of the user's processes, ignored for root
    allow_network: bool = False
    threads: int | None = None  # math-library threads per kernel (parallel grading: cores / jobs)

    def environment(self) -> dict[str, str]:
        """Variables for the kernel: bounded threads and malloc arenas keep memory use predictable."""
        # One hash seed for every kernel: a test that iterates over a set of strings then checks
        # the same things in the same order on every run and machine, so a score never depends on it.
        env = {"MALLOC_ARENA_MAX": "2", "PYTHONHASHSEED": "0"}
        if self.threads:
            for name in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "RAYON_NUM_THREADS"):
                env[name] = str(self.threads)
        return env

    def policy(self, n_cells: int, protected_paths=(), blocked_modules=()) -> dict:
        return {"memory_bytes": self.memory_bytes, "file_bytes": self.file_bytes,
                "cpu_seconds": int(self.cell_timeout * max(n_cells, 1) + 120), "processes": self.processes,
                "allow_network": self.allow_network, "protected_paths": [str(p) for p in protected_paths],
                "blocked_modules": list(blocked_modules)}


@dataclass
class CellEvent:
    """Something that went wrong in one cell: timeout, died, not-run, truncated, integrity."""

    index: int
    kind: str
    message: str

    def as_dict(self) -> dict:
        return asdict(self)


def error_output(ename: str, message: str) -> nbformat.NotebookNode:
    return nbformat.v4.new_output("error", ename=ename, evalue=message, traceback=[f"{ename}: {message}"])


class LimitedClient(NotebookClient):
    """nbclient with a per-cell output budget and a record of timeouts."""

    def __init__(self, *args, output_bytes: int, **kwargs):
        super().__init__(*args, **kwargs)
        self.output_bytes = output_bytes
        self.used: dict[int, int] = {}
        self.dropped: dict[int, int] = {}
        self.timed_out: set[int] = set()
        self.current_cell = -1

    def output(self, outs, msg, display_id, cell_index):
        if msg["msg_type"] != "error":  # an error decides the grade: always keep it
            size = len(json.dumps(msg["content"], default=str))
            if self.used.get(cell_index, 0) + size > self.output_bytes:
                self.dropped[cell_index] = self.dropped.get(cell_index, 0) + size
                return None
            self.used[cell_index] = self.used.get(cell_index, 0) + size
        return super().output(outs, msg, display_id, cell_index)

    async def _async_handle_timeout(self, timeout, cell=None):
        self.timed_out.add(self.current_cell)
        return await super()._async_handle_timeout(timeout, cell)


def kernel_spec_dir(policy: dict, environment: dict[str, str]) -> Path:
    """A folder holding the sandbox kernel's spec, with the policy in its environment."""
    folder = Path(tempfile.mkdtemp(prefix="llmcourse-kernel-"))
    spec = folder / "kernels" / KERNEL_NAME
    spec.mkdir(parents=True)
    (spec / "kernel.json").write_text(json.dumps({
        "argv": [sys.executable, "-m", "llmcourse.course.sandbox", "-f", "{connection_file}"],
        "display_name": "llmcourse grading sandbox", "language": "python",
        "env": {POLICY_ENV: json.dumps(policy), **environment},
    }), encoding="utf-8")
    return folder


def execute(notebook, workdir: Path, limits: Limits, protected_paths=(), blocked_modules=()) -> list[CellEvent]:
    """Run every code cell of `notebook` (in place) in the sandbox kernel, with cwd `workdir`."""
    from jupyter_client import AsyncKernelManager
    from jupyter_client.kernelspec import KernelSpecManager

    code_cells = [i for i, c in enumerate(notebook.cells) if c.cell_type == "code"]
    policy = limits.policy(len(code_cells), protected_paths, blocked_modules)
    spec_dir = kernel_spec_dir(policy, limits.environment())
    events: list[CellEvent] = []
    try:
        specs = KernelSpecManager(kernel_dirs=[str(spec_dir / "kernels")])
        manager = AsyncKernelManager(kernel_name=KERNEL_NAME, kernel_spec_manager=specs)
        client = LimitedClient(notebook, km=manager, kernel_name=KERNEL_NAME, timeout=limits.cell_timeout,
                               allow_errors=True, interrupt_on_timeout=True, record_timing=False,
                               error_on_timeout={"ename": "CellTimeoutError", "evalue": "", "traceback": []},
                               output_bytes=limits.output_bytes, resources={"metadata": {"path": str(workdir)}})
        asyncio.run(_run(client, notebook, code_cells, limits, events))
    finally:
        shutil.rmtree(spec_dir, ignore_errors=True)
    return events


async def _run(client: LimitedClient, notebook, code_cells, limits: Limits, events: list[CellEvent]) -> None:
    done: list[int] = []  # the code cells whose run is over
    try:
        async with client.async_setup_kernel(stderr=subprocess.DEVNULL, stdout=subprocess.DEVNULL):
            await _run_cells(client, notebook, code_cells, limits, events, done)
    except RuntimeError as error:  # the kernel did not start, or could not be talked to any more
        reason = (f"the grading kernel did not start: {error}" if not done
                  else f"the grader lost the kernel: {error}")
        for index in code_cells:
            if index not in done:
                notebook.cells[index].outputs = [error_output("NotRun", f"not run: {reason}")]
                events.append(CellEvent(index, "not-run" if done else "died", reason))


async def _run_cells(client: LimitedClient, notebook, code_cells, limits: Limits, events: list[CellEvent],
                     done: list[int]) -> None:
    stopped = None  # why the kernel is gone, once it is
    for index in code_cells:
        cell = notebook.cells[index]
        done.append(index)
        if stopped is not None:
            cell.outputs = [error_output("NotRun", f"not run: {stopped}")]
            events.append(CellEvent(index, "not-run", stopped))
            continue
        client.current_cell = index
        try:
            await client.async_execute_cell(cell, index, store_history=True)
        except (DeadKernelError, CellTimeoutError, RuntimeError) as error:
            reason = dead_kernel_reason(client, error)
            cell.outputs.append(error_output("KernelDied", reason))
            events.append(CellEvent(index, "died", reason))
            stopped = f"the kernel died in an earlier cell (cell {index}: {reason})"
            continue
        if index in client.timed_out:
            message = f"this cell ran longer than the limit of {limits.cell_timeout:g} s and was interrupted"
            if not any(o.output_type == "error" and o.ename == "KeyboardInterrupt" for o in cell.outputs):
                cell.outputs.append(error_output("CellTimeoutError", message))
            events.append(CellEvent(index, "timeout", message))
            if not await responsive(client):
                stopped = f"cell {index} could not be interrupted after its time limit, so the kernel was stopped"
                await client.km.shutdown_kernel(now=True)
        record_cell_findings(client, cell, index, events)


async def responsive(client: LimitedClient) -> bool:
    """Whether the kernel answers a trivial request after an interrupt."""
    probe = nbformat.v4.new_code_cell("pass")
    saved, client.timeout = client.timeout, PROBE_TIMEOUT
    before = set(client.timed_out)
    client.current_cell = -2
    try:
        await client.async_execute_cell(probe, -2, store_history=False)
    except (DeadKernelError, CellTimeoutError, RuntimeError):
        return False
    finally:
        client.timeout = saved
    return -2 not in client.timed_out - before


def dead_kernel_reason(client: LimitedClient, error: Exception) -> str:
    code = None
    try:
        code = client.km.provisioner.process.returncode  # type: ignore[union-attr]
    except AttributeError:
        pass
    if code is not None and code < 0:
        import signal

        name = signal.Signals(-code).name if -code in signal.Signals._value2member_map_ else str(-code)
        cause = {"SIGSEGV": "a segmentation fault", "SIGKILL": "killed (out of memory?)",
                 "SIGABRT": "an abort"}.get(name, f"signal {name}")
        return f"the kernel died while running this cell ({cause})"
    if code is not None:
        return f"the kernel exited while running this cell (exit status {code}, e.g. os._exit or sys.exit in C code)"
    return f"the kernel died while running this cell ({type(error).__name__}: {error})"


def record_cell_findings(client: LimitedClient, cell, index: int, events: list[CellEvent]) -> None:
    dropped = client.dropped.get(index)
    if dropped:
        note = (f"[output truncated: {dropped:,} bytes over the limit of {client.output_bytes:,} "
                "per cell were dropped]\n")
        # stdout: nbgrader gives zero to a grade cell with any stderr output
        cell.outputs.append(nbformat.v4.new_output("stream", name="stdout", text=note))
        events.append(CellEvent(index, "truncated", note.strip()))
    for output in cell.outputs:
        if output.output_type == "error" and str(output.get("evalue", "")).startswith(REFUSED):
            events.append(CellEvent(index, "integrity", f"{output.ename}: {output.evalue}"))
        text = output.get("text", "") if output.output_type == "stream" else ""
        for line in text.splitlines():
            if line.startswith(INTEGRITY_MARKER):
                events.append(CellEvent(index, "integrity", line[len(INTEGRITY_MARKER):].strip()))
