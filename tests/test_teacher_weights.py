"""The weight loader for real: downloads from a server on 127.0.0.1, the hub cache, checksums."""

import functools
import http.server
import threading

import pytest
import torch

from checkpoints import small_checkpoint
from l2bt.errors import InputError
from l2bt.teacher import load_teacher
from l2bt.teacher import weights as weight_files


@pytest.fixture
def torch_home(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    return tmp_path / "torch" / "hub" / "checkpoints"


@pytest.fixture
def server(tmp_path):
    """An HTTP server on 127.0.0.1 (ephemeral port) serving tmp_path/served."""
    root = tmp_path / "served"
    root.mkdir()
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(root))
    handler.log_message = lambda *a: None
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield root, f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()
    thread.join(timeout=5)


def test_official_urls():
    assert weight_files.official_url("dinov2_vitb14_reg") == (
        "https://dl.fbaipublicfiles.com/dinov2/dinov2_vitb14/dinov2_vitb14_reg4_pretrain.pth"
    )
    assert weight_files.official_url("dinov2_vits14") == (
        "https://dl.fbaipublicfiles.com/dinov2/dinov2_vits14/dinov2_vits14_pretrain.pth"
    )


def test_official_weights_download_once_into_the_hub_cache(server, torch_home, monkeypatch):
    root, url = server
    state = small_checkpoint(root / "dinov2_vits14" / "dinov2_vits14_pretrain.pth")
    monkeypatch.setattr(weight_files, "OFFICIAL_BASE_URL", url)
    teacher = load_teacher("dinov2_vits14", weights=None)
    cached = torch_home / "dinov2_vits14_pretrain.pth"
    assert cached.is_file() and (torch_home / "dinov2_vits14_pretrain.pth.sha256").is_file()
    assert torch.equal(teacher.state_dict()["pos_embed"], state["pos_embed"])
    assert teacher.weights_id == weight_files.sha256_of(cached)[:16]
    # The second load needs no server.
    (root / "dinov2_vits14" / "dinov2_vits14_pretrain.pth").unlink()
    again = load_teacher("dinov2_vits14", weights=None)
    assert again.weights_id == teacher.weights_id
    assert not list(torch_home.glob(".*"))  # no temporary files left behind


def test_a_changed_cached_file_is_refused(server, torch_home, monkeypatch):
    root, url = server
    small_checkpoint(root / "dinov2_vits14" / "dinov2_vits14_pretrain.pth")
    monkeypatch.setattr(weight_files, "OFFICIAL_BASE_URL", url)
    load_teacher("dinov2_vits14", weights=None)
    small_checkpoint(torch_home / "dinov2_vits14_pretrain.pth", seed=1)  # replaced
    with pytest.raises(InputError, match="checksum mismatch"):
        load_teacher("dinov2_vits14", weights=None)


def test_a_url_checkpoint_is_cached_and_checked(server, torch_home):
    root, url = server
    small_checkpoint(root / "mine.pth")
    teacher = load_teacher("dinov2_vits14", weights=f"{url}/mine.pth")
    assert (torch_home / "mine.pth").is_file()
    assert teacher.weights_id == weight_files.sha256_of(torch_home / "mine.pth")[:16]


def test_offline_without_a_cached_file_names_the_url_and_the_flag(server, torch_home, monkeypatch):
    _, url = server  # serves nothing at that path: 404
    monkeypatch.setattr(weight_files, "OFFICIAL_BASE_URL", url)
    with pytest.raises(InputError) as error:
        load_teacher("dinov2_vitb14_reg", weights=None)
    message = str(error.value)
    assert "dinov2_vitb14_reg4_pretrain.pth" in message and "--weights" in message
    assert str(torch_home) in message and "\n" not in message
    assert not torch_home.exists() or not any(torch_home.iterdir())


def test_safetensors_and_wrapped_checkpoints_load(tmp_path):
    from safetensors.torch import save_file

    state = small_checkpoint(tmp_path / "plain.pth")
    save_file({k: v.contiguous() for k, v in state.items()}, str(tmp_path / "w.safetensors"))
    torch.save({"model": {f"module.{k}": v for k, v in state.items()}}, tmp_path / "wrapped.pth")
    for name in ("w.safetensors", "wrapped.pth"):
        teacher = load_teacher("dinov2_vits14", weights=str(tmp_path / name))
        assert torch.equal(teacher.state_dict()["cls_token"], state["cls_token"])


@pytest.mark.parametrize(
    "variant,match",
    [
        ("dinov2_vitb14", "embed dim 384"),
        ("dinov2_vits14_reg", "missing keys: register_tokens"),
    ],
)
def test_a_checkpoint_of_the_wrong_kind_is_one_clear_line(tmp_path, variant, match):
    small_checkpoint(tmp_path / "s.pth")
    with pytest.raises(InputError, match=match) as error:
        load_teacher(variant, weights=str(tmp_path / "s.pth"))
    assert "s.pth" in str(error.value) and "\n" not in str(error.value)


def test_files_that_are_not_checkpoints(tmp_path):
    (tmp_path / "junk.pth").write_bytes(b"not a checkpoint at all")
    with pytest.raises(InputError, match="not a readable checkpoint"):
        load_teacher("dinov2_vits14", weights=str(tmp_path / "junk.pth"))
    torch.save([1, 2, 3], tmp_path / "list.pth")
    with pytest.raises(InputError, match="not a state dict"):
        load_teacher("dinov2_vits14", weights=str(tmp_path / "list.pth"))
    with pytest.raises(InputError, match="not found"):
        load_teacher("dinov2_vits14", weights=str(tmp_path / "absent.pth"))


def test_checkpoints_with_code_are_never_unpickled(tmp_path):
    class Payload:
        def __reduce__(self):
            return (print, ("pickled code ran",))

    torch.save({"x": Payload()}, tmp_path / "evil.pth")
    with pytest.raises(InputError, match="not a readable checkpoint"):
        load_teacher("dinov2_vits14", weights=str(tmp_path / "evil.pth"))
