"""The depthclip node as a child process talking over loopback only: for the demo, the benchmark
and the tests (users start it with `ros2 launch` or `ros2 run`)."""

from __future__ import annotations

import os
import random
import subprocess
import sys


def local_dds_env(domain_id=None) -> dict:
    """Environment for ROS processes that talk only to each other on this machine: loopback
    discovery on a domain of their own. The middleware itself keeps its defaults, as on a robot."""
    domain = domain_id or os.environ.get("DEPTHCLIP_DEMO_DOMAIN_ID") or str(random.randint(1, 100))
    return {"ROS_AUTOMATIC_DISCOVERY_RANGE": "LOCALHOST", "ROS_DOMAIN_ID": str(domain)}


def start_node_process(
    params_file, overrides: dict, env: dict, log_path, namespace: str = "", python=None
):
    """The depthclip node as its own process (run by `python`, default this interpreter), its
    output going to `log_path`."""
    cmd = [
        python or sys.executable,
        "-m",
        "depthclip_ros.node",
        "--ros-args",
        "--params-file",
        str(params_file),
    ]
    if namespace:
        cmd += ["-r", f"__ns:={namespace}"]
    for k, v in overrides.items():
        cmd += ["-p", f"{k}:={v}"]
    log = open(log_path, "w")  # a file, not a pipe: a chatty node must never block on a full pipe
    return subprocess.Popen(cmd, env={**os.environ, **env}, stdout=log, stderr=subprocess.STDOUT)
