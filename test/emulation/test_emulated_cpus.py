"""The torch-free core on CPUs robots carry and this machine is not, under qemu-user
(support/emulated_cpus): an x86 CPU without VNNI (AVX2 only: Intel Core 4th-10th generation,
Atom, AMD Zen 1-3), where int8 kernels saturate, and a Raspberry Pi 5's Cortex-A76 (aarch64).
The graphs are the tiny CLIP's, exported here; each emulated run loads them as a robot does.
Depth is compared, never speed (emulation says nothing of speed)."""

import json
import tempfile
from pathlib import Path

import numpy as np
import pytest
from emulated_cpus import AARCH64_PI5, X86_AVX2
from helpers import built_once, structured_image

from depthclip_ros.config.parameters import DepthClipConfig
from depthclip_ros.config.params_files import preset_configs
from depthclip_ros.export import quantization
from depthclip_ros.export.graph import export
from depthclip_ros.model_loading import load_estimator

RUN = __file__.replace("test_emulated_cpus.py", "emulated_run.py")
SIZE = (120, 160)
EXACT = 1e-5  # metres: the same int8 arithmetic, whatever the kernels
CONFIG = dict(device="cpu", temperature=1.0, input_width=128, input_height=96)


def bright_and_dark_frames():
    """Structured frames, and one half blown out, half black: the normalised image's extremes,
    where u8 x s8 products are largest."""
    frames = [structured_image(*SIZE, seed=s) for s in (0, 1)]
    extreme = structured_image(*SIZE, seed=2)
    extreme[:, : SIZE[1] // 2] = 255
    extreme[SIZE[0] // 2 :, SIZE[1] // 2 :] = 0
    return np.stack([*frames, extreme])


def config_for(graphs, name):
    return DepthClipConfig(**CONFIG, model=str(graphs[name]), cache_dir=graphs["cache"])


@pytest.fixture(scope="module")
def graphs(tiny_checkpoint, tmp_path_factory):
    """fp32, int8 (7-bit weights) and 8-bit int8 graphs of the tiny CLIP, and the frames."""

    def build(folder):
        config = DepthClipConfig(**CONFIG, model=tiny_checkpoint, cache_dir=str(folder / "cache"))
        export(config, folder / "fp32.onnx", None, preset_configs())
        calibration = [structured_image(*SIZE, seed=s) for s in range(8)]
        int8, old = folder / "int8.onnx", folder / "int8_8bit.onnx"  # old: before 7-bit weights
        quantization.export_int8(config, int8, calibration, "test frames", None, preset_configs())
        quantization.export_int8(config, old, calibration, "test frames", None, (), weight_bits=8)
        np.savez(folder / "frames.npz", frames=bright_and_dark_frames())

    folder = built_once(tmp_path_factory, "emulated-cpus", build)
    return {
        "folder": folder,
        "cache": str(folder / "cache"),
        "frames": folder / "frames.npz",
        "fp32": folder / "fp32.onnx",
        "int8": folder / "int8.onnx",
        "int8_8bit": folder / "int8_8bit.onnx",
    }


def run_emulated(cpu, graphs, runs):
    """The runs on `cpu`: {name: depth}, with the warnings, machine and CPU the core saw."""
    reason = cpu.unavailable()
    if reason:
        pytest.skip(f"{cpu.name} not emulated here: {reason}")
    folder = Path(tempfile.mkdtemp(dir=graphs["folder"]))  # this run's own, beside the graphs
    out = folder / f"{cpu.qemu}.npz"
    spec = folder / f"{cpu.qemu}.json"
    spec.write_text(
        json.dumps(
            {
                "frames": str(graphs["frames"]),
                "config": {**CONFIG, "cache_dir": graphs["cache"]},
                "runs": [{**run, "model": str(graphs[run["model"]])} for run in runs],
                "out": str(out),
            }
        )
    )
    proc = cpu.run([RUN, spec])
    assert proc.returncode == 0, proc.stderr[-3000:]
    with np.load(out) as data:
        result = {key: data[key] for key in data.files}
    result["warnings"] = json.loads(str(result["warnings"]))
    return result


def host_depth(graphs, name):
    """The graph's depth of the frames on this machine's CPU, through the core."""
    model = load_estimator(config_for(graphs, name))
    return np.stack([model.predict(f).depth[0] for f in np.load(graphs["frames"])["frames"]])


def test_int8_is_exact_on_x86_without_vnni(graphs):
    result = run_emulated(
        X86_AVX2,
        graphs,
        [
            {"name": "int8 default", "model": "int8", "session": "default"},
            {"name": "int8 exact", "model": "int8", "session": "exact"},
            {"name": "int8 core", "model": "int8", "backend": "onnxruntime"},
            {"name": "8-bit default", "model": "int8_8bit", "session": "default"},
            {"name": "8-bit exact", "model": "int8_8bit", "session": "exact"},
            {"name": "8-bit core", "model": "int8_8bit", "backend": "onnxruntime"},
            {"name": "8-bit openvino", "model": "int8_8bit", "backend": "openvino"},
        ],
    )
    assert str(result["machine"]) == "x86_64"
    cpu = str(result["cpu"])
    assert "i7-4770" in cpu and "avx2" in cpu and "vnni" not in cpu
    # 7-bit weights: ONNX Runtime's default kernels give the exact kernels' depth.
    np.testing.assert_allclose(result["int8 default"], result["int8 exact"], atol=EXACT)
    np.testing.assert_allclose(result["int8 core"], result["int8 exact"], atol=EXACT)
    assert result["warnings"]["int8 core"] == []
    # 8-bit weights saturate here (else this test could not tell the two apart) ...
    assert np.abs(result["8-bit default"] - result["8-bit exact"]).max() > 1e-4
    # ... and the core gives such a graph ONNX Runtime's exact kernels, saying so once.
    np.testing.assert_allclose(result["8-bit core"], result["8-bit exact"], atol=EXACT)
    assert "exact U8U8" in str(result["8-bit core.runtime"])
    (line,) = result["warnings"]["8-bit core"]
    assert "8-bit int8 weights" in line and "i7-4770" in line and "no VNNI" in line
    (line,) = result["warnings"]["8-bit openvino"]
    assert "saturating 16-bit sums" in line and "backend onnxruntime" in line
    # The same int8 depth on this machine's CPU, whatever its kernels.
    np.testing.assert_allclose(result["int8 exact"], host_depth(graphs, "int8"), atol=EXACT)


def perf_maps() -> set:
    return set(Path("/tmp").glob("perf-*.map"))


def test_aarch64_runs_the_graphs_as_x86_does(graphs):
    """... and leaves nothing in /tmp: oneDNN (in OpenVINO, and torch's) writes a
    /tmp/perf-<pid>.map for Linux perf by default on AArch64, never removed (x86's default is
    VTune's)."""
    before = perf_maps()
    result = run_emulated(
        AARCH64_PI5,
        graphs,
        [
            {"name": "fp32", "model": "fp32", "backend": "onnxruntime"},
            {"name": "int8", "model": "int8", "backend": "onnxruntime"},
            {
                "name": "int8, two streams",
                "model": "int8",
                "backend": "onnxruntime",
                "changes": {"inference_streams": 2},
            },
            {"name": "fp32 openvino", "model": "fp32", "backend": "openvino"},
            {"name": "int8 openvino", "model": "int8", "backend": "openvino"},
        ],
    )
    assert str(result["machine"]) == "aarch64"
    assert "Cortex-A76" in str(result["cpu"]) and "asimddp" in str(result["cpu"])
    assert perf_maps() - before == set()
    for name in ("fp32", "int8"):
        np.testing.assert_allclose(result[name], host_depth(graphs, name), atol=EXACT)
        assert result["warnings"][name] == []
        assert "Cortex-A76" in str(result[f"{name}.figure"])
    # Arm's int8 runtime with two forwards side by side (the frames begun together): the same.
    np.testing.assert_allclose(result["int8, two streams"], result["int8"], atol=EXACT)
    assert result["warnings"]["int8, two streams"] == []
    # OpenVINO: fp32 near ONNX Runtime's; int8 simulated in float, with one warning naming the
    # int8 runtime of Arm, and its own depth figure (what it does there, measured).
    np.testing.assert_allclose(result["fp32 openvino"], result["fp32"], atol=1e-4)
    (line,) = result["warnings"]["int8 openvino"]
    assert "floating point" in line and "backend onnxruntime is the int8 runtime on Arm" in line
    figure = str(result["int8 openvino.figure"])
    assert "openvino" in figure and "aarch64" in figure, figure
