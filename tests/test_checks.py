"""The checks graded cells use: tensor comparisons that cannot be fooled, forbidden-API detection."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from llmcourse.course import checks

pytestmark = [pytest.mark.course_infra]


class AlwaysEqual(torch.Tensor):
    def __eq__(self, other):
        return True


def test_expect_tensor_reports_type_shape_dtype_and_error():
    expected = torch.tensor([1.0, 2.0, 3.0])
    checks.expect_tensor(expected.clone(), expected)
    for actual, words in [([1.0, 2.0, 3.0], "torch.Tensor"), (torch.ones(2), "shape (3,)"),
                          (expected.double(), "dtype torch.float32"), (expected + 0.1, "max abs error 0.1"),
                          (torch.tensor([1.0, float("nan"), 3.0]), "NaN")]:
        with pytest.raises(AssertionError, match=words.replace("(", r"\(").replace(")", r"\)")):
            checks.expect_tensor(actual, expected, "x")
    with pytest.raises(AssertionError, match="torch.Tensor"):
        checks.expect_tensor(torch.zeros(3).as_subclass(AlwaysEqual), expected)
    checks.expect_tensor(torch.tensor([float("-inf"), 1.0]), torch.tensor([float("-inf"), 1.0]))


def test_expect_tensor_does_not_trust_patched_torch(monkeypatch):
    monkeypatch.setattr(torch, "allclose", lambda *a, **k: True)
    monkeypatch.setattr(torch.testing, "assert_close", lambda *a, **k: None)
    with pytest.raises(AssertionError):
        checks.expect_tensor(torch.zeros(2), torch.ones(2))


def test_expect_close_and_grads():
    checks.expect_close(3, 3.0)
    with pytest.raises(AssertionError):
        checks.expect_close("3", 3)
    with pytest.raises(AssertionError, match="no gradient reached w"):
        checks.expect_grads({}, {"w": torch.ones(1)})


def test_forbidden_names_are_found_in_code_not_in_own_definitions():
    source = (
        "import torch.nn.functional as F\n"
        "from torch.nn.functional import scaled_dot_product_attention as sdpa\n"
        "def scaled_dot_product_attention(q, k, v):\n"
        "    return F.scaled_dot_product_attention(q, k, v)\n"
        "def sneaky(q):\n"
        "    return getattr(F, 'scaled_dot_product_attention')(q, q, q)\n"
    )
    uses = checks.forbidden_names_in(source, checks.ATTENTION_FORBIDDEN)
    assert [line for line, _ in uses] == [2, 4, 6]
    # per exercise: top-level imports count against everyone, a body only against its exercise
    assert [line for line, _ in checks.forbidden_uses_in_cell(source, checks.ATTENTION_FORBIDDEN,
                                                              defines=("other",))] == [2]
    own = "def scaled_dot_product_attention(q, k, v):\n    return (q @ k.mT).softmax(-1) @ v\n"
    assert checks.forbidden_uses_in_cell(own, checks.ATTENTION_FORBIDDEN) == []


def test_check_export_cells_reads_the_history():
    history = ["", "#| export attention\nimport torch\n", "x = F.scaled_dot_product_attention  # not exported",
               "#| export attention\ndef mine(q):\n"
               "    return torch.nn.functional.scaled_dot_product_attention(q, q, q)\n"]
    checks.check_export_cells(checks.ATTENTION_FORBIDDEN, defines=("other",), history=history)
    with pytest.raises(checks.ForbiddenAPIError, match=r"In\[3\]"):
        checks.check_export_cells(checks.ATTENTION_FORBIDDEN, defines=("mine",), history=history)


def test_tripwires_refuse_calls_and_restore():
    original = F.scaled_dot_product_attention
    q = torch.randn(1, 2, 3)
    with checks.attention_tripwires():
        with pytest.raises(checks.ForbiddenAPIError, match="scaled_dot_product_attention"):
            getattr(F, "scaled_dot_" + "product_attention")(q, q, q)
        with pytest.raises(checks.ForbiddenAPIError):
            torch.nn.MultiheadAttention(2, 1)(q.transpose(0, 1), q.transpose(0, 1), q.transpose(0, 1))
    assert F.scaled_dot_product_attention is original
    with pytest.raises(RuntimeError):
        with checks.attention_tripwires():
            raise RuntimeError("boom")
    assert F.scaled_dot_product_attention is original
