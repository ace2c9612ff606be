"""Built-in synthetic scenes with known depth: textured boxes ray-cast around a pinhole camera.

The demo, the benchmark and the tests feed them to the node; their true depth is exact, so the
demo can score its prediction with the eval's metrics. NumPy only.
"""

from __future__ import annotations

import numpy as np

FX = FY = 525.0
CX, CY = 319.5, 239.5
WIDTH, HEIGHT = 640, 480

# name -> (half width, floor below camera, ceiling above camera, far wall) in metres
SCENES = {
    "corridor": (1.2, 1.3, 1.3, 9.0),
    "room": (2.5, 1.2, 1.6, 4.5),
    "near_wall": (1.6, 0.9, 1.4, 2.2),
}


def render_scene(name: str):
    """Ray-cast a textured box around the camera: (rgb uint8 (H, W, 3), true depth (H, W)
    metres)."""
    half_w, floor, ceil, far = SCENES[name]
    v, u = np.mgrid[0:HEIGHT, 0:WIDTH].astype(np.float64)
    dx, dy = (u - CX) / FX, (v - CY) / FY  # ray (dx, dy, 1): t along it is the z depth
    with np.errstate(divide="ignore"):
        candidates = {
            "floor": np.where(dy > 0, floor / dy, np.inf),
            "ceiling": np.where(dy < 0, -ceil / dy, np.inf),
            "right": np.where(dx > 0, half_w / dx, np.inf),
            "left": np.where(dx < 0, -half_w / dx, np.inf),
            "far": np.full(dx.shape, far),
        }
    names = list(candidates)
    stack = np.stack([candidates[n] for n in names])
    surface = stack.argmin(axis=0)
    z = stack.min(axis=0)
    x, y = dx * z, dy * z
    base = np.array(
        [[150, 110, 80], [230, 230, 220], [200, 170, 140], [140, 170, 200], [120, 160, 110]], float
    )
    # Checker texture in surface coordinates (0.5 m squares): texture gradient is a depth cue.
    coords = {0: (x, z), 1: (x, z), 2: (y, z), 3: (y, z), 4: (x, y)}
    checker = np.zeros_like(z)
    for s, (a, b) in coords.items():
        m = surface == s
        checker[m] = (np.floor(a[m] / 0.5) + np.floor(b[m] / 0.5)) % 2
    shade = np.clip(1.6 / (0.6 + 0.25 * z), 0.35, 1.2)  # darker with distance
    rgb = base[surface] * (0.75 + 0.25 * checker)[..., None] * shade[..., None]
    return np.clip(rgb, 0, 255).astype(np.uint8), z.astype(np.float32)


def scene_camera_info_fields() -> dict:
    """Fields of the sensor_msgs/CameraInfo of the camera the scenes are rendered with."""
    return dict(
        width=WIDTH,
        height=HEIGHT,
        distortion_model="plumb_bob",
        d=[0.0] * 5,
        k=[FX, 0.0, CX, 0.0, FY, CY, 0.0, 0.0, 1.0],
        r=[1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0],
        p=[FX, 0.0, CX, 0.0, 0.0, FY, CY, 0.0, 0.0, 0.0, 1.0, 0.0],
    )
