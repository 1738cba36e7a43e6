"""Checks the graded notebook cells use: tensor comparisons and forbidden APIs.

Every failure says what was expected and what came back (type, shape, dtype, max error), so
a learner can act on it. The comparisons avoid `torch.allclose` and `torch.testing`, which a
submission could have replaced, and check the type first, so an object whose `__eq__` always
answers yes does not pass.
"""
from __future__ import annotations

import ast
import contextlib
import math

import torch


def expect_tensor(actual, expected: torch.Tensor, name: str = "result", *,
                  atol: float = 1e-5, rtol: float = 1e-4, check_dtype: bool = True) -> None:
    """Raise AssertionError unless `actual` is a tensor like `expected`, equal within tolerance.

    Elementwise, |actual - expected| <= atol + rtol * |expected|; NaN and infinities must
    sit in the same places.
    """
    if not isinstance(actual, torch.Tensor) or type(actual).__eq__ is not torch.Tensor.__eq__:
        raise AssertionError(f"{name} should be a torch.Tensor, got {type(actual).__name__}")
    if tuple(actual.shape) != tuple(expected.shape):
        raise AssertionError(f"{name} should have shape {tuple(expected.shape)}, got {tuple(actual.shape)}")
    if check_dtype and actual.dtype != expected.dtype:
        raise AssertionError(f"{name} should have dtype {expected.dtype}, got {actual.dtype}")
    if actual.device != expected.device:
        raise AssertionError(f"{name} should be on {expected.device}, got {actual.device}")
    a = actual.detach().to("cpu", torch.float64)
    e = expected.detach().to("cpu", torch.float64)
    same_nonfinite = (a.isnan() == e.isnan()) & (a.isposinf() == e.isposinf()) & (a.isneginf() == e.isneginf())
    if not bool(same_nonfinite.all()):
        raise AssertionError(f"{name} has NaN or infinite values where the expected tensor does not "
                             f"(or misses them): {int((~same_nonfinite).sum())} positions differ")
    finite = e.isfinite()
    error = (a - e).abs().where(finite, torch.zeros_like(a))
    allowed = atol + rtol * e.abs().where(finite, torch.zeros_like(e))
    if bool((error > allowed).any()):
        worst = int(torch.argmax(error - allowed))
        index = tuple(int(i) for i in torch.unravel_index(torch.tensor(worst), tuple(e.shape))) if e.dim() else ()
        raise AssertionError(f"{name} differs from the expected values: max abs error "
                             f"{float(error.max()):.3g} (allowed {atol:g} + {rtol:g}*|expected|); "
                             f"at index {index} got {float(a.reshape(-1)[worst]):.6g}, "
                             f"expected {float(e.reshape(-1)[worst]):.6g}")


def expect_close(actual, expected: float, name: str = "result", *, rel: float = 1e-9) -> None:
    """A Python number equal to `expected` within relative tolerance `rel`."""
    if type(actual) not in (int, float):
        raise AssertionError(f"{name} should be a Python int or float, got {type(actual).__name__}")
    if not math.isclose(actual, expected, rel_tol=rel, abs_tol=0.0):
        raise AssertionError(f"{name} should be {expected!r}, got {actual!r}")


def expect_grads(ours: dict, reference: dict, *, atol: float = 1e-5, rtol: float = 1e-4) -> None:
    """Compare gradients by name: {name: tensor.grad} of our module and of the reference."""
    for name, expected in reference.items():
        actual = ours.get(name)
        if actual is None:
            raise AssertionError(f"no gradient reached {name}: is it used in forward?")
        expect_tensor(actual, expected, f"the gradient of {name}", atol=atol, rtol=rtol)


class ForbiddenAPIError(AssertionError):
    """Code under test called (or names) an API the exercise forbids."""


def forbidden_names_in(source, names) -> list[tuple[int, str]]:
    """(line, name) for each attribute access, import or string in `source` that is in `names`.

    `source` is Python text or an already parsed tree.

    A function the learner defines with a forbidden name (`def scaled_dot_product_attention`)
    is not a use of it; `F.scaled_dot_product_attention` or importing it is.
    """
    names = set(names)
    found = []
    tree = ast.parse(source) if isinstance(source, str) else source
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and node.attr in names:
            found.append((node.lineno, node.attr))
        elif isinstance(node, ast.ImportFrom):
            found += [(node.lineno, a.name) for a in node.names if a.name in names]
        elif isinstance(node, ast.Constant) and isinstance(node.value, str) and node.value in names:
            found.append((node.lineno, node.value))  # getattr(F, "scaled_dot_product_attention")
    return sorted(found)


def forbidden_uses_in_cell(source: str, names, defines=None) -> list[tuple[int, str]]:
    """Forbidden uses in one export cell that count against the functions/classes `defines`.

    Top-level code (imports, constants) counts against every exercise; the body of a def or
    class counts only if it defines one of `defines` (all of them when `defines` is None).
    """
    tree = ast.parse(source)
    found = []
    for node in tree.body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            if defines is not None and node.name not in defines:
                continue
        found += forbidden_names_in(ast.Module(body=[node], type_ignores=[]), names)
    return sorted(found)


def check_export_cells(names, defines=None, history=None, directive: str = "#| export") -> None:
    """Raise ForbiddenAPIError if an executed export cell of this kernel uses one of `names`.

    Only the definitions of `defines` (and top-level code) are checked, so a forbidden call in
    one exercise does not cost the others. `history` defaults to IPython's list of executed
    cell inputs (`In`), so a grade cell checks every export cell run before it.
    """
    if history is None:
        from IPython import get_ipython  # only inside a kernel

        shell = get_ipython()
        history = shell.user_ns.get("In", []) if shell is not None else []
    for number, source in enumerate(history):
        if not source.lstrip().startswith(directive):
            continue
        try:
            uses = forbidden_uses_in_cell(source, names, defines)
        except SyntaxError:
            continue  # the cell failed to run anyway
        if uses:
            line, name = uses[0]
            raise ForbiddenAPIError(f"this exercise must not use {name} (line {line} of the export cell "
                                    f"run as In[{number}]): write the computation yourself")


@contextlib.contextmanager
def tripwires(*targets):
    """Within the block, calling any (module, attribute) target raises ForbiddenAPIError.

    This catches a forbidden function reached indirectly (through a helper, `getattr`).
    """
    saved = []

    def tripwire(qualname):
        def refuse(*args, **kwargs):
            raise ForbiddenAPIError(f"this exercise must not call {qualname}: write the computation yourself")
        return refuse

    try:
        for owner, attribute in targets:
            saved.append((owner, attribute, getattr(owner, attribute)))
            setattr(owner, attribute, tripwire(f"{getattr(owner, '__name__', owner)}.{attribute}"))
        yield
    finally:
        for owner, attribute, original in reversed(saved):
            setattr(owner, attribute, original)


def attention_tripwires():
    """The library attention functions the attention exercises forbid."""
    import torch.nn.functional as F

    return tripwires((F, "scaled_dot_product_attention"), (F, "multi_head_attention_forward"),
                     (torch.nn.MultiheadAttention, "forward"))


ATTENTION_FORBIDDEN = ("scaled_dot_product_attention", "MultiheadAttention", "multi_head_attention_forward",
                       "_scaled_dot_product_attention_math", "_scaled_dot_product_flash_attention",
                       "_scaled_dot_product_efficient_attention", "flash_attn_func")
"""Names the attention exercises may not use (checked in every export cell)."""

ATTENTION_FAST_PATHS = ("sdpa_attention", "ATTENTION_FUNCTIONS")
"""Given, ungraded definitions of llmcourse.attention that may call PyTorch's attention: the
`attn_implementation="sdpa"` switch. The rule above applies to every other definition."""


@contextlib.contextmanager
def on_its_own(namespace: dict, *names: str):
    """Grade one exercise on its own: within the block, the notebook's `names`, defined by other
    exercises, are the course's stand-ins (llmcourse.course.oracles), so a mistake in one of them
    is charged to its own exercise and not to every exercise that builds on it.

    `namespace` is the notebook's globals(), where the learner's functions look their helpers up
    when they run. Everything is put back when the block ends, even if a test in it failed.
    """
    from llmcourse.course.oracles import STAND_INS

    unknown = [name for name in names if name not in STAND_INS]
    if unknown:
        raise KeyError(f"no stand-in for {unknown}; the course has stand-ins for {sorted(STAND_INS)}")
    absent = object()
    saved = {name: namespace.get(name, absent) for name in names}
    namespace.update({name: STAND_INS[name] for name in names})
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is absent:
                namespace.pop(name, None)
            else:
                namespace[name] = value


@contextlib.contextmanager
def calling(call: str, raises: type[BaseException] | None = None, **inputs):
    """Say what a test was doing when the code under test raises, or fails to raise.

    `call` is the call as a learner would write it, e.g. "attention_weights(q, k, mask)", and the
    keyword arguments show its inputs (a small tensor by its values, a larger one by its shape and
    dtype, anything else by its repr, shortened). An exception from the block becomes an
    AssertionError that starts "calling attention_weights(q, k, mask) with q=..., raised KeyError:
    ..." and chains the original, so its traceback stays available. Keep only the call in the
    block: a failed check of its result would read as raised by the call.

    With `raises`, the block must raise that type of exception: anything else, or nothing, fails
    with what was expected and what came. The context value's `.error` then holds what was raised
    (to check its message). A ForbiddenAPIError passes through unchanged: it already says why.
    """
    import types

    outcome = types.SimpleNamespace(error=None)
    shown = ", ".join(f"{name}={_argument(value)}" for name, value in inputs.items())
    what = f"calling {call}" + (f" with {shown}," if shown else "")
    try:
        yield outcome
    except ForbiddenAPIError:
        raise
    except Exception as error:  # the code under test may raise anything
        if raises is not None and isinstance(error, raises):
            outcome.error = error
            return
        text = f"{type(error).__name__}: {error}" if str(error) else type(error).__name__
        verdict = f"should raise {raises.__name__}, got {text}" if raises is not None else f"raised {text}"
        raise AssertionError(f"{what} {verdict}") from error
    if raises is not None:
        raise AssertionError(f"{what} should raise {raises.__name__}, got no exception")


SHOWN_VALUES = 12
"""A tensor argument with at most this many elements is shown by its values in a failure message."""


def _argument(value) -> str:
    """An argument of a call as a failure message shows it."""
    if isinstance(value, torch.Tensor):
        dtype = str(value.dtype).replace("torch.", "")
        if value.numel() <= SHOWN_VALUES:
            return f"tensor({value.tolist()}, dtype={dtype})"
        return f"a {dtype} tensor of shape {tuple(value.shape)}"
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


SHOWN_MASK = 64
"""A boolean mask with at most this many elements is shown whole (as 0/1) when it is wrong."""


def expect_mask(actual, expected: torch.Tensor, name: str = "mask") -> None:
    """A boolean tensor equal to `expected`, checked as expect_tensor checks (type, shape, dtype and
    device first); when only values differ, a small mask is shown whole, 1 for True."""
    if expected.dtype != torch.bool:
        raise TypeError(f"expect_mask compares boolean masks; the expected one is {expected.dtype}")
    try:
        expect_tensor(actual, expected, name, atol=0.0, rtol=0.0)
    except AssertionError:
        comparable = (type(actual) is torch.Tensor and actual.dtype == torch.bool
                      and tuple(actual.shape) == tuple(expected.shape) and actual.device == expected.device)
        if not comparable or expected.numel() > SHOWN_MASK:
            raise
        raise AssertionError(f"{name} should be {expected.int().tolist()}, got {actual.int().tolist()} "
                             "(1 = True)") from None


def expect_equal(actual, expected, name: str = "result", *, hint: str = "", rel_tol: float = 0.0,
                 abs_tol: float = 0.0) -> None:
    """Raise AssertionError unless `actual` equals the plain Python value `expected`, types included.

    `expected` is built from None, bool, int, float, str, bytes, lists, tuples and dicts. Every
    part of `actual` must have exactly the type of the matching part of `expected`, dict keys
    included: a list subclass whose `__eq__` always answers yes does not pass, nor a str where an
    int belongs. Floats compare within `rel_tol`/`abs_tol` (exactly by default). The message leads
    with the expected value and what came back, then says where they first differ
    ("item [2][(1, 2)] should be 3, got 4"), and ends with `hint`, if given: why that is expected.
    Dicts compare as mappings: to check their order too, compare `list(d.items())`.
    """
    found = _first_difference(actual, expected, "", rel_tol, abs_tol)
    if found is None:
        return
    path, problem = found
    message = f"{name} should be {_shown(expected)}, got {_shown(actual)}"
    if problem is not None:
        message += f": {f'item {path}' if path else 'it'} {problem}"
    raise AssertionError(message + (f" ({hint})" if hint else ""))


def _first_difference(actual, expected, path: str, rel_tol: float = 0.0, abs_tol: float = 0.0):
    """Where `actual` first differs from `expected` in type or value (see expect_equal), or None.

    Returns (path, problem): the path to that part ("[2][(1, 2)]", empty for the whole value) and
    what is wrong there; problem is None when the whole value differs and nothing more is to say.
    """
    if type(actual) is not type(expected):
        return path, f"should be of type {type(expected).__name__}, got {type(actual).__name__}"
    if isinstance(expected, (list, tuple)):
        if len(actual) != len(expected):
            return path, f"should have {len(expected)} item{'s' * (len(expected) != 1)}, got {len(actual)}"
        for index, (a, e) in enumerate(zip(actual, expected)):
            found = _first_difference(a, e, f"{path}[{index}]", rel_tol, abs_tol)
            if found is not None:
                return found
        return None
    if isinstance(expected, dict):
        own_key = {key: key for key in expected}  # the expected key equal to an actual one, to check its type
        for key in actual:
            if key not in own_key:
                return path, f"should not have the key {_shown(key)}"
            found = _first_difference(key, own_key[key], f"{path}<the key {_shown(key)}>")
            if found is not None:
                return found
        for key, value in expected.items():
            if key not in actual:
                return path, f"is missing the key {_shown(key)}"
            found = _first_difference(actual[key], value, f"{path}[{_shown(key)}]", rel_tol, abs_tol)
            if found is not None:
                return found
        return None
    if isinstance(expected, float):
        if math.isclose(actual, expected, rel_tol=rel_tol, abs_tol=abs_tol) or (math.isnan(actual)
                                                                                 and math.isnan(expected)):
            return None
        off = f"off by {abs(actual - expected):.3g}"
        return path, (f"is {off}" if not path else f"should be {expected!r}, got {actual!r} ({off})")
    if not actual == expected:
        return path, (None if not path else f"should be {_shown(expected)}, got {_shown(actual)}")
    return None


def _shown(value) -> str:
    """A value as a failure message shows it (shortened); an object whose repr fails, by its type."""
    try:
        return _argument(value)
    except Exception:  # a submitted object's __repr__ may raise anything
        return f"a {type(value).__name__} object"


class TensorsMade(torch.overrides.TorchFunctionMode):
    """Within the block, records every tensor a torch function or tensor method returns.

    `made` lists (function name, device type, dtype, shape) in call order, to check how a result
    was built, not only what it is: e.g. that no float64 tensor was made on a device (some
    accelerators have none), with the `meta` device standing in for one.

        with TensorsMade() as recorder:
            table = sinusoidal_position_encoding(6, 4, device="meta")
        assert not [m for m in recorder.made if m[1] == "meta" and m[2] == torch.float64]
    """

    def __init__(self):
        super().__init__()
        self.made: list[tuple[str, str, torch.dtype, tuple[int, ...]]] = []

    def __torch_function__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for tensor in out if isinstance(out, (tuple, list)) else (out,):
            if isinstance(tensor, torch.Tensor):
                self.made.append((getattr(func, "__name__", repr(func)), tensor.device.type, tensor.dtype,
                                  tuple(tensor.shape)))
        return out
