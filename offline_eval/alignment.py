"""`depthclip-eval --align`: each image's depth put in a scale before it is scored.

- `none`: the paper's protocol (the default): the depth as the model gives it.
- `median`, `lstsq`: oracles that read the image's own truth: the median ratio, and the scale
  and shift of least relative error over every scored pixel: the ceiling of any scale fit.
- `scan:H`, `random:N`: range data simulated from the truth (a 2D lidar H metres below the
  camera, its nearest return every 0.5 degrees; N of the truth's points) fitted by the node's
  own metric_scale rule, as a robot with that sensor would have it: in mode scale_shift, or
  the one a `:MODE` suffix names (`scan:0.25:bins`).

Each moves the bins of the result (depth, std and the clearing quantiles stay one distribution,
as the node's metric_scale does); an image whose range data gives no fit is scored as the model
gave it, and counted. The simulated sensors serve the benchmark's metric-scale table too.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from depthclip_ros import metrics
from depthclip_ros.config.settings import OutputSettings
from depthclip_ros.metric_scale.camera_scale import CameraScale
from depthclip_ros.metric_scale.fit import MODES
from depthclip_ros.metric_scale.tracking import Calibration

# NYU Depth V2's colour camera (the toolbox's camera_params.m)
NYU_K = np.array([[518.857901, 0, 325.582449], [0, 519.469611, 253.736166], [0, 0, 1.0]])
FORMS = (
    "none | median | lstsq | scan:H (metres below the camera) | random:N (points), "
    "either with :MODE (one of scale, scale_shift, bins)"
)
FIT_MODE = "scale_shift"  # scan and random without a :MODE suffix


def truth_points(truth: np.ndarray, k: np.ndarray = NYU_K) -> tuple:
    """(points (N, 3) in the optical frame, pixel rows, pixel columns) of the valid truth."""
    v, u = np.nonzero(truth > 0)
    z = truth[v, u].astype(np.float64)
    x = (u - k[0, 2]) * z / k[0, 0]
    y = (v - k[1, 2]) * z / k[1, 1]
    return np.stack([x, y, z], axis=1), v, u


def lidar_plane(points: np.ndarray, below: float, step_deg: float = 0.5) -> np.ndarray:
    """A 2D lidar `below` metres under the camera: each ray's nearest return in the plane."""
    band = points[np.abs(points[:, 1] - below) < 0.01]
    angle = np.degrees(np.arctan2(band[:, 0], band[:, 2]))
    ray = np.floor(angle / step_deg).astype(int)
    rng = np.hypot(band[:, 0], band[:, 2])
    order = np.lexsort((rng, ray))
    _, first = np.unique(ray[order], return_index=True)
    return band[order[first]]


def relative_fit(truth: np.ndarray, depth: np.ndarray, scale_only: bool = False) -> tuple:
    """(s, t) of least relative error |(s d + t) / z - 1| over the pixels with truth (> 0)."""
    valid = (truth > 0) & np.isfinite(depth)
    z, d = truth[valid].astype(np.float64), depth[valid].astype(np.float64)
    design = np.stack([d / z, 1 / z], axis=1)[:, : 1 if scale_only else 2]
    params = np.linalg.lstsq(design, np.ones(len(z)), rcond=None)[0]
    return float(params[0]), float(params[1]) if not scale_only else 0.0


def scored_fit(truth: np.ndarray, depth: np.ndarray, crop: bool = True) -> tuple:
    """relative_fit over the pixels the protocol scores (`crop`: NYU's), `depth` put on its
    canvas."""
    canvas = metrics.on_canvas(depth, truth.shape)
    scored = metrics.valid_pixels(truth, canvas, crop)
    return relative_fit(np.where(scored, truth, 0.0), canvas)


@dataclasses.dataclass(frozen=True)
class Alignment:
    kind: str = "none"  # none | median | lstsq | scan | random
    value: float = 0.0  # scan: metres below the camera; random: points
    mode: str = FIT_MODE  # scan and random: metric_scale's mode

    @classmethod
    def parse(cls, text: str) -> "Alignment":
        kind, _, rest = str(text).partition(":")
        if kind in ("none", "median", "lstsq") and not rest:
            return cls(kind)
        value, _, mode = rest.partition(":")
        try:
            number = float(value)
        except ValueError:
            number = float("nan")
        mode = mode or FIT_MODE
        if mode in MODES and kind == "scan" and np.isfinite(number) and number != 0:
            return cls(kind, number, mode)
        if mode in MODES and kind == "random" and number >= 1 and number == int(number):
            return cls(kind, number, mode)
        raise ValueError(f"{text!r} is none of {FORMS}")

    def __str__(self) -> str:
        if self.kind in ("scan", "random"):
            suffix = "" if self.mode == FIT_MODE else f":{self.mode}"
            return f"{self.kind}:{self.value:g}{suffix}"
        return self.kind

    def apply(
        self, result, index: int, truth: np.ndarray, name: str, seed=0, k=NYU_K, crop=True
    ) -> bool:
        """Image `index` of `result` (the core's, of an NYU frame, or of a camera whose
        intrinsics are `k`) aligned in place to `truth` (metres on the image's canvas, 0:
        none) of image `name`, scored within NYU's eval crop (`crop`); False when its range
        data gave no fit (the depth left as the model gave it)."""
        if self.kind == "none":
            return True
        if self.kind in ("median", "lstsq"):
            if self.kind == "median":
                canvas = metrics.on_canvas(result.depth[index], truth.shape)
                scored = metrics.valid_pixels(truth, canvas, crop)
                scale, shift = np.median(truth[scored]) / np.median(canvas[scored]), 0.0
            else:
                scale, shift = scored_fit(truth, result.depth[index], crop)
            Calibration(float(scale), shift, 0.0, 0.0, 0.0).apply(result, index)
            return True
        points, _, _ = truth_points(truth, k)
        if self.kind == "scan":
            anchors = lidar_plane(points, self.value)
        else:  # per image, so a resumed run draws the same points
            rng = np.random.default_rng([seed, *name.encode()])
            count = min(int(self.value), len(points))
            anchors = points[rng.choice(len(points), count, replace=False)]
        settings = OutputSettings(metric_scale=self.mode, metric_scale_sources=("points",))
        fitted = CameraScale().apply(result, index, anchors, k, 0.0, settings)
        return fitted is not None
