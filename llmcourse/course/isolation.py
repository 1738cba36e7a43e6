"""The operating-system boundary around every grading kernel: bubblewrap (`bwrap`).

Each submission's kernel runs in namespaces of its own, built by bubblewrap, the sandbox that
Flatpak uses (Debian package `bubblewrap`):

* a **mount namespace** that binds only what the kernel needs, read-only: the system's
  programs and libraries (`/usr` and the few files of `/etc` that the dynamic loader and the
  C library read), the Python installation and the virtual environment, and the course's
  package `llmcourse/` *without* the reference modules of the chapter being graded (and
  their byte-compiled copies). The course folder itself is never bound, so `solutions/`,
  the gradebook and its backup, `submitted/`, `autograded/`, `feedback/`, `grading/`, the
  instructor's raw submissions and every other student's files do not exist inside;
* three private, writable folders, removed when the kernel is gone: its working folder,
  its HOME (IPython and Jupyter start-up files go there) and its /tmp, plus one folder for
  its connection file and sockets;
* a **PID namespace** (it sees only its own processes in /proc, and cannot signal the
  grader or another kernel), no **network** at all (the grader talks to it over ZeroMQ's
  `ipc` transport: Unix sockets in the bound folder), its own IPC and UTS namespaces;
* a **user namespace** with no capabilities and no way to make another one, so it can
  neither remount what is read-only nor unmount what hides the rest;
* a cleared environment, a new session (no terminal to inject keystrokes into), and
  `--die-with-parent`: if the grader dies, so does every kernel.

The Python audit hook and tamper watch in `sandbox.py` still run inside, as a second line.
Where bubblewrap is missing or does not work (macOS, a container without user namespaces),
`available()` says why; `./course check` then runs unisolated and says so, and
`./course grade` refuses unless unisolated grading is asked for explicitly.
"""
from __future__ import annotations

import functools
import json
import os
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from .errors import CourseError

BWRAP = "bwrap"
INSTALL_HINT = ("install bubblewrap (Debian/Ubuntu: `sudo apt-get install bubblewrap`; Fedora: `sudo dnf install "
                "bubblewrap`)")
UNISOLATED_ENV = "LLMCOURSE_UNISOLATED"
"""Set to 1 to grade a class without the operating-system sandbox (the instructor's explicit choice)."""

# How Limits.isolation asks for the sandbox.
AUTO = "auto"  # bubblewrap when it works here, else unisolated (a learner's `check`)
REQUIRED = "required"  # bubblewrap or refuse (`grade`)
OFF = "off"  # no operating-system sandbox (the instructor said so)
MODES = (AUTO, REQUIRED, OFF)

SYSTEM_DIRS = ("/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32")
"""Programs and libraries. On merged-/usr systems all but /usr are symbolic links, recreated as such."""
ETC_FILES = ("ld.so.cache", "ld.so.conf", "ld.so.conf.d", "alternatives", "localtime", "nsswitch.conf", "passwd",
             "group", "hosts", "mime.types", "fonts")
"""What of /etc the dynamic loader, the C library and plotting read; the rest of /etc stays out."""
PROBE_TIMEOUT = 60.0
"""Seconds the one-time check that a sandboxed Python starts may take (a cold disk cache is slow)."""
ENVIRONMENT_PROBE = ("import json, sys, importlib.util; spec = importlib.util.find_spec('llmcourse'); "
                     "print(json.dumps({'prefixes': sorted({sys.prefix, sys.base_prefix, sys.exec_prefix, "
                     "sys.base_exec_prefix}), 'path': sys.path, 'package': list(spec.submodule_search_locations)}))")


class IsolationError(CourseError, RuntimeError):
    """The operating-system sandbox is needed but cannot be used; the message says why and what to do."""


@dataclass(frozen=True)
class PythonLayout:
    """Where the kernel's Python finds itself, its libraries and `llmcourse` (as a fresh interpreter sees it)."""

    prefixes: tuple[Path, ...]
    path: tuple[Path, ...]
    package: Path


@functools.cache
def python_layout() -> PythonLayout:
    """Ask a fresh interpreter (isolated mode: no PYTHON* variables, no user site, no current folder)."""
    done = subprocess.run([sys.executable, "-I", "-c", ENVIRONMENT_PROBE], capture_output=True, text=True,
                          timeout=PROBE_TIMEOUT, check=True)
    found = json.loads(done.stdout)
    return PythonLayout(tuple(Path(p) for p in found["prefixes"]),
                        tuple(Path(p) for p in found["path"] if p), Path(found["package"][0]))


def within(path: Path, folder: Path) -> bool:
    return path == folder or folder in path.parents


def hidden_module_paths(package: Path, blocked_modules) -> list[Path]:
    """The files of the reference modules `blocked_modules` (`llmcourse.x.y`), sources and byte code."""
    hidden = []
    for name in blocked_modules:
        parts = name.split(".")
        if parts[0] != package.name or len(parts) < 2:
            continue
        folder = package.joinpath(*parts[1:-1])
        hidden += [folder / f"{parts[-1]}.py", folder / parts[-1]]  # a module, or a package
        cache = folder / "__pycache__"
        # Naming the module inside its byte-code folder makes that folder bound file by file, as it is now:
        # byte code written there later (by the grader, say) does not appear in a running sandbox.
        hidden.append(cache / parts[-1])
        if cache.is_dir():
            hidden += [p for p in cache.iterdir() if p.name.split(".")[0] == parts[-1]]
    return hidden


@dataclass
class Mounts:
    """bwrap's file-system arguments, in order, and what they expose (to check nothing secret is inside)."""

    args: list[str] = field(default_factory=list)
    exposed: list[Path] = field(default_factory=list)

    def ro_bind(self, path: Path) -> None:
        self.args += ["--ro-bind", str(path), str(path)]
        self.exposed.append(path)

    def bind(self, path: Path) -> None:
        self.args += ["--bind", str(path), str(path)]
        self.exposed.append(path)

    def link_or_bind(self, path: Path) -> None:
        """A symbolic link is recreated (not followed: its target may be somewhere private)."""
        if path.is_symlink():
            self.args += ["--symlink", os.readlink(path), str(path)]
        elif path.exists():
            self.ro_bind(path)

    def filtered(self, folder: Path, hidden: list[Path]) -> None:
        """`folder` read-only without the `hidden` paths: an empty read-only tmpfs with the rest bound into it."""
        if not any(within(h, folder) for h in hidden):
            self.ro_bind(folder)
            return
        self.args += ["--tmpfs", str(folder)]
        for child in sorted(folder.iterdir()):
            if child in hidden:
                continue
            if child.is_dir() and not child.is_symlink():
                self.filtered(child, hidden)
            else:
                self.link_or_bind(child)
        self.args += ["--remount-ro", str(folder)]


def system_mounts() -> Mounts:
    mounts = Mounts()
    for name in SYSTEM_DIRS:
        mounts.link_or_bind(Path(name))
    for name in ETC_FILES:
        mounts.link_or_bind(Path("/etc") / name)
    return mounts


def python_mounts(mounts: Mounts, layout: PythonLayout, hidden: list[Path]) -> None:
    """The Python installation, the environment, other sys.path entries, and the course package, filtered."""
    installed = any(within(layout.package, p) for p in layout.prefixes)  # else a source checkout (editable)
    candidates = {Path(c) for folder in [*layout.prefixes, *layout.path]
                  for c in (folder, os.path.realpath(folder)) if Path(c).exists()}
    bound = [Path(d) for d in SYSTEM_DIRS]
    for folder in sorted(candidates, key=lambda p: len(p.parts)):  # a folder before anything inside it
        if any(within(folder, b) for b in bound):
            continue
        if not installed and within(layout.package.parent, folder):
            continue  # a folder that holds the course: only its package is bound, below
        mounts.filtered(folder, hidden)  # an installed package lies inside the environment: filtered there
        bound.append(folder)
    if not any(within(layout.package, b) for b in bound):
        mounts.filtered(layout.package, hidden)
        bound.append(layout.package)
    for interpreter in (Path(sys.executable), Path(os.path.realpath(sys.executable))):
        if not any(within(interpreter, b) for b in bound):
            raise IsolationError(f"the Python interpreter {interpreter} is outside its own installation "
                                 f"({', '.join(map(str, layout.prefixes))}); the sandbox cannot bind it")


def check_hidden(mounts: Mounts, secrets) -> None:
    """Refuse to start a kernel whose view would include a secret path (a bound folder holding it)."""
    for secret in secrets:
        secret = Path(os.path.realpath(secret))
        for exposed in mounts.exposed:
            if within(secret, Path(os.path.realpath(exposed))):
                raise IsolationError(f"the grading sandbox would expose {secret} (it lies inside {exposed}, "
                                     "which the kernel needs); move the course out of the Python environment")


SOCKET_PATH_MAX = 100
"""Longest path a Unix socket may have, with room to spare (the kernel's limit is 107 bytes)."""


@dataclass(frozen=True)
class PrivateFolders:
    """A kernel's own folders on the host, under `base` (the sockets' folder may be elsewhere), removed with it."""

    base: Path
    work: Path
    home: Path
    tmp: Path
    run: Path  # connection file and ipc sockets

    @classmethod
    def create(cls, work: Path | None = None) -> PrivateFolders:
        base = Path(tempfile.mkdtemp(prefix="llmcourse-kernel-"))
        run = base / "run"
        if len(str(run / "kernel-ipc-00000")) > SOCKET_PATH_MAX:  # a deep temporary folder: sockets go short
            run = Path(tempfile.mkdtemp(prefix="llmcourse-ipc-", dir="/tmp"))
        folders = cls(base, Path(work) if work is not None else base / "work", base / "home", base / "tmp", run)
        for folder in (folders.work, folders.home, folders.tmp, folders.run):
            folder.mkdir(exist_ok=True)
        folders.run.chmod(0o700)  # the connection file holds the kernel's key
        return folders

    @property
    def sockets(self) -> str:
        """The ipc transport's address: the sockets are this path with -1, -2, ... appended."""
        return str(self.run / "kernel-ipc")

    def remove(self) -> None:
        remove_tree(self.run)
        remove_tree(self.base)


def remove_tree(folder: Path) -> None:
    """Delete a folder a kernel wrote to, whatever permissions it left on what it made."""
    def make_writable(function, path, _error):
        try:
            os.chmod(os.path.dirname(path), 0o700)
            os.chmod(path, 0o700)
        except OSError:
            pass
        try:
            function(path)
        except OSError:
            pass

    if folder.exists():
        shutil.rmtree(folder, onerror=make_writable)


def bwrap_command(folders: PrivateFolders, command: list[str], environment: dict[str, str],
                  blocked_modules=(), secrets=(), allow_network: bool = False) -> list[str]:
    """The bwrap command line that runs `command` isolated, in `folders.work`."""
    layout = python_layout()
    hidden = hidden_module_paths(layout.package, blocked_modules)
    mounts = system_mounts()
    python_mounts(mounts, layout, hidden)
    check_hidden(mounts, [*secrets, *hidden])
    # The private /tmp goes first: the environment, the course and the private folders may all lie
    # under the host's /tmp, and each later bind shows through it.
    private_tmp = ["--bind", str(folders.tmp), "/tmp"]
    private = Mounts()
    for folder in (folders.home, folders.work, folders.run):
        private.bind(folder)
    namespaces = ["--unshare-user", "--disable-userns", "--unshare-pid", "--unshare-ipc", "--unshare-uts",
                  "--unshare-cgroup-try", "--cap-drop", "ALL"]
    if not allow_network:
        namespaces.append("--unshare-net")
    variables = {"PATH": f"{Path(sys.executable).parent}:/usr/bin:/bin", "HOME": str(folders.home),
                 "TMPDIR": "/tmp", "LANG": "C.UTF-8", **environment}
    settings = [arg for name, value in variables.items() for arg in ("--setenv", name, value)]
    return [shutil.which(BWRAP) or BWRAP, *namespaces, "--die-with-parent", "--new-session", *private_tmp,
            *mounts.args, "--dev", "/dev", "--proc", "/proc", *private.args,
            "--clearenv", *settings, "--chdir", str(folders.work), "--", *command]


@functools.cache
def unavailable() -> str | None:
    """None when a sandboxed Python starts here; otherwise why not (for the message)."""
    if shutil.which(BWRAP) is None:
        return f"bubblewrap ({BWRAP}) is not installed: {INSTALL_HINT}"
    folders = PrivateFolders.create()
    try:
        command = bwrap_command(folders, [sys.executable, "-c", "import llmcourse.course.sandbox"], {})
        done = subprocess.run(command, capture_output=True, text=True, timeout=PROBE_TIMEOUT)
    except (IsolationError, subprocess.SubprocessError, OSError) as error:
        return f"bubblewrap cannot run the grading kernel here: {error}"
    finally:
        folders.remove()
    if done.returncode != 0:
        last = (done.stderr.strip().splitlines() or ["no message"])[-1]
        return f"bubblewrap is installed but does not work here ({last}); user namespaces may be disabled"
    return None


def use_isolation(mode: str) -> bool:
    """Whether to run kernels in the sandbox for `mode` (AUTO, REQUIRED or OFF); REQUIRED raises without it."""
    if mode not in MODES:
        raise CourseError(f"isolation must be one of {', '.join(MODES)}, not {mode!r}")
    if mode == OFF:
        return False
    reason = unavailable()
    if reason is None:
        return True
    if mode == REQUIRED:
        raise IsolationError(f"grading needs an operating-system sandbox for each submission, and {reason}. "
                             f"To grade anyway, unisolated (a submission can then harm the grader, other "
                             f"students and your files), set {UNISOLATED_ENV}=1.")
    return False


def describe(isolated: bool, mode: str) -> str:
    """One line for a report: which mode a notebook ran in."""
    if isolated:
        return "isolated (bubblewrap: no network, private files and processes)"
    if mode == OFF:
        return "UNISOLATED (asked for): submitted code ran with the grader's access to files, processes and network"
    return f"unisolated ({unavailable()})"
