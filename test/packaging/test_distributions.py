"""Humble through Rolling from one code base, checked where no wheels run them: every rclpy,
launch and launch_ros call the package makes against each distribution's own sources (a table
generated from them), every package.xml dependency against rosdistro's rosdep keys, the installed
code against Python 3.10 (Humble's), and discovery confined by the switch each rcl reads."""

import ctypes
import json
import subprocess
import sys
from pathlib import Path

import pytest
import ros_api
import rosdep_keys

from depthclip_ros.tools import node_process

ROOT = Path(__file__).resolve().parents[2]
NODE = ROOT / "depthclip_ros" / "node" / "lifecycle_node.py"
LAUNCH = ROOT / "launch" / "depth.launch.py"
README_DISTRIBUTIONS = ("Humble", "Jazzy", "Kilted", "Lyrical", "Rolling")


def test_every_ros_call_the_package_makes_exists_on_every_distribution():
    assert ros_api.problems() == []


def test_the_api_table_is_the_package_of_today():
    """Rows of calls the package no longer makes mean the table was not regenerated."""
    table = json.loads(ros_api.TABLE.read_text())
    stale = set(table["uses"]) - set(ros_api.package_uses())
    assert not stale, f"regenerate test/packaging/ros_api_table.json (ros_api.py): {stale}"
    assert set(table["sources"]) == {"humble", "jazzy", "kilted", "rolling"}


def test_the_one_iron_call_is_feature_detected_and_the_table_knows_humble_lacks_it():
    row = json.loads(ros_api.TABLE.read_text())["uses"][
        "method:*.add_post_set_parameters_callback"
    ]
    assert row["humble"] is None and all(row[d] for d in ("jazzy", "kilted", "rolling"))
    assert ros_api.package_uses([NODE])["method:*.add_post_set_parameters_callback"]["optional"]


def test_an_import_whose_import_error_is_handled_is_optional(tmp_path):
    """The EventsExecutor (Kilted's rclpy; not Humble's) imported under `try: ... except
    ImportError`: feature-detected, as a hasattr guard is; imported plainly, Humble lacks it."""
    tried = (
        "try:\n"
        "    from rclpy.experimental.events_executor import EventsExecutor\n"
        "except ImportError:\n"
        "    EventsExecutor = None\n"
        "executor = EventsExecutor()\n"
    )
    assert _problems_of(tmp_path, "tried.py", tried) == []
    plain = "from rclpy.experimental.events_executor import EventsExecutor\nEventsExecutor()\n"
    found = _problems_of(tmp_path, "plain.py", plain)
    name = "name:rclpy.experimental.events_executor.EventsExecutor"
    assert f"plain.py:1: {name} does not exist in humble" in found, found
    assert any(f.startswith("plain.py:2: call:") and "humble" in f for f in found), found


def _problems_of(tmp_path, name, text):
    path = tmp_path / name
    path.write_text(text)
    return ros_api.problems([path])


def test_a_call_humble_lacks_fails_the_check(tmp_path):
    """What CI says when someone adds an Iron-and-later call without a feature test."""
    guard = 'if hasattr(self, "add_post_set_parameters_callback"):'
    source = NODE.read_text()
    assert guard in source
    found = _problems_of(tmp_path, "node.py", source.replace(guard, "if True:"))
    assert found == [
        f"node.py:{_line_of(source, 'self.add_post_set_parameters_callback(')}: "
        "add_post_set_parameters_callback() is not in humble's rclpy"
    ]
    found = _problems_of(
        tmp_path,
        "client.py",
        "import rclpy\nfrom rclpy.parameter_client import AsyncParameterClient\n",
    )
    assert found == [
        "client.py:2: name:rclpy.parameter_client.AsyncParameterClient is not in the table; "
        "regenerate it (ros_api.py)"
    ]


def test_launch_arguments_humble_lacks_or_needs_fail_the_check(tmp_path):
    source = LAUNCH.read_text()
    start = source.index("LifecycleNode(")
    line = source[:start].count("\n") + 1
    with_retries = source.replace("LifecycleNode(", "LifecycleNode(respawn_max_retries=3,", 1)
    assert _problems_of(tmp_path, "a.launch.py", with_retries) == [
        f"a.launch.py:{line}: call:launch_ros.actions.LifecycleNode takes no "
        "respawn_max_retries= in humble"
    ]
    # Humble's and Jazzy's LifecycleNode action require name= and namespace=.
    call = source[start : source.index("\n        )", start)]
    assert "namespace=" in call
    without = source.replace(call, call.replace("namespace=", "_unused="), 1)
    found = _problems_of(tmp_path, "b.launch.py", without)
    for dist in ("humble", "jazzy", "rolling"):
        assert (
            f"b.launch.py:{line}: call:launch_ros.actions.LifecycleNode needs namespace= in {dist}"
            in found
        )


def _line_of(source, text):
    return source[: source.index(text)].count("\n") + 1


def test_every_package_xml_dependency_resolves_on_every_distribution():
    table = json.loads(rosdep_keys.TABLE.read_text())
    assert sorted(table["dependencies"]) == rosdep_keys.package_dependencies(), (
        "package.xml changed: regenerate test/packaging/rosdep_keys.json (rosdep_keys.py)"
    )
    assert tuple(table["platforms"]) == tuple(sorted(rosdep_keys.DISTRIBUTIONS))
    unresolved = [
        (dependency, dist)
        for dependency, row in table["dependencies"].items()
        for dist, resolved in row.items()
        if not resolved
    ]
    assert unresolved == []
    assert set(table["dependencies"]["rclpy"]) == set(rosdep_keys.DISTRIBUTIONS)


def test_installed_code_needs_nothing_newer_than_python_3_10(tmp_path):
    """Humble runs Python 3.10: syntax and standard library (vermin reads both)."""
    code = [ROOT / "depthclip_ros", ROOT / "offline_eval", ROOT / "launch"]
    vermin = [str(Path(sys.executable).parent / "vermin"), "-t=3.10-", "--no-tips", "--violations"]
    proc = subprocess.run([*vermin, *map(str, code)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout[-3000:]
    newer = tmp_path / "newer.py"
    newer.write_text("import datetime\nprint(datetime.UTC)\n")  # 3.11
    proc = subprocess.run([*vermin, str(newer)], capture_output=True, text=True)
    assert proc.returncode != 0 and "datetime.UTC" in proc.stdout


class _Rcl:
    def __init__(self, *functions):
        for name in functions:
            setattr(self, name, object())


@pytest.mark.parametrize(
    "exported, expected",
    [
        (("rcl_get_localhost_only",), {"ROS_LOCALHOST_ONLY": "1"}),  # Humble
        (  # Jazzy: both; localhost-only would override the range with two warnings
            ("rcl_get_localhost_only", "rcl_get_automatic_discovery_range"),
            {"ROS_AUTOMATIC_DISCOVERY_RANGE": "LOCALHOST"},
        ),
        (("rcl_get_automatic_discovery_range",), {"ROS_AUTOMATIC_DISCOVERY_RANGE": "LOCALHOST"}),
        (None, {"ROS_AUTOMATIC_DISCOVERY_RANGE": "LOCALHOST", "ROS_LOCALHOST_ONLY": "1"}),
    ],
)
def test_discovery_is_confined_by_the_switch_the_loaded_rcl_reads(monkeypatch, exported, expected):
    def cdll(name):
        if exported is None:
            raise OSError(f"{name}: cannot open shared object file")
        return _Rcl(*exported)

    monkeypatch.setattr(ctypes, "CDLL", cdll)
    env = node_process.local_dds_env(7)
    assert env == {"ROS_DOMAIN_ID": "7", **expected}


def test_the_rcl_of_this_environment_is_asked():
    env = node_process.local_dds_env(7)
    assert env["ROS_AUTOMATIC_DISCOVERY_RANGE"] == "LOCALHOST"  # Kilted's and Jazzy's rcl
    assert "ROS_LOCALHOST_ONLY" not in env


def test_readme_table_names_every_distribution_and_how_it_is_checked():
    readme = (ROOT / "README.md").read_text()
    table = readme[readme.index("| distribution |") :].split("\n\n")[0]
    for name in README_DISTRIBUTIONS:
        assert f"| {name} " in table, name
    assert "Kilted" in table and "December 2026" in table
