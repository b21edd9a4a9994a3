"""Writing files and folders so that a reader never sees them half-written.

Everything l2bt writes goes to a temporary name beside its target and is renamed into
place when complete: a run that dies leaves either the old file or the new one, and
never a partial output. Temporary names start with "." and hold ".l2bt-tmp" and their
writer (`-<pid>@<host>~`), so a process killed by SIGKILL (which runs no clean-up) leaves
only hidden leftovers that `remove_leftovers` recognises and a resumed run deletes.
`remove_stale_leftovers` is for folders others may be writing (the feature cache, an
output folder's parent): it deletes a leftover only when its writer is known gone (same
host, no such process) or, writer unknown (another host, an older l2bt), when nothing in
it changed for STALE_AFTER_S; a live writer's staging, however old, is kept. What is
renamed into place gets the modes the user's umask gives new files (0o666 & ~umask) and
folders (0o777 & ~umask), whatever its temporary had (mkdtemp makes 0700 folders).
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import socket
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

TMP_MARK = ".l2bt-tmp"
STALE_AFTER_S = 6 * 3600  # a leftover of an unknown writer, unchanged this long, is removed
_WRITER = re.compile(re.escape(TMP_MARK) + r"-(\d+)@(.*?)~")


def writer_tag() -> str:
    """The part of a temporary name that says which process writes it."""
    return f"-{os.getpid()}@{socket.gethostname()}~"


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
    tmp = path.with_name(f".{path.stem}{TMP_MARK}{writer_tag()}{path.suffix}")  # keeps the format
    try:
        yield tmp
        if tmp.exists():
            os.chmod(tmp, FILE_MODE & ~current_umask())
        os.replace(tmp, path)
    except OSError as e:
        raise _naming(e, path) from e
    finally:
        tmp.unlink(missing_ok=True)


@contextmanager
def atomic_folder(path: Path) -> Iterator[Path]:
    """A temporary folder to fill; it replaces the folder `path` when the block succeeds."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(
        tempfile.mkdtemp(prefix=f".{path.name}{TMP_MARK}{writer_tag()}", dir=path.parent)
    )
    try:
        yield staging
        follow_umask(staging)
        if path.exists():
            shutil.rmtree(path)
        os.replace(staging, path)
    except BaseException as e:
        shutil.rmtree(staging, ignore_errors=True)
        if isinstance(e, OSError):
            raise _naming(e, path) from e
        raise


def _naming(error: OSError, path: Path) -> OSError:
    """`error` with a file name: a failed write() (no space, file too large) has none."""
    if error.filename is not None:
        return error
    if error.errno is None:  # e.g. a short write: "2400 requested and 956 written"
        return OSError(None, f"write failed, is the disk full? ({error})", str(path))
    return OSError(error.errno, error.strerror or str(error), str(path))


def write_text_atomic(path: Path, text: str) -> None:
    with atomic_file(path) as tmp:
        tmp.write_text(text)


def remove_leftovers(root: Path) -> int:
    """Delete the temporaries a killed writer left under `root`; how many were found.

    Only for a folder no other l2bt process is writing (a resumed benchmark)."""
    leftovers = [p for p in Path(root).rglob(f".*{TMP_MARK}*") if p.name.startswith(".")]
    _remove(leftovers)
    return len(leftovers)


def remove_stale_leftovers(root: Path, recursive: bool = False) -> int:
    """Delete the temporaries under `root` (its direct entries, or its whole tree with
    `recursive`) whose writer is gone (see the module docstring); how many."""
    pattern = f".*{TMP_MARK}*"
    found = Path(root).rglob(pattern) if recursive else Path(root).glob(pattern)
    now = time.time()
    stale = [p for p in found if p.name.startswith(".") and _is_stale(p, now)]
    _remove(stale)
    return len(stale)


def _is_stale(path: Path, now: float) -> bool:
    found = _WRITER.search(path.name)
    if found is not None and found[2] == socket.gethostname():
        return not _process_exists(int(found[1]))
    try:
        return now - _last_change(path) > STALE_AFTER_S
    except FileNotFoundError:  # its writer just renamed or removed it
        return False


def _process_exists(pid: int) -> bool:
    try:
        os.kill(pid, 0)  # signal 0: only asks whether the process exists
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by another user
        return True
    return True


def _last_change(path: Path) -> float:
    """The newest modification time of `path` and, for a folder, of everything in it."""
    times = [path.stat().st_mtime]
    if path.is_dir():
        times += [p.stat().st_mtime for p in path.rglob("*")]
    return max(times)


def _remove(paths: list[Path]) -> None:
    for path in sorted(paths, key=lambda p: len(p.parts), reverse=True):  # deepest first
        if path.is_dir():
            shutil.rmtree(path, ignore_errors=True)
        else:
            with contextlib.suppress(OSError):  # a read-only cache is still read
                path.unlink(missing_ok=True)
