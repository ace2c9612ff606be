"""depthclip-speed as a robot's user runs it: the package built by colcon (`ros2 run
depthclip_ros depthclip-speed` runs the script under lib/depthclip_ros), with a parameter file of
their own (the tests' random CLIP: RN50's weights cannot be downloaded here)."""

import os
import re
import subprocess
from pathlib import Path

import pytest
from colcon_workspace import site_packages
from launch_harness import shared_install_prefix

pytestmark = pytest.mark.slow


def installed_speed(prefix, *argv):
    """The installed script, with what `source install/setup.bash` gives a shell."""
    env = dict(os.environ)
    for name, path in (("PYTHONPATH", site_packages(prefix)), ("AMENT_PREFIX_PATH", prefix)):
        env[name] = os.pathsep.join(filter(None, [str(path), env.get(name, "")]))
    script = prefix / "lib" / "depthclip_ros" / "depthclip-speed"
    return subprocess.run(
        [str(script), *map(str, argv)], env=env, capture_output=True, text=True, timeout=600
    )


def test_the_installed_speed_command_prints_this_machines_table(
    tmp_path, tmp_path_factory, tiny_checkpoint
):
    """Its table names the machine and the model, times the core and counts the node's depth
    images back from a camera driver process; a model that is not there is one line, exit 2."""
    prefix = shared_install_prefix(tmp_path_factory, tiny_checkpoint)
    params = tmp_path / "robot.yaml"
    params.write_text(
        "/**/depthclip:\n  ros__parameters:\n"
        f"    model: {tiny_checkpoint}\n    device: cpu\n    temperature: 1.0\n"
        f"    cache_dir: {tmp_path / 'cache'}\n"
    )
    done = installed_speed(prefix, "--params", params, "--rate", 10, "--seconds", 2, "--frames", 2)
    assert done.returncode == 0, done.stderr[-3000:]
    rows = dict(re.findall(r"^\| (.+?) \| (.+?) \|$", done.stdout, re.M))
    assert rows["machine"].split()[0] and rows["model"].startswith(Path(tiny_checkpoint).name)
    assert rows["device, precision"] == "cpu, fp32"
    median, p95 = map(float, rows["core, a 640x480 frame: median / p95 (ms)"].split(" / "))
    assert 0 < median <= p95 and float(rows["core (frames/s)"]) > 0
    out, offered = re.fullmatch(
        r"(\S+) of (\S+) offered", rows["node: depth images out (Hz)"]
    ).groups()
    assert float(out) > 0 and float(offered) == 10
    assert all(float(v) > 0 for v in rows["node: forward median / p95 (ms)"].split(" / "))
    params.write_text(params.read_text().replace(str(tiny_checkpoint), str(tmp_path / "no.pt")))
    failed = installed_speed(prefix, "--params", params, "--seconds", 1)
    lines = failed.stderr.strip().splitlines()
    assert failed.returncode == 2 and len(lines) == 1, failed.stderr[-2000:]
    assert lines[0].startswith("depthclip-speed: error: ") and "no.pt" in lines[0]
