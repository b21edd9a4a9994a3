"""16-bit images are scaled by their bit depth (declared by the file, or --bit-depth for
the whole run), never by their content; values beyond the depth are refused."""

import dataclasses
import json

import numpy as np
import pytest
from PIL import Image

from helpers import TINY_TEACHER, one_error_line, write_mvtec_tree
from l2bt.cli import main
from l2bt.data.image_io import _to_uint8, read_image
from l2bt.errors import InputError
from l2bt.run import check_bit_depth


def save16(path, values):
    Image.fromarray(np.asarray(values, dtype=np.uint16)).save(path)
    return path


@pytest.mark.parametrize("suffix", [".png", ".tiff"])
def test_the_same_value_reads_the_same_whatever_else_the_image_holds(tmp_path, suffix):
    dim = save16(tmp_path / f"dim{suffix}", [[0, 200], [100, 200]])  # max <= 255
    bright = save16(tmp_path / f"bright{suffix}", [[0, 200], [100, 40000]])
    assert read_image(dim)[0, 1, 0] == read_image(bright)[0, 1, 0] == round(200 * 255 / 65535)
    dim12 = read_image(save16(tmp_path / f"d12{suffix}", [[0, 4095], [2048, 200]]), bit_depth=12)
    assert dim12[:, :, 0].tolist() == [
        [0, 255],
        [round(2048 * 255 / 4095), round(200 * 255 / 4095)],
    ]


def test_values_beyond_the_depth_are_refused_naming_the_file(tmp_path):
    path = save16(tmp_path / "hot.png", [[0, 4096]])
    read_image(path)  # fine as 16-bit
    with pytest.raises(InputError) as raised:
        read_image(path, bit_depth=12)
    assert (
        str(raised.value.path) == str(path)
        and "4096" in str(raised.value)
        and "12-bit" in str(raised.value)
    )
    with pytest.raises(InputError, match="between 8 and 16"):
        check_bit_depth(20)


def test_scaling_matches_a_plain_reference_on_random_arrays():
    rng = np.random.default_rng(0)
    for depth in (9, 12, 16):
        for shape in ((1, 1), (3, 5), (0, 4)):
            array = rng.integers(0, 2**depth, size=shape).astype(np.uint16)
            expected = np.array(
                [[int(v * 255 / (2**depth - 1) + 0.5) for v in row] for row in array.tolist()],
                dtype=np.uint8,
            ).reshape(shape)
            assert np.array_equal(_to_uint8(array, depth), expected)


@pytest.mark.usefixtures("feature_cache")
def test_a_run_records_its_depth_and_predict_keeps_it(tmp_path, capsys):
    write_mvtec_tree(tmp_path / "data")
    run = tmp_path / "run"
    fit = ["fit", "--data", str(tmp_path / "data"), "--category", "toy", "--out", str(run)]
    assert main([*fit, *TINY_TEACHER, "--epochs", "1", "--bit-depth", "12"]) == 0
    assert json.loads((run / "config.json").read_text())["bit_depth"] == 12
    rng = np.random.default_rng(1)
    good = save16(tmp_path / "good.png", rng.integers(0, 4096, size=(40, 48)))
    hot = save16(tmp_path / "hot.png", np.full((40, 48), 5000))
    predict = ["predict", "--model", str(run), "--out"]
    assert main([*predict, str(tmp_path / "m1"), str(good)]) == 0
    capsys.readouterr()
    assert main([*predict, str(tmp_path / "m2"), str(hot)]) == 2
    line = one_error_line(capsys)
    assert str(hot) in line and "12-bit" in line
    assert not (tmp_path / "m2").exists()
    assert main([*predict, str(tmp_path / "m3"), "--bit-depth", "16", str(good)]) == 2
    assert "--bit-depth 16 differs" in one_error_line(capsys)


@pytest.mark.usefixtures("feature_cache")
def test_the_service_and_predict_read_a_12_bit_image_alike(tmp_path):
    """The run's bit depth travels with the model: `l2bt serve` (through `create_app`)
    and `l2bt predict` read a 12-bit image in a 16-bit PNG on the same scale, so the
    same part gets the same map and score."""
    pytest.importorskip("fastapi")
    import base64
    import io

    import tifffile

    from l2bt.maps.layout import read_map
    from l2bt.maps.tables import read_score_table
    from l2bt.model import L2BT
    from serving import live_server, post_image

    write_mvtec_tree(tmp_path / "data")
    run = tmp_path / "run"
    fit = ["fit", "--data", str(tmp_path / "data"), "--category", "toy", "--out", str(run)]
    assert main([*fit, *TINY_TEACHER, "--epochs", "1", "--bit-depth", "12"]) == 0
    rng = np.random.default_rng(3)
    part = save16(tmp_path / "part.png", rng.integers(0, 4096, size=(40, 52)))
    assert main(["predict", "--model", str(run), "--out", str(tmp_path / "maps"), str(part)]) == 0
    expected_map = read_map(tmp_path / "maps/part.tiff")
    expected_score = read_score_table(tmp_path / "maps/scores.csv").scores["part"]
    with live_server(L2BT.load(run, device="cpu")) as (client, _):
        answer = post_image(client, part.read_bytes(), map="tiff").json()
    served_map = tifffile.imread(io.BytesIO(base64.b64decode(answer["anomaly_map"])))
    np.testing.assert_array_equal(served_map, expected_map)
    assert answer["score"] == expected_score
    # the file's own 16-bit depth would read it darker: a different map
    sixteen = L2BT.load(run, device="cpu")
    sixteen.record = dataclasses.replace(sixteen.record, bit_depth=None)
    assert not np.array_equal(sixteen.predict(part).anomaly_map, expected_map)
