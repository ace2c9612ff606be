"""NYU Depth V2 through the DepthCLIP core (or a baseline) with the paper's protocol: per-image
metrics, resumable per-image rows, means overall and per scene, panels. A library: the command
line is cli.py; the benchmark calls `evaluate` directly.
"""

from __future__ import annotations

import concurrent.futures as cf
import dataclasses
import json
import platform
import time
from pathlib import Path

import numpy as np

from depthclip_ros import metrics
from depthclip_ros.config.params_files import load_config
from depthclip_ros.estimator.depth_quantile import depth_quantile
from depthclip_ros.estimator.result import CROP_BOX
from depthclip_ros.files import atomic_write
from depthclip_ros.model_loading import load_estimator

from .alignment import NYU_K, Alignment
from .data import DataError, Dataset
from .report import markdown_report, save_panel


@dataclasses.dataclass(frozen=True)
class EvalRun:
    """What one evaluation runs: the model's parameters (the `paper` preset first, then
    `presets`) or a baseline, and how."""

    params_file: str | None = None
    presets: tuple = ()
    device: str | None = None  # None: the parameter file's
    baseline: str | None = None  # uniform | constant
    constant_value: float | None = None  # constant baseline; None: the median bin
    seed: int = 0  # uniform baseline
    limit: int = 0  # first N images only; 0 = all
    batch_size: int = 1
    workers: int = 2  # image-decoding threads
    save_vis: int = 0  # panels written to out_dir/vis
    resume: bool = False  # keep the rows of an interrupted run in out_dir
    scene_bins: str = "off"  # off | auto (CLIP picks each image's scene) | oracle (NYU's folder)
    align: Alignment = Alignment()  # none: the paper's protocol (alignment.py)
    paper: bool = True  # the `paper` preset (NYU's crop and flip) first; a bag: the user's own

    def all_presets(self) -> list:
        return ["paper", *self.presets] if self.paper else list(self.presets)

    def config(self):
        """The run's validated DepthClipConfig (ConfigError when invalid)."""
        overrides = {"device": self.device} if self.device else {}
        if self.scene_bins in ("auto", "oracle"):  # oracle: the scene heads, NYU's choice
            overrides["scene_bins"] = "auto"
        return load_config(self.params_file, self.all_presets(), overrides)


class Predictor:
    """The core, or a baseline put through the same canvas and protocol."""

    def __init__(self, run: EvalRun, data: Dataset):
        self.crop, self.k = data.crop, NYU_K if data.k is None else data.k
        self.baseline = run.baseline
        self.config = run.config()  # the NYU protocol (crop + flip), then the user's presets
        self.seed = run.seed
        self.scene_bins = run.scene_bins
        self.constant = run.constant_value
        self.align = run.align
        if self.baseline is None:
            self.core = load_estimator(self.config)
            self.identity = self.core.model_identity
            self.device = str(self.core.device)
        else:
            self.core = None
            if self.constant is None:
                self.constant = float(np.median(self.config.depth_bins))
            self.identity = f"baseline:{self.baseline}"
            self.device = "cpu"

    def fingerprint(self) -> dict:
        return {
            "config": self.config.to_params(),
            "model": self.identity,
            "baseline": self.baseline,
            "seed": self.seed,
            "constant": self.constant,
            "scene_bins": self.scene_bins,
            "align": str(self.align),
        }

    def predict(self, images, names, scenes, truths):
        """(depth canvases (B, 480, 640), the core's DepthResult or None, whether each image's
        alignment fitted); `scenes` are NYU's scene folders, the bins' scenes under scene_bins
        oracle; `truths` their depth (m), read by --align only."""
        if self.core is not None:
            oracle = list(scenes) if self.scene_bins == "oracle" else None
            r = self.core.predict(np.stack(images), scenes=oracle)
            aligned = [
                self.align.apply(r, i, truth, name, self.seed, self.k, self.crop)
                for i, (truth, name) in enumerate(zip(truths, names))
            ]
            canvases = [metrics.on_canvas(d, t.shape) for d, t in zip(r.depth, truths)]
            return canvases, r, aligned
        top, left, h, w = CROP_BOX
        out = []
        for name in names:
            canvas = np.zeros(metrics.IMAGE_SHAPE, np.float32)
            if self.baseline == "uniform":
                rng = np.random.default_rng([self.seed, *name.encode()])  # per image: resumable
                canvas[top : top + h, left : left + w] = rng.uniform(
                    0.0, metrics.MAX_DEPTH, (h, w)
                )
            else:
                canvas[top : top + h, left : left + w] = self.constant
            out.append(canvas)
        return out, None, [True] * len(out)


def _read_jsonl(path: Path, fingerprint: dict) -> dict:
    rows = {}
    lines = path.read_text().splitlines()
    if not lines or json.loads(lines[0]).get("fingerprint") != fingerprint:
        raise DataError(
            f"--resume: {path} was written with another config/model/baseline; "
            "use another --out or run without --resume"
        )
    for line in lines[1:]:
        try:
            row = json.loads(line)
        except json.JSONDecodeError:  # the line being written when the run was interrupted
            break
        rows[row["name"]] = row
    return rows


def evaluate(data: Dataset, run: EvalRun, out_dir: Path | None = None, quiet=False) -> dict:
    """Results of `run` on `data` (and results.json/md, per_image.jsonl, vis/ in `out_dir`)."""
    from tqdm import tqdm

    samples = data.samples[: run.limit] if run.limit else data.samples
    predictor = Predictor(run, data)  # after the data check: loading a model takes seconds
    fingerprint = {**predictor.fingerprint(), "source": data.label}
    log = _PerImageLog(out_dir, fingerprint, run.resume)
    todo = [s for s in samples if s.name not in log.done]
    rows = list(log.done.values())
    t_start = time.perf_counter()
    visuals = _Visuals(out_dir, run.save_vis, predictor.config.depth_bins, data.crop)
    bar = tqdm(
        total=len(samples), initial=len(log.done), unit="img", disable=quiet, dynamic_ncols=True
    )
    with cf.ThreadPoolExecutor(max_workers=max(run.workers, 1)) as pool:
        batches = [todo[i : i + run.batch_size] for i in range(0, len(todo), run.batch_size)]
        # Decoding the next batches overlaps the model's work on this one.
        loaded = pool.map(lambda batch: [data.load(s) for s in batch], batches)
        for batch, frames in zip(batches, loaded):
            for row in _score_batch(predictor, batch, frames, visuals):
                rows.append(row)
                log.append(row)
            bar.update(len(batch))
            bar.set_postfix(d1=f"{np.mean([r['d1'] for r in rows]):.3f}")
    bar.close()
    results = _summary(rows, predictor, run, data, time.perf_counter() - t_start)
    if out_dir:
        atomic_write(
            out_dir / "results.json", lambda f: f.write(json.dumps(results, indent=1).encode())
        )
        atomic_write(out_dir / "results.md", lambda f: f.write(markdown_report(results).encode()))
    return results


class _PerImageLog:
    """per_image.jsonl: the fingerprint, then a line per image as it is scored; with resume,
    the lines of an earlier run with the same fingerprint are kept (`done`)."""

    def __init__(self, out_dir: Path | None, fingerprint: dict, resume: bool):
        self.path = out_dir / "per_image.jsonl" if out_dir else None
        self.done = {}
        if self.path is None:
            return
        if resume and self.path.exists():
            self.done = _read_jsonl(self.path, fingerprint)
        out_dir.mkdir(parents=True, exist_ok=True)
        with open(self.path, "w") as f:  # rewrite what is kept, then append as we go
            f.write(json.dumps({"fingerprint": fingerprint}) + "\n")
            for row in self.done.values():
                f.write(json.dumps(row) + "\n")

    def append(self, row: dict) -> None:
        if self.path is not None:
            with open(self.path, "a") as f:
                f.write(json.dumps(row) + "\n")


class _Visuals:
    """vis/: a panel for each of the first `count` images scored."""

    def __init__(self, out_dir: Path | None, count: int, bins, crop: bool):
        self.folder = out_dir / "vis" if out_dir else None
        self.left = count if out_dir else 0
        self.bins, self.crop = bins, crop

    def add(self, name, rgb, gt, pred, probs, std) -> None:
        if self.left <= 0:
            return
        path = self.folder / (name.replace("/", "_").rsplit(".", 1)[0] + ".png")
        save_panel(path, rgb, gt, pred, probs, self.bins, std, self.crop)
        self.left -= 1


def _score_batch(predictor, batch, frames, visuals) -> list:
    """The rows of one batch's images with valid ground truth (metrics, seconds, the depth's
    std against its error, the scene whose bins were used)."""
    truths = [metrics.gt_from_png(depth_mm) for _, depth_mm in frames]
    t0 = time.perf_counter()
    preds, result, aligned = predictor.predict(
        [f[0] for f in frames], [s.name for s in batch], [s.scene for s in batch], truths
    )
    per_image_s = (time.perf_counter() - t0) / len(batch)
    rows = []
    crop = predictor.crop
    for k, (sample, (rgb, _), pred, gt) in enumerate(zip(batch, frames, preds, truths)):
        scores = metrics.evaluate_image(gt, pred, crop)
        if scores is None:
            continue
        row = {"name": sample.name, "scene": sample.scene, "seconds": per_image_s, **scores}
        if predictor.align.kind != "none":
            row["aligned"] = aligned[k]
        std = None
        if result is not None:  # the model's uncertainty against its error
            std = metrics.on_canvas(result.depth_std[k], gt.shape)
            row["uncertainty"] = metrics.uncertainty_counts(gt, pred, std, crop)
            clearing = _clearing_canvases(result, k, gt.shape)
            row["clearing"] = metrics.clearing_counts(gt, pred, clearing, crop)
        if result is not None and result.scenes is not None:
            row["bins_scene"] = result.scenes[k]  # the scene whose bins were used
        rows.append(row)
        probs = result.bin_probs[k] if result is not None else None
        visuals.add(sample.name, rgb, gt, pred, probs, std)
    return rows


def _clearing_table(rows) -> dict | None:
    """points/clearing against the truth: in total and per image (metrics.clearing_summary)."""
    total = metrics.clearing_total(rows)
    if total is None:
        return None
    return {
        "total": metrics.clearing_summary(total),
        "per_image": {
            r["name"]: metrics.clearing_summary(r["clearing"]) for r in rows if r.get("clearing")
        },
    }


def _clearing_canvases(result, index: int, shape) -> dict:
    """{q: points/clearing's depth at every pixel of image `index` (of `shape`)} for the
    measured q."""
    rows, cols = (np.arange(n) for n in shape)
    return {
        q: metrics.on_canvas(depth_quantile(result, index, q, rows, cols), shape)
        for q in metrics.CLEARING_QUANTILES
    }


def _summary(rows, predictor, run, data, wall_seconds) -> dict:
    scenes = sorted({r["scene"] for r in rows})
    return {
        "source": data.label,
        "model": predictor.identity,
        "device": predictor.device,
        "config": predictor.config.to_params(),
        "presets": run.all_presets(),
        "baseline": predictor.baseline,
        "scene_bins": predictor.scene_bins,
        "align": str(predictor.align),
        "aligned_images": sum(r.get("aligned", True) for r in rows),
        "images": len(rows),
        "missing_files": len(data.missing),
        "missing_examples": data.missing[:5],
        "seconds_per_image": float(np.mean([r["seconds"] for r in rows])) if rows else None,
        "wall_seconds": wall_seconds,
        "machine": platform.platform(),
        "means": metrics.mean_metrics(rows),
        "uncertainty": metrics.uncertainty_table(rows),
        "clearing": _clearing_table(rows),
        "per_scene": {
            sc: {
                "images": sum(r["scene"] == sc for r in rows),
                **metrics.mean_metrics(r for r in rows if r["scene"] == sc),
            }
            for sc in scenes
        },
        "per_image": rows,
    }
