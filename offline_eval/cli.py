"""depthclip-eval: NYU Depth V2 through the DepthCLIP core, with the paper's protocol.

depthclip-eval --data-root NYU --out results/            # Table 1 row (needs CLIP RN50 weights)
depthclip-eval --data-root NYU --baseline uniform        # the paper's lower bound
depthclip-eval --data-root NYU --sweep bins              # Table 2; --sweep tokens: Table 3
"""

from __future__ import annotations

import argparse
import concurrent.futures as cf
import json
import platform
import sys
import time
from pathlib import Path

import numpy as np

from depthclip_ros.config import ConfigError, load_config
from depthclip_ros.core import CROP_BOX, DepthClip
from depthclip_ros.files import atomic_write
from depthclip_ros.model_loading import ModelLoadError

from . import metrics
from .data import DataError, MatSource, bts_samples, load_bts
from .report import markdown_report, save_panel, sweep_table

SWEEPS = {
    "bins": [
        "bins_original",
        "bins_class_dependent_1",
        "bins_class_dependent_2",
        "bins_class_dependent_3",
        "bins_class_dependent_4",
    ],
    "tokens": ["tokens_original", "tokens_prompt_1", "tokens_prompt_2", "tokens_prompt_3"],
}


class Predictor:
    """The core, or a baseline put through the same canvas and protocol."""

    def __init__(self, args, presets):
        self.baseline = args.baseline
        overrides = {"device": args.device} if args.device else {}
        # The NYU protocol (crop + flip) first, then the user's presets.
        self.config = load_config(args.params, ["paper", *presets], overrides)
        self.seed = args.seed
        self.constant = args.constant_value
        if self.baseline is None:
            self.core = DepthClip(self.config)
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
        }

    def predict(self, images, names):
        """(depth canvases (B, 480, 640), bin_probs or None)."""
        if self.core is not None:
            r = self.core.predict(np.stack(images))
            return [metrics.on_canvas(d) for d in r.depth], r
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
        return out, None


def _samples(args):
    if args.mat:
        if not args.splits:
            raise DataError("--mat needs --splits (splits.mat with testNdxs)")
        source = MatSource(args.mat, args.splits)
        return source.samples(), source.load, [], f"mat:{args.mat}"
    samples, missing = bts_samples(args.data_root, args.split_file, args.skip_missing)
    return (
        samples,
        load_bts,
        missing,
        f"bts:{args.data_root}" + (f" split:{args.split_file}" if args.split_file else ""),
    )


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


def evaluate(args, presets, out_dir: Path | None, quiet=False) -> dict:
    from tqdm import tqdm

    samples, load, missing, source = _samples(args)
    predictor = Predictor(args, presets)  # after the data check: loading a model takes seconds
    if args.limit:
        samples = samples[: args.limit]
    fingerprint = {**predictor.fingerprint(), "source": source}
    jsonl = out_dir / "per_image.jsonl" if out_dir else None
    done = {}
    if jsonl and args.resume and jsonl.exists():
        done = _read_jsonl(jsonl, fingerprint)
    if jsonl:
        out_dir.mkdir(parents=True, exist_ok=True)
        with open(jsonl, "w") as f:  # rewrite what is kept, then append as we go
            f.write(json.dumps({"fingerprint": fingerprint}) + "\n")
            for row in done.values():
                f.write(json.dumps(row) + "\n")
    todo = [s for s in samples if s.name not in done]
    rows = list(done.values())
    t_start = time.perf_counter()
    n_vis = 0
    bar = tqdm(
        total=len(samples), initial=len(done), unit="img", disable=quiet, dynamic_ncols=True
    )
    with cf.ThreadPoolExecutor(max_workers=max(args.workers, 1)) as pool:
        batches = [todo[i : i + args.batch_size] for i in range(0, len(todo), args.batch_size)]
        loaded = pool.map(
            lambda batch: [load(s) for s in batch], batches
        )  # decoding overlaps inference
        for batch, frames in zip(batches, loaded):
            t0 = time.perf_counter()
            preds, result = predictor.predict([f[0] for f in frames], [s.name for s in batch])
            per_image_s = (time.perf_counter() - t0) / len(batch)
            for k, (s, (rgb, depth_mm), pred) in enumerate(zip(batch, frames, preds)):
                gt = metrics.gt_from_png(depth_mm)
                m = metrics.evaluate_image(gt, pred)
                if m is None:
                    continue
                row = {"name": s.name, "scene": s.scene, "seconds": per_image_s, **m}
                rows.append(row)
                if jsonl:
                    with open(jsonl, "a") as f:
                        f.write(json.dumps(row) + "\n")
                if out_dir and n_vis < args.save_vis:
                    probs = result.bin_probs[k] if result is not None else None
                    save_panel(
                        out_dir / "vis" / (s.name.replace("/", "_").rsplit(".", 1)[0] + ".png"),
                        rgb,
                        gt,
                        pred,
                        probs,
                        predictor.config.depth_bins,
                    )
                    n_vis += 1
            bar.update(len(batch))
            bar.set_postfix(d1=f"{np.mean([r['d1'] for r in rows]):.3f}")
    bar.close()
    scenes = sorted({r["scene"] for r in rows})
    results = {
        "source": source,
        "model": predictor.identity,
        "device": predictor.device,
        "config": predictor.config.to_params(),
        "presets": ["paper", *presets],
        "baseline": predictor.baseline,
        "images": len(rows),
        "missing_files": len(missing),
        "missing_examples": missing[:5],
        "seconds_per_image": float(np.mean([r["seconds"] for r in rows])) if rows else None,
        "wall_seconds": time.perf_counter() - t_start,
        "machine": platform.platform(),
        "means": metrics.mean_metrics(rows),
        "per_scene": {
            sc: {
                "images": sum(r["scene"] == sc for r in rows),
                **metrics.mean_metrics(r for r in rows if r["scene"] == sc),
            }
            for sc in scenes
        },
        "per_image": rows,
    }
    if out_dir:
        atomic_write(
            out_dir / "results.json", lambda f: f.write(json.dumps(results, indent=1).encode())
        )
        atomic_write(out_dir / "results.md", lambda f: f.write(markdown_report(results).encode()))
    return results


def build_parser():
    p = argparse.ArgumentParser(
        prog="depthclip-eval",
        description=__doc__.splitlines()[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=__doc__,
    )
    p.add_argument("--data-root", help="folder holding official_splits/test/<scene>/ (BTS layout)")
    p.add_argument(
        "--split-file",
        help="rows 'scene/rgb_X.jpg scene/sync_depth_X.png [focal]' (default: scan)",
    )
    p.add_argument("--mat", help="nyu_depth_v2_labeled.mat instead of --data-root")
    p.add_argument("--splits", help="splits.mat (testNdxs) with --mat")
    p.add_argument("--params", help="parameter YAML (default: config/depthclip.yaml)")
    p.add_argument(
        "--preset", action="append", default=[], help="config preset(s) on top of 'paper'"
    )
    p.add_argument("--limit", type=int, default=0, help="first N images only")
    p.add_argument("--batch-size", type=int, default=1)
    p.add_argument("--workers", type=int, default=2, help="image-decoding threads")
    p.add_argument("--device", help="auto | cpu | cuda | cuda:N (default: from --params)")
    p.add_argument("--out", help="output folder: results.json, results.md, per_image.jsonl, vis/")
    p.add_argument(
        "--save-vis", type=int, default=0, metavar="N", help="save N panels (needs --out)"
    )
    p.add_argument("--resume", action="store_true", help="continue an interrupted run in --out")
    p.add_argument(
        "--skip-missing", action="store_true", help="skip missing files, count them in results"
    )
    p.add_argument(
        "--baseline", choices=("uniform", "constant"), help="a baseline instead of the model"
    )
    p.add_argument(
        "--constant-value", type=float, help="--baseline constant value (default: median bin)"
    )
    p.add_argument("--seed", type=int, default=0, help="--baseline uniform seed")
    p.add_argument(
        "--sweep", choices=tuple(SWEEPS), help="run the paper's Table 2 (bins) or 3 (tokens)"
    )
    return p


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    if not args.data_root and not args.mat:
        print("depthclip-eval: give --data-root (BTS layout) or --mat/--splits", file=sys.stderr)
        return 2
    out = Path(args.out) if args.out else None
    runs = (
        [[*args.preset, preset] for preset in SWEEPS[args.sweep]] if args.sweep else [args.preset]
    )
    try:
        # Every cheap input (data, every run's config) before the first model load.
        _samples(args)
        overrides = {"device": args.device} if args.device else {}
        for presets in runs:
            load_config(args.params, ["paper", *presets], overrides)
        if args.sweep:
            tables = {}
            for preset in SWEEPS[args.sweep]:
                print(f"== {preset}", file=sys.stderr)
                tables[preset] = evaluate(
                    args, [*args.preset, preset], out / preset if out else None
                )
            text = sweep_table(tables)
            if out:
                atomic_write(out / f"sweep_{args.sweep}.md", lambda f: f.write(text.encode()))
        else:
            results = evaluate(args, args.preset, out)
            text = markdown_report(results)
    except (DataError, ConfigError, ModelLoadError) as exc:
        print(f"depthclip-eval: {exc}", file=sys.stderr)
        return 2
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
