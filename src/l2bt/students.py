"""The students: shallow MLPs that learn to map one teacher layer's patch features to another's.

`Student` is the model (float32 parameters, rows of patches). `low_precision_step` is its
training step in bfloat16, written out by hand rather than through autocast and autograd
(on a CPU most of an autocast step is casts and transposed-operand products, not the
matmuls). It works on column batches, (D, N) with one patch per column, so every large
product has its operands in the bf16 GEMM kernels' fastest layout:

    forward   h₁ = W₁x + b₁, a₁ = GELU(h₁), h₂ = W₂a₁ + b₂, a₂ = GELU(h₂), y = W₃a₂ + b₃
    loss      1 − mean_i cos(y_i, t_i)
    backward  ∂W = ∂h · aᵀ, ∂a = Wᵀ ∂h, ∂b = Σ_i ∂h_i

Weights are cast to bf16 once per step from float32 masters, which keep the gradients and
the optimiser state; the loss and its gradient are float32. Cost per student and step on
N patches: 8 products of 2·N·D² FLOPs; activations saved in bf16: 5·N·D·2 bytes.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

COSINE_EPS = 1e-8  # as torch.nn.functional.cosine_similarity


class Student(nn.Module):
    """Linear(D, D) → GELU → Linear(D, D) → GELU → Linear(D, D), per patch: (…, D) -> (…, D)."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.layers = nn.Sequential(
            nn.Linear(dim, dim),
            nn.GELU(),
            nn.Linear(dim, dim),
            nn.GELU(),
            nn.Linear(dim, dim),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers(x)

    def linears(self) -> tuple[nn.Linear, nn.Linear, nn.Linear]:
        first, _, second, _, third = self.layers
        assert isinstance(first, nn.Linear) and isinstance(second, nn.Linear)
        assert isinstance(third, nn.Linear)
        return first, second, third


def cosine_loss(prediction: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """1 − mean cosine similarity over all patches: the paper's per-student loss."""
    return 1.0 - nn.functional.cosine_similarity(prediction, target, dim=-1).mean()


def as_columns(rows: torch.Tensor) -> torch.Tensor:
    """(N, D) patch rows -> (D, N) contiguous columns."""
    return rows.t().contiguous()  # (N, D) -> (D, N)


@torch.no_grad()
def low_precision_step(
    student: Student, inputs: torch.Tensor, targets: torch.Tensor
) -> torch.Tensor:
    """The student's cosine loss on (D, N) column batches and its gradients, computed in
    the inputs' dtype (bf16); `targets` are float32. float32 gradients are written into
    every parameter's `.grad` (replacing what was there). Returns the float32 loss."""
    weights = [
        (linear.weight.to(inputs.dtype), linear.bias.to(inputs.dtype))
        for linear in student.linears()
    ]
    hidden_1 = torch.addmm(weights[0][1][:, None], weights[0][0], inputs)
    active_1 = F.gelu(hidden_1)
    hidden_2 = torch.addmm(weights[1][1][:, None], weights[1][0], active_1)
    active_2 = F.gelu(hidden_2)
    output = torch.addmm(weights[2][1][:, None], weights[2][0], active_2)
    loss, grad_output = _cosine_loss_and_gradient(output, targets)
    grad_output = grad_output.to(inputs.dtype)
    grads = [_linear_gradients(grad_output, active_2)]
    grad_hidden_2 = _gelu_gradient(weights[2][0].t().mm(grad_output), hidden_2)
    grads.append(_linear_gradients(grad_hidden_2, active_1))
    grad_hidden_1 = _gelu_gradient(weights[1][0].t().mm(grad_hidden_2), hidden_1)
    grads.append(_linear_gradients(grad_hidden_1, inputs))
    for linear, (grad_weight, grad_bias) in zip(student.linears(), reversed(grads), strict=True):
        linear.weight.grad = grad_weight
        linear.bias.grad = grad_bias
    return loss


def _cosine_loss_and_gradient(
    output: torch.Tensor, targets: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """1 − mean_i cos(y_i, t_i) over the columns of (D, N) `output` y and `targets` t, and
    its float32 gradient with respect to y (norms clamped at COSINE_EPS as torch does):

        ∂/∂y_i = −(1/N) · (t_i / (‖y_i‖ ‖t_i‖) − cos_i · y_i / ‖y_i‖²)

    computed in float32 (`targets` are float32): the two terms nearly cancel once y_i
    points along t_i.
    """
    y, t = output.float(), targets
    y_norm = torch.linalg.vector_norm(y, dim=0)  # (N,)
    y_clamped = y_norm.clamp_min(COSINE_EPS)
    t_clamped = torch.linalg.vector_norm(t, dim=0).clamp_min(COSINE_EPS)
    cos = torch.linalg.vecdot(y, t, dim=0) / (y_clamped * t_clamped)
    n = y.shape[1]
    target_weight = -1.0 / (n * y_clamped * t_clamped)
    # a clamped norm is a constant: its term drops out of the gradient
    output_weight = torch.where(
        y_norm > COSINE_EPS, cos / (n * y_clamped.square()), torch.zeros_like(cos)
    )
    grad = torch.addcmul(t * target_weight, y, output_weight)
    return 1.0 - cos.mean(), grad


def _linear_gradients(
    grad_out: torch.Tensor, inputs: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """float32 weight and bias gradients of out = W·inputs + b, all (D, N) columns."""
    grad_weight = grad_out.mm(inputs.t())  # (D, N) @ (N, D) -> (D, D)
    return grad_weight.float(), grad_out.sum(dim=1, dtype=torch.float32)


def _gelu_gradient(grad_active: torch.Tensor, hidden: torch.Tensor) -> torch.Tensor:
    """∂/∂h of GELU(h) (exact, erf form) times the incoming gradient, in one pass."""
    return torch.ops.aten.gelu_backward(grad_active, hidden)
