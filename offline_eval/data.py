"""NYU Depth V2 test frames: the BTS `official_splits/test` layout, or the labeled .mat file."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
from PIL import Image

from depthclip_ros.errors import DepthClipError

# The extraction script blacks out the RGB border outside rows 7:474, columns 7:632.
RGB_VALID_ROWS = (7, 474)
RGB_VALID_COLS = (7, 632)


class DataError(DepthClipError, RuntimeError):
    """Test data missing or unreadable; the message gives the count and the first paths."""


@dataclasses.dataclass(frozen=True)
class Sample:
    name: str  # e.g. bathroom/rgb_00045.jpg: unique, used for --resume
    scene: str  # scene class (first path component), for per-scene means
    rgb_path: str | None = None
    depth_path: str | None = None
    mat_index: int | None = None  # 0-based index into the labeled .mat
    log_times: tuple | None = None  # a bag's (image, depth) messages: their log times (ns)


def _describe(paths, limit=5):
    shown = ", ".join(str(p) for p in paths[:limit])
    return f"{len(paths)} file(s) missing or unreadable, first: {shown}"


def test_root(data_root) -> Path:
    root = Path(data_root)
    return (
        root / "official_splits" / "test" if (root / "official_splits" / "test").is_dir() else root
    )


def bts_samples(data_root, split_file=None, skip_missing=False):
    """(samples, missing): rows `rgb depth [focal]` of the split file, or every rgb_* with its
    partner."""
    root = test_root(data_root)
    pairs = []
    if split_file:
        for line_no, line in enumerate(Path(split_file).read_text().splitlines(), 1):
            parts = line.split()
            if not parts:
                continue
            if len(parts) < 2:
                raise DataError(
                    f"{split_file}:{line_no}: expected 'rgb depth [focal]', got {line!r}"
                )
            pairs.append((parts[0], parts[1]))
    else:
        if not root.is_dir():
            raise DataError(
                f"no NYU test folder at {root} "
                "(expected <data-root>/official_splits/test/<scene>/)"
            )
        for rgb in sorted(p for p in root.glob("*/rgb_*") if p.suffix.lower() in (".jpg", ".png")):
            depth = rgb.with_name(rgb.name.replace("rgb_", "sync_depth_")).with_suffix(".png")
            if depth.is_file():
                pairs.append((str(rgb.relative_to(root)), str(depth.relative_to(root))))
    samples, missing = [], []
    for rgb, depth in pairs:
        rp, dp = root / rgb, root / depth
        absent = [str(p) for p in (rp, dp) if not p.is_file()]
        if absent:
            missing.extend(absent)
            continue
        samples.append(
            Sample(
                name=rgb,
                scene=Path(rgb).parts[0] if len(Path(rgb).parts) > 1 else "all",
                rgb_path=str(rp),
                depth_path=str(dp),
            )
        )
    if missing and not skip_missing:
        raise DataError(_describe(missing) + " (use --skip-missing to evaluate the rest)")
    if not samples:
        raise DataError(f"no test images found under {root}")
    return samples, missing


def load_bts(sample: Sample):
    """(rgb uint8 (480, 640, 3), depth uint16 millimetres (480, 640))."""
    try:
        with Image.open(sample.rgb_path) as im:
            rgb = np.array(im.convert("RGB"))
        with Image.open(sample.depth_path) as im:
            depth = np.array(im)
    except (OSError, SyntaxError, ValueError) as exc:
        raise DataError(f"cannot read {sample.name}: {exc}") from None
    return rgb, depth.astype(np.uint16)


# ------------------------------------------------------------------ labeled .mat


class MatSource:
    """`nyu_depth_v2_labeled.mat` (MATLAB v7.3 = HDF5) + `splits.mat` test indices.

    MATLAB stores column-major, so h5py sees every array with its axes reversed:
    images (N, 3, W, H), rawDepths (N, W, H).
    """

    def __init__(self, mat_path, splits_path):
        import h5py

        try:
            self.file = h5py.File(mat_path, "r")
        except OSError as exc:
            raise DataError(f"cannot open {mat_path} as MATLAB v7.3 / HDF5: {exc}") from None
        for key in ("images", "rawDepths"):
            if key not in self.file:
                raise DataError(
                    f"{mat_path} has no '{key}' dataset (not nyu_depth_v2_labeled.mat?)"
                )
        self.test_indices = read_test_indices(splits_path)
        self.scene_types = self._scene_types()

    def _scene_types(self):
        if "sceneTypes" not in self.file:
            return None
        refs = self.file["sceneTypes"][()].reshape(-1)
        return ["".join(chr(c) for c in np.asarray(self.file[r]).reshape(-1)) for r in refs]

    def samples(self):
        out = []
        for i in self.test_indices:
            scene = self.scene_types[i] if self.scene_types else "all"
            out.append(Sample(name=f"mat/{i + 1:04d}", scene=scene, mat_index=i))
        return out

    def load(self, sample: Sample):
        i = sample.mat_index
        rgb = np.asarray(self.file["images"][i]).transpose(2, 1, 0).astype(np.uint8)  # (H, W, 3)
        raw = np.asarray(self.file["rawDepths"][i]).T  # (H, W) metres
        blacked = np.zeros_like(rgb)
        r0, r1 = RGB_VALID_ROWS
        c0, c1 = RGB_VALID_COLS
        blacked[r0:r1, c0:c1] = rgb[r0:r1, c0:c1]
        depth_mm = (raw * 1000).astype(np.uint16)  # as the extraction script saves sync_depth PNGs
        return blacked, depth_mm


def read_test_indices(splits_path) -> list:
    """0-based test indices from splits.mat (MATLAB v5 via scipy, or v7.3 via h5py)."""
    try:
        from scipy.io import loadmat

        ndx = np.asarray(loadmat(splits_path)["testNdxs"]).reshape(-1)
    except NotImplementedError:  # v7.3
        import h5py

        with h5py.File(splits_path, "r") as f:
            ndx = np.asarray(f["testNdxs"]).reshape(-1)
    except (OSError, KeyError, ValueError) as exc:
        raise DataError(f"cannot read testNdxs from {splits_path}: {exc}") from None
    return [int(i) - 1 for i in ndx]  # MATLAB is 1-based


@dataclasses.dataclass(frozen=True)
class Dataset:
    samples: list  # Sample, in evaluation order
    load: object  # Sample -> (rgb uint8 (480, 640, 3), depth uint16 millimetres)
    missing: list  # files skipped by skip_missing
    label: str  # where the data came from, recorded in results
    crop: bool = True  # NYU's eval crop; a camera's own frames (a bag) are scored whole
    k: object = None  # the camera's intrinsics (3x3) for --align's sensors; None: NYU's


def open_dataset(
    data_root=None, split_file=None, skip_missing=False, mat=None, splits=None
) -> Dataset:
    """The NYU test set of the BTS layout (`data_root`) or of the labeled .mat (`mat` with
    `splits`); DataError when it is missing or incomplete."""
    if mat:
        if not splits:
            raise DataError("--mat needs --splits (splits.mat with testNdxs)")
        source = MatSource(mat, splits)
        return Dataset(source.samples(), source.load, [], f"mat:{mat}")
    if not data_root:
        raise DataError("give --data-root (BTS layout) or --mat/--splits")
    samples, missing = bts_samples(data_root, split_file, skip_missing)
    label = f"bts:{data_root}" + (f" split:{split_file}" if split_file else "")
    return Dataset(samples, load_bts, missing, label)
