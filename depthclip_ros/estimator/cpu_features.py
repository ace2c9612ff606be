"""What the CPU can compute natively, read from /proc/cpuinfo (x86's and Arm's): which lower
precisions pay on it (bf16 needs avx512_bf16 or AMX on x86, bf16 on Arm; without it oneDNN
emulates bf16, slower than fp32) and whether its int8 kernels are exact (x86 without VNNI
saturates u8 x s8 products pairwise at 16 bits). No torch import: the ONNX install asks too.
"""

from __future__ import annotations

import functools
import os
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
    "i8mm",  # Arm int8 matrix multiply
    "bf16",  # Arm bf16
    "sve",
)
NATIVE_BF16 = {"avx512_bf16", "amx_bf16", "bf16"}
# x86 int8 dot products that add u8 x s8 products in 32 bits; without one, ONNX Runtime's and
# oneDNN's u8s8 kernels use VPMADDUBSW, which saturates each pair of products at 16 bits.
X86_EXACT_INT8 = {"avx512_vnni", "avx_vnni", "amx_int8"}
# Arm's /proc/cpuinfo names no CPU: (implementer, part) -> name (Arm's and NVIDIA's manuals).
ARM_PARTS = {
    ("0x41", "0xd03"): "Arm Cortex-A53",
    ("0x41", "0xd05"): "Arm Cortex-A55",
    ("0x41", "0xd08"): "Arm Cortex-A72",
    ("0x41", "0xd0b"): "Arm Cortex-A76",
    ("0x41", "0xd0c"): "Arm Neoverse-N1",
    ("0x41", "0xd40"): "Arm Neoverse-V1",
    ("0x41", "0xd42"): "Arm Cortex-A78AE",
    ("0x41", "0xd49"): "Arm Neoverse-N2",
    ("0x41", "0xd4f"): "Arm Neoverse-V2",
    ("0x4e", "0x004"): "NVIDIA Carmel",
}


def parse_cpuinfo(text: str, machine: str = "") -> tuple:
    """(model name, set of feature flags) of the first CPU in a /proc/cpuinfo text: x86's
    "model name" and "flags", Arm's "Features" and its CPU named from "CPU implementer" and "CPU
    part" (or a board's "Model" line)."""
    fields, board = {}, ""
    for line in text.splitlines():
        key, _, value = line.partition(":")
        key, value = key.strip(), value.strip()
        if key == "Model":  # a board's own line at the end (Raspberry Pi)
            board = value
        elif key and key not in fields:
            fields[key] = value
    flags = set((fields.get("flags") or fields.get("Features") or "").split())
    model = fields.get("model name", "")
    if not model and "CPU part" in fields:
        ids = (fields.get("CPU implementer", "").lower(), fields["CPU part"].lower())
        model = ARM_PARTS.get(ids, f"Arm CPU part {ids[1]} (implementer {ids[0]})")
        model = f"{model}, {board}" if board else model
    return model or platform.processor() or machine or "unknown CPU", flags


@functools.lru_cache(maxsize=1)
def cpu_model_and_flags() -> tuple:
    """(model name, set of feature flags) of this machine's first CPU; ("unknown CPU", set())
    where /proc/cpuinfo cannot be read (not Linux)."""
    try:
        with open("/proc/cpuinfo") as f:
            text = f.read()
    except OSError:
        text = ""
    return parse_cpuinfo(text, platform.machine())


def usable_cores(cpus=None, sysfs: str = "/sys/devices/system/cpu") -> int:
    """Physical cores among the CPUs this process may run on (its affinity: `taskset`, a
    container's cpuset), hyperthreads of one core counted once; `cpus`: those CPUs' numbers
    (default: this process's). ONNX Runtime's own default counts the whole machine's cores
    whatever the affinity (torch's and OpenVINO's follow it), so a pinned node would run more
    threads than it has cores."""
    if cpus is None:
        try:
            cpus = os.sched_getaffinity(0)
        except AttributeError:  # not Linux
            return os.cpu_count() or 1
    cores = set()
    for cpu in cpus:
        topology = f"{sysfs}/cpu{cpu}/topology"
        try:
            with (
                open(f"{topology}/physical_package_id") as package,
                open(f"{topology}/core_id") as core,
            ):
                cores.add((package.read().strip(), core.read().strip()))
        except OSError:  # no topology (some containers): each CPU a core
            cores.add(("cpu", str(cpu)))
    return max(1, len(cores))


def native_bf16() -> bool:
    """True where the CPU computes bf16 in hardware."""
    return bool(NATIVE_BF16 & cpu_model_and_flags()[1])


def is_arm() -> bool:
    return platform.machine().lower() in ("aarch64", "arm64")


def int8_saturates() -> bool:
    """True on an x86 CPU without VNNI (AVX2 or AVX-512 alone), whose u8 x s8 kernels saturate
    pairs of products at 16 bits: int8 weights beyond 7 bits then lose depth there."""
    return not is_arm() and not (X86_EXACT_INT8 & cpu_model_and_flags()[1])


def speed_flags(flags=None) -> list:
    """The SPEED_FLAGS this CPU (or `flags`) has, in that order."""
    flags = cpu_model_and_flags()[1] if flags is None else flags
    return [f for f in SPEED_FLAGS if f in flags]


def cpu_description() -> str:
    """This CPU in words, as a measurement names it: 'AMD EPYC (x86_64: avx2 avx512_vnni)'."""
    model, flags = cpu_model_and_flags()
    simd = speed_flags(flags) or ["no AVX2" if not is_arm() else "no dot product"]
    return f"{model} ({platform.machine()}: {' '.join(simd)})"
