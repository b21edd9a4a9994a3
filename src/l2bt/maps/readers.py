"""Reading one test sample's map, masks and predicted mask for the evaluator, in reader
threads: pass 1 only the map's defect pixels (from a memory mapping when the TIFF allows),
pass 2 the whole map with the mask rebuilt from pass 1's defect indices; and the header
check that names the first sample whose files are missing or of the wrong size."""

from __future__ import annotations

import functools
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from l2bt.data.image_io import image_size, read_mask
from l2bt.data.sample import Sample
from l2bt.errors import InputError
from l2bt.maps.layout import MapsFolder, check_map_shape, check_shape, mapped_or_read, widened
from l2bt.maps.masks import sample_mask
from l2bt.metrics.checks import all_finite
from l2bt.metrics.low_res import resize_bilinear, resize_nearest


@dataclass(frozen=True)
class Files:
    folder: MapsFolder
    predicted_masks: bool  # every sample has one (else none has)

    def map(self, sample: Sample) -> Path:
        return self.folder.map(sample.key)

    def predicted(self, sample: Sample) -> Path:
        return self.folder.mask(sample.key)


@dataclass(frozen=True)
class Defects:
    """Pass 1's reading of one image with a mask."""

    mask: np.ndarray  # (H, W) bool
    scores: np.ndarray  # (D,) the map at the mask's pixels, row-major
    indices: np.ndarray  # (D,) their flat indices
    low_res: tuple[np.ndarray, np.ndarray] | None  # (N, N) map and mask


@dataclass(frozen=True)
class Image:
    """Pass 2's reading of one image."""

    anomaly_map: np.ndarray  # (H, W)
    mask: np.ndarray  # (H, W) bool
    predicted_mask: np.ndarray | None  # (H, W) bool
    low_res: tuple[np.ndarray, np.ndarray] | None  # (N, N) map and mask


def read_defects(sample: Sample, files: Files, low_res: int | None) -> Defects:
    hw = image_size(sample.image)
    mask = sample_mask(sample, hw)
    indices = np.flatnonzero(mask)  # (D,) int64
    indices = indices.astype(np.int32) if mask.size < 2**31 else indices
    source = mapped_or_read(files.map(sample), hw)
    scores = widened(np.asarray(source.reshape(-1)[indices]))  # (H·W,): only D pixels read
    if not all_finite(scores):
        raise InputError("anomaly map has non-finite values (NaN or infinity)", files.map(sample))
    small = None
    if low_res is not None:
        small = (resize_bilinear(source, low_res), resize_nearest(mask, low_res))
    return Defects(mask, scores, indices, small)


def read_image(
    sample: Sample, files: Files, indices: np.ndarray | None, low_res: int | None
) -> Image:
    hw = image_size(sample.image)
    path = files.map(sample)
    anomaly_map = mapped_or_read(path, hw)
    if isinstance(anomaly_map, np.memmap) and not all_finite(anomaly_map):
        # (this read also brings the pages into the page cache for the counting thread)
        raise InputError("anomaly map has non-finite values (NaN or infinity)", path)
    if indices is None or indices.size == 0:
        mask = _no_defects(hw)
    else:
        mask = np.zeros(hw, dtype=bool)
        mask.reshape(-1)[indices] = True  # (H, W) -> (H·W,), a view
    predicted = None
    if files.predicted_masks:
        predicted = read_mask(files.predicted(sample), 127.0)
        check_shape(files.predicted(sample), predicted.shape, hw, what="predicted mask")
    small = None
    if low_res is not None:
        small = (resize_bilinear(anomaly_map, low_res), resize_nearest(mask, low_res))
    return Image(anomaly_map, mask, predicted, small)


@functools.lru_cache(maxsize=8)
def _no_defects(hw: tuple[int, int]) -> np.ndarray:
    """A read-only all-False (H, W) mask, shared by the defect-free images of a size."""
    mask = np.zeros(hw, dtype=bool)
    mask.flags.writeable = False
    return mask


class HeaderCheck:
    """Checks, in a background thread and in sample order, that every image's header is
    readable and its map and predicted mask exist with its size (headers only)."""

    def __init__(self, samples: Sequence[Sample], files: Files) -> None:
        self._order = {s.key: i for i, s in enumerate(samples)}
        self._error: InputError | None = None
        self._failed_at = len(samples)  # the index of the sample with the problem
        self._thread = threading.Thread(
            target=self._run, args=(samples, files), name="l2bt-check", daemon=True
        )
        self._thread.start()

    def _run(self, samples: Sequence[Sample], files: Files) -> None:
        for i, s in enumerate(samples):
            try:
                hw = image_size(s.image)
                check_map_shape(files.map(s), hw)
                if files.predicted_masks:
                    check_shape(
                        files.predicted(s),
                        image_size(files.predicted(s)),
                        hw,
                        what="predicted mask",
                    )
            except InputError as e:
                self._failed_at, self._error = i, e
                return

    def raise_if_failed(self) -> None:
        if self._error is not None:
            raise self._error

    def finish(self, before: Sample | None = None) -> None:
        """Wait for the check; raise its problem, if any (with `before`: only a problem
        of an earlier sample than that one)."""
        self._thread.join()
        if before is None or self._failed_at < self._order[before.key]:
            self.raise_if_failed()
