"""What the CPU can compute natively, read from /proc/cpuinfo: which lower precisions pay on it
(bf16 needs avx512_bf16 or AMX on x86, bf16 on Arm; without it oneDNN emulates bf16, slower than
fp32). No torch import: the ONNX install asks too.
"""

from __future__ import annotations

import functools
import platform

# The instructions that decide this package's speed on a CPU, named as Linux names them.
SPEED_FLAGS = (
    "avx2",
    "avx512f",
    "avx512_vnni",
    "avx_vnni",
    "avx512_bf16",
    "amx_bf16",
    "amx_int8",
    "asimddp",  # Arm dot product (int8)
    "bf16",  # Arm bf16
    "i8mm",  # Arm int8 matrix multiply
)
NATIVE_BF16 = {"avx512_bf16", "amx_bf16", "bf16"}


@functools.lru_cache(maxsize=1)
def cpu_model_and_flags() -> tuple:
    """(model name, set of feature flags) of the first CPU in /proc/cpuinfo; ("", set())
    where it cannot be read (not Linux)."""
    model, flags = "", set()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                key, _, value = line.partition(":")
                key = key.strip()
                if key in ("model name", "Model", "CPU part") and not model:
                    model = value.strip()
                elif key in ("flags", "Features"):  # x86, Arm
                    flags = set(value.split())
                    break
    except OSError:
        pass
    return model or platform.processor() or "unknown CPU", flags


def native_bf16() -> bool:
    """True where the CPU computes bf16 in hardware."""
    return bool(NATIVE_BF16 & cpu_model_and_flags()[1])


def speed_flags() -> list:
    """The SPEED_FLAGS this CPU has, in that order."""
    flags = cpu_model_and_flags()[1]
    return [f for f in SPEED_FLAGS if f in flags]
