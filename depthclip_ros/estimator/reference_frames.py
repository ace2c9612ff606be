"""The depth figure measured where the model runs. depthclip-export stores a few frames beside
the graph (FILE_reference.npz: held out of an int8 calibration, else the demo scenes), with the
text features, bins and temperature it ran them with and their float32 depth from the fp32
graph on ONNX Runtime's CPU provider. At warm-up every ONNX backend runs them on its own
runtime, device and CPU and reports how far its depth lies from that float32 depth: an int8
graph on a CPU other than the export's, bf16, OpenVINO, a GPU provider each carry their own
figure. No torch.
"""

from __future__ import annotations

import dataclasses
import logging
import zipfile
from pathlib import Path

import numpy as np

from ..files import atomic_write
from ..metrics import depth_agreement

log = logging.getLogger("depthclip_ros")

REFERENCE_FRAMES = 4  # frames stored at most: warm-up runs each once
FIELDS = ("frames", "depth", "text_features", "bins", "temperature", "measured_with")


def reference_path(onnx_path: Path) -> Path:
    """The file beside an exported graph that holds its reference frames."""
    onnx_path = Path(onnx_path)
    return onnx_path.with_name(onnx_path.stem + "_reference.npz")


@dataclasses.dataclass(frozen=True)
class Reference:
    """Frames (N, H, W, 3) uint8 and their float32 depth (N, H, W), with the graph inputs they
    ran with, and where that depth was computed (runtime, CPU)."""

    frames: np.ndarray
    depth: np.ndarray
    text_features: np.ndarray
    bins: np.ndarray
    temperature: float
    measured_with: str

    def feeds(self, index: int) -> dict:
        return {
            "images": self.frames[index : index + 1],
            "text_features": self.text_features,
            "bins": self.bins,
            "temperature": np.asarray(self.temperature, np.float32),
        }


def write_reference(onnx_path: Path, reference: Reference) -> Path:
    path = reference_path(onnx_path)
    arrays = {name: np.asarray(getattr(reference, name)) for name in FIELDS}
    atomic_write(path, lambda f: np.savez_compressed(f, **arrays))
    return path


def load_reference(onnx_path: Path):
    """The Reference stored beside `onnx_path`, None where there is none (a graph exported
    before this existed, or copied without it); one warning and None where it is damaged."""
    path = reference_path(onnx_path)
    if not path.is_file():
        return None
    try:
        with np.load(path, allow_pickle=False) as data:
            arrays = {name: data[name] for name in FIELDS}
    except (OSError, KeyError, ValueError, zipfile.BadZipFile) as exc:
        log.warning("reference frames %s cannot be read (%s): no depth figure here", path, exc)
        return None
    return Reference(
        frames=arrays["frames"].astype(np.uint8),
        depth=arrays["depth"].astype(np.float32),
        text_features=arrays["text_features"].astype(np.float32),
        bins=arrays["bins"].astype(np.float32),
        temperature=float(arrays["temperature"]),
        measured_with=str(arrays["measured_with"]),
    )


@dataclasses.dataclass(frozen=True)
class DepthFigure:
    """How far a runtime's depth lies from the float32 reference: |difference| median, p99 and
    max in metres, the share of pixels within delta < 1.25, on `frames` frames, measured
    `where` (runtime, device, CPU)."""

    median: float
    p99: float
    max: float
    agreement: float
    frames: int
    where: str

    @property
    def words(self) -> str:
        return (
            f"|depth - fp32| median {self.median * 1e3:.2f} mm, p99 {self.p99 * 1e3:.2f} mm, "
            f"max {self.max * 1e3:.2f} mm, {self.agreement * 100:.2f} % within delta < 1.25, "
            f"on {self.frames} reference frames, measured on {self.where}"
        )


def depth_figure(reference_depth: np.ndarray, depth: np.ndarray, where: str) -> DepthFigure:
    """The DepthFigure of `depth` against `reference_depth` (both (N, H, W))."""
    agreement = depth_agreement(reference_depth.ravel(), depth.ravel())
    return DepthFigure(
        median=agreement["median"],
        p99=agreement["p99"],
        max=float(np.abs(reference_depth - depth).max()),
        agreement=agreement["delta"],
        frames=len(reference_depth),
        where=where,
    )
