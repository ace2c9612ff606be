"""depthclip-eval --bag: a user's recording of a camera with a depth camera's depth registered to
it, scored by the paper's metrics as a user with a RealSense or an OAK-D runs it: the depth of
each frame against the truth beside it, the whole frame at the camera's size, the user's own
parameters (no paper preset)."""

import json
import os

import numpy as np
import pytest
from bag_factory import frame_stamp, write_bag
from helpers import SHARED_NYU, model_config, structured_image
from rosbags.typesys import Stores, get_typestore

from depthclip_ros.estimator.core import DepthClip
from offline_eval.alignment import NYU_K
from offline_eval.cli import main as eval_main
from offline_eval.data import open_dataset

FRAMES, WIDTH, HEIGHT = 5, 160, 120
MODEL = dict(input_width=128, input_height=96)
SCALE = 2.0  # the room is twice as deep as the random model says
DEPTH = "/cam/aligned_depth_to_color/image_raw"


def depth_message(metres, sec, nanosec, encoding, store):
    """A depth Image registered to the camera: 16UC1 millimetres or 32FC1 metres."""
    if encoding == "16UC1":
        data, step = np.round(metres * 1000).astype("<u2"), 2 * metres.shape[1]
    else:
        data, step = metres.astype("<f4"), 4 * metres.shape[1]
    types = store.types
    return types["sensor_msgs/msg/Image"](
        header=types["std_msgs/msg/Header"](
            stamp=types["builtin_interfaces/msg/Time"](sec=sec, nanosec=nanosec),
            frame_id="camera_optical_frame",
        ),
        height=metres.shape[0],
        width=metres.shape[1],
        encoding=encoding,
        is_bigendian=0,
        step=step,
        data=np.frombuffer(data.tobytes(), np.uint8),
    )


def recording(tmp_path, checkpoint, encoding="16UC1", offset_ns=5_000_000, size=None):
    """write_bag's camera with DEPTH: SCALE times the core's depth of each frame (another
    `size` when given), stamped `offset_ns` after its image; and the parameter file the core
    ran with."""
    core = DepthClip(model_config(checkpoint, tmp_path / "core", **MODEL))
    store = get_typestore(Stores.ROS2_KILTED)

    def depth(i):
        truth = SCALE * core.predict(structured_image(HEIGHT, WIDTH, seed=i)).depth[0]
        if size is not None:
            truth = np.resize(truth, size[::-1])
        sec, nanosec = frame_stamp(i)
        sec, nanosec = divmod(sec * 10**9 + nanosec + offset_ns, 10**9)
        return depth_message(truth, sec, nanosec, encoding, store)

    bag = tmp_path / f"recording_{encoding}"
    extra = {DEPTH: (store, "sensor_msgs/msg/Image", depth)}
    write_bag(bag, frames=FRAMES, width=WIDTH, height=HEIGHT, extra=extra)
    params = tmp_path / "robot.yaml"
    settings = dict(model=str(checkpoint), device="cpu", cache_dir=str(tmp_path / "c"))
    settings.update(MODEL, temperature=1.0)
    lines = "".join(f"    {k}: {v}\n" for k, v in settings.items())
    params.write_text("/**/depthclip:\n  ros__parameters:\n" + lines)
    return bag, params


def evaluate(bag, params, out, *more):
    argv = ["--bag", str(bag), "--image-topic", "/cam/image_raw", "--depth-topic", DEPTH]
    return eval_main([*argv, "--params", str(params), "--out", str(out), *more])


@pytest.mark.parametrize("encoding", ["16UC1", "32FC1"])
def test_a_depth_camera_in_a_bag_is_the_truth_of_each_frame(tmp_path, tiny_checkpoint, encoding):
    """Truth twice the model's depth: AbsRel 0.5 and delta1 0 as the model gives it, every pixel
    of every frame scored; with --align median 0 and 1; --every 2 scores every other frame."""
    bag, params = recording(tmp_path, tiny_checkpoint, encoding)
    assert evaluate(bag, params, tmp_path / "plain") == 0
    plain = json.loads((tmp_path / "plain" / "results.json").read_text())
    assert plain["images"] == FRAMES and plain["presets"] == []
    assert all(row["valid_pixels"] == WIDTH * HEIGHT for row in plain["per_image"])
    assert plain["means"]["abs_rel"] == pytest.approx(0.5, abs=1e-3)
    assert plain["means"]["d1"] == 0.0
    assert plain["clearing"]["total"] and plain["uncertainty"]
    assert evaluate(bag, params, tmp_path / "aligned", "--align", "median", "--every", "2") == 0
    aligned = json.loads((tmp_path / "aligned" / "results.json").read_text())
    assert aligned["images"] == 3  # frames 0, 2, 4
    assert aligned["means"]["abs_rel"] < 1e-3 and aligned["means"]["d1"] == 1.0


def test_a_depth_not_registered_or_not_beside_the_image_is_one_line(
    tmp_path, tiny_checkpoint, capsys
):
    """A depth image of another size (not aligned to the colour camera), a depth 30 ms off
    every image, a topic not recorded, the colour image given as the depth, and --bag without
    --depth-topic: one line, exit 2."""
    other, params = recording(tmp_path / "a", tiny_checkpoint, size=(80, 60))
    late, _ = recording(tmp_path / "b", tiny_checkpoint, offset_ns=30_000_000)
    bag = ["--bag", str(late)]
    cases = [
        (lambda: evaluate(other, params, tmp_path / "o"), "must be registered to the colour"),
        (lambda: evaluate(late, params, tmp_path / "l"), f"no {DEPTH} message within 0.02 s"),
        (
            lambda: eval_main([*bag, "--image-topic", "/cam/image", "--depth-topic", DEPTH]),
            "/cam/image is not recorded",
        ),
        (lambda: eval_main([*bag, "--image-topic", "/cam/image_raw"]), "--depth-topic"),
        (
            lambda: eval_main(
                [*bag, "--image-topic", DEPTH, "--depth-topic", "/cam/image_raw"]
                + ["--camera-info-topic", "/cam/camera_info"]
            ),
            "/cam/image_raw is rgb8, not a depth image",
        ),
    ]
    for run, words in cases:
        code = run()
        err = capsys.readouterr().err.strip().splitlines()
        assert code == 2 and len(err) == 1 and words in err[0], (words, err)
        assert "Traceback" not in err[0]


@pytest.mark.skipif(not os.path.isdir(SHARED_NYU), reason="../shared/data/nyu_samples absent")
def test_the_nyu_samples_in_a_bag_score_as_the_nyu_path_does(tmp_path, tiny_checkpoint):
    """The four NYU samples recorded as a camera would publish them (rgb8 images, NYU's
    camera_info, the registered depth in 16UC1 millimetres): `--bag --protocol nyu` gives each
    frame the metrics, uncertainty and clearing counts `--data-root` gives it."""
    split = os.path.join(SHARED_NYU, "samples_test_files_with_gt.txt")
    data = open_dataset(SHARED_NYU, split)
    frames = [data.load(sample) for sample in data.samples]
    store = get_typestore(Stores.ROS2_KILTED)
    types = store.types

    def header(i):
        sec, nanosec = frame_stamp(i)
        return types["std_msgs/msg/Header"](
            stamp=types["builtin_interfaces/msg/Time"](sec=sec, nanosec=nanosec),
            frame_id="nyu_optical_frame",
        )

    def image(i, pixels, encoding, step):
        height, width = pixels.shape[:2]
        data = np.frombuffer(np.ascontiguousarray(pixels).tobytes(), np.uint8)
        return types["sensor_msgs/msg/Image"](header(i), height, width, encoding, 0, step, data)

    def info(i):
        k = NYU_K.ravel().astype(float)
        p = np.array([[*NYU_K[0], 0.0], [*NYU_K[1], 0.0], [*NYU_K[2], 0.0]]).ravel()
        return types["sensor_msgs/msg/CameraInfo"](
            header=header(i),
            height=480,
            width=640,
            distortion_model="plumb_bob",
            d=np.zeros(5),
            k=k,
            r=np.eye(3).ravel(),
            p=p,
            binning_x=0,
            binning_y=0,
            roi=types["sensor_msgs/msg/RegionOfInterest"](0, 0, 0, 0, False),
        )

    extra = {
        "/nyu/image_raw": (
            store,
            "sensor_msgs/msg/Image",
            lambda i: image(i, frames[i][0], "rgb8", 640 * 3),
        ),
        "/nyu/camera_info": (store, "sensor_msgs/msg/CameraInfo", info),
        "/nyu/depth_registered": (
            store,
            "sensor_msgs/msg/Image",
            lambda i: image(i, frames[i][1].astype("<u2"), "16UC1", 640 * 2),
        ),
    }
    bag = tmp_path / "nyu_bag"
    write_bag(bag, frames=len(frames), extra=extra)
    _, params = recording(tmp_path, tiny_checkpoint)  # the parameter file alone is used
    common = ["--params", str(params)]
    nyu_argv = ["--data-root", SHARED_NYU, "--split-file", split, "--out", str(tmp_path / "nyu")]
    assert eval_main([*nyu_argv, *common]) == 0
    argv = ["--bag", str(bag), "--image-topic", "/nyu/image_raw", "--protocol", "nyu"]
    argv += ["--depth-topic", "/nyu/depth_registered", "--out", str(tmp_path / "bag"), *common]
    assert eval_main(argv) == 0
    nyu, from_bag = (
        json.loads((tmp_path / name / "results.json").read_text())["per_image"]
        for name in ("nyu", "bag")
    )
    assert len(nyu) == len(from_bag) == 4
    for a, b in zip(nyu, from_bag, strict=True):
        for key in ("name", "scene", "seconds"):
            a.pop(key), b.pop(key)
        assert a == b
