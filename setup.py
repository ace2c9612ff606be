from glob import glob

from setuptools import find_packages, setup

PACKAGE = "depthclip_ros"

setup(
    name=PACKAGE,
    version="0.1.0",
    packages=find_packages(include=[PACKAGE, f"{PACKAGE}.*", "offline_eval", "offline_eval.*"]),
    data_files=[
        ("share/ament_index/resource_index/packages", [f"resource/{PACKAGE}"]),
        (f"share/{PACKAGE}", ["package.xml"]),
        (f"share/{PACKAGE}/launch", glob("launch/*.launch.py")),
        (
            f"share/{PACKAGE}/config",
            glob("config/*.yaml") + glob("config/*.rviz") + glob("config/*.xml"),
        ),
        (f"share/{PACKAGE}/config/presets", glob("config/presets/*.yaml")),
    ],
    # ROS 2 Python packages (rclpy, sensor_msgs, ...) are deliberately not listed:
    # on a ROS install they come from the distro; pip-only set-ups install the
    # ROS wheels from requirements.txt.
    # The base install runs exported models on ONNX Runtime; the `torch` extra adds the torch
    # core (CLIP checkpoints, the text encoder, depthclip-export), `openvino` the OpenVINO
    # backend.
    install_requires=[
        "numpy",
        "pyyaml",
        "pillow",
        "tqdm",
        "h5py",
        "scipy",
        "rosbags",
        "onnxruntime",
    ],
    extras_require={
        "torch": ["torch", "openai-clip", "setuptools<81", "onnx", "onnxscript"],
        # The OpenVINO backend (backend: openvino): exported graphs on Intel CPUs, GPUs, NPUs
        # (its aarch64 wheels need glibc 2.35; on Arm, ONNX Runtime is the int8 runtime).
        "openvino": ["openvino"],
        # int8 calibration of an exported fp32 graph without torch (depthclip-export
        # --from-onnx): ONNX Runtime's quantiser reads the graph with onnx.
        "int8": ["onnx"],
        # TensorRT through onnxruntime-gpu: the graph's trunk is taken out of the file with onnx
        # (docs/onnx.md); onnxruntime-gpu itself comes from the user's CUDA install.
        "tensorrt": ["onnx"],
    },
    zip_safe=True,
    maintainer="depthclip_ros maintainers",
    maintainer_email="maintainers@depthclip-ros.invalid",
    description="DepthCLIP zero-shot monocular depth as a ROS 2 node",
    license="MIT",
    tests_require=["pytest"],
    entry_points={
        "console_scripts": [
            f"depthclip_node = {PACKAGE}.node.entry_point:main",
            f"depthclip-demo = {PACKAGE}.tools.demo:main",
            f"depthclip-bag = {PACKAGE}.bag.cli:main",
            f"depthclip-fleet = {PACKAGE}.fleet.cli:main",
            f"depthclip-export = {PACKAGE}.tools.export:main",
            "depthclip-eval = offline_eval.cli:main",
            f"depthclip-speed = {PACKAGE}.tools.speed:main",
        ],
    },
)
