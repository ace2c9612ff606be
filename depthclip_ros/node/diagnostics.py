"""The node's /diagnostics: one DiagnosticStatus per camera from its statistics (via health),
plus, with several cameras, the node's own status (the worst camera's level)."""

from __future__ import annotations

import time

from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from std_msgs.msg import Header

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
):
    """`<node>: depth estimation` for one camera; with several, `<node>: <camera> depth
    estimation` each and `<node>: depth estimation` summing them up, with `forwards` (images,
    forwards run) since activation: how much max_batch batches. `cpu`: {thread: share of a
    core since the last status} (ThreadCpu), in the node's status."""
    cpu_values = [
        KeyValue(key=f"CPU, {name} (% of a core)", value=f"{share * 100:.0f}")
        for name, share in (cpu or {}).items()
    ]
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
        statuses[0].values.extend(cpu_values)
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
                    *cpu_values,
                ],
            ),
        )
    return DiagnosticArray(header=Header(stamp=stamp), status=statuses)
