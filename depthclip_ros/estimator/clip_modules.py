"""OpenAI CLIP's model, tokenizer and model list, without `import clip`.

`import clip` runs `clip/clip.py`, which imports torchvision for image transforms this package
does not use, and torchvision imports torch._dynamo: together about 40 % of the node's start-up
on a CPU (seconds on a robot; the benchmark's "start to warmed-up model"). So the installed
clip's `model.py` and `simple_tokenizer.py`, which import nothing of their package, run here
under names of this package's own, `tokenize` is clip.tokenize's rule on clip's own tokenizer
(a test holds the two equal), and the model names and URLs are read from `clip/clip.py`'s
`_MODELS` without running it. `clip/clip.py` itself runs only to download weights. Where the
installed clip is laid out otherwise, `import clip` serves, as before.
"""

from __future__ import annotations

import ast
import functools
import importlib.util
import sys
from pathlib import Path

CONTEXT_LENGTH = 77  # every CLIP model's text context


def _clip_folder() -> Path:
    spec = importlib.util.find_spec("clip")  # finds the package without importing it
    if spec is None or not spec.submodule_search_locations:
        raise ModuleNotFoundError("No module named 'clip'", name="clip")
    return Path(next(iter(spec.submodule_search_locations)))


@functools.cache
def clip_module(name: str):
    """The installed clip's `clip/<name>.py` (`model`, `simple_tokenizer`) as a module."""
    try:
        path = _clip_folder() / f"{name}.py"
        spec = importlib.util.spec_from_file_location(f"{__name__}.{name}", path)
        module = importlib.util.module_from_spec(spec)
        sys.modules[spec.name] = module  # as an import would (dataclasses, pickling look here)
        spec.loader.exec_module(module)
        return module
    except (ImportError, OSError, SyntaxError):
        sys.modules.pop(f"{__name__}.{name}", None)
        return importlib.import_module(f"clip.{name}")


@functools.cache
def _tokenizer():
    return clip_module("simple_tokenizer").SimpleTokenizer()


def tokenize(texts: list):
    """clip.tokenize(texts) (int32 tokens, (len(texts), 77)): RuntimeError with clip's words for
    a text too long for the context."""
    import torch

    tokenizer = _tokenizer()
    start, end = tokenizer.encoder["<|startoftext|>"], tokenizer.encoder["<|endoftext|>"]
    tokens = torch.zeros(len(texts), CONTEXT_LENGTH, dtype=torch.int)
    for i, text in enumerate(texts):
        encoded = [start, *tokenizer.encode(text), end]
        if len(encoded) > CONTEXT_LENGTH:
            raise RuntimeError(f"Input {text} is too long for context length {CONTEXT_LENGTH}")
        tokens[i, : len(encoded)] = torch.tensor(encoded)
    return tokens


@functools.cache
def model_urls() -> dict:
    """{model name: its URL} of the installed clip (`clip.clip._MODELS`)."""
    try:
        tree = ast.parse((_clip_folder() / "clip.py").read_text())
        for node in tree.body:
            if isinstance(node, ast.Assign) and [getattr(t, "id", "") for t in node.targets] == [
                "_MODELS"
            ]:
                return dict(ast.literal_eval(node.value))
    except (OSError, SyntaxError, ValueError):
        pass
    import clip

    return dict(clip.clip._MODELS)


def download(url: str, root: str) -> str:
    """clip's own download of a model's weights (its SHA-256 checked), into `root`."""
    import clip

    return clip.clip._download(url, root)
