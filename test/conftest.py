"""Shared fixtures: a tiny random CLIP saved to disk and loaded the way users load models."""

import os
import time
import warnings

# Every node the tests start talks over loopback only, on a DDS domain of this run's own.
# Set before anything imports rclpy (the rmw reads them at init).
os.environ["ROS_AUTOMATIC_DISCOVERY_RANGE"] = "LOCALHOST"
os.environ["ROS_DOMAIN_ID"] = str(1 + os.getpid() % 100)
# Nothing else: the middleware runs with its defaults, as on a robot (no DDS XML profile).
for _tuning in (
    "FASTDDS_DEFAULT_PROFILES_FILE",
    "FASTRTPS_DEFAULT_PROFILES_FILE",
    "RMW_FASTRTPS_USE_QOS_FROM_XML",
):
    os.environ.pop(_tuning, None)

import numpy as np  # noqa: E402 (after the environment the rmw reads)
import pytest  # noqa: E402

from depthclip_ros.random_clip import save_random_checkpoint  # noqa: E402

warnings.filterwarnings("ignore", category=FutureWarning, module="torch")

SHARED_NYU = os.path.join(os.path.dirname(__file__), "..", "..", "shared", "data", "nyu_samples")


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory):
    """A random tiny CLIP ResNet saved as a plain state_dict."""
    return save_random_checkpoint(tmp_path_factory.mktemp("ckpt") / "tiny_clip.pt", "tiny", seed=0)


@pytest.fixture
def make_config(tiny_checkpoint, tmp_path):
    """Config factory on the tiny model. Temperature 1.0: a tiny random CLIP saturates
    the softmax at the paper's 0.1, which would hide errors in the bin weighting."""
    from depthclip_ros.config import DepthClipConfig

    def make(**changes):
        base = dict(
            model=tiny_checkpoint, device="cpu", cache_dir=str(tmp_path / "cache"), temperature=1.0
        )
        base.update(changes)
        return DepthClipConfig(**base)

    return make


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
