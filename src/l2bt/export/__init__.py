"""ONNX export (SPEC §8): one file that takes a uint8 image of any size and gives its map,
score and, with thresholds, mask and verdict.

    from l2bt.export.exporter import export_onnx
    export_onnx(L2BT.load(run_dir), "model.onnx")

Needs the `export` extra (onnx, onnxscript); the core library imports without it.
"""
