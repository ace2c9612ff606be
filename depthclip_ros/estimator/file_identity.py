"""A model file's identity: the SHA-256 of its bytes. It keys what is derived from a file (the
text-feature cache through the model identity, TensorRT's engines), so a file replaced at the
same path never meets another file's results. No torch import.
"""

from __future__ import annotations

import hashlib


def sha256_file(path, chunk: int = 1 << 20) -> str:
    """The SHA-256 of the file's bytes, hex."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(chunk), b""):
            digest.update(block)
    return digest.hexdigest()


def sha256_remembered(path, memo_dir) -> str:
    """sha256_file, remembered in `memo_dir` by the file's path, size and modification time, so
    that a large model is not read whole at every start while it is unchanged."""
    import json
    import os
    from pathlib import Path

    stat = os.stat(path)
    key = {"path": str(Path(path).resolve()), "size": stat.st_size, "mtime_ns": stat.st_mtime_ns}
    memo = Path(memo_dir) / f"sha256-{hashlib.sha256(key['path'].encode()).hexdigest()[:16]}.json"
    try:
        known = json.loads(memo.read_text())
        if {k: known.get(k) for k in key} == key and len(known.get("sha256", "")) == 64:
            return known["sha256"]
    except (OSError, ValueError):
        pass  # none yet, or unreadable: computed again
    digest = sha256_file(path)
    try:
        memo.parent.mkdir(parents=True, exist_ok=True)
        memo.write_text(json.dumps({**key, "sha256": digest}))
    except OSError:  # a read-only cache: computed at every start, nothing else changes
        pass
    return digest
