"""The documentation kept equal to the code: every parameter in docs/parameters.md with the
schema's default, range and run-time rule; the README short."""

import re
from pathlib import Path

from depthclip_ros.config.parameters import parameter_fields
from depthclip_ros.config.schema import constraints_text

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


def test_the_nav2_example_marks_with_one_cloud_and_clears_with_the_other():
    """config/nav2_depthclip.yaml: the node's section is valid for the node, and the costmap has
    two observation sources with the keys Nav2's obstacle and voxel layers read: `points`
    marking only, `points/clearing` clearing only."""
    import yaml

    from depthclip_ros.config.parameters import OutputSettings
    from depthclip_ros.config.params_files import read_params_file
    from depthclip_ros.messages import topics

    path = ROOT / "config" / "nav2_depthclip.yaml"
    settings = OutputSettings.from_params(read_params_file(path))  # the schema's checks
    assert settings.cloud_max_std > 0 and settings.cloud_max_range > settings.cloud_min_range
    layer = yaml.safe_load(path.read_text())["local_costmap"]["local_costmap"]["ros__parameters"]
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
    # Clearing reaches as far as the farthest bin, and rays to the floor count.
    assert clearing["raytrace_max_range"] >= settings.cloud_max_range
    assert clearing["min_obstacle_height"] < 0.0
    nav2_doc = (ROOT / "docs" / "nav2.md").read_text()
    assert "config/nav2_depthclip.yaml" in nav2_doc and "points/clearing" in nav2_doc
