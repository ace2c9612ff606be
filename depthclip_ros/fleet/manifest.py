"""OUTDIR/manifest.jsonl: one JSON line per bag (input, output, status, frames, seconds, error,
model identity, config hash), appended as each bag ends so that a killed run keeps what it
finished, and rewritten with the latest line of each bag when a run ends. No Ray, no rclpy.
"""

from __future__ import annotations

import datetime
import hashlib
import json
from pathlib import Path

from ..errors import FleetError
from ..files import atomic_write, cannot_write

MANIFEST_NAME = "manifest.jsonl"
DONE, FAILED = "done", "failed"


def config_hash(params: dict, options: dict) -> str:
    """What decides a bag's output besides the model: every parameter and the processing
    options (topics, storage). Short SHA-256 of their canonical JSON."""
    text = json.dumps({"params": params, "options": options}, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


class Manifest:
    def __init__(self, outdir: Path):
        self.path = Path(outdir) / MANIFEST_NAME
        self.latest = {}  # input path -> its latest entry
        if self.path.exists():
            for line in self.path.read_text().splitlines():
                try:
                    entry = json.loads(line)
                    self.latest[entry["input"]] = entry
                except (ValueError, KeyError, TypeError):
                    # A line cut by a killed run (or edited by hand): it says nothing reliable.
                    continue

    def done_before(self, job, model: str, config: str) -> bool:
        """Whether `job`'s bag was done with this model and config, and its output is there."""
        entry = self.latest.get(str(job.input))
        return (
            entry is not None
            and entry.get("status") == DONE
            and entry.get("model") == model
            and entry.get("config") == config
            and entry.get("output") == str(job.output)
            and job.output.is_dir()
        )

    def record(self, job, status: str, *, frames=0, seconds=0.0, error=None, model, config):
        entry = dict(
            input=str(job.input),
            output=str(job.output),
            status=status,
            frames=frames,
            seconds=round(seconds, 3),
            error=error,
            model=model,
            config=config,
            finished=datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        )
        self.latest[entry["input"]] = entry
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with open(self.path, "a") as f:  # one write of one line: a killed run cuts at most it
                f.write(json.dumps(entry) + "\n")
        except OSError as exc:
            raise self._write_error(exc) from None

    def compact(self) -> None:
        """One line per bag, the latest; replaces the file atomically."""
        lines = "".join(json.dumps(e) + "\n" for e in self.latest.values())
        try:
            atomic_write(self.path, lambda f: f.write(lines.encode()))
        except OSError as exc:
            raise self._write_error(exc) from None

    def _write_error(self, exc: OSError) -> FleetError:
        return FleetError(
            f"{cannot_write(self.path, exc)}; it keeps the lines written before, and --resume "
            "redoes the bags it does not record as done"
        )
