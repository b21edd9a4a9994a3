"""students.py: the written-out bf16 step has autograd's gradients."""

import pytest
import torch

from checkpoints import relative_error
from l2bt.students import as_columns, cosine_loss, low_precision_step
from l2bt.training import new_students


def test_the_written_out_step_has_autograds_gradients():
    """In float32 the hand-written forward and backward equal autograd's to rounding; in
    bf16 they stay within 1 % (bf16 products, float32 accumulation and loss)."""
    generator = torch.Generator().manual_seed(4)
    inputs = torch.randn(500, 32, generator=generator)
    targets = 0.5 * inputs + 0.5 * torch.randn(500, 32, generator=generator)
    student, _ = new_students(32, seed=0)
    loss = cosine_loss(student(inputs), targets)
    loss.backward()
    expected = [p.grad.clone() for p in student.parameters()]
    for dtype, tolerance in ((torch.float32, 1e-5), (torch.bfloat16, 1e-2)):
        got = low_precision_step(student, as_columns(inputs).to(dtype), as_columns(targets))
        assert float(got) == pytest.approx(float(loss.detach()), rel=tolerance)
        for param, grad in zip(student.parameters(), expected, strict=True):
            assert param.grad.dtype == torch.float32
            assert relative_error(param.grad, grad) < tolerance
