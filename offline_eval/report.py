"""Markdown tables and PNG panels of evaluation results."""

from __future__ import annotations

import numpy as np
from PIL import Image, ImageDraw

from depthclip_ros import metrics
from depthclip_ros.files import save_png
from depthclip_ros.messages.colormaps import colorize

HEADERS = {
    "d1": "δ1↑",
    "d2": "δ2↑",
    "d3": "δ3↑",
    "abs_rel": "AbsRel↓",
    "log10": "log10↓",
    "rmse": "RMSE↓",
    "sq_rel": "SqRel↓ (extra)",
    "rmse_log": "RMSElog↓ (extra)",
    "silog": "SILog↓ (extra)",
}


def _row(label, values, keys):
    return (
        "| "
        + label
        + " | "
        + " | ".join(f"{values[k]:.3f}" if k in values else "" for k in keys)
        + " |"
    )


def markdown_report(results: dict) -> str:
    keys = metrics.ALL_METRICS
    head = "| | " + " | ".join(HEADERS[k] for k in keys) + " |\n|---|" + "---|" * len(keys)
    ours = results["means"]
    label = "ours" if not results["baseline"] else f"ours: baseline {results['baseline']}"
    align = results.get("align", "none")
    if align != "none":
        label += f", --align {align}"
    lines = [
        f"# NYU Depth V2 evaluation ({results['images']} images)",
        "",
        f"source: `{results['source']}`; model: `{results['model']}`; "
        f"device: {results['device']}; "
        f"{(results['seconds_per_image'] or 0) * 1e3:.1f} ms/image; machine: {results['machine']}",
        f"missing files skipped: {results['missing_files']}",
        *(
            [
                f"--align {align}: {results['aligned_images']} of {results['images']} images "
                "fitted (the others scored as the model gave them); not the paper's protocol"
            ]
            if align != "none"
            else []
        ),
        "",
        head,
        _row(label, ours, keys),
    ]
    for name, paper in metrics.PAPER_ROWS.items():
        lines.append(_row(name, paper, keys))
        diff = {k: ours[k] - paper[k] for k in paper if k in ours}
        lines.append(_row(f"difference ours - {name}", diff, keys))
    lines += [
        "",
        "The paper's numbers are for its 654-image test split with the real CLIP RN50 weights;",
        "a row from fewer images or other weights is not comparable.",
        "",
        "## Per scene",
        "",
        head.replace("| |", "| scene (images) |", 1),
    ]
    for scene, vals in results["per_scene"].items():
        lines.append(_row(f"{scene} ({vals['images']})", vals, keys))
    if results.get("uncertainty"):
        lines += [
            "",
            "## Uncertainty: error against the predicted std",
            "",
            "Valid pixels of every image, grouped by the std of depth the model predicted (its",
            "bin distribution's spread). A useful std has the error grow with it; for a Gaussian",
            "error of that std, 68 % of pixels would lie within 1 std and 95 % within 2.",
            "",
            "| predicted std | pixels | share | mean abs error (m) | RMSE (m) | within 1 std |"
            " within 2 std |",
            "|---|---|---|---|---|---|---|",
        ]
        for r in results["uncertainty"]:
            cells = [
                "-" if r[k] is None else f"{r[k]:.3f}"
                for k in ("share", "mean_abs_err", "rmse", "within_1sd", "within_2sd")
            ]
            lines.append(f"| {r['std']} | {r['pixels']} | " + " | ".join(cells) + " |")
    if results.get("clearing"):
        lines += ["", *clearing_report(results["clearing"])]
    return "\n".join(lines) + "\n"


def clearing_report(clearing: dict) -> list:
    """Lines of the points/clearing section: the total, then each image."""
    quantities = ("cleared_obstacles", "given_up", "mean_cleared_depth")
    head = [
        "| clear to | cleared obstacles | free space given up | mean cleared depth (m) |",
        "|---|---|---|---|",
    ]

    def table(rows):
        return [
            f"| {r['clear_to']} | "
            + " | ".join("-" if r[k] is None else f"{r[k]:.3f}" for k in quantities)
            + " |"
            for r in rows
        ]

    lines = [
        "## Clearing: points/clearing against the true depth",
        "",
        "Valid pixels of every image. A costmap clears the ray up to each point: *cleared",
        "obstacles* is the share of pixels whose clearing depth lies beyond the true depth (the",
        "cell of a real surface cleared); *free space given up* is the share of the ray length",
        "that clearing to the mean depth (`points` as a clearing source) clears and this does",
        "not. q is clearing_quantile; random weights give no meaningful figure.",
        "",
        *head,
        *table(clearing["total"]),
        "",
        "### Per image",
    ]
    for name, rows in clearing["per_image"].items():
        lines += ["", f"`{name}`", "", *head, *table(rows)]
    return lines


def markdown_table(head, rows) -> str:
    """A Markdown table of `head` and `rows` (cells as str gives them)."""
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    lines += ["| " + " | ".join(str(c) for c in r) + " |" for r in rows]
    return "\n".join(lines)


def sweep_table(tables: dict) -> str:
    """The paper's Table 2/3 shape: one block per scene class and one for all; rows are the
    sweep's runs, and the block for all carries the paper's δ1 of each row it reports."""
    keys = metrics.PAPER_METRICS
    head = "| run | " + " | ".join(HEADERS[k] for k in keys) + " |\n|---|" + "---|" * len(keys)
    scenes = sorted({s for r in tables.values() for s in r["per_scene"]})
    out = []
    for scene in scenes + ["all"]:
        block_head = head
        if scene == "all":
            block_head = head.replace(" |\n|---|", " | paper δ1 |\n|---|---|", 1)
        out += [f"### {scene}", "", block_head]
        for run, r in tables.items():
            vals = r["means"] if scene == "all" else r["per_scene"].get(scene)
            if not vals:
                continue
            row = _row(run, vals, keys)
            if scene == "all":
                paper = metrics.PAPER_SWEEP_D1.get(run)
                row += f" {paper:.3f} |" if paper is not None else " not in the paper |"
            out.append(row)
        out.append("")
    return "\n".join(out)


def _colour_bar(width, vmax, height=28):
    bar = colorize(np.tile(np.linspace(0, vmax, width, dtype=np.float32), (12, 1)), 0, vmax)
    canvas = Image.new("RGB", (width, height), (255, 255, 255))
    canvas.paste(Image.fromarray(bar), (0, 0))
    draw = ImageDraw.Draw(canvas)
    for t in np.linspace(0, vmax, 6):
        x = int(t / vmax * (width - 1))
        draw.text((min(x, width - 40), 13), f"{t:.1f} m", fill=(0, 0, 0))
    return canvas


def _bin_bars(probs_cell, bins, size=(200, 150)):
    img = Image.new("RGB", size, (255, 255, 255))
    draw = ImageDraw.Draw(img)
    k = len(probs_cell)
    w = size[0] // k
    for i, p in enumerate(probs_cell):
        h = int(p * (size[1] - 20))
        draw.rectangle(
            [i * w + 2, size[1] - 15 - h, (i + 1) * w - 2, size[1] - 15], fill=(60, 110, 200)
        )
        draw.text((i * w + 2, size[1] - 13), f"{bins[i]:g}", fill=(0, 0, 0))
    return img


def save_panel(path, rgb, gt, pred, bin_probs, bins, std=None, crop=True):
    """RGB | GT | prediction | |error| on one colour scale with a colour bar, and the predicted
    std on the same scale when given (so it compares with |error|); below, the per-bin
    responses of three grid cells (the paper's Fig. 4) when the model's probabilities are given;
    `crop`: NYU's eval crop (a camera's frames: none)."""
    valid = metrics.valid_pixels(gt, pred, crop)
    vmax = float(max(gt[valid].max() if valid.any() else 1.0, 1.0))
    gt_show = np.where(gt > metrics.MIN_DEPTH, gt, np.nan)
    pred_show = np.where(pred > metrics.MIN_DEPTH, pred, np.nan)
    err = np.where(valid, np.abs(gt - pred), np.nan)
    shown = (gt_show, pred_show, err) + (() if std is None else (np.where(valid, std, np.nan),))
    tiles = [rgb] + [colorize(a, 0, vmax) for a in shown]
    top = np.concatenate(tiles, axis=1)
    w = top.shape[1]
    panel = Image.new(
        "RGB", (w, top.shape[0] + 28 + (160 if bin_probs is not None else 0)), (255, 255, 255)
    )
    panel.paste(Image.fromarray(top), (0, 0))
    draw = ImageDraw.Draw(panel)
    labels = ("RGB", "ground truth", "DepthCLIP", "|error|", "predicted std")[: len(tiles)]
    for i, label in enumerate(labels):
        draw.text((i * rgb.shape[1] + 6, 6), label, fill=(255, 255, 255))
    panel.paste(_colour_bar(w, vmax), (0, top.shape[0]))
    if bin_probs is not None:
        _, h, wc = bin_probs.shape
        for j, (r, c) in enumerate(((h // 2, wc // 2), (h - 1, wc // 2), (0, 0))):
            panel.paste(_bin_bars(bin_probs[:, r, c], bins), (j * 220, top.shape[0] + 32))
            draw.text((j * 220 + 4, top.shape[0] + 32), f"cell ({r},{c})", fill=(0, 0, 0))
    save_png(path, np.asarray(panel))
