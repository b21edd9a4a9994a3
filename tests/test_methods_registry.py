"""methods/registry.py: a mode suffix sets one method's input mode and names its results."""

import pytest

from helpers import described_mode
from l2bt.config import TeacherConfig, TileSettings
from l2bt.errors import InputError
from l2bt.methods import MethodSettings
from l2bt.methods.registry import make_method

pytestmark = pytest.mark.usefixtures("feature_cache")


def test_a_mode_suffix_sets_one_methods_mode_and_names_its_results():
    settings = MethodSettings(
        teacher=TeacherConfig(
            variant="dinov2_vits14", weights="random", tiles=TileSettings(size=28)
        )
    )
    for spec, mode in (
        ("l2bt+tiles", "tiles"),
        ("patchcore+aspect", "aspect"),
        ("dinomaly", "pad"),
    ):
        method = make_method(spec, settings)
        assert method.name == spec and described_mode(method.describe()) == mode
    with pytest.raises(InputError, match=r"\+tile"):
        make_method("l2bt+tile", settings)
