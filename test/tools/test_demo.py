"""The README's main job, run as a user runs it (random weights: the real ones are not downloadable
here)."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from depthclip_ros import metrics
from depthclip_ros.config.params_files import load_config
from depthclip_ros.config.settings import OutputSettings
from depthclip_ros.estimator.core import DepthClip
from depthclip_ros.metric_scale.camera_scale import CameraScale
from depthclip_ros.synthetic_scenes import CX, CY, FX, FY, SCENES, render_scene
from depthclip_ros.tools import demo


def test_rendered_scene_depth_is_the_ray_cast_geometry():
    rgb, z = render_scene("corridor")
    assert rgb.shape == (480, 640, 3) and z.shape == (480, 640)
    half_w, floor, ceil, far = SCENES["corridor"]
    assert np.isclose(z[240, 320], far)  # centre ray hits the far wall
    v = 479
    assert np.isclose(z[v, 320], floor / ((v - CY) / FY))  # bottom centre: the floor
    assert np.isclose(z[240, 0], min(half_w / ((CX - 0) / FX), far))  # left edge: the wall


def demo_env() -> dict:
    """The environment for a demo the tests start: its node and client on this pytest-xdist
    worker's own DDS domain (the demo's own choice, a random domain, may be another worker's,
    whose nodes would then answer the demo's stamps)."""
    return {**os.environ, "DEPTHCLIP_DEMO_DOMAIN_ID": os.environ["ROS_DOMAIN_ID"]}


@pytest.mark.slow
@pytest.mark.ros
def test_demo_runs_the_whole_ros_pipeline(tmp_path):
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "depthclip_ros.tools.demo",
            "--out",
            str(tmp_path),
            "--random-weights",
            "tiny",
            "--timeout",
            "240",  # a guard: a loaded machine's node takes its time to answer
        ],
        capture_output=True,
        text=True,
        timeout=900,
        env=demo_env(),
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert [s["scene"] for s in summary] == list(SCENES)
    for s in summary:
        with Image.open(tmp_path / f"{s['scene']}_depth.png") as depth_png:
            assert depth_png.size == (640, 480) and depth_png.mode == "RGB"
        ply = (tmp_path / f"{s['scene']}_cloud.ply").read_bytes()
        header, _, body = ply.partition(b"end_header\n")
        count = int(header.split(b"element vertex ")[1].split(b"\n")[0])
        assert count == s["cloud_points"] == 60 * 80 and len(body) == count * 15, proc.stdout
        assert 1.0 <= s["depth_min_m"] <= s["depth_max_m"] <= 3.0
        # The scores are the eval's metrics of the published depth against the rendered truth.
        depth = np.load(tmp_path / f"{s['scene']}_depth.npy")
        expected = metrics.evaluate_image(render_scene(s["scene"])[1], metrics.on_canvas(depth))
        assert s["metrics"] == expected and 0.0 <= expected["d1"] <= 1.0
    # Each scene fitted to its floor: the node's depth is metric_scale's own fit of the core's
    # result to the floor's points the demo sent (the camera's height known), scored alike.
    config = load_config(
        None, overrides=dict(model=str(tmp_path / "random_tiny.pt"), device="cpu", temperature=1.0)
    )
    core = DepthClip(config)
    settings = OutputSettings(metric_scale="scale_shift", metric_scale_sources=("points",))
    k = np.array([[FX, 0.0, CX], [0.0, FY, CY], [0.0, 0.0, 1.0]])
    for s in summary:
        rgb, truth = render_scene(s["scene"])
        result = core.predict(rgb)
        assert CameraScale().apply(result, 0, demo.floor_points(s["scene"]), k, 0.0, settings)
        fitted = np.load(tmp_path / f"{s['scene']}_floor_fit_depth.npy")
        np.testing.assert_allclose(fitted, result.depth[0], rtol=1e-5)
        assert s["floor_fit"]["metrics"] == metrics.evaluate_image(
            truth, metrics.on_canvas(fitted)
        )


@pytest.mark.slow
@pytest.mark.ros
def test_demo_without_weights_stops_with_the_loader_error(tmp_path):
    missing = tmp_path / "RN50.pt"
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "depthclip_ros.tools.demo",
            "--out",
            str(tmp_path / "o"),
            "--model",
            str(missing),
            "--timeout",
            "60",
        ],
        capture_output=True,
        text=True,
        timeout=120,
        env=demo_env(),
    )
    assert proc.returncode == 2
    assert str(missing) in proc.stderr and "exited" in proc.stderr


@pytest.mark.parametrize("problem", ["missing params", "out is a file"])
def test_demo_input_and_output_errors_are_one_line(tmp_path, problem):
    argv = [sys.executable, "-m", "depthclip_ros.tools.demo", "--random-weights", "tiny"]
    if problem == "missing params":
        argv += ["--out", str(tmp_path / "out"), "--params", str(tmp_path / "absent.yaml")]
        expected = "cannot read: No such file or directory"
    else:
        (tmp_path / "out").write_text("")
        argv += ["--out", str(tmp_path / "out")]
        expected = f"cannot write {tmp_path / 'out'}: File exists"
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=120, env=demo_env())
    assert proc.returncode == 5, proc.stderr[-2000:]
    errors = [line for line in proc.stderr.splitlines() if "error" in line.lower()]
    assert len(errors) == 1 and errors[0].startswith("depthclip-demo: error: ")
    assert expected in errors[0] and "Traceback" not in proc.stderr
