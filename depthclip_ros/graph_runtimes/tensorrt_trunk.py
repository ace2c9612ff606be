"""The trunk of an exported graph on TensorRT, in a session of its own: its engine built for
the largest batch asked for (a stale engine cleared and built again, once; one process at a
time per engine cache, the others told who holds it), the preprocessing and the head on CUDA
around it, the features kept on the GPU between the three. A part of OnnxDepthClip (its
sessions, its build and its metadata), apart because only a TensorRT host runs it.
"""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

import numpy as np

from ..errors import ModelLoadError
from ..files import exclusive_lock
from .exported_graph import GRAPH_PARTS, PARTS_KEY
from .onnx_providers import (
    ENGINE_LOCK,
    ENGINE_LOCK_REPORT_SECONDS,
    STALE_ENGINE,
    TENSORRT,
    TENSORRT_LIBRARIES_MISSING,
    TENSORRT_MAX_BATCH,
    graph_parts,
    one_line,
    tensorrt_engine_folder,
    tensorrt_profile,
    with_profile,
)

log = logging.getLogger("depthclip_ros")


class TensorRtTrunk:
    """OnnxDepthClip's TensorRT trunk (`_trunk`: (session, its largest batch) once open)."""

    def _open_tensorrt(self, chain) -> None:
        """TensorRT on the trunk (its engine for max_batch built now), CUDA on the
        preprocessing and the head; or, where TensorRT cannot, nothing (the whole graph then
        runs on CUDA) with one warning."""
        cache = self._build[3]
        if PARTS_KEY not in self.metadata:
            self._tensorrt_refused(
                chain,
                "exported before its trunk could run alone: export it again for TensorRT",
            )
            return
        try:
            parts = graph_parts(self.path, cache / "parts")
            self._parts_files = parts
            largest = min(self.max_batch, TENSORRT_MAX_BATCH)
            trunk = self._trunk_session(parts["trunk"], largest)
        except ModelLoadError as exc:
            self._tensorrt_refused(chain, str(exc))
            return
        rest = chain[1:]
        self._parts = tuple(self._opened(rest, parts[name]) for name in ("preprocessing", "head"))
        self._trunk = (trunk, largest)
        for session in (*self._parts, trunk):
            self._check_placement(session)

    def _tensorrt_refused(self, chain, reason: str) -> None:
        if TENSORRT_LIBRARIES_MISSING in reason or self._build[4] == "tensorrt":
            self._provider_failed(chain, reason)
            return
        log.warning(
            "TensorRT cannot take %s (%s): running on CUDA, device_id %s; "
            "onnxruntime_providers: cuda skips TensorRT and this warning",
            self.path.name,
            one_line(reason),
            chain[0][1]["device_id"],
        )

    def _trunk_session(self, source: Path, max_batch: int):
        """The trunk on TensorRT, its engine for batches up to `max_batch` (ModelLoadError where
        TensorRT cannot: its libraries, the graph, or its engine). A stale engine cache is
        cleared and built again, once."""
        ort, _, chain, cache = self._build[:4]
        options = self._trunk_options
        if self._trunk_input is None:
            self._trunk_input = tuple(self._inspected(ort, source).get_inputs()[0].shape)
        folder = tensorrt_engine_folder(cache, max_batch)
        profile = tensorrt_profile(self._trunk_input, max_batch)
        tensorrt = with_profile(chain[:1], profile, folder)  # TensorRT alone: all or nothing
        with exclusive_lock(
            cache / ENGINE_LOCK,
            waiting=lambda holder: self._waiting(cache, holder),
            still_waiting=lambda holder, seconds: self._still_waiting(cache, holder, seconds),
            report_every=ENGINE_LOCK_REPORT_SECONDS,
        ):
            folder.mkdir(parents=True, exist_ok=True)
            try:
                session = self._session(ort, options, tensorrt, source)
            except ModelLoadError as exc:
                if STALE_ENGINE not in str(exc):
                    raise
                log.warning(
                    "TensorRT's cached engine in %s cannot be read (built by another TensorRT, "
                    "ONNX Runtime or GPU): building it again",
                    folder,
                )
                shutil.rmtree(folder, ignore_errors=True)
                folder.mkdir(parents=True, exist_ok=True)
                session = self._session(ort, options, tensorrt, source)
        if session.get_providers()[0] != TENSORRT:
            raise ModelLoadError(f"onnxruntime left TensorRT out ({session.get_providers()})")
        session.disable_fallback()
        return session

    @staticmethod
    def _waiting(cache: Path, holder: str) -> None:
        log.info(
            "waiting for another process building or reading TensorRT's engines in %s (%s)",
            cache,
            holder,
        )

    @staticmethod
    def _still_waiting(cache: Path, holder: str, seconds: float) -> None:
        log.warning(
            "still waiting after %.0f s for %s, which holds TensorRT's engines in %s: a first "
            "build takes minutes; if that process is stuck, end it",
            seconds,
            holder,
            cache,
        )

    def _run_parts(self, fields: tuple, feeds: dict) -> list:
        """The three parts in turn; the network input and the features stay where their
        provider put them (the GPU), only the outputs asked for come to the host."""
        ort = self._build[0]
        (preprocessing, head), trunk = self._parts, self._trunk[0]
        network_input, features = GRAPH_PARTS
        values = {
            name: ort.OrtValue.ortvalue_from_numpy(np.ascontiguousarray(array))
            for name, array in feeds.items()
        }
        (x,) = preprocessing.run_with_ort_values([network_input], {"images": values["images"]})
        (f,) = trunk.run_with_ort_values([features], {network_input: x})
        outputs = head.run_with_ort_values(list(fields), {features: f, **values})
        return [value.numpy() for value in outputs]
