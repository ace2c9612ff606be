"""Python on CPUs this machine is not: qemu-user runs a process as an x86 CPU without VNNI
(Haswell: AVX2 only, the int8 kernels that saturate) or as a Raspberry Pi 5's Cortex-A76
(aarch64), in a private mount namespace whose /proc/cpuinfo is that CPU's (canned texts in
cpuinfo/: qemu-user shows the host's, and ONNX Runtime's cpuinfo crashes on an x86 one under
qemu-aarch64). test/emulation/setup.sh prepares qemu, the arm64 CPython and its wheels (CI's
.ci/run calls it); without them each CPU says why it is unavailable.
"""

import dataclasses
import os
import platform
import shutil
import subprocess
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
EMULATION = REPO / ".emulation"
CPUINFO = Path(__file__).resolve().parent / "cpuinfo"
SETUP = "test/emulation/setup.sh (root, apt; CI's .ci/run runs it)"


@dataclasses.dataclass(frozen=True)
class EmulatedCpu:
    name: str
    qemu: str  # the qemu-user binary
    qemu_cpu: str  # its -cpu model
    cpuinfo: str  # the /proc/cpuinfo shown, in cpuinfo/
    python: Path
    env: dict  # beside _base_env(), read at each run
    prepared: Path  # what says its set-up finished

    def unavailable(self):
        """Why this CPU cannot be emulated here, or None."""
        if platform.system() != "Linux" or platform.machine() != "x86_64":
            return f"emulation runs on an x86_64 Linux host (this is {platform.machine()})"
        if shutil.which(self.qemu) is None:
            return f"no {self.qemu} (Debian's qemu-user-static): run {SETUP}"
        if not self.prepared.exists():
            return f"no {self.prepared.relative_to(REPO)}: run {SETUP}"
        if shutil.which("unshare") is None or os.geteuid() != 0:
            return "a private /proc/cpuinfo needs unshare -m as root"
        return None

    def run(self, args, timeout=600):
        """`python args` on this CPU; the CompletedProcess (text)."""
        cpuinfo = CPUINFO / self.cpuinfo
        command = [self.qemu, "-cpu", self.qemu_cpu, str(self.python), *map(str, args)]
        script = f'mount --bind "{cpuinfo}" /proc/cpuinfo && exec "$@"'
        return subprocess.run(
            ["unshare", "-m", "sh", "-c", script, "emulated", *command],
            env={**_base_env(), **self.env},
            capture_output=True,
            text=True,
            timeout=timeout,
        )


def _base_env():
    """What an emulated process keeps of this one's environment: its caches and ROS logs
    where the tests put theirs (test/conftest.py), as they are when it starts."""
    keep = ("PATH", "HOME", "LANG", "TMPDIR", "XDG_CACHE_HOME", "ROS_LOG_DIR")
    return {k: os.environ[k] for k in keep if k in os.environ}


# The torch-free install of the host (.venv-onnx), run on an x86 CPU without VNNI. The ROS
# wheels' start-up re-executes Python to set its library path, which would leave qemu: it is
# told that this was done.
X86_AVX2 = EmulatedCpu(
    name="x86-64 Haswell (AVX2, no VNNI)",
    qemu="qemu-x86_64-static",
    qemu_cpu="Haswell-v4",
    cpuinfo="intel_haswell.txt",
    python=REPO / ".venv-onnx" / "bin" / "python",
    env={"_ROS_WHEELS_BOOTSTRAP_COMPLETE": "1"},
    prepared=REPO / ".venv-onnx" / ".installed",  # make venv-onnx's stamp
)
# Debian's arm64 CPython with the aarch64 wheels of the runtimes, the package from the checkout.
AARCH64_PI5 = EmulatedCpu(
    name="aarch64 Cortex-A76 (Raspberry Pi 5)",
    qemu="qemu-aarch64-static",
    qemu_cpu="cortex-a76",
    cpuinfo="raspberry_pi_5.txt",
    python=EMULATION / "arm64" / "usr" / "bin" / "python3.11",
    env={
        "QEMU_LD_PREFIX": str(EMULATION / "arm64"),
        "PYTHONHOME": str(EMULATION / "arm64" / "usr"),
        "PYTHONPATH": f"{EMULATION / 'site-packages'}:{REPO}",
    },
    prepared=EMULATION / ".ready",  # setup.sh's last step
)
