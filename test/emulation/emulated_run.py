"""Runs inside an emulated CPU (test_emulated_cpus starts it under qemu-user): the torch-free
core on exported graphs, as a robot with that CPU runs them, plus ONNX Runtime's own session on
the same graph with its default or its exact int8 kernels.

  python emulated_run.py SPEC.json

SPEC: {"frames": NPZ (key frames: (N, H, W, 3) uint8), "config": DepthClipConfig fields,
"runs": [{"name", "model", "backend": onnxruntime|openvino (optional "changes": config fields),
or "session": "default"|"exact"}],
"out": NPZ}. OUT: each run's depth (N, H, W), the warnings the core logged by run, the machine
and the CPU the core sees.
"""

import json
import logging
import platform
import sys

import numpy as np

from depthclip_ros.config.parameters import DepthClipConfig
from depthclip_ros.estimator.cpu_features import cpu_description
from depthclip_ros.model_loading import load_estimator


class Recorder(logging.Handler):
    def __init__(self):
        super().__init__(logging.WARNING)
        self.lines = []

    def emit(self, record):
        self.lines.append(record.getMessage())


def session_depth(model, frames, head, exact):
    """ONNX Runtime's own session on the graph: default kernels, or its exact U8U8 ones."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 3
    if exact:
        options.add_session_config_entry("session.x64quantprecision", "1")
    session = ort.InferenceSession(model, options, providers=["CPUExecutionProvider"])
    feeds = {
        "text_features": head.text,
        "bins": head.bins,
        "temperature": np.asarray(head.config.temperature, np.float32),
    }
    return np.stack([session.run(["depth"], {**feeds, "images": f[None]})[0][0] for f in frames])


def main(spec_path):
    with open(spec_path) as f:
        spec = json.load(f)
    frames = np.load(spec["frames"])["frames"]
    recorder = Recorder()
    logging.getLogger("depthclip_ros").addHandler(recorder)
    results, warnings = {}, {}
    for run in spec["runs"]:
        config = DepthClipConfig(**spec["config"], model=run["model"])
        recorder.lines = []
        if "session" in run:
            head = load_estimator(config.replace(backend="onnxruntime")).head
            depth = session_depth(run["model"], frames, head, run["session"] == "exact")
        else:
            changes = run.get("changes", {})
            model = load_estimator(config.replace(backend=run["backend"], **changes))
            model.warm_up()
            begun = [model.begin_predict(f) for f in frames]  # streams: side by side
            depth = np.stack([started().depth[0] for started in begun])
            results[run["name"] + ".figure"] = np.asarray(model.depth_figure_words)
            results[run["name"] + ".runtime"] = np.asarray(model.runtime)
        results[run["name"]] = depth
        warnings[run["name"]] = recorder.lines
    np.savez(
        spec["out"],
        machine=np.asarray(platform.machine()),
        cpu=np.asarray(cpu_description()),
        warnings=np.asarray(json.dumps(warnings)),
        **results,
    )


if __name__ == "__main__":
    main(sys.argv[1])
