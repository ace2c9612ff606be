"""A CapturedFrame on the CPU: the eager path's outputs, computed when the frame is started
(under the text features, bins and temperature it was started with, as a replay reads them),
handed back through the real slot ring and InFlight (a slot's arrays taken before it serves
again); only the device (streams, events, pinned memory, the graph) is left out. Counts its
captures and replays. `Held`: its arrays held until the test lets them arrive."""

import types

import numpy as np
import torch
from helpers import wait_until

from depthclip_ros.estimator import cuda_graph
from depthclip_ros.estimator.depth_head import bin_probabilities, temperature_scale
from depthclip_ros.estimator.result import OUTPUT_FIELDS


class Arrived:
    """A CUDA event whose work is done (the stand-in's copies are made at once)."""

    def query(self) -> bool:
        return True

    def synchronize(self) -> None:
        pass


def stand_in(offset_m=0.0, fails=False):
    """A CapturedFrame stand-in class: the eager path's outputs (depth moved by `offset_m`), or
    a capture that raises."""

    class StandIn:
        made, replays = [], []

        def __init__(self, model, cfg, batch, height, width, text, bins):
            if fails:
                raise RuntimeError("operation not permitted when stream is capturing")
            self.model, self.cfg = model, cfg
            StandIn.made.append((batch, height, width))
            self.ring = cuda_graph.SlotRing(
                types.SimpleNamespace(host_out=[], arrived=Arrived(), holder=None)
                for _ in range(cuda_graph.SLOTS)
            )

        @torch.inference_mode()
        def run(self, images, text, bins, temperature, fields=OUTPUT_FIELDS):
            """CapturedFrame's forward, eagerly, on the frame's own text, bins and T."""
            StandIn.replays.append(len(images))
            imgs = self.model.to_device(images)
            positions, _, grid = self.model.positions(imgs, self.cfg)
            probs = bin_probabilities(positions, text, temperature_scale(temperature), grid)
            outputs = self.model.depth_from_probabilities(
                probs, bins.expand(len(images), -1), self.cfg, imgs.shape[1:3]
            )
            moved = {"depth": np.float32(offset_m)}
            # Arrays of their own, as the host copies are.
            return [
                out.numpy() + moved.get(name, np.float32(0))
                for name, out in zip(OUTPUT_FIELDS, outputs)
                if name in fields
            ]

        def start(self, images, text, bins, temperature, fields=OUTPUT_FIELDS):
            """CapturedFrame.start: its slot taken from the ring, the outputs written into
            the slot's host buffers (which the next use of the slot overwrites)."""
            slot = self.ring.take()
            outputs = iter(self.run(images, text, bins, temperature, fields))
            wanted = [name in fields for name in OUTPUT_FIELDS]
            if not slot.host_out:
                slot.host_out = [None] * len(OUTPUT_FIELDS)
            for i, copy in enumerate(wanted):
                if copy:  # into the slot's own buffer, as the download writes it
                    out = torch.from_numpy(next(outputs))
                    if slot.host_out[i] is None:
                        slot.host_out[i] = torch.empty_like(out)
                    slot.host_out[i].copy_(out)
            slot.holder = cuda_graph.InFlight(slot, wanted)
            return slot.holder

    return StandIn


class Held:
    """A frame in flight whose arrays are held until `gate` (a ForwardEnd) is set: not done, its
    callbacks and its wait after the gate."""

    def __init__(self, pending, gate):
        self._pending, self._gate = pending, gate

    def done(self) -> bool:
        return self._gate.is_set() and self._pending.done()

    def when_done(self, callback) -> None:
        self._gate.when_set(lambda: self._pending.when_done(callback))

    def wait(self) -> list:
        wait_until(self._gate.is_set)
        return self._pending.wait()
