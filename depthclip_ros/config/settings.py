"""The outputs' parameters (OutputSettings: clouds, the temporal filter, compressedDepth,
camera_info pairing; the node and the bag tool), the node's own (NodeSettings), and every
parameter of the node together (Parameters), in the order `ros2 param list` shows them.

Defaults are the shipped config/depthclip.yaml (a test keeps them equal). No rclpy import.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Mapping

from ..errors import AnchorError, ConfigError
from ..transforms import StaticTransforms
from .parameters import DepthClipConfig
from .schema import Schema, param

TEMPORAL_FILTERS = ("off", "mixture")

COLORMAPS = ("turbo", "viridis", "gray")
EXECUTORS = ("auto", "events", "single_threaded")

METRIC_SCALE_MODES = ("off", "scale", "scale_shift", "bins")
METRIC_SCALE_SOURCES = ("scan", "points", "depth", "ground")


@dataclasses.dataclass(frozen=True)
class OutputSettings(Schema):
    """Parameters of the outputs (not of the estimator), shared by the node and the bag tool."""

    cloud_stride: int = param(
        8, "One cloud point every N pixels; 0 = one per coarse grid cell", minimum=0, maximum=64
    )
    cloud_max_std: float = param(
        0.0,
        "Cloud: drop points whose depth std (metres) is above this; 0 = keep all",
        minimum=0.0,
        maximum=100.0,
    )
    cloud_min_range: float = param(
        0.0,
        "Cloud: drop points nearer than this along the optical axis (metres)",
        minimum=0.0,
        maximum=1000.0,
    )
    cloud_max_range: float = param(
        0.0,
        "Cloud: drop points farther than this along the optical axis (metres), and pull "
        "points/clearing's in to it along their rays; 0 = no limit",
        minimum=0.0,
        maximum=1000.0,
    )
    clearing_quantile: float = param(
        0.1,
        "points/clearing: each point at the depth its pixel's surface is at or beyond with "
        "probability at least 1 - this (the smallest bin whose cumulative probability reaches "
        "it); "
        "strictly between 0 and 1",
        minimum=0.0,
        maximum=1.0,
        exclusive=True,
    )
    temporal_filter: str = param(
        "off",
        "off (each frame alone: the paper's) | mixture (each patch's bin distribution fused "
        "with the camera's recent frames', restarted where the image changed: steadier depth, "
        "some lag)",
        choices=TEMPORAL_FILTERS,
    )
    temporal_half_life: float = param(
        0.5,
        "temporal_filter mixture: seconds after which a frame's weight halves (from the stamps)",
        minimum=0.01,
        maximum=60.0,
    )
    temporal_change_threshold: float = param(
        8.0,
        "temporal_filter mixture: a patch whose mean colour moved by more than this many grey "
        "levels (any channel) since the previous frame starts again from the current frame",
        minimum=0.0,
        maximum=255.0,
    )
    metric_scale: str = param(
        "off",
        "off (the model's own metres) | scale | scale_shift (the depth's scale, and shift, "
        "fitted online to metric_scale_sources: docs/metric_scale.md) | bins (each bin moved "
        "on its own beyond the scale and shift)",
        choices=METRIC_SCALE_MODES,
    )
    metric_scale_sources: tuple = param(
        ("scan",),
        "metric_scale: range data to fit to, any of scan (sensor_msgs/LaserScan on scan), "
        "points (PointCloud2 on anchors/points), depth (a depth Image registered to the "
        "camera on anchors/depth, a named camera's on NAME/anchors/depth), ground (the floor "
        "under a camera ground_height up, pitched ground_pitch down)",
        single_ok=True,
    )
    static_transforms: tuple = param(
        (),
        "metric_scale: transforms from each source's frame to the camera's, each in "
        "static_transform_publisher's arguments ('x y z yaw pitch roll parent child' or "
        "'x y z qx qy qz qw parent child'); tried before tf2's /tf and /tf_static (heard where "
        "tf2_ros is installed) and joined with them, a frame given here taking this transform",
        single_ok=True,
    )
    metric_scale_fixed_frame: str = param(
        "odom",
        "metric_scale: the frame that stays put while the robot moves (REP 105's odom): each "
        "ray of a scan at its own time, and every source at its stamp, moved through it to the "
        "camera at the image's stamp; empty: the robot taken as still, each source moved at its "
        "stamp",
    )
    metric_scale_half_life: float = param(
        2.0,
        "metric_scale: the scale's drift between fits, 0.01 of log s per square root of this "
        "many seconds of stamps (longer: smoother); 4 of them without a fit start the state "
        "again",
        minimum=0.01,
        maximum=3600.0,
    )
    metric_scale_min_anchors: int = param(
        10,
        "metric_scale: feature cells with anchors a frame's fit needs",
        minimum=2,
        maximum=100000,
    )
    metric_scale_min: float = param(
        0.2,
        "metric_scale: smallest scale accepted (the model's own, 1, is always in the range)",
        minimum=0.001,
        maximum=1.0,
    )
    metric_scale_max: float = param(
        5.0, "metric_scale: largest scale accepted", minimum=1.0, maximum=1000.0
    )
    metric_scale_slop: float = param(
        0.05,
        "metric_scale: seconds a scan's or cloud's stamp may differ from the image's (the "
        "nearest wins), and the longest the depth waits for it after the image arrived",
        minimum=0.0,
        maximum=10.0,
    )
    metric_scale_max_age: float = param(
        2.0,
        "metric_scale: diagnostics WARN when the last fit is older than this (seconds)",
        minimum=0.0,
        maximum=3600.0,
    )
    metric_scale_require: bool = param(
        False,
        "metric_scale: withhold points, points/clearing and depth/camera_info (not the depth) "
        "until a first fit, and after a restart of the state until the next",
    )
    ground_height: float = param(
        0.0,
        "metric_scale source ground: the camera's height above the floor (metres)",
        minimum=0.0,
        maximum=100.0,
    )
    ground_pitch: float = param(
        0.0,
        "metric_scale source ground: the camera's pitch below level (radians, down positive)",
        minimum=-1.5,
        maximum=1.5,
    )
    colormap: str = param("turbo", "Colour map of depth/colored", choices=COLORMAPS)
    # depth/image/compressedDepth, named and bounded as compressed_depth_image_transport's.
    depth_max: float = param(
        10.0,
        "compressedDepth: maximum depth (metres); farther is coded as no depth",
        minimum=1.0,
        maximum=100.0,
    )
    depth_quantization: float = param(
        100.0,
        "compressedDepth: depth (metres) at which one code step is 1 m (step = depth^2 / "
        "(q (q + 1)))",
        minimum=1.0,
        maximum=150.0,
    )
    png_level: int = param(
        3, "compressedDepth: PNG compression level, 0 to 9", minimum=0, maximum=9
    )
    camera_info_slop: float = param(
        0.005,
        "Seconds a camera_info's stamp may differ from the image's and still pair with it "
        "(the nearest wins); 0 = exact stamps only",
        minimum=0.0,
        maximum=1.0,
    )

    def check(self) -> None:
        unknown = [s for s in self.metric_scale_sources if s not in METRIC_SCALE_SOURCES]
        if unknown or len(set(self.metric_scale_sources)) != len(self.metric_scale_sources):
            raise ConfigError(
                "metric_scale_sources",
                list(self.metric_scale_sources),
                f"must be distinct items of {', '.join(METRIC_SCALE_SOURCES)}",
            )
        if self.metric_scale_min >= self.metric_scale_max:
            raise ConfigError(
                "metric_scale_min", self.metric_scale_min, "must be below metric_scale_max"
            )
        if self.metric_scale != "off" and "ground" in self.metric_scale_sources:
            if self.ground_height <= 0:
                raise ConfigError(
                    "ground_height", self.ground_height, "must be > 0 for the source ground"
                )
        try:
            self.transforms()
        except AnchorError as e:
            raise ConfigError("static_transforms", list(self.static_transforms), str(e)) from None

    def transforms(self) -> StaticTransforms:
        return StaticTransforms.parse(self.static_transforms)


@dataclasses.dataclass(frozen=True)
class NodeSettings(Schema):
    """Parameters of the ROS node only."""

    cameras: tuple = param(
        (),
        "Camera names; empty: one camera on image, camera_info, depth/... Else camera X on "
        "X/image, X/camera_info, X/depth/..., one model for all",
        read_only=True,
    )
    max_batch: int = param(
        1,
        "Several cameras: up to this many cameras' pending frames of one size share one "
        "batched forward (a gain on CUDA; on CPU none, measured: docs/node.md)",
        read_only=True,
        minimum=1,
        maximum=64,
    )
    autostart: bool = param(
        True,
        "Configure and activate at start-up; false leaves the transitions to a lifecycle manager",
        read_only=True,
    )
    executor: str = param(
        "auto",
        "rclpy executor spinning the node: events (rclpy's EventsExecutor, Jazzy and later: "
        "a frame's callback costs less), single_threaded (rclpy's SingleThreadedExecutor), auto "
        "(events where this rclpy has it)",
        read_only=True,
        choices=EXECUTORS,
    )
    use_compressed: bool = param(
        False, "Subscribe to image/compressed (JPEG/PNG) instead of image", read_only=True
    )
    camera_info_wait: float = param(
        0.1,
        "Seconds after an image arrives that its point cloud waits for the camera_info of its "
        "stamp before the latest one of its size is used; the depth image never waits",
        minimum=0.0,
        maximum=5.0,
    )
    diagnostics_period: float = param(
        1.0, "Seconds between /diagnostics messages", read_only=True, minimum=0.1, maximum=60.0
    )
    input_timeout: float = param(
        2.0,
        "Diagnostics WARN when no image arrived for this many seconds while active",
        minimum=0.1,
        maximum=3600.0,
    )
    expected_input_rate: float = param(
        0.0,
        "Camera rate in Hz the diagnostics check the input against; 0 = not checked",
        minimum=0.0,
        maximum=1000.0,
    )
    rate_tolerance: float = param(
        0.5,
        "Input rates within expected_input_rate * (1 +- this) are OK",
        minimum=0.0,
        maximum=1.0,
    )
    scene_switch_frames: int = param(
        3,
        "scene_bins auto: a new scene takes over after winning this many consecutive frames",
        minimum=1,
        maximum=1000,
    )
    min_output_rate: float = param(
        0.0,
        "Diagnostics WARN when, while watched, fewer depth "
        "images per second go out; 0 = not checked",
        minimum=0.0,
        maximum=1000.0,
    )


# The node's parameters, in the order `ros2 param list` users read them.
PARAMETER_SCHEMAS = (DepthClipConfig, OutputSettings, NodeSettings)


@dataclasses.dataclass(frozen=True)
class Parameters:
    """Every parameter of the node, validated together."""

    config: DepthClipConfig
    outputs: OutputSettings
    node: NodeSettings

    @classmethod
    def from_params(cls, params: Mapping[str, Any]) -> "Parameters":
        return cls(*(schema.from_params(params) for schema in PARAMETER_SCHEMAS))


def parameter_fields() -> list:
    """(schema, dataclasses.Field) of every node parameter."""
    return [(schema, f) for schema in PARAMETER_SCHEMAS for f in schema.schema_fields()]


def parameter_defaults() -> dict:
    return {
        name: value for schema in PARAMETER_SCHEMAS for name, value in schema().to_params().items()
    }
