"""The kernel that runs a submission: resource limits, a file/process/network policy, tamper checks.

`python -m llmcourse.course.sandbox -f CONNECTION_FILE` starts an ordinary IPython kernel after

* resource limits (`setrlimit`): address space (memory), file size, CPU seconds, no core
  dumps, and the number of processes (ignored by Linux for root);
* an audit hook (PEP 578, cannot be removed from Python once added) that refuses: opening,
  listing, renaming or deleting anything under the protected paths (the gradebook, the
  solutions, other submissions); starting programs or forking; network connections other than
  loopback; changing resource limits (its own or, with `prlimit`, another process's);
  signalling any process but itself; setting attributes on classes of torch, numpy, the
  builtins and the grader itself (e.g. `torch.Tensor.__eq__ = ...`);
* a check after every cell that the functions tests rely on (`torch.allclose`,
  `torch.testing.assert_close`, `numpy.testing.*`, `isinstance`, ...) are still the originals.
  A replaced one is put back, and the cell's output gets a line starting with
  `INTEGRITY_MARKER`, which the grader turns into a zero for the exercise.

This is defence in depth inside one Python process, not a security boundary: native code
(ctypes, a compiled extension) or a path the hook cannot resolve (`dir_fd=`) gets around it.
The boundary is the operating system's: the grader starts this kernel inside bubblewrap
(isolation.py), where none of the grader's files, processes or network exist.

The policy comes from the environment variable `LLMCOURSE_SANDBOX` (JSON).
"""
from __future__ import annotations

import json
import os
import sys

POLICY_ENV = "LLMCOURSE_SANDBOX"
INTEGRITY_MARKER = "LLMCOURSE-INTEGRITY:"
REFUSED = "grading: "  # how every refusal of the policy starts; the grader zeroes the exercise

# Functions and classes a grade cell relies on; checked after every cell.
WATCHED = {
    "builtins": ("isinstance", "issubclass", "type", "len", "abs", "max", "min", "sum", "all", "any", "float",
                 "int", "list", "tuple", "dict", "set", "str", "range", "zip", "sorted", "round", "iter", "next",
                 "getattr", "hasattr", "repr", "AssertionError", "Exception", "print"),
    "math": ("isclose", "isfinite", "isnan"),
    "torch": ("allclose", "isclose", "equal", "is_tensor", "abs", "max", "where", "zeros_like", "float64"),
    "torch.testing": ("assert_close",),
    "numpy": ("allclose", "isclose", "array_equal"),
    "numpy.testing": ("assert_allclose", "assert_array_equal", "assert_equal", "assert_almost_equal"),
    "llmcourse.course.checks": ("expect_tensor", "expect_close", "expect_grads", "check_export_cells",
                                "attention_tripwires", "forbidden_names_in"),
    # Class attributes (some classes, like torch.Tensor, do not report attribute changes to audit hooks)
    "torch.Tensor": ("__eq__", "__ne__", "__bool__", "__sub__", "__abs__", "abs", "max", "all", "any", "item",
                     "tolist", "to", "detach", "double", "isnan", "isfinite", "where", "allclose", "equal"),
    "torch.nn.Module": ("__eq__", "__call__", "named_parameters", "parameters", "state_dict", "load_state_dict"),
    "numpy.ndarray": ("__eq__",),
    "llmcourse.course.oracles": ("STAND_INS",),
    "llmcourse.course.tokenizer_oracles": ("naive_learn_merges", "naive_pair_counts", "merge_by_string_replace"),
}
SHELL_LISTS = ("input_transformers_post", "input_transformers_cleanup", "ast_transformers")
SHELL_METHODS = ("showtraceback", "showsyntaxerror", "run_cell", "run_cell_async", "transform_cell")
"""The parts of the IPython shell that decide which code a cell runs and how its errors are
reported: a notebook that changes them could skip or silence the tests."""
MISSING = object()
# Classes whose attributes a submission may not set (the tests compare through them).
PROTECTED_CLASS_MODULES = ("builtins", "torch", "numpy", "llmcourse.course", "nbgrader", "IPython", "ipykernel",
                           "math", "unittest", "pytest")
FILE_EVENTS = {"open", "os.listdir", "os.scandir", "os.remove", "os.unlink", "os.rename", "os.replace", "os.rmdir",
               "os.mkdir", "os.truncate", "os.chmod", "os.chown", "os.link", "os.symlink", "shutil.rmtree",
               "shutil.copyfile", "shutil.copytree", "shutil.move", "glob.glob", "os.utime", "os.chdir"}
PROCESS_EVENTS = {"subprocess.Popen", "os.system", "os.exec", "os.posix_spawn", "os.spawn", "os.fork", "os.forkpty",
                  "pty.spawn", "os.startfile"}
LOOPBACK = ("127.", "::1", "localhost", "0.0.0.0")


def apply_limits(policy: dict) -> None:
    import resource

    def cap(kind, value):
        if value:
            soft, hard = resource.getrlimit(kind)
            value = value if hard == resource.RLIM_INFINITY else min(value, hard)
            resource.setrlimit(kind, (value, value))

    cap(resource.RLIMIT_AS, policy.get("memory_bytes"))
    cap(resource.RLIMIT_FSIZE, policy.get("file_bytes"))
    cap(resource.RLIMIT_CPU, policy.get("cpu_seconds"))
    cap(resource.RLIMIT_NPROC, policy.get("processes"))
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))  # a segfault leaves no core file behind


def _paths_of(event: str, args) -> list[str]:
    paths = []
    for arg in args[:2] if event in {"os.rename", "os.replace", "os.link", "os.symlink", "shutil.copyfile",
                                     "shutil.copytree", "shutil.move"} else args[:1]:
        if isinstance(arg, (str, bytes, os.PathLike)):
            try:
                paths.append(os.path.realpath(os.fsdecode(arg)))
            except (TypeError, ValueError):
                pass
    return paths


def from_submission() -> bool:
    """True when the code that triggered the event is the notebook's (its globals are `__main__`)."""
    frame = sys._getframe(2)
    while frame is not None and frame.f_code.co_filename == __file__:
        frame = frame.f_back
    return frame is not None and frame.f_globals.get("__name__") == "__main__"


class BlockModules:
    """A meta-path finder that refuses to import the reference solution of the chapter being graded."""

    def __init__(self, names):
        self.names = frozenset(names)

    def find_spec(self, fullname, path=None, target=None):
        if fullname in self.names:
            raise ImportError(f"{REFUSED}importing {fullname} (the reference solution of this chapter) "
                              "is not allowed; write it yourself")
        return None


def signals_itself(event: str, target: int) -> bool:
    """Whether a kill targets the kernel itself (ipykernel interrupts itself so) or its own process group."""
    if event == "os.kill":
        return target in (0, os.getpid())
    return target in (0, os.getpgrp())


def make_audit_hook(policy: dict):
    protected = tuple(os.path.realpath(p) for p in policy.get("protected_paths", ()))
    allow_network = policy.get("allow_network", False)

    def is_protected(path: str) -> bool:
        return any(path == p or path.startswith(p + os.sep) for p in protected)

    def hook(event, args):
        if event in FILE_EVENTS:
            for path in _paths_of(event, args):
                if is_protected(path):
                    raise PermissionError(f"{REFUSED}access to {path} is not allowed (it belongs to the grader "
                                          "or to other students)")
        elif event in PROCESS_EVENTS or event.startswith("os.spawn") or event.startswith("os.exec"):
            raise PermissionError(f"{REFUSED}starting programs or processes ({event}) is not allowed")
        elif event == "resource.setrlimit" or (event == "resource.prlimit" and len(args) > 2 and args[2] is not None):
            raise PermissionError(REFUSED + "changing resource limits is not allowed")
        elif event in {"os.kill", "os.killpg"} and not signals_itself(event, args[0]):
            raise PermissionError(f"{REFUSED}signalling other processes ({event} {args[0]}) is not allowed")
        elif event in {"socket.connect", "socket.sendto", "socket.getaddrinfo"} and not allow_network:
            address = args[1] if event != "socket.getaddrinfo" else args[0]
            host = address[0] if isinstance(address, tuple) else address
            if isinstance(host, bytes):
                host = host.decode(errors="replace")
            if isinstance(host, str) and host and not host.startswith(LOOPBACK) and not host.startswith("/"):
                raise PermissionError(f"{REFUSED}network access ({host}) is not allowed")
        elif event == "object.__setattr__":
            target = args[0]
            module = getattr(target, "__module__", "") or ""
            if isinstance(target, type) and module.startswith(PROTECTED_CLASS_MODULES) and from_submission():
                raise PermissionError(f"{REFUSED}setting {target.__name__}.{args[1]} is not allowed "
                                      "(tests rely on it)")

    return hook


def resolve(path: str):
    """The object a dotted path names among the imported modules, or None."""
    if path in sys.modules:
        return sys.modules[path]
    parent, _, name = path.rpartition(".")
    owner = resolve(parent) if parent else None
    return getattr(owner, name, None) if owner is not None else None


def current(owner, name):
    """A class's own attribute (not an inherited one), or any object's attribute."""
    if isinstance(owner, type):
        return owner.__dict__.get(name, MISSING)
    return getattr(owner, name, MISSING)


def snapshot(prefix: str | None = None) -> dict:
    """{(path, name): object} for the watched attributes of what is imported now.

    With `prefix`, only the paths under it (a module that just finished importing). A module
    attribute that does not exist yet is left out, to be taken when it does.
    """
    saved = {}
    for path, names in WATCHED.items():
        if prefix is not None and path != prefix and not path.startswith(prefix + "."):
            continue
        owner = resolve(path)
        if owner is None:
            continue
        for name in names:
            value = current(owner, name)
            if value is not MISSING or isinstance(owner, type):
                saved[(path, name)] = value
    return saved


def defined_by_notebook(function) -> bool:
    """Whether a callable was defined by the notebook's own code (not by a library or this module,
    which runs as __main__ too)."""
    function = getattr(function, "__func__", function)
    code = getattr(function, "__code__", None)
    if code is None:  # a callable object: its class's __call__
        code = getattr(type(function).__dict__.get("__call__"), "__code__", None)
    if code is None or code.co_filename == __file__:
        return False
    return "__main__" in (getattr(function, "__module__", None), type(function).__module__)


class Watch:
    """After each cell: put back any watched function, module or part of the shell a cell
    replaced, and say so in the output."""

    def __init__(self, shell=None):
        self.saved = snapshot()
        self.modules = {path: sys.modules[path] for path in WATCHED if path in sys.modules}
        self.shell = shell
        self.shell_lists = {name: list(getattr(shell, name, [])) for name in SHELL_LISTS} if shell else {}
        self.shell_methods = {name: shell.__dict__.get(name, MISSING) for name in SHELL_METHODS} if shell else {}

    def add(self, prefix: str) -> None:
        for key, value in snapshot(prefix).items():
            self.saved.setdefault(key, value)
        for path in WATCHED:
            if (path == prefix or path.startswith(prefix + ".")) and path in sys.modules:
                self.modules.setdefault(path, sys.modules[path])

    def shell_changes(self) -> list[str]:
        """Put the shell's hooks back as they were; what had changed."""
        shell, changed = self.shell, []
        if shell is None:
            return changed
        for name, original in self.shell_lists.items():
            now = getattr(shell, name, None)
            if not isinstance(now, list) or now != original:
                changed.append(f"the shell's {name}")
                setattr(shell, name, list(original))
        for name, original in self.shell_methods.items():
            if shell.__dict__.get(name, MISSING) is not original:
                changed.append(f"the shell's {name}")
                if original is MISSING:
                    shell.__dict__.pop(name, None)
                else:
                    shell.__dict__[name] = original
        if getattr(shell, "custom_exceptions", ()) != ():
            changed.append("the shell's custom exception handler")
            shell.custom_exceptions = ()
        for event, callbacks in getattr(getattr(shell, "events", None), "callbacks", {}).items():
            planted = [c for c in callbacks if defined_by_notebook(c)]
            for callback in planted:
                callbacks.remove(callback)
            if planted:
                changed.append(f"the shell's {event} callbacks")
        return changed

    def after_cell(self, result=None):
        changed = self.shell_changes()
        for path, module in self.modules.items():
            if sys.modules.get(path) is not module:
                changed.append(f"sys.modules[{path!r}]")
                sys.modules[path] = module
        for (path, name), original in list(self.saved.items()):
            owner = resolve(path)
            if owner is None or current(owner, name) is original:
                continue
            changed.append(f"{path}.{name}")
            try:
                if original is MISSING:
                    delattr(owner, name)
                else:
                    setattr(owner, name, original)
            except (AttributeError, TypeError):
                pass
        if changed:
            sys.stderr.write(f"{INTEGRITY_MARKER} this cell replaced {', '.join(changed)}; "
                             "the originals were put back and this exercise scores zero\n")
            sys.stderr.flush()


class WatchImports:
    """Snapshot a watched module the moment its import finishes, before any cell can change it."""

    def __init__(self, watch: Watch):
        self.watch = watch
        self.triggers = set(WATCHED) | {path.split(".")[0] for path in WATCHED}

    def find_spec(self, fullname, path=None, target=None):
        if fullname not in self.triggers:
            return None
        spec = None
        for finder in sys.meta_path:  # whoever would have found it (plain paths, editable installs)
            if finder is self or isinstance(finder, (WatchImports, BlockModules)) or not hasattr(finder, "find_spec"):
                continue
            spec = finder.find_spec(fullname, path, target)
            if spec is not None:
                break
        if spec is None or spec.loader is None or not hasattr(spec.loader, "exec_module"):
            return spec
        loader, watch = spec.loader, self.watch
        original_exec = loader.exec_module

        def exec_module(module):
            original_exec(module)
            watch.add(fullname)  # complete now: everything under it is the original

        loader.exec_module = exec_module
        return spec


def install_watch(shell) -> None:
    watch = Watch(shell)
    sys.meta_path.insert(0, WatchImports(watch))
    shell.events.register("post_run_cell", watch.after_cell)


def main() -> None:
    policy = json.loads(os.environ.get(POLICY_ENV, "{}"))
    apply_limits(policy)
    import math  # noqa: F401  (watched; imported now so that the originals are the real ones)

    from ipykernel.kernelapp import IPKernelApp

    for name in policy.get("blocked_modules", ()):
        sys.modules.pop(name, None)
    sys.meta_path.insert(0, BlockModules(policy.get("blocked_modules", ())))
    sys.addaudithook(make_audit_hook(policy))
    app = IPKernelApp.instance()
    app.initialize(sys.argv[1:])
    install_watch(app.shell)
    app.start()


if __name__ == "__main__":
    main()
