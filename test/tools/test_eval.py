"""offline_eval: the paper's protocol on hand-computed, synthetic and real NYU data."""

import json
import os
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest
from helpers import SHARED_NYU, VARYING_BINS, run_on_a_full_disk, structured_image
from PIL import Image
from scipy.io import savemat

from depthclip_ros import metrics
from offline_eval.cli import main as eval_main
from offline_eval.data import DataError, MatSource, bts_samples, load_bts

ROOT = Path(__file__).resolve().parents[2]


def test_metrics_known_values():
    g, p = np.array([1.0, 2.0, 4.0]), np.array([1.0, 4.0, 5.0])
    m = metrics.compute_errors(g, p)
    # ratios 1, 2, 1.25: < 1.25 only the first; < 1.5625 also not 2; < 1.953 also 1.25 -> not 2
    assert (
        m["d1"] == pytest.approx(1 / 3)
        and m["d2"] == pytest.approx(2 / 3)
        and m["d3"] == pytest.approx(2 / 3)
    )
    assert m["abs_rel"] == pytest.approx((0 + 1 + 0.25) / 3)
    assert m["rmse"] == pytest.approx(np.sqrt((0 + 4 + 1) / 3))
    assert m["log10"] == pytest.approx((0 + np.log10(2) + np.log10(1.25)) / 3)
    assert m["sq_rel"] == pytest.approx((0 + 4 / 2 + 1 / 4) / 3)
    d = np.log([1.0, 2.0, 1.25])
    assert m["rmse_log"] == pytest.approx(np.sqrt(np.mean(d**2)))
    assert m["silog"] == pytest.approx(100 * np.sqrt(np.mean(d**2) - np.mean(d) ** 2))


def test_uncertainty_counts_known_answer():
    gt = np.zeros(metrics.IMAGE_SHAPE, np.float32)
    pred = np.zeros_like(gt)
    std = np.zeros_like(gt)
    # Four valid pixels inside the eval mask; everything else invalid (gt 0).
    for (r, c), g, p, sd in zip(
        ((100, 100), (100, 101), (200, 300), (300, 400)),
        (2.0, 2.0, 3.0, 1.0),
        (2.05, 2.5, 2.0, 1.6),
        (0.05, 0.25, 0.4, 0.7),
    ):
        gt[r, c], pred[r, c], std[r, c] = g, p, sd
    counts = metrics.uncertainty_counts(gt, pred, std)
    assert counts["count"] == [1, 0, 1, 1, 1]  # std bins 0-0.1, 0.1-0.2, 0.2-0.3, 0.3-0.5, >=0.5
    np.testing.assert_allclose(counts["abs_err"], [0.05, 0, 0.5, 1.0, 0.6], atol=1e-6)
    assert counts["within_1sd"] == [1, 0, 0, 0, 1] and counts["within_2sd"] == [1, 0, 1, 0, 1]
    table = metrics.uncertainty_table([{"uncertainty": counts}, {"uncertainty": counts}])
    assert [r["pixels"] for r in table] == [2, 0, 2, 2, 2]
    assert table[2]["mean_abs_err"] == pytest.approx(0.5) and table[2]["within_2sd"] == 1.0
    assert table[1]["mean_abs_err"] is None  # an empty bin


def test_clearing_counts_known_answer():
    gt = np.zeros(metrics.IMAGE_SHAPE, np.float32)
    pred, low, high = np.zeros_like(gt), np.zeros_like(gt), np.zeros_like(gt)
    # Three valid pixels: true depth, mean depth, clearing depth at a low and a high q.
    for (r, c), g, p, lo, hi in zip(
        ((100, 100), (200, 300), (300, 400)),
        (2.0, 1.5, 3.0),
        (2.5, 1.2, 2.0),
        (1.0, 1.0, 1.5),
        (3.0, 1.5, 2.0),
    ):
        gt[r, c], pred[r, c], low[r, c], high[r, c] = g, p, lo, hi
    counts = metrics.clearing_counts(gt, pred, {0.1: low, 0.5: high})
    assert counts["pixels"] == 3
    assert counts["mean"] == {"beyond": 1, "cleared": pytest.approx(5.7)}  # 2.5 > 2.0
    assert counts["0.1"] == {"beyond": 0, "cleared": pytest.approx(3.5)}
    assert counts["0.5"]["beyond"] == 1  # 3.0 > 2.0; 1.5 = 1.5 is not beyond
    total = metrics.clearing_total([{"clearing": counts}, {"clearing": counts}, {}])
    assert total["pixels"] == 6 and total["0.1"]["cleared"] == pytest.approx(7.0)
    rows = {r["clear_to"]: r for r in metrics.clearing_summary(total)}
    assert rows["mean depth"]["cleared_obstacles"] == pytest.approx(1 / 3)
    assert rows["mean depth"]["given_up"] == pytest.approx(0.0)
    assert rows["q = 0.1"]["cleared_obstacles"] == 0.0
    assert rows["q = 0.1"]["given_up"] == pytest.approx(1 - 3.5 / 5.7)
    assert rows["q = 0.1"]["mean_cleared_depth"] == pytest.approx(3.5 / 3)


def test_metrics_hand_computed_clamps():
    m = metrics.compute_errors(np.array([12.0]), np.array([0.0]))  # both clamped to [1e-3, 10]
    assert m["abs_rel"] == pytest.approx((10 - 1e-3) / 10)


def test_canvas_mask_and_crop():
    gt = np.full((480, 640), 2.0, np.float32)
    depth = np.full((480, 640), np.nan, np.float32)
    depth[56:472, 60:604] = 2.5  # what the core returns in crop mode
    canvas = metrics.on_canvas(depth)
    assert canvas[0, 0] == 0 and canvas[56, 60] == 2.5
    valid = metrics.valid_pixels(gt, canvas)
    rows, cols = np.nonzero(valid)
    assert (rows.min(), rows.max(), cols.min(), cols.max()) == (56, 470, 60, 600)
    assert valid.sum() == 415 * 541
    gt[100, 100], gt[101, 101] = 0.0, 10.0  # no measurement, and the 10 m cap: both invalid
    assert metrics.valid_pixels(gt, canvas).sum() == 415 * 541 - 2
    assert metrics.gt_from_png(np.array([[0, 1500, 65535]], np.uint16)).tolist() == [
        [0.0, 1.5, 10.0]
    ]


def _write_bts_tree(root, scenes=None, depth_m=2.2):
    scenes = scenes or {"bathroom": [1, 2], "kitchen": [7]}
    test = root / "official_splits" / "test"
    rows = []
    for scene, ids in scenes.items():
        (test / scene).mkdir(parents=True, exist_ok=True)
        for i in ids:
            Image.fromarray(structured_image(seed=i)).save(test / scene / f"rgb_{i:05d}.jpg")
            depth = np.full((480, 640), int(depth_m * 1000), np.uint16)
            depth[:20] = 0  # holes are ignored
            Image.fromarray(depth).save(test / scene / f"sync_depth_{i:05d}.png")
            rows.append(f"{scene}/rgb_{i:05d}.jpg {scene}/sync_depth_{i:05d}.png 518.8579")
    (root / "split.txt").write_text("\n".join(rows) + "\n")
    return root


def test_constant_baseline_on_synthetic_tree_has_the_known_answer(tmp_path, capsys):
    root = _write_bts_tree(tmp_path / "nyu")
    out = tmp_path / "out"
    assert (
        eval_main(
            [
                "--data-root",
                str(root),
                "--baseline",
                "constant",
                "--constant-value",
                "2.0",
                "--out",
                str(out),
            ]
        )
        == 0
    )
    res = json.loads((out / "results.json").read_text())
    assert res["images"] == 3 and set(res["per_scene"]) == {"bathroom", "kitchen"}
    m = res["means"]
    assert m["d1"] == 1.0 and m["abs_rel"] == pytest.approx(0.2 / 2.2, abs=1e-6)
    assert m["rmse"] == pytest.approx(0.2, abs=1e-6)
    assert "DepthCLIP (paper)" in (out / "results.md").read_text()
    lines = (out / "per_image.jsonl").read_text().splitlines()
    assert len(lines) == 4 and "fingerprint" in json.loads(lines[0])


def test_results_on_a_full_disk_are_one_error_line(tmp_path):
    """depthclip-eval as its own process with a file-size limit (writes beyond it fail as on a
    full disk): exit 2, one line naming --out, no traceback."""
    root = _write_bts_tree(tmp_path / "nyu")
    out = tmp_path / "out"

    argv = [sys.executable, "-m", "offline_eval", "--data-root", str(root)]
    argv += ["--baseline", "constant", "--out", str(out)]
    proc = run_on_a_full_disk(argv, 256, timeout=120, cwd=ROOT)
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert proc.stderr.startswith(f"depthclip-eval: cannot write {out}: File too large")
    assert proc.stderr.count("\n") == 1 and "Traceback" not in proc.stderr


def test_missing_files_error_and_skip(tmp_path):
    root = _write_bts_tree(tmp_path / "nyu")
    (root / "official_splits/test/kitchen/sync_depth_00007.png").unlink()
    split = str(root / "split.txt")
    with pytest.raises(DataError, match="1 file\\(s\\) missing.*sync_depth_00007"):
        from offline_eval.data import bts_samples

        bts_samples(root, split)
    out = tmp_path / "out"
    assert (
        eval_main(
            [
                "--data-root",
                str(root),
                "--split-file",
                split,
                "--baseline",
                "constant",
                "--skip-missing",
                "--out",
                str(out),
            ]
        )
        == 0
    )
    res = json.loads((out / "results.json").read_text())
    assert res["images"] == 2 and res["missing_files"] == 1
    assert (
        eval_main(["--data-root", str(root), "--split-file", split, "--baseline", "constant"]) == 2
    )


def test_resume_gives_the_same_means(tmp_path, tiny_checkpoint, capsys):
    root = _write_bts_tree(tmp_path / "nyu", {"a": [1, 2, 3], "b": [4]})
    params = tmp_path / "p.yaml"
    params.write_text(
        f"depthclip:\n  ros__parameters:\n    model: {tiny_checkpoint}\n    temperature: 1.0\n"
        f"    device: cpu\n    cache_dir: {tmp_path / 'cache'}\n"
    )
    common = ["--data-root", str(root), "--params", str(params)]
    assert eval_main(common + ["--out", str(tmp_path / "full")]) == 0
    partial = tmp_path / "partial"
    assert eval_main(common + ["--out", str(partial), "--limit", "2"]) == 0
    jsonl = partial / "per_image.jsonl"
    jsonl.write_text(jsonl.read_text() + '{"name": "a/rgb_0000')  # interrupted mid-line
    assert eval_main(common + ["--out", str(partial), "--resume"]) == 0
    full = json.loads((tmp_path / "full" / "results.json").read_text())
    resumed = json.loads((partial / "results.json").read_text())
    assert resumed["images"] == full["images"] == 4
    for k, v in full["means"].items():
        assert resumed["means"][k] == pytest.approx(v, abs=1e-9)
    assert resumed["uncertainty"] == full["uncertainty"]  # per-image sums: a resume adds up
    for resumed_row, full_row in zip(resumed["clearing"]["total"], full["clearing"]["total"]):
        assert resumed_row["clear_to"] == full_row["clear_to"]
        assert resumed_row["given_up"] == pytest.approx(full_row["given_up"], abs=1e-9)
        assert resumed_row["cleared_obstacles"] == full_row["cleared_obstacles"]
    # A resume with another config is refused rather than mixed.
    capsys.readouterr()
    assert (
        eval_main(
            common + ["--out", str(partial), "--resume", "--preset", "bins_class_dependent_4"]
        )
        == 2
    )
    assert "written with another config" in capsys.readouterr().err


def test_mat_reader_on_synthetic_v73_file(tmp_path):
    n = 3
    rgb = np.stack([structured_image(seed=i) for i in range(n)])  # (N, H, W, 3)
    raw = np.stack([np.full((480, 640), 1.5 + i, np.float32) for i in range(n)])
    mat = tmp_path / "nyu_depth_v2_labeled.mat"
    with h5py.File(mat, "w") as f:  # MATLAB v7.3 layout: axes reversed
        f["images"] = rgb.transpose(0, 3, 2, 1)
        f["rawDepths"] = raw.transpose(0, 2, 1)
        names = [
            f.create_dataset(f"#refs#/s{i}", data=np.array([ord(c) for c in s], np.uint16))
            for i, s in enumerate(["bedroom", "office", "bedroom"])
        ]
        f.create_dataset(
            "sceneTypes", data=np.array([[d.ref for d in names]]), dtype=h5py.ref_dtype
        )
    splits = tmp_path / "splits.mat"
    savemat(splits, {"testNdxs": np.array([[1], [3]]), "trainNdxs": np.array([[2]])})
    source = MatSource(mat, splits)
    samples = source.samples()
    assert [s.mat_index for s in samples] == [0, 2] and [s.scene for s in samples] == [
        "bedroom",
        "bedroom",
    ]
    img, depth_mm = source.load(samples[1])
    assert img.shape == (480, 640, 3) and depth_mm.dtype == np.uint16
    np.testing.assert_array_equal(img[7:474, 7:632], rgb[2, 7:474, 7:632])
    assert img[:7].max() == 0 and img[:, 632:].max() == 0 and img[474:].max() == 0
    assert depth_mm[100, 100] == 3500
    out = tmp_path / "out"
    assert (
        eval_main(
            [
                "--mat",
                str(mat),
                "--splits",
                str(splits),
                "--baseline",
                "constant",
                "--constant-value",
                "3.5",
                "--out",
                str(out),
            ]
        )
        == 0
    )
    res = json.loads((out / "results.json").read_text())
    assert res["images"] == 2 and res["per_image"][1]["abs_rel"] == pytest.approx(0.0, abs=1e-6)


@pytest.mark.skipif(not os.path.isdir(SHARED_NYU), reason="../shared/data/nyu_samples absent")
def test_real_nyu_samples_end_to_end(tmp_path, tiny_checkpoint):
    params = tmp_path / "p.yaml"
    params.write_text(
        f"depthclip:\n  ros__parameters:\n    model: {tiny_checkpoint}\n    temperature: 1.0\n"
        f"    device: cpu\n    cache_dir: {tmp_path / 'cache'}\n"
    )
    out = tmp_path / "out"
    split = os.path.join(SHARED_NYU, "samples_test_files_with_gt.txt")
    assert (
        eval_main(
            [
                "--data-root",
                SHARED_NYU,
                "--split-file",
                split,
                "--params",
                str(params),
                "--out",
                str(out),
                "--save-vis",
                "2",
                "--batch-size",
                "2",
            ]
        )
        == 0
    )
    res = json.loads((out / "results.json").read_text())
    assert res["images"] == 4 and set(res["per_scene"]) == {"demo_a", "demo_b"}
    assert res["config"]["preprocessing"] == "crop" and res["config"]["flip"] is True
    for row in res["per_image"]:
        assert 0 <= row["d1"] <= row["d2"] <= row["d3"] <= 1 and row["valid_pixels"] > 100_000
    panels = sorted((out / "vis").glob("*.png"))
    assert len(panels) == 2
    with Image.open(panels[0]) as panel:
        assert panel.size[0] == 5 * 640  # ..., predicted std
    # Error against predicted std over every valid pixel of the four real samples.
    table = res["uncertainty"]
    assert sum(r["pixels"] for r in table) == sum(r["valid_pixels"] for r in res["per_image"])
    assert sum(r["share"] for r in table) == pytest.approx(1.0)
    report = (out / "results.md").read_text()
    assert "## Uncertainty: error against the predicted std" in report
    # points/clearing against the truth, in total and per image, at the measured q.
    clearing = res["clearing"]
    assert [r["clear_to"] for r in clearing["total"]] == ["mean depth"] + [
        f"q = {q}" for q in metrics.CLEARING_QUANTILES
    ]
    assert set(clearing["per_image"]) == {row["name"] for row in res["per_image"]}
    given_up = [r["given_up"] for r in clearing["total"]]
    assert given_up[0] == 0.0 and all(a >= b for a, b in zip(given_up[1:], given_up[2:]))
    for row in res["per_image"]:  # every valid pixel counted
        assert row["clearing"]["pixels"] == row["valid_pixels"]
    assert "## Clearing: points/clearing against the true depth" in report
    # The uniform baseline through the same protocol lands near the paper's lower bound.
    assert (
        eval_main(
            [
                "--data-root",
                SHARED_NYU,
                "--split-file",
                split,
                "--baseline",
                "uniform",
                "--out",
                str(tmp_path / "u"),
            ]
        )
        == 0
    )
    u = json.loads((tmp_path / "u" / "results.json").read_text())["means"]
    assert 0.08 < u["d1"] < 0.25 and 0.3 < u["d3"] < 0.65


@pytest.mark.skipif(not os.path.isdir(SHARED_NYU), reason="../shared/data/nyu_samples absent")
def test_align_puts_each_image_in_a_scale_before_it_is_scored(
    tmp_path, tiny_checkpoint, unbiased_checkpoint, capsys
):
    """--align on two real NYU samples: lstsq is the relative least-squares scale and shift of
    the unaligned depth (a second fit finds nothing left), median matches the truth's median;
    scan:H and random:N fit metric_scale's rule to simulated range data (a :MODE suffix its
    mode) and say how many images fitted; none is the paper's protocol unchanged; a form that
    is none is refused."""
    from offline_eval.alignment import Alignment, relative_fit
    from offline_eval.data import open_dataset
    from offline_eval.evaluation import EvalRun, Predictor

    params = tmp_path / "p.yaml"
    params.write_text(
        f"depthclip:\n  ros__parameters:\n    model: {tiny_checkpoint}\n    temperature: 1.0\n"
        f"    device: cpu\n    cache_dir: {tmp_path / 'cache'}\n"
    )
    split = os.path.join(SHARED_NYU, "samples_test_files_with_gt.txt")
    data = open_dataset(SHARED_NYU, split)
    samples = data.samples[:2]
    frames = [data.load(s) for s in samples]
    truths = [metrics.gt_from_png(depth_mm) for _, depth_mm in frames]
    images, names = [rgb for rgb, _ in frames], [s.name for s in samples]

    def canvases(how):
        run = EvalRun(params_file=str(params), align=Alignment.parse(how))
        predictor = Predictor(run, data)
        preds, _, aligned = predictor.predict(images, names, [s.scene for s in samples], truths)
        return preds, aligned

    plain, _ = canvases("none")
    fitted, _ = canvases("lstsq")
    by_median, _ = canvases("median")
    for truth, none, lstsq, median in zip(truths, plain, fitted, by_median):
        scored = metrics.valid_pixels(truth, none)
        seen = np.where(scored, truth, 0.0)
        scale, shift = relative_fit(seen, none)
        np.testing.assert_allclose(lstsq[scored], scale * none[scored] + shift, rtol=1e-4)
        # refitted, nothing moves (the tiny CLIP's depth varies little, so the refit's scale
        # and shift trade off against each other by float32's rounding: their depth is what holds)
        again, again_shift = relative_fit(seen, lstsq)
        np.testing.assert_allclose(again * lstsq[scored] + again_shift, lstsq[scored], rtol=1e-4)
        assert np.median(median[scored]) == pytest.approx(np.median(truth[scored]), rel=1e-4)
    for how in ("scan:0.25", "random:200", "random:200:scale", "random:200:bins"):
        preds, aligned = canvases(how)
        assert aligned == [True, True], how  # the truth's points fit
        assert all(not np.allclose(a, b) for a, b in zip(preds, plain))
        assert str(Alignment.parse(how)) == how
    # Mode bins on the unbiased tiny CLIP (a depth that varies, so the fit is of each bin): not
    # what scale_shift gives (which float32 would keep to 1e-7; its bins move by millimetres).
    params.write_text(
        params.read_text().replace(str(tiny_checkpoint), str(unbiased_checkpoint))
        + f"    depth_bins: {list(VARYING_BINS)}\n"
    )
    affine, _ = canvases("random:200")
    per_bin, aligned = canvases("random:200:bins")
    assert aligned == [True, True]
    for bins_depth, affine_depth in zip(per_bin, affine):
        seen = affine_depth > 0  # the canvas's border is 0
        moved = np.abs(bins_depth[seen] / affine_depth[seen] - 1)
        assert np.max(moved) > 1e-5
    base = ["--data-root", SHARED_NYU, "--split-file", split, "--params", str(params)]
    out = tmp_path / "out"
    assert eval_main([*base, "--limit", "2", "--align", "random:200", "--out", str(out)]) == 0
    results = json.loads((out / "results.json").read_text())
    assert (results["align"], results["aligned_images"], results["images"]) == ("random:200", 2, 2)
    assert "--align random:200: 2 of 2 images fitted" in (out / "results.md").read_text()
    resumed = [*base, "--limit", "2", "--out", str(out), "--resume"]
    assert eval_main(resumed) == 2  # another alignment: not the same run
    assert "written with another config" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exit_info:
        eval_main([*base, "--align", "scan:x"])
    assert exit_info.value.code == 2
    assert "--align: 'scan:x' is none of none | median" in capsys.readouterr().err


def test_cheap_inputs_are_checked_before_the_model_is_loaded(tmp_path, capsys):
    """A missing data root is reported as such, not as missing CLIP weights; a bad config of
    any run of a sweep before the first run starts."""
    params = tmp_path / "p.yaml"
    params.write_text(f"depthclip:\n  ros__parameters:\n    model: {tmp_path / 'no_weights.pt'}\n")
    assert eval_main(["--data-root", str(tmp_path / "missing"), "--params", str(params)]) == 2
    err = capsys.readouterr().err
    assert "missing" in err and "no_weights" not in err and "Traceback" not in err
    root = _write_bts_tree(tmp_path / "nyu", {"a": [1]})
    params.write_text("depthclip:\n  ros__parameters:\n    temperature: 150\n")
    assert eval_main(["--data-root", str(root), "--params", str(params), "--sweep", "bins"]) == 2
    err = capsys.readouterr().err
    assert err.strip().splitlines() == [
        "depthclip-eval: invalid config field 'temperature' = 150.0: must be from 0.0001 to 100.0"
    ]


def test_scene_bins_sweep_oracle_auto_and_the_papers_rows(tmp_path, tiny_checkpoint):
    """--sweep scene-bins: 'oracle' gives each image the bins of its NYU scene folder (paper
    Table 2: bathroom -> class-dependent 3), 'auto' CLIP's scene; results.md puts the paper's δ1
    beside the row it reports."""
    from depthclip_ros.config.params_files import load_config
    from depthclip_ros.estimator.core import DepthClip

    root = _write_bts_tree(tmp_path / "nyu")
    params = tmp_path / "p.yaml"
    params.write_text(
        f"depthclip:\n  ros__parameters:\n    model: {tiny_checkpoint}\n    temperature: 1.0\n"
        f"    cache_dir: {tmp_path / 'cache'}\n    device: cpu\n"
    )
    out = tmp_path / "out"
    args = ["--data-root", str(root), "--params", str(params), "--out", str(out)]
    assert eval_main([*args, "--sweep", "scene-bins"]) == 0
    oracle = json.loads((out / "scene_bins_oracle" / "results.json").read_text())
    core = DepthClip(load_config(params, ["paper"], {"scene_bins": "auto"}))
    for row in oracle["per_image"]:
        assert row["bins_scene"] == row["scene"]
        rgb, depth_mm = load_bts(next(s for s in bts_samples(root)[0] if s.name == row["name"]))
        pred = core.predict(rgb, scenes=[row["scene"]]).depth[0]
        expected = metrics.evaluate_image(metrics.gt_from_png(depth_mm), metrics.on_canvas(pred))
        assert row["d1"] == pytest.approx(expected["d1"]) and row["rmse"] == pytest.approx(
            expected["rmse"], rel=1e-5
        )
    auto = json.loads((out / "scene_bins_auto" / "results.json").read_text())
    assert {r["bins_scene"] for r in auto["per_image"]} <= set(core.config.scenes)
    table = (out / "sweep_scene-bins.md").read_text()
    assert "| scene bins off |" in table and "0.394 |" in table
    assert "| scene bins oracle |" in table and "not in the paper" in table
    assert eval_main([*args, "--sweep", "features"]) == 0
    features = (out / "sweep_features.md").read_text()
    assert "| features_projected |" in features and "| features_subsampled |" in features


def test_temporal_sequences_have_their_known_depth_and_changes():
    from offline_eval import temporal

    rgb = structured_image(120, 160, seed=3)
    truth = np.linspace(1.0, 3.0, 160, dtype=np.float32)[None].repeat(120, axis=0)
    still, pan, moving, slow = temporal.sequences(rgb, truth, frames=6)
    assert [s.name for s in (still, pan, moving, slow)] == [
        "still",
        "pan",
        "moving object",
        "slow object",
    ]
    assert slow.rate == temporal.SLOW_RATE and moving.rate == temporal.FRAME_RATE
    noise = np.stack(still.frames).astype(float) - rgb
    assert abs(noise.std() - temporal.NOISE) < 0.3 and all(t is truth for t in still.truths)
    assert not any(c.any() for c in still.changed[1:]) and still.changed[0].all()
    step = temporal.PAN_PIXELS
    for before, now in zip(pan.truths, pan.truths[1:]):  # the scene moves left by `step`
        np.testing.assert_array_equal(now[:, :-step], before[:, step:])
    for sequence, step in ((moving, temporal.OBJECT_STEP), (slow, temporal.SLOW_STEP)):
        for i, (depth, covered) in enumerate(zip(sequence.truths, sequence.covered)):
            assert (depth[covered] == temporal.OBJECT_DEPTH).all()
            np.testing.assert_array_equal(depth[~covered], truth[~covered])
            assert covered[:, i * step].any() and not covered[:, : i * step].any()
            if i:
                assert (sequence.changed[i] == (covered | sequence.covered[i - 1])).all()
    # The slow object: flat, SLOW_CONTRAST grey levels over the image under its start.
    first = slow.covered[0]
    contrast = slow.frames[0][first].astype(float).mean() - rgb[first].astype(float).mean()
    assert abs(contrast - temporal.SLOW_CONTRAST) < 1.0


def test_flicker_and_lag_have_known_answers():
    from offline_eval import temporal

    still = temporal.Sequence(
        "still", [None] * 3, [None] * 3, [np.ones((2, 2), bool)] + [np.zeros((2, 2), bool)] * 2
    )
    depths = [np.full((2, 2), 2.0), np.full((2, 2), 2.004), np.full((2, 2), 2.001)]
    assert temporal.flicker(still, depths) == pytest.approx(0.0035)  # median of 4 x .004, .003
    covered = [np.zeros((1, 4), bool) for _ in range(4)]
    for t in range(1, 4):
        covered[t][0, : t + 1] = True  # one new pixel a frame, staying
    moving = temporal.Sequence("moving object", [None] * 4, [None] * 4, covered, covered=covered)
    alone = [np.full((1, 4), 1.0) for _ in range(4)]
    assert temporal.lag(moving, alone, alone) == 0.0
    late = [np.full((1, 4), 3.0), np.full((1, 4), 3.0), np.full((1, 4), 1.0), np.full((1, 4), 1.0)]
    # the two pixels new at 1 reach it at 2 (lag 1); those new at 2 and 3 at once
    assert sorted(temporal.lag_frames(moving, late, alone)) == [0, 0, 1, 1]
    assert temporal.lag(moving, late, alone) == 0.5


@pytest.mark.skipif(not os.path.isdir(SHARED_NYU), reason="../shared/data/nyu_samples absent")
def test_temporal_table_on_a_real_nyu_sample(tmp_path, tiny_checkpoint, capsys):
    params = tmp_path / "p.yaml"
    params.write_text(
        f"depthclip:\n  ros__parameters:\n    model: {tiny_checkpoint}\n    temperature: 1.0\n"
        f"    device: cpu\n    cache_dir: {tmp_path / 'cache'}\n"
        f"    input_width: 128\n    input_height: 96\n"
    )
    split = os.path.join(SHARED_NYU, "samples_test_files_with_gt.txt")
    argv = ["--data-root", SHARED_NYU, "--split-file", split, "--params", str(params)]
    assert eval_main([*argv, "--temporal", "--limit", "1"]) == 0
    lines = [line for line in capsys.readouterr().out.splitlines() if line.startswith("| ")]
    rows = [line.strip("| ").split(" | ") for line in lines[1:]]
    assert [(r[1], r[2]) for r in rows] == [
        (sequence, mode)
        for sequence in ("still", "pan", "moving object", "slow object")
        for mode in ("off", "mixture")
    ]
    assert all(float(r[-1]) >= 0 for r in rows) and rows[0][5] == "nan"  # no object: no lag
    assert rows[0][4] in ("1.000", "-")  # off against itself (- where off did not move)
