"""Base class for the models: weights load lazily, once, under a lock, on first use."""

from __future__ import annotations

import hashlib
import threading
from abc import ABC, abstractmethod
from pathlib import Path

import torch

from fashion_search.settings import Settings, get_settings

_threads_lock = threading.Lock()
_threads_set = False


def configure_torch(settings: Settings) -> None:
    """Apply the torch thread count from settings once per process."""
    global _threads_set
    with _threads_lock:
        if not _threads_set and settings.torch_threads > 0:
            torch.set_num_threads(settings.torch_threads)
        _threads_set = True


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
