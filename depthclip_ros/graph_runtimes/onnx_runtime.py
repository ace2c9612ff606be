"""DepthCLIP on ONNX Runtime: runs a graph written by depthclip-export, without torch, on CPU,
CUDA or TensorRT (what it shares with OpenVINO: exported_graph; what the providers need:
onnx_providers).
"""

from __future__ import annotations

import contextlib
import io
import logging
import queue
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from ..config.parameters import runtime_entries
from ..errors import ModelLoadError
from ..estimator.cpu_features import cpu_description, usable_cores
from ..estimator.file_identity import sha256_remembered
from ..estimator.result import ForwardEnd, Started
from ..estimator.text_cache import default_cache_dir
from .exported_graph import ExportedGraph
from .onnx_providers import (
    ASSIGNMENT_KEY,
    CPU,
    CUDA,
    GPU_ONNXRUNTIME_MINIMUM,
    NO_CPU_FALLBACK,
    TENSORRT,
    TENSORRT_LIBRARIES_MISSING,
    TENSORRT_MAX_BATCH,
    fallback_error,
    heavy_nodes_on_cpu,
    one_line,
    providers_for,
    tensorrt_cache_folder,
    tensorrt_runtime,
    without_fallback,
    wrong_device,
)
from .tensorrt_trunk import TensorRtTrunk

log = logging.getLogger("depthclip_ros")


def session_options(ort, threads: int, exact: bool, on_gpu: bool, entries=None):
    """ONNX Runtime's SessionOptions for a session of the graph or a part: errors only in its
    log (fallbacks are reported by us, in one line); `threads` intra-op threads, none spinning
    while it waits; `exact`: the exact U8U8 int8 kernels; on a GPU, the nodes' placement
    recorded; and the session config `entries` (the user's onnxruntime_session_config, over
    the rest)."""
    options = ort.SessionOptions()
    options.log_severity_level = 3
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    # Not spinning: on a CPU shared with other work a spinning thread takes the core from it
    # and from the node's own threads (measured: bench/results/performance.md, "Sharing the CPU").
    config = {"session.intra_op.allow_spinning": "0", "session.inter_op.allow_spinning": "0"}
    if exact:  # ONNX Runtime's U8U8 kernels: exact, slower (its session option's words)
        config["session.x64quantprecision"] = "1"
    if on_gpu:
        config[ASSIGNMENT_KEY] = "1"
    # Each key added once: ONNX Runtime warns on stderr when an entry is added again.
    for key, value in {**config, **(entries or {})}.items():
        options.add_session_config_entry(key, value)
    return options


class OnnxDepthClip(TensorRtTrunk, ExportedGraph):
    """An exported graph on ONNX Runtime (ExportedGraph's interface). On CPU and CUDA one
    session runs the whole graph; with TensorRT three do, the trunk's on TensorRT (one engine
    for every camera size) between the preprocessing's and the head's on CUDA."""

    def _import(self):
        try:
            import onnxruntime as ort
        except ImportError as exc:
            raise ModelLoadError(
                f"backend onnxruntime needs the onnxruntime package ({exc}); "
                f"pip install onnxruntime (or onnxruntime-gpu)"
            ) from None
        return ort

    def _session(self, ort, options, chain, source=None):
        """A session of `source` (default: the file) on `chain`, or ModelLoadError. ONNX
        Runtime's own fallback would re-create a failed session on CUDA or CPU without the
        chain's options (device 0), saying so on stdout only: enable_fallback=0 turns it off
        from onnxruntime 1.23; before, its wrapper falls back anyway, and a session it made
        that way is refused here (its print kept off stdout, its error the reason), as is one
        whose first provider runs on another device than the chain asked."""
        file_name = Path(source or self.path).name
        printed = io.StringIO()
        try:
            with contextlib.redirect_stdout(printed):
                session = ort.InferenceSession(
                    str(source or self.path),
                    sess_options=options,
                    providers=[name for name, _ in chain],
                    provider_options=[opts for _, opts in chain],
                    enable_fallback=0,
                )
        except Exception as exc:  # not an ONNX file, or one onnxruntime cannot load
            # An old wrapper's failed fallback raises its own error: the first is the reason.
            reason = fallback_error(printed.getvalue()) or f"{type(exc).__name__}: {exc}"
            raise ModelLoadError(f"onnxruntime cannot load {file_name}: {reason}") from None
        finally:
            sys.stdout.write(without_fallback(printed.getvalue()))
        fell_back = fallback_error(printed.getvalue())
        if fell_back:
            raise ModelLoadError(f"onnxruntime cannot load {file_name}: {fell_back}")
        wrong = wrong_device(session, chain)
        if wrong:
            raise ModelLoadError(f"onnxruntime opened {file_name} {wrong}")
        return session

    def _inspected(self, ort, source=None):
        """A session of `source` (default: the file) without optimisations, on CPU: to read
        its metadata and its inputs' shapes."""
        options = ort.SessionOptions()
        options.log_severity_level = 3
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
        return self._session(ort, options, [(CPU, {})], source)

    def _read_graph(self) -> tuple:
        # The graph's precision chooses the GPU providers' options, and a file that is not
        # ours fails before that.
        session = self._inspected(self._import())
        return (
            dict(session.get_modelmeta().custom_metadata_map),
            [i.name for i in session.get_inputs()],
            [o.name for o in session.get_outputs()],
        )

    def _open(self, config) -> None:
        ort = self._import()
        available = ort.get_available_providers()
        device = config.device
        if device == "auto":
            device = "cuda" if CUDA in available else "cpu"
            if device == "cpu":  # a GPU robot with the CPU-only onnxruntime installed
                log.warning(
                    "device 'auto': onnxruntime has no GPU provider here (available: %s): "
                    "running on CPU; install onnxruntime-gpu for CUDA or TensorRT",
                    ", ".join(available),
                )
        choice = config.onnxruntime_providers
        cache = None
        if device != "cpu" and TENSORRT in available and choice != "cuda":
            root = Path(config.tensorrt_cache_dir or default_cache_dir() / "tensorrt")
            root = root.expanduser()
            digest = sha256_remembered(self.path, root)  # not the whole file at every start
            cache = tensorrt_cache_folder(root, digest, self.precision, tensorrt_runtime(ort))
            cache.mkdir(parents=True, exist_ok=True)
        chain = providers_for(
            device, self.precision, cache, available, choice, config.cudnn_conv_algo_search
        )
        exact = self._needs_exact_int8_kernels()
        entries = runtime_entries(config, "onnxruntime_session_config")
        # 0: one per core this process may use (ONNX Runtime's own default ignores taskset)
        threads = config.inference_threads or usable_cores()
        # At most one stream a thread, as OpenVINO compiles them.
        streams = min(config.inference_streams, threads) if device == "cpu" else 1
        if device != "cpu" and config.inference_streams > 1:
            log.warning(
                "inference_streams %d runs forwards side by side on the CPU; on %s onnxruntime "
                "runs one at a time",
                config.inference_streams,
                device,
            )
        # Each stream a session of its own, with its share of the threads (and its own pool).
        options = session_options(ort, max(threads // streams, 1), exact, device != "cpu", entries)
        if device != "cpu":
            self._check_version(ort)
        self._build = (ort, options, chain, cache, choice)
        # TensorRT alone runs the trunk: a node it cannot take fails the session (ORT would
        # otherwise put it on the CPU provider, which the session then hides behind TensorRT).
        self._trunk_options = (
            session_options(ort, threads, exact, True, {**entries, NO_CPU_FALLBACK: "1"})
            if chain[0][0] == TENSORRT
            else None
        )
        self._said = set()  # the providers whose failure was said (once each)
        self._placement_unknown = False  # a GPU session whose nodes' placement ORT cannot say
        self._parts = None  # TensorRT: (preprocessing session, head session)
        self._parts_files = None  # TensorRT: {part: its ONNX file}
        self._trunk = None  # TensorRT: (trunk session, its largest batch)
        self._trunk_input = None  # TensorRT: the trunk's input shape (batch symbolic)
        self.session = None  # otherwise: the whole graph's
        if chain[0][0] == TENSORRT:
            self._open_tensorrt(chain)
        if self._trunk is None:
            self.session = self._opened([p for p in chain if p[0] != TENSORRT])
            self.provider = self.session.get_providers()[0]
            self._check_placement(self.session)
        else:
            self.provider = TENSORRT
        self.device = "cpu" if self.provider == CPU else device
        self.runtime = f"onnxruntime {ort.__version__} {self.provider}"
        if exact and self.provider == CPU:
            self.runtime += " (exact U8U8 int8 kernels)"
        if self._placement_unknown:
            self.runtime += f"; placement not reported by onnxruntime {ort.__version__}"
        self.cpu_threads = options.intra_op_num_threads * streams
        self.streams = 1  # sessions running forwards side by side (inference_streams)
        self._pool = self._idle = None  # streams: their threads, the sessions not running
        if streams > 1 and self.provider == CPU:
            self._idle = queue.SimpleQueue()
            self._idle.put(self.session)
            for _ in range(streams - 1):
                self._idle.put(self._opened(chain))
            self._pool = ThreadPoolExecutor(streams, "depthclip-stream")
            self.streams = streams
        if device != "cpu" and self.provider == CPU and CUDA not in available:
            log.warning(
                "device '%s' asked for, but onnxruntime has no GPU provider here (available: "
                "%s): running on CPU",
                device,
                ", ".join(available),
            )

    def _needs_exact_int8_kernels(self) -> bool:
        """True where the default u8s8 kernels would saturate the graph (saturates_here): said
        in one warning."""
        if not self.saturates_here:
            return False
        log.warning(
            "%s has 8-bit int8 weights, which this CPU (%s: no VNNI) multiplies in saturating "
            "16-bit sums: running ONNX Runtime's exact U8U8 kernels instead (slower); export "
            "it again with this version for exact and fast int8",
            self.path.name,
            cpu_description(),
        )
        return True

    @staticmethod
    def _check_version(ort) -> None:
        version = tuple(int(p) for p in ort.__version__.split(".")[:2] if p.isdigit())
        if version < GPU_ONNXRUNTIME_MINIMUM:
            log.warning(
                "onnxruntime %s runs the graph's Resize (opset 18) on the CPU, not on the GPU: "
                "every frame goes to the host and back; install onnxruntime-gpu %s or newer",
                ort.__version__,
                ".".join(map(str, GPU_ONNXRUNTIME_MINIMUM)),
            )

    def _check_placement(self, session) -> None:
        """One warning where a GPU session placed heavy nodes on the CPU provider; where ONNX
        Runtime cannot say, the start line says so (runtime)."""
        on_cpu = heavy_nodes_on_cpu(session) if session.get_providers()[0] != CPU else {}
        if on_cpu is None:
            self._placement_unknown = True
        elif on_cpu and "placement" not in self._said:
            self._said.add("placement")
            log.warning(
                "onnxruntime placed %s of %s on the CPU provider: each frame crosses to the "
                "host and back (onnxruntime-gpu %s or newer runs them on the GPU)",
                ", ".join(f"{count} {op}" for op, count in on_cpu.items()),
                self.path.name,
                ".".join(map(str, GPU_ONNXRUNTIME_MINIMUM)),
            )

    def _opened(self, chain, source=None):
        """The session of `chain` (`source`: a part of the graph; the chain holds no
        TensorRT: _trunk_session opens that). A provider that does not load (its libraries
        missing: ONNX Runtime raises, or leaves it out) gives one warning naming it, and the
        chain's next provider takes over with its own options (device_id kept)."""
        ort, options = self._build[:2]
        try:
            session = self._session(ort, options, chain, source)
        except ModelLoadError as exc:
            if chain[0][0] != CUDA:
                raise
            self._provider_failed(chain, str(exc))
            return self._opened(chain[1:], source)
        got = session.get_providers()[0]
        if got != chain[0][0]:
            self._provider_failed(chain, f"onnxruntime left it out and runs on {got}")
        if got != CPU:
            # ONNX Runtime would otherwise, on a provider failure at run time, re-create the
            # session on CPU without its options and say so only on stdout.
            session.disable_fallback()
        return session

    def _provider_failed(self, chain, reason: str) -> None:
        """One warning (or, for TensorRT asked for alone, ModelLoadError) for the chain's first
        provider, which did not load."""
        name, options = chain[0]
        if name == TENSORRT and self._build[4] == "tensorrt":
            raise ModelLoadError(f"onnxruntime_providers tensorrt: {one_line(reason)}")
        if name in self._said:
            return
        self._said.add(name)
        if TENSORRT_LIBRARIES_MISSING in reason:
            log.warning(
                "onnxruntime-gpu lists TensorRT, but TensorRT's libraries (libnvinfer) do not "
                "load here: running on %s, device_id %s; install TensorRT, or set "
                "onnxruntime_providers: cuda",
                chain[1][0],
                options.get("device_id", "0"),
            )
            return
        log.warning(
            "%s did not load (%s): running on %s, device_id %s",
            name,
            one_line(reason),
            chain[1][0] if len(chain) > 1 else "nothing",
            options.get("device_id", "0"),
        )

    @property
    def placement(self) -> str:
        """Which provider runs each part of the graph, and the heavy nodes a GPU session left
        on the CPU provider: 'preprocessing CUDA, trunk Tensorrt, head CUDA'."""
        if self._trunk is None:
            parts = {"whole graph": self.session}
        else:
            (preprocessing, head), trunk = self._parts, self._trunk[0]
            parts = {"preprocessing": preprocessing, "trunk": trunk, "head": head}
        words = []
        for name, session in parts.items():
            provider = session.get_providers()[0]
            on_cpu = heavy_nodes_on_cpu(session) if provider != CPU else {}
            short = provider.removesuffix("ExecutionProvider")
            if on_cpu is None:
                words.append(
                    f"{name} {short} (placement not reported by onnxruntime "
                    f"{self._build[0].__version__})"
                )
                continue
            left = ", ".join(f"{count} {op}" for op, count in on_cpu.items())
            words.append(f"{name} {short}" + (f" ({left} on CPU)" if left else ""))
        return ", ".join(words)

    @property
    def prepares_image_sizes(self) -> bool:
        return self.provider in (TENSORRT, CUDA)

    def _prepare(self, image_size: tuple, max_batch: int) -> None:
        max_batch = min(max_batch, TENSORRT_MAX_BATCH)
        if self.provider == TENSORRT:
            if max_batch > self._trunk[1]:  # one engine, for the largest batch asked for
                session = self._trunk_session(self._parts_files["trunk"], max_batch)
                self._trunk = (session, max_batch)
        elif self.provider == CUDA:
            # Each new input shape makes the CUDA provider choose its convolutions' cuDNN
            # algorithms (cudnn_conv_algo_search): here, at camera_info, not mid-stream.
            for batch in range(2, max_batch + 1):
                self.predict(np.zeros((batch, *image_size, 3), np.uint8), arrays=())

    @property
    def frames_in_flight(self) -> int:
        """inference_streams on the CPU: that many sessions run forwards side by side."""
        return self.streams

    def _start_one(self, fields: tuple, feeds: dict) -> Started:
        """With streams: the forward begun on an idle session, on the pool's thread (ONNX
        Runtime's run lets go of the GIL), its end calling back from there."""
        if self._pool is None:
            return super()._start_one(fields, feeds)
        idle = self._idle
        session = idle.get()  # one is idle: no more forwards begin than there are sessions
        ended = ForwardEnd()

        def run() -> list:
            try:
                return session.run(list(fields), feeds)
            finally:
                idle.put(session)

        forward = self._pool.submit(run)
        forward.add_done_callback(ended.set)
        return Started(forward.result, ended.is_set, ended.when_set)

    def _run(self, fields: tuple, feeds: dict) -> list:
        if self._trunk is None:
            return self.session.run(list(fields), feeds)
        images = feeds["images"]
        largest = self._trunk[1]
        if len(images) <= largest:
            return self._run_parts(fields, feeds)
        parts = [  # within the engine's profile: its largest batch at a time
            self._run_parts(fields, {**feeds, "images": images[i : i + largest]})
            for i in range(0, len(images), largest)
        ]
        return [np.concatenate(arrays) for arrays in zip(*parts)]
