"""Files that other processes read: atomic writes (a reader sees the old file or folder or the
complete new one, never a torn one; PNG images and PLY point clouds written that way), a lock
for what cannot be written atomically, and the one line saying why a write failed."""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from pathlib import Path

import numpy as np


def file_in_the_way(folder) -> Path | None:
    """The first of `folder` and its parents that exists and is not a folder (so `folder`
    cannot be made), or None."""
    folder = Path(folder)
    return next((f for f in (folder, *folder.parents) if f.exists() and not f.is_dir()), None)


def cannot_write(path, exc: Exception) -> str:
    """Why writing `path` failed, in one line (a full disk, a read-only or missing folder);
    names the file the system refused when it is another (a staging or temporary file)."""
    reason = getattr(exc, "strerror", None) or str(exc)
    refused = getattr(exc, "filename", None)
    where = f" (writing {refused})" if refused and Path(refused) != Path(path) else ""
    return f"cannot write {path}: {reason}{where}"


LOCK_POLL_SECONDS = 0.2  # how often a waiting process tries the lock again


@contextlib.contextmanager
def exclusive_lock(path, waiting=None, still_waiting=None, report_every: float = 60.0):
    """Hold an exclusive lock on the file `path` (made if missing) for the block: another
    process (or another open of it) taking the same lock waits until the block ends. The
    holder writes who it is into the file (lock_holder's words); a process that finds the
    lock held calls `waiting(holder)` once, then `still_waiting(holder, seconds)` every
    `report_every` seconds it goes on waiting. POSIX flock: advisory, released by the system if
    the holder dies. In a read-only folder (prebuilt files shipped read-only) no process can
    write, so there is nothing to wait for: the block runs unlocked where the lock file cannot
    be made."""
    import fcntl
    import time

    lock = None
    for mode in ("a+b", "rb"):  # flock needs no write access
        try:
            lock = open(path, mode)  # closed by the with below
            break
        except OSError:
            continue
    if lock is None:
        yield
        return

    def taken() -> bool:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return True
        except BlockingIOError:
            return False

    with lock:
        if not taken():
            if waiting is not None:
                waiting(lock_holder(path))
            started, reported = time.monotonic(), 0
            while not taken():
                time.sleep(LOCK_POLL_SECONDS)
                waited = time.monotonic() - started
                if still_waiting is not None and waited >= (reported + 1) * report_every:
                    reported += 1
                    still_waiting(lock_holder(path), waited)
        if "a" in lock.mode:  # who holds it, for the processes that will wait
            lock.truncate(0)
            lock.write(_holder_words().encode())
            lock.flush()
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def _holder_words() -> str:
    """'process PID (its command) since HH:MM:SS' of this process, now."""
    import sys
    import time

    command = " ".join(Path(sys.argv[0]).name.split()[:1] + sys.argv[1:3]) or "python"
    return f"process {os.getpid()} ({command[:80]}) since {time.strftime('%H:%M:%S')}"


def lock_holder(path) -> str:
    """Who holds (or last held) the lock `path`, as the holder wrote it; 'another process'
    where it did not say."""
    try:
        words = Path(path).read_text(errors="replace").strip()
    except OSError:
        words = ""
    return words.splitlines()[0][:200] if words else "another process"


def atomic_write(path, write) -> None:
    """Call `write(binary_file)` on a temporary file beside `path`, then rename it into place."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=path.name + ".", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _staging_prefix(path: Path) -> str:
    return f".{path.name}.partial-"


def leftover_staging(path) -> list:
    """Staging folders of `path` that a killed process (SIGKILL, a lost machine) left behind."""
    path = Path(path)
    if not path.parent.is_dir():
        return []
    return sorted(path.parent.glob(_staging_prefix(path) + "*"))


def remove_leftover_staging(path) -> None:
    """Remove what `leftover_staging(path)` lists; only while nothing writes `path`."""
    for leftover in leftover_staging(path):
        shutil.rmtree(leftover, ignore_errors=True)


@contextlib.contextmanager
def atomic_directory(path, overwrite: bool = False):
    """Yield a path to create the folder `path` at; it moves into place only if the block succeeds.

    The staging folder is a hidden sibling, removed on any failure or interruption. An existing
    `path` is refused unless `overwrite`, and then replaced only once the new one is complete.
    """
    path = Path(path)
    if path.exists() and not overwrite:
        raise FileExistsError(f"{path} exists")
    path.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=_staging_prefix(path), dir=path.parent))
    try:
        yield staging / path.name  # same name inside: files named after the folder stay right
        if path.exists():
            path.rename(staging / (path.name + ".old"))  # removed with the staging folder
        (staging / path.name).rename(path)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def save_png(path, rgb: np.ndarray) -> None:
    from PIL import Image  # Pillow only where pictures are written

    atomic_write(path, lambda f: Image.fromarray(rgb).save(f, format="PNG"))


def write_ply(path, points: np.ndarray, colours: np.ndarray) -> int:
    """Binary little-endian PLY of the finite points; returns how many were written."""
    pts = points.reshape(-1, 3)
    cols = colours.reshape(-1, 3)
    keep = np.isfinite(pts).all(axis=1)
    pts, cols = pts[keep].astype("<f4"), cols[keep].astype(np.uint8)
    vertex = np.empty(
        len(pts),
        dtype=[
            ("x", "<f4"),
            ("y", "<f4"),
            ("z", "<f4"),
            ("red", "u1"),
            ("green", "u1"),
            ("blue", "u1"),
        ],
    )
    vertex["x"], vertex["y"], vertex["z"] = pts[:, 0], pts[:, 1], pts[:, 2]
    vertex["red"], vertex["green"], vertex["blue"] = cols[:, 0], cols[:, 1], cols[:, 2]
    header = (
        "ply\nformat binary_little_endian 1.0\n"
        f"element vertex {len(pts)}\n"
        "property float x\nproperty float y\nproperty float z\n"
        "property uchar red\nproperty uchar green\nproperty uchar blue\nend_header\n"
    )

    def write(f):
        f.write(header.encode("ascii"))
        f.write(vertex.tobytes())

    atomic_write(path, write)
    return len(pts)
