"""Calibration frames for an int8 export, from what a user has at hand: a folder of images, a
recorded bag (its image topic), or the built-in demo scenes. uint8 RGB frames, as the node
decodes them; at most `limit`, spread evenly over the source. No torch, no rclpy.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..errors import BagError, ConfigError
from ..synthetic_scenes import SCENES, render_scene

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".ppm", ".pgm", ".tif", ".tiff", ".webp")
DEMO = "demo"  # SOURCE "demo" (every scene) or "demo:corridor,room"
DEFAULT_LIMIT = 32


def calibration_frames(source: str, image_topic: str = "", limit: int = DEFAULT_LIMIT) -> tuple:
    """(frames, description) of `source`: "demo[:scene,...]", a folder of images, or a bag
    (folder, .mcap or .db3; `image_topic`, or its one image topic). ConfigError names what is
    wrong with the source (in one line)."""
    if source == DEMO or source.startswith(DEMO + ":"):
        names = source.partition(":")[2].split(",") if ":" in source else list(SCENES)
        unknown = [n for n in names if n not in SCENES]
        if unknown:
            raise ConfigError(
                "calibration", source, f"no demo scene {', '.join(unknown)}; {', '.join(SCENES)}"
            )
        return [render_scene(n)[0] for n in names], f"demo scenes {', '.join(names)}"
    path = Path(source).expanduser()
    if not path.exists():
        raise ConfigError(
            "calibration",
            source,
            "is neither 'demo' (the built-in scenes) nor an existing folder of images or bag",
        )
    if path.is_dir() and not (path / "metadata.yaml").is_file():
        return _image_folder(path, limit)
    return _bag(path, image_topic, limit)


def spread(items: list, limit: int) -> list:
    """At most `limit` of `items`, evenly spaced, first and last included."""
    if len(items) <= limit:
        return list(items)
    return [items[i] for i in np.linspace(0, len(items) - 1, limit).round().astype(int)]


def _image_folder(folder: Path, limit: int) -> tuple:
    from PIL import Image, UnidentifiedImageError

    files = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise ConfigError(
            "calibration",
            str(folder),
            f"has no images ({', '.join(IMAGE_SUFFIXES)}) and is not a bag (no metadata.yaml)",
        )
    frames = []
    for file in spread(files, limit):
        try:
            with Image.open(file) as image:
                frames.append(np.asarray(image.convert("RGB")))
        except (OSError, UnidentifiedImageError) as exc:
            raise ConfigError(
                "calibration", str(file), f"cannot be read as an image: {exc}"
            ) from None
    return frames, f"{len(frames)} images of {folder}"


def _bag(path: Path, image_topic: str, limit: int) -> tuple:
    from rosbags.typesys import get_typestore

    from ..bag.definitions import recording_distribution
    from ..bag.reading import COMPRESSED, IMAGE, only_image_topic, open_bag, read_messages
    from ..messages.decoding import decode_image

    reader = open_bag(path)
    try:
        topic = image_topic or only_image_topic(reader, path)
        connections = [
            c for c in reader.connections if c.topic == topic and c.msgtype in (IMAGE, COMPRESSED)
        ]
        if not connections:
            raise BagError(f"bag {path} has no image topic {topic}")
        count = sum(c.msgcount for c in connections)
        wanted = set(spread(list(range(count)), limit))
        store = get_typestore(recording_distribution(reader))
        frames = []
        for index, (conn, _, raw) in enumerate(read_messages(reader, path, connections)):
            if index not in wanted:
                continue
            try:
                msg = store.deserialize_cdr(raw, conn.msgtype)
            except Exception as exc:  # any failure to decode CDR means the bytes are damaged
                raise BagError(
                    f"bag {path}: message {index} on {topic} cannot be deserialized: "
                    f"{type(exc).__name__}: {exc}"
                ) from None
            frames.append(decode_image(msg))  # ImageDecodeError: one line, the encoding's
    finally:
        reader.close()
    return frames, f"{len(frames)} frames of {topic} in {path}"
