import pytest
import yaml

from depthclip_ros.config import (ConfigError, DepthClipConfig, load_config, preset_names,
                                  read_params_file, default_params_file, node_key_matches)

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
    ("precision", dict(precision="bf16")),
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


def test_defaults_are_the_paper():
    cfg = DepthClipConfig()
    cfg.validate()
    assert cfg.prompts[0] == "This object is giant"
    assert cfg.depth_bins == (1.0, 1.5, 2.0, 2.25, 2.5, 2.75, 3.0)
    assert (cfg.temperature, cfg.flip, cfg.preprocessing) == (0.1, True, "crop")


def test_shipped_yaml_validates():
    params = read_params_file(default_params_file())
    cfg = DepthClipConfig.from_params(params)
    assert cfg.depth_tokens == DepthClipConfig().depth_tokens
    assert cfg.depth_bins == DepthClipConfig().depth_bins
    assert params["cloud_stride"] == 8  # node keys live in the same file


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


KEYS = ["depthclip", "/depthclip", "/**/depthclip", "/front/depthclip", "front/depthclip", "/*/depthclip",
        "/**", "/front/*", "/**/*", "/*", "/front/**", "/**/front/depthclip", "/a/**/depthclip", "other"]


@pytest.mark.parametrize("namespace", ["/", "/front", "/a/b"])
def test_node_keys_match_as_rcl_matches_them(namespace, tmp_path):
    """Each key form against what rclpy itself gives a node in that namespace."""
    import rclpy
    from rclpy.node import Node
    fqn = namespace.rstrip("/") + "/depthclip"
    for i, key in enumerate(KEYS):
        path = tmp_path / f"k{i}.yaml"
        path.write_text(f'"{key}":\n  ros__parameters:\n    x: 5\n')
        with rclpy.init(args=["--ros-args", "-r", f"__ns:={namespace}", "--params-file", str(path)]):
            node = Node("depthclip")
            applied = node.declare_parameter("x", 0).value == 5
            node.destroy_node()
        assert node_key_matches(key, fqn) == applied, (key, fqn)


def test_params_file_sections_apply_in_file_order_and_nest(tmp_path):
    path = tmp_path / "p.yaml"
    path.write_text("/**:\n  ros__parameters: {temperature: 0.5, flip: true}\n"
                    "/front/depthclip:\n  ros__parameters: {temperature: 0.2}\n"
                    "rear:\n  depthclip:\n    ros__parameters: {temperature: 0.3}\n"
                    "/**/depthclip:\n  ros__parameters:\n"
                    "    qos_overrides:\n      /image:\n        subscription: {reliability: reliable}\n")
    front = read_params_file(path, "/front/depthclip")
    assert (front["temperature"], front["flip"]) == (0.2, True)
    assert front["qos_overrides./image.subscription.reliability"] == "reliable"
    assert read_params_file(path, "/rear/depthclip")["temperature"] == 0.3
    assert read_params_file(path)["temperature"] == 0.5


def test_shipped_files_use_the_any_namespace_key():
    from depthclip_ros.config import config_dir
    for path in [default_params_file(), *sorted((config_dir() / "presets").glob("*.yaml"))]:
        assert list(yaml.safe_load(path.read_text())) == ["/**/depthclip"], path
        assert read_params_file(path, "/robot/front/depthclip") == read_params_file(path)
