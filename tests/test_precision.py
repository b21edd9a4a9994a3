"""bf16 teacher, students and training: fp32 untouched, bf16 close to it, models saved in fp32."""

import numpy as np
import pytest
import torch
from safetensors.torch import load_file
from torch.nn import functional as F

from helpers import write_mvtec_tree
from l2bt import L2BT
from l2bt.anomaly_map import patch_anomaly
from l2bt.config import L2BTConfig, TeacherConfig, TrainConfig
from l2bt.errors import InputError
from l2bt.features import TrainFeatures
from l2bt.students import as_columns, cosine_loss, low_precision_step
from l2bt.teacher import load_teacher
from l2bt.training import new_students, train_students

# bf16 keeps 8 significant bits (relative rounding 2^-9 ≈ 0.002); through 12 blocks the
# teacher's features stay within 2 % (relative Frobenius error per layer; measured
# 0.3-0.4 % for ViT-S/14 at 56 px, 0.5-0.6 % for ViT-B/14-reg at 1036 px).
TEACHER_BF16_RTOL = 0.02


@pytest.fixture(scope="module")
def teachers():
    return {v: load_teacher(v, weights="random") for v in ("dinov2_vits14", "dinov2_vits14_reg")}


def plain_features(teacher, x, layers):
    """The float32 teacher as first written: every block restated with plain operations."""
    tokens = teacher.prepare_tokens(x)
    heads = teacher.arch.num_heads
    kept = {}
    for index in range(max(layers) + 1):
        block = teacher.blocks[index]
        batch, n, dim = tokens.shape
        h = F.layer_norm(tokens, (dim,), block.norm1.weight, block.norm1.bias, 1e-6)
        qkv = F.linear(h, block.attn.qkv.weight, block.attn.qkv.bias)
        q, k, v = qkv.reshape(batch, n, 3, heads, dim // heads).permute(2, 0, 3, 1, 4)
        attended = F.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(batch, n, dim)
        attended = F.linear(attended, block.attn.proj.weight, block.attn.proj.bias)
        tokens = tokens + attended * block.ls1.gamma
        h = F.layer_norm(tokens, (dim,), block.norm2.weight, block.norm2.bias, 1e-6)
        h = F.linear(
            F.gelu(F.linear(h, block.mlp.fc1.weight, block.mlp.fc1.bias)),
            block.mlp.fc2.weight,
            block.mlp.fc2.bias,
        )
        tokens = tokens + h * block.ls2.gamma
        if index in layers:
            patches = teacher.norm(tokens)[:, 1 + teacher.arch.num_register_tokens :]
            kept[index] = patches.reshape(batch, x.shape[2] // 14, x.shape[3] // 14, dim)
    return tuple(kept[i] for i in layers)


def grid_features(early: np.ndarray, late: np.ndarray, folder) -> TrainFeatures:
    """(N, h, w, D) fp16 grids as the cache holds them: (N·h·w, D) rows and N grids."""
    n, h, w, dim = early.shape
    rows = early.reshape(-1, dim), late.reshape(-1, dim)  # (N, h, w, D) -> (N·h·w, D)
    return TrainFeatures(*rows, grids=np.full((n, 2), (h, w)), folder=folder)


def relative_error(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a.double() - b.double()).norm() / b.double().norm())


# ---- teacher -----------------------------------------------------------------------------------


@pytest.mark.parametrize("variant", ["dinov2_vits14", "dinov2_vits14_reg"])
def test_fp32_teacher_is_bit_identical_to_the_plain_computation(teachers, variant):
    teacher = teachers[variant]
    x = torch.randn(2, 3, 42, 70, generator=torch.Generator().manual_seed(0))
    with torch.inference_mode():
        teacher.features(x, (3, 11), "bf16")  # a bf16 copy exists: fp32 must not use it
        got = teacher.features(x, (3, 11))
        expected = plain_features(teacher, x, (3, 11))
    assert all(torch.equal(g, e) for g, e in zip(got, expected, strict=True))


@pytest.mark.parametrize("variant", ["dinov2_vits14", "dinov2_vits14_reg"])
def test_bf16_teacher_features_are_close_to_fp32(teachers, variant):
    teacher = teachers[variant]
    x = torch.randn(2, 3, 56, 56, generator=torch.Generator().manual_seed(1))
    fp32 = teacher.features(x, (7, 11))
    bf16 = teacher.features(x, (7, 11), "bf16")
    for a, b in zip(bf16, fp32, strict=True):
        assert a.dtype == torch.float32 and a.shape == b.shape
        assert 0 < relative_error(a, b) < TEACHER_BF16_RTOL


def test_bf16_weights_are_cast_once_and_follow_weight_changes():
    teacher = load_teacher("dinov2_vits14", weights="random")
    keys = set(teacher.state_dict())
    x = torch.randn(1, 3, 28, 28, generator=torch.Generator().manual_seed(2))
    before = teacher.features(x, (1,), "bf16")[0]
    copy = teacher.blocks_in(torch.bfloat16)
    assert teacher.blocks_in(torch.bfloat16) is copy  # reused, not cast again
    assert copy[0].attn.qkv.weight.dtype == torch.bfloat16
    assert copy[0].norm1.weight.dtype == torch.float32  # LayerNorm stays float32
    assert set(teacher.state_dict()) == keys  # the copy is not part of the checkpoint
    state = {k: v * 1.5 if "fc1" in k else v for k, v in teacher.state_dict().items()}
    teacher.load_state_dict(state)
    assert teacher.blocks_in(torch.bfloat16) is not copy
    after = teacher.features(x, (1,), "bf16")[0]
    assert relative_error(after, teacher.features(x, (1,))[0]) < TEACHER_BF16_RTOL
    assert not torch.allclose(after, before)


def test_unknown_precision_is_an_input_error(teachers, tmp_path):
    with pytest.raises(InputError, match="precision"):
        teachers["dinov2_vits14"].features(torch.zeros(1, 3, 14, 14), (0,), "fp16")
    with pytest.raises(InputError, match="precision"):  # checked before any work
        L2BT.fit([tmp_path / "missing.png"], precision="fp16")


# ---- students ----------------------------------------------------------------------------------


def test_bf16_patch_anomaly_is_close_to_fp32():
    generator = torch.Generator().manual_seed(3)
    early = torch.randn(2, 5, 6, 64, generator=generator)
    late = 0.7 * early + 0.3 * torch.randn(2, 5, 6, 64, generator=generator)
    forward, backward = new_students(64, seed=0)
    with torch.inference_mode():
        fp32 = patch_anomaly(forward, backward, early, late)
        bf16 = patch_anomaly(forward, backward, early, late, "bf16")
    assert bf16.dtype == torch.float32 and bf16.shape == (2, 5, 6)
    assert not torch.equal(bf16, fp32)  # the students really ran in bf16
    assert torch.allclose(bf16, fp32, rtol=0.02)


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


def test_bf16_training_decreases_the_loss_like_fp32(tmp_path):
    rng = np.random.default_rng(0)
    early = rng.normal(size=(6, 4, 4, 32)).astype(np.float16)
    late = (np.tanh(early) + 0.1 * rng.normal(size=early.shape)).astype(np.float16)
    features = grid_features(early, late, tmp_path)
    config = TrainConfig(epochs=8, batch_size=2, lr=1e-3)
    histories = {}
    for precision in ("fp32", "bf16"):
        forward, backward, history = train_students(
            features, config, torch.device("cpu"), precision
        )
        assert all(
            p.dtype == torch.float32 for p in (*forward.parameters(), *backward.parameters())
        )
        histories[precision] = np.array(history.epoch_losses)
    bf16, fp32 = histories["bf16"], histories["fp32"]
    assert np.isfinite(bf16).all() and np.all(np.diff(bf16) < 0)
    assert bf16[-1] < 0.9 * bf16[0]
    assert np.allclose(bf16, fp32, rtol=0.01)


def test_a_bf16_fit_saves_float32_students_and_predicts(tmp_path, monkeypatch):
    monkeypatch.setenv("L2BT_CACHE_DIR", str(tmp_path / "cache"))
    train = sorted((write_mvtec_tree(tmp_path / "data") / "train/good").glob("*.png"))
    config = L2BTConfig(TeacherConfig("dinov2_vits14", "random", 56), TrainConfig(epochs=2))
    model = L2BT.fit(train, config, device="cpu", precision="bf16")
    run = model.save(tmp_path / "run")
    assert all(t.dtype == torch.float32 for t in load_file(run / "students.safetensors").values())
    loaded = L2BT.load(run, device="cpu")
    assert loaded.precision == "bf16"
    out = loaded.predict(
        np.asarray(np.random.default_rng(1).integers(0, 255, (40, 60, 3)), dtype=np.uint8)
    )
    assert out.anomaly_map.shape == (40, 60) and np.isfinite(out.anomaly_map).all()
