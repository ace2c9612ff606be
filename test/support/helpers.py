"""Helpers of the tests: known images, sensor_msgs inputs of every encoding, waits on conditions.

No node here (ros_harness runs the node); bag_factory writes bags from these messages.
"""

import contextlib
import io
import os
import resource
import shutil
import struct
import subprocess
import time
from pathlib import Path

import numpy as np
from PIL import Image as PILImage
from sensor_msgs.msg import CameraInfo, Image

# Four real NYU pairs beside the repository (never copied into it); tests skip, visibly, without.
SHARED_NYU = os.path.join(
    os.path.dirname(__file__), "..", "..", "..", "shared", "data", "nyu_samples"
)


def structured_image(height=480, width=640, seed=0):
    """Gradients, a checkerboard and a block: spatial structure so the depth varies."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:height, 0:width]
    img = np.zeros((height, width, 3), np.uint8)
    img[..., 0] = xx * 255 // width
    img[..., 1] = yy * 255 // height
    img[..., 2] = ((xx // 40 + yy // 40) % 2) * 200
    h0, w0 = height // 5, width // 3
    img[h0 : 2 * h0, w0 : 2 * w0] = rng.integers(0, 256, 3)
    return img


def wait_until(condition, timeout=10.0, interval=0.02):
    """Poll `condition` until it holds; fail the test after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(interval)


@contextlib.contextmanager
def rclpy_context(args=None):
    """rclpy initialised for the block (Jazzy's `rclpy.init()` is no context manager)."""
    import rclpy

    rclpy.init(args=args)
    try:
        yield
    finally:
        rclpy.shutdown()


def stamp(msg, sec, nanosec=0, frame="camera_optical_frame"):
    msg.header.stamp.sec, msg.header.stamp.nanosec = sec, nanosec
    msg.header.frame_id = frame
    return msg


def camera_info(width=640, height=480, fx=500.0, fy=480.0, cx=320.0, cy=240.0):
    return stamp(
        CameraInfo(
            width=width,
            height=height,
            k=[fx, 0, cx, 0, fy, cy, 0, 0, 1],
            p=[fx, 0, cx, 0, 0, fy, cy, 0, 0, 0, 1, 0],
        ),
        0,
    )


# ------------------------------------------------------------------ images of every encoding
def encode(rgb: np.ndarray, encoding: str, padding: int = 0, bigendian: bool = False) -> Image:
    """The image `rgb` as `encoding`, each row followed by `padding` junk bytes."""
    h, w, _ = rgb.shape
    if encoding in ("rgb8", "bgr8", "rgba8", "bgra8"):
        px = rgb if encoding.startswith("rgb") else rgb[..., ::-1]
        if encoding.endswith("a8"):
            px = np.concatenate([px, np.full((h, w, 1), 77, np.uint8)], axis=2)
        rows = px.reshape(h, -1)
    elif encoding == "mono8":
        rows = rgb[..., 0]
    elif encoding in ("mono16", "rgb16", "bgr16"):
        px = (
            rgb[..., :1]
            if encoding == "mono16"
            else (rgb if encoding == "rgb16" else rgb[..., ::-1])
        )
        wide = px.astype(np.uint16) * 257
        rows = wide.astype(">u2" if bigendian else "<u2").view(np.uint8).reshape(h, -1)
    elif encoding.startswith("bayer_"):
        rows = bayer_mosaic(rgb, encoding[6:10])
    elif encoding in ("yuv422", "yuv422_yuy2"):
        rows = rgb_to_yuv422(rgb, "uyvy" if encoding == "yuv422" else "yuyv")
    else:
        raise ValueError(encoding)
    rows = np.ascontiguousarray(rows, np.uint8)
    if padding:
        rows = np.concatenate([rows, np.full((h, padding), 0xAB, np.uint8)], axis=1)
    return Image(
        height=h,
        width=w,
        encoding=encoding,
        is_bigendian=int(bigendian),
        step=rows.shape[1],
        data=rows.tobytes(),
    )


ALL_ENCODINGS = [
    "rgb8",
    "bgr8",
    "rgba8",
    "bgra8",
    "mono8",
    "mono16",
    "rgb16",
    "bgr16",
    "bayer_rggb8",
    "bayer_bggr8",
    "bayer_gbrg8",
    "bayer_grbg8",
    "yuv422",
    "yuv422_yuy2",
]


def rgb_to_yuv422(rgb: np.ndarray, layout: str = "uyvy") -> np.ndarray:
    """RGB (H, W, 3) -> packed 4:2:2 bytes (H, W*2): the inverse of messages.decoding.yuv_to_rgb,
    chroma averaged."""
    f = rgb.astype(np.float32)
    y = 0.299 * f[..., 0] + 0.587 * f[..., 1] + 0.114 * f[..., 2]
    u = (f[..., 2] - y) / 1.772 + 128.0
    v = (f[..., 0] - y) / 1.402 + 128.0
    u = 0.5 * (u[:, 0::2] + u[:, 1::2])
    v = 0.5 * (v[:, 0::2] + v[:, 1::2])
    y, u, v = (np.clip(np.rint(a), 0, 255).astype(np.uint8) for a in (y, u, v))
    out = np.empty((rgb.shape[0], rgb.shape[1] // 2, 4), np.uint8)
    order = (u, y[:, 0::2], v, y[:, 1::2]) if layout == "uyvy" else (y[:, 0::2], u, y[:, 1::2], v)
    for i, plane in enumerate(order):
        out[..., i] = plane
    return out.reshape(rgb.shape[0], -1)


def bayer_mosaic(rgb: np.ndarray, pattern: str) -> np.ndarray:
    """RGB -> single-channel Bayer mosaic with the 2x2 `pattern` (e.g. 'rggb')."""
    out = np.empty(rgb.shape[:2], rgb.dtype)
    channel = {"r": 0, "g": 1, "b": 2}
    for k, c in enumerate(pattern):
        dy, dx = divmod(k, 2)
        out[dy::2, dx::2] = rgb[dy::2, dx::2, channel[c]]
    return out


def run_on_a_full_disk(argv, file_bytes: int, timeout=120, **kwargs):
    """Run `argv` as its own process with files limited to `file_bytes`: writes beyond fail
    (EFBIG, "File too large") as they do on a full disk; Python ignores the SIGXFSZ."""

    def limit_file_size():
        resource.setrlimit(resource.RLIMIT_FSIZE, (file_bytes, file_bytes))

    return subprocess.run(
        argv, capture_output=True, text=True, timeout=timeout, preexec_fn=limit_file_size, **kwargs
    )


def decode_like_the_plugin(fmt: str, data: bytes) -> tuple:
    """compressedDepth decoded as compressed_depth_image_transport's codec.cpp does, written
    from it (Pillow reads the PNG): (depth (H, W) float32, depthQuantA, depthQuantB, the
    header's format)."""
    encoding, _, rest = fmt.partition(";")
    assert encoding == "32FC1" and rest.strip() == "compressedDepth png"
    header_format, quant_a, quant_b = struct.unpack("<iff", data[:12])
    codes = np.array(PILImage.open(io.BytesIO(data[12:])))
    assert codes.dtype == np.uint16  # Pillow reads a 16-bit grayscale PNG as I;16
    with np.errstate(divide="ignore"):
        depth = np.float32(quant_a) / (codes.astype(np.float32) - np.float32(quant_b))
    depth[codes == 0] = np.nan
    return depth, quant_a, quant_b, header_format


def exported_before_the_parts(path, out):
    """A copy of the exported graph `path` at `out` without its `graph_parts` metadata key, as
    depthclip-export wrote graphs before its parts were named, its text features beside it as
    the export left them; `out`."""
    import onnx

    from depthclip_ros.estimator.text_cache import exported_text_dir
    from depthclip_ros.graph_runtimes.exported_graph import PARTS_KEY

    text = exported_text_dir(Path(path))
    if text.is_dir():
        shutil.copytree(text, exported_text_dir(Path(out)))
    model = onnx.load(str(path))
    kept = [p for p in model.metadata_props if p.key != PARTS_KEY]
    del model.metadata_props[:]
    model.metadata_props.extend(kept)
    onnx.save(model, str(out))
    return out


# conftest's unbiased_checkpoint puts most of each pixel's weight on the fifth bin and the rest
# below it: with these bins its depth spans 18 % over ramp_image (the shipped bins: 7 %), enough
# for metric_scale to tell a scale from a shift and to fit each bin.
VARYING_BINS = (0.5, 1.0, 1.5, 2.0, 5.0, 6.0, 7.0)


def ramp_image(height=480, width=640):
    """A grey ramp from black on the left to white on the right."""
    ramp = np.arange(width) * 255 // max(width - 1, 1)
    return np.broadcast_to(ramp[None, :, None], (height, width, 3)).astype(np.uint8)


def model_config(checkpoint, cache_dir, **changes):
    """The config the tests run `checkpoint` with (conftest's make_config), scene presets read
    as load_config reads them. Temperature 1.0: a tiny random CLIP saturates the softmax at the
    paper's 0.1, which would hide errors in the bin weighting."""
    from depthclip_ros.config.parameters import DepthClipConfig
    from depthclip_ros.config.params_files import resolve_scene_presets

    base = dict(model=checkpoint, device="cpu", cache_dir=str(cache_dir), temperature=1.0)
    return resolve_scene_presets(DepthClipConfig(**{**base, **changes}))


def copy_of_export(graph, out):
    """A copy at `out` of an exported graph with what depthclip-export writes beside it (its
    text features, its reference frames); returns `out`."""

    from depthclip_ros.estimator.reference_frames import reference_path
    from depthclip_ros.estimator.text_cache import exported_text_dir

    graph, out = Path(graph), Path(out)
    shutil.copyfile(graph, out)
    shutil.copytree(exported_text_dir(graph), exported_text_dir(out))
    if reference_path(graph).exists():
        shutil.copyfile(reference_path(graph), reference_path(out))
    return out


def built_once(tmp_path_factory, name: str, build) -> Path:
    """The folder `name` filled by `build(folder)` once for the whole test run: the pytest-xdist
    workers share it (the first to need it builds it under a lock, the others wait and reuse
    it). For what every worker would otherwise build alike: an export, a quantization."""
    from filelock import FileLock

    base = tmp_path_factory.getbasetemp()
    root = base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base  # the run's folder
    folder, done = root / f"shared-{name}", root / f"shared-{name}.done"
    with FileLock(str(root / f"shared-{name}.lock")):
        if not done.exists():
            shutil.rmtree(folder, ignore_errors=True)  # a build that failed half-way
            folder.mkdir()
            build(folder)
            done.touch()
    return folder
