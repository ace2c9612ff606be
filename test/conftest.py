"""Shared fixtures: a tiny random CLIP saved to disk and loaded the way users load models."""

import os
import signal
import sys
import warnings
from pathlib import Path

from depthclip_ros.node.entry_point import wait_without_spinning  # imports no torch
from depthclip_ros.tools.node_process import (  # imports no rclpy
    DDS_PROFILE_VARIABLES,
    local_dds_env,
)

# Every node the tests start talks over loopback only, on a DDS domain of this run's own (of
# this pytest-xdist worker's own: with n workers, domain % n tells them apart; the pid, other
# runs on the machine). Set before anything imports rclpy (the rmw reads them at init).
_WORKER = int(os.environ.get("PYTEST_XDIST_WORKER", "gw0").removeprefix("gw") or 0)
_WORKERS = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
os.environ.update(local_dds_env(1 + (os.getpid() % (99 // _WORKERS)) * _WORKERS + _WORKER))
# Nothing else: the middleware runs with its defaults, as on a robot (no DDS XML profile).
for _tuning in (*DDS_PROFILE_VARIABLES, "RMW_FASTRTPS_USE_QOS_FROM_XML"):
    os.environ.pop(_tuning, None)

# torch's OpenMP threads wait without spinning, as in the node's process, here for every test
# and every process the tests start: the pytest-xdist workers outnumber the cores, and a thread
# spinning for a descheduled peer burns the core that peer needs (docs/testing.md). Before torch
# is imported (libgomp reads it then); what is computed does not change, only how threads wait.
wait_without_spinning()

# A run started in the background by a script (`.ci/run &`, a CI runner without job control)
# inherits SIGINT ignored, and so would every process the tests start: launch, which stops on
# SIGINT through Python's handler, then never hears the tests' SIGINT (a launch interrupted
# with `kill -INT` ran on for good). The tests' processes start as a terminal or a service
# starts them: a handled signal is reset to its default in each child.
if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)

# Shared test helpers (images, messages, the live-node harness, bag factories) in one folder.
sys.path.insert(0, str(Path(__file__).resolve().parent / "support"))

import pytest  # noqa: E402 (after the environment the rmw reads)

from depthclip_ros.tools.random_clip import save_random_checkpoint  # noqa: E402

warnings.filterwarnings("ignore", category=FutureWarning, module="torch")

ROS_TESTS = Path(__file__).resolve().parent / "ros"


@pytest.fixture(scope="session", autouse=True)
def cache_and_logs_of_this_run(tmp_path_factory):
    """The package's default caches (text features, OpenVINO's compiled models: a blob for
    every random graph compiled) and the ROS log files of every node started (a thousand a
    run) in this run's folders, not in the user's ~/.cache and ~/.ros/log: the tests'
    processes inherit them."""
    os.environ["XDG_CACHE_HOME"] = str(tmp_path_factory.mktemp("xdg_cache"))
    os.environ["ROS_LOG_DIR"] = str(tmp_path_factory.mktemp("ros_log"))


def pytest_addoption(parser):
    parser.addoption(
        "--ros-only",
        action="store_true",
        help="run only the tests marked `ros` (make test: a second time, on ROS 2 Jazzy)",
    )


# Tests that start a local Ray: one at a time (on one pytest-xdist worker), as two local
# clusters starting together race for Ray's ports.
RAY_TESTS = (
    "test/tools/test_fleet.py",
    "test_benchmark_bags",
    "test_gpu_checks_run_dry_on_cpu_and_judge_known_figures",  # its depthclip-fleet step
)


@pytest.hookimpl(tryfirst=True)  # before pytest-xdist's own, which would answer first
def pytest_xdist_make_scheduler(config, log):
    """--dist loadgroup's intent, done by node id: pytest-xdist 3.8 reads xdist_group marks into
    node ids that pytest 9 no longer uses (`Node._nodeid`), so marked tests went to any worker.
    Here the tests that start a local Ray are one unit of work (one worker, one at a time);
    every other test is its own, handed out in collection order (the slow ones first)."""
    if config.getvalue("dist") != "loadgroup":
        return None
    from xdist.scheduler import LoadScopeScheduling

    class RayTestsTogether(LoadScopeScheduling):
        def _split_scope(self, nodeid: str) -> str:
            return "ray" if any(name in nodeid for name in RAY_TESTS) else nodeid

    return RayTestsTogether(config, log)


def pytest_collection_modifyitems(config, items):
    for item in items:  # everything under test/ros/ talks to rclpy
        if ROS_TESTS in Path(str(item.fspath)).resolve().parents:
            item.add_marker(pytest.mark.ros)
    if config.getoption("--ros-only"):
        selected = [item for item in items if item.get_closest_marker("ros")]
        config.hook.pytest_deselected(items=[i for i in items if i not in selected])
        items[:] = selected
    # The slow tests first (sort is stable: each file's order kept), so that the pytest-xdist
    # workers end together rather than one waiting on a long test handed out last.
    items.sort(key=lambda item: item.get_closest_marker("slow") is None)


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory):
    """A random tiny CLIP ResNet saved as a plain state_dict."""
    return save_random_checkpoint(tmp_path_factory.mktemp("ckpt") / "tiny_clip.pt", "tiny", seed=0)


@pytest.fixture(scope="session")
def unbiased_checkpoint(tmp_path_factory):
    """The tiny random CLIP without BatchNorm and attention-pool biases: a depth that varies
    over an image (helpers.VARYING_BINS, helpers.ramp_image), for fits of a scale and shift or
    of each bin through the node."""
    path = tmp_path_factory.mktemp("unbiased") / "tiny_unbiased.pt"
    return save_random_checkpoint(path, "tiny", seed=0, unbiased=True)


@pytest.fixture
def make_config(tiny_checkpoint, tmp_path):
    """Config factory on the tiny model, scene presets read as load_config reads them.
    Temperature 1.0: a tiny random CLIP saturates the softmax at the paper's 0.1, which would
    hide errors in the bin weighting."""
    from helpers import model_config

    def make(**changes):
        return model_config(tiny_checkpoint, tmp_path / "cache", **changes)

    return make


@pytest.fixture
def node_and_tester(tiny_checkpoint, tmp_path):
    """The depthclip node on the tiny model, started as `ros2 run` starts it, and a tester node
    publishing its inputs and recording its outputs (see ros_harness)."""
    from ros_harness import running_node

    with running_node(tiny_checkpoint, tmp_path) as pair:
        yield pair


@pytest.fixture(scope="session")
def rn50_checkpoint(tmp_path_factory):
    """A random CLIP with the real RN50's shapes (2048-channel layer4, 1024-d joint space),
    saved once for the whole run (pytest-xdist's workers share it; it is only read)."""
    from helpers import built_once

    def build(folder):
        save_random_checkpoint(folder / "rn50.pt", "RN50", seed=0)

    return str(built_once(tmp_path_factory, "rn50-checkpoint", build) / "rn50.pt")
