#!/usr/bin/env bash
# The emulated CPUs of test/emulation (docs/testing.md, "Other CPUs"): Debian's qemu-user-static,
# an arm64 CPython 3.11 unpacked from Debian's arm64 packages (dpkg -x: nothing installed for
# arm64), and the aarch64 wheels of the torch-free core's runtimes from PyPI. x86 without VNNI
# needs no more than qemu: it runs the host's .venv-onnx.
# Needs root and apt (CI's machine); elsewhere the tests skip and say why.
# Usage: test/emulation/setup.sh [FOLDER]   (default .emulation)
set -euo pipefail
cd "$(dirname "$0")/../.."
DEST=${1:-.emulation}
# The wheels the torch-free core needs, as requirements-onnx.txt's lines give them (pip reads
# their markers with the host's Python: 3.11 here, as Debian's arm64 CPython).
WHEELS=$(grep -E '^(numpy|pyyaml|onnxruntime|openvino)([=; <>]|$)' requirements-onnx.txt)
READY="$DEST/.ready"  # written last, with the lines it was made for
[ -f "$READY" ] && [ "$(cat "$READY")" = "$WHEELS" ] && exit 0

if ! command -v qemu-aarch64-static >/dev/null || ! command -v qemu-x86_64-static >/dev/null; then
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq qemu-user-static >/dev/null
fi
if ! dpkg --print-foreign-architectures | grep -qx arm64; then
    dpkg --add-architecture arm64
fi
apt-get update -qq
rm -rf "$DEST" && mkdir -p "$DEST/debs" "$DEST/arm64"
# CPython and the shared libraries it and the wheels load, named for arm64 only.
PACKAGES=$(apt-cache depends --recurse --no-recommends --no-suggests --no-conflicts \
    --no-breaks --no-replaces --no-enhances \
    python3.11-minimal:arm64 libpython3.11-stdlib:arm64 libstdc++6:arm64 libgomp1:arm64 \
    | grep -E '^[a-z0-9].*:arm64$' | grep -v -E '^(dpkg|tar|install-info|perl.*):' | sort -u)
(cd "$DEST/debs" && apt-get download -qq -o APT::Sandbox::User=root $PACKAGES)
for deb in "$DEST"/debs/*.deb; do dpkg -x "$deb" "$DEST/arm64"; done
rm -rf "$DEST/debs"
# Their aarch64 wheels, for Debian's CPython 3.11 and its glibc 2.36 (OpenVINO's need 2.35).
echo "$WHEELS" > "$DEST/requirements.txt"
python3 -m pip install -q --target "$DEST/site-packages" --only-binary=:all: \
    --platform manylinux_2_36_aarch64 --platform manylinux_2_35_aarch64 \
    --platform manylinux_2_28_aarch64 --platform manylinux2014_aarch64 \
    --python-version 3.11 --implementation cp --abi cp311 -r "$DEST/requirements.txt"
echo "$WHEELS" > "$READY"
