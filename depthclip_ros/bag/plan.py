"""A bag opened and checked before any model is loaded: its image topics (each with its type,
camera_info topic and output topics), OUT's place and storage, the definitions its topics are
copied with. No rclpy.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

from ..errors import BagError, OutputExistsError
from ..files import file_in_the_way
from ..messages import topics
from ..messages.outputs import DEFAULT_OUTPUTS
from .definitions import copy_definitions
from .reading import check_topics, only_image_topic, open_bag, storage_of

STORAGES = ("mcap", "sqlite3")


@dataclasses.dataclass(frozen=True)
class PlannedCamera:
    """One image topic of the bag: its message type, its camera_info topic, its outputs
    ({output key: topic})."""

    image_topic: str
    image_type: str
    info_topic: str | None  # none: the cloud is not made
    outputs: dict


class BagPlan:
    """A bag opened and checked for processing (topics, outputs, OUT's place and storage, the
    definitions its topics are copied with): everything that can fail before a model is
    needed. A context manager; closing it closes IN."""

    def __init__(self, in_path, out_path, reader, cameras, storage, definitions, overwrite):
        self.in_path, self.out_path, self.reader = in_path, out_path, reader
        self.cameras, self.storage, self.overwrite = cameras, storage, overwrite
        self.definitions = definitions  # None: OUT holds the outputs only

    @property
    def frames(self) -> int:
        """Image messages of the cameras (what frames_written counts up to)."""
        topics = {camera.image_topic for camera in self.cameras}
        return sum(c.msgcount for c in self.reader.connections if c.topic in topics)

    def close(self) -> None:
        self.reader.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def plan_bag(
    in_path: Path,
    out_path: Path,
    image_topics: list,
    *,
    camera_info_topic: str | None = None,
    storage: str | None = None,
    overwrite: bool = False,
    outputs=DEFAULT_OUTPUTS,
    outputs_only: bool = False,
) -> BagPlan:
    """IN opened and checked for writing OUT: a copy of IN (or, `outputs_only`, nothing of it)
    with the `outputs` (keys of topics.OUTPUTS) of each of `image_topics` (none given: the
    bag's one image topic); `camera_info_topic` (one image topic only) overrides the
    camera_info beside the image; `storage` of OUT (default IN's). BagError on a bag or topic
    problem, OutputExistsError when OUT exists and `overwrite` is not asked for."""
    in_path, out_path = Path(in_path), Path(out_path)
    image_topics = list(image_topics or ())
    if out_path.resolve() == in_path.resolve():
        raise BagError("OUT must differ from IN: the input bag is never modified")
    if out_path.exists() and not overwrite:
        raise OutputExistsError(f"{out_path} exists")
    if file_in_the_way(out_path.parent):
        raise BagError(f"OUT {out_path} is inside a file, not a folder")
    if storage is not None and storage not in STORAGES:
        raise BagError(f"storage must be one of {', '.join(STORAGES)}, got {storage!r}")
    unknown = sorted(set(outputs) - set(topics.OUTPUTS))
    if unknown or not outputs:
        raise BagError(
            f"outputs must be some of {', '.join(topics.OUTPUTS)}, got {', '.join(outputs)}"
        )
    if camera_info_topic is not None and len(image_topics) > 1:
        raise BagError("a camera_info topic applies to one image topic")
    reader = open_bag(in_path)
    try:
        image_topics = image_topics or [only_image_topic(reader, in_path)]
        cameras = [
            PlannedCamera(topic, *check_topics(reader, in_path, topic, camera_info_topic, outputs))
            for topic in image_topics
        ]
        outputs = [t for camera in cameras for t in camera.outputs.values()]
        clash = sorted({t for t in outputs if outputs.count(t) > 1})
        if clash:
            raise BagError(f"the image topics' outputs collide: {', '.join(clash)}")
        definitions = None if outputs_only else copy_definitions(reader)
    except BaseException:
        reader.close()
        raise
    storage = storage or storage_of(in_path)
    return BagPlan(in_path, out_path, reader, cameras, storage, definitions, overwrite)
