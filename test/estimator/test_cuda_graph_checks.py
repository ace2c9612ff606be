"""The CUDA graphs' checks and their way back, on CPU: CapturedFrames with a stand-in for the
capture (one that gives the eager path's outputs, one that is off by a centimetre, one whose
capture raises). A new graph's first replay is compared with the eager path on the same frame;
a key that fails or disagrees runs eagerly from then on, and the status says why."""

import logging

import numpy as np
import pytest
from helpers import structured_image

from depthclip_ros.estimator.core import DepthClip
from depthclip_ros.estimator.cuda_graph import CapturedFrames
from depthclip_ros.estimator.result import OUTPUT_FIELDS


def stand_in(offset_m=0.0, fails=False):
    """A CapturedFrame stand-in: the eager path's outputs (depth moved by `offset_m`), or a
    capture that raises; counts its replays."""

    class StandIn:
        made, replays = [], []

        def __init__(self, model, cfg, batch, height, width, text, bins):
            if fails:
                raise RuntimeError("operation not permitted when stream is capturing")
            self.model = model
            StandIn.made.append((batch, height, width))

        def run(self, images, text, bins, temperature):
            StandIn.replays.append(len(images))
            result = self.model.predict_eager(images)
            outputs = [getattr(result, name).copy() for name in OUTPUT_FIELDS]
            outputs[0] = outputs[0] + np.float32(offset_m)
            return outputs

    return StandIn


@pytest.fixture
def model(make_config):
    return DepthClip(make_config())


def test_a_graph_that_agrees_is_replayed(model):
    capture = stand_in()
    model.graphs = CapturedFrames(model, capture)
    image = structured_image(96, 128)
    first, second = model.predict(image), model.predict(image)
    np.testing.assert_array_equal(first.depth, model.predict_eager(image).depth)
    np.testing.assert_array_equal(second.depth, first.depth)
    assert capture.made == [(1, 96, 128)] and capture.replays == [1, 1]
    assert model.graph_status == "on" and model.graphs.captures == 1


@pytest.mark.parametrize(
    "capture, why",
    [
        (stand_in(offset_m=0.01), "the graph's depth differs from the eager path's by 0.01 m"),
        (stand_in(fails=True), "capture failed: RuntimeError: operation not permitted"),
    ],
)
def test_a_graph_that_fails_or_disagrees_leaves_its_frames_on_the_eager_path(
    model, capture, why, caplog
):
    model.graphs = CapturedFrames(model, capture)
    image = structured_image(96, 128)
    eager = model.predict_eager(image).depth
    with caplog.at_level(logging.WARNING, logger="depthclip_ros"):
        for _ in range(3):
            np.testing.assert_array_equal(model.predict(image).depth, eager)
    assert model.graph_status.startswith(f"off: {why}")
    assert model.graphs.captures == 1  # refused once, not captured again for each frame
    (warning,) = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert warning.startswith("CUDA graph not used for these frames, running them eagerly: ")
    # Another size is a new key: captured and checked on its own.
    model.predict(structured_image(120, 160))
    assert model.graphs.captures == 2


def test_off_or_on_cpu_no_graphs(make_config):
    assert DepthClip(make_config(cuda_graphs="off")).graph_status == "not used"  # CPU
    assert DepthClip(make_config()).graphs is None
