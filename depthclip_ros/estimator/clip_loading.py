"""Loading OpenAI CLIP ResNet checkpoints, with errors a robot operator can act on.

`clip.load` is not used directly: its fallback for plain state_dict files re-reads a
consumed file on current torch, and its download failure is an opaque URLError.
Both checkpoint formats go through `clip.model.build_model`, exactly as `clip.load(jit=False)`
(clip's modules without `import clip`: clip_modules).
"""

from __future__ import annotations

import dataclasses
import logging
import os
import socket
import warnings
from pathlib import Path

import torch

from ..errors import ModelLoadError
from .clip_modules import clip_module, download, model_urls
from .cpu_features import cpu_model_and_flags, native_bf16
from .file_identity import sha256_file

log = logging.getLogger("depthclip_ros")


@dataclasses.dataclass(frozen=True)
class LoadedModel:
    clip_model: torch.nn.Module
    identity: str  # model name + checkpoint SHA-256, keys the text-feature cache
    checkpoint: str
    device: torch.device
    dtype: torch.dtype


def default_download_root() -> str:
    return os.path.expanduser("~/.cache/clip")


def resolve_device(device: str) -> torch.device:
    if device == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda", torch.cuda.current_device())
        # Said once at load, as the ONNX Runtime backend says it: a GPU robot with a CPU-only
        # torch (e.g. PyPI's aarch64 wheel on a Jetson) would otherwise run on CPU unnoticed.
        why = (
            f"torch {torch.__version__} is a CPU-only build; install a CUDA build (on a Jetson, "
            f"NVIDIA's torch wheel)"
            if torch.version.cuda is None
            else f"torch {torch.__version__} finds no CUDA device (no GPU, or no driver)"
        )
        log.warning(
            "device 'auto': %s: running on CPU; device: cpu says so and silences this", why
        )
        return torch.device("cpu")
    dev = torch.device(device)
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise ModelLoadError(
                f"device '{device}' requested but CUDA is not available "
                "(no GPU, or a CPU-only torch build); use device: cpu or auto"
            )
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise ModelLoadError(
                f"device '{device}' requested but only "
                f"{torch.cuda.device_count()} CUDA device(s) exist"
            )
        if dev.index is None:  # resolved once: what is cached under cuda must be read as cuda:N
            dev = torch.device("cuda", torch.cuda.current_device())
    return dev


def resolve_dtype(precision: str, device: torch.device) -> torch.dtype:
    """The image trunk's dtype; ModelLoadError for a precision this device cannot run."""
    if precision == "auto":
        return torch.float16 if device.type == "cuda" else torch.float32
    if precision == "fp16" and device.type != "cuda":
        raise ModelLoadError(
            "precision fp16 needs a CUDA device; use precision: fp32, bf16 or auto on CPU"
        )
    if precision == "bf16":
        if device.type != "cpu":
            raise ModelLoadError("precision bf16 is the CPU's lower precision; on CUDA use fp16")
        if not native_bf16():
            model, _ = cpu_model_and_flags()
            raise ModelLoadError(
                f"precision bf16: this CPU ({model}) has no native bf16 (avx512_bf16 or AMX on "
                f"x86, bf16 on Arm), so bf16 would run slower than fp32; use precision fp32, "
                f"or an int8 graph (depthclip-export --precision int8)"
            )
        return torch.bfloat16
    if precision == "int8":
        raise ModelLoadError(
            "precision int8 runs a graph quantised by depthclip-export --precision int8 on "
            "backend onnxruntime or openvino; the torch backend has no int8 path"
        )
    return torch.float16 if precision == "fp16" else torch.float32


def _is_vit_name(name: str) -> bool:
    return name.upper().startswith("VIT")


def locate_checkpoint(model: str, download_root: str = "") -> tuple:
    """Return (path, identity) for a model name or checkpoint path, downloading if needed."""
    root = download_root or default_download_root()
    urls = model_urls()
    if model in urls:
        if _is_vit_name(model):
            raise ModelLoadError(
                f"model '{model}': ViT CLIP models are not supported yet; "
                "DepthCLIP needs a ResNet dense feature map (RN50, RN101, RN50x4, ...)"
            )
        url = urls[model]
        expected_sha = url.split("/")[-2]
        target = Path(root) / os.path.basename(url)
        identity = f"{model}@sha256:{expected_sha}"
        # Downloaded before: used as it is (clip's _download would hash it and, on a mismatch,
        # download again, which a robot offline cannot).
        if target.is_file():
            return str(target), identity
        previous_timeout = socket.getdefaulttimeout()
        socket.setdefaulttimeout(60)  # a blackholed network must not hang the node forever
        try:
            return download(url, root), identity
        except Exception as exc:
            raise ModelLoadError(
                f"CLIP weights for '{model}' not found at {target} and the download failed "
                f"({type(exc).__name__}: {exc}). Supply them by copying the official "
                f"{os.path.basename(url)} to {target} (or set download_root to its folder), "
                f"or set model to the path of a checkpoint file."
            ) from None
        finally:  # the timeout is process-wide: give the rest of the process its own back
            socket.setdefaulttimeout(previous_timeout)
    if _is_vit_name(model):
        raise ModelLoadError(f"model '{model}': ViT CLIP models are not supported yet")
    path = Path(os.path.expanduser(model))
    if path.is_file():
        return str(path), f"{path.name}@sha256:{sha256_file(path)}"
    names = ", ".join(m for m in urls if not _is_vit_name(m))
    raise ModelLoadError(
        f"model '{model}' is neither a CLIP model name ({names}) "
        f"nor an existing checkpoint file (looked for {path.resolve()})."
    )


def read_state_dict(path: str) -> dict:
    """State dict of a TorchScript archive (OpenAI's format) or of a plain torch.save file."""
    try:
        with warnings.catch_warnings():
            # OpenAI ships CLIP as TorchScript, which only torch.jit.load reads; newer torch
            # deprecates it with a warning on every run that the user can do nothing about.
            warnings.filterwarnings(
                "ignore", message="`torch.jit.load` is deprecated", category=FutureWarning
            )
            return torch.jit.load(path, map_location="cpu").state_dict()
    except RuntimeError:
        pass  # not a TorchScript archive
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise ModelLoadError(
            f"checkpoint {path} is neither a TorchScript archive nor a torch "
            f"state_dict ({type(exc).__name__}: {exc})"
        ) from None
    if isinstance(obj, dict) and isinstance(obj.get("state_dict"), dict):
        obj = obj["state_dict"]
    if not isinstance(obj, dict):
        raise ModelLoadError(f"checkpoint {path} holds a {type(obj).__name__}, not a state_dict")
    return obj


def load_clip(
    model: str = "RN50", device: str = "auto", precision: str = "auto", download_root: str = ""
) -> LoadedModel:
    """Load a CLIP ResNet model for inference on `device` in `precision`."""
    dev = resolve_device(device)
    dtype = resolve_dtype(precision, dev)
    path, identity = locate_checkpoint(model, download_root)
    state_dict = read_state_dict(path)
    if "visual.proj" in state_dict:
        raise ModelLoadError(
            f"checkpoint {path} is a ViT CLIP model; ViT models are not supported yet"
        )
    if "visual.layer4.0.conv1.weight" not in state_dict or "text_projection" not in state_dict:
        raise ModelLoadError(
            f"checkpoint {path} is not a CLIP ResNet state_dict "
            "(no visual.layer4 / text_projection weights)"
        )
    try:
        # Conv and linear weights stay fp16, BatchNorms fp32, as OpenAI ships them.
        net = clip_module("model").build_model(state_dict)
    except Exception as exc:
        raise ModelLoadError(
            f"checkpoint {path} does not fit clip.model.CLIP ({type(exc).__name__}: {exc})"
        ) from None
    net = net.to(dev).eval()
    if dtype != torch.float16:  # bf16: the core casts its copy of the trunk, the rest stays fp32
        net.float()
    return LoadedModel(net, identity, path, dev, dtype)
