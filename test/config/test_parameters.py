import pytest
import yaml

from depthclip_ros.config.parameters import DepthClipConfig
from depthclip_ros.config.params_files import (
    default_params_file,
    load_config,
    node_key_matches,
    preset_names,
    read_params_file,
)
from depthclip_ros.config.settings import Parameters, parameter_defaults, parameter_fields
from depthclip_ros.errors import ConfigError

BAD_FIELDS = [
    ("depth_tokens", dict(depth_tokens=("giant", " ", "close", "far", "a", "b", "c"))),
    ("depth_tokens", dict(depth_tokens=("a", "b", "c"))),  # len(tokens) != len(bins)
    ("depth_bins", dict(depth_tokens=("near",), depth_bins=(1.0,))),
    ("depth_bins", dict(depth_bins=(1.0, 1.5, 1.5, 2.25, 2.5, 2.75, 3.0))),
    ("depth_bins", dict(depth_bins=(1.0, 1.5, 1.2, 2.25, 2.5, 2.75, 3.0))),
    ("depth_bins", dict(depth_bins=(-1.0, 1.5, 2.0, 2.25, 2.5, 2.75, 3.0))),
    ("depth_bins", dict(depth_bins=(0.0, 1.5, 2.0, 2.25, 2.5, 2.75, 3.0))),
    ("depth_bins", dict(depth_bins=(1.0, 1.5, float("nan"), 2.25, 2.5, 2.75, 3.0))),
    ("temperature", dict(temperature=0.0)),
    ("temperature", dict(temperature=-0.1)),
    ("input_width", dict(input_width=500)),
    ("input_height", dict(input_height=0)),
    ("input_height", dict(input_height=-32)),
    ("preprocessing", dict(preprocessing="stretch")),
    ("device", dict(device="tpu")),
    ("device", dict(device="cuda:x")),
    ("precision", dict(precision="int4")),
    ("normalization", dict(normalization="none")),
    ("prompt_template", dict(prompt_template="This object is {token}")),
    ("prompt_template", dict(prompt_template="This {object} is close")),
    ("prompt_template", dict(prompt_template="This {object} is {token} {extra}")),
    ("prompt_template", dict(prompt_template="This {object is {token}")),
    ("flip", dict(flip="yes")),
    ("model", dict(model="")),
]


@pytest.mark.parametrize("field,changes", BAD_FIELDS)
def test_each_violation_names_the_field(field, changes):
    with pytest.raises(ConfigError) as err:
        DepthClipConfig(**changes).validate()
    assert err.value.field == field
    assert f"'{field}'" in str(err.value)


def test_defaults_are_the_shipped_yaml_and_the_paper_protocol_is_a_preset():
    shipped = read_params_file(default_params_file())
    assert shipped == parameter_defaults()  # every parameter, same values, nothing else
    assert Parameters.from_params(shipped) == Parameters.from_params({})
    cfg = DepthClipConfig()
    assert cfg.prompts[0] == "This object is giant"
    assert cfg.depth_bins == (1.0, 1.5, 2.0, 2.25, 2.5, 2.75, 3.0)
    assert (cfg.temperature, cfg.flip, cfg.preprocessing) == (0.1, False, "resize")
    paper = load_config(presets=["paper"])
    assert (paper.flip, paper.preprocessing) == (True, "crop")


LIMITED = [
    (f.name, f.metadata)
    for _, f in parameter_fields()
    if f.metadata["minimum"] is not None or f.metadata["maximum"] is not None
]


# What a parameter's whole range needs beside it (streams: an exported graph's runtime).
RANGE_NEEDS = {"inference_streams": {"model": "depthclip_rn50_int8.onnx"}}


@pytest.mark.parametrize("name,meta", LIMITED, ids=[n for n, _ in LIMITED])
def test_limits_accept_their_bounds_and_reject_beyond(name, meta):
    """Bounds are inside, or, for an exclusive range, the nearest values inside them."""
    needs = RANGE_NEEDS.get(name, {})
    for bound, outside in ((meta["minimum"], -1), (meta["maximum"], 1)):
        if bound is None:
            continue
        step = meta["multiple_of"] or (1 if isinstance(bound, int) else 1e-3)
        inside = bound - outside * step if meta["exclusive"] else bound
        assert Parameters.from_params({**needs, name: inside})
        refused = [bound + outside * step] + ([bound] if meta["exclusive"] else [])
        for value in refused:
            with pytest.raises(ConfigError) as err:
                Parameters.from_params({**needs, name: value})
            assert err.value.field == name and "from" in str(err.value)


def test_types_are_checked_and_integers_pass_as_numbers():
    assert Parameters.from_params({"temperature": 1}).config.temperature == 1.0
    assert DepthClipConfig.from_params({"depth_bins": [1, 2, 3, 4, 5, 6, 7]}).depth_bins[-1] == 7.0
    for name, value, words in (
        ("cloud_stride", 2.0, "must be an integer"),
        ("temperature", "hot", "must be a finite number"),
        ("use_compressed", "yes", "must be true or false"),
        ("depth_tokens", "giant", "must be a list"),
        ("object_word", 3, "must be a string"),
    ):
        with pytest.raises(ConfigError, match=words) as err:
            Parameters.from_params({name: value})
        assert err.value.field == name


def test_the_issue_example_temperature_150_is_rejected_everywhere():
    with pytest.raises(ConfigError, match="'temperature' = 150.0: must be from 0.0001 to 100.0"):
        load_config(overrides={"temperature": 150})


def test_every_preset_validates_and_changes_what_it_names():
    names = preset_names()
    assert {"paper", "bins_class_dependent_3", "tokens_prompt_1"} <= set(names)
    base = load_config()
    for name in names:
        cfg = load_config(presets=[name])
        assert isinstance(cfg, DepthClipConfig)
    assert load_config(presets=["bins_class_dependent_4"]).depth_bins[0] == 2.0
    assert load_config(presets=["tokens_prompt_1"]).depth_tokens[2] == "middle"
    paper = load_config(presets=["paper"])
    assert (paper.flip, paper.preprocessing) == (True, "crop")
    assert base.depth_bins == paper.depth_bins


def test_unknown_preset_and_bad_file(tmp_path):
    with pytest.raises(ConfigError, match="unknown preset"):
        load_config(presets=["nope"])
    bad = tmp_path / "p.yaml"
    bad.write_text("other_node:\n  ros__parameters: {a: 1}\n")
    with pytest.raises(ConfigError, match="no section for node /depthclip"):
        read_params_file(bad)
    bad.write_text("depthclip: [1, 2\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        read_params_file(bad)
    with pytest.raises(ConfigError, match="cannot read"):
        read_params_file(tmp_path / "missing.yaml")


def test_overrides_are_validated():
    with pytest.raises(ConfigError, match="temperature"):
        load_config(overrides={"temperature": 0})
    assert load_config(overrides={"temperature": 0.5}).temperature == 0.5


KEYS = [
    "depthclip",
    "/depthclip",
    "/**/depthclip",
    "/front/depthclip",
    "front/depthclip",
    "/*/depthclip",
    "/**",
    "/front/*",
    "/**/*",
    "/*",
    "/front/**",
    "/**/front/depthclip",
    "/a/**/depthclip",
    "other",
]


@pytest.mark.ros
@pytest.mark.parametrize("namespace", ["/", "/front", "/a/b"])
def test_node_keys_match_as_rcl_matches_them(namespace, tmp_path):
    """Each key form against what rclpy itself gives a node in that namespace: file i sets
    parameter x<i> under key i, all files passed to one node."""
    from helpers import rclpy_context
    from rclpy.node import Node

    fqn = namespace.rstrip("/") + "/depthclip"
    args = ["--ros-args", "-r", f"__ns:={namespace}"]
    for i, key in enumerate(KEYS):
        path = tmp_path / f"k{i}.yaml"
        path.write_text(f'"{key}":\n  ros__parameters:\n    x{i}: 5\n')
        args += ["--params-file", str(path)]
    with rclpy_context(args):
        node = Node("depthclip")
        applied = [node.declare_parameter(f"x{i}", 0).value == 5 for i in range(len(KEYS))]
        node.destroy_node()
    assert [node_key_matches(key, fqn) for key in KEYS] == applied, list(zip(KEYS, applied))


def test_params_file_sections_apply_in_file_order_and_nest(tmp_path):
    path = tmp_path / "p.yaml"
    path.write_text(
        "/**:\n  ros__parameters: {temperature: 0.5, flip: true}\n"
        "/front/depthclip:\n  ros__parameters: {temperature: 0.2}\n"
        "rear:\n  depthclip:\n    ros__parameters: {temperature: 0.3}\n"
        "/**/depthclip:\n  ros__parameters:\n"
        "    qos_overrides:\n      /image:\n        subscription: {reliability: reliable}\n"
    )
    front = read_params_file(path, "/front/depthclip")
    assert (front["temperature"], front["flip"]) == (0.2, True)
    assert front["qos_overrides./image.subscription.reliability"] == "reliable"
    assert read_params_file(path, "/rear/depthclip")["temperature"] == 0.3
    assert read_params_file(path)["temperature"] == 0.5


def test_shipped_files_use_the_any_namespace_key():
    from depthclip_ros.config.params_files import config_dir

    for path in [default_params_file(), *sorted((config_dir() / "presets").glob("*.yaml"))]:
        assert list(yaml.safe_load(path.read_text())) == ["/**/depthclip"], path
        assert read_params_file(path, "/robot/front/depthclip") == read_params_file(path)
