"""The L2BT model: a frozen teacher, two students, and the run folder that describes them.

A run folder holds `config.json` (the run's record, `l2bt.run`: every setting, the
teacher's weights identity, how and on what it was trained, the students' identity, and
the calibrated thresholds when there are some), `students.safetensors` and `loss.png`;
`L2BT.load(run_dir)` needs nothing else. It is written to a temporary folder and renamed
into place, so a run that dies leaves no half-written model. With thresholds (SPEC §7),
predictions carry a mask, a verdict and regions; `predict_maps` gives them undecided.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from l2bt.anomaly_map import patch_anomaly, predict_images
from l2bt.config import L2BTConfig, Precision, check_precision, resolved_patch_batch
from l2bt.data.image_io import read_image, to_rgb_array
from l2bt.decisions.calibrate import CalibrationSettings, calibrate
from l2bt.decisions.decide import decided
from l2bt.decisions.thresholds import Thresholds
from l2bt.errors import InputError
from l2bt.features import cached_train_features
from l2bt.prediction import Prediction
from l2bt.run import (
    CONFIG_FILE,
    L2BT_METHOD,
    LOSS_PLOT,
    CalibrationFacts,
    DataFacts,
    RunDescription,
    read_run,
    write_run,
)
from l2bt.students import Student
from l2bt.students_file import load_students, save_students
from l2bt.teacher import Teacher, load_teacher
from l2bt.training import describe_training, normal_score_range, plot_losses, train_students
from l2bt.utils.atomic import atomic_folder, remove_stale_leftovers
from l2bt.utils.device import resolve_device

ImageInput = str | Path | Image.Image | np.ndarray


class L2BT:
    """Teacher + forward/backward students; predicts anomaly maps at original resolution.

    `record` is the run's description; `precision` the compute precision of this process
    (the record's, the one it was trained in, unless overridden at load)."""

    def __init__(
        self,
        record: RunDescription,
        teacher: Teacher,
        forward_student: Student,
        backward_student: Student,
        device: str | torch.device = "auto",
        precision: Precision | None = None,
    ) -> None:
        self.record = record
        self.device = resolve_device(device)
        self.precision: Precision = precision or record.precision
        self.teacher = teacher.to(self.device)
        self.forward_student = forward_student.to(self.device).eval()
        self.backward_student = backward_student.to(self.device).eval()

    @property
    def config(self) -> L2BTConfig:
        return self.record.l2bt_config

    @property
    def thresholds(self) -> Thresholds | None:
        return self.record.thresholds

    @thresholds.setter
    def thresholds(self, thresholds: Thresholds | None) -> None:
        """New thresholds (or none) in the record; `save_thresholds` writes them."""
        self.record = self.record.with_thresholds(thresholds)

    @classmethod
    def from_parts(
        cls,
        config: L2BTConfig,
        teacher: Teacher,
        forward_student: Student,
        backward_student: Student,
        device: str | torch.device = "auto",
        precision: str = "fp32",
    ) -> L2BT:
        """A model of students made elsewhere (e.g. untrained, to time or export a graph):
        its record holds the settings and the teacher's identity, no training facts."""
        compute = check_precision(precision)
        record = RunDescription(
            L2BT_METHOD,
            config.teacher,
            teacher.weights_id,
            teacher.embed_dim,
            compute,
            config.train,
        )
        return cls(record, teacher, forward_student, backward_student, device)

    # ---- training -------------------------------------------------------------------------

    @classmethod
    def fit(
        cls,
        train_images: Sequence[str | Path],
        config: L2BTConfig | None = None,
        *,
        device: str | torch.device = "auto",
        precision: str = "fp32",
        bit_depth: int | None = None,
        cache_dir: str | Path | None = None,
        teacher: Teacher | None = None,
        data: DataFacts | None = None,
    ) -> L2BT:
        """Train the students on defect-free images (teacher features cached on disk;
        images of more than 8 bits read as `bit_depth`-bit, None: as each file declares).
        `data` describes where the images came from, for the record. Then `calibrate`
        on other defect-free images gives thresholds."""
        config = config or L2BTConfig()
        compute = check_precision(precision)
        images = [Path(p) for p in train_images]
        if not images:
            raise InputError("no training images")
        device = resolve_device(device)
        if teacher is None:
            teacher = load_teacher(config.teacher.variant, weights=config.teacher.weights)
        teacher = teacher.to(device)
        start = time.perf_counter()
        root = None if cache_dir is None else Path(cache_dir)
        features = cached_train_features(
            teacher, images, config.teacher, device, compute, root, bit_depth=bit_depth
        )
        feature_seconds = time.perf_counter() - start
        patch_batch = resolved_patch_batch(config.train, config.teacher.input_mode)
        train = replace(config.train, patch_batch=patch_batch)  # the record says which
        forward, backward, history = train_students(features, train, device, compute, patch_batch)
        record = RunDescription(
            method=L2BT_METHOD,
            teacher=config.teacher,
            weights_id=teacher.weights_id,
            embed_dim=teacher.embed_dim,
            precision=compute,
            train=train,
            bit_depth=bit_depth,
            normal_scores=normal_score_range(features, forward, backward, device, compute),
            training=describe_training(images, history, feature_seconds, device),
            data=data,
        )
        return cls(record, teacher, forward, backward, device)

    def calibrate(
        self,
        images: Sequence[str | Path],
        settings: CalibrationSettings | None = None,
        batch_size: int = 4,
        source: str = "l2bt calibrate",
    ) -> Thresholds:
        """Set (and return) thresholds from defect-free `images` the students never saw, at
        the rates and with the clean-up of `settings` (SPEC §7); `source` says how the
        images were chosen. Kept in memory: `save_thresholds(run_dir)` writes them."""
        paths = [Path(p) for p in images]
        thresholds = calibrate(self, paths, settings or CalibrationSettings(), batch_size)
        facts = CalibrationFacts(source, len(paths), tuple(str(p) for p in paths))
        data = None if self.record.data is None else replace(self.record.data, calibration=facts)
        self.record = replace(self.record, thresholds=thresholds.thresholds, data=data)
        return thresholds.thresholds

    # ---- persistence ----------------------------------------------------------------------

    def save(self, run_dir: str | Path, overwrite: bool = False) -> Path:
        """Write the run folder atomically (temporary folder, then rename)."""
        run_dir = Path(run_dir)
        if run_dir.exists() and any(run_dir.iterdir()) and not overwrite:
            raise InputError("output folder exists and is not empty (use --overwrite)", run_dir)
        remove_stale_leftovers(run_dir.parent)  # staging folders of killed fits
        with atomic_folder(run_dir) as staging:
            identity = save_students(
                staging, self.forward_student, self.backward_student, self.record
            )
            self.record = replace(self.record, students=identity)
            write_run(staging, self.record)
            if self.record.training is not None:
                plot_losses(self.record.training.epoch_losses, staging / LOSS_PLOT)
        return run_dir

    def save_thresholds(self, run_dir: str | Path) -> None:
        """Rewrite the run folder's config.json (atomically) with the current thresholds."""
        write_run(Path(run_dir), self.record)

    @classmethod
    def load(
        cls,
        run_dir: str | Path,
        device: str | torch.device = "auto",
        precision: str | None = None,
        weights: str | None = None,
    ) -> L2BT:
        """Rebuild a model from a run folder written by `l2bt fit`.

        `weights` overrides where the teacher checkpoint is read from (e.g. the same file
        at a new path); its identity must still match the one the students were trained on.
        """
        run_dir = Path(run_dir)
        record = read_run(run_dir)
        if record.method != L2BT_METHOD:
            raise InputError(f"a {record.method} model, not an L2BT run", run_dir)
        teacher_config = record.l2bt_config.teacher
        teacher = load_teacher(teacher_config.variant, weights=weights or teacher_config.weights)
        if teacher.weights_id != record.weights_id:
            raise InputError(
                f"teacher weights {teacher.weights_id} differ from those the students were "
                f"trained with ({record.weights_id})",
                run_dir / CONFIG_FILE,
            )
        forward, backward = load_students(run_dir, record, teacher.embed_dim)
        compute = None if precision is None else check_precision(precision)
        return cls(record, teacher, forward, backward, device, compute)

    def describe(self) -> dict[str, object]:
        """The run's record as JSON (what config.json holds)."""
        return self.record.to_dict()

    # ---- inference ------------------------------------------------------------------------

    def as_rgb(self, image: ImageInput) -> np.ndarray:
        """Any accepted image input as (H, W, 3) uint8 RGB, read at the run's bit depth."""
        if isinstance(image, str | Path):
            return read_image(image, bit_depth=self.record.bit_depth)
        return to_rgb_array(image, self.record.bit_depth)

    def predict(self, image: ImageInput) -> Prediction:
        """Anomaly map (exactly the image's H × W, float32), image score and, with
        thresholds, mask, verdict and regions."""
        return self.predict_batch([image])[0]

    def predict_batch(self, images: Sequence[ImageInput]) -> list[Prediction]:
        """Predict and decide several images (`predict` for each, batched)."""
        return decided(self, [self.as_rgb(im) for im in images])

    def predict_maps(self, images: Sequence[np.ndarray]) -> list[Prediction]:
        """(H, W, 3) uint8 RGB images -> undecided predictions (map and score); teacher
        batches by input shape, post-processing by size."""
        return predict_images(self.patch_maps, images, self.config.teacher, self.device)

    @torch.inference_mode()
    def patch_maps(self, x: torch.Tensor) -> torch.Tensor:
        """(B, 3, h, w) inputs -> (B, h/14, w/14) per-patch anomaly."""
        early, late = self.teacher.features(x, self.config.teacher.layers, self.precision)
        return patch_anomaly(
            self.forward_student, self.backward_student, early, late, self.precision
        )
