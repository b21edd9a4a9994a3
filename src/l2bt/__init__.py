"""l2bt: high-resolution industrial anomaly detection and a defect-size-aware benchmark.

Implements "Learning to Be a Transformer to Pinpoint Anomalies" (Costanzino et al.,
IEEE Access 2025): a frozen DINOv2 teacher and two MLP students that learn to map
patch features between two of its layers on defect-free images.
"""

from typing import Any

__version__ = "0.1.0"


def __getattr__(name: str) -> Any:
    if name == "L2BT":
        from l2bt.model import L2BT

        return L2BT
    if name == "Prediction":
        from l2bt.prediction import Prediction

        return Prediction
    raise AttributeError(name)


__all__ = ["L2BT", "Prediction", "__version__"]
