"""Atomic writes: a reader sees the old file (or folder) or the complete new one, never a torn
one."""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from pathlib import Path


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
    staging = Path(tempfile.mkdtemp(prefix=f".{path.name}.partial-", dir=path.parent))
    try:
        yield staging / path.name  # same name inside: files named after the folder stay right
        if path.exists():
            path.rename(staging / (path.name + ".old"))  # removed with the staging folder
        (staging / path.name).rename(path)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
