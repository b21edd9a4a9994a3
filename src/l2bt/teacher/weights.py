"""Where teacher weights come from, and how they are checked before use.

`weights=None` means the official checkpoint, downloaded once into torch's hub cache
(`$TORCH_HOME/hub/checkpoints`) under its official file name. DINOv2 publishes no
checksums, so integrity is checked against a SHA-256 recorded when the file first
arrives complete (a `.sha256` file beside it): a download goes to a temporary file, is
checked against the server's length, hashed, and only then renamed into place; every
later load re-hashes the file and refuses one that changed. A path or URL is read the
same way; `.safetensors` files too. Nothing is ever unpickled: `torch.load` runs with
`weights_only=True`.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import torch

from l2bt.errors import InputError
from l2bt.utils.progress import progress_bar

OFFICIAL_BASE_URL = "https://dl.fbaipublicfiles.com/dinov2"


def official_url(variant: str) -> str:
    """e.g. dinov2_vitb14_reg -> .../dinov2_vitb14/dinov2_vitb14_reg4_pretrain.pth"""
    base = variant.removesuffix("_reg")
    name = f"{base}_reg4" if variant.endswith("_reg") else base
    return f"{OFFICIAL_BASE_URL}/{base}/{name}_pretrain.pth"


def hub_checkpoint_dir() -> Path:
    return Path(torch.hub.get_dir()) / "checkpoints"


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _sidecar(path: Path) -> Path:
    return path.with_name(path.name + ".sha256")


def verified_sha256(path: Path) -> str:
    """The file's SHA-256, checked against its recorded value when there is one."""
    actual = sha256_of(path)
    sidecar = _sidecar(path)
    if sidecar.is_file():
        expected = sidecar.read_text().split()[0] if sidecar.read_text().strip() else ""
        if expected != actual:
            raise InputError(
                f"checksum mismatch: SHA-256 {actual[:16]}… but {expected[:16]}… was recorded "
                f"when it was downloaded (a corrupt or replaced file; delete it to download "
                f"again)",
                path,
            )
    return actual


def download(url: str, destination: Path) -> Path:
    """Fetch `url` to `destination` atomically and record its SHA-256 beside it."""
    destination.parent.mkdir(parents=True, exist_ok=True)
    handle, tmp_name = tempfile.mkstemp(prefix=f".{destination.name}.", dir=destination.parent)
    tmp = Path(tmp_name)
    try:
        with os.fdopen(handle, "wb") as out, urllib.request.urlopen(url, timeout=60) as response:
            expected = int(response.headers.get("Content-Length") or 0) or None
            digest, received = hashlib.sha256(), 0
            bar = progress_bar(
                total=expected,
                unit="B",
                unit_scale=True,
                desc=destination.name,
            )
            with bar:
                for chunk in iter(lambda: response.read(1 << 20), b""):
                    out.write(chunk)
                    digest.update(chunk)
                    received += len(chunk)
                    bar.update(len(chunk))
        if expected is not None and received != expected:
            raise InputError(f"incomplete download: {received} of {expected} bytes", url)
        _sidecar(destination).write_text(f"{digest.hexdigest()}  {destination.name}\n")
        os.replace(tmp, destination)
    except (urllib.error.URLError, TimeoutError, ConnectionError) as e:
        raise InputError(f"cannot download ({getattr(e, 'reason', e)})", url) from e
    finally:
        tmp.unlink(missing_ok=True)
    return destination


def fetch_official(variant: str) -> Path:
    """The official checkpoint of `variant` in the hub cache, downloading it if needed."""
    url = official_url(variant)
    path = hub_checkpoint_dir() / url.rsplit("/", 1)[1]
    if path.is_file():
        return path
    try:
        return download(url, path)
    except InputError as e:
        raise InputError(
            f"the official {variant} weights are not cached and could not be downloaded from "
            f"{url} ({e.problem}); copy that file to {path} or pass --weights PATH"
        ) from e


def resolve(weights: str | Path | None, variant: str) -> Path:
    """A local checkpoint file for `weights` (None: official; a URL: cached download)."""
    if weights is None:
        return fetch_official(variant)
    text = str(weights)
    if text.startswith(("http://", "https://", "file://")):
        path = hub_checkpoint_dir() / text.rsplit("/", 1)[1]
        return path if path.is_file() else download(text, path)
    path = Path(text).expanduser()
    if not path.is_file():
        raise InputError("checkpoint file not found", path)
    return path


def read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """Tensors of a .pth (weights only) or .safetensors checkpoint, unwrapped if nested."""
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            state: Any = load_file(str(path))
        else:
            state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # torch and safetensors raise many kinds for unreadable files
        raise InputError(
            f"not a readable checkpoint ({e.__class__.__name__}: "
            f"{str(e).splitlines()[0] if str(e) else ''})",
            path,
        ) from e
    for wrapper in ("model", "state_dict", "teacher"):
        if isinstance(state, dict) and wrapper in state and isinstance(state[wrapper], dict):
            state = state[wrapper]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise InputError("not a state dict of tensors", path)
    return {_strip_prefix(k): v for k, v in state.items()}


def _strip_prefix(key: str) -> str:
    for prefix in ("module.", "backbone."):
        key = key.removeprefix(prefix)
    return key
