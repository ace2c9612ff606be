"""bond/msg/Status for the tests: `ros_packages/bond` built by colcon with this venv's rosidl
generators (PyPI wheels of the distribution's ament_cmake and rosidl_default_generators), the
way a ROS install builds it, and the environment a process needs to import it."""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

from colcon_workspace import run_colcon_build, site_packages

PACKAGE = Path(__file__).resolve().parent / "ros_packages" / "bond"


def missing_tools() -> str:
    """Why the messages cannot be built here ('' when they can)."""
    for tool in ("cmake", "cc"):
        if shutil.which(tool) is None:
            return f"no {tool} on PATH to build bond/msg"
    generators = Path(sys.prefix) / "share" / "rosidl_default_generators"
    if not generators.exists():
        return f"rosidl_default_generators is not installed in {sys.prefix} (the venv's set-up)"
    return ""


def build(workspace: Path) -> Path:
    """The install prefix of bond/msg built in `workspace`; AssertionError with colcon's output
    when the build fails."""
    shutil.copytree(PACKAGE, workspace / "src" / "bond")
    env = dict(
        os.environ,
        AMENT_PREFIX_PATH=sys.prefix,  # where the generators' ament index is
        CMAKE_PREFIX_PATH=sys.prefix,
        PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
    )
    run_colcon_build(workspace, "--merge-install", env=env)
    return workspace / "install"


def environment(prefix: Path) -> dict:
    """What a process started from this one adds to import bond.msg from `prefix`."""
    paths = {"PYTHONPATH": site_packages(prefix), "LD_LIBRARY_PATH": prefix / "lib"}
    return {
        name: os.pathsep.join(filter(None, [str(path), os.environ.get(name, "")]))
        for name, path in paths.items()
    }


def import_status(prefix: Path, monkeypatch):
    """bond.msg.Status imported into this process from `prefix` for one test: its libraries
    loaded first (the dynamic linker read LD_LIBRARY_PATH when the process started), and the
    paths rclpy's type support lookup and the import read set through `monkeypatch`, so that
    processes the worker's later tests start do not find bond/msg."""
    import ctypes

    for name, value in environment(prefix).items():
        monkeypatch.setenv(name, value)
    for part in (
        "generator_c",
        "typesupport_c",
        "typesupport_introspection_c",
        "typesupport_fastrtps_c",
        "generator_py",
    ):
        ctypes.CDLL(str(prefix / "lib" / f"libbond__rosidl_{part}.so"), mode=ctypes.RTLD_GLOBAL)
    monkeypatch.syspath_prepend(str(site_packages(prefix)))
    from bond.msg import Status

    return Status
