"""tf2 for the tests: geometry2's tf2_msgs, tf2, tf2_py and tf2_ros_py (../shared/vendor/
geometry2, the branch of this Python's ROS distribution) built by colcon against the venv's ROS
wheels, as a ROS install has them, into .tf2/<distribution> beside the venvs; and the
environment that puts them before the tests. PyPI's ROS wheels have no tf2.

    python test/support/tf2_from_source.py build        # `make tf2`: once per venv
    python test/support/tf2_from_source.py run -- CMD   # CMD with the built tf2 importable
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import sys
import sysconfig
import tempfile
from pathlib import Path

from colcon_workspace import run_colcon_build, site_packages
from launch_harness import rclpy_distribution

ROOT = Path(__file__).resolve().parents[2]
SOURCES = ROOT.parent / "shared" / "vendor" / "geometry2"
PACKAGES = ("tf2_msgs", "tf2", "tf2_py", "tf2_ros_py")
BRANCHES = {"jazzy": "jazzy", "kilted": "rolling"}  # rolling's 0.39 builds against Kilted
INCLUDE_PATHS = Path(__file__).resolve().parent / "wheel_include_paths.cmake"


def prefix() -> Path:
    """Where this Python's distribution's tf2 is installed (merged: lib/, share/, ...)."""
    return ROOT / ".tf2" / rclpy_distribution()


def built() -> bool:
    return (prefix() / ".ready").exists()


def missing() -> str:
    """Why tf2_ros does not import in this process ('' when it does): what the tests that need
    it skip with."""
    if importlib.util.find_spec("tf2_ros") is not None:
        return ""
    if not SOURCES.is_dir():
        return f"tf2_ros is not installed and its sources ({SOURCES}) are not here to build it"
    if not built():
        return f"tf2_ros is not built: `make tf2` builds it from {SOURCES} into {prefix()}"
    return (
        f"tf2_ros is built in {prefix()} but not on this process's paths: `make test` puts it"
        f" there (or: python {Path(__file__).relative_to(ROOT)} run -- python -m pytest ...)"
    )


def build() -> Path:
    """tf2 built into prefix() (again, from scratch); AssertionError with colcon's output when
    the build fails."""
    branch = SOURCES / BRANCHES[rclpy_distribution()]
    target = prefix()
    shutil.rmtree(target, ignore_errors=True)
    venv = Path(sys.prefix)
    with tempfile.TemporaryDirectory(prefix="tf2_ws_") as workspace:
        for package in PACKAGES:
            shutil.copytree(branch / package, Path(workspace) / "src" / package)
        env = dict(
            os.environ,
            AMENT_PREFIX_PATH=str(venv),  # the wheels are the ROS prefix (venv/share/...)
            CMAKE_PREFIX_PATH=str(venv),
            PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
        )
        run_colcon_build(
            Path(workspace),
            "--merge-install",
            "--install-base",
            str(target),
            "--cmake-args",
            "-DBUILD_TESTING=OFF",
            f"-DCMAKE_PROJECT_INCLUDE={INCLUDE_PATHS}",
            f"-DWHEEL_PYTHON_INCLUDE={sysconfig.get_paths()['include']}",
            f"-DWHEEL_NUMPY_INCLUDE={numpy_include()}",
            env=env,
        )
    (target / ".ready").touch()
    return target


def numpy_include() -> str:
    import numpy

    return numpy.get_include()


def environment(base: dict) -> dict:
    """`base` with prefix()'s tf2 first on the paths a ROS install's setup script sets."""
    paths = {
        "PYTHONPATH": site_packages(prefix()),
        "LD_LIBRARY_PATH": prefix() / "lib",
        "AMENT_PREFIX_PATH": prefix(),
    }
    return {
        **base,
        **{
            name: os.pathsep.join(filter(None, [str(path), base.get(name, "")]))
            for name, path in paths.items()
        },
    }


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["build"]:
        if not SOURCES.is_dir():
            print(f"tf2 not built: {SOURCES} is not here (its tests skip and say so)")
            return 0
        print(f"tf2 ({BRANCHES[rclpy_distribution()]} branch) built into {build()}")
        return 0
    if argv[:2] == ["run", "--"] and len(argv) > 2:
        env = environment(dict(os.environ)) if built() else dict(os.environ)
        os.execvpe(argv[2], argv[2:], env)
    print(__doc__, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
