"""What `l2bt predict` predicts: image files and folders as items with unique keys, and the
check that no output lands on or among them.

A key is an item's output path relative to the output folder, without extension: a file
keeps its stem, a folder keeps its own name and inner tree.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from l2bt.data.image_io import is_image_file
from l2bt.errors import InputError
from l2bt.maps.layout import MapsFolder


@dataclass(frozen=True)
class PredictItem:
    image: Path
    key: str  # output path relative to the output folder, without extension
    folder: Path | None = None  # the input folder it was found in, if any


def collect_inputs(inputs: Sequence[str | Path]) -> list[PredictItem]:
    """Image files and folders (searched recursively) as items with unique keys."""
    items: list[PredictItem] = []
    for raw in inputs:
        path = Path(raw)
        if path.is_dir():
            found = sorted(p for p in path.rglob("*") if is_image_file(p))
            if not found:
                raise InputError("no image files in folder", path)
            for p in found:
                key = (Path(path.name) / p.relative_to(path)).with_suffix("").as_posix()
                items.append(PredictItem(p, key, path))
        elif path.is_file():
            items.append(PredictItem(path, path.stem))
        else:
            raise InputError("input not found", path)
    seen: dict[str, Path] = {}
    for item in items:
        if item.key in seen:
            raise InputError(
                f"two inputs would write the same map {item.key}.tiff "
                f"(the other is {seen[item.key]})",
                item.image,
            )
        seen[item.key] = item.image
    return items


def check_outputs_spare_inputs(items: Sequence[PredictItem], folder: MapsFolder) -> None:
    """No output may land on or among the inputs: a folder that is a file, an output tree
    inside an input folder (whose next predict would read the maps as inputs), or a map,
    mask or overlay whose path is one of the inputs, stops before anything is written."""
    if folder.root.exists() and not folder.root.is_dir():
        raise InputError("--out must be a folder, but this is a file", folder.root)
    for source in dict.fromkeys(item.folder for item in items if item.folder is not None):
        tree, inside = (folder.root / source.name).resolve(), source.resolve()
        if tree == inside or inside in tree.parents:
            raise InputError(
                f"--out {folder.root} would write the outputs of this input folder inside "
                "it (a folder keeps its name under --out); choose an --out outside it",
                source,
            )
    inputs = {item.image.resolve() for item in items}
    for item in items:
        for output in (folder.map(item.key), folder.mask(item.key), folder.overlay(item.key)):
            if output.resolve() in inputs:
                raise InputError(
                    f"--out {folder.root} would overwrite this input image "
                    f"(the output of {item.image}); choose another --out",
                    output,
                )
