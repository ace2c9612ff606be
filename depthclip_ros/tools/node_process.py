"""The depthclip node as a child process talking over loopback only: for the demo, the benchmark
and the tests (users start it with `ros2 launch` or `ros2 run`)."""

from __future__ import annotations

import ctypes
import os
import random
import signal
import subprocess
import sys

# Each Fast DDS names its XML profile file by its own variable: 2.x (Humble, Jazzy) reads
# FASTRTPS_DEFAULT_PROFILES_FILE, 3.x (Kilted and later) FASTDDS_DEFAULT_PROFILES_FILE.
DDS_PROFILE_VARIABLES = ("FASTRTPS_DEFAULT_PROFILES_FILE", "FASTDDS_DEFAULT_PROFILES_FILE")


def local_dds_env(domain_id=None) -> dict:
    """Environment for ROS processes that talk only to each other on this machine: loopback
    discovery on a domain of their own. The middleware itself keeps its defaults, as on a robot."""
    domain = domain_id or os.environ.get("DEPTHCLIP_DEMO_DOMAIN_ID") or str(random.randint(1, 100))
    switches = _discovery_switches_read()
    return {"ROS_DOMAIN_ID": str(domain), **{v: _DISCOVERY_SWITCHES[v] for v in switches}}


def dds_profile_env(path) -> dict:
    """A Fast DDS XML profile for child processes, named as every Fast DDS version reads it."""
    return dict.fromkeys(DDS_PROFILE_VARIABLES, str(path))


_DISCOVERY_SWITCHES = {"ROS_AUTOMATIC_DISCOVERY_RANGE": "LOCALHOST", "ROS_LOCALHOST_ONLY": "1"}


def _discovery_switches_read() -> tuple:
    """The discovery switch read by the rcl this process loads, told by the functions it exports:
    the range (Iron added it; Jazzy still honours localhost-only too, with a warning), else
    localhost-only (Humble). Both where rcl cannot be inspected: each rcl ignores the other."""
    try:
        rcl = ctypes.CDLL("librcl.so")
    except OSError:
        return tuple(_DISCOVERY_SWITCHES)
    if hasattr(rcl, "rcl_get_automatic_discovery_range"):
        return ("ROS_AUTOMATIC_DISCOVERY_RANGE",)
    return ("ROS_LOCALHOST_ONLY",)


def node_arguments(
    params_file, overrides: dict, namespace: str = "", remaps: dict | None = None
) -> list[str]:
    """The node's `--ros-args`: `params_file`, then the namespace, `remaps` ({name: new name},
    as `-r name:=new`) and `overrides` (`-p name:=value`, over the file)."""
    args = ["--ros-args", "--params-file", str(params_file)]
    if namespace:
        args += ["-r", f"__ns:={namespace}"]
    for name, new in (remaps or {}).items():
        args += ["-r", f"{name}:={new}"]
    for name, value in overrides.items():
        text = str(value) or '""'  # an empty string as YAML writes it (rcl refuses nothing)
        args += ["-p", f"{name}:={text}"]
    return args


def start_node_process(
    params_file,
    overrides: dict,
    env: dict,
    log_path,
    namespace: str = "",
    python=None,
    remaps: dict | None = None,
):
    """The depthclip node as its own process (run by `python`, default this interpreter), its
    output going to `log_path`; the arguments as `node_arguments` gives them."""
    cmd = [python or sys.executable, "-m", "depthclip_ros.node"]
    cmd += node_arguments(params_file, overrides, namespace, remaps)
    log = open(log_path, "w")  # a file, not a pipe: a chatty node must never block on a full pipe
    return subprocess.Popen(cmd, env={**os.environ, **env}, stdout=log, stderr=subprocess.STDOUT)


def stop_node_process(proc, timeout: float) -> None:
    """End a node process as Ctrl-C does (SIGINT), killed if it has not ended within
    `timeout` seconds."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
