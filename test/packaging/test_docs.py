"""The documentation kept equal to the code: every parameter in docs/parameters.md with the
schema's default, range and run-time rule; the README short."""

import math
import re
from pathlib import Path

import pytest

from depthclip_ros.config.schema import constraints_text
from depthclip_ros.config.settings import parameter_fields

ROOT = Path(__file__).resolve().parents[2]


def doc_value(value) -> str:
    """A default as the docs write it (YAML's spelling)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, tuple):
        return "[" + ", ".join(doc_value(v) for v in value) + "]"
    if value == "":
        return '""'
    return str(value)


def schema_row(field) -> tuple:
    return (
        doc_value(field.default),
        constraints_text(field) or "-",
        "read-only" if field.metadata["read_only"] else "yes",
    )


def documented_rows() -> dict:
    """{name: (default, range, run time)} of the table in docs/parameters.md."""
    rows = {}
    for line in (ROOT / "docs" / "parameters.md").read_text().splitlines():
        m = re.match(r"^\| `([a-z_]+)` \| (.*?) \| (.*?) \| (.*?) \| .* \|$", line)
        if m:
            rows[m.group(1)] = (m.group(2).strip("`"), m.group(3), m.group(4))
    return rows


def test_every_parameter_is_documented_as_the_schema_has_it():
    documented = documented_rows()
    schema = {field.name: schema_row(field) for _, field in parameter_fields()}
    assert set(documented) == set(schema)  # none missing, none that does not exist
    for name, row in schema.items():
        assert documented[name] == row, name


def test_the_readme_is_short_and_links_every_doc():
    readme = (ROOT / "README.md").read_text()
    assert len(readme.splitlines()) <= 250
    for doc in sorted((ROOT / "docs").glob("*.md")):
        assert f"(docs/{doc.name})" in readme, doc.name


# Pages for those who build the package, not for its users: how it works inside, the tests.
CONTRIBUTOR_PAGES = ("architecture.md", "testing.md")
# A record's marks: a date, a commit hash, a CI run, a "(before)" row, a trial.
RECORD_MARKS = re.compile(
    r"\b20\d\d-[01]\d-[0-3]\d\b|\b(?=[0-9a-f]*\d)(?=[0-9a-f]*[a-f])[0-9a-f]{7,40}\b"
    r"|\ba CI run\b|\bCI runs? \d|\(before\)|\b[Tt]ried on\b"
)


def user_pages() -> dict:
    """{name: text} of the README and every page it links for users."""
    readme = (ROOT / "README.md").read_text()
    pages = {"README.md": readme}
    for name in re.findall(r"\(docs/([a-z_0-9]+\.md)\)", readme):
        if name not in CONTRIBUTOR_PAGES:
            pages[name] = (ROOT / "docs" / name).read_text()
    return pages


def test_the_user_pages_are_short_and_hold_no_record():
    """What a user reads to set up a robot: each page at most 300 lines, all at most 2,000, and
    no dated run, commit, CI run or trial (those are in bench/results/ and docs/testing.md)."""
    pages = user_pages()
    assert len(pages) >= 14  # the README finds them all
    lines = {name: len(text.splitlines()) for name, text in pages.items()}
    assert max(lines.values()) <= 300, lines
    assert sum(lines.values()) <= 2000, lines
    for name, text in pages.items():
        assert not RECORD_MARKS.search(text), (name, RECORD_MARKS.search(text).group())


def test_a_record_mark_is_seen():
    """The check above finds what it looks for."""
    for text in (
        "run on 2026-11-28",
        "at commit 63e199d",
        "once in a CI run",
        "| 8 bits (before) |",
    ):
        assert RECORD_MARKS.search(text), text
    for text in ("the 544x416 input", "deadline", "a 1e-5 m difference", "what CI runs"):
        assert not RECORD_MARKS.search(text), text


def test_the_nav2_example_marks_with_one_cloud_and_clears_with_the_other():
    """config/nav2_depthclip.yaml: the node's section is valid for the node, and the costmap has
    two observation sources with the keys Nav2's obstacle and voxel layers read: `points`
    marking only, `points/clearing` clearing only."""
    import yaml

    from depthclip_ros.config.params_files import read_params_file
    from depthclip_ros.config.settings import OutputSettings
    from depthclip_ros.messages import topics

    path = ROOT / "config" / "nav2_depthclip.yaml"
    settings = OutputSettings.from_params(read_params_file(path))  # the schema's checks
    assert settings.cloud_max_std > 0 and settings.cloud_max_range > settings.cloud_min_range
    layer = yaml.safe_load(path.read_text())["local_costmap"]["local_costmap"]["ros__parameters"]
    # Nav2's Costmap2DROS fills in plugin types only for its default list; any other list
    # needs `<name>.plugin` for each, or the costmap logs "'plugin' param not defined" and exits.
    assert layer["plugins"] != ["static_layer", "obstacle_layer", "inflation_layer"]
    for plugin in layer["plugins"]:
        assert layer[plugin]["plugin"].startswith("nav2_costmap_2d::"), plugin
    name = layer["plugins"][0]
    assert layer[name]["plugin"] in (
        "nav2_costmap_2d::VoxelLayer",
        "nav2_costmap_2d::ObstacleLayer",
    )
    # Nav2 reads observation_sources as one string of names separated by spaces.
    sources = [layer[name][s] for s in layer[name]["observation_sources"].split()]
    roles = {}
    for source in sources:
        assert source["data_type"] == "PointCloud2"
        for key in ("marking", "clearing", "inf_is_valid"):
            assert isinstance(source[key], bool), key
        for key in (
            "min_obstacle_height",
            "max_obstacle_height",
            "obstacle_min_range",
            "obstacle_max_range",
            "raytrace_min_range",
            "raytrace_max_range",
            "expected_update_rate",
            "observation_persistence",
        ):
            assert isinstance(source[key], float), key
        roles[(source["marking"], source["clearing"])] = source
    assert set(roles) == {(True, False), (False, True)}  # one marks, the other clears
    marking, clearing = roles[(True, False)], roles[(False, True)]
    assert marking["topic"].endswith("/" + topics.POINTS)
    assert clearing["topic"] == marking["topic"][: -len(topics.POINTS)] + topics.CLEARING_POINTS
    # Nav2 marks what the node sends: its ranges lie within the node's cloud.
    assert settings.cloud_min_range <= marking["obstacle_min_range"]
    assert marking["obstacle_max_range"] <= settings.cloud_max_range
    # Nav2's ranges are from the sensor: both clouds end at cloud_max_range along the optical
    # axis (whatever metric_scale makes of the bins), at a VGA image's corner (fx = fy = 525,
    # the demo camera) 1.26 x farther from the sensor; clearing reaches it.
    corner = math.hypot(1.0, 320 / 525, 240 / 525)
    assert clearing["raytrace_max_range"] >= settings.cloud_max_range * corner
    assert clearing["min_obstacle_height"] < 0.0
    nav2_doc = (ROOT / "docs" / "nav2.md").read_text()
    assert "config/nav2_depthclip.yaml" in nav2_doc and "points/clearing" in nav2_doc


CLOUD_SETTINGS = (
    "cloud_stride",
    "cloud_max_std",
    "cloud_min_range",
    "cloud_max_range",
    "clearing_quantile",
)


def test_the_shipped_files_agree_on_one_robots_names_and_clouds():
    """config/mobile_robot.yaml (the page's robot), config/nav2_depthclip.yaml (its costmap)
    and config/jetson.yaml: each valid for the node; the robot's clouds as the Nav2 file's node
    section has them, on the topics its costmap reads (the page's namespace), the README's quick
    start and the page in that namespace too; the robot's metric_scale through tf2 (no
    static_transforms), its clouds withheld until a fit."""
    import yaml

    from depthclip_ros.config.params_files import read_params_file
    from depthclip_ros.config.settings import OutputSettings

    config = ROOT / "config"
    robot = read_params_file(config / "mobile_robot.yaml")
    nav2 = read_params_file(config / "nav2_depthclip.yaml")
    for params in (robot, nav2, read_params_file(config / "jetson.yaml")):
        OutputSettings.from_params(params)  # the schema's checks
    assert {k: robot[k] for k in CLOUD_SETTINGS} == {k: nav2[k] for k in CLOUD_SETTINGS}
    assert robot["metric_scale"] == "scale" and robot["metric_scale_sources"] == ["scan"]
    assert robot["static_transforms"] == [] and robot["metric_scale_require"] is True
    costmap = yaml.safe_load((config / "nav2_depthclip.yaml").read_text())["local_costmap"]
    layer = costmap["local_costmap"]["ros__parameters"]["voxel_layer"]
    namespace = "/camera/color"
    assert [layer[s]["topic"] for s in layer["observation_sources"].split()] == [
        f"{namespace}/points",
        f"{namespace}/points/clearing",
    ]
    page = (ROOT / "docs" / "mobile_robot.md").read_text()
    readme = (ROOT / "README.md").read_text()
    for text in (page, readme, (ROOT / "docs" / "nav2.md").read_text()):
        assert f"namespace:={namespace}" in text
    assert "config/mobile_robot.yaml" in page and "(docs/mobile_robot.md)" in readme[:2000]


def test_the_mobile_robot_pages_costmap_snippet_is_the_nav2_files():
    """The two observation sources on docs/mobile_robot.md equal config/nav2_depthclip.yaml's,
    and the page's layer lists them."""
    import yaml

    page = (ROOT / "docs" / "mobile_robot.md").read_text()
    (snippet,) = [b for b in re.findall(r"```yaml\n(.*?)```", page, re.S) if "voxel_layer" in b]
    shown = yaml.safe_load(snippet)["voxel_layer"]
    nav2 = yaml.safe_load((ROOT / "config" / "nav2_depthclip.yaml").read_text())
    layer = nav2["local_costmap"]["local_costmap"]["ros__parameters"]["voxel_layer"]
    names = layer["observation_sources"].split()
    assert shown["observation_sources"].split()[-2:] == names
    assert {name: shown[name] for name in names} == {name: layer[name] for name in names}


def test_the_mobile_robot_pages_cloud_sizes_are_the_nodes():
    """Each row of docs/mobile_robot.md's stride table: the points and kilobytes the node's
    cloud has (20 bytes a point), under the 64 KB of one datagram; the shipped stride's row."""
    from depthclip_ros.config.params_files import read_params_file
    from depthclip_ros.messages import point_cloud

    page = (ROOT / "docs" / "mobile_robot.md").read_text()
    rows = re.findall(r"^\| (\d+)x(\d+) \| (\d+) \| (\d+) x (\d+) \| (\d+) KB \|$", page, re.M)
    assert len(rows) == 3
    for width, height, stride, cols, lines, kilobytes in rows:
        sampled = point_cloud.sampled_pixels(int(height), int(width), int(stride))
        assert (len(sampled[1]), len(sampled[0])) == (int(cols), int(lines))
        size = len(sampled[0]) * len(sampled[1]) * 20
        assert round(size / 1000) == int(kilobytes) and size < 64_000
    stride = read_params_file(ROOT / "config" / "mobile_robot.yaml")["cloud_stride"]
    assert ("640", "480", str(stride)) == rows[0][:3]


VENDORED_LAUNCH = ROOT.parent / "shared" / "vendor" / "ros_launch"
# Run in a process of its own with one branch's launch and launch_ros first on the path: loads
# the file as `ros2 launch` does (its generate_launch_description, every action constructed by
# the real launch_ros) and prints each node's package, executable and resolved remaps.
PIPELINE_LOADER = """
import importlib.util, json, sys
from launch import LaunchContext
from launch.actions import GroupAction
from launch.utilities import perform_substitutions
from launch_ros.actions import Node
spec = importlib.util.spec_from_file_location("pipeline", sys.argv[1])
module = importlib.util.module_from_spec(spec)
spec.loader.exec_module(module)
context = LaunchContext()
nodes = []
for entity in module.generate_launch_description().entities:
    for action in entity.get_sub_entities() if isinstance(entity, GroupAction) else []:
        if not isinstance(action, Node):  # the group's scope (push and pop of configurations)
            continue
        remaps = [
            [perform_substitutions(context, part) for part in rule]
            for rule in action._Node__remappings
        ]
        nodes.append([action.node_package, action.node_executable, dict(remaps)])
print(json.dumps(nodes))
"""


@pytest.mark.parametrize("branch", ["humble", "jazzy", "rolling"])
def test_the_nav2_pipeline_launch_file_loads_with_each_launch_ros(branch, tmp_path):
    """launch/nav2_depth_pipeline.launch.py: the depthclip node on the pipeline's topics of
    nav2_depth_estimation_ai 63e199d, a raw image in, and resize fed what crop_decimate sends."""
    import json
    import os
    import subprocess
    import sys

    if not VENDORED_LAUNCH.is_dir():
        pytest.skip(f"no vendored launch sources at {VENDORED_LAUNCH} (a user's clone)")
    prefix = tmp_path / "install"  # what ament_index finds for depthclip_ros
    (prefix / "share/ament_index/resource_index/packages").mkdir(parents=True)
    (prefix / "share/ament_index/resource_index/packages/depthclip_ros").touch()
    (prefix / "share/depthclip_ros").mkdir()
    paths = [VENDORED_LAUNCH / branch, VENDORED_LAUNCH / "common", ROOT]
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(map(str, paths)),
        "AMENT_PREFIX_PATH": str(prefix),
    }
    path = ROOT / "launch" / "nav2_depth_pipeline.launch.py"
    proc = subprocess.run(
        [sys.executable, "-c", PIPELINE_LOADER, str(path)],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    nodes = {
        executable: (package, remaps) for package, executable, remaps in json.loads(proc.stdout)
    }
    assert set(nodes) == {"crop_decimate_node", "resize_node", "depthclip_node"}
    crop, resize = nodes["crop_decimate_node"][1], nodes["resize_node"][1]
    assert resize["/image/image_raw"] == crop["/out/image_raw"]  # resize reads crop's output
    assert resize["/image/camera_info"] == crop["/out/camera_info"]
    package, depthclip = nodes["depthclip_node"]
    assert package == "depthclip_ros"
    assert depthclip == {
        "image": "/resize/image_raw",  # raw, as the pipeline's estimator takes it at 63e199d
        "camera_info": "/resize/camera_info",
        "depth/image": "depth_image",
        "points": "/pipeline/points",
        "points/clearing": "/pipeline/points/clearing",
    }
