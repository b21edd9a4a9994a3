"""Writing an L2BT model as one ONNX file, and reading back what it says about itself.

`export_onnx(model, path)` traces `L2BTGraph` with the dynamo-based exporter (opset ≥ 18):
the image's height and width stay symbolic, so padding, frame, crop and top-k count are
computed from the input's shape inside the graph, and the antialiased bicubic resize
becomes ONNX Resize (cubic, antialias=1, cubic_coeff_a=−0.5, exclude_outside=1). The
TorchScript exporter fails on that resize and freezes sizes into constants. The file
holds its weights (only the blocks up to the deepest used layer; over protobuf's 2 GiB it
is refused), is checked with `onnx.checker` and written atomically. Metadata:
`l2bt_config` (the run's `config.json`), `l2bt_version`, and `l2bt_graph` (`input_mode`,
`image_size`, `input_hw`, `outputs`, `opset`, `source`: a digest of the run folder's files,
by which `l2bt.export.cache` caches, and `image_hw` for a tiles graph). Aspect- and
tiles-mode graphs are exported for one image size (`export/tiled_graph.py`: the windows).
"""

from __future__ import annotations

import contextlib
import copy
import json
import logging
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch

from l2bt import __version__
from l2bt.errors import InputError
from l2bt.export.graph import L2BTGraph
from l2bt.export.metadata import CONFIG_KEY, GRAPH_KEY, INPUT_NAME, VERSION_KEY, GraphInfo
from l2bt.export.tiled_graph import TiledL2BTGraph
from l2bt.model import L2BT
from l2bt.preprocess import InputGeometry
from l2bt.utils.atomic import atomic_file, remove_stale_leftovers

MIN_OPSET = 18
TEACHER_INPUT = "teacher_input"  # the input of `with_teacher_input`'s graph
SINGLE_FILE_LIMIT = 2**31 - 2**26  # protobuf's 2 GiB, less room for the graph itself
EXAMPLE_IMAGE_HW = (97, 131)  # traced with an odd, non-square size: nothing specialises


def teacher_input_hw(model: L2BT, image_hw: tuple[int, int] | None) -> tuple[int, int]:
    """The teacher input the graph is built for: size² in pad mode; in aspect mode the
    input of `image_hw` images; T² in tiles mode (`image_hw` required in both, refused in
    pad mode)."""
    teacher = model.config.teacher
    if teacher.input_mode == "pad":
        if image_hw is not None:
            raise InputError(
                "--image-hw is for aspect-mode runs: a pad-mode graph takes images of any size"
            )
        return teacher.image_size, teacher.image_size
    if image_hw is None:
        raise InputError(
            f"a {teacher.input_mode}-mode run has a teacher input layout per image shape: "
            "give --image-hw H,W, the size of the images the graph will see"
        )
    if teacher.input_mode == "tiles":
        return teacher.tiles.size, teacher.tiles.size
    geometry = InputGeometry.aspect(*image_hw, teacher.image_size)
    return geometry.input_height, geometry.input_width


def require_export_tools(path: str | Path) -> None:
    """One plain line naming the file to write when onnx or onnxscript is missing."""
    import importlib.util

    missing = [name for name in ("onnx", "onnxscript") if importlib.util.find_spec(name) is None]
    if missing:
        raise InputError(
            f"exporting needs {' and '.join(missing)} (pip install 'l2bt[export]')", path
        )


def check_opset(opset: int) -> None:
    if opset < MIN_OPSET:
        raise InputError(f"--opset must be at least {MIN_OPSET} (antialiased Resize), got {opset}")


def export_onnx(
    model: L2BT,
    path: str | Path,
    opset: int = MIN_OPSET,
    image_hw: tuple[int, int] | None = None,
    source: str | None = None,
) -> GraphInfo:
    """Write `model` as one checked ONNX file at `path` (atomically); see the module
    docstring for the graph and its metadata."""
    require_export_tools(path)
    check_opset(opset)
    import onnx

    input_hw = teacher_input_hw(model, image_hw)
    tiled = model.config.teacher.input_mode == "tiles"
    if tiled:
        assert image_hw is not None  # teacher_input_hw requires it
        graph: L2BTGraph = TiledL2BTGraph(model, image_hw).eval()
    else:
        graph = L2BTGraph(model, input_hw).eval()
    if model.device.type != "cpu":
        graph = copy.deepcopy(graph).cpu()  # traced on the CPU; the model stays where it is
    _check_single_file(graph)
    info = GraphInfo(
        model.config.teacher.input_mode,
        model.config.teacher.image_size,
        input_hw,
        graph.output_names,
        opset,
        source,
        image_hw if tiled else None,
    )
    proto = _trace(graph, opset, image_hw if tiled else None)
    onnx.helper.set_model_props(
        proto,
        {
            CONFIG_KEY: json.dumps(model.describe()),
            VERSION_KEY: __version__,
            GRAPH_KEY: json.dumps(info.to_dict()),
        },
    )
    onnx.checker.check_model(proto)
    remove_stale_leftovers(Path(path).parent)  # the temporaries of a killed export
    with atomic_file(Path(path)) as tmp:
        onnx.save_model(proto, str(tmp))
    return info


def _check_single_file(graph: L2BTGraph) -> None:
    size = sum(t.numel() * t.element_size() for t in [*graph.parameters(), *graph.buffers()])
    if size > SINGLE_FILE_LIMIT:
        raise InputError(
            f"the graph's weights take {size / 2**30:.1f} GiB: more than one "
            "ONNX file can hold (2 GiB); export a smaller teacher"
        )


def _trace(graph: L2BTGraph, opset: int, fixed_hw: tuple[int, int] | None) -> Any:
    """The exported, optimised ONNX ModelProto: the image's height and width symbolic, or
    `fixed_hw` (a tiles-mode graph, whose windows are cut for one size)."""
    height = torch.export.Dim("height", min=2)
    width = torch.export.Dim("width", min=2)
    example = torch.zeros((*(fixed_hw or EXAMPLE_IMAGE_HW), 3), dtype=torch.uint8)
    dynamic = None if fixed_hw else {"image": {0: height, 1: width}}
    with _quiet_exporter():
        program = torch.onnx.export(
            graph,
            (example,),
            dynamo=True,
            opset_version=opset,
            verbose=False,
            input_names=[INPUT_NAME],
            output_names=list(graph.output_names),
            dynamic_shapes=dynamic,
            external_data=False,
        )
    assert program is not None  # dynamo=True always returns the program
    return program.model_proto


@contextlib.contextmanager
def _quiet_exporter() -> Iterator[None]:
    """The exporter's notes about optional packages (torchvision) and its deprecation
    warnings say nothing about this graph: hidden while it runs."""
    registration = logging.getLogger("torch.onnx._internal.exporter._registration")
    level = registration.level
    registration.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)
            yield
    finally:
        registration.setLevel(level)


def teacher_input_name(proto: Any) -> str:
    """The name of the normalised (1, 3, h, w) teacher input inside an exported graph: the
    input of the patch embedding, the graph's only Conv."""
    convs = [node for node in proto.graph.node if node.op_type == "Conv"]
    if len(convs) != 1:
        raise ValueError(f"expected one Conv (the patch embedding), found {len(convs)}")
    return str(convs[0].input[0])


def with_teacher_input(proto: Any) -> Any:
    """The graph from the teacher's normalised (1, 3, h, w) input on: a model with inputs
    `image` (used only for its size) and that tensor, named `teacher_input`.

    The preprocessing is cut off at `teacher_input_name`, so the two engines can be
    compared on the same tensor.
    """
    import onnx

    cut = teacher_input_name(proto)
    outputs = [o.name for o in proto.graph.output]
    extracted = onnx.utils.Extractor(proto).extract_model([INPUT_NAME, cut], outputs)
    for value in extracted.graph.input:
        if value.name == cut:
            value.name = TEACHER_INPUT
    for node in extracted.graph.node:
        node.input[:] = [TEACHER_INPUT if name == cut else name for name in node.input]
    return extracted
