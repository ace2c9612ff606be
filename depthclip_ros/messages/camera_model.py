"""The pinhole camera of a sensor_msgs/CameraInfo, as image_geometry's PinholeCameraModel reads it.

A CameraInfo describes the full-resolution calibration; binning and ROI say which part of it
the published image is. `PinholeCamera.from_camera_info` applies them once, so the model
describes the image as received, and the camera_info it writes (binning 0, empty ROI) is
read back unchanged by image_geometry. NumPy only; messages are read by duck typing.
"""

from __future__ import annotations

import dataclasses

import numpy as np

EMPTY_ROI = {"x_offset": 0, "y_offset": 0, "height": 0, "width": 0, "do_rectify": False}


@dataclasses.dataclass(frozen=True)
class PinholeCamera:
    width: int
    height: int
    k: np.ndarray  # (3, 3) intrinsics of the raw (distorted) image
    p: np.ndarray  # (3, 4) projection of the rectified image
    d: np.ndarray  # distortion coefficients
    r: np.ndarray  # (3, 3) rectification rotation
    distortion_model: str

    @classmethod
    def from_camera_info(cls, info) -> "PinholeCamera":
        """The model of the image the camera publishes: ROI offset, then binning
        (image_geometry)."""
        bin_x, bin_y = max(1, int(info.binning_x)), max(1, int(info.binning_y))
        roi = info.roi
        x0, y0, roi_w, roi_h = (
            int(roi.x_offset),
            int(roi.y_offset),
            int(roi.width),
            int(roi.height),
        )
        if (x0, y0, roi_w, roi_h) == (0, 0, 0, 0):  # an empty ROI is the full image
            roi_w, roi_h = int(info.width), int(info.height)
        k = np.asarray(info.k, dtype=np.float64).reshape(3, 3).copy()
        p = np.asarray(info.p, dtype=np.float64).reshape(3, 4).copy()
        for m in (k, p):  # u' = (u - x0) / bin_x, v' = (v - y0) / bin_y applied to the projection
            m[0] = (m[0] - x0 * m[2]) / bin_x
            m[1] = (m[1] - y0 * m[2]) / bin_y
        return cls(
            roi_w // bin_x,
            roi_h // bin_y,
            k,
            p,
            np.asarray(info.d, dtype=np.float64),
            np.asarray(info.r, dtype=np.float64).reshape(3, 3),
            str(info.distortion_model),
        )

    def scaled_to(self, width: int, height: int) -> "PinholeCamera":
        """The same camera for an image resized to width x height (a resize scales K and P)."""
        if (width, height) == (self.width, self.height) or self.width <= 0 or self.height <= 0:
            return dataclasses.replace(self, width=width, height=height)
        scale = np.diag([width / self.width, height / self.height, 1.0])
        return dataclasses.replace(
            self, width=width, height=height, k=scale @ self.k, p=scale @ self.p
        )

    @property
    def is_distorted(self) -> bool:
        return bool(np.any(self.d != 0))

    def intrinsics(self) -> tuple:
        """(fx, fy, cx, cy) of the rectified image, from P as image_geometry takes them (K when
        P is unset); ValueError when the camera is uncalibrated."""
        m = self.p if self.p[0, 0] > 0 and self.p[1, 1] > 0 else self.k
        fx, fy, cx, cy = m[0, 0], m[1, 1], m[0, 2], m[1, 2]
        if not (fx > 0 and fy > 0):
            raise ValueError(f"camera_info has non-positive focal length (fx={fx}, fy={fy})")
        return float(fx), float(fy), float(cx), float(cy)

    def camera_info_fields(self) -> dict:
        """Header-less sensor_msgs/CameraInfo fields of this model; binning and ROI already
        applied.

        `roi` is a field dict: the caller builds its RegionOfInterest type from it.
        """
        return dict(
            height=self.height,
            width=self.width,
            distortion_model=self.distortion_model,
            d=self.d.copy(),
            k=self.k.reshape(9).copy(),
            r=self.r.reshape(9).copy(),
            p=self.p.reshape(12).copy(),
            binning_x=0,
            binning_y=0,
            roi=dict(EMPTY_ROI),
        )
