"""The message definition and type hash (RIHS01) each copied topic of a bag is written with.

A bag recorded on Iron or later carries both. Humble records no type hashes, and no definitions
at all in sqlite3; a bare .mcap file has definitions but no metadata.yaml to hold the hashes.
OUT is a version 8 bag, which carries both for every topic, so what the bag lacks is made here:
the hash of the recorded definition, or the definition and hash of a standard type as the
recording distribution defines it (rosbags' store of that distribution). No rclpy.
"""

from __future__ import annotations

from rosbags.interfaces import MessageDefinitionFormat
from rosbags.typesys import Stores, get_types_from_idl, get_types_from_msg, get_typestore

from ..errors import BagError

# Distribution of a bag whose metadata does not name one: the newest that records no hashes.
NO_HASHES = Stores.ROS2_HUMBLE
# ... and of a bag with hashes but no distribution named (rosbags' own writer names itself).
HASHES = Stores.ROS2_KILTED


def copy_definitions(reader) -> dict:
    """{connection id: (definition, RIHS01 hash)} for every connection of an open rosbags
    reader. BagError names a topic whose type the bag does not define and the recording
    distribution's standard types do not include, or whose recorded definition is damaged."""
    store = None
    found = {}
    for c in reader.connections:
        if c.msgdef.data and c.digest:
            found[c.id] = (c.msgdef.data, c.digest)
        elif c.msgdef.data:
            found[c.id] = (c.msgdef.data, _hash_of_recorded(c))
        else:
            store = store or get_typestore(recording_distribution(reader))
            if c.msgtype not in store.types:
                raise BagError(
                    f"cannot copy {c.topic}: the bag records no definition of its type "
                    f"{c.msgtype} (Humble's sqlite3 storage records none) and it is not a "
                    f"standard ROS 2 type; convert the bag to MCAP where its package "
                    f"{c.msgtype.split('/')[0]} is installed (ros2 bag convert, storage_id mcap): "
                    f"MCAP keeps definitions"
                )
            found[c.id] = (
                store.generate_msgdef(c.msgtype, ros_version=2)[0],
                store.hash_rihs01(c.msgtype),
            )
    return found


def recording_distribution(reader) -> Stores:
    """rosbags' type store of the distribution that recorded the bag: the one its metadata names,
    else Humble for a bag without type hashes (Humble and older record none)."""
    named = (reader.ros_distro or "").upper()  # none in Humble's metadata or a bare file
    if f"ROS2_{named}" in Stores.__members__:
        return Stores[f"ROS2_{named}"]
    return HASHES if any(c.digest for c in reader.connections) else NO_HASHES


def _hash_of_recorded(connection) -> str:
    """The RIHS01 hash of the definition the bag recorded (the type and every type it uses)."""
    scratch = get_typestore(Stores.EMPTY)
    try:
        if connection.msgdef.format == MessageDefinitionFormat.IDL:
            types = get_types_from_idl(connection.msgdef.data)
        else:
            types = get_types_from_msg(connection.msgdef.data, connection.msgtype)
        scratch.register(types)
        return scratch.hash_rihs01(connection.msgtype)
    except Exception as exc:  # rosbags' parser raises several kinds on a damaged definition
        raise BagError(
            f"cannot copy {connection.topic}: its recorded definition of {connection.msgtype} "
            f"cannot be read: {type(exc).__name__}: {exc}"
        ) from None
