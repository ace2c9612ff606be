"""Which bags an archive holds, and where each one's output goes: the inputs' layout mirrored
under OUTDIR. A rosbag2 folder (metadata.yaml inside) is one bag and is not searched further; a
.mcap or .db3 file outside such a folder is one bag. No Ray, no rclpy.
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

from ..errors import BagError
from ..files import file_in_the_way

BAG_FILE_SUFFIXES = (".mcap", ".db3")


@dataclasses.dataclass(frozen=True)
class BagJob:
    input: Path  # a rosbag2 folder, .mcap or .db3 file
    output: Path  # the rosbag2 folder to write
    frames: int = 0  # image messages on the processed topics (0 until counted)


def is_bag_folder(path: Path) -> bool:
    return path.is_dir() and (path / "metadata.yaml").is_file()


def _bags_under(root: Path):
    """Bags under the folder `root` as paths relative to it, in sorted order."""
    for folder, subfolders, files in os.walk(root):
        here = Path(folder)
        if is_bag_folder(here):
            subfolders.clear()  # its .mcap / .db3 files are the bag's, not bags of their own
            yield here.relative_to(root)
            continue
        subfolders.sort()
        for name in sorted(files):
            if name.endswith(BAG_FILE_SUFFIXES):
                yield (here / name).relative_to(root)


def output_for(relative: Path) -> Path:
    """A bag's output folder relative to OUTDIR: run1.mcap -> run1, logs/run2 -> logs/run2."""
    return relative.with_suffix("") if relative.suffix in BAG_FILE_SUFFIXES else relative


def find_bags(inputs, outdir: Path) -> list:
    """BagJobs of every bag under `inputs` (bags or folders), outputs under `outdir`: a bag given
    itself lands at OUTDIR/<its name>, one found in a folder at OUTDIR/<its path in the folder>.
    BagError when OUTDIR is (inside) a file, an input is missing or holds no bag, or two bags would
    share an output."""
    outdir = Path(outdir)
    blocking = file_in_the_way(outdir)
    if blocking:
        where = "is a file" if blocking == outdir else "is inside a file"
        raise BagError(f"OUTDIR {outdir} {where}, not a folder")
    jobs, seen = [], {}
    for given in inputs:
        given = Path(given)
        if not given.exists():
            raise BagError(f"{given} does not exist")
        if is_bag_folder(given) or (given.is_file() and given.suffix in BAG_FILE_SUFFIXES):
            found = [(given, output_for(Path(given.name)))]
        elif given.is_dir():
            found = [(given / rel, output_for(rel)) for rel in _bags_under(given)]
            if not found:
                raise BagError(
                    f"no rosbag2 bag (folder with metadata.yaml, .mcap, .db3) in {given}"
                )
        else:
            raise BagError(f"{given} is not a rosbag2 bag or a folder of bags")
        for bag, relative in found:
            output = outdir / relative
            if output in seen:
                raise BagError(f"{seen[output]} and {bag} would both be written to {output}")
            if outdir.resolve() in (bag.resolve(), *bag.resolve().parents):
                raise BagError(f"{bag} is inside OUTDIR {outdir}; give an OUTDIR of its own")
            seen[output] = bag
            jobs.append(BagJob(bag, output))
    return jobs
