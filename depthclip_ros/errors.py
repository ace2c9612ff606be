"""The package's errors: one root, `DepthClipError`, so an entry point catches one class.

Each error's message is the whole story in one line (what was wrong, and how to fix it); the
node, the tools and the eval print it as it is, never a traceback. No dependencies.
"""

from __future__ import annotations

from typing import Any


class DepthClipError(Exception):
    """Root of every error this package raises on purpose."""


class ConfigError(DepthClipError, ValueError):
    """A configuration value is invalid; the message names the field and value."""

    def __init__(self, field: str, value: Any, reason: str):
        self.field = field
        self.value = value
        super().__init__(f"invalid config field '{field}' = {value!r}: {reason}")


class ModelLoadError(DepthClipError, RuntimeError):
    """The model cannot be loaded (missing weights, bad checkpoint, unavailable device)."""


class ImageDecodeError(DepthClipError, ValueError):
    """A frame cannot be turned into RGB (encoding, size, corrupt data)."""


class ImageSizeError(DepthClipError, ValueError):
    """A frame's size does not fit the configuration (the NYU crop, an exported graph's size)."""


class BagError(DepthClipError):
    """A bag cannot be read or processed as asked."""


class OutputExistsError(BagError):
    """The output exists and replacing it was not asked for."""


class FleetError(DepthClipError, RuntimeError):
    """A fleet run cannot start: no Ray cluster at the address, model workers that cannot
    start, resources the cluster does not have."""


class BagStopped(FleetError):
    """Raised inside a fleet's bag task that the driver asked to stop (Ctrl-C): not a failure
    of the bag; its staging is removed on the way and it is not written to the manifest."""


class LaunchError(DepthClipError, RuntimeError):
    """A launch argument is invalid; raised before anything is started."""


class AnchorError(DepthClipError, ValueError):
    """Range data for metric_scale cannot be used as it is (a malformed scan, cloud or depth
    image, a transform that is not given, a ground that cannot be seen); the frame's depth goes
    out with the last good fit, or uncalibrated."""
