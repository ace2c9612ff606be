"""`ros2 launch depthclip_ros depth.launch.py ...` as a user runs it, through the real launch and
launch_ros: the package built by `colcon build` (colcon_workspace), its install prefix on
AMENT_PREFIX_PATH and its Python modules on PYTHONPATH (what `source install/setup.bash` gives),
one branch's launch sources first on PYTHONPATH (../shared/vendor/ros_launch, or the launch_ros
a ROS install already has), the file run by ros2_launch.py (ros2launch's own steps) in a process
group of its own, as a terminal starts it, with a terminal (a pseudo-terminal) on its stdin or,
as a script or a service runs it, none. The nodes it starts talk to the test process over the
default middleware.
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import re
import signal
import subprocess
import sys
import time
from importlib import metadata
from pathlib import Path

from colcon_workspace import PACKAGE, colcon_build, site_packages

ROOT = Path(__file__).resolve().parents[2]
VENDORED_LAUNCH = ROOT.parent / "shared" / "vendor" / "ros_launch"
RUNNER = Path(__file__).resolve().parent / "ros2_launch.py"
INSTALLED = "installed"  # the launch_ros of a ROS 2 install (a user's machine), not vendored


def rclpy_distribution() -> str:
    """'jazzy' on the Jazzy wheels (ros-jazzy-rclpy), else 'kilted' (ros-rclpy)."""
    try:
        metadata.version("ros-jazzy-rclpy")
        return "jazzy"
    except metadata.PackageNotFoundError:
        return "kilted"


def launch_sources() -> list:
    """The launch sources the tests run on this Python: each vendored branch once, with the
    wheels it imports (humble's and rolling's on Kilted; jazzy's on Jazzy's own wheels, `make
    test`'s second run), or the installed launch_ros."""
    if VENDORED_LAUNCH.is_dir():
        return ["jazzy"] if rclpy_distribution() == "jazzy" else ["humble", "rolling"]
    if importlib.util.find_spec("launch_ros") is not None:
        return [INSTALLED]
    return []


NO_SOURCES = (
    f"no launch sources: neither {VENDORED_LAUNCH} (the project's CI) nor an installed "
    "launch_ros (a ROS 2 install) is here"
)


def install_prefix(workspace: Path, checkpoint, cache_dir) -> Path:
    """The package as `colcon build` installs it in `workspace`: its install prefix. The
    installed config/depthclip.yaml names the test's random checkpoint (RN50 cannot be
    downloaded here) and a cache folder of the test's."""
    prefix = colcon_build(workspace)
    params = prefix / f"share/{PACKAGE}/config/depthclip.yaml"
    text = params.read_text()
    text = re.sub(r"(?m)^(\s*model:) RN50\b", rf"\1 {checkpoint}", text, count=1)
    text = re.sub(r'(?m)^(\s*cache_dir:) ""', rf'\1 "{cache_dir}"', text, count=1)
    assert str(checkpoint) in text and str(cache_dir) in text, text
    params.write_text(text)
    return prefix


def shared_install_prefix(tmp_path_factory, checkpoint) -> Path:
    """install_prefix built once for the whole test run (the pytest-xdist workers share it);
    the tests only read it."""
    from helpers import built_once

    def build(folder):
        install_prefix(folder / "ws", checkpoint, folder / "cache")

    return built_once(tmp_path_factory, "depthclip-install", build) / "ws" / "install" / PACKAGE


def os_path_list(variable: str) -> list:
    """The entries of a path-list environment variable of this process."""
    return [entry for entry in os.environ.get(variable, "").split(os.pathsep) if entry]


def launch_env(source: str, prefixes: list) -> dict:
    """What `source install/setup.bash` gives `ros2 launch` (`prefixes`: the workspace's first,
    then its underlays), with `source`'s launch first."""
    paths = [] if source == INSTALLED else [VENDORED_LAUNCH / source, VENDORED_LAUNCH / "common"]
    paths += [site_packages(prefixes[0]), *os_path_list("PYTHONPATH")]
    prefixes = [*prefixes, *os_path_list("AMENT_PREFIX_PATH")]
    return {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(map(str, paths)),
        "AMENT_PREFIX_PATH": os.pathsep.join(map(str, prefixes)),
        "PYTHONUNBUFFERED": "1",
        "RCUTILS_COLORIZED_OUTPUT": "0",
        # A launch or node process that crashes (launch itself once did, SIGSEGV on a group's
        # SIGINT) leaves every thread's Python stack in the log the failure shows.
        "PYTHONFAULTHANDLER": "1",
    }


class Launch:
    """One `ros2 launch` process and its log.

    The launch process leads its own process group, which the tests signal as a terminal or a
    service manager does. Its exit is read without reaping it (waitid's WNOWAIT) until the
    harness is done: an unreaped leader keeps its pid, and so the group's id, from being given
    to another process. Reaped early, the id can be reused by an unrelated group once the
    launch's group is gone (pid_max can be 32768 and a test run starts thousands of
    processes), and a later killpg would signal that group: seen as another test's Ctrl-C."""

    def __init__(self, proc: subprocess.Popen, log: Path):
        self.proc, self.log = proc, log

    @property
    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def error_lines(self) -> list:
        return [line for line in self.output.splitlines() if "[ERROR]" in line]

    def returncode(self) -> int | None:
        """The launch process's exit status as Popen gives it (-N: ended by signal N), None
        while it runs; it stays unreaped."""
        if self.proc.returncode is not None:  # reaped: the harness is done with it
            return self.proc.returncode
        flags = os.WEXITED | os.WNOHANG | os.WNOWAIT
        info = os.waitid(os.P_PID, self.proc.pid, flags)
        if info is None:
            return None
        killed = info.si_code in (os.CLD_KILLED, os.CLD_DUMPED)
        return -info.si_status if killed else info.si_status

    def wait(self, timeout: float) -> int:
        deadline = time.monotonic() + timeout
        while (code := self.returncode()) is None:
            if time.monotonic() > deadline:
                raise subprocess.TimeoutExpired(self.proc.args, timeout)
            time.sleep(0.05)
        return code

    def interrupt(self) -> None:
        """Ctrl-C in the terminal: SIGINT to the whole process group."""
        os.killpg(self.proc.pid, signal.SIGINT)

    def interrupt_launch(self) -> None:
        """SIGINT to the launch process alone (`kill -INT`, a supervisor, `timeout -s INT`)."""
        os.kill(self.proc.pid, signal.SIGINT)

    def terminate_group(self) -> None:
        """SIGTERM to the whole group: `systemctl stop` (KillMode=control-group, the default)
        and `docker stop` (launch as the container's first process) stop so."""
        os.killpg(self.proc.pid, signal.SIGTERM)

    def group_alive(self) -> bool:
        """Whether the launch process runs, or any process of its group is left (its leader's
        zombie is not a process left)."""
        if self.returncode() is None:
            return True
        for entry in os.scandir("/proc"):
            if not entry.name.isdigit():
                continue
            try:
                stat = Path(entry.path, "stat").read_text()
            except OSError:  # ended meanwhile
                continue
            state, _, group = stat.rsplit(")", 1)[1].split()[:3]
            if int(group) == self.proc.pid and state not in ("Z", "X"):
                return True
        return False

    def wait_group_gone(self, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while self.group_alive() and time.monotonic() < deadline:
            time.sleep(0.1)
        return not self.group_alive()


@contextlib.contextmanager
def ros2_launch(
    source: str,
    prefix: Path,
    log: Path,
    *arguments: str,
    launch_file=None,
    terminal=True,
    underlay=None,
):
    """`ros2 launch depthclip_ros depth.launch.py ARGUMENTS` (or `ros2 launch LAUNCH_FILE
    ARGUMENTS`) with `source`'s launch and the package installed in `prefix` (`underlay`: a
    further prefix behind it, as /opt/ros/$ROS_DISTRO is), typed in a terminal (`terminal`) or
    run by a script or a service (no terminal: launch then runs non-interactively); yields a
    Launch; whatever is left of its group at the end is interrupted, then killed."""
    what = [str(launch_file)] if launch_file else [PACKAGE, "depth.launch.py"]
    command = [sys.executable, str(RUNNER), *what, *arguments]
    console, stdin = os.openpty() if terminal else (None, subprocess.DEVNULL)
    with open(log, "wb") as out:
        env = launch_env(source, [prefix] + ([underlay] if underlay else []))
        # launch_ros writes each node's parameters to a temporary file it never deletes
        # (launch_params_*): in the test's folder, not in /tmp, a few dozen a run.
        env["TMPDIR"] = str(log.parent)
        proc = subprocess.Popen(
            command,
            env=env,
            stdin=stdin,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own group, as a terminal's job
        )
    if terminal:
        os.close(stdin)
    launched = Launch(proc, log)
    try:
        yield launched
    finally:
        if launched.group_alive():
            with contextlib.suppress(ProcessLookupError):
                launched.interrupt()
            if not launched.wait_group_gone(15):
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=5)
        if console is not None:
            os.close(console)


def install_recording_rviz2(prefix: Path, record: Path) -> Path:
    """An `rviz2` package in an install prefix of its own (an underlay, as /opt/ros holds
    rviz2) whose executable writes its command line to `record` and waits for its signal, as
    RViz would run (no display here); returns the prefix."""
    index = prefix / "share/ament_index/resource_index/packages"
    index.mkdir(parents=True, exist_ok=True)
    (index / "rviz2").touch()
    (prefix / "share/rviz2").mkdir(parents=True, exist_ok=True)
    exe = prefix / "lib/rviz2/rviz2"
    exe.parent.mkdir(parents=True, exist_ok=True)
    exe.write_text(
        f"#!{sys.executable}\n"
        "import json, os, signal, sys\n"
        f"open({str(record)!r} + '.part', 'w').write(json.dumps(sys.argv[1:]))\n"
        f"os.replace({str(record)!r} + '.part', {str(record)!r})\n"  # whole, or not there
        "stop = {signal.SIGINT, signal.SIGTERM}\n"
        "signal.pthread_sigmask(signal.SIG_BLOCK, stop)\n"
        "signal.sigwait(stop)\n"
    )
    exe.chmod(0o755)
    return prefix
