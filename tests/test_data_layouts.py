"""data/layouts.py: every layout (VisA raw and converted, MVTec AD 2, folder, MVTec AD)
read from small fake trees; load_category names the file it cannot read."""

import numpy as np
import pytest
from PIL import Image

from helpers import SHARED_DATA, textured_image, write_mvtec_tree
from l2bt.cli import main
from l2bt.data import list_categories, load_category, read_image, read_mask
from l2bt.errors import InputError


def save(path, array):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path)


def write_visa_raw(root):
    rows = ["object,split,label,image,mask"]
    for i, (h, w) in enumerate([(40, 60), (52, 44), (40, 60)]):
        save(root / f"pcb/Data/Images/Normal/{i:04d}.JPG", textured_image(h, w, i))
        rows.append(f"pcb,train,normal,pcb/Data/Images/Normal/{i:04d}.JPG,")
    save(root / "pcb/Data/Images/Normal/0100.JPG", textured_image(30, 30, 9))
    rows.append("pcb,test,normal,pcb/Data/Images/Normal/0100.JPG,")
    mask = np.zeros((36, 48), np.uint8)
    mask[5:9, 5:9] = 1  # region ids, not 255
    mask[20:25, 30:40] = 2
    save(root / "pcb/Data/Images/Anomaly/000.JPG", textured_image(36, 48, 5))
    save(root / "pcb/Data/Masks/Anomaly/000.png", mask)
    rows.append("pcb,test,anomaly,pcb/Data/Images/Anomaly/000.JPG,pcb/Data/Masks/Anomaly/000.png")
    (root / "split_csv").mkdir(parents=True)
    (root / "split_csv/1cls.csv").write_text("\n".join(rows) + "\n")


def test_visa_raw_release_is_read_directly(tmp_path):
    write_visa_raw(tmp_path)
    assert list_categories(tmp_path, "visa") == ["pcb"]
    split = load_category(tmp_path, "pcb", "visa")
    assert len(split.train) == 3 and len(split.test) == 2
    bad = next(s for s in split.test if s.is_anomalous)
    assert bad.key == "test/bad/000" and bad.mask_threshold == 0.0
    assert read_mask(bad.mask, bad.mask_threshold).sum() == 16 + 50  # ids 1 and 2 both count


def test_visa_converted_layout(tmp_path):
    base = tmp_path / "pcb"
    save(base / "train/good/0.JPG", textured_image(30, 40, 0))
    save(base / "test/good/1.JPG", textured_image(30, 40, 1))
    save(base / "test/bad/2.JPG", textured_image(30, 40, 2))
    save(base / "ground_truth/bad/2.png", np.full((30, 40), 1, np.uint8))
    split = load_category(tmp_path, "pcb", "visa")
    bad = next(s for s in split.test if s.is_anomalous)
    assert bad.mask.name == "2.png" and read_mask(bad.mask, bad.mask_threshold).all()


def test_mvtec_ad2_layout(tmp_path):
    base = tmp_path / "can"
    gray = textured_image(30, 40, 0)[:, :, 0]  # grayscale category
    for folder in (
        "train/good",
        "validation/good",
        "test_public/good",
        "test_public/bad",
        "test_private",
        "test_private_mixed",
    ):
        save(base / folder / "000.png", gray)
    save(base / "test_public/ground_truth/bad/000_mask.png", np.full((30, 40), 255, np.uint8))
    split = load_category(tmp_path, "can", "mvtec_ad2")
    assert list_categories(tmp_path, "mvtec_ad2") == ["can"]
    assert [s.key for s in split.validation] == ["validation/good/000"]
    keys = {s.key: s for s in split.test}
    assert set(keys) == {
        "test_public/good/000",
        "test_public/bad/000",
        "test_private/000",
        "test_private_mixed/000",
    }
    assert not keys["test_private/000"].has_ground_truth
    assert {s.key for s in split.evaluable_test} == {"test_public/good/000", "test_public/bad/000"}
    assert read_image(split.train[0].image).shape == (30, 40, 3)


def test_folder_layout(tmp_path):
    base = tmp_path / "mine"
    for i in range(10):
        save(base / f"normal/{i:02d}.png", textured_image(20, 30, i))
    save(base / "abnormal/x.png", textured_image(20, 30, 50))
    save(base / "masks/x_mask.png", np.full((20, 30), 255, np.uint8))
    split = load_category(tmp_path, "mine", "folder")
    assert len(split.train) == 8 and {s.key for s in split.test} == {
        "test/good/04",
        "test/good/09",
        "test/bad/x",
    }
    # Without masks/, abnormal images are predicted but not scored.
    (base / "masks/x_mask.png").unlink()
    (base / "masks").rmdir()
    split = load_category(tmp_path, "mine", "folder")
    assert [s.key for s in split.evaluable_test] == ["test/good/04", "test/good/09"]


@pytest.mark.needs_data
def test_real_magnetic_tile_mini():
    split = load_category(SHARED_DATA, "magnetic_tile_mini")
    assert len(split.train) == 40 and len(split.test) == 35
    assert all(s.mask is not None for s in split.test if s.is_anomalous)
    assert main(["check-data", "--data", str(SHARED_DATA), "--category", "magnetic_tile_mini"]) == 0


# ---- bad input, through the CLI: one line naming the file, exit 2 ----------------------


def test_load_category_raises_input_error_naming_the_file(tmp_path):
    base = write_mvtec_tree(tmp_path / "data")
    (base / "ground_truth/spot/000_mask.png").unlink()
    with pytest.raises(InputError, match=r"000\.png"):
        load_category(tmp_path / "data", "toy")
