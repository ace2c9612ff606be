"""The node's process: rclpy brought up, the node started (autostart) as a lifecycle manager
would start it, spun until a Ctrl-C (SIGINT) or SIGTERM, then destroyed; the signals handled
so that no traceback and no signal exit code reach launch.
"""

from __future__ import annotations

import signal
import threading

import rclpy
from rclpy.lifecycle import TransitionCallbackReturn

from ..config.settings import EXECUTORS
from ..errors import ConfigError
from .lifecycle_node import DepthClipNode


def start(node: DepthClipNode) -> bool:
    """autostart: configure and activate now, as a lifecycle manager would; False on failure
    (already logged, one FATAL line). A stop (SIGTERM) that shut the middleware down while it
    started is no failure: the spin that follows ends at once."""
    node._fatal_on_failure = True
    try:
        for transition in (node.trigger_configure, node.trigger_activate):
            try:
                outcome = transition()
            except Exception:  # Jazzy's state machine then fails to publish the transition
                if node.context.ok():
                    raise
                return True
            if outcome != TransitionCallbackReturn.SUCCESS:
                return not node.context.ok()
        return True
    finally:
        node._fatal_on_failure = False


def run(args=None) -> int:
    """rclpy up, the node made, started (autostart) and spun until a Ctrl-C or an external
    shutdown, then destroyed and rclpy shut down; the process's exit code."""
    interrupt = Interrupt()
    if threading.current_thread() is threading.main_thread():  # before rclpy's, which chains
        signal.signal(signal.SIGINT, interrupt)
    node = None
    code = 0
    try:
        rclpy.init(args=args)
        node = DepthClipNode()
        autostart = node.get_parameter("autostart").value
        if not isinstance(autostart, bool):
            raise ConfigError("autostart", autostart, "must be true or false")
        executor = make_executor(node.get_parameter("executor").value)
        if autostart and not start(node):
            code = 1
        else:
            spin_until_interrupted(node, interrupt, executor)
    except ConfigError as exc:  # before the model loads: one line, as a failed start's
        (node.get_logger() if node else rclpy.logging.get_logger("depthclip")).fatal(str(exc))
        code = 1
    except (KeyboardInterrupt, rclpy.executors.ExternalShutdownException):
        pass
    finally:
        # A Ctrl-C can reach the node twice: the group's SIGINT, then launch's own where `ros2
        # launch` has no terminal on stdin (a script, `-n`), or a second Ctrl-C. The second must
        # not cut the clean-up short (launch would report 'process has died').
        interrupt.raises = False
        if node is not None:
            node.destroy_node()
        if rclpy.ok():
            rclpy.shutdown()
        if threading.current_thread() is threading.main_thread():
            # As Python exits, it puts the default back for a handler of its own (a SIGINT then
            # would end the process by the signal); an ignored one it leaves as it is.
            signal.signal(signal.SIGINT, signal.SIG_IGN)
    return code


class Interrupt:
    """The node's SIGINT handler, installed before rclpy.init so that rclpy's own handler
    chains to it. rclpy's shuts the context down and wakes the executor. A KeyboardInterrupt
    raised as well would land anywhere, also inside rclpy's C++ while it builds a received
    message, which turns it into a RuntimeError ('Unable to convert call argument') and a
    traceback. So once the node spins, a Ctrl-C is only recorded and the spin ends after the
    callback in hand; while it starts (the model loads for seconds) it raises, to stop at once."""

    def __init__(self):
        self.received = False
        self.raises = True

    def __call__(self, signum, frame):
        self.received = True
        if self.raises:
            raise KeyboardInterrupt


def make_executor(choice) -> rclpy.executors.Executor:
    """The rclpy executor of the `executor` parameter: rclpy's EventsExecutor (Jazzy and later;
    it takes a message in C++, where the SingleThreadedExecutor rebuilds its wait set in Python
    for each: measured in bench/results/performance.md) for `events`, and for `auto` where this
    rclpy has it; else the SingleThreadedExecutor. ConfigError for another value, or `events` on an
    rclpy without it (Humble)."""
    if choice not in EXECUTORS:
        raise ConfigError("executor", choice, f"must be one of {', '.join(EXECUTORS)}")
    try:
        from rclpy.experimental.events_executor import EventsExecutor
    except ImportError:
        EventsExecutor = None
    if choice == "events" and EventsExecutor is None:
        raise ConfigError(
            "executor", choice, "this rclpy has no EventsExecutor (Humble): use auto"
        )
    if choice == "single_threaded" or EventsExecutor is None:
        return rclpy.executors.SingleThreadedExecutor()
    return EventsExecutor()


def spin_until_interrupted(node: DepthClipNode, interrupt: Interrupt, executor) -> None:
    """rclpy.spin until a Ctrl-C (or an external shutdown: ExternalShutdownException). rclpy's
    handler calls Python's (which marks `interrupt` to run) before it has the executor woken,
    so the check after each spin_once sees the Ctrl-C. rclpy shuts the middleware down from a
    thread of its own meanwhile: a callback in hand that fails on it (a timer's publish: 'the
    publisher's context is invalid') ends the spin as the Ctrl-C does. The EventsExecutor
    returns at once once the context is shut down (a SIGTERM): the loop checks for that too."""
    interrupt.raises = False
    executor.add_node(node)
    try:
        while not interrupt.received and node.context.ok():
            try:
                executor.spin_once(timeout_sec=1.0)
            except Exception:
                if interrupt.received or not node.context.ok():
                    return
                raise
    finally:
        executor.remove_node(node)
        executor.shutdown()
