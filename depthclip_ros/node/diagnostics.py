"""The node's /diagnostics: one DiagnosticStatus per camera from its statistics (via health),
plus, with several cameras, the node's own status (the worst camera's level)."""

from __future__ import annotations

import math
import time

from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from std_msgs.msg import Header

from ..model_loading import backend_of
from ..runtime import health


def camera_status(name, camera, params, estimator, activated_at, hardware_id) -> DiagnosticStatus:
    active = activated_at is not None
    state = health.NodeState(
        active=active,
        watched=active and camera.watched(),
        camera_info_received=camera.camera_infos.latest is not None,
        active_for=time.monotonic() - activated_at if active else 0.0,
        image_topic=camera.image_topic,
    )
    level, message, values = health.evaluate(camera.stats.snapshot(), params.node, state)
    values["device"] = str(estimator.device) if estimator else "none"
    values["model"] = estimator.model_identity if estimator else "none"
    values["precision"] = estimator.precision_detail if estimator else "none"
    if estimator is not None and str(estimator.device).lower().startswith(("cpu", "auto")):
        values["inference threads"] = str(estimator.cpu_threads)
    if estimator is not None:
        values["forwards in flight"] = str(getattr(estimator, "frames_in_flight", 1))
    figure = getattr(estimator, "depth_figure_words", None)  # exported graphs, torch bf16
    if figure:
        values["depth vs fp32 here"] = figure
    if estimator is not None and hasattr(estimator, "graph_status"):  # the torch core
        values["cuda graphs"] = estimator.graph_status
        graphs = getattr(estimator, "graphs", None)
        if graphs is not None:
            values["cuda graphs kept"] = (
                f"{graphs.kept} ({graphs.memory_bytes / 1e6:.0f} MB on the device; "
                f"{graphs.captures} captured, {graphs.evictions} pushed out by others)"
            )
    values.update({f"{i.topic} reliability": str(i.reliability) for i in camera.inputs})
    if params.outputs.temporal_filter != "off":
        values["temporal filter"] = camera.temporal.words(params.outputs)
    if params.outputs.metric_scale != "off":
        values.update(camera.scale.words(params.outputs))
        if camera.node.ranges is not None:
            values["metric transforms"] = camera.node.ranges.transforms_words()
            motion = camera.node.ranges.sources.motion.get(camera.name)
            values["metric motion"] = motion or "-"
        verdict = camera.scale.verdict(params.outputs)
        if verdict is not None and verdict[0] > level:
            level, message = verdict
    if params.config.scene_bins == "auto":  # the scene whose bins the depth uses
        values["scene"] = camera.scene.scene or "none yet"
        values["scene score"] = f"{camera.scene.score:.3f}"
    return DiagnosticStatus(
        level=bytes([level]),
        name=name,
        message=message,
        hardware_id=hardware_id,
        values=[KeyValue(key=k, value=v) for k, v in values.items()],
    )


def model_load(cameras, estimator, forwards=(0, 0)) -> health.ModelLoad | None:
    """The model's load over the window (health.model_load) from every camera's statistics,
    `forwards` (images, forwards run) since activation; None while there is no model."""
    if estimator is None or not cameras:
        return None
    images_per_forward = forwards[0] / forwards[1] if forwards[1] else 1.0
    in_flight = getattr(estimator, "frames_in_flight", 1)
    return health.model_load(
        [camera.stats.snapshot() for camera in cameras.values()], images_per_forward, in_flight
    )


def outpaced_detail(load: health.ModelLoad, params, estimator) -> str:
    """The figures of cameras faster than the model, and what would answer more of them."""
    figures = (
        f"{load.input_rate:.1f} Hz in, {load.capacity:.1f} Hz the model's forwards allow, "
        f"{load.answered_rate:.1f} Hz answered, the model busy {load.busy:.0%} of "
        "the time"
    )
    on_cpu = str(estimator.device).lower() == "cpu"
    if backend_of(params.config) == "torch" and on_cpu:
        advice = (
            "an exported int8 graph (depthclip-export) runs several times faster on a CPU "
            "(docs/performance.md#cpu-variants)"
        )
    elif on_cpu and getattr(estimator, "frames_in_flight", 1) == 1 and estimator.cpu_threads > 1:
        advice = (
            "inference_streams: 2 runs two frames' forwards side by side: more frames a "
            "second, each later (docs/onnx.md#two-frames-in-flight)"
        )
    else:
        advice = "each camera's newest frame is taken, the others dropped"
    return f"{figures}; {advice}"


def load_values(load: health.ModelLoad | None, params, estimator) -> list:
    """The node's status values of the model's load (model_load)."""
    if load is None:
        busy, outpaced = "-", "not judged yet"
    else:
        busy = "-" if math.isnan(load.busy) else f"{load.busy * 100:.0f}"
        outpaced = f"yes: {outpaced_detail(load, params, estimator)}" if load.outpaced else "no"
    return [
        KeyValue(key="model busy (% of the time)", value=busy),
        KeyValue(key="input faster than the model", value=outpaced),
    ]


def diagnostic_array(
    node_name,
    cameras,
    params,
    estimator,
    activated_at,
    hardware_id,
    stamp,
    forwards=(0, 0),
    cpu=None,
    load=None,
):
    """`<node>: depth estimation` for one camera; with several, `<node>: <camera> depth
    estimation` each and `<node>: depth estimation` summing them up, with `forwards` (images,
    forwards run) since activation: how much max_batch batches. `cpu`: {thread: share of a
    core since the last status} (ThreadCpu), and `load` (model_load), in the node's status."""
    node_values = [
        KeyValue(key=f"CPU, {name} (% of a core)", value=f"{share * 100:.0f}")
        for name, share in (cpu or {}).items()
    ]
    if estimator is not None:
        node_values += load_values(load, params, estimator)
    single = list(cameras) == [""]
    statuses = [
        camera_status(
            f"{node_name}: depth estimation"
            if single
            else f"{node_name}: {name} depth estimation",
            camera,
            params,
            estimator,
            activated_at,
            hardware_id,
        )
        for name, camera in cameras.items()
    ]
    if single:
        statuses[0].values.extend(node_values)
    else:
        worst = max(statuses, key=lambda s: s.level[0])
        statuses.insert(
            0,
            DiagnosticStatus(
                level=worst.level,
                name=f"{node_name}: depth estimation",
                message=f"{len(statuses)} cameras; worst: {worst.name.split(': ', 1)[1]}: "
                f"{worst.message}",
                hardware_id=hardware_id,
                values=[
                    KeyValue(key="cameras", value=", ".join(cameras)),
                    KeyValue(key="max_batch", value=str(params.node.max_batch)),
                    KeyValue(key="images", value=str(forwards[0])),
                    KeyValue(key="forwards", value=str(forwards[1])),
                    *node_values,
                ],
            ),
        )
    return DiagnosticArray(header=Header(stamp=stamp), status=statuses)
