"""Peak memory of a block of PyTorch code, on any device, the CPU included (chapter 6).

On the CPU, PyTorch has no counterpart of `torch.cuda.max_memory_allocated`, and the usual
Python tools do not help: `tracemalloc` sees only Python's own allocations (tensors are
allocated in C++), `torch.profiler` adds allocations up per operator instead of following
what is alive, and the process's resident memory only ever grows. `PeakMemory` follows the
tensors themselves: it watches every operator PyTorch runs inside the block, adds up the
storages those operators create, and takes them off again the moment they are freed.

    with PeakMemory() as memory:
        out = scaled_dot_product_attention(q, k, v)
    memory.peak      # bytes: the most that was alive at once, above what was alive before the block
    memory.current   # bytes still alive when the block ended (here, at least `out`)

What it sees: the storage of every tensor a PyTorch operator returns inside the block, in the
forward pass and in `backward()` (autograd's saved tensors and the gradients are such tensors),
counted once however many views share it, at its `nbytes`.

What it does not see: memory inside one operator that is gone when it returns (a matmul's
workspace, the temporaries of a fused kernel), the caching allocator's reserved but unused
memory, Python objects, and memory that did not come from a PyTorch operator inside the block
(tensors alive at entry, `torch.from_numpy`). A storage alive at entry that an operator later
enlarges (an `out=` argument) is not counted either. The peak is taken between operators, so
it is a lower bound of what the allocator really held; on CUDA, `cuda_peak_allocated` gives the
allocator's own count to compare with.
"""
from __future__ import annotations

import threading
import weakref
from collections.abc import Callable
from typing import Any

import torch
from torch.utils._python_dispatch import TorchDispatchMode

MIB = 2**20
"""Bytes in a mebibyte: the unit the benchmarks and the book print memory in."""

ALIASES_A_FRESH_TENSOR = {torch.ops.aten.lift_fresh.default}
"""Operators whose output is their input, and that input was made just before outside the dispatcher:
`torch.tensor(data)` builds its tensor out of sight, then passes it through `lift_fresh`."""


def storages_of(tree: Any, found: dict[int, torch.UntypedStorage] | None = None) -> dict[int, torch.UntypedStorage]:
    """The distinct storages of the strided tensors in a nest of lists, tuples and dicts, by identity.

    PyTorch keeps one Python object per storage for as long as the storage lives, so two views
    of one tensor give the same object, and its id names the storage.
    """
    found = {} if found is None else found
    if isinstance(tree, torch.Tensor):
        if tree.layout == torch.strided and tree.device.type != "meta":
            storage = tree.untyped_storage()
            found[id(storage)] = storage
    elif isinstance(tree, (list, tuple)):
        for item in tree:
            storages_of(item, found)
    elif isinstance(tree, dict):
        for item in tree.values():
            storages_of(item, found)
    return found


class PeakMemory(TorchDispatchMode):
    """Counts the bytes of the tensor storages created inside a `with` block and alive at each moment.

    peak, current: bytes, all devices together (see the module's docstring for what is counted).
    peak_by_device, current_by_device: the same per device, keyed "cpu", "cuda:0", ...
    Both peaks are measured above what was alive at entry: a block that allocates nothing has peak 0.
    After the block ends the counts are frozen; use a new PeakMemory for each measurement.
    """

    def __init__(self) -> None:
        super().__init__()
        self.current = 0
        self.peak = 0
        self.current_by_device: dict[str, int] = {}
        self.peak_by_device: dict[str, int] = {}
        # id(storage) -> (its finalizer, the bytes counted for it, its device)
        self._live: dict[int, tuple[weakref.finalize, int, str]] = {}
        # A storage may be freed on another thread (CUDA's backward), or by the garbage collector
        # in the middle of our own bookkeeping: a re-entrant lock serialises both.
        self._lock = threading.RLock()

    def __enter__(self) -> PeakMemory:
        if self._live or self.peak:
            raise RuntimeError("this PeakMemory has already measured a block: make a new one for each block")
        return super().__enter__()

    def __exit__(self, *exc_info) -> None:
        super().__exit__(*exc_info)
        with self._lock:
            for finalizer, _, _ in self._live.values():
                finalizer.detach()  # frozen: later frees no longer change the counts

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        existing = set() if func in ALIASES_A_FRESH_TENSOR else set(storages_of((args, kwargs)))
        out = func(*args, **kwargs)
        with self._lock:
            for key, storage in storages_of(out).items():
                if key in self._live:
                    self._resized(key, storage.nbytes())
                elif key not in existing:
                    self._add(key, storage)
        return out

    def _add(self, key: int, storage: torch.UntypedStorage) -> None:
        device = str(storage.device)
        nbytes = storage.nbytes()
        finalizer = weakref.finalize(storage, self._free, key)
        self._live[key] = (finalizer, nbytes, device)
        self._change(device, nbytes)

    def _resized(self, key: int, nbytes: int) -> None:
        """An operator grew or shrank a storage created in the block (`resize_`, an `out=` argument)."""
        finalizer, counted, device = self._live[key]
        if nbytes != counted:
            self._live[key] = (finalizer, nbytes, device)
            self._change(device, nbytes - counted)

    def _free(self, key: int) -> None:
        with self._lock:
            _, counted, device = self._live.pop(key)
            self._change(device, -counted)

    def _change(self, device: str, nbytes: int) -> None:
        self.current += nbytes
        self.peak = max(self.peak, self.current)
        now = self.current_by_device.get(device, 0) + nbytes
        self.current_by_device[device] = now
        self.peak_by_device[device] = max(self.peak_by_device.get(device, 0), now)


def measure_peak(fn: Callable, *args, **kwargs) -> tuple[Any, int]:
    """Run fn(*args, **kwargs) under PeakMemory: (its result, the peak bytes of tensors it created)."""
    with PeakMemory() as memory:
        result = fn(*args, **kwargs)
    return result, memory.peak


def cuda_peak_allocated(fn: Callable, *args, **kwargs) -> tuple[Any, int]:
    """The CUDA caching allocator's own count, to check PeakMemory against on a GPU.

    Runs fn(*args, **kwargs) on the current CUDA device: (its result, torch.cuda.max_memory_allocated
    during the call minus what was allocated before it). The allocator rounds every block up to a
    multiple of 512 bytes, and counts workspaces (cuBLAS's, on a handle's first matmul) that
    PeakMemory does not see: warm up first when comparing the two.
    """
    if not torch.cuda.is_available():
        raise RuntimeError("cuda_peak_allocated needs CUDA; on the CPU use measure_peak")
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    before = torch.cuda.memory_allocated()
    result = fn(*args, **kwargs)
    torch.cuda.synchronize()
    return result, torch.cuda.max_memory_allocated() - before
