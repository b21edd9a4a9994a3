"""The L2BT model: a frozen teacher, two students, and the run folder that describes them.

A run folder holds `config.json` (every setting, the teacher's weights identity, how
and on what it was trained, and the calibrated thresholds when there are some) and
`students.safetensors`; `L2BT.load(run_dir)` needs nothing else. It is written to a
temporary folder and renamed into place, so a run that dies leaves no half-written
model. With thresholds (SPEC §7), predictions carry a mask, a verdict and regions.
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from safetensors.torch import load_file, save_file

from l2bt import __version__
from l2bt.anomaly_map import patch_anomaly, predict_images
from l2bt.config import L2BTConfig
from l2bt.data.image_io import read_image, to_rgb_array
from l2bt.decisions.calibrate import calibrate
from l2bt.decisions.cleanup import Cleanup
from l2bt.decisions.decide import decide
from l2bt.decisions.thresholds import Thresholds
from l2bt.errors import InputError
from l2bt.features import cached_train_features
from l2bt.prediction import Prediction
from l2bt.students import Student
from l2bt.teacher import Teacher, load_teacher
from l2bt.teacher.frozen import PRECISIONS
from l2bt.training import describe_training, normal_score_range, train_students
from l2bt.utils.atomic import atomic_folder, remove_stale_leftovers, write_text_atomic
from l2bt.utils.device import resolve_device

RUN_FORMAT = "l2bt-run/1"
ImageInput = str | Path | Image.Image | np.ndarray


def as_rgb(image: ImageInput) -> np.ndarray:
    """Any accepted image input as (H, W, 3) uint8 RGB."""
    if isinstance(image, str | Path):
        return read_image(image)
    return to_rgb_array(image)


class L2BT:
    """Teacher + forward/backward students; predicts anomaly maps at original resolution."""

    def __init__(
        self,
        config: L2BTConfig,
        teacher: Teacher,
        forward_student: Student,
        backward_student: Student,
        device: str | torch.device = "auto",
        precision: str = "fp32",
        info: dict[str, Any] | None = None,
        thresholds: Thresholds | None = None,
    ) -> None:
        self.config = config
        self.device = resolve_device(device)
        self.precision = precision
        self.teacher = teacher.to(self.device)
        self.forward_student = forward_student.to(self.device).eval()
        self.backward_student = backward_student.to(self.device).eval()
        self.info = dict(info or {})
        self.thresholds = thresholds

    # ---- training -------------------------------------------------------------------------

    @classmethod
    def fit(
        cls,
        train_images: Sequence[str | Path],
        config: L2BTConfig | None = None,
        device: str | torch.device = "auto",
        precision: str = "fp32",
        cache_dir: str | Path | None = None,
        progress: bool = True,
        teacher: Teacher | None = None,
        info: dict[str, Any] | None = None,
        calibration_images: Sequence[str | Path] = (),
        false_alarm_rate: float = 0.01,
        pixel_false_alarm_rate: float | None = None,
        cleanup: Cleanup | None = None,
    ) -> L2BT:
        """Train the students on defect-free images (teacher features cached on disk);
        with `calibration_images` (other defect-free images), calibrate thresholds at
        `false_alarm_rate` on them (and a segmentation threshold at
        `pixel_false_alarm_rate`, masks cleaned by `cleanup`: see `calibrate`)."""
        config = config or L2BTConfig()
        images = [Path(p) for p in train_images]
        if not images:
            raise InputError("no training images")
        device = resolve_device(device)
        if teacher is None:
            teacher = load_teacher(config.teacher.variant, weights=config.teacher.weights)
        teacher = teacher.to(device)
        start = time.perf_counter()
        features = cached_train_features(
            teacher,
            images,
            config.teacher,
            device,
            precision,
            None if cache_dir is None else Path(cache_dir),
            progress=progress,
        )
        feature_seconds = time.perf_counter() - start
        forward, backward, history = train_students(
            features, config.train, device, progress, precision
        )
        training = describe_training(images, history, feature_seconds, device)
        normal = normal_score_range(features, forward, backward, device, precision)
        model = cls(
            config,
            teacher,
            forward,
            backward,
            device,
            precision,
            info={**(info or {}), "training": training, "normal_patch_scores": normal},
        )
        if calibration_images:
            model.calibrate(
                calibration_images,
                false_alarm_rate,
                progress=progress,
                pixel_false_alarm_rate=pixel_false_alarm_rate,
                cleanup=cleanup,
            )
        return model

    def calibrate(
        self,
        images: Sequence[str | Path],
        false_alarm_rate: float = 0.01,
        batch_size: int = 4,
        progress: bool = True,
        *,
        pixel_false_alarm_rate: float | None = None,
        cleanup: Cleanup | None = None,
    ) -> Thresholds:
        """Set (and return) thresholds from defect-free `images` the students never saw;
        with `pixel_false_alarm_rate` β also the segmentation threshold masks then use
        (SPEC §7), masks cleaned by `cleanup`. Kept in memory: `save_thresholds(run_dir)`
        writes them into the run folder."""
        self.thresholds = calibrate(
            self,
            [Path(p) for p in images],
            false_alarm_rate,
            batch_size,
            progress,
            beta=pixel_false_alarm_rate,
            cleanup=cleanup,
        ).thresholds
        data = self.info.get("data")
        if isinstance(data, dict):  # the description of the calibration follows it
            calibration = {
                "source": "l2bt calibrate",
                "n_calibration": len(images),
                "calibration_images": [str(p) for p in images],
            }
            self.info["data"] = {**data, "calibration": calibration}
        return self.thresholds

    # ---- persistence ----------------------------------------------------------------------

    def save(self, run_dir: str | Path, overwrite: bool = False) -> Path:
        """Write the run folder atomically (temporary folder, then rename)."""
        run_dir = Path(run_dir)
        if run_dir.exists() and any(run_dir.iterdir()) and not overwrite:
            raise InputError("output folder exists and is not empty (use --overwrite)", run_dir)
        remove_stale_leftovers(run_dir.parent)  # staging folders of killed fits
        with atomic_folder(run_dir) as staging:
            tensors = {f"forward.{k}": v for k, v in self.forward_student.state_dict().items()}
            tensors |= {f"backward.{k}": v for k, v in self.backward_student.state_dict().items()}
            save_file(
                {k: v.detach().cpu().contiguous() for k, v in tensors.items()},
                str(staging / "students.safetensors"),
            )
            (staging / "config.json").write_text(json.dumps(self.describe(), indent=2))
            _plot_losses(self.info.get("training", {}).get("epoch_losses"), staging / "loss.png")
        return run_dir

    def save_thresholds(self, run_dir: str | Path) -> None:
        """Rewrite the run folder's config.json (atomically) with the current thresholds."""
        write_text_atomic(Path(run_dir) / "config.json", json.dumps(self.describe(), indent=2))

    def describe(self) -> dict[str, Any]:
        """What `config.json` holds: enough to rebuild the model and to know how it was made."""
        return {
            "format": RUN_FORMAT,
            "l2bt_version": __version__,
            "config": self.config.to_dict(),
            "teacher": {"weights_id": self.teacher.weights_id, "embed_dim": self.teacher.embed_dim},
            "precision": self.precision,
            **self.info,
            "thresholds": None if self.thresholds is None else self.thresholds.to_dict(),
        }

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
        config_path = run_dir / "config.json"
        if not config_path.is_file():
            raise InputError("not an l2bt run folder (no config.json)", run_dir)
        described, config, weights_id, thresholds = _read_run_config(config_path)
        teacher = load_teacher(config.teacher.variant, weights=weights or config.teacher.weights)
        if teacher.weights_id != weights_id:
            raise InputError(
                f"teacher weights {teacher.weights_id} differ from those the students were "
                f"trained with ({weights_id})",
                config_path,
            )
        forward, backward = _load_students(run_dir / "students.safetensors", teacher.embed_dim)
        info = {
            k: v
            for k, v in described.items()
            if k not in ("format", "l2bt_version", "config", "teacher", "precision", "thresholds")
        }
        return cls(
            config,
            teacher,
            forward,
            backward,
            device,
            precision or described["precision"],
            info,
            thresholds,
        )

    # ---- inference ------------------------------------------------------------------------

    def predict(self, image: ImageInput) -> Prediction:
        """Anomaly map (exactly the image's H × W, float32), image score and, with
        thresholds, mask, verdict and regions."""
        return self.predict_batch([image])[0]

    def predict_batch(self, images: Sequence[ImageInput]) -> list[Prediction]:
        """Predict several images; teacher batches by input shape, post-processing by size."""
        predictions = predict_images(
            self.patch_maps, [as_rgb(im) for im in images], self.config.teacher, self.device
        )
        return [decide(p, self.thresholds) for p in predictions]

    @torch.inference_mode()
    def patch_maps(self, x: torch.Tensor) -> torch.Tensor:
        """(B, 3, h, w) inputs -> (B, h/14, w/14) per-patch anomaly."""
        early, late = self.teacher.features(x, self.config.teacher.layers, self.precision)
        return patch_anomaly(
            self.forward_student, self.backward_student, early, late, self.precision
        )


def _read_run_config(
    path: Path,
) -> tuple[dict[str, Any], L2BTConfig, str, Thresholds | None]:
    """A run's config.json checked as user input: every problem one line naming the key."""
    try:
        described = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise InputError(f"unreadable run configuration ({e})", path) from e
    if not isinstance(described, dict) or described.get("format") != RUN_FORMAT:
        found = described.get("format") if isinstance(described, dict) else described
        raise InputError(f"unknown run format {found!r} (expected {RUN_FORMAT})", path)
    described.setdefault("precision", "fp32")
    try:
        config = L2BTConfig.from_dict(described.get("config"))
        teacher = described.get("teacher")
        weights_id = teacher.get("weights_id") if isinstance(teacher, dict) else None
        if not isinstance(weights_id, str):
            raise InputError(f"teacher.weights_id must be a string, got {weights_id!r}")
        if described["precision"] not in PRECISIONS:
            raise InputError(
                f"precision must be one of {', '.join(PRECISIONS)}, got {described['precision']!r}"
            )
        stored = described.get("thresholds")
        thresholds = None if stored is None else Thresholds.from_dict(stored)
    except InputError as e:
        raise InputError(e.problem, path) from e
    return described, config, weights_id, thresholds


def _load_students(path: Path, dim: int) -> tuple[Student, Student]:
    if not path.is_file():
        raise InputError("missing students.safetensors in run folder", path.parent)
    try:
        tensors = load_file(str(path))
    except Exception as e:  # safetensors raises its own error types for corrupt files
        raise InputError(f"unreadable student weights ({e})", path) from e
    students = []
    for prefix in ("forward.", "backward."):
        student = Student(dim)
        state = {k[len(prefix) :]: v for k, v in tensors.items() if k.startswith(prefix)}
        try:
            student.load_state_dict(state, strict=True)
        except RuntimeError as e:
            raise InputError(
                f"student weights do not fit the teacher (dim {dim}): {str(e).splitlines()[0]}",
                path,
            ) from e
        students.append(student)
    return students[0], students[1]


def _plot_losses(losses: Sequence[float] | None, path: Path) -> None:
    """A small loss-per-epoch figure in the run folder: easier to read than the JSON."""
    if not losses:
        return
    from l2bt.report.figures import plt, save_figure

    fig, ax = plt.subplots(figsize=(4.5, 3))
    ax.plot(range(1, len(losses) + 1), losses, marker="o" if len(losses) < 30 else None)
    ax.set_xlabel("epoch")
    ax.set_ylabel("loss (forward + backward)")
    ax.set_title("student training")
    ax.grid(alpha=0.3)
    save_figure(fig, path)
