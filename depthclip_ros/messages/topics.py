"""The node's topic names, defined once for the node, the bag tool, the launch file and the tests.

Relative names: the node resolves them in its namespace (launch it in the camera's namespace),
the bag tool beside the image topic. Depth follows image_transport's pairing (`X/image` with
`X/camera_info`) and REP 118 (32FC1 metres).
"""

from __future__ import annotations

IMAGE = "image"
COMPRESSED_IMAGE = "image/compressed"
CAMERA_INFO = "camera_info"
# metric_scale's range data: one scan and one cloud serve every camera of the node; a named
# camera has its own registered depth image, NAME/anchors/depth.
SCAN = "scan"
ANCHOR_POINTS = "anchors/points"
ANCHOR_DEPTH = "anchors/depth"
RANGE_INPUTS = {"scan": SCAN, "points": ANCHOR_POINTS, "depth": ANCHOR_DEPTH}  # by source

DEPTH_IMAGE = "depth/image"
# image_transport's name for depth/image's compressedDepth transport.
COMPRESSED_DEPTH = "depth/image/compressedDepth"
DEPTH_STD = "depth/std"
DEPTH_CAMERA_INFO = "depth/camera_info"
DEPTH_COLORED = "depth/colored"
POINTS = "points"
# The cloud a costmap clears with: each point where the surface is at or beyond with probability
# at least 1 - clearing_quantile (docs/nav2.md).
CLEARING_POINTS = "points/clearing"

# key -> relative name of every output
OUTPUTS = {
    "depth": DEPTH_IMAGE,
    "std": DEPTH_STD,
    "camera_info": DEPTH_CAMERA_INFO,
    "colored": DEPTH_COLORED,
    "points": POINTS,
    "clearing": CLEARING_POINTS,
    "compressed_depth": COMPRESSED_DEPTH,
}


def camera_namespace(image_topic: str) -> str:
    """The namespace of a camera's image topic: /cam/color/image_raw[/compressed] -> /cam/color."""
    base = image_topic.rstrip("/")
    if base.endswith("/compressed"):
        base = base[: -len("/compressed")]
    return base.rsplit("/", 1)[0]


def beside(image_topic: str, relative: str) -> str:
    """`relative` resolved in the image topic's namespace, as the node in that namespace names
    it."""
    return f"{camera_namespace(image_topic)}/{relative}"


def outputs_beside(image_topic: str) -> dict:
    """Every output topic for a camera whose image is `image_topic`: what a node launched in the
    camera's namespace publishes."""
    return {key: beside(image_topic, name) for key, name in OUTPUTS.items()}
