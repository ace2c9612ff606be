"""The torch-free install (make venv-onnx): no torch, no clip, and the node runs an exported
model there, as its own process over the default transport."""

import os
import subprocess
import threading
from pathlib import Path

import numpy as np
import pytest
import rclpy
from diagnostic_msgs.msg import DiagnosticArray
from helpers import camera_info, encode, stamp, structured_image, wait_until
from PIL import Image as PILImage
from rclpy.executors import SingleThreadedExecutor
from rclpy.qos import QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import CameraInfo, Image

from depthclip_ros.config.params_files import default_params_file
from depthclip_ros.estimator.core import DepthClip
from depthclip_ros.estimator.cpu_features import usable_cores
from depthclip_ros.export import graph as export
from depthclip_ros.export.quantization import export_int8
from depthclip_ros.messages import decoding
from depthclip_ros.model_loading import load_estimator
from depthclip_ros.tools.node_process import start_node_process
from depthclip_ros.tools.spin_thread import SpinThread

ROOT = Path(__file__).resolve().parents[2]
ONNX_PYTHON = ROOT / ".venv-onnx" / "bin" / "python"

pytestmark = pytest.mark.skipif(
    not ONNX_PYTHON.exists(), reason="no .venv-onnx: `make venv-onnx` (make test builds it)"
)


def test_the_onnx_install_has_neither_torch_nor_clip():
    for module in ("torch", "clip"):
        proc = subprocess.run(
            [str(ONNX_PYTHON), "-c", f"import {module}"], capture_output=True, text=True
        )
        assert proc.returncode != 0 and "ModuleNotFoundError" in proc.stderr, module
    proc = subprocess.run(
        [
            str(ONNX_PYTHON),
            "-c",
            "import depthclip_ros.node.lifecycle_node, depthclip_ros.bag.cli",
        ],
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 0, proc.stderr


@pytest.mark.parametrize("backend", ["onnxruntime", "openvino"])
def test_the_torch_free_node_answers_with_the_cores_depth(make_config, tmp_path, backend):
    """fp32 on ONNX Runtime against the torch core; int8 on OpenVINO against the same int8 graph
    run here (the node's start line names it)."""
    config = make_config(input_width=128, input_height=96)
    model = tmp_path / "exported.onnx"
    image = structured_image(120, 160)
    if backend == "onnxruntime":
        export.export(config, model, (120, 160))
        expected = DepthClip(config).predict(image).depth[0]
    else:
        shots = [structured_image(120, 160, seed=s) for s in range(4)]
        export_int8(config, model, shots, "test frames", (120, 160))
        int8 = load_estimator(config.replace(model=str(model), backend="openvino"))
        expected = int8.predict(image).depth[0]
    overrides = {
        "model": str(model),
        "backend": backend,
        "device": "cpu",
        "cache_dir": str(tmp_path / "empty_cache"),  # the features beside the model serve
        "temperature": 1.0,
        "input_width": 128,
        "input_height": 96,
    }
    log = tmp_path / "node.log"
    node_proc = start_node_process(
        default_params_file(), overrides, dict(os.environ), log, python=str(ONNX_PYTHON)
    )
    rclpy.init()
    tester = rclpy.create_node("torch_free_tester")
    reliable = QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE)
    got, arrived = [], threading.Event()
    tester.create_subscription(
        Image, "depth/image", lambda m: (got.append(m), arrived.set()), reliable
    )
    statuses = []
    tester.create_subscription(
        DiagnosticArray, "/diagnostics", lambda m: statuses.extend(m.status), 10
    )
    image_pub = tester.create_publisher(Image, "image", reliable)
    info_pub = tester.create_publisher(CameraInfo, "camera_info", reliable)
    executor = SingleThreadedExecutor()
    executor.add_node(tester)
    spinner = SpinThread(executor)
    try:
        for sec in range(1, 120):  # until the node (its start-up: seconds) answers
            if arrived.wait(1.0) or node_proc.poll() is not None:
                break
            image_pub.publish(stamp(encode(image, "rgb8"), sec))
            info_pub.publish(stamp(camera_info(160, 120, 100.0, 100.0, 80.0, 60.0), sec))
        assert got, f"no depth from the torch-free node; its log:\n{log.read_text()[-3000:]}"
        depth = decoding.depth_image_to_array(got[0])
        np.testing.assert_allclose(depth, expected, atol=1e-4)
        wait_until(lambda: statuses, timeout=30)
        values = {kv.key: kv.value for kv in statuses[-1].values}
        assert values["depth vs fp32 here"].startswith("|depth - fp32| median")
        assert f"measured on {backend}" in values["depth vs fp32 here"]
        assert values["inference threads"] == str(usable_cores())  # one per core it may use
        started = log.read_text()
        if backend == "onnxruntime":
            assert "onnxruntime" in started and "CPUExecutionProvider" in started
        else:
            assert "openvino" in started and "int8, 7-bit weights (at export" in started
        assert "depth vs fp32 here: |depth - fp32| median" in started
    finally:
        node_proc.terminate()
        node_proc.wait(timeout=20)
        spinner.stop()
        tester.destroy_node()
        rclpy.shutdown()


def test_int8_without_torch_from_an_exported_fp32_graph(make_config, tmp_path):
    """depthclip-export --from-onnx in the torch-free install: the same int8 graph as the torch
    path's export of the same model on the same frames; wrong uses in one line."""
    config = make_config(input_width=128, input_height=96)
    fp32 = tmp_path / "fp32.onnx"
    export.export(config, fp32, (120, 160))
    folder = tmp_path / "frames"
    folder.mkdir()
    shots = [structured_image(120, 160, seed=s) for s in range(6)]
    for i, shot in enumerate(shots):
        PILImage.fromarray(shot).save(folder / f"{i}.png")
    params = tmp_path / "params.yaml"
    params.write_text(
        "/**/depthclip:\n  ros__parameters:\n    temperature: 1.0\n    input_width: 128\n"
        "    input_height: 96\n"
    )
    tool = [str(ROOT / ".venv-onnx" / "bin" / "depthclip-export"), "--params", str(params)]
    out = tmp_path / "robot_int8.onnx"
    argv = ["--precision", "int8", "--from-onnx", str(fp32), "--calibration", str(folder)]
    proc = subprocess.run([*tool, *argv, "--out", str(out)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert "int8, 7-bit weights (at export" in proc.stdout and proc.stderr == ""
    here = tmp_path / "torch_int8.onnx"
    export_int8(config, here, shots, "test frames", (120, 160))
    image = structured_image(120, 160, seed=9)
    robot = load_estimator(config.replace(model=str(out), backend="onnxruntime"))
    torch_path = load_estimator(config.replace(model=str(here), backend="onnxruntime"))
    np.testing.assert_array_equal(robot.predict(image).depth, torch_path.predict(image).depth)
    robot.warm_up()
    assert robot.depth_figure.frames == 1  # its held-out frame, beside it
    for wrong, words, lines in (
        (
            ["--precision", "int8", "--from-onnx", str(out), "--calibration", "demo"],
            "is a int8",
            1,
        ),
        (["--from-onnx", str(fp32), "--calibration", "demo"], "takes --precision int8", None),
    ):
        proc = subprocess.run(
            [*tool, *wrong, "--out", str(tmp_path / "x.onnx")], capture_output=True, text=True
        )
        assert proc.returncode == 2 and words in proc.stderr, proc.stderr
        assert "Traceback" not in proc.stderr
        assert lines is None or proc.stderr.count("\n") == lines  # else argparse's usage too
