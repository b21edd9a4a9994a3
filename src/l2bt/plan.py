"""The plan of a run, from image headers alone, shown before the first teacher pass.

For each image, the teacher inputs its settings make (one in pad and aspect mode, its
windows in tiles mode) and their patches: the same counts as `l2bt.preprocess` and
`l2bt.tiling`, computed here without torch (tests hold the two equal). A plan adds them
up: images, inputs per image, teacher passes (one per input; the fit's inputs once, as
their features are cached for every epoch) and the cache's size (2 layers · P · D fp16).

The sanity limit, tiles mode only: a plan is refused, unless forced, when the overlap
leaves a stride under T / 8, or when an image's windows hold more than 64 times its
pixels (the windows-per-megapixel limit as a multiple of the image, so that it does not
depend on T: a stride of T / 8 covers each pixel 64 times). Both are O(images) work.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from l2bt.config import TeacherConfig
from l2bt.errors import InputError
from l2bt.teacher.variants import ARCHITECTURES, PATCH_SIZE

MAX_COVERAGE = 64  # teacher pixels per image pixel, at most, unless forced
MIN_STRIDE_SHARE = 8  # the stride is at least T / 8, unless forced


@dataclass(frozen=True)
class Plan:
    """What a run's teacher will do: `inputs` of each image (one teacher pass each), the
    `patches` it caches, and the most teacher pixels per image pixel of any image."""

    inputs: tuple[int, ...]
    patches: int
    embed_dim: int
    coverage: float = 0.0

    @property
    def cache_bytes(self) -> int:
        return 2 * self.patches * self.embed_dim * 2  # two layers, fp16

    def lines(self) -> list[str]:
        """The plan in a few plain lines."""
        low, high = min(self.inputs, default=0), max(self.inputs, default=0)
        per_image = f"{low}" if low == high else f"{low} to {high}"
        cache = (
            "none"
            if not self.patches
            else (
                f"{self.cache_bytes / 2**20:,.1f} MiB ({self.patches:,} patches of "
                f"{self.embed_dim} values, 2 layers, fp16)"
            )
        )
        return [
            f"plan: {len(self.inputs)} images, {per_image} teacher inputs per image",
            f"plan: {sum(self.inputs):,} teacher passes, one per input",
            f"plan: feature cache {cache}",
        ]


def axis_windows(length: int, size: int, overlap: int) -> int:
    """Windows along one side (`l2bt.tiling.window_starts`, counted)."""
    span = length - size
    return 1 if span <= 0 else -(-span // (size - overlap)) + 1


def image_inputs(height: int, width: int, teacher: TeacherConfig) -> tuple[int, int]:
    """(teacher inputs, their patches in all) of one H × W image."""
    size = teacher.image_size
    if teacher.input_mode == "pad":
        return 1, (size // PATCH_SIZE) ** 2
    if teacher.input_mode == "aspect":
        short = int(size * min(height, width) / max(height, width) / PATCH_SIZE + 0.5)
        return 1, (size // PATCH_SIZE) * max(1, short)
    tiles = teacher.tiles
    rows, cols = (max(1, int(side * tiles.scale + 0.5)) for side in (height, width))
    count = axis_windows(max(rows, tiles.size), tiles.size, tiles.min_overlap) * axis_windows(
        max(cols, tiles.size), tiles.size, tiles.min_overlap
    )
    return count, count * (tiles.size // PATCH_SIZE) ** 2


def make_plan(
    cached: Sequence[tuple[int, int]],
    teacher: TeacherConfig,
    others: Sequence[tuple[int, int]] = (),
) -> Plan:
    """The plan over the (H, W) sizes of images whose features are `cached` (a fit's
    training images) and of `others` the teacher only passes (calibration, test)."""
    sizes = [*cached, *others]
    counted = [image_inputs(h, w, teacher) for h, w in sizes]  # (inputs, patches) each
    side = teacher.tiles.size if teacher.input_mode == "tiles" else 0
    coverage = max(
        (n * side**2 / (h * w) for (n, _), (h, w) in zip(counted, sizes, strict=True)),
        default=0.0,
    )
    patches = sum(p for _, p in counted[: len(cached)])
    dim = ARCHITECTURES[teacher.variant].embed_dim
    return Plan(tuple(n for n, _ in counted), patches, dim, coverage)


def check_plan(plan: Plan, teacher: TeacherConfig, force: bool) -> None:
    """Refuse a tiles plan over the sanity limit (one line naming the flag) unless forced."""
    if force or teacher.input_mode != "tiles":
        return
    tiles = teacher.tiles
    stride = tiles.size - tiles.min_overlap
    if stride * MIN_STRIDE_SHARE < tiles.size:
        raise InputError(
            f"--tile-overlap {tiles.min_overlap} leaves a stride of {stride} px, under "
            f"T / {MIN_STRIDE_SHARE} for --tile-size {tiles.size} "
            f"({sum(plan.inputs):,} teacher passes): lower it, or add --force"
        )
    if plan.coverage > MAX_COVERAGE:
        raise InputError(
            f"--tile-size {tiles.size} windows hold {plan.coverage:.0f} times an image's "
            f"pixels (limit {MAX_COVERAGE}): use a smaller --tile-overlap or --tile-size, "
            "another --input-mode, or add --force"
        )


def estimate_line(what: str, done: int, total: int, seconds: float) -> str:
    """After the first batch: how long all `total` items of `what` will take."""
    rate = seconds / max(done, 1)
    all_of = _duration(rate * total)
    return f"{what}: first {done} of {total:,} in {seconds:.1f} s; about {all_of} in all"


def _duration(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"
