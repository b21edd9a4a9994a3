"""Patch batches: every cached row once per epoch, gathers equal to plain indexing, and an
epoch's loss equal to the image steps' for a fixed model."""

import numpy as np
import pytest
import torch

from l2bt.config import PATCH_BATCH, TrainConfig, resolved_patch_batch
from l2bt.features import TrainFeatures
from l2bt.patch_batches import BLOCK_ROWS, PatchBatches
from l2bt.training import train_students

SIZES = [(1, 1), (1, 64), (63, 64), (64, 64), (65, 64), (1000, 96), (1000, 1000), (4097, 128)]


@pytest.mark.parametrize("n_rows,batch", [*SIZES, (300, 7), (129, 1), (5, 4096)])
def test_an_epoch_reads_every_row_exactly_once(n_rows, batch):
    batches = PatchBatches(n_rows, batch)
    steps = list(batches.epoch(np.random.default_rng(n_rows)))
    assert len(steps) == len(batches)
    rows = np.concatenate([batches.rows(blocks) for blocks in steps])
    assert np.array_equal(np.sort(rows), np.arange(n_rows))  # once each, none missing
    assert all(len(batches.rows(blocks)) <= batch for blocks in steps)
    assert sum(len(batches.rows(blocks)) == batch for blocks in steps) >= len(steps) - 2


@pytest.mark.parametrize("n_rows,batch", SIZES)
def test_gather_equals_plain_row_indexing(n_rows, batch):
    array = np.random.default_rng(0).standard_normal((n_rows, 3)).astype(np.float16)
    batches = PatchBatches(n_rows, batch)
    for blocks in batches.epoch(np.random.default_rng(1)):
        expected = array[batches.rows(blocks)]
        assert np.array_equal(batches.gather(array, blocks), expected)


def test_blocks_divide_the_batch_and_steps_mix_the_whole_cache():
    assert PatchBatches(10_000, 4096).block == BLOCK_ROWS
    assert PatchBatches(10_000, 1000).block == 8 and PatchBatches(10_000, 7).block == 1
    batches = PatchBatches(64 * 1000, 64 * 10)  # 1000 blocks, 10 per step
    first = next(batches.epoch(np.random.default_rng(0)))
    assert np.all(np.diff(first) > 0) and first.max() - first.min() > 500  # spread out


def test_epochs_differ_and_a_seed_repeats_them():
    batches = PatchBatches(6400, 640)
    rng_a, rng_b = np.random.default_rng(3), np.random.default_rng(3)
    first, second = list(batches.epoch(rng_a)), list(batches.epoch(rng_a))
    assert any(not np.array_equal(a, b) for a, b in zip(first, second, strict=True))
    assert all(np.array_equal(a, b) for a, b in zip(first, batches.epoch(rng_b), strict=True))


def test_bad_sizes_are_refused():
    for n_rows, batch in ((0, 4), (4, 0)):
        with pytest.raises(ValueError):
            PatchBatches(n_rows, batch)


def test_pad_mode_keeps_the_papers_recipe_and_other_modes_step_over_patches():
    assert resolved_patch_batch(TrainConfig(), "pad") == 0
    assert resolved_patch_batch(TrainConfig(), "tiles") == PATCH_BATCH
    assert resolved_patch_batch(TrainConfig(), "aspect") == PATCH_BATCH
    assert resolved_patch_batch(TrainConfig(patch_batch=0), "tiles") == 0
    assert resolved_patch_batch(TrainConfig(patch_batch=512), "pad") == 512


def _features(tmp_path, n_inputs=12, grid=(4, 5), dim=16) -> TrainFeatures:
    rng = np.random.default_rng(7)
    n_rows = n_inputs * grid[0] * grid[1]
    early = rng.standard_normal((n_rows, dim)).astype(np.float16)
    late = (early + rng.standard_normal((n_rows, dim)) * 0.5).astype(np.float16)
    return TrainFeatures(early, late, np.tile(grid, (n_inputs, 1)), tmp_path)


@pytest.mark.parametrize("patch_batch", [64, 96, 100, 240])
def test_for_a_fixed_model_an_epochs_loss_is_the_mean_over_all_patches(tmp_path, patch_batch):
    features = _features(tmp_path)
    fixed = TrainConfig(epochs=1, batch_size=3, lr=1e-30)  # steps that move nothing
    cpu = torch.device("cpu")
    *_, by_images = train_students(features, fixed, cpu)
    *_, by_patches = train_students(features, fixed, cpu, patch_batch=patch_batch)
    forward, backward, _ = train_students(features, fixed, cpu, patch_batch=patch_batch)
    early, late = (torch.from_numpy(np.asarray(a)).float() for a in (features.early, features.late))
    cosine = torch.nn.functional.cosine_similarity
    with torch.no_grad():  # the plain reference: both students' loss over every patch at once
        reference = 2 - cosine(forward(early), late).mean() - cosine(backward(late), early).mean()
    assert by_patches.epoch_losses[0] == pytest.approx(float(reference), rel=1e-5)
    assert by_patches.epoch_losses[0] == pytest.approx(by_images.epoch_losses[0], rel=1e-5)


def test_patch_steps_train(tmp_path):
    features = _features(tmp_path)
    config = TrainConfig(epochs=30, lr=3e-3)
    *_, history = train_students(features, config, torch.device("cpu"), patch_batch=64)
    assert history.epoch_losses[-1] < 0.8 * history.epoch_losses[0]
