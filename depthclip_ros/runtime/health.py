"""What the node reports on /diagnostics: a level, a message and key/values, from the last
10 s of frame statistics (statistics.py). No rclpy here; levels are DiagnosticStatus's values.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from ..config.settings import NodeSettings
from .statistics import Snapshot

OK, WARN, ERROR = 0, 1, 2
IDLE = "idle: no subscribers"
# The cameras outpace the model when their frames come faster than its forwards, one after
# another, could answer them (by this margin: a camera at the model's own rate is not);
# judged once frames have come for a few seconds (the first forwards are slow).
OUTPACED_MARGIN = 1.1
OUTPACED_AFTER = 5.0  # seconds of frames


@dataclasses.dataclass
class NodeState:
    """What the statistics do not know: the lifecycle state and what the node sees."""

    active: bool
    watched: bool  # some output has a subscriber
    camera_info_received: bool
    active_for: float  # seconds since activation (the input timeout counts from there)
    image_topic: str = "image"


def rate_bounds(settings: NodeSettings) -> tuple | None:
    """Acceptable input rates (Hz), as diagnostic_updater's FrequencyStatus: f * (1 +-
    tolerance)."""
    f = settings.expected_input_rate
    if f <= 0:
        return None
    return f * (1 - settings.rate_tolerance), f * (1 + settings.rate_tolerance)


def evaluate(snap: Snapshot, settings: NodeSettings, state: NodeState) -> tuple:
    """(level, message, values) for the node's status. The message lists every problem, worst
    first; with none it is 'ok', or 'idle: no subscribers' while nobody listens."""
    values = report_values(snap, settings, state)
    if not state.active:
        return OK, "inactive", values
    problems = [
        *input_problems(snap, settings, state),
        *frame_problems(snap),
        *rate_problems(snap, settings, state),
    ]
    if not problems:
        return OK, ("ok" if state.watched else IDLE), values
    problems.sort(key=lambda p: -p[0])
    message = "; ".join(text for _, text in problems)
    if not state.watched:
        message += f"; {IDLE}"
    return problems[0][0], message, values


def report_values(snap: Snapshot, settings: NodeSettings, state: NodeState) -> dict:
    """The status's key/values: state, rates against their bounds, counts, timings."""
    window = f"{snap.window:.0f} s"
    counts = snap.counts
    bounds = rate_bounds(settings)
    silent = snap.since("received")
    return {
        "state": ("active" if state.watched else IDLE) if state.active else "inactive",
        "input rate (Hz)": f"{snap.rate('received'):.2f}",
        "expected input rate (Hz)": (
            f"{bounds[0]:.2f} to {bounds[1]:.2f}" if bounds else "not checked"
        ),
        "output rate (Hz)": f"{snap.rate('published'):.2f}",
        "minimum output rate (Hz)": (
            f"{settings.min_output_rate:.2f}" if settings.min_output_rate else "not checked"
        ),
        "seconds since last image": "never" if silent is None else f"{silent:.1f}",
        **{
            f"{kind} frames (last {window})": str(counts[kind])
            for kind in ("received", "published", "dropped", "rejected", "failed")
        },
        f"frames paired with another stamp's camera_info (last {window})": str(
            counts["info_fallbacks"]
        ),
        **{
            f"{kind} frames (since activation)": str(snap.totals[kind])
            for kind in ("received", "published", "rejected", "failed")
        },
        "inference median (ms)": f"{snap.percentile_ms('inference', 50):.1f}",
        "inference p95 (ms)": f"{snap.percentile_ms('inference', 95):.1f}",
        "decode median (ms)": f"{snap.percentile_ms('decode', 50):.2f}",
        "after the model median (ms)": f"{snap.percentile_ms('after the model', 50):.2f}",
        "outputs median (ms)": f"{snap.percentile_ms('outputs', 50):.2f}",
        "latency median (ms)": f"{snap.percentile_ms('latency', 50):.1f}",
        "latency p95 (ms)": f"{snap.percentile_ms('latency', 95):.1f}",
        "camera_info": "received" if state.camera_info_received else "missing",
    }


def input_problems(snap: Snapshot, settings: NodeSettings, state: NodeState) -> list:
    """[(level, text)] of the inputs: a silent camera, no camera_info."""
    problems = []
    silent = snap.since("received")
    if silent is None and state.active_for >= settings.input_timeout:
        problems.append(
            (
                WARN,
                f"no image on {state.image_topic} since activation {state.active_for:.0f} s ago",
            )
        )
    elif silent is not None and silent >= settings.input_timeout:
        problems.append((WARN, f"no image on {state.image_topic} for {silent:.1f} s"))
    if not state.camera_info_received:
        problems.append((WARN, "no camera_info received: depth without point cloud"))
    return problems


def frame_problems(snap: Snapshot) -> list:
    """[(level, text)] of rejected or failed frames (ERROR when none was published)."""
    counts = snap.counts
    if not counts["rejected"] + counts["failed"]:
        return []
    level = ERROR if counts["published"] == 0 and counts["failed"] else WARN
    text = (
        f"{counts['rejected']} rejected, {counts['failed']} failed frames in the last "
        f"{snap.window:.0f} s"
    )
    return [(level, text)]


def rate_problems(snap: Snapshot, settings: NodeSettings, state: NodeState) -> list:
    """[(level, text)] of the rates: input outside its bounds, output below its minimum.
    Judged once the window is full: a camera just started is not "too slow"."""
    problems = []
    counts = snap.counts
    full = snap.span >= snap.window
    bounds, in_rate = rate_bounds(settings), snap.rate("received")
    if bounds and full and snap.since("received") is not None:
        if not bounds[0] <= in_rate <= bounds[1]:
            problems.append(
                (
                    WARN,
                    f"input rate {in_rate:.2f} Hz outside {bounds[0]:.2f} to {bounds[1]:.2f} Hz",
                )
            )
    out_rate = snap.rate("published")
    if (
        settings.min_output_rate
        and full
        and state.watched
        and counts["received"]
        and out_rate < settings.min_output_rate
    ):
        problems.append(
            (WARN, f"output rate {out_rate:.2f} Hz below {settings.min_output_rate:.2f} Hz")
        )
    return problems


@dataclasses.dataclass(frozen=True)
class ModelLoad:
    """What the model makes of the cameras over the window, every camera's frames together."""

    input_rate: float  # Hz received
    answered_rate: float  # Hz published
    capacity: float  # Hz its forwards answer, one after another (NaN: none timed)
    # The share of the time each forward in flight was running: forwards a second times their
    # median, an estimate a few % over at full load, so capped at 1 (NaN: none timed).
    busy: float

    @property
    def outpaced(self) -> bool:
        """The cameras are faster than the model. Judged by the model's own rate, not by the
        frames dropped: a node short of CPU drops frames a faster model would not answer."""
        return self.input_rate >= OUTPACED_MARGIN * self.capacity


def model_load(snaps, images_per_forward: float, in_flight: int) -> ModelLoad | None:
    """The load of a model serving cameras with these snapshots (each camera's, the same
    window), `images_per_forward` on average (max_batch), `in_flight` forwards side by side,
    over the time frames came in (a camera started late is not a model idle before it); None
    before OUTPACED_AFTER seconds of frames."""
    firsts = [snap.first["received"] for snap in snaps if snap.first["received"] is not None]
    if not firsts:
        return None
    span = max(snap.now for snap in snaps) - min(firsts)
    if span < OUTPACED_AFTER:
        return None
    received = sum(snap.counts["received"] for snap in snaps)
    published = sum(snap.counts["published"] for snap in snaps)
    forwards = [seconds for snap in snaps for seconds in snap.timings["inference"]]
    forward = float(np.median(forwards)) if forwards else float("nan")
    capacity = in_flight * images_per_forward / forward if forward > 0 else float("nan")
    busy = float(np.minimum(published / span / images_per_forward * forward / in_flight, 1.0))
    return ModelLoad(received / span, published / span, capacity, busy)
