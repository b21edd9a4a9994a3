"""Writing files and folders so that a reader never sees them half-written.

Everything l2bt writes goes to a temporary name beside its target and is renamed into
place when complete: a run that dies leaves either the old file or the new one, and
never a partial output. Temporary names start with "." and hold ".l2bt-tmp", so a
process killed by SIGKILL (which runs no clean-up) leaves only hidden leftovers that
`remove_leftovers` recognises and a resumed run deletes. What is renamed into place
gets the modes the user's umask gives new files (0o666 & ~umask) and folders (0o777 &
~umask), whatever its temporary had (mkdtemp makes 0700 folders).
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

TMP_MARK = ".l2bt-tmp"


FILE_MODE, FOLDER_MODE = 0o666, 0o777  # before the umask, as open() and mkdir() do


def current_umask() -> int:
    """The process's umask, read without changing it where Linux allows (a swap with
    os.umask would briefly give other threads' new files umask 0)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except OSError:
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def follow_umask(folder: Path) -> None:
    """Give `folder` and everything under it the modes the umask gives new ones."""
    mask = current_umask()
    os.chmod(folder, FOLDER_MODE & ~mask)
    for parent, folders, files in os.walk(folder):
        for name in folders:
            _chmod(Path(parent) / name, FOLDER_MODE & ~mask)
        for name in files:
            _chmod(Path(parent) / name, FILE_MODE & ~mask)


def _chmod(path: Path, mode: int) -> None:
    if not path.is_symlink():  # a link's mode is its target's, which may lie elsewhere
        os.chmod(path, mode)


@contextmanager
def atomic_file(path: Path) -> Iterator[Path]:
    """A temporary path to write; it replaces `path` when the block ends without error."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.stem}{TMP_MARK}{path.suffix}")  # writers infer the format
    try:
        yield tmp
        if tmp.exists():
            os.chmod(tmp, FILE_MODE & ~current_umask())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


@contextmanager
def atomic_folder(path: Path) -> Iterator[Path]:
    """A temporary folder to fill; it replaces the folder `path` when the block succeeds."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{path.name}{TMP_MARK}-", dir=path.parent))
    try:
        yield staging
        follow_umask(staging)
        if path.exists():
            shutil.rmtree(path)
        os.replace(staging, path)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise


def write_text_atomic(path: Path, text: str) -> None:
    with atomic_file(path) as tmp:
        tmp.write_text(text)


def remove_leftovers(root: Path) -> int:
    """Delete the temporaries a killed writer left under `root`; how many were found.

    Only for a folder no other l2bt process is writing (a resumed benchmark)."""
    leftovers = [p for p in Path(root).rglob(f".*{TMP_MARK}*") if p.name.startswith(".")]
    for path in sorted(leftovers, key=lambda p: len(p.parts), reverse=True):
        if path.is_dir():
            shutil.rmtree(path, ignore_errors=True)
        else:
            path.unlink(missing_ok=True)
    return len(leftovers)
