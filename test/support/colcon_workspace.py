"""The package built by `colcon build`, as a ROS 2 workspace builds it: the checkout copied into
a workspace's src/ (without venvs, git and build leftovers), colcon run there with this Python,
and the install prefix of the package returned (share/, lib/depthclip_ros, the Python package
under lib/pythonX.Y/site-packages)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = "depthclip_ros"


def colcon_build(workspace: Path) -> Path:
    """`colcon build` of this checkout in `workspace`: the package's install prefix
    (workspace/install/depthclip_ros). AssertionError with colcon's output when it fails."""
    shutil.copytree(
        ROOT,
        workspace / "src" / PACKAGE,
        ignore=shutil.ignore_patterns(
            ".venv*",
            ".tf2",
            ".emulation",
            ".ort-wrappers",
            ".git",
            "build",
            "install",
            "log",
            "__pycache__",
            "*.egg-info",
            "out",
        ),
    )
    run_colcon_build(workspace)
    return workspace / "install" / PACKAGE


def run_colcon_build(workspace: Path, *arguments, env=None) -> None:
    """`colcon build` of the packages in workspace/src with this Python's colcon;
    AssertionError with colcon's output when it fails."""
    colcon = Path(sys.executable).parent / "colcon"
    assert colcon.exists(), "colcon-common-extensions is part of the test set-up"
    proc = subprocess.run(
        [str(colcon), "build", "--base-paths", "src", *arguments],
        cwd=workspace,
        env=dict(env or os.environ, PYTHONWARNINGS="ignore"),
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr


def site_packages(prefix: Path) -> Path:
    """Where colcon installed the package's Python modules in `prefix`."""
    version = f"python{sys.version_info.major}.{sys.version_info.minor}"
    return prefix / "lib" / version / "site-packages"
