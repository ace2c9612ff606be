"""Every distribution and architecture robots run gets a wheel of each pinned runtime of the
torch-free install (requirements-onnx.txt, its environment markers evaluated there), by the
wheel tags PyPI serves (runtime_wheels.json: checked in, as the rosdep keys are)."""

import json
import re
from pathlib import Path

import pytest
from packaging.requirements import Requirement

ROOT = Path(__file__).resolve().parents[2]
WHEELS = json.loads((Path(__file__).with_name("runtime_wheels.json")).read_text())
RUNTIMES = ("onnxruntime", "onnx", "openvino")
# (name, Python, glibc, machines): the distributions' Ubuntu (docs/distributions.md).
TARGETS = [
    ("Humble, Ubuntu 22.04 (and JetPack 6)", "3.10", (2, 35), ("x86_64", "aarch64")),
    ("Jazzy and Kilted, Ubuntu 24.04", "3.12", (2, 39), ("x86_64", "aarch64")),
    ("the pip set-up here, Debian 12", "3.11", (2, 36), ("x86_64",)),
]


def pinned_runtimes() -> list:
    lines = (ROOT / "requirements-onnx.txt").read_text().splitlines()
    requirements = [Requirement(line) for line in lines if line and not line.startswith("#")]
    return [r for r in requirements if r.name in RUNTIMES]


def glibc_of(wheel: str) -> tuple:
    """The oldest glibc a manylinux wheel runs on (its highest manylinux tag's is what pip
    needs no more than: a wheel tagged 2_27 and 2_28 runs on 2.27)."""
    versions = [(int(a), int(b)) for a, b in re.findall(r"manylinux_(\d+)_(\d+)", wheel)]
    versions += [(2, 17)] if "manylinux2014" in wheel else []
    return min(versions)


@pytest.mark.parametrize("target", TARGETS, ids=[t[0] for t in TARGETS])
def test_each_distribution_gets_a_wheel_of_every_runtime(target):
    name, python, glibc, machines = target
    for machine in machines:
        env = {"python_version": python, "platform_machine": machine, "sys_platform": "linux"}
        chosen = [r for r in pinned_runtimes() if r.marker is None or r.marker.evaluate(env)]
        assert sorted(r.name for r in chosen) == sorted(RUNTIMES), (name, machine)
        for requirement in chosen:
            pin = f"{requirement.name}{requirement.specifier}"
            key = f"cp{python.replace('.', '')}-{machine}"
            assert pin in WHEELS, f"{pin}: not in runtime_wheels.json (look it up on PyPI)"
            wheel = WHEELS[pin].get(key)
            assert wheel, f"{name} {machine}: PyPI has no {pin} wheel for {key}"
            assert glibc_of(wheel) <= glibc, f"{name} {machine}: {wheel} needs a newer glibc"


def test_the_table_knows_what_pypi_lacks():
    """The facts the markers stand on: no cp310 onnxruntime 1.32; OpenVINO's aarch64 wheels
    need glibc 2.35, which JetPack 5 (Ubuntu 20.04, glibc 2.31) lacks."""
    assert WHEELS["onnxruntime==1.32.0"]["cp310-x86_64"] is None
    arm = [w for k, w in WHEELS["openvino==2026.4.1"].items() if k.endswith("aarch64")]
    assert arm and all(glibc_of(w) == (2, 35) for w in arm)
