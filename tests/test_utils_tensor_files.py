"""utils/tensor_files.py: a safetensors write error is the OS error it was (issue 19, item 4)."""

import os

import pytest

pytestmark = pytest.mark.usefixtures("feature_cache")


def test_safetensors_write_errors_are_the_os_errors_they_were(tmp_path):
    from safetensors import SafetensorError

    from l2bt.utils.tensor_files import os_error

    error = os_error(
        SafetensorError(
            "Error while serializing: I/O error: No space left on device (os error 28)"
        ),
        tmp_path / "s.safetensors",
    )
    assert (error.errno, error.strerror, error.filename) == (
        28,
        os.strerror(28),
        str(tmp_path / "s.safetensors"),
    )
    unknown = os_error(SafetensorError("something else"), tmp_path / "s")
    assert unknown.errno == 5 and "something else" in unknown.strerror
