"""Dinomaly: its parts against plain references, then fit/predict/reload and the benchmark."""

import copy
import csv
import dataclasses
import itertools
import json
import math

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn
from torch.nn import functional as F

import l2bt.methods.dinomaly as dinomaly
from helpers import SHARED_DATA, teacher_loaded_once, textured_image
from l2bt.benchmark import runner
from l2bt.cli import main
from l2bt.config import TeacherConfig
from l2bt.errors import InputError
from l2bt.methods import make_method
from l2bt.methods.artefacts import CONFIG_FILE
from l2bt.methods.base import MethodSettings
from l2bt.methods.dinomaly import (
    WEIGHTS_FILE,
    Dinomaly,
    gaussian_kernel,
    group_maps,
    to_full_resolution,
    top_fraction_score,
)
from l2bt.methods.dinomaly_decoder import (
    DecoderConfig,
    DinomalyDecoder,
    LinearAttention,
    grouped_patches,
    init_official,
)
from l2bt.methods.dinomaly_optim import StableAdamW, WarmCosineSchedule
from l2bt.methods.dinomaly_training import (
    epoch_batches,
    hard_mining_cosine_loss,
    hard_mining_p,
    target_layers,
)
from l2bt.preprocess import preprocess
from l2bt.report import plots
from l2bt.teacher import load_teacher


@pytest.fixture(autouse=True, scope="module")
def one_torch_thread():
    """The test machine's two cores are shared: for these small tensors one torch thread
    is many times faster than two contended ones."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


# ---- plain references ------------------------------------------------------------------------


def plain_cosine(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Cosine of two vectors from its definition."""
    return (a * b).sum() / (a.square().sum().sqrt() * b.square().sum().sqrt())


def plain_point_distances(target: torch.Tensor, output: torch.Tensor) -> torch.Tensor:
    """(B, h, w, D) -> (B, h, w): 1 − cosine at every point, one point at a time."""
    batch, h, w, _ = target.shape
    out = torch.empty(batch, h, w, dtype=target.dtype)
    for b in range(batch):
        for i in range(h):
            for j in range(w):
                out[b, i, j] = 1 - plain_cosine(target[b, i, j], output[b, i, j])
    return out


def plain_loss(targets, outputs) -> torch.Tensor:
    """Per group, per image: 1 − cosine of the whole flattened maps; mean over images, then
    over groups."""
    per_group = []
    for target, output in zip(targets, outputs, strict=True):
        images = [
            1 - plain_cosine(target[b].flatten(), output[b].flatten())
            for b in range(target.shape[0])
        ]
        per_group.append(sum(images) / len(images))
    return sum(per_group) / len(per_group)


def plain_easy_points(distances: torch.Tensor, p: float) -> torch.Tensor:
    """The official rule written out: sort the n distances in descending order, the
    threshold is the k-th, k = int(n · (1 − p)); points strictly below it are easy."""
    values = sorted(distances.flatten().tolist(), reverse=True)
    threshold = values[int(len(values) * (1 - p)) - 1]
    return distances < threshold


def loss_and_gradients(loss_fn, targets, outputs):
    targets = [t.clone().requires_grad_(True) for t in targets]
    outputs = [o.clone().requires_grad_(True) for o in outputs]
    loss = loss_fn(targets, outputs)
    loss.backward()
    return loss.detach(), [o.grad for o in outputs], [t.grad for t in targets]


def random_groups(seed: int, shape=(2, 4, 4, 6), groups=2):
    generator = torch.Generator().manual_seed(seed)
    targets = [torch.randn(shape, generator=generator, dtype=torch.float64) for _ in range(groups)]
    outputs = [
        t + 0.7 * torch.randn(shape, generator=generator, dtype=torch.float64) for t in targets
    ]
    return targets, outputs


# ---- loss --------------------------------------------------------------------------------------


@pytest.mark.parametrize(("seed", "p"), [(0, 0.9), (1, 0.5), (2, 0.0), (3, 0.37)])
def test_loss_and_its_gradients_match_the_plain_hard_mining_rule(seed, p):
    targets, outputs = random_groups(seed)
    factor = 0.1
    loss, grads, target_grads = loss_and_gradients(
        lambda t, o: hard_mining_cosine_loss(t, o, p=p, easy_factor=factor), targets, outputs
    )
    plain, plain_grads, _ = loss_and_gradients(plain_loss, targets, outputs)
    assert loss.item() == pytest.approx(plain.item(), abs=1e-12)
    for target, output, grad, raw in zip(targets, outputs, grads, plain_grads, strict=True):
        easy = plain_easy_points(plain_point_distances(target, output), p)
        if p == 0.0:
            assert not easy.any()  # the first iterations: nothing is easy yet
        else:
            assert easy.any() and not easy.all()
        expected = torch.where(easy[..., None], factor * raw, raw)
        torch.testing.assert_close(grad, expected, rtol=1e-10, atol=1e-14)
    assert all(g is None for g in target_grads)  # the encoder's features are targets only


def test_points_tied_with_the_threshold_stay_hard():
    targets, outputs = random_groups(7, groups=1)
    target, output = targets[0], outputs[0]
    tied = [(0, 0, 0), (0, 1, 3), (0, 3, 2), (1, 2, 2), (1, 3, 3)]
    for index in tied:  # five identical, maximally wrong points: exactly equal distances
        target[index] = target[0, 0, 0]
        output[index] = -target[0, 0, 0]
    # 32 points, p = 0.9: the threshold is the int(32 · 0.1) = 3rd largest distance, which
    # is the tied one; none of the five is below it, every other point is.
    loss, grads, _ = loss_and_gradients(
        lambda t, o: hard_mining_cosine_loss(t, o, p=0.9, easy_factor=0.1), [target], [output]
    )
    plain, plain_grads, _ = loss_and_gradients(plain_loss, [target], [output])
    easy = plain_easy_points(plain_point_distances(target, output), 0.9)
    assert int((~easy).sum()) == 5 and all(not easy[i] for i in tied)
    assert loss.item() == pytest.approx(plain.item(), abs=1e-12)
    expected = torch.where(easy[..., None], 0.1 * plain_grads[0], plain_grads[0])
    torch.testing.assert_close(grads[0], expected, rtol=1e-10, atol=1e-14)


def test_hard_point_share_ramps_to_point_nine_over_a_thousand_iterations():
    assert [hard_mining_p(i) for i in (0, 250, 500, 1000, 1001, 10_000)] == pytest.approx(
        [0.0, 0.225, 0.45, 0.9, 0.9, 0.9]
    )


# ---- model parts -------------------------------------------------------------------------------


def naive_linear_attention(module: LinearAttention, x: torch.Tensor) -> torch.Tensor:
    """Linear attention from its definition, token by token: for head h and token s,
    Σ_t φ(q_s)·φ(k_t) v_t / Σ_t φ(q_s)·φ(k_t), φ(z) = elu(z) + 1."""
    batch, tokens, dim = x.shape
    heads = module.num_heads
    d = dim // heads
    qkv = x @ module.qkv.weight.T + module.qkv.bias  # (B, T, 3D): [q | k | v]

    def phi(z):
        return torch.where(z > 0, z + 1, torch.exp(z))

    out = torch.zeros(batch, tokens, dim, dtype=x.dtype)
    for b in range(batch):
        for h in range(heads):
            cols = slice(h * d, (h + 1) * d)
            for s in range(tokens):
                q = phi(qkv[b, s, :dim][cols])
                weights = [q @ phi(qkv[b, t, dim : 2 * dim][cols]) for t in range(tokens)]
                values = [qkv[b, t, 2 * dim :][cols] for t in range(tokens)]
                out[b, s, cols] = sum(w * v for w, v in zip(weights, values, strict=True)) / sum(
                    weights
                )
    return out @ module.proj.weight.T + module.proj.bias


def test_linear_attention_equals_its_definition():
    torch.manual_seed(0)
    module = LinearAttention(dim=8, num_heads=2).double()
    x = torch.randn(2, 5, 8, dtype=torch.float64)
    with torch.no_grad():
        torch.testing.assert_close(
            module(x), naive_linear_attention(module, x), rtol=1e-10, atol=1e-12
        )


class AddConstant(nn.Module):
    def __init__(self, value: float) -> None:
        super().__init__()
        self.value = value

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.value


def test_decoder_pairs_its_deepest_block_with_the_shallowest_target_and_fuses_groups():
    decoder = DinomalyDecoder(DecoderConfig(dim=4, num_heads=2))
    decoder.bottleneck = nn.Identity()
    decoder.blocks = nn.ModuleList(AddConstant(i) for i in range(8))  # block i adds i
    layers = []
    for i in range(8):  # 3 prefix tokens (cls + 2 registers) worth 100, then 2 × 2 patches
        tokens = torch.full((1, 3 + 4, 4), float(i))
        tokens[:, :3] = 100.0
        layers.append(tokens)
    outputs = decoder(layers)  # input: the mean of all layers, 3.5 at every patch
    assert [o[0, 5, 0].item() for o in outputs] == [
        3.5 + sum(range(j + 1)) for j in reversed(range(8))
    ]
    grouped = grouped_patches(layers, ((0, 1, 2, 3), (4, 5, 6, 7)), first_patch=3, grid=(2, 2))
    assert [g.shape for g in grouped] == [(1, 2, 2, 4)] * 2
    assert torch.equal(grouped[0], torch.full((1, 2, 2, 4), 1.5))  # prefix tokens dropped
    assert torch.equal(grouped[1], torch.full((1, 2, 2, 4), 5.5))


def test_official_init_and_the_bottlenecks_dropout():
    torch.manual_seed(0)
    decoder = DinomalyDecoder(DecoderConfig(dim=32, num_heads=4))
    init_official(decoder)
    linears = [m for m in decoder.modules() if isinstance(m, nn.Linear)]
    weights = torch.cat([m.weight.detach().flatten() for m in linears])
    # N(0, 0.01²) cut at ±3σ has a standard deviation of 0.00987
    assert weights.abs().max() <= 0.03 and 0.0097 < float(weights.std()) < 0.0100
    assert all(not m.bias.any() for m in linears)
    norms = [m for m in decoder.modules() if isinstance(m, nn.LayerNorm)]
    assert len(norms) == 16 and all(m.eps == 1e-8 and (m.weight == 1).all() for m in norms)
    bottleneck = decoder.bottleneck
    x = torch.randn(2, 50, 32)
    plain = bottleneck.fc2(F.gelu(bottleneck.fc1(x)))
    torch.testing.assert_close(bottleneck.eval()(x), plain)  # dropout only when training
    bottleneck.train()
    first = bottleneck.drop(torch.ones(100_000))
    assert float((first == 0).float().mean()) == pytest.approx(0.2, abs=0.01)
    assert not torch.allclose(bottleneck(x), plain)


def test_target_layers_are_the_official_middle_blocks():
    assert target_layers(12) == (2, 3, 4, 5, 6, 7, 8, 9)
    assert target_layers(24) == (4, 6, 8, 10, 12, 14, 16, 18)
    with pytest.raises(InputError, match="40 blocks"):
        target_layers(40)


# ---- maps and scores ---------------------------------------------------------------------------


def test_group_maps_are_one_minus_the_cosine_at_each_patch():
    targets, outputs = random_groups(3, shape=(2, 3, 5, 7), groups=2)
    got = group_maps(targets, outputs)
    assert got.shape == (2, 2, 3, 5)
    for g in range(2):
        torch.testing.assert_close(
            got[:, g], plain_point_distances(targets[g], outputs[g]), rtol=1e-12, atol=1e-12
        )


def test_score_is_the_mean_of_the_top_one_percent():
    rng = np.random.default_rng(0)
    anomaly_map = rng.random((37, 53)).astype(np.float32)  # 1,961 pixels: the top 19
    top = sorted(anomaly_map.ravel().tolist(), reverse=True)[:19]
    assert top_fraction_score(anomaly_map, 0.01) == pytest.approx(sum(top) / 19, rel=1e-12)
    small = rng.random((5, 7)).astype(np.float32)  # int(0.35) = 0: at least the maximum
    assert top_fraction_score(small, 0.01) == pytest.approx(float(small.max()))


def test_gaussian_kernel_is_the_normalised_official_formula():
    kernel = gaussian_kernel(5, 4.0)[0, 0].double()
    plain = torch.tensor(
        [
            [
                math.exp(-((x - 2) ** 2 + (y - 2) ** 2) / (2 * 16.0)) / (2 * math.pi * 16.0)
                for x in range(5)
            ]
            for y in range(5)
        ],
        dtype=torch.float64,
    )
    torch.testing.assert_close(kernel, plain / plain.sum(), rtol=1e-6, atol=0)


def test_full_resolution_map_upsamples_with_aligned_corners_and_crops_to_the_image():
    rows = torch.arange(4, dtype=torch.float32)[:, None].expand(4, 4)  # patch row index
    _, square = preprocess(textured_image(45, 45, 0), 56)
    identity = torch.ones(1, 1, 1, 1)
    full = to_full_resolution(torch.stack([rows, 2 * rows]), square, identity)
    assert full.shape == (2, 45, 45) and full.dtype == np.float32
    # align_corners=True: pixel i of 45 samples patch row i · 3 / 44, a ramp from 0 to 3.
    np.testing.assert_allclose(full[0, :, 7], np.arange(45) * 3 / 44, rtol=0, atol=1e-5)
    np.testing.assert_allclose(full[1], 2 * full[0], rtol=1e-6)
    _, wide = preprocess(textured_image(31, 57, 0), 56)  # padded to 57 × 57, rows 13..43
    constant = to_full_resolution(torch.full((1, 4, 4), 2.0), wide, gaussian_kernel(5, 4.0))
    assert constant.shape == (1, 31, 57)
    assert np.allclose(constant[0, :, 2:-2], 2.0)  # a normalised kernel keeps the interior
    assert (constant[0, :, :2] < 2.0).all()  # zero padding at the frame's edges, as official
    _, aspect = preprocess(textured_image(31, 57, 0), 56, "aspect")  # the frame: the image
    ramp = to_full_resolution(torch.arange(4.0)[None, None].expand(1, 2, 4), aspect, identity)
    assert ramp.shape == (1, 31, 57)
    np.testing.assert_allclose(ramp[0, 0], np.arange(57) * 3 / 56, rtol=0, atol=1e-5)


# ---- optimisation ------------------------------------------------------------------------------


def test_schedule_follows_the_warm_cosine_formula():
    total, warmup, base, final = 10_000, 100, 2e-3, 2e-4
    schedule = WarmCosineSchedule(base, final, total, warmup)
    warm = np.linspace(0, base, warmup)
    for it in (0, 1, 50, 99):
        assert schedule.lr(it) == pytest.approx(warm[it], rel=1e-12, abs=1e-18)
    for it in (100, 101, 5050, 9_999):
        cosine = final + 0.5 * (base - final) * (1 + math.cos(math.pi * (it - 100) / 9_900))
        assert schedule.lr(it) == pytest.approx(cosine, rel=1e-12)
    assert schedule.lr(100) == pytest.approx(base) and schedule.lr(total) == final
    short = WarmCosineSchedule(base, final, 3, warmup)  # training ends inside the warm-up
    assert [short.lr(i) for i in range(3)] == pytest.approx(list(warm[:3]))


def plain_stable_adamw(param, grads, lr, betas, eps, weight_decay):
    """StableAdamW with AMSGrad, step by step in float64 numpy; also each step's
    RMS(g / denom), whose excess over 1 divides the step."""
    m = np.zeros_like(param)
    v = np.zeros_like(param)
    v_max = np.zeros_like(param)
    rms_per_step = []
    for step, g in enumerate(grads, start=1):
        param = param * (1 - lr * weight_decay)
        m = betas[0] * m + (1 - betas[0]) * g
        v = betas[1] * v + (1 - betas[1]) * g * g
        v_max = np.maximum(v_max, v)
        denom = np.sqrt(v_max) / np.sqrt(1 - betas[1] ** step) + eps
        rms = float(np.sqrt(np.mean((g / denom) ** 2)))
        rms_per_step.append(rms)
        param = param - lr / (1 - betas[0] ** step) / max(1.0, rms) * m / denom
    return param, rms_per_step


def test_stable_adamw_matches_its_plain_update_including_the_clipping():
    rng = np.random.default_rng(0)
    start = rng.normal(size=(3, 4))
    # Small gradients, then large ones: the large steps are clipped (RMS(g / denom) > 1).
    grads = [rng.normal(size=(3, 4)) * scale for scale in (1.0, 0.5, 8.0, 3.0)]
    param = torch.nn.Parameter(torch.tensor(start))
    optimizer = StableAdamW(
        [param], lr=2e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=1e-4, amsgrad=True
    )
    for g in grads:
        param.grad = torch.tensor(g)
        optimizer.step()
    expected, rms_per_step = plain_stable_adamw(start, grads, 2e-3, (0.9, 0.999), 1e-8, 1e-4)
    assert rms_per_step[2] > 1.5  # the clipping is exercised
    np.testing.assert_allclose(param.detach().numpy(), expected, rtol=1e-12, atol=1e-15)


def test_epochs_are_permutations_cut_into_full_batches_of_one_shape():
    one_shape = [(56, 56)] * 7
    batches = epoch_batches(one_shape, 3, np.random.default_rng(0))
    first_epoch = [next(batches) for _ in range(2)]  # 7 // 3 = 2 batches, one image dropped
    seen = np.concatenate(first_epoch)
    assert all(len(b) == 3 for b in first_epoch) and len(set(seen.tolist())) == 6
    second_epoch = np.concatenate([next(batches) for _ in range(2)])
    assert len(set(second_epoch.tolist())) == 6 and not np.array_equal(seen, second_epoch)
    few = epoch_batches([(56, 56)] * 2, 3, np.random.default_rng(0))
    assert sorted(next(few)) == [0, 1]  # fewer images than a batch: all of them
    # Aspect mode: batches never mix shapes; a shape too rare for a full batch still trains.
    shapes = [(56, 28)] * 5 + [(28, 56)] * 2 + [(56, 42)]
    epoch = list(itertools.islice(epoch_batches(shapes, 2, np.random.default_rng(1)), 4))
    assert all(len({shapes[i] for i in b}) == 1 for b in epoch)
    assert sorted(len(b) for b in epoch) == [1, 2, 2, 2]  # one (56, 28) image dropped
    assert {shapes[b[0]] for b in epoch} == set(shapes)
    with pytest.raises(ValueError, match="images"):
        next(epoch_batches([], 2, np.random.default_rng(0)))


# ---- fit, predict, reload ----------------------------------------------------------------------


@pytest.fixture(scope="module")
def shared_teacher():
    """Fits load one random teacher, not one each (frozen, so sharing it is safe)."""
    with teacher_loaded_once(dinomaly) as teachers:
        yield teachers


SETTINGS = MethodSettings(
    teacher=TeacherConfig(variant="dinov2_vits14", weights="random", image_size=56),
    device="cpu",
    dinomaly_iterations=3,
    dinomaly_batch_size=2,
)


@pytest.fixture(scope="module")
def fitted(tmp_path_factory, shared_teacher):
    """Dinomaly trained for 3 iterations of 2 images on four small images of various sizes."""
    root = tmp_path_factory.mktemp("dinomaly")
    paths = []
    for i, (h, w) in enumerate([(60, 45), (50, 70), (56, 56), (45, 60)]):
        paths.append(root / f"{i}.png")
        Image.fromarray(textured_image(h, w, seed=i)).save(paths[-1])
    method = make_method("dinomaly", SETTINGS)
    assert isinstance(method, Dinomaly) and method.name == "dinomaly"
    method.fit(paths, root / "work")
    return method, paths, root / "work"


def test_end_to_end_maps_have_each_images_exact_size(fitted, shared_teacher):
    method, _, work = fitted
    sizes = [(33, 41), (57, 43), (50, 70), (56, 56)]
    out = method.predict_maps([textured_image(h, w, seed=10 + i) for i, (h, w) in enumerate(sizes)])
    assert [p.anomaly_map.shape for p in out] == sizes
    assert all(p.anomaly_map.dtype == np.float32 for p in out)
    assert all(np.isfinite(p.anomaly_map).all() and np.isfinite(p.score) for p in out)
    assert all(p.score == pytest.approx(top_fraction_score(p.anomaly_map, 0.01)) for p in out)
    described = method.describe()
    assert described["iterations_done"] == 3 and described["mean_batch_size"] == 2
    assert np.isfinite(described["final_loss"]) and described["train_seconds"] > 0
    assert described["target_layers"] == [2, 3, 4, 5, 6, 7, 8, 9]
    assert (work / WEIGHTS_FILE).is_file()
    assert json.loads((work / CONFIG_FILE).read_text())["iterations"] == 3
    # Only bottleneck and decoder learn: the shared teacher is still the fresh random one.
    fresh = load_teacher("dinov2_vits14", "random")
    teacher = shared_teacher["dinov2_vits14", "random"]
    assert all(
        torch.equal(a, b)
        for a, b in zip(fresh.state_dict().values(), teacher.state_dict().values(), strict=True)
    )


def test_encoder_layers_are_the_teachers_blocks_before_its_final_norm(fitted, shared_teacher):
    teacher = shared_teacher["dinov2_vits14", "random"]
    x = torch.stack([preprocess(textured_image(56, 56, seed=s), 56)[0] for s in (1, 2)])
    raw = dinomaly.encoder_layers(teacher, x, (2, 9))
    assert [t.shape for t in raw] == [(2, 1 + 16, 384)] * 2  # cls + 4 × 4 patches
    normed = teacher.features(x, layers=(2, 9))  # (B, 4, 4, D), final norm, patches only
    for tokens, reference in zip(raw, normed, strict=True):
        patches = teacher.norm(tokens)[:, 1:].reshape(2, 4, 4, 384)
        torch.testing.assert_close(patches, reference)
    half = dinomaly.encoder_layers(teacher, x, (2, 9), precision="bf16")
    assert all(h.dtype == torch.float32 for h in half)
    assert all(
        float(F.cosine_similarity(h, r, dim=-1).min()) > 0.95
        for h, r in zip(half, raw, strict=True)
    )


def test_a_second_fit_reloads_and_new_settings_retrain(fitted, monkeypatch):
    method, paths, work = fitted
    real_train = dinomaly.train_decoder

    def no_training(*args, **kwargs):
        raise AssertionError("trained although the decoder could be reloaded")

    monkeypatch.setattr(dinomaly, "train_decoder", no_training)
    again = Dinomaly(SETTINGS, iterations=3, batch_size=2)
    again.fit(paths, work)
    assert again.describe()["reloaded"] is True
    assert again.describe()["final_loss"] == method.describe()["final_loss"]
    image = textured_image(47, 39, seed=7)
    first, second = method.predict_maps([image])[0], again.predict_maps([image])[0]
    assert np.array_equal(first.anomaly_map, second.anomaly_map)
    assert first.score == second.score

    calls = []
    monkeypatch.setattr(
        dinomaly, "train_decoder", lambda *a, **k: calls.append(1) or real_train(*a, **k)
    )
    Dinomaly(SETTINGS, iterations=2, batch_size=2).fit(paths, work)
    assert calls == [1]  # other iterations: another key, so trained again
    assert json.loads((work / CONFIG_FILE).read_text())["iterations"] == 2


def test_training_is_seeded_and_leaves_the_callers_rng_alone(fitted, tmp_path):
    _, paths, _ = fitted
    trained = []
    for run in ("a", "b"):
        torch.manual_seed(123)
        method = Dinomaly(SETTINGS, iterations=2, batch_size=3)  # 4 images: 1 batch per epoch
        method.fit(paths, tmp_path / run)
        trained.append(copy.deepcopy(method.decoder.state_dict()))
        after = torch.rand(3)
        torch.manual_seed(123)
        assert torch.equal(after, torch.rand(3))
    assert all(torch.equal(trained[0][k], trained[1][k]) for k in trained[0])


def test_aspect_mode_trains_on_batches_of_one_shape_and_maps_every_size(fitted, tmp_path):
    _, paths, _ = fitted  # shapes 60×45, 50×70, 56×56, 45×60: three input shapes at 56 px
    aspect = dataclasses.replace(SETTINGS.teacher, input_mode="aspect")
    method = Dinomaly(dataclasses.replace(SETTINGS, teacher=aspect), iterations=3)
    method.fit(paths, tmp_path / "aspect")
    assert method.describe()["input_mode"] == "aspect"
    sizes = [(33, 41), (57, 43), (50, 70)]
    out = method.predict_maps([textured_image(h, w, seed=i) for i, (h, w) in enumerate(sizes)])
    assert [p.anomaly_map.shape for p in out] == sizes
    assert all(np.isfinite(p.anomaly_map).all() and np.isfinite(p.score) for p in out)


def test_settings_are_checked(tmp_path):
    with pytest.raises(InputError, match="iteration"):
        Dinomaly(SETTINGS, iterations=0)
    with pytest.raises(InputError, match="40 blocks"):  # before any benchmark output
        make_method("dinomaly", MethodSettings(teacher=TeacherConfig(variant="dinov2_vitg14")))
    with pytest.raises(InputError, match="variant must be one of"):  # an unknown teacher
        make_method("dinomaly", MethodSettings(teacher=TeacherConfig(variant="resnet18")))
    with pytest.raises(InputError, match=r"input.mode"):
        Dinomaly(
            dataclasses.replace(
                SETTINGS, teacher=dataclasses.replace(SETTINGS.teacher, input_mode="stretch")
            )
        )
    with pytest.raises(InputError, match="training image"):
        Dinomaly(SETTINGS).fit([], tmp_path)
    with pytest.raises(RuntimeError, match="fit"):
        Dinomaly(SETTINGS).predict_maps([textured_image(20, 20, 0)])


# ---- the benchmark -----------------------------------------------------------------------------


@pytest.mark.needs_data
def test_the_benchmark_runs_dinomaly_beside_l2bt_and_patchcore(tmp_path, monkeypatch):
    data = SHARED_DATA / "magnetic_tile_mini"
    monkeypatch.setenv("L2BT_CACHE_DIR", str(tmp_path / "cache"))
    # Plots are checked in test_benchmark.py; skipped here, they are a third of the time.
    monkeypatch.setattr(plots, "write_plots", lambda *args, **kwargs: None)
    monkeypatch.setattr(runner, "plot_smallest_defects", lambda *args, **kwargs: None)
    bench = tmp_path / "bench"
    assert (
        main(
            [
                "benchmark",
                "--data",
                str(data.parent),
                "--categories",
                data.name,
                "--methods",
                "l2bt,dinomaly,patchcore",
                "--teacher",
                "dinov2_vits14",
                "--weights",
                "random",
                "--image-size",
                "56",
                "--epochs",
                "1",
                "--dinomaly-iterations",
                "3",
                "--dinomaly-batch-size",
                "2",
                "--out",
                str(bench),
            ]
        )
        == 0
    )
    with open(bench / "results.csv") as f:
        rows = list(csv.DictReader(f))
    row = next(r for r in rows if r["method"] == "dinomaly")
    result = json.loads((bench / "results" / "dinomaly" / f"{data.name}.json").read_text())
    # Every column is filled, but for the precision of a run that calls no image
    # defective (0 / 0: undefined, left empty rather than invented).
    image = result["decisions"]["image"]
    nothing_called_defective = image["recall"] == 0 and image["false_alarm_rate"] == 0
    undefined = {"precision"} if nothing_called_defective else set()
    assert all(value != "" for name, value in row.items() if name not in undefined), row
    assert result["run"]["description"]["iterations_done"] == 3
    assert (bench / "models" / "dinomaly" / data.name / WEIGHTS_FILE).is_file()
