"""Zoo weights, honestly: random backbones on request, else the authors' file or one line.

`--weights random`: every zoo model is built with random weights, through its
`pre_trained=False` flag or, for the models that hard-code a pretrained timm backbone
(STFPM, SuperSimpleNet, Dinomaly), with `timm.create_model` told `pretrained=False`
while the model is made; EfficientAD keeps its random teacher (its download is skipped).
Otherwise `check_pretrained` finds the pretrained file in the cache anomalib reads
(Hugging Face's for timm backbones, anomalib's own for EfficientAD's teacher) before any
training, and a missing one stops with one line naming the model, the file and where it
goes. Nothing is downloaded here.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from l2bt.errors import InputError
from l2bt.methods.zoo.models import ZooModel

HF_FILES = ("model.safetensors", "pytorch_model.bin")  # what timm reads from a hub repo
EFFICIENT_AD_DIR = "efficientad_pretrained_weights"


def check_pretrained(model: ZooModel) -> str:
    """The pretrained file `model` will read (a path); InputError when it is not there."""
    if model.name == "efficient_ad":
        from anomalib.utils.path import get_pretrained_weights_dir

        path = get_pretrained_weights_dir() / EFFICIENT_AD_DIR / "pretrained_teacher_s.pth"
        if not path.is_file():
            raise InputError(
                f"anomalib:{model.name} needs its pretrained teacher {path.name}: put it at "
                f"{path} (or use --weights random)"
            )
        return str(path)
    return _hub_file(model)


def _hub_file(model: ZooModel) -> str:
    from huggingface_hub import constants, try_to_load_from_cache
    from timm.models import get_pretrained_cfg

    repo = get_pretrained_cfg(model.backbone).hf_hub_id
    for filename in HF_FILES:
        found = try_to_load_from_cache(repo, filename)
        if isinstance(found, str):
            return found
    where = Path(constants.HF_HUB_CACHE) / f"models--{repo.replace('/', '--')}"
    raise InputError(
        f"anomalib:{model.name} needs the pretrained backbone {repo} ({HF_FILES[0]} from the "
        f"Hugging Face hub): put it in the hub cache at {where} (or use --weights random)"
    )


def check_imagenet(model: ZooModel, imagenet_dir: str) -> None:
    """EfficientAD's penalty images: a folder of class folders of images (ImageNette)."""
    if model.needs_imagenet and not any(p.is_dir() for p in _children(Path(imagenet_dir))):
        raise InputError(
            f"anomalib:{model.name} needs ImageNette (its penalty images, a folder of class "
            f"folders): put it at {Path(imagenet_dir).resolve()} or pass --imagenet-dir DIR"
        )


def _children(folder: Path) -> list[Path]:
    return list(folder.iterdir()) if folder.is_dir() else []


def constructor_arguments(model: ZooModel, random: bool) -> dict[str, Any]:
    """Keyword arguments of the anomalib class that set its weights."""
    return {"pre_trained": not random} if model.random_weights == "pre_trained" else {}


@contextmanager
def timm_random(model: ZooModel, random: bool) -> Iterator[None]:
    """While a model is made: timm's pretrained download off, for models that hard-code it."""
    if not (random and model.random_weights == "timm"):
        yield
        return
    import timm

    create = timm.create_model

    def random_model(*args: Any, **kwargs: Any) -> Any:
        return create(*args, **{**kwargs, "pretrained": False})

    timm.create_model = random_model
    try:
        yield
    finally:
        timm.create_model = create
