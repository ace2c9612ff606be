"""The ROS 2 adapter, the package's only rclpy user: the `depthclip` lifecycle node
(`lifecycle_node.DepthClipNode`), one camera's inputs and outputs (`camera_pipeline`), inputs
whose QoS follows their publishers (`adaptive_input`), the parameter schema as ROS parameters
(`parameters`), /diagnostics (`diagnostics`), and the launch file's logic (`launch_arguments`,
rclpy-free, so the launch file and its tests import it without a ROS graph).
"""


def main(args=None):
    """The node's entry point (`ros2 run depthclip_ros depthclip_node`)."""
    import signal

    # A Ctrl-C while the modules load (seconds: torch, rclpy) ends the process quietly, as one
    # after start-up does, not with a KeyboardInterrupt traceback from inside an import.
    signal.signal(signal.SIGINT, _end_quietly)
    from .lifecycle_node import main as run

    return run(args)


def _end_quietly(signum, frame):
    import os

    os._exit(0)  # nothing started yet: nothing to close
