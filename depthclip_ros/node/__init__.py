"""The ROS 2 adapter, the package's only rclpy user: the `depthclip` lifecycle node
(`lifecycle_node.DepthClipNode`) and the process that runs it (`process`: signals, spin,
autostart), the bond a lifecycle manager keeps with it (`lifecycle_bond`), one camera's inputs
and outputs (`camera_pipeline`), inputs whose QoS follows their publishers (`adaptive_input`),
the parameter schema as ROS parameters (`parameters`), /diagnostics (`diagnostics`), and the
launch file's logic (`launch_arguments`, rclpy-free, so the launch file and its tests import it
without a ROS graph).
"""


def main(args=None):
    """The node's process (`ros2 run depthclip_ros depthclip_node`): ends it, with the node's
    exit code, once the node is destroyed and rclpy shut down."""
    import signal

    # A Ctrl-C while the modules load (seconds: torch, rclpy) ends the process quietly, as one
    # after start-up does, not with a KeyboardInterrupt traceback from inside an import.
    signal.signal(signal.SIGINT, _end_quietly)
    from .process import run

    _end_process(run(args))


def _end_process(code: int) -> None:
    """Python's teardown of what torch loads (some 2,500 modules) took 1 to 3 s here after the
    node had finished, more on a loaded machine: past the 5 s launch waits after its SIGINT
    before it escalates to SIGTERM with an [ERROR]. Nothing is left to tear down (node destroyed,
    middleware shut down, logging closed), so the atexit handlers run, Python's and C's streams
    are flushed, and the process ends."""
    import atexit
    import ctypes
    import os
    import sys

    atexit._run_exitfuncs()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):  # a closed pipe: nothing more can reach it
            pass
    ctypes.CDLL(None).fflush(None)  # rcutils' console output is C's stdio
    os._exit(code)


def _end_quietly(signum, frame):
    import os

    os._exit(0)  # nothing started yet: nothing to close
