"""32FC1 depth -> image_transport's "compressedDepth" (sensor_msgs/CompressedImage), as
compressed_depth_image_transport's codec.cpp encodes it. NumPy and zlib only.

`data` is a 12-byte ConfigHeader (int32 format INV_DEPTH = 0, float32 depthQuantA, float32
depthQuantB, little-endian as on the robots that run the plugin) followed by a 16-bit grayscale
PNG of the quantised inverse depth: v = depthQuantA / depth + depthQuantB in float32, truncated
to uint16, with depthQuantA = Z0 (Z0 + 1) (Z0: `depth_quantization`) and depthQuantB =
1 - depthQuantA / `depth_max`; depth at or beyond `depth_max`, and NaN, are coded 0 (decoded as
NaN). One code step is depth^2 / depthQuantA metres. Values above 65535 (depth nearer than
about depthQuantA / 65535 m, where the plugin's C++ conversion is undefined) saturate.
"""

from __future__ import annotations

import struct
import zlib

import numpy as np

FORMAT = "32FC1; compressedDepth png"
INV_DEPTH = 0
HEADER = struct.Struct("<iff")  # the plugin's ConfigHeader: format, depthParam[2]
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def quantisation(depth_max: float, depth_quantization: float) -> tuple:
    """(depthQuantA, depthQuantB) as float32, as the plugin computes them."""
    z0 = np.float32(depth_quantization)
    quant_a = np.float32(z0 * (z0 + np.float32(1.0)))
    quant_b = np.float32(np.float32(1.0) - quant_a / np.float32(depth_max))
    return quant_a, quant_b


def inverse_depth(depth: np.ndarray, depth_max: float, depth_quantization: float) -> np.ndarray:
    """(H, W) float32 metres -> (H, W) uint16 codes (0: NaN or at or beyond depth_max)."""
    quant_a, quant_b = quantisation(depth_max, depth_quantization)
    depth = np.asarray(depth, np.float32)
    # Whole-array arithmetic: a boolean-mask assignment is slow where NaN is scattered.
    with np.errstate(divide="ignore", invalid="ignore"):  # 0 -> inf, NaN stays NaN
        values = np.divide(quant_a, depth)  # float32 arithmetic, as the plugin's
        values += quant_b
        values *= depth < np.float32(depth_max)  # False for NaN, as the plugin's comparison
    np.fmax(values, np.float32(0), out=values)  # NaN (a NaN depth) -> 0
    np.fmin(values, np.float32(65535), out=values)
    return values.astype(np.uint16)  # truncation toward zero


def encode(depth: np.ndarray, depth_max: float, depth_quantization: float, png_level: int):
    """(format, data) of a CompressedImage carrying `depth` (H, W) float32 metres."""
    quant_a, quant_b = quantisation(depth_max, depth_quantization)
    codes = inverse_depth(depth, depth_max, depth_quantization)
    header = HEADER.pack(INV_DEPTH, float(quant_a), float(quant_b))
    return FORMAT, header + png16(codes, png_level)


def png16(codes: np.ndarray, level: int) -> bytes:
    """A 16-bit grayscale PNG of `codes` (H, W) uint16, each row filtered with 'Sub' (the
    difference to the pixel on the left: inverse depth is smooth, so most bytes become 0)."""
    height, width = codes.shape
    raw = codes.astype(">u2").view(np.uint8).reshape(height, 2 * width)
    filtered = np.empty((height, 2 * width + 1), np.uint8)
    filtered[:, 0] = 1  # filter type Sub
    filtered[:, 1:3] = raw[:, :2]
    np.subtract(raw[:, 2:], raw[:, :-2], out=filtered[:, 3:])  # modulo 256, per byte
    ihdr = struct.pack(">IIBBBBB", width, height, 16, 0, 0, 0, 0)
    idat = zlib.compress(filtered, level)
    return PNG_SIGNATURE + _chunk(b"IHDR", ihdr) + _chunk(b"IDAT", idat) + _chunk(b"IEND", b"")


def _chunk(kind: bytes, body: bytes) -> bytes:
    crc = zlib.crc32(kind + body) & 0xFFFFFFFF
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", crc)
