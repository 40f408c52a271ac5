"""Base class for the models: weights load lazily, once, under a lock, on first use."""

from __future__ import annotations

import hashlib
import threading
from abc import ABC, abstractmethod
from collections.abc import Callable
from functools import cached_property
from pathlib import Path
from typing import Any

import torch

from fashion_search.core.onnx_runtime import OrtNetwork
from fashion_search.core.settings import Settings, get_settings

_threads_lock = threading.Lock()
_threads_set = False


def torch_threads(settings: Settings) -> int:
    """The torch thread count settings ask for (0: torch's default); where ONNX Runtime runs the networks, torch runs
    only the small steps around them, on one thread (docs/decisions/2026-12-07-onnx-runtime-on-cpu.md)."""
    if settings.torch_threads > 0:
        return settings.torch_threads
    return 1 if settings.cpu_runtime == "onnxruntime" else 0


def configure_torch(settings: Settings) -> None:
    """Apply the torch thread count from settings once per process."""
    global _threads_set
    with _threads_lock:
        if not _threads_set and torch_threads(settings) > 0:
            torch.set_num_threads(torch_threads(settings))
        _threads_set = True


def resolve_device(name: str) -> torch.device:
    """settings.torch_device as a torch device: "auto" is the first GPU when torch sees one, else the CPU."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise RuntimeError(
            f"torch_device={name!r}, but torch {torch.__version__} sees no CUDA GPU; use 'auto' or 'cpu'"
        )
    return torch.device(name)


def warm_up_batches(device: torch.device, run: Callable[[int], object], largest: int) -> None:
    """On a GPU, run each batch size 1..largest once at load: cuDNN plans every new input shape on first use
    (1.5–2 s per shape on a fresh H200 machine), which otherwise lands on the first queries with that many
    garments (docs/BENCHMARKS.md)."""
    if device.type != "cuda":
        return
    with torch.inference_mode():
        for n in range(1, largest + 1):
            run(n)


def for_inference(module: torch.nn.Module, example: torch.Tensor, device: torch.device, settings: Settings) -> Any:
    """The module ready to serve: on the CPU run by settings.cpu_runtime (ONNX Runtime, or frozen TorchScript traced
    on example), elsewhere the module itself in eval mode.

    Both keep the module's control flow for the example's shape, so only networks whose inputs differ in batch
    size alone (a fixed square input) may go through here; the weights are frozen into it at this call.
    """
    module.eval()
    if device.type != "cpu" or settings.cpu_runtime == "torch":
        return module
    if settings.cpu_runtime == "onnxruntime":
        cache = settings.data_dir / "onnx" if settings.onnx_cache else None
        return OrtNetwork(module, example, settings.onnx_threads, cache)
    with torch.inference_mode():
        traced = torch.jit.trace(module, example.to(device), check_trace=False)
        return torch.jit.optimize_for_inference(traced)


def file_digest(path: Path | str) -> str:
    """First 8 hex digits of a weights file's SHA-256: retrained weights keep their variant's name, not this."""
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()[:8]


class InferenceModel(ABC):
    """A model that loads its weights on first use; safe to share between threads."""

    name: str = "model"

    def __init__(self, settings: Settings | None = None) -> None:
        self.settings = settings or get_settings()
        self._load_lock = threading.Lock()
        self._loaded = False

    @property
    def model_name(self) -> str:
        """What the model's output depends on (subclasses add a weights digest and output settings); a cache of
        its results is valid only under the same name."""
        return self.name

    @cached_property
    def device(self) -> torch.device:
        """The torch device the weights load onto (settings.torch_device), resolved on first use: a Celery worker
        forks before its first task, and CUDA must not start before a fork."""
        return resolve_device(self.settings.torch_device)

    @property
    def loaded(self) -> bool:
        """Whether the weights are in memory."""
        return self._loaded

    def load(self) -> None:
        """Load the weights if not done yet (idempotent, thread-safe)."""
        if self._loaded:
            return
        with self._load_lock:
            if not self._loaded:
                configure_torch(self.settings)
                self._load()
                self._loaded = True

    @abstractmethod
    def _load(self) -> None:
        """Load weights into memory."""
