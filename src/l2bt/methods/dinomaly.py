"""Dinomaly (Guo et al., CVPR 2025) on the shared frozen DINOv2 teacher.

Algorithm. The frozen teacher encodes an image; the raw outputs (no final LayerNorm) of
its eight middle blocks are the targets. Their mean, every token included, goes through
a noisy bottleneck (an MLP whose dropouts perturb it) and eight linear-attention
transformer blocks; the decoder outputs, deepest first, are paired with the target
layers. Targets and outputs are fused in two groups of four layers (mean), class and
register tokens dropped. Training minimises the loose cosine loss: per group, 1 − cosine
between each image's whole flattened target and output, with hard-point mining (the
gradient of the easy points, all but the hardest 1 − p, is scaled by 0.1; p ramps from 0
to 0.9). The anomaly map is, per group, 1 − cosine between target and output at each
patch, averaged over the groups, upsampled bilinearly and smoothed with a Gaussian; the
image score is the mean of the map's top 1 %.

Official values used (guojiajeremy/Dinomaly, read at commit c5c76d0):
  dinomaly_mvtec_sep.py and dinomaly_visa_sep.py, `train()` (the per-class scripts; the
  two are identical but for paths):
    target layers [2..9] for ViT-S/B, [4, 6, ..., 18] for ViT-L; fusion groups
    [[0, 1, 2, 3], [4, 5, 6, 7]] for encoder and decoder alike;
    bottleneck bMlp(D, 4D, D, drop=0.2); 8 decoder Blocks (heads as the encoder's,
    mlp_ratio 4, qkv_bias True, LayerNorm eps 1e-8, attn LinearAttention2, drop and
    drop_path 0 by default: no drop path, and Block has no LayerScale);
    init: Linear weights trunc_normal_(std=0.01, a=-0.03, b=0.03), biases 0, LayerNorm
    weight 1, bias 0; StableAdamW(lr=2e-3, betas=(0.9, 0.999), weight_decay=1e-4,
    amsgrad=True, eps=1e-8) (the multi-class *_uni scripts use eps=1e-10);
    WarmCosineScheduler(base 2e-3, final 2e-4, warmup_iters=100), stepped once per
    iteration; p = min(0.9 · it / 1000, 0.9), global_cosine_hm_percent(factor=0.1);
    clip_grad_norm(max_norm=0.1); batch 16, DataLoader(shuffle=True, drop_last=True)
    epochs until the iteration count; total_iters 5,000 (the *_uni scripts: 10,000).
  models/uad.py, ViTill: `prepare_tokens`, blocks up to the last target under no_grad,
    raw block outputs kept; bottleneck on the mean of all target layers; decoder outputs
    reversed; `remove_class_token=False` (prefix tokens dropped after fusion).
  models/vision_transformer.py: bMlp, LinearAttention2 (φ = elu + 1), Block.
  utils.py: global_cosine_hm_percent; cal_anomaly_maps (1 − cosine per group, bilinear
    with align_corners=True, mean over groups); evaluation_batch with
    get_gaussian_kernel(kernel_size=5, sigma=4) (zero-padded convolution) and
    max_ratio=0.01 (mean of the top int(0.01 · pixels) values); WarmCosineScheduler.
  optimizers/StableAdamW.py.

What the shared teacher and the benchmark change:
  - Backbone: `MethodSettings.teacher` (default dinov2_vitb14_reg, the official default
    encoder's checkpoint). The official loader builds every DINOv2 model with position
    embeddings interpolated with offset 0.1 and no antialiasing; the shared teacher
    follows the DINOv2 release (registered variants: antialiased, no offset), so at
    sizes other than 518 px the position embeddings differ slightly. ViT-g (40 blocks)
    has no official target layers and is refused.
  - Input: `l2bt.preprocess` as for every method: in `pad` mode (the paper) edge-pad
    to a square and bicubic resize to `image_size` (1036 by default: a 74 × 74 grid),
    in `aspect` mode the long side to `image_size` and a grid that follows the image;
    ImageNet normalisation. Official: resize to 448 × 448 and centre-crop 392, a
    28 × 28 grid that never sees the image's border.
  - Map: upsampled to the geometry's frame (pad: the padded square; aspect: the image)
    at full resolution and smoothed there with the official 5 × 5, σ = 4 Gaussian,
    then cropped to the image (`to_full_resolution`, through `l2bt.patch_predict`);
    official: smoothed at 256 × 256 px of the centre crop. At full resolution a patch
    spans more pixels, so the same kernel smooths less relative to a patch. The score
    is the mean of the top 1 % of the image's full-resolution map pixels.
  - Seed 0 (official 1); iterations and batch size from the settings
    (`dinomaly_iterations`, default 10,000; `dinomaly_batch_size`, default 16).
    Batches as the official loader's (each epoch a permutation, incomplete batches
    dropped), but of one input shape each (`epoch_batches`): with fewer images of a
    shape than the batch size, a batch is all of them (the official loader would have
    no batch at all, and aspect mode would lose whole shapes).
  - `precision="bf16"` runs the frozen encoder in bfloat16 (the decoder trains in
    float32, as official); the default fp32 is the official precision.

Cost, for a batch of B images of T = 1 + registers + h·w tokens of width D (h·w = (S/14)²
in pad mode), and
E = last target block + 1 encoder blocks (10 for ViT-S/B). Memory: the encoder runs
under no_grad and keeps only its 8 target outputs, 8·B·T·D floats; the decoder keeps
its activations for the backward pass, about 24·B·T·D floats per block and 15·B·T·D
for the bottleneck, ≈ 210·B·T·D floats for a whole step with the loss (measured on CPU
with autograd's saved-tensor hooks). For ViT-B at S = 1036 and B = 16 (B·T·D = 67 M)
that is ≈ 59 GB of activations, linear in B and in S², ≈ 8.5 GB at the official
392 px: a smaller GPU needs a smaller `dinomaly_batch_size`. Time per iteration, in
multiply-adds: the encoder E·B·T·(12·D² + 2·T·D) (its softmax attention is quadratic
in T), the decoder 3 · 8 · B·T·(12·D² + 2·D²/heads) (forward and backward; linear
attention is linear in T) and the bottleneck 3 · B·T·8·D²: ≈ 30 T for ViT-B at
S = 1036, B = 16 (the encoder 14 T of it), ≈ 3.4 T at 392 px. The encoder features
are recomputed every iteration, without a cache: caching them would save under half
of the work for N·8·T·D stored floats (N images), and the official recipe recomputes
them too. Predicting keeps no activations, only B·T·D floats per block at a time and
the 8 target layers.
"""

from __future__ import annotations

import time
from collections.abc import Generator, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import closing
from dataclasses import asdict, dataclass
from functools import partial
from itertools import islice
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import torch
from torch.nn import functional as F
from tqdm.auto import tqdm

from l2bt.config import TeacherConfig
from l2bt.device import resolve_device
from l2bt.errors import InputError
from l2bt.features import cache_key, input_geometries, iter_inputs
from l2bt.methods.artefacts import artefact_key, load_artefact, save_artefact
from l2bt.methods.base import MethodSettings
from l2bt.methods.dinomaly_decoder import (
    DecoderConfig,
    DinomalyDecoder,
    StableAdamW,
    WarmCosineSchedule,
    grouped_patches,
    hard_mining_cosine_loss,
    hard_mining_p,
    init_official,
)
from l2bt.patch_predict import predict_images
from l2bt.prediction import Prediction
from l2bt.preprocess import InputGeometry
from l2bt.teacher import COMPUTE_DTYPES, PRECISIONS, Teacher, load_teacher
from l2bt.teacher.vit import ARCHITECTURES

MODEL_FORMAT = "l2bt-dinomaly/1"
WEIGHTS_FILE = "decoder.safetensors"
LOSS_WINDOW = 100  # the final loss is the mean over the last 100 iterations, as logged officially

Item = TypeVar("Item")


@dataclass(frozen=True)
class DinomalyRecipe:
    """The official training and scoring values (sources in the module docstring)."""

    groups: tuple[tuple[int, ...], ...] = ((0, 1, 2, 3), (4, 5, 6, 7))
    lr: float = 2e-3
    final_lr: float = 2e-4
    warmup_iterations: int = 100
    betas: tuple[float, float] = (0.9, 0.999)
    weight_decay: float = 1e-4
    eps: float = 1e-8
    amsgrad: bool = True
    max_grad_norm: float = 0.1
    hard_p_final: float = 0.9
    hard_p_ramp_iterations: int = 1000
    easy_factor: float = 0.1
    gaussian_size: int = 5
    gaussian_sigma: float = 4.0
    max_ratio: float = 0.01


def target_layers(depth: int) -> tuple[int, ...]:
    """The official target encoder blocks for a teacher of `depth` blocks."""
    if depth == 12:  # ViT-S, ViT-B
        return tuple(range(2, 10))
    if depth == 24:  # ViT-L
        return tuple(range(4, 19, 2))
    raise InputError(f"Dinomaly's official recipe has target layers for ViT-S/B/L (12 or 24 "
                     f"blocks), not for a teacher of {depth} blocks")


# ---- encoder, maps and scores ------------------------------------------------------------------


def encoder_layers(teacher: Teacher, x: torch.Tensor, layers: Sequence[int],
                   precision: str = "fp32") -> list[torch.Tensor]:
    """Raw outputs (B, T, D) of the teacher's blocks `layers` (ascending), tokens
    [cls, registers, patches], no final LayerNorm (as ViTill); float32, no gradient.
    In bf16 the blocks are the teacher's cast-once copy (`Teacher.blocks_in`)."""
    blocks = teacher.blocks_in(COMPUTE_DTYPES[precision])
    kept = []
    with torch.no_grad():
        tokens = teacher.prepare_tokens(x)
        for index in range(max(layers) + 1):
            tokens = blocks[index](tokens)
            if index in layers:
                kept.append(tokens.float())
    return kept


def group_maps(targets: Sequence[torch.Tensor], outputs: Sequence[torch.Tensor]
               ) -> torch.Tensor:
    """(B, h, w, D) per group -> (B, G, h, w): 1 − cosine at each patch, per group."""
    return torch.stack([1 - F.cosine_similarity(t, o, dim=-1)
                        for t, o in zip(targets, outputs, strict=True)], dim=1)


def gaussian_kernel(size: int, sigma: float) -> torch.Tensor:
    """The official `get_gaussian_kernel`: a size × size Gaussian summing to 1, (1, 1, k, k)."""
    offsets = torch.arange(size, dtype=torch.float32) - (size - 1) / 2
    squared = offsets[None, :] ** 2 + offsets[:, None] ** 2  # (k, k)
    kernel = torch.exp(-squared / (2 * sigma**2))
    return (kernel / kernel.sum()).view(1, 1, size, size)


def to_full_resolution(patch_maps: torch.Tensor, geometry: InputGeometry,
                       kernel: torch.Tensor) -> np.ndarray:
    """(B, h, w) patch maps of images sharing one geometry -> (B, H, W) float32 maps at
    the images' own size.

    Dinomaly's map-to-image step: bilinear upsampling (align_corners=True, as official)
    to the frame of `geometry` (pad mode: the padded square the teacher saw; aspect
    mode: the image itself), the Gaussian `kernel` (zero padding), then the crop back to
    the image. The one place that reads the geometry `preprocess` returned.
    """
    maps = patch_maps.float().unsqueeze(1)  # (B, h, w) -> (B, 1, h, w)
    maps = F.interpolate(maps, size=(geometry.frame_height, geometry.frame_width),
                         mode="bilinear", align_corners=True)
    maps = F.conv2d(maps, kernel.to(maps.device), padding=kernel.shape[-1] // 2)
    rows = slice(geometry.top, geometry.top + geometry.height)
    cols = slice(geometry.left, geometry.left + geometry.width)
    maps = maps[:, 0, rows, cols]  # (B, 1, frame_h, frame_w) -> (B, H, W)
    return maps.cpu().numpy().astype(np.float32, copy=False)


def top_fraction_score(anomaly_map: np.ndarray, fraction: float) -> float:
    """Mean of the top int(fraction · pixels) map values, at least one (official
    `max_ratio`)."""
    values = anomaly_map.ravel()
    k = max(1, int(values.size * fraction))
    top = np.partition(values, values.size - k)[values.size - k:]
    return float(top.astype(np.float64).mean())


# ---- training ----------------------------------------------------------------------------------


def epoch_batches(shapes: Sequence[tuple[int, int]], batch_size: int,
                  rng: np.random.Generator) -> Iterator[list[int]]:
    """Image indices, batch by batch, without end; `shapes` are the images' input shapes.

    Each epoch: a fresh permutation, cut into batches of `batch_size` images of one
    shape; the incomplete last batch of a shape is dropped when that shape filled at
    least one batch, and the batches come in random order. With one shape (pad mode)
    this is the official DataLoader(shuffle=True, drop_last=True), except that fewer
    images than `batch_size` make one batch of all of them rather than none; in aspect
    mode no shape goes unseen.
    """
    if not shapes or batch_size < 1:
        raise ValueError(f"need images and a batch size ≥ 1, got {len(shapes)} and {batch_size}")
    while True:
        order = rng.permutation(len(shapes))
        by_shape: dict[tuple[int, int], list[int]] = {}
        for i in order:
            by_shape.setdefault(shapes[i], []).append(int(i))
        batches = []
        for members in by_shape.values():
            cut = [members[s:s + batch_size] for s in range(0, len(members), batch_size)]
            batches += [b for b in cut if len(b) == batch_size] or cut
        for k in rng.permutation(len(batches)):
            yield batches[k]


def prefetched(items: Iterator[Item]) -> Generator[Item, None, None]:
    """The items of `items`, each next one prepared in a background thread while the
    caller works on the current one (image decoding overlaps the training step)."""
    with ThreadPoolExecutor(max_workers=1) as pool:
        pending = pool.submit(next, items)
        while True:
            item = pending.result()
            pending = pool.submit(next, items)
            yield item


def training_inputs(images: Sequence[Path], config: TeacherConfig, batch_size: int,
                    seed: int) -> Iterator[torch.Tensor]:
    """(B, 3, h, w) preprocessed training batches in `epoch_batches` order, forever."""
    geometries = input_geometries(images, config)
    shapes = [(g.input_height, g.input_width) for g in geometries]
    for batch in epoch_batches(shapes, batch_size, np.random.default_rng(seed)):
        for _, x in iter_inputs([images[i] for i in batch], config,
                                [geometries[i] for i in batch], len(batch)):
            yield x


@dataclass(frozen=True)
class TrainingLog:
    """Per iteration: the loss and the number of images in the batch."""

    losses: list[float]
    batch_sizes: list[int]


def train_decoder(decoder: DinomalyDecoder, teacher: Teacher, batches: Iterator[torch.Tensor],
                  layers: Sequence[int], recipe: DinomalyRecipe, iterations: int,
                  device: torch.device, precision: str, progress: bool) -> TrainingLog:
    """The official training loop on already initialised `decoder`: per iteration set the
    warm-cosine lr, encode a batch (no gradient), decode, take the hard-mining loss,
    clip the gradient norm and step StableAdamW."""
    optimizer = StableAdamW(decoder.parameters(), lr=recipe.lr, betas=recipe.betas,
                            eps=recipe.eps, weight_decay=recipe.weight_decay,
                            amsgrad=recipe.amsgrad)
    schedule = WarmCosineSchedule(recipe.lr, recipe.final_lr, iterations,
                                  recipe.warmup_iterations)
    first_patch = 1 + teacher.num_register_tokens
    decoder.train()
    log = TrainingLog([], [])
    bar = tqdm(total=iterations, desc="dinomaly", unit="it", disable=not progress)
    with bar:
        for iteration, x in enumerate(islice(batches, iterations)):
            for group in optimizer.param_groups:
                group["lr"] = schedule.lr(iteration)
            x = x.to(device)
            grid = (x.shape[-2] // teacher.patch_size, x.shape[-1] // teacher.patch_size)
            encoded = encoder_layers(teacher, x, layers, precision)
            decoded = decoder(encoded)
            loss = hard_mining_cosine_loss(
                grouped_patches(encoded, recipe.groups, first_patch, grid),
                grouped_patches(decoded, recipe.groups, first_patch, grid),
                p=hard_mining_p(iteration, recipe.hard_p_final, recipe.hard_p_ramp_iterations),
                easy_factor=recipe.easy_factor)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(decoder.parameters(), recipe.max_grad_norm)
            optimizer.step()
            log.losses.append(loss.item())
            log.batch_sizes.append(x.shape[0])
            bar.update(1)
            bar.set_postfix(loss=f"{log.losses[-1]:.4f}")
    return log


# ---- the method --------------------------------------------------------------------------------


class Dinomaly:
    """Reconstruct the teacher's middle layers through a noisy bottleneck; anomaly = what
    the decoder fails to restore."""

    name = "dinomaly"

    def __init__(self, settings: MethodSettings, iterations: int | None = None,
                 batch_size: int | None = None, seed: int = 0,
                 recipe: DinomalyRecipe | None = None) -> None:
        self.settings = settings
        self.iterations = settings.dinomaly_iterations if iterations is None else iterations
        self.batch_size = settings.dinomaly_batch_size if batch_size is None else batch_size
        if self.iterations < 1 or self.batch_size < 1:
            raise InputError(f"Dinomaly needs ≥ 1 iteration and a batch size ≥ 1, got "
                             f"{self.iterations} and {self.batch_size}")
        if settings.precision not in PRECISIONS:
            raise InputError(f"precision must be one of {', '.join(PRECISIONS)}, "
                             f"got {settings.precision!r}")
        self.seed = seed
        self.recipe = recipe or DinomalyRecipe()
        self.device = resolve_device(settings.device)
        if settings.teacher not in ARCHITECTURES:
            raise InputError(f"unknown teacher {settings.teacher!r}; choose one of "
                             f"{', '.join(ARCHITECTURES)}")
        self.layers = target_layers(ARCHITECTURES[settings.teacher].depth)  # ViT-g: refused
        # TeacherConfig holds two layers: the first and last target blocks (all eight are
        # in `settings_dict`); it checks the input size and mode.
        self.teacher_config = TeacherConfig(settings.teacher, settings.weights,
                                            settings.image_size,
                                            (self.layers[0], self.layers[-1]),
                                            settings.input_mode)
        self.teacher: Teacher | None = None
        self.decoder: DinomalyDecoder | None = None
        self.kernel = gaussian_kernel(self.recipe.gaussian_size, self.recipe.gaussian_sigma)
        self.info: dict[str, Any] = {}  # how the decoder was trained

    # ---- fit ------------------------------------------------------------------------------

    def fit(self, train_images: Sequence[Path], work_dir: Path, progress: bool) -> None:
        """Train bottleneck and decoder on defect-free images, or reload those in
        `work_dir` when trained on the same images with the same settings."""
        images = [Path(p) for p in train_images]
        if not images:
            raise InputError("Dinomaly needs at least one training image")
        work_dir = Path(work_dir)
        teacher = load_teacher(self.settings.teacher, self.settings.weights)
        self.teacher = teacher.to(self.device)
        key = self._model_key(images)
        devices = [self.device] if self.device.type == "cuda" else []
        with torch.random.fork_rng(devices=devices):  # seeded, and the caller's RNG is kept
            torch.manual_seed(self.seed)
            self.decoder = self._new_decoder()
            if self._load(work_dir, key):
                return
            self._train(images, progress)
        self._save(work_dir, key)

    def _train(self, images: Sequence[Path], progress: bool) -> None:
        """Official initialisation, then `train_decoder` (dropout drawn from the RNG as
        seeded by `fit`, batches from the seeded `training_inputs`)."""
        assert self.decoder is not None and self.teacher is not None
        tic = time.perf_counter()
        init_official(self.decoder)
        inputs = training_inputs(images, self.teacher_config, self.batch_size, self.seed)
        with closing(prefetched(inputs)) as batches:
            log = train_decoder(self.decoder, self.teacher, batches, self.layers, self.recipe,
                                self.iterations, self.device, self.settings.precision,
                                progress)
        self.decoder.eval()
        self.info = {"n_train_images": len(images), "iterations_done": len(log.losses),
                     "mean_batch_size": round(float(np.mean(log.batch_sizes)), 3),
                     "final_loss": round(float(np.mean(log.losses[-LOSS_WINDOW:])), 6),
                     "train_seconds": round(time.perf_counter() - tic, 3)}

    def _new_decoder(self) -> DinomalyDecoder:
        assert self.teacher is not None
        config = DecoderConfig(dim=self.teacher.embed_dim, num_heads=self.teacher.arch.num_heads)
        return DinomalyDecoder(config).to(self.device)

    # ---- persistence ----------------------------------------------------------------------

    def settings_dict(self) -> dict[str, Any]:
        """Everything besides the training images that the trained decoder depends on."""
        return {"teacher": self.settings.teacher, "weights": self.settings.weights,
                "image_size": self.settings.image_size, "input_mode": self.settings.input_mode,
                "precision": self.settings.precision,
                "target_layers": list(self.layers), "iterations": self.iterations,
                "batch_size": self.batch_size, "seed": self.seed,
                "recipe": asdict(self.recipe)}

    def _model_key(self, images: Sequence[Path]) -> str:
        """A digest of the settings, the teacher's weights and the exact training files."""
        assert self.teacher is not None
        files = cache_key(self.teacher_config, self.teacher.weights_id,
                          self.settings.precision, images)
        return artefact_key({"format": MODEL_FORMAT, "files": files, **self.settings_dict()})

    def _save(self, work_dir: Path, key: str) -> None:
        assert self.decoder is not None
        save_artefact(work_dir, WEIGHTS_FILE, self.decoder.state_dict(), MODEL_FORMAT, key,
                      self.describe())

    def _load(self, work_dir: Path, key: str) -> bool:
        """Load the decoder in `work_dir` if it was trained with `key`; False otherwise."""
        assert self.decoder is not None
        artefact = load_artefact(work_dir, WEIGHTS_FILE, MODEL_FORMAT, key)
        if artefact is None:
            return False
        try:
            self.decoder.load_state_dict(artefact.tensors, strict=True)
        except RuntimeError:  # another decoder's weights: train again
            return False
        self.decoder.eval()
        described = artefact.described
        self.info = {k: described[k] for k in ("n_train_images", "iterations_done",
                                               "mean_batch_size", "final_loss",
                                               "train_seconds") if k in described}
        self.info["reloaded"] = True
        return True

    # ---- predict --------------------------------------------------------------------------

    def predict_batch(self, images: Sequence[np.ndarray]) -> list[Prediction]:
        """(H, W, 3) uint8 images -> maps at each image's own size and image scores, with
        Dinomaly's own map-to-image step and score."""
        if self.decoder is None or self.teacher is None:
            raise RuntimeError("Dinomaly.fit must run before predict_batch")
        return predict_images(self.patch_maps, images, self.teacher_config.image_size,
                              self.teacher_config.input_mode, self.device,
                              to_maps=partial(to_full_resolution, kernel=self.kernel),
                              score=partial(top_fraction_score,
                                            fraction=self.recipe.max_ratio))

    @torch.inference_mode()
    def patch_maps(self, x: torch.Tensor) -> torch.Tensor:
        """(B, 3, h, w) inputs -> (B, h/14, w/14): 1 − cosine per group, mean over groups."""
        assert self.teacher is not None and self.decoder is not None
        grid = (x.shape[-2] // self.teacher.patch_size, x.shape[-1] // self.teacher.patch_size)
        first_patch = 1 + self.teacher.num_register_tokens
        encoded = encoder_layers(self.teacher, x, self.layers, self.settings.precision)
        decoded = self.decoder(encoded)
        maps = group_maps(grouped_patches(encoded, self.recipe.groups, first_patch, grid),
                          grouped_patches(decoded, self.recipe.groups, first_patch, grid))
        return maps.mean(dim=1)  # (B, G, h, w) -> (B, h, w)

    def describe(self) -> dict[str, Any]:
        """Settings, teacher identity and training statistics, for the results files."""
        weights_id = None if self.teacher is None else self.teacher.weights_id
        return {"method": self.name, **self.settings_dict(), "teacher_weights_id": weights_id,
                **self.info}
