"""compressedDepth against an independent decoder written from compressed_depth_image_transport's
codec.cpp (decodeCompressedDepthImage): format string, 12-byte ConfigHeader, a 16-bit PNG read
by Pillow, depth = depthQuantA / (v - depthQuantB), 0 -> NaN."""

import io
import warnings

import numpy as np
import pytest
from helpers import decode_like_the_plugin
from PIL import Image as PILImage

from depthclip_ros.messages import compressed_depth


@pytest.mark.parametrize("depth_max, z0", [(10.0, 100.0), (4.0, 50.0), (100.0, 150.0)])
def test_decodes_within_one_code_step_with_nan_where_the_plugin_gives_it(depth_max, z0):
    rng = np.random.default_rng(1)
    quant_a = z0 * (z0 + 1)
    nearest = 1.05 * quant_a / (65535 - (1 - quant_a / depth_max))  # nearer saturates
    depth = rng.uniform(nearest, min(depth_max * 1.5, 12.0), (48, 64)).astype(np.float32)
    depth[3, 4] = np.nan
    depth[5, 6] = depth_max  # at depth_max: coded 0, as `depth < depth_max` is false
    fmt, data = compressed_depth.encode(depth, depth_max, z0, png_level=6)
    decoded, quant_a, quant_b, header_format = decode_like_the_plugin(fmt, data)
    assert header_format == 0  # INV_DEPTH
    assert quant_a == np.float32(np.float32(z0) * np.float32(z0 + 1.0))
    assert quant_b == np.float32(1.0 - quant_a / np.float32(depth_max))
    valid = np.isfinite(depth) & (depth < depth_max)
    np.testing.assert_array_equal(np.isnan(decoded), ~valid)
    step = depth[valid] ** 2 / quant_a  # one code step at that depth
    # Truncation puts the decoded depth up to one step beyond the true one (float32 rounding:
    # a little slack).
    error = decoded[valid] - depth[valid]
    assert (error >= -1e-4 * depth[valid]).all() and (error <= step * 1.01 + 1e-5).all()


def test_the_png_is_a_16_bit_grayscale_png_with_every_level():
    depth = np.linspace(0.5, 9.0, 30 * 40, dtype=np.float32).reshape(30, 40)
    sizes = []
    for level in (0, 3, 9):
        _, data = compressed_depth.encode(depth, 10.0, 100.0, level)
        png = PILImage.open(io.BytesIO(data[12:]))
        assert (png.mode, png.size) == ("I;16", (40, 30))
        sizes.append(len(data))
    assert sizes[0] > sizes[1] >= sizes[2]  # level 0 stores, higher levels compress


def test_near_depths_saturate_instead_of_wrapping():
    depth = np.array([[0.01, 0.15, 1.0]], np.float32)  # 10100 / 0.01 is beyond uint16
    codes = compressed_depth.inverse_depth(depth, 10.0, 100.0)
    assert codes[0, 0] == codes[0, 1] == 65535 and 0 < codes[0, 2] < 65535


@pytest.mark.parametrize("depth_max, z0", [(10.0, 100.0), (4.0, 50.0), (0.5, 1.0)])
def test_codes_equal_the_plugins_rule_pixel_by_pixel_at_the_edges(depth_max, z0):
    # The plugin's loop, one pixel at a time in float32: `depth < depth_max` (false for NaN)
    # codes quantA / depth + quantB truncated (saturated here), anything else 0.
    quant_a = np.float32(np.float32(z0) * np.float32(z0 + 1.0))
    quant_b = np.float32(np.float32(1.0) - quant_a / np.float32(depth_max))

    def plugin_code(d):
        if not d < np.float32(depth_max):
            return 0
        with np.errstate(divide="ignore"):
            value = quant_a / d + quant_b
        return int(min(max(value, np.float32(0)), np.float32(65535)))

    dmax = np.float32(depth_max)
    edges = [0.0, -0.0, -1.0, 1e-6, 1e-3, np.inf, -np.inf, np.nan, dmax, 2 * dmax]
    edges += [np.nextafter(dmax, np.float32(0)), np.nextafter(dmax, np.float32(np.inf))]
    rng = np.random.default_rng(3)
    depth = np.concatenate([edges, rng.uniform(-0.1, 1.5 * depth_max, 500)]).astype(np.float32)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no RuntimeWarning for 0, NaN or inf in the node's log
        codes = compressed_depth.inverse_depth(depth.reshape(2, -1), depth_max, z0)
    np.testing.assert_array_equal(codes.ravel(), [plugin_code(d) for d in depth])
