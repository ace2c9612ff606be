"""The node's process as `ros2 run depthclip_ros depthclip_node` starts it: a Ctrl-C while the
modules load ends it quietly, and it ends without Python's teardown of what torch loaded. Light
on purpose: nothing heavy is imported before the signal handler is set."""


def main(args=None):
    """The node's process (`ros2 run depthclip_ros depthclip_node`): ends it, with the node's
    exit code, once the node is destroyed and rclpy shut down."""
    import signal

    # A Ctrl-C while the modules load (seconds: torch, rclpy) ends the process quietly, as one
    # after start-up does, not with a KeyboardInterrupt traceback from inside an import.
    signal.signal(signal.SIGINT, _end_quietly)
    wait_without_spinning()
    from .process import run

    _end_process(run(args))


def wait_without_spinning() -> None:
    """torch's CPU threads sleep while they wait instead of spinning first, unless the user
    chose (`OMP_WAIT_POLICY`): a robot's other processes share the cores, and a thread spinning
    for its descheduled peer takes the core the peer needs (bench/results/performance.md, "The
    torch node beside a busy process"). Set before torch is imported: libgomp reads it then."""
    import os

    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")


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
