"""What a prediction is, whichever backend computes it: the image region the network sees
(the reference's NYU crop, or the whole image), and the DepthResult every tool reads. numpy only.
"""

from __future__ import annotations

import dataclasses
import threading

import numpy as np

from ..errors import ImageSizeError

# The reference's NYU crop: 640x480 -> 544x416 box (left 60, top 56, right 604, bottom 472).
CROP_IMAGE_SIZE = (480, 640)  # (height, width)
CROP_BOX = (56, 60, 416, 544)  # (top, left, height, width)


def input_region(height: int, width: int, cfg) -> tuple:
    """(top, left, height, width) of the image area the network sees and the depth covers."""
    if cfg.preprocessing == "crop":
        if (height, width) != CROP_IMAGE_SIZE:
            raise ImageSizeError(
                f"preprocessing 'crop' is the reference's NYU crop and needs a 640x480 "
                f"image, got {width}x{height}; use preprocessing 'resize' for this camera"
            )
        return CROP_BOX
    return (0, 0, height, width)


class Started:
    """A forward begun (begin_predict): done() says whether it has ended, when_done(callback)
    has the callback called once it has (from any thread; at once where it has, or where the
    runtime cannot tell: `done` None); calling it waits for the end and gives its result."""

    def __init__(self, finish, done=None, when_done=None):
        self._finish, self._done, self._when_done = finish, done, when_done

    def done(self) -> bool:
        return self._done is None or bool(self._done())

    def when_done(self, callback) -> None:
        if self._when_done is None:
            callback()
        else:
            self._when_done(callback)

    def __call__(self):
        return self._finish()


class ForwardEnd:
    """A forward's end, set from the runtime's thread (OpenVINO's callback): the callbacks of
    who waits for it are called then."""

    def __init__(self):
        self._lock = threading.Lock()
        self._set = False
        self._callbacks = []

    def set(self, *_) -> None:
        with self._lock:
            self._set = True
            callbacks, self._callbacks = self._callbacks, []
        for callback in callbacks:
            callback()

    def is_set(self) -> bool:
        return self._set

    def when_set(self, callback) -> None:
        with self._lock:
            if not self._set:
                self._callbacks.append(callback)
                return
        callback()


def all_started(starts: list, finish) -> Started:
    """One Started over `starts` (none: done at once): done when all are, its callbacks called
    as each ends; `finish` gives its result."""

    def when_done(callback) -> None:
        for started in starts:
            started.when_done(callback)
        if not starts:
            callback()

    return Started(finish, lambda: all(started.done() for started in starts), when_done)


FEATURE_STRIDE = 32  # CLIP ResNet layer4's stride: one feature cell per 32x32 network pixels


def feature_grid(height: int, width: int, cfg) -> tuple:
    """(h, w) cells of the feature grid for an input region of `height` x `width` pixels: the
    network input's (resize) or the region's own (crop) size over FEATURE_STRIDE."""
    if cfg.preprocessing == "resize":
        height, width = cfg.input_height, cfg.input_width
    return (height // FEATURE_STRIDE, width // FEATURE_STRIDE)


def network_image_size(cfg) -> tuple:
    """(height, width) of the camera image a config expects when it cannot take any size:
    the crop's 640x480, else the network input (a resize from it is then a no-op)."""
    if cfg.preprocessing == "crop":
        return CROP_IMAGE_SIZE
    return (cfg.input_height, cfg.input_width)


def as_image_batch(images) -> np.ndarray:
    """uint8 (H, W, 3) or (B, H, W, 3) -> contiguous, writable uint8 (B, H, W, 3)."""
    arr = np.asarray(images)
    if arr.ndim == 3:
        arr = arr[None]
    if arr.ndim != 4 or arr.shape[-1] != 3 or arr.dtype != np.uint8:
        raise ImageSizeError(
            f"expected uint8 RGB images (B, H, W, 3), got {arr.dtype} {arr.shape}"
        )
    arr = np.ascontiguousarray(arr)
    if not arr.flags.writeable:  # e.g. a view of a message's bytes; torch wants to own it
        arr = arr.copy()
    return arr


# The arrays a prediction computes, in the order the core's depth step returns them (and the
# names of the exported graph's outputs).
OUTPUT_FIELDS = ("depth", "depth_std", "coarse_depth", "coarse_std", "bin_probs")


def fetched_fields(arrays=None) -> tuple:
    """The OUTPUT_FIELDS a predict brings to the host for `arrays` (None: all): those asked
    for, in OUTPUT_FIELDS order (temporal_filter makes the fine depth from the grid's)."""
    if arrays is None:
        return OUTPUT_FIELDS
    unknown = sorted(set(arrays) - set(OUTPUT_FIELDS))
    if unknown:
        raise ValueError(f"no such arrays {unknown}; a prediction has {', '.join(OUTPUT_FIELDS)}")
    return tuple(f for f in OUTPUT_FIELDS if f in arrays)


@dataclasses.dataclass
class DepthResult:
    """One prediction. Arrays a caller did not ask predict for (`arrays`) are None: on a GPU
    they never cross to the host."""

    depth: np.ndarray | None  # (B, H, W) float32 metres, input resolution; NaN outside `region`
    depth_std: np.ndarray | None  # (B, H, W) float32 metres: std of depth under its bins
    coarse_depth: np.ndarray | None  # (B, h, w) float32 metres on the feature grid
    coarse_std: np.ndarray | None  # (B, h, w) float32 metres: its std
    bin_probs: np.ndarray | None  # (B, K, h, w) float32 per-bin responses (the paper's Fig. 4)
    bins: np.ndarray  # (K,) metres of the config
    region: tuple  # (top, left, height, width) of the image the depth covers
    scenes: list | None = None  # scene_bins auto: the scene whose bins each image used
    scene_scores: np.ndarray | None = None  # (B, S) CLIP's scene probabilities (config.scenes)
    image_bins: np.ndarray | None = None  # (B, K) metres each image used, with scenes
    # One per image: the identity of the head that made it (estimator.head.head_key), read
    # from the head the forward ran, not from the config in use when the result is read.
    head_keys: tuple | None = None
    # metric_scale: (B, K) the bins under the scale's lower bound, points/clearing's (a scale
    # error never clears a real obstacle); None: the bins themselves.
    clearing_bins: np.ndarray | None = None

    @classmethod
    def from_outputs(cls, outputs, bins, region, fields=OUTPUT_FIELDS, **extra) -> "DepthResult":
        """From the depth step's arrays `fields` (in OUTPUT_FIELDS order); the others None."""
        arrays = dict.fromkeys(OUTPUT_FIELDS)
        arrays.update(zip(fields, outputs))
        return cls(**arrays, bins=bins, region=region, **extra)

    def fetched(self, arrays) -> "DepthResult":
        """This result as predict(arrays=`arrays`) gives it: its own copies of those arrays,
        the others None (a replay that predicts once for several settings)."""
        fields = fetched_fields(arrays)
        return dataclasses.replace(
            self, **{f: getattr(self, f).copy() if f in fields else None for f in OUTPUT_FIELDS}
        )

    def writable(self, names=OUTPUT_FIELDS) -> None:
        """Each of the arrays `names` writable: a read-only one (Ray hands arrays back from
        another process read-only) replaced by its copy. For the rules that write a result in
        place (temporal_filter, metric_scale)."""
        for name in names:
            array = getattr(self, name)
            if array is not None and not array.flags.writeable:
                setattr(self, name, array.copy())

    def bins_of(self, index: int) -> np.ndarray:
        return self.bins if self.image_bins is None else self.image_bins[index]

    def clearing_bins_of(self, index: int) -> np.ndarray:
        return self.bins_of(index) if self.clearing_bins is None else self.clearing_bins[index]

    def coarse_pixel_coords(self) -> tuple:
        """Pixel coordinates (u, v), each (h, w), of the coarse grid cells in the input image.

        With align_corners=True upsampling, cell (i, j) is exactly the upsampled
        pixel at row i*(height-1)/(h-1), column j*(width-1)/(w-1) of `region`.
        """
        top, left, height, width = self.region
        h, w = self.coarse_depth.shape[-2:]
        v = top + np.arange(h, dtype=np.float64) * ((height - 1) / max(h - 1, 1))
        u = left + np.arange(w, dtype=np.float64) * ((width - 1) / max(w - 1, 1))
        uu, vv = np.meshgrid(u, v)
        return uu.astype(np.float32), vv.astype(np.float32)
