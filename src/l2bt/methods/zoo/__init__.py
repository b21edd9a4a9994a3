"""anomalib's model zoo in the benchmark (SPEC §12): `anomalib:NAME[@N][+tiles]`.

`models.py` names the models and their schedules, `weights.py` checks or switches off
their pretrained weights, `training.py` trains them through anomalib's Engine,
`maps.py` brings their maps to each image's size, `adapter.py` is the `Method`. Importing
this package does not import anomalib: only fitting a zoo model does (about 9 s, 1 GiB).
"""

from l2bt.methods.zoo.models import ZOO_MODELS, ZooModel, zoo_model

__all__ = ["ZOO_MODELS", "ZooModel", "zoo_model"]
