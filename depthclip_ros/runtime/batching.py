"""Frames of one image size share one batched forward: the rule the node (frames of several
cameras handed over at once) and the bag tool (frames of a bag, across its cameras) share."""

from __future__ import annotations


def by_image_size(frames, image_of) -> dict:
    """{image shape: [frames of that shape]}, each list in the frames' order; `image_of(frame)`
    is its (H, W, 3) array."""
    groups = {}
    for frame in frames:
        groups.setdefault(image_of(frame).shape, []).append(frame)
    return groups
