"""metric_scale measured on known truth: model outputs made from the NYU samples' ground truth
(a DepthCLIP-like soft distribution over the bins, its depth off by a known scale and shift),
anchors simulated from the same truth (a 2D lidar plane below the camera, random points, an
8x8 ToF grid; outliers and noise added), the fit through the package's own rule
(metric_scale.camera_scale), scored by the paper's protocol. No CLIP runs here: these figures
are the mechanism's, labelled "synthetic model output"."""

from __future__ import annotations

import numpy as np

from depthclip_ros.config.settings import OutputSettings
from depthclip_ros.estimator.depth_quantile import depth_quantile
from depthclip_ros.estimator.result import DepthResult
from depthclip_ros.estimator.temporal_filter import BilinearUpsampling
from depthclip_ros.metric_scale.camera_scale import CameraScale
from depthclip_ros.metric_scale.projection import project
from depthclip_ros.metrics import MAX_DEPTH, compute_errors, on_canvas, valid_pixels
from offline_eval.alignment import NYU_K, Alignment, lidar_plane, scored_fit, truth_points

GRID = (13, 17)  # the shipped 544x416 network input's feature grid
BINS = np.linspace(0.5, 3.5, 7)  # the synthetic model's bins
SCALE, SHIFT = 3.0, -1.5  # truth = SCALE * model + SHIFT: the model's error
SPREAD = 0.25  # metres: the width of the synthetic distributions
MODEL_WORDS = (
    f"synthetic model output: the truth on the feature grid as a soft distribution over "
    f"{len(BINS)} bins, truth = {SCALE:g} x model {SHIFT:+g} m"
)


def synthetic_result(truth: np.ndarray) -> DepthResult:
    """The model output a DepthCLIP-like model gives for `truth` (metres, 0: no truth), off by
    SCALE and SHIFT: on the feature grid each cell's bins weighted by a Gaussian around
    (truth - SHIFT) / SCALE, its depth and std those of the distribution, upsampled as the
    depth step upsamples."""
    h, w = GRID
    rows = np.array_split(np.arange(truth.shape[0]), h)
    cols = np.array_split(np.arange(truth.shape[1]), w)
    cells = np.full(GRID, np.nan)
    for i, r in enumerate(rows):
        for j, c in enumerate(cols):
            block = truth[np.ix_(r, c)]
            block = block[block > 0]
            cells[i, j] = np.median(block) if block.size else np.nan
    filled = np.where(np.isnan(cells), np.nanmedian(cells), cells)
    model = (filled - SHIFT) / SCALE
    logits = -((BINS[:, None, None] - model[None]) ** 2) / (2 * SPREAD**2)
    probs = np.exp(logits - logits.max(axis=0))
    probs /= probs.sum(axis=0)
    mean = np.einsum("khw,k->hw", probs, BINS)
    std = np.sqrt(np.maximum(np.einsum("khw,k->hw", probs, BINS**2) - mean**2, 0.0))
    up = BilinearUpsampling(GRID, truth.shape)
    depth, depth_std = (np.empty(truth.shape, np.float32) for _ in range(2))
    up(mean.astype(np.float32), depth)
    up.std(mean.astype(np.float32), (std**2).astype(np.float32), depth_std)
    return DepthResult(
        depth=depth[None],
        depth_std=depth_std[None],
        coarse_depth=mean.astype(np.float32)[None],
        coarse_std=std.astype(np.float32)[None],
        bin_probs=probs.astype(np.float32)[None],
        bins=BINS.astype(np.float32),
        region=(0, 0, *truth.shape),
        head_keys=("synthetic",),
    )


def corrupted(points: np.ndarray, outliers: float, noise: float, rng) -> np.ndarray:
    """Range noise (relative) on every point; `outliers` of them at 0.3 to 0.9 of their range
    (a person in the way, a reflection)."""
    points = points * (1 + rng.normal(0, noise, len(points)))[:, None]
    bad = rng.random(len(points)) < outliers
    return np.where(bad[:, None], points * rng.uniform(0.3, 0.9, len(points))[:, None], points)


def anchor_sets(truth: np.ndarray, rng) -> dict:
    """An NYU image's simulated range data: lidar planes, random points, an 8x8 ToF grid."""
    points, v, u = truth_points(truth)
    sets = {f"lidar plane {b:g} m below": lidar_plane(points, b) for b in (0.1, 0.25, 0.5)}
    sets["100 random points"] = points[rng.choice(len(points), 100, replace=False)]
    # The timing condition: 1,000 anchors (a 3D lidar's or a depth camera's share).
    sets["1000 random points"] = points[rng.choice(len(points), 1000, replace=False)]
    grid_pick = []
    for gv in np.linspace(150, 330, 8).astype(int):  # an 8x8 ToF's zones, the view's middle
        for gu in np.linspace(230, 410, 8).astype(int):
            grid_pick.append(np.argmin((v - gv) ** 2 + (u - gu) ** 2))
    sets["8x8 ToF grid"] = points[grid_pick]
    return sets


def nyu_samples(folder, count: int) -> list:
    """(name, truth (m), K, {anchor set: points}) of the first `count` NYU samples."""
    from depthclip_ros.metrics import gt_from_png
    from offline_eval.data import load_bts, open_dataset

    rng = np.random.default_rng(0)
    samples = []
    for sample in open_dataset(folder).samples[:count]:
        truth = gt_from_png(load_bts(sample)[1])
        samples.append((f"NYU {sample.name}", truth, NYU_K, anchor_sets(truth, rng)))
    return samples


def scene_samples() -> list:
    """The built-in scenes with the floor alone: a level camera at the scene's floor height."""
    from depthclip_ros.metric_scale.anchors import ground_points
    from depthclip_ros.synthetic_scenes import CX, CY, FX, FY, SCENES, render_scene

    k = np.array([[FX, 0, CX], [0, FY, CY], [0, 0, 1.0]])
    samples = []
    for name, (_, floor, _, _) in SCENES.items():
        truth = render_scene(name)[1]
        floor_points = {"floor (camera height known)": ground_points(k, truth.shape, floor, 0.0)}
        samples.append((f"scene {name}", truth, k, floor_points))
    return samples


def _first_hit(origin, rays, boxes) -> np.ndarray:
    """Distance along each ray (N, 3) from `origin` to its first surface: the inside of the
    first box (the room), else the outside of the others, whichever is nearer."""
    with np.errstate(divide="ignore", invalid="ignore"):
        inverse = 1.0 / rays
        (low, high), *obstacles = boxes
        leave = np.maximum((low - origin) * inverse, (high - origin) * inverse)
        distance = np.nanmin(np.where(leave > 0, leave, np.inf), axis=1)
        for low, high in obstacles:
            a, b = (low - origin) * inverse, (high - origin) * inverse
            enter = np.nanmax(np.minimum(a, b), axis=1)
            exit_ = np.nanmin(np.maximum(a, b), axis=1)
            hit = (exit_ >= enter) & (enter > 0) & (enter < distance)
            distance = np.where(hit, enter, distance)
    return distance


def parallax_sample(above: float = 0.3, box_distance: float = 1.2) -> tuple:
    """(name, truth, K, {anchor set: points}): the built-in room with a box 1.2 m wide and 0.8
    m deep `box_distance` ahead, its top 0.25 m below the camera, seen by the camera and by a
    32-laser 360-degree lidar (+-20 degrees, 1024 azimuths) `above` metres above it: the lidar
    sees past the box's top edge to floor the camera cannot see, and those returns land on
    the box's pixels (lidar-camera parallax)."""
    from depthclip_ros.synthetic_scenes import CX, CY, FX, FY, HEIGHT, SCENES, WIDTH

    half_width, floor, ceiling, far = SCENES["room"]
    boxes = [
        (np.array([-half_width, -ceiling, -1.0]), np.array([half_width, floor, far])),
        (np.array([-0.6, 0.25, box_distance]), np.array([0.6, floor, box_distance + 0.8])),
    ]
    v, u = np.mgrid[0:HEIGHT, 0:WIDTH].astype(np.float64)
    rays = np.stack([(u - CX) / FX, (v - CY) / FY, np.ones_like(u)], -1).reshape(-1, 3)
    truth = _first_hit(np.zeros(3), rays, boxes).reshape(HEIGHT, WIDTH).astype(np.float32)
    azimuth, elevation = np.meshgrid(
        np.linspace(-np.pi, np.pi, 1024, endpoint=False), np.radians(np.linspace(-20, 20, 32))
    )
    lidar = np.array([0.0, -above, 0.0])  # optical frame: y down
    rays = np.stack(
        [
            -np.cos(elevation) * np.sin(azimuth),
            -np.sin(elevation),
            np.cos(elevation) * np.cos(azimuth),
        ],
        axis=-1,
    ).reshape(-1, 3)
    points = lidar + _first_hit(lidar, rays, boxes)[:, None] * rays
    k = np.array([[FX, 0, CX], [0, FY, CY], [0, 0, 1.0]])
    name = f"scene room, a box {box_distance:g} m ahead"
    return name, truth, k, {f"3D lidar {above:g} m above (parallax)": points}


def scores(truth: np.ndarray, depth: np.ndarray) -> dict:
    canvas = on_canvas(depth)
    valid = valid_pixels(truth, canvas)
    return compute_errors(truth[valid], canvas[valid])


def every_pixel_fit(truth: np.ndarray, depth: np.ndarray) -> np.ndarray:
    """The oracle (--align lstsq): scale and shift of least relative error over every scored
    pixel."""
    scale, shift = scored_fit(truth, depth)
    return scale * depth + shift


def wrongly_cleared(truth: np.ndarray, result: DepthResult, q: float = 0.1) -> int:
    """Pixels (every 8th) whose points/clearing depth lies beyond the truth by more than 5 %:
    free space claimed where an obstacle is."""
    rows, cols = np.arange(0, truth.shape[0], 8), np.arange(0, truth.shape[1], 8)
    clearing = depth_quantile(result, 0, q, rows, cols)
    seen = truth[np.ix_(rows, cols)]
    ok = (seen > 0) & (seen < MAX_DEPTH) & np.isfinite(clearing)
    return int(np.count_nonzero(clearing[ok] > 1.05 * seen[ok]))


def frame_ms(truth, anchors, k, settings, repeats: int = 7) -> list:
    """[median ms of projection, fit and filter; of the application to the VGA result] of one
    camera's frames over these anchors (CameraScale's own timing; a fresh result each frame)."""
    camera, seconds = CameraScale(), []
    for repeat in range(repeats):
        camera.apply(synthetic_result(truth), 0, anchors, k, 0.1 * repeat, settings)
        seconds.append((camera.seconds["fit"], camera.seconds["application"]))
    fit_s, application_s = np.median(np.array(seconds), axis=0) * 1e3
    return [f"{fit_s:.2f}", f"{application_s:.2f}"]


def bench_metric_scale(samples, quick: bool) -> tuple:
    """(head, rows): one row per sample, anchor set, outlier share and noise; `samples` of
    nyu_samples and scene_samples."""
    settings = OutputSettings(metric_scale="scale_shift", metric_scale_min_anchors=8)
    rng = np.random.default_rng(1)
    rows = []
    for name, truth, k, sets in samples:
        base = synthetic_result(truth)
        uncalibrated = scores(truth, base.depth[0])
        oracle = scores(truth, every_pixel_fit(truth, base.depth[0]))
        # The clearing a perfect fit leaves (the grid blends what a cell holds): base moved by
        # --align lstsq's scale and shift, without uncertainty.
        Alignment("lstsq").apply(base, 0, truth, name)
        oracle_cleared = wrongly_cleared(truth, base)
        for source, clean in sets.items():
            exact = source.startswith("floor")  # the floor's own points: no sensor noise
            for outliers in (0.0,) if exact else (0.0, 0.3) if quick else (0.0, 0.1, 0.3):
                for noise in (0.0,) if exact else (0.01,) if quick else (0.01, 0.03):
                    anchors = corrupted(clean, outliers, noise, rng)
                    result = synthetic_result(truth)
                    camera = CameraScale()
                    calibration = camera.apply(result, 0, anchors, k, 0.0, settings)
                    fit = camera.tracker.last_fit
                    row = [name, source, f"{outliers:.0%}", f"{noise:.0%}"]
                    row += [f"{uncalibrated['abs_rel']:.3f}", f"{oracle['abs_rel']:.3f}"]
                    if calibration is None:
                        rows.append(row + ["not fitted: " + camera.reason] + ["-"] * 8)
                        continue
                    got = scores(truth, result.depth[0])
                    row += [
                        f"{got['abs_rel']:.3f}",
                        f"{got['rmse']:.3f}",
                        f"{got['d1']:.3f}",
                        f"{fit.used} ({fit.cells}) / {fit.inliers}",
                        f"{calibration.scale / SCALE - 1:+.1%}",
                        f"{calibration.shift - SHIFT:+.2f}",
                        f"{wrongly_cleared(truth, result)} / {oracle_cleared}",
                        *frame_ms(truth, anchors, k, settings),
                    ]
                    rows.append(row)
    head = [
        "sample",
        "anchors",
        "outliers",
        "noise",
        "AbsRel uncalibrated",
        "AbsRel every-pixel fit",
        "AbsRel calibrated",
        "RMSE (m)",
        "delta1",
        "anchors used (cells) / inliers",
        "scale error",
        "shift error (m)",
        "clearing beyond truth, calibrated / every-pixel fit (px of 4800)",
        "projection, fit and filter (ms)",
        "application (ms)",
    ]
    return head, rows


STEP, GLASS = 1.2, 1.6  # the scene's scale against the model steps by 1.2; a glass frame: 1.6
RATE = 15.0  # frames a second of the sequences


class _Sequence:
    """One camera's frames of one scene through CameraScale, fresh noise and outliers each."""

    def __init__(self, truth, k, clean, outliers, noise, settings):
        self.truth, self.k, self.clean = truth, k, clean
        self.outliers, self.noise, self.settings = outliers, noise, settings
        self.rng = np.random.default_rng(2)
        self.camera, self.fitted, self.result = CameraScale(), [], None

    def frame(self, stamp: float, factor: float = 1.0):
        """The calibration of the frame at `stamp`, its anchors `factor` times the truth's
        (the calibrated result in `result`)."""
        anchors = corrupted(self.clean, self.outliers, self.noise, self.rng) * factor
        self.result = synthetic_result(self.truth)
        calibration = self.camera.apply(self.result, 0, anchors, self.k, stamp, self.settings)
        self.fitted.append(self.camera.tracker.last_fit.fitted)
        return calibration


def bench_metric_scale_over_time(samples, quick: bool) -> tuple:
    """(head, rows): per sample and anchor set, a camera's sequence through the package's own
    rule (CameraScale, the shipped half-life) with fresh noise and outliers every frame: the
    share of frames fitted; the std of log s over a still stretch (after the first second),
    and its depth's mean AbsRel there against the every-pixel fit's (a state held off by one
    early fit shows there, not in the std); the seconds until the state is within 1 % of a
    scale step that persists (all anchors x STEP from then on); how far one glass frame (all
    anchors x GLASS) moves the state."""
    settings = OutputSettings(metric_scale="scale_shift", metric_scale_min_anchors=8)
    still, settle, count = (2.0, 2.0, 2) if quick else (4.0, 3.0, None)
    stamps = np.arange(0.0, still + settle + 1.0, 1.0 / RATE)
    rows = []
    for name, truth, k, sets in samples[:count]:
        oracle = scores(truth, every_pixel_fit(truth, synthetic_result(truth).depth[0]))
        for source, clean in sets.items():
            outliers, noise = (0.0, 0.0) if source.startswith("floor") else (0.3, 0.01)
            sequence = _Sequence(truth, k, clean, outliers, noise, settings)
            logs, abs_rels = [], []
            for stamp in stamps[stamps < still]:
                calibration = sequence.frame(stamp)
                logs.append(np.nan if calibration is None else np.log(calibration.scale))
                if stamp >= 1.0 and calibration is not None:
                    abs_rels.append(scores(truth, sequence.result.depth[0])["abs_rel"])
            before = np.exp(logs[-1])
            glass = sequence.frame(still, GLASS)
            moved = abs(glass.scale / before - 1) if glass is not None else np.nan
            settled = "not within 1 %"
            for stamp in stamps[stamps > still]:
                calibration = sequence.frame(stamp, STEP)
                if calibration is not None and abs(calibration.scale / (STEP * before) - 1) < 0.01:
                    settled = f"{stamp - still - 1.0 / RATE:.2f}"  # from the step's first frame
                    break
            rows.append(
                [
                    name,
                    source,
                    f"{outliers:.0%}",
                    f"{noise:.0%}",
                    f"{np.mean(sequence.fitted):.0%}",
                    f"{np.nanstd(logs[int(RATE) :]):.4f}",
                    f"{np.mean(abs_rels):.3f} / {oracle['abs_rel']:.3f}" if abs_rels else "-",
                    settled,
                    f"{moved:.2%}",
                ]
            )
    head = [
        "sample",
        "anchors",
        "outliers (every frame)",
        "noise",
        "frames fitted",
        f"std of log s, still ({still:g} s at {RATE:g} Hz, after the first second)",
        "AbsRel, still (mean) / every-pixel fit",
        f"scale step x{STEP:g} within 1 % after (s)",
        f"one glass frame (anchors x{GLASS:g}) moves the scale by",
    ]
    return head, rows


def before_after_picture(truth: np.ndarray, anchors: np.ndarray, k: np.ndarray) -> tuple:
    """(uint8 RGB picture, its scale in metres): the truth, the synthetic model output before
    and after metric_scale fits it to `anchors` (mode scale_shift), side by side in depth/colored's
    colour map from 0 to the truth's 99th percentile, the anchors drawn as white dots."""
    from depthclip_ros.messages.colormaps import colorize

    before = synthetic_result(truth)
    after = synthetic_result(truth)
    settings = OutputSettings(metric_scale="scale_shift", metric_scale_min_anchors=8)
    CameraScale().apply(after, 0, anchors, k, 0.0, settings)
    scale = float(np.percentile(truth[truth > 0], 99))
    u = np.rint(k[0, 0] * anchors[:, 0] / anchors[:, 2] + k[0, 2]).astype(int)
    v = np.rint(k[1, 1] * anchors[:, 1] / anchors[:, 2] + k[1, 2]).astype(int)
    panels = []
    for depth in (truth, before.depth[0], after.depth[0]):
        panel = colorize(np.where(depth > 0, depth, np.nan), 0.0, scale)
        for dv in (-1, 0, 1):
            for du in (-1, 0, 1):
                rows, cols = v + dv, u + du
                inside = (rows >= 0) & (rows < panel.shape[0]) & (cols >= 0)
                inside &= cols < panel.shape[1]
                panel[rows[inside], cols[inside]] = 255
        panels.append(panel)
    return np.concatenate(panels, axis=1), scale


def _lidar_cloud(rings: int, columns: int, point_step: int, ring_major: bool):
    """A 360-degree lidar's PointCloud2 in its own frame (x forward, z up): `rings` lasers over
    +-22.5 degrees, `columns` azimuths, walls 2 to 8 m away; x, y, z float32 first, the rest of
    each `point_step` bytes the driver's other fields. Ring-major: organized (height `rings`,
    an Ouster's); else one row, the lasers of each azimuth together (a Velodyne's)."""
    from sensor_msgs.msg import PointCloud2, PointField

    azimuth = np.linspace(-np.pi, np.pi, columns, endpoint=False)
    elevation = np.radians(np.linspace(-22.5, 22.5, rings))[:, None]
    ranges = 2.0 + 6.0 * np.random.default_rng(0).random((rings, columns))
    xyz = np.stack(
        [
            ranges * np.cos(elevation) * np.cos(azimuth),
            ranges * np.cos(elevation) * np.sin(azimuth),
            ranges * np.sin(elevation) * np.ones(columns),
        ],
        axis=-1,
    )
    if not ring_major:
        xyz = xyz.transpose(1, 0, 2)
    data = np.zeros(xyz.shape[:2] + (point_step,), np.uint8)
    data[..., :12] = xyz.astype(np.float32).view(np.uint8).reshape(xyz.shape[:2] + (12,))
    height, width = (rings, columns) if ring_major else (1, rings * columns)
    fields = [
        PointField(name=n, offset=4 * i, datatype=PointField.FLOAT32, count=1)
        for i, n in enumerate("xyz")
    ]
    return PointCloud2(
        height=height,
        width=width,
        fields=fields,
        point_step=point_step,
        row_step=point_step * width,
        data=data.tobytes(),
        is_dense=True,
    )


def bench_range_reading(repeats: int = 15) -> tuple:
    """(head, rows): what a frame's range data costs before the fit, per source as sensors
    send it, the medians of `repeats`: on arrival (RangeSources.add, the node's executor: a
    cloud is read there) and at the frame (RangeSources.anchors, the worker: the rest read,
    all moved into the camera's optical frame)."""
    import time

    from sensor_msgs.msg import CameraInfo, Image, LaserScan

    from depthclip_ros.metric_scale.range_sources import RangeSources
    from depthclip_ros.synthetic_scenes import CX, CY, FX, FY, render_scene

    truth = render_scene("room")[1]
    height, width = truth.shape
    info = CameraInfo(width=width, height=height, k=[FX, 0.0, CX, 0.0, FY, CY, 0.0, 0.0, 1.0])
    scan = LaserScan(
        angle_min=-2.356,
        angle_max=2.356,
        angle_increment=4.712 / 1080,
        range_min=0.05,
        range_max=30.0,
        ranges=(2.0 + np.random.default_rng(0).random(1081) * 6).astype(np.float32).tolist(),
    )
    millimetres = (truth * 1000).astype(np.uint16)
    depth = Image(
        height=height, width=width, encoding="16UC1", step=2 * width, data=millimetres.tobytes()
    )
    messages = [
        ("scan", "LaserScan, 1,081 rays (a 270-degree 2D lidar)", scan),
        (
            "points",
            "PointCloud2, 28,800 points, one row (a 16-laser lidar)",
            _lidar_cloud(16, 1800, 32, ring_major=False),
        ),
        (
            "points",
            "PointCloud2, 131,072 points, 128 x 1024 (a 128-laser lidar)",
            _lidar_cloud(128, 1024, 48, ring_major=True),
        ),
        ("depth", f"Image 16UC1, {width}x{height} (a depth camera, registered)", depth),
    ]
    k = np.array([[FX, 0.0, CX], [0.0, FY, CY], [0.0, 0.0, 1.0]])
    rows = []
    for source, words, msg in messages:
        msg.header.frame_id = "camera_optical_frame" if source == "depth" else "lidar"
        settings = OutputSettings(
            metric_scale="scale_shift",
            metric_scale_sources=(source,),
            static_transforms=(
                "0 0 0 -1.5707963267948966 0 -1.5707963267948966 lidar camera_optical_frame",
            ),
        )
        header = type(msg.header)(frame_id="camera_optical_frame")
        seconds = []  # (on arrival: the executor's, at the frame: the worker's)
        for _ in range(repeats):
            sources = RangeSources()
            started = time.perf_counter()
            sources.add(source, msg)
            arrived = time.perf_counter()
            sources.anchors(header, info, (height, width), settings)  # transforms parsed once
            taken = time.perf_counter()
            points, _, problems = sources.anchors(header, info, (height, width), settings)
            seconds.append((arrived - started, time.perf_counter() - taken))
        if problems:
            raise RuntimeError(f"{words}: {'; '.join(problems)}")
        count = len(msg.ranges) if source == "scan" else int(msg.width) * int(msg.height)
        # In front of the camera and in its image: the fit's own projection (before its gates)
        seen = project(points, k, (0, 0, height, width), np.ones(GRID), BINS).in_image
        rows.append(
            [
                words,
                f"{count:,}",
                f"{len(points):,}",
                f"{seen:,}",
                *(f"{ms:.2f}" for ms in np.median(seconds, axis=0) * 1e3),
            ]
        )
    head = [
        "message",
        "points in it",
        "read",
        "in the image",
        "on arrival (ms)",
        "at the frame (ms)",
    ]
    return head, rows


def still_view_clearing(truth: np.ndarray, seconds: float = 5.0, std: float = 0.005) -> dict:
    """A still view's fits of std `std` (log s; their shift's std that share of 3 m) at RATE Hz
    for `seconds`, each the every-pixel fit's scale (and its shift) off by that noise, through
    the tracker: the tracked std of log
    s at the end and 2 s later without fits; `points/clearing`'s median depth (clearing_quantile
    0.1, every 8th pixel) as a share of the every-pixel fit's exact calibration's; the pixels
    each clears more than 5 % beyond the truth."""
    from depthclip_ros.metric_scale import fit, tracking

    scale, shift = scored_fit(truth, synthetic_result(truth).depth[0])
    tracker, rng = tracking.ScaleTracker(), np.random.default_rng(0)
    stamps = np.arange(0.0, seconds, 1.0 / RATE)
    for stamp in stamps:
        noisy = fit.Fit(
            "scale_shift", scale * np.exp(rng.normal(0, std)), shift, std, std * 3.0,
            100, 100, 90, 85, std, model_span=(1.0, 3.0),
        )  # fmt: skip
        tracker.update(noisy, stamp, 2.0, 3.0)
    tracked = tracker.calibration(stamps[-1], 2.0)
    dark = tracker.calibration(stamps[-1] + 2.0, 2.0)
    exact = tracking.Calibration(scale, shift, 0.0, 0.0, 0.0)
    rows, cols = np.arange(0, truth.shape[0], 8), np.arange(0, truth.shape[1], 8)
    cleared = {}
    for name, calibration in (("tracked", tracked), ("exact", exact)):
        result = synthetic_result(truth)
        result.clearing_bins = calibration.lower_bins(result.bins)[None]
        calibration.apply(result, 0)
        depth = depth_quantile(result, 0, 0.1, rows, cols)
        cleared[name] = (float(np.nanmedian(depth)), wrongly_cleared(truth, result))
    return dict(
        std=tracked.log_scale_std,
        dark_std=dark.log_scale_std,
        share=cleared["tracked"][0] / cleared["exact"][0],
        beyond=(cleared["tracked"][1], cleared["exact"][1]),
    )


def bench_still_view_clearing(samples) -> tuple:
    """(head, rows): still_view_clearing of each sample."""
    rows = []
    for name, truth, _, _ in samples:
        got = still_view_clearing(truth)
        rows.append(
            [
                name,
                f"{got['std']:.4f}",
                f"{got['dark_std']:.4f}",
                f"{got['share']:.1%}",
                "{} / {}".format(*got["beyond"]),
            ]
        )
    head = [
        "sample",
        f"std of log s after 5 s of 0.5 % fits at {RATE:g} Hz",
        "2 s later without fits",
        "points/clearing's median depth, of the every-pixel fit's",
        "clearing beyond truth, tracked / every-pixel fit (px of 4800)",
    ]
    return head, rows
