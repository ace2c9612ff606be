"""Measuring helpers of the benchmark: the machine's name, interleaved timings, process samples,
Markdown tables."""

import contextlib
import os
import platform
import signal
import sys
import tempfile
import time

import torch

from depthclip_ros.estimator.cpu_features import cpu_model_and_flags, speed_flags
from offline_eval.report import markdown_table


def machine() -> str:
    cpu = cpu_model_and_flags()[0]
    # The instructions that decide CPU speed here (machines of this project differ in them).
    simd = speed_flags() or ["no AVX2"]
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU"
    return (
        f"{cpu}, {os.cpu_count()} cores ({' '.join(simd)}), {gpu}; torch {torch.__version__}, "
        f"Python {platform.python_version()}"
    )


@contextlib.contextmanager
def scratch_folder(prefix: str):
    """Every temporary file of a run (checkpoints, exports, bags, and the package's default
    caches: OpenVINO's blobs of random graphs) in one folder, removed after, also when the run
    fails or is stopped by SIGTERM (a CI's timeout): runs leave no gigabytes behind."""
    handler = signal.signal(signal.SIGTERM, lambda *_: sys.exit(128 + signal.SIGTERM))
    tempdir, cache = tempfile.tempdir, os.environ.get("XDG_CACHE_HOME")
    with tempfile.TemporaryDirectory(prefix=prefix) as scratch:
        tempfile.tempdir = scratch
        os.environ["XDG_CACHE_HOME"] = os.path.join(scratch, "cache")  # its processes' too
        try:
            yield scratch
        finally:
            tempfile.tempdir = tempdir
            if cache is None:
                os.environ.pop("XDG_CACHE_HOME", None)
            else:
                os.environ["XDG_CACHE_HOME"] = cache
            signal.signal(signal.SIGTERM, handler)


def timed(fns, reps, warmup=1, sync=None):
    """Seconds per call of each function, calls interleaved (a, b, a, b, ...) so that the
    machine's drift over the run weighs on every function alike."""
    for fn in fns:
        for _ in range(warmup):
            fn()
    out = [[] for _ in fns]
    for _ in range(reps):
        for fn, times in zip(fns, out):
            if sync:
                sync()
            t0 = time.perf_counter()
            fn()
            if sync:
                sync()
            times.append(time.perf_counter() - t0)
    return out


def sample_process(pid, samples, stop):
    """Append (wall time, RSS MB, CPU s) of process `pid` every 0.25 s until `stop` is set."""
    while not stop.is_set():
        samples.append((time.time(), _rss_mb(pid), _cpu_s(pid)))
        stop.wait(0.25)


def cpu_share(window) -> float:
    """A process's CPU over a window of its `sample_process` samples, in cores (1.0: one core
    busy the whole window)."""
    (t0, _, cpu0), (t1, _, cpu1) = window[0], window[-1]
    return (cpu1 - cpu0) / (t1 - t0)


def _rss_mb(pid):
    with open(f"/proc/{pid}/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def _cpu_s(pid):
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


table = markdown_table  # the benchmark's tables are the eval's
