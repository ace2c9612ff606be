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
