import numpy as np
import pytest
from PIL import Image
from scipy import ndimage

from l2bt.cli import main
from l2bt.data import load_category
from l2bt.data.synthetic import SyntheticConfig, clean_surface, write_synthetic

CONFIG = SyntheticConfig(size=320, seed=4, n_train=2, n_test_good=1, n_test_defective=12)


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory):
    return write_synthetic(tmp_path_factory.mktemp("syn"), CONFIG)


def test_masks_are_exactly_the_changed_pixels(synthetic):
    split = load_category(synthetic.parent, CONFIG.category)
    defective = [s for s in split.test if s.is_anomalous]
    assert len(defective) == 12
    for sample in defective:
        index = int(sample.image.stem)
        clean = clean_surface(CONFIG, "defective", index)
        image = np.asarray(Image.open(sample.image))[:, :, 0]
        mask = np.asarray(Image.open(sample.mask)) > 127
        assert mask.any()
        assert np.array_equal(image != clean, mask), sample.image


def test_defect_areas_span_three_orders_of_magnitude(tmp_path):
    target = write_synthetic(
        tmp_path, SyntheticConfig(size=1024, n_train=0, n_test_good=0, n_test_defective=16)
    )
    areas = []
    for mask_path in target.glob("ground_truth/*/*_mask.png"):
        labels, _ = ndimage.label(
            np.asarray(Image.open(mask_path)) > 127, structure=np.ones((3, 3))
        )
        areas += np.bincount(labels.ravel())[1:].tolist()
    assert max(areas) / min(areas) >= 1000


def test_same_seed_same_bytes_other_seed_other_images(tmp_path):
    a = write_synthetic(tmp_path / "a", CONFIG)
    b = write_synthetic(tmp_path / "b", CONFIG)
    c = write_synthetic(tmp_path / "c", SyntheticConfig(**{**CONFIG.__dict__, "seed": 5}))
    files = sorted(p.relative_to(a) for p in a.rglob("*.png"))
    assert files == sorted(p.relative_to(b) for p in b.rglob("*.png"))
    assert all((a / f).read_bytes() == (b / f).read_bytes() for f in files)
    assert (a / files[0]).read_bytes() != (c / files[0]).read_bytes()


def test_the_command_refuses_to_overwrite(tmp_path, capsys):
    args = [
        "make-synthetic",
        "--out",
        str(tmp_path),
        "--size",
        "128",
        "--n-train",
        "1",
        "--n-test-good",
        "1",
        "--n-test-defective",
        "1",
    ]
    assert main(args) == 0
    capsys.readouterr()
    assert main(args) == 2
    assert "--overwrite" in capsys.readouterr().err
    assert main([*args, "--overwrite"]) == 0
